"""httplog / tcplog / clf lines against the spec's observed lines (haproxy.md §12), parsed back field by field."""

from __future__ import annotations

import calendar
import re
import time

import pytest

from balancier.proxy.config.model import LogTarget
from balancier.proxy.logs import (
    HttpLogRecord,
    Logger,
    TcpLogRecord,
    escape_request_line,
    format_connect,
    format_httplog,
    format_httplog_clf,
    format_tcplog,
    stderr_message,
    syslog_date,
)


def local_epoch(y: int, mon: int, d: int, h: int, mi: int, s: int, ms: int) -> float:
    return time.mktime((y, mon, d, h, mi, s, 0, 0, -1)) + ms / 1000.0


# Independent of the formatter: HAProxy's httplog layout as a regex, one group per field.
HTTPLOG = re.compile(
    r"^(?P<ip>[\d.:a-f]+):(?P<port>\d+) \[(?P<date>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] "
    r"(?P<fe>\S+) (?P<be>[^/\s]+)/(?P<srv>\S+) "
    r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>-?\d+) "
    r"(?P<status>-?\d+) (?P<bytes>\d+) (?P<cc>\S+) (?P<cs>\S+) (?P<term>\S{4}) "
    r"(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rc>\+?\d+) (?P<sq>\d+)/(?P<bq>\d+) "
    r"\"(?P<req>[^\"]*)\"$"
)


def test_observed_httplog_line_round_trips():
    observed = ('127.0.0.1:54322 [26/Nov/2026:08:58:37.709] esup-proxy esup-proxy/ents2 0/0/0/0/0 200 159 - - '
                '--VN 1/1/0/0/0 0/0 "GET /x HTTP/1.1"')
    m = HTTPLOG.match(observed)
    assert m is not None
    r = HttpLogRecord(
        client_ip=m["ip"], client_port=int(m["port"]), accept_date=local_epoch(2026, 11, 26, 8, 58, 37, 709),
        frontend=m["fe"], backend=m["be"], server=m["srv"], TR=int(m["TR"]), Tw=int(m["Tw"]), Tc=int(m["Tc"]),
        Tr=int(m["Tr"]), Ta=int(m["Ta"]), status=int(m["status"]), bytes_out=int(m["bytes"]),
        req_cookie=m["cc"], res_cookie=m["cs"], termination=m["term"], actconn=int(m["ac"]), feconn=int(m["fc"]),
        beconn=int(m["bc"]), srv_conn=int(m["sc"]), retries=int(m["rc"]), srv_queue=int(m["sq"]),
        backend_queue=int(m["bq"]), request_line=m["req"],
    )
    assert format_httplog(r) == observed


def test_nosrv_badreq_line():
    r = HttpLogRecord("127.0.0.1", 40000, local_epoch(2026, 11, 6, 1, 2, 3, 4), "esup-proxy", "esup-proxy",
                      "<NOSRV>", -1, -1, -1, -1, 0, 400, 0, termination="PR--", actconn=1, feconn=1)
    line = format_httplog(r)
    m = HTTPLOG.match(line)
    assert m is not None, line
    assert (m["date"], m["srv"], m["TR"], m["Ta"], m["status"], m["term"], m["req"]) == (
        "06/Nov/2026:01:02:03.004", "<NOSRV>", "-1", "0", "400", "PR--", "<BADREQ>")
    assert " esup-proxy/<NOSRV> -1/-1/-1/-1/0 400 0 - - PR-- " in line


def test_connection_refused_and_redispatch_fields():
    r = HttpLogRecord("10.1.2.3", 5, 0.0, "conrefused", "conrefused", "d", 0, 2003, -1, -1, 2003, 503, 217,
                      termination="SC--", actconn=1, feconn=1, retries=2, request_line="GET / HTTP/1.1")
    assert " conrefused/d 0/2003/-1/-1/2003 503 217 - - SC-- 1/1/0/0/2 0/0 " in format_httplog(r)
    r.redispatched = True
    r.retries = 3
    m = HTTPLOG.match(format_httplog(r))
    assert m is not None and m["rc"] == "+3"


def test_ssl_frontend_and_ipv6_client():
    r = HttpLogRecord("::1", 443, 0.0, "web~", "app", "s1", 1, 0, 1, 2, 4, 200, 10, request_line="GET / HTTP/1.1")
    m = HTTPLOG.match(format_httplog(r))
    assert m is not None and (m["ip"], m["fe"]) == ("::1", "web~")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("GET /x HTTP/1.1", "GET /x HTTP/1.1"),
        ('GET /"q"#frag HTTP/1.1', "GET /#22q#22#23frag HTTP/1.1"),
        ("GET /\x01\x7f HTTP/1.1", "GET /#01#7F HTTP/1.1"),
        ("GET /\xe9 HTTP/1.1", "GET /#E9 HTTP/1.1"),
        ("GET /a\tb", "GET /a#09b"),
        ("GET /{|} ok", "GET /{|} ok"),  # only the url map's characters are escaped
    ],
)
def test_request_line_escaping(raw, escaped):
    assert escape_request_line(raw) == escaped
    r = HttpLogRecord("1.2.3.4", 1, 0.0, "f", "b", "s", request_line=raw)
    assert format_httplog(r).endswith(f'"{escaped}"')


def test_tcplog_layout():
    r = TcpLogRecord("127.0.0.1", 3000, local_epoch(2026, 11, 26, 8, 0, 0, 5), "fnt", "bck", "srv1", 0, 0, 5007,
                     212, "--", 0, 0, 0, 0, 3)
    assert format_tcplog(r) == "127.0.0.1:3000 [26/Nov/2026:08:00:00.005] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0"


def test_clf_layout():
    t = 1795683588.25
    r = HttpLogRecord("10.0.1.2", 61818, t, "fe_main", "be_servers", "s1", 0, 0, 1, 1, 2, 200, 517,
                      termination="----", actconn=1, feconn=1, request_line="GET / HTTP/1.1")
    gmt = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
    assert format_httplog_clf(r) == (
        f'10.0.1.2 - - [{gmt}] "GET / HTTP/1.1" 200 517 "" "" 61818 250 "fe_main" "be_servers" "s1" '
        '0 0 1 1 2 ---- 1 1 0 0 0 0 0 "" "" '
    )


def test_connect_line():
    assert format_connect("127.0.0.1", 5555, "127.0.0.1", 80, "web", "http") == \
        "Connect from 127.0.0.1:5555 to 127.0.0.1:80 (web/HTTP)"


def test_syslog_date_day_is_space_padded():
    assert syslog_date(local_epoch(2026, 11, 6, 8, 5, 9, 0)) == "Nov  6 08:05:09"
    assert syslog_date(local_epoch(2026, 11, 26, 18, 5, 9, 0)) == "Nov 26 18:05:09"


def test_stderr_message_layout():
    assert re.fullmatch(r"\[WARNING\]  \(\d+\) : hello\n", stderr_message("WARNING", "hello"))
    assert re.fullmatch(r"\[ALERT\]    \(\d+\) : x\n", stderr_message("ALERT", "x"))


def test_stdout_target_writes_the_line_without_pri(capfd):
    lg = Logger([LogTarget("stdout", facility=19)], "balancier")
    lg.log(6, "hello world", now=local_epoch(2026, 11, 6, 8, 5, 9, 0))
    out = capfd.readouterr().out
    assert re.fullmatch(r"Nov  6 08:05:09 balancier\[\d+\]: hello world\n", out), out


def test_stdout_level_filter_and_truncation(capfd):
    lg = Logger([LogTarget("stdout", facility=19, level=4, maxlen=40)], "t")
    lg.log(6, "info is filtered out")
    lg.log(1, "x" * 100, now=local_epoch(2026, 1, 2, 3, 4, 5, 0))
    out = capfd.readouterr().out
    assert out.count("\n") == 1
    assert len(out) == 40 and out.endswith("\n")


def test_logger_without_targets_is_disabled():
    lg = Logger([], "t")
    assert not lg.enabled
    lg.log_http(HttpLogRecord("1.1.1.1", 1, 0.0, "f", "b"))  # no target: nothing happens, nothing raised


def test_clf_line_observed_on_haproxy():
    observed = ('127.0.0.1 - - [26/Nov/2026:11:07:22 +0000] "GET /a#22b HTTP/1.1" 200 49 "" "" 40624 095 "p" "p" '
                '"s1" 0 0 0 0 0 ---- 1 1 0 0 0 0 0 "" "" ')
    t = calendar.timegm((2026, 11, 26, 11, 7, 22, 0, 0, 0)) + 0.095
    r = HttpLogRecord("127.0.0.1", 40624, t, "p", "p", "s1", 0, 0, 0, 0, 0, 200, 49, actconn=1, feconn=1,
                      request_line='GET /a"b HTTP/1.1')
    assert format_httplog_clf(r) == observed
