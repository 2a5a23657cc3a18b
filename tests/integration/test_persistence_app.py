"""Cookie persistence with the bundled portal app behind the reference farm (256/128/1 + backup), in prefix,
insert and rewrite modes: a logged-in user stays on their server for 1,000 requests, the log's cookie flags say
so, and when that server dies the user lands on another one (session lost, as the reference deployment accepts)
with the `D` flag.

Rules of the modes (spec haproxy.md §5):
- prefix: the app's own `JSESSIONID` is prefixed `s3~...` (the reference deployment).
- insert: the proxy adds its own `SERVERID` cookie (`insert indirect nocache`); the app's cookie is untouched.
- rewrite: the app must emit the cookie the proxy rewrites; the portal only sets `JSESSIONID`, so the served
  app here also sets `SERVERID=app` at login (a real server, the page logic is the portal's own).
The 1,000 requests share one keep-alive client connection, so the test runs in seconds; persistence is decided
per request all the same. Log lines come from a real UDP syslog receiver.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.backends import Backend, BackendFactory, free_port
from support.http import RawConnection, Response, build_request
from support.proxy import ProxyFactory
from support.syslog import HttpLog, SyslogReceiver, parse_httplog, parse_syslog

REQUESTS = 1000
FARM = (("ents3", "s3", 256), ("ents2", "s2", 128), ("ents1", "s1", 1))
COOKIES = {
    "prefix": "cookie JSESSIONID prefix",
    "insert": "cookie SERVERID insert indirect nocache",
    "rewrite": "cookie SERVERID rewrite",
}


def _config(mode: str, backends: dict[str, Backend], syslog: SyslogReceiver, port: int) -> str:
    servers = "".join(f"    server {n} {backends[n].address} cookie {c} weight {w} check inter 100 rise 1 fall 3\n"
                      for n, c, w in FARM)
    return f"""defaults
    log {syslog.address} local3
    mode http
    option httplog
    option dontlognull
    retries 3
    option redispatch
    timeout connect 1s
    timeout client 10s
    timeout server 10s
listen esup-proxy
    bind 127.0.0.1:{port}
    {COOKIES[mode]}
    option httpchk
    balance roundrobin
{servers}    server ent-maintenance {backends['ent-maintenance'].address} check inter 100 backup
"""


def _sets_serverid(backend: Backend) -> None:
    """The app of rewrite mode: the portal's pages, plus the `SERVERID` cookie the proxy rewrites at login."""
    server: Any = backend.server
    page = server._page

    def with_serverid(rec: Any) -> Any:
        status, headers, body, streamed = page(rec)
        if rec.target.startswith("/login"):
            headers = [*headers, ("Set-Cookie", "SERVERID=app; Path=/")]
        return status, headers, body, streamed

    server._page = with_serverid


class Browser:
    """A client with a cookie jar (name -> value), on one keep-alive connection (reopened when closed)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar: dict[str, str] = {}
        self.conn: RawConnection | None = None

    def get(self, target: str) -> Response:
        headers = [("Cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items()))] if self.jar else []
        if self.conn is None:
            self.conn = RawConnection("127.0.0.1", self.port, timeout=5.0)
        r = self.conn.request(build_request("GET", target, headers=headers))
        if r.wants_close:
            self.close()
        for sc in r.header_values("Set-Cookie"):
            name, _, rest = sc.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.jar[name.strip()] = value
            else:
                self.jar.pop(name.strip(), None)
        return r

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _logs(syslog: SyslogReceiver, count: int) -> list[HttpLog]:
    raws = syslog.wait_count(lambda x: '"GET /' in x, count, timeout=10.0)
    return [parse_httplog(parse_syslog(x).message) for x in raws]


@pytest.mark.parametrize("mode", ["prefix", "insert", "rewrite"])
def test_session_survives_and_fails_over(mode: str, proxy_factory: ProxyFactory, backend_factory: BackendFactory,
                                         syslog_receiver: SyslogReceiver) -> None:
    names = [n for n, _, _ in FARM] + ["ent-maintenance"]
    backends = {n: backend_factory(n) for n in names}
    if mode == "rewrite":
        for b in backends.values():
            _sets_serverid(b)
    port = free_port()
    proxy_factory(_config(mode, backends, syslog_receiver, port))
    time.sleep(0.3)  # first checks done (all pass): every server at full health
    syslog_receiver.clear()
    alice = Browser(port)
    try:
        login = alice.get("/login?user=alice")
        assert login.status == 200 and "logged in as alice (new session)" in login.text
        home = login.header("X-Served-By")
        assert home == "ents3"  # the first load-balanced request goes to the heaviest server
        if mode == "prefix":
            assert alice.jar["JSESSIONID"].startswith("s3~")
        else:
            assert alice.jar["SERVERID"] == "s3"
            assert not alice.jar["JSESSIONID"].startswith("s3")
        for i in range(REQUESTS):
            r = alice.get("/")
            assert (r.status, r.header("X-Served-By")) == (200, home), i
            assert "logged in as alice" in r.text, (i, r.text[:200])
        logs = _logs(syslog_receiver, REQUESTS + 1)
        assert logs[0].termination_state == ("--NI" if mode == "insert" else "--NR"), logs[0]
        flags = {lg.termination_state for lg in logs[1:]}
        assert flags == {"--VN"}, flags
        assert {lg.server for lg in logs} == {home}

        # the server dies: the user lands elsewhere, without an error, and loses the session
        backends[home].refuse()
        syslog_receiver.clear()
        r = alice.get("/")
        assert r.status == 200
        other = r.header("X-Served-By")
        assert other not in (home, None, "ent-maintenance")
        assert "session lost" in r.text
        lg = _logs(syslog_receiver, 1)[0]
        assert lg.server == other and lg.termination_state[2] == "D", lg
        if mode == "insert":
            # a new server cookie for the new server
            assert alice.jar["SERVERID"] in ("s2", "s1")
        # once the failure is detected the new server keeps the user (the cookie the proxy set points at it)
        syslog_receiver.wait_for(lambda x: f"Server esup-proxy/{home} is DOWN" in x, timeout=5.0)
        alice.get("/login?user=alice")
        again = [alice.get("/") for _ in range(20)]
        assert {x.header("X-Served-By") for x in again} == {alice_server(alice, backends, mode)}
        assert all("logged in as alice" in x.text for x in again)
    finally:
        alice.close()


def alice_server(browser: Browser, backends: dict[str, Backend], mode: str) -> str:
    """The server named by the client's persistence cookie."""
    value = browser.jar["JSESSIONID"].split("~", 1)[0] if mode == "prefix" else browser.jar["SERVERID"]
    return {c: n for n, c, _ in FARM}[value]
