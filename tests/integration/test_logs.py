"""Syslog over UDP to a real receiver on loopback: RFC 3164 framing, PRI, levels, truncation (haproxy.md §12.1)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time

import pytest

from balancier.proxy.config.model import LogTarget
from balancier.proxy.logs import ALERT, EMERG, INFO, NOTICE, WARNING, HttpLogRecord, Logger, TcpLogRecord

from support.http import get
from support.syslog import SyslogReceiver

# Framing written independently of the formatter: <PRI>Mmm dd HH:MM:SS TAG[PID]: MESSAGE\n
FRAME = re.compile(r"^<(\d{1,3})>([A-Z][a-z]{2}) ([ 123]\d) (\d\d:\d\d:\d\d) ([^\s\[]+)\[(\d+)\]: (.*)\n$", re.S)
LOCAL3 = 19


def target(receiver, **kw) -> LogTarget:
    return LogTarget("udp", facility=kw.pop("facility", LOCAL3), host=receiver.host, port=receiver.port, **kw)


def frame(raw: str) -> re.Match[str]:
    m = FRAME.match(raw)
    assert m is not None, f"bad RFC 3164 framing: {raw!r}"
    return m


def test_httplog_datagram_framing_and_pri(syslog_receiver):
    lg = Logger([target(syslog_receiver)], "balancier")
    before = time.time()
    r = HttpLogRecord("127.0.0.1", 54322, before, "esup-proxy", "esup-proxy", "ents2", 0, 0, 0, 0, 0, 200, 159,
                      termination="--VN", actconn=1, feconn=1, request_line="GET /x HTTP/1.1")
    lg.log_http(r)
    raw = syslog_receiver.wait_for(lambda x: "esup-proxy/ents2" in x, timeout=3)
    m = frame(raw)
    pri, mon, day, hms, tag, pid, msg = m.groups()
    assert int(pri) == 158  # local3 (19) x 8 + info (6), as observed from HAProxy
    assert (tag, int(pid)) == ("balancier", os.getpid())
    stamp = time.localtime(before)
    assert mon == time.strftime("%b", stamp) and int(day) == stamp.tm_mday
    assert day == f"{stamp.tm_mday:2d}"  # space-padded
    assert msg.endswith(' esup-proxy esup-proxy/ents2 0/0/0/0/0 200 159 - - --VN 1/1/0/0/0 0/0 "GET /x HTTP/1.1"')
    assert raw.count("\n") == 1


@pytest.mark.parametrize(("level", "pri"), [(EMERG, 152), (ALERT, 153), (WARNING, 156), (NOTICE, 157), (INFO, 158)])
def test_pri_per_level(syslog_receiver, level, pri):
    lg = Logger([target(syslog_receiver)], "t")
    lg.log(level, f"level-{level}")
    raw = syslog_receiver.wait_for(lambda x: f"level-{level}" in x, timeout=3)
    assert int(frame(raw).group(1)) == pri


def test_level_filter_and_minlevel(syslog_receiver):
    lg = Logger([target(syslog_receiver, level=NOTICE, minlevel=WARNING, facility=0)], "t")
    lg.log(INFO, "dropped-info")
    lg.log(ALERT, "raised-alert")
    lg.log(NOTICE, "kept-notice")
    raw = syslog_receiver.wait_for(lambda x: "kept-notice" in x, timeout=3)
    assert int(frame(raw).group(1)) == NOTICE  # kern (0) x 8 + notice
    alert = syslog_receiver.wait_for(lambda x: "raised-alert" in x, timeout=3)
    assert int(frame(alert).group(1)) == WARNING  # more severe than minlevel: sent at minlevel
    time.sleep(0.1)
    assert not any("dropped-info" in x for x in syslog_receiver.lines)


def test_truncated_at_len_keeping_the_newline(syslog_receiver):
    lg = Logger([target(syslog_receiver, maxlen=100)], "t")
    lg.log(INFO, "long-" + "x" * 500)
    raw = syslog_receiver.wait_for(lambda x: "long-" in x, timeout=3)
    assert len(raw) == 100 and raw.endswith("x\n")


def test_hostname_goes_after_the_date(syslog_receiver):
    lg = Logger([target(syslog_receiver)], "t", hostname="lb1")
    lg.log(INFO, "with-host")
    raw = syslog_receiver.wait_for(lambda x: "with-host" in x, timeout=3)
    assert re.match(r"^<158>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d lb1 t\[\d+\]: with-host\n$", raw), raw


def test_tcplog_over_udp(syslog_receiver):
    lg = Logger([target(syslog_receiver)], "t")
    lg.log_tcp(TcpLogRecord("127.0.0.1", 3000, time.time(), "fnt", "bck", "srv1", 0, 0, 5007, 212, "--",
                            retries=3))
    raw = syslog_receiver.wait_for(lambda x: "fnt bck/srv1" in x, timeout=3)
    assert frame(raw).group(7).endswith(" fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0")


def test_many_lines_arrive_in_order_without_blocking(syslog_receiver):
    lg = Logger([target(syslog_receiver)], "t")
    t0 = time.monotonic()
    for i in range(200):
        lg.log(INFO, f"seq-{i:04d}")
    assert time.monotonic() - t0 < 1.0
    got = syslog_receiver.wait_count(lambda x: "seq-" in x, 200, timeout=5)
    nums = [int(re.search(r"seq-(\d{4})", x).group(1)) for x in got]
    assert nums == list(range(200))
    assert lg.dropped == 0


def test_two_loggers_send_to_two_receivers(syslog_receiver):
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind(("127.0.0.1", 0))
        other.settimeout(3)
        lg = Logger([target(syslog_receiver), LogTarget("udp", facility=1, host="127.0.0.1",
                                                         port=other.getsockname()[1])], "t")
        lg.log(NOTICE, "fan-out")
        a = syslog_receiver.wait_for(lambda x: "fan-out" in x, timeout=3)
        b = other.recv(2048).decode()
        assert int(frame(a).group(1)) == 157 and int(frame(b).group(1)) == 13  # user (1) x 8 + notice
    finally:
        other.close()


def test_unreachable_target_never_raises():
    # Nothing listens there: ICMP port unreachable must not break the caller.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lg = Logger([LogTarget("udp", facility=LOCAL3, host="127.0.0.1", port=port)], "t")
    for _ in range(5):
        lg.log(INFO, "into the void")


# --- differential: the cookie columns of httplog lines, Debian's haproxy vs balancier -----------------------------

HTTPLOG_TAIL = re.compile(
    r" (?P<fe>\S+) (?P<be>[^/\s]+)/(?P<srv>\S+) -?\d+/-?\d+/-?\d+/-?\d+/-?\d+ (?P<status>\d+) \d+ \S+ \S+ "
    r"(?P<term>\S{4}) \d+/\d+/\d+/\d+/\+?\d+ \d+/\d+ \"(?P<req>[^\"]*)\"$")

COOKIE_MODES = {
    # mode line, the cookie a returning client sends for a server that does not exist, extra request cookie
    "prefix": ("cookie JSESSIONID prefix", "JSESSIONID=zz~abc", "JSESSIONID=nodelim"),
    "insert": ("cookie SERVERID insert indirect nocache", "SERVERID=zz", "SERVERID="),
    "rewrite": ("cookie JSESSIONID rewrite", "JSESSIONID=zz", "JSESSIONID="),
}


@pytest.mark.parametrize("mode", list(COOKIE_MODES))
def test_cookie_flags_in_httplog_match_haproxy(mode, backend_factory, proxy_factory):
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed: the differential needs the reference implementation")
    mode_line, unknown, odd = COOKIE_MODES[mode]
    b3, b2 = backend_factory("ents3"), backend_factory("ents2")
    receivers = {impl: SyslogReceiver() for impl in ("haproxy", "balancier")}
    try:
        ports = {}
        for impl, rcv in receivers.items():
            port = free_tcp_port()
            ports[impl] = port
            proxy_factory(f"""
global
    log {rcv.address} local3
    # one worker: the server sequence is compared with haproxy's, and each worker has its own FWRR cycle
    nbthread 1
defaults
    log global
    mode http
    option httplog
    timeout connect 1000
    timeout client 5000
    timeout server 5000
listen esup-proxy
    bind 127.0.0.1:{port}
    {mode_line}
    option httpclose
    balance roundrobin
    server ents3 {b3.address} cookie s3 weight 2
    server ents2 {b2.address} cookie s2 weight 1
""", impl=impl)
        seen: dict[str, list[tuple[str, ...]]] = {}
        # what the client is told (Set-Cookie, Cache-Control) and what the servers receive (Cookie), with the
        # random session id blanked
        wire: dict[str, tuple[list[str], list[str], list[tuple[str, str | None]]]] = {}
        for impl, port in ports.items():
            b3.clear()
            b2.clear()
            login = get("127.0.0.1", port, "/login?user=alice")
            cookies = [v.split(";")[0] for v in login.header_values("Set-Cookie")]
            name = mode_line.split()[1]
            mine = [c for c in cookies if c.startswith(name + "=")]
            assert mine, (impl, login.headers)
            back = mine[0] if mode != "insert" else "; ".join(cookies)
            for cookie in (back, unknown, odd):
                get("127.0.0.1", port, "/", headers=[("Cookie", cookie)])
            raws = receivers[impl].wait_count(lambda x: "esup-proxy/" in x, 4, timeout=5)
            rows = []
            for raw in raws:
                m = HTTPLOG_TAIL.search(raw.rstrip("\n"))
                assert m is not None, raw
                rows.append((m["srv"], m["status"], m["term"], m["req"]))
            seen[impl] = rows
            received = sorted((r.time, r.header("X-Served-By") or srv, r.header("Cookie"))
                              for srv, b in (("ents3", b3), ("ents2", b2)) for r in b.requests())
            wire[impl] = (_sid_blanked(login.header_values("Set-Cookie")),
                          _sid_blanked(login.header_values("Cache-Control")),
                          [(srv, _sid_blanked([c])[0] if c is not None else None) for _t, srv, c in received])
        assert seen["balancier"] == seen["haproxy"]
        assert wire["balancier"] == wire["haproxy"]
        assert len(wire["haproxy"][2]) == 4  # the login and the three returning requests reached a server
        # the login was load balanced and answered with a persistence cookie (inserted or rewritten/prefixed)
        assert seen["haproxy"][0][2][2:] in ("NI", "NR")
        assert seen["haproxy"][1][2][2] == "V"  # the returning client reached its server directly
    finally:
        for rcv in receivers.values():
            rcv.close()


def _sid_blanked(values: list[str]) -> list[str]:
    """The portal's session ids (32 hex digits, random per login) replaced by `<SID>`."""
    return [re.sub(r"[0-9A-F]{32}", "<SID>", v) for v in values]


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
