"""The checker's pure parts: request bytes, response judgement, results applied to server state, log wording."""

from __future__ import annotations

import pytest

from balancier.proxy.checker import Checker, CheckResult, check_request, judge_http, transition_message
from balancier.proxy.config.model import HttpCheck, HttpCheckExpect
from balancier.proxy.logs import ALERT, EMERG, NOTICE, Logger

from proxy_builders import make_backend


class RecordingLogger(Logger):
    """A Logger whose only target is a list (the edge of the unit under test)."""

    def __init__(self) -> None:
        super().__init__([], "t")
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, now: float | None = None) -> None:
        self.lines.append((level, msg))


def seed_backend(**kw):
    chk = {"check": True, "inter": 5000, "rise": 1, "fall": 3}
    return make_backend(
        [("ents3", 256, dict(chk, cookie="s3")), ("ents2", 128, dict(chk, cookie="s2")),
         ("ents1", 1, dict(chk, cookie="s1")), ("ent-maintenance", 1, {"check": True, "backup": True})],
        kind="listen", name="esup-proxy", httpchk=HttpCheck(), **kw)


# --- request bytes -----------------------------------------------------------------------------------------------

def test_default_httpchk_request_bytes():
    assert check_request(HttpCheck()) == b"OPTIONS / HTTP/1.0\r\n\r\n"


def test_http11_request_with_host_header():
    hc = HttpCheck("GET", "/health", "HTTP/1.1", headers=(("Host", "example.com"),))
    assert check_request(hc) == b"GET /health HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n"


def test_body_and_content_length():
    hc = HttpCheck("POST", "/c", "HTTP/1.1", body="ping")
    assert check_request(hc) == b"POST /c HTTP/1.1\r\nconnection: close\r\ncontent-length: 4\r\n\r\nping"
    assert b"content-length: 0" in check_request(HttpCheck("PUT", "/", "HTTP/1.1"))
    assert b"content-length" not in check_request(HttpCheck("DELETE", "/", "HTTP/1.1"))


def test_configured_connection_header_is_kept():
    hc = HttpCheck("GET", "/", "HTTP/1.1", headers=(("Connection", "keep-alive"),))
    assert check_request(hc).count(b"connection:") == 1


# --- judging ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("hc", "data", "status", "ok", "code", "info"),
    [
        (HttpCheck(), b"HTTP/1.0 200 OK\r\n\r\n", "L7OK", True, 200, ""),
        (HttpCheck(), b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", "L7OK", True, 302, ""),
        (HttpCheck(), b"HTTP/1.1 500 Internal Server Error\r\n\r\n", "L7STS", False, 500, "Internal Server Error"),
        (HttpCheck(), b"HTTP/1.1 404 Not Found\r\n\r\n", "L7STS", False, 404, "Not Found"),
        (HttpCheck(), b"", "L7RSP", False, None, ""),
        (HttpCheck(), b"SSH-2.0-OpenSSH\r\n", "L7RSP", False, None, ""),
        (HttpCheck(disable_on_404=True), b"HTTP/1.1 404 Not Found\r\n\r\n", "L7OKC", True, 404, ""),
        (HttpCheck(expect=HttpCheckExpect("status", "200,204-206")), b"HTTP/1.1 205 R\r\n\r\n", "L7OK", True, 205, ""),
        (HttpCheck(expect=HttpCheckExpect("status", "200")), b"HTTP/1.1 301 M\r\n\r\n", "L7STS", False, 301,
         "M"),
        (HttpCheck(expect=HttpCheckExpect("status", "500", negate=True)), b"HTTP/1.1 503 U\r\n\r\n", "L7OK", True,
         503, ""),
        (HttpCheck(expect=HttpCheckExpect("rstatus", "^2")), b"HTTP/1.1 201 C\r\n\r\n", "L7OK", True, 201, ""),
        (HttpCheck(expect=HttpCheckExpect("string", "alive")), b"HTTP/1.1 200 OK\r\n\r\nI am alive\n", "L7OK",
         True, 200, ""),
        (HttpCheck(expect=HttpCheckExpect("string", "alive")), b"HTTP/1.1 200 OK\r\n\r\ndead\n", "L7RSP", False,
         200, "HTTP content check did not match"),
        (HttpCheck(expect=HttpCheckExpect("rstring", "maint", negate=True)), b"HTTP/1.1 200 OK\r\n\r\nmaint on",
         "L7RSP", False, 200, "HTTP check matched unwanted content"),
        (HttpCheck(expect=HttpCheckExpect("string", "alive")), b"HTTP/1.1 200 OK\r\n\r\n", "L7RSP", False, 200,
         "HTTP content check could not find a response body"),
    ],
)
def test_judge_http(hc, data, status, ok, code, info):
    r = judge_http(hc, data, up=True)
    assert (r.status, r.ok, r.code, r.info) == (status, ok, code, info)


def test_404_on_a_down_server_is_a_failure_even_with_disable_on_404():
    r = judge_http(HttpCheck(disable_on_404=True), b"HTTP/1.1 404 Not Found\r\n\r\n", up=False)
    assert (r.status, r.ok) == ("L7STS", False)


def test_describe_texts():
    assert CheckResult("L4CON", False, info="Connection refused").describe() == \
        'reason: Layer4 connection problem, info: "Connection refused", check duration: 0ms'
    assert CheckResult("L7OK", True, 200, duration=1).describe() == \
        "reason: Layer7 check passed, code: 200, check duration: 1ms"
    assert CheckResult("L4TOUT", False, duration=2001).describe() == "reason: Layer4 timeout, check duration: 2001ms"
    # L7RSP / L7TOUT carry no code in messages
    assert CheckResult("L7TOUT", False, 0, duration=5).describe() == "reason: Layer7 timeout, check duration: 5ms"


# --- applying results and the log lines --------------------------------------------------------------------------

def make_checker(be, log_health_checks=False):
    lg = RecordingLogger()
    ch = Checker([be], {be.name: lg}, stderr=False)
    return ch, lg


def test_seed_down_message_exact_wording():
    be = seed_backend()
    ch, lg = make_checker(be)
    ents2 = be.server("ents2")
    ch.apply(ents2, CheckResult("L4CON", False, info="Connection refused", duration=0))
    assert ents2.op == "down"  # rise 1 fall 3 starts at health 1: one failure at start → DOWN
    assert lg.lines == [(ALERT, 'Server esup-proxy/ents2 is DOWN, reason: Layer4 connection problem, info: '
                                '"Connection refused", check duration: 0ms. 2 active and 1 backup servers left. '
                                '0 sessions active, 0 requeued, 0 remaining in queue.')]


def test_up_message_and_running_on_backup_and_no_server_available():
    be = seed_backend()
    ch, lg = make_checker(be)
    for name in ("ents3", "ents2", "ents1"):
        ch.apply(be.server(name), CheckResult("L7STS", False, 500, "Internal Server Error", 2))
    assert lg.lines[-1][1].endswith("0 active and 1 backup servers left. Running on backup. 0 sessions active, "
                                    "0 requeued, 0 remaining in queue.")
    assert 'code: 500, info: "Internal Server Error", check duration: 2ms' in lg.lines[-1][1]
    lg.lines.clear()
    ch.apply(be.server("ent-maintenance"), CheckResult("L4CON", False, info="Connection refused"))
    assert lg.lines[0][1].startswith("Backup Server esup-proxy/ent-maintenance is DOWN")
    assert lg.lines[1] == (EMERG, "proxy esup-proxy has no server available!")
    lg.lines.clear()
    ch.apply(be.server("ents1"), CheckResult("L7OK", True, 200, duration=1))
    assert lg.lines == [(NOTICE, "Server esup-proxy/ents1 is UP, reason: Layer7 check passed, code: 200, check "
                                 "duration: 1ms. 1 active and 0 backup servers online. 0 sessions requeued, 0 total "
                                 "in queue.")]


def test_backend_section_says_backend():
    be = make_backend([("a", 1, {"check": True})], httpchk=HttpCheck())
    ch, lg = make_checker(be)
    ch.apply(be.server("a"), CheckResult("L4TOUT", False, duration=2000))
    assert lg.lines[-1] == (EMERG, "backend b has no server available!")


def test_fall_consecutive_failures_from_full_health():
    be = seed_backend()
    ch, lg = make_checker(be)
    s = be.server("ents3")
    ch.apply(s, CheckResult("L7OK", True, 200))
    assert s.health == 3 and lg.lines == []
    for _ in range(2):
        ch.apply(s, CheckResult("L7STS", False, 503, "Service Unavailable"))
    assert s.op == "up"
    ch.apply(s, CheckResult("L7STS", False, 503, "Service Unavailable"))
    assert s.op == "down" and s.chkfail == 3 and s.chkdown == 1
    assert s.check_status == "L7STS" and s.check_code == 503


def test_disable_on_404_makes_the_server_stopping_then_up_again():
    be = make_backend([("a", 1, {"check": True}), ("b", 1, {"check": True})],
                      httpchk=HttpCheck(disable_on_404=True))
    ch, lg = make_checker(be)
    a = be.server("a")
    ch.apply(a, CheckResult("L7OKC", True, 404, conditional=True))
    assert a.op == "stopping" and not a.usable
    assert lg.lines[-1] == (NOTICE, "Server b/a is stopping, reason: Layer7 check conditionally passed, code: 404, "
                                    "check duration: 0ms. 1 active and 0 backup servers online. 0 sessions requeued, "
                                    "0 total in queue.")
    ch.apply(a, CheckResult("L7OK", True, 200))
    assert a.op == "up" and a.usable


def test_log_health_checks_lines():
    be = make_backend([("a", 1, {"check": True, "rise": 2, "fall": 3})], httpchk=HttpCheck(),
                      log_health_checks=True)
    ch, lg = make_checker(be)
    a = be.server("a")
    ch.apply(a, CheckResult("L7STS", False, 500, "Internal Server Error", 1))
    assert lg.lines[0] == (NOTICE, 'Health check for server b/a failed, reason: Layer7 wrong status, code: 500, '
                                   'info: "Internal Server Error", check duration: 1ms, status: 0/2 DOWN.')
    # the reason is then left out of the state line
    assert lg.lines[1][1].startswith("Server b/a is DOWN. 0 active and 0 backup servers left.")
    lg.lines.clear()
    ch.apply(a, CheckResult("L7OK", True, 200, duration=1))
    assert lg.lines == [(NOTICE, "Health check for server b/a succeeded, reason: Layer7 check passed, code: 200, "
                                 "check duration: 1ms, status: 1/2 DOWN.")]
    lg.lines.clear()
    ch.apply(a, CheckResult("L7OK", True, 200, duration=1))
    assert lg.lines[0][1].endswith("status: 3/3 UP.")
    lg.lines.clear()
    ch.apply(a, CheckResult("L7OK", True, 200, duration=1))
    assert lg.lines == []  # neither status nor health changed: nothing logged


def test_admin_transitions_are_logged():
    be = make_backend([("a", 1), ("b", 1)])
    ch, lg = make_checker(be)
    a = be.server("a")
    be.set_admin(a, "maint")
    assert lg.lines[-1] == (ALERT, "Server b/a is going DOWN for maintenance. 1 active and 0 backup servers left. "
                                   "0 sessions active, 0 requeued, 0 remaining in queue.")
    be.set_admin(a, "ready")
    assert lg.lines[-1] == (NOTICE, "Server b/a is UP/READY (leaving forced maintenance).")
    be.set_admin(a, "drain")
    assert lg.lines[-1] == (NOTICE, "Server b/a enters drain state. 1 active and 0 backup servers online. "
                                    "0 sessions requeued, 0 total in queue.")
    be.set_admin(a, "maint")  # from drain: only a notice
    assert lg.lines[-1][0] == NOTICE and "going DOWN for maintenance" in lg.lines[-1][1]
    be.set_admin(a, "drain")
    assert lg.lines[-1] == (NOTICE, "Server b/a is UP/DRAIN (leaving forced maintenance).")
    be.set_admin(a, "ready")
    assert lg.lines[-1] == (NOTICE, "Server b/a is UP (leaving forced drain).")
    before = len(lg.lines)
    events = []
    be.subscribe(events.append)
    be.set_weight(a, 5)
    assert [(e.what, e.old, e.new) for e in events] == [("weight", 1, 5)]
    assert transition_message(events[0]) is None  # weight changes are silent
    assert len(lg.lines) == before


def test_down_server_entering_maint():
    be = make_backend([("a", 1, {"check": True}), ("b", 1)], httpchk=HttpCheck())
    ch, lg = make_checker(be)
    a = be.server("a")
    ch.apply(a, CheckResult("L4CON", False, info="Connection refused"))
    be.set_admin(a, "maint")
    assert lg.lines[-1] == (NOTICE, "Server b/a was DOWN and now enters maintenance.")


def test_losing_the_last_server_to_maint_is_an_emergency():
    be = make_backend([("a", 1)], kind="listen", name="nosrv")
    ch, lg = make_checker(be)
    be.set_admin(be.server("a"), "maint")
    assert lg.lines[-1] == (EMERG, "proxy nosrv has no server available!")


def test_leaving_maint_restarts_health_at_rise():
    be = make_backend([("a", 1, {"check": True, "rise": 2, "fall": 3})], httpchk=HttpCheck())
    ch, _ = make_checker(be)
    a = be.server("a")
    ch.apply(a, CheckResult("L4CON", False, info="Connection refused"))
    assert a.op == "down"
    be.set_admin(a, "maint")
    be.set_admin(a, "ready")
    assert (a.op, a.health) == ("up", 2)


def test_server_without_port_cannot_be_checked():
    be = make_backend([("a", 1, {"check": True})])
    object.__setattr__(be.server("a").cfg, "port", None)
    with pytest.raises(ValueError, match="port"):
        Checker([be], {}, stderr=False)
