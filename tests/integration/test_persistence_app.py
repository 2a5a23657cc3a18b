"""Cookie persistence with the bundled portal app behind the reference farm (256/128/1 + backup), in prefix,
insert and rewrite modes: a logged-in user stays on their server for 1,000 requests while five other users, spread
over the weighted farm, stay on theirs; the log's cookie flags say so, and when that server dies the user lands on
another one (session lost, as the reference deployment accepts) with the `D` flag. Every case also runs behind
Debian's haproxy, which passes the same assertions.

Rules of the modes (spec haproxy.md §5):
- prefix: the app's own `JSESSIONID` is prefixed `s3~...` (the reference deployment).
- insert: the proxy adds its own `SERVERID` cookie (`insert indirect nocache`); the app's cookie is untouched.
- rewrite: the app must emit the cookie the proxy rewrites; the portal only sets `JSESSIONID`, so the served
  app here also sets `SERVERID=app` at login (a real server, the page logic is the portal's own).
The 1,000 requests share one keep-alive client connection, so the test runs in seconds; persistence is decided
per request all the same. Log lines come from a real UDP syslog receiver.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

from support.backends import Backend, BackendFactory, free_port
from support.http import ConnectionClosed, RawConnection, Response, build_request
from support.proxy import ProxyFactory
from support.syslog import HttpLog, SyslogReceiver, parse_httplog, parse_syslog

REQUESTS = 1000
OTHERS_EVERY = 20  # the other users send one request every this many of alice's
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
    """A client with a cookie jar (name -> value), on one keep-alive connection (reopened when closed).

    As browsers do (RFC 9112 §9.3.1), a GET on a reused connection that closes before any response byte is sent
    again once on a new connection: a keep-alive connection may be closed by the proxy at any idle moment."""

    def __init__(self, port: int, name: str = "alice") -> None:
        self.port = port
        self.name = name
        self.home: str | None = None  # the server that holds the session
        self.jar: dict[str, str] = {}
        self.conn: RawConnection | None = None
        self.retries = 0  # requests sent again after their reused connection closed

    def get(self, target: str) -> Response:
        headers = [("Cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items()))] if self.jar else []
        request = build_request("GET", target, headers=headers)
        if self.conn is None:
            self.conn = RawConnection("127.0.0.1", self.port, timeout=5.0)
            r = self.conn.request(request)
        else:
            try:
                r = self.conn.request(request)
            except ConnectionClosed as e:
                if e.args[0] != "closed before a response":
                    raise
                self.retries += 1
                self.close()
                self.conn = RawConnection("127.0.0.1", self.port, timeout=5.0)
                r = self.conn.request(request)
        if r.wants_close():
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


# The same test runs behind Debian's haproxy: the flags, the cookies and the failover are HAProxy's own behaviour.
@pytest.mark.parametrize("impl", ["balancier", "haproxy"])
@pytest.mark.parametrize("mode", ["prefix", "insert", "rewrite"])
def test_session_survives_and_fails_over(mode: str, impl: str, proxy_factory: ProxyFactory,
                                         backend_factory: BackendFactory, syslog_receiver: SyslogReceiver) -> None:
    if impl == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed: the reference run needs it")
    names = [n for n, _, _ in FARM] + ["ent-maintenance"]
    backends = {n: backend_factory(n) for n in names}
    if mode == "rewrite":
        for b in backends.values():
            _sets_serverid(b)
    port = free_port()
    proxy_factory(_config(mode, backends, syslog_receiver, port), impl=impl)
    time.sleep(0.3)  # first checks done (all pass): every server at full health
    syslog_receiver.clear()
    alice = Browser(port)
    others = [Browser(port, name) for name in ("bob", "carol", "dave", "erin", "frank")]
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
        # other users log in meanwhile: the weighted farm spreads them (each worker picks ents3 ents3 ents2 ...,
        # so six logins over the workers always reach ents2 too), and each of them stays on its own server
        for u in others:
            r = u.get(f"/login?user={u.name}")
            assert r.status == 200 and "(new session)" in r.text
            u.home = r.header("X-Served-By")
        assert {u.home for u in others} | {home} >= {"ents3", "ents2"}, [u.home for u in others]
        for i in range(REQUESTS):
            r = alice.get("/")
            assert (r.status, r.header("X-Served-By")) == (200, home), i
            assert "logged in as alice" in r.text, (i, r.text[:200])
            if i % OTHERS_EVERY == 0:
                for u in others:
                    r = u.get("/")
                    assert (r.status, r.header("X-Served-By")) == (200, u.home), (u.name, i)
                    assert f"logged in as {u.name}" in r.text
        # while every server is healthy the keep-alive connections never close under the clients
        assert [b.retries for b in (alice, *others)] == [0] * (1 + len(others))
        logins = 1 + len(others)
        logs = _logs(syslog_receiver, logins + REQUESTS + len(others) * (REQUESTS // OTHERS_EVERY))
        login_logs = [lg for lg in logs if lg.request_line.startswith("GET /login")]
        assert len(login_logs) == logins
        assert {lg.termination_state for lg in login_logs} == {"--NI" if mode == "insert" else "--NR"}, login_logs
        flags = {lg.termination_state for lg in logs if lg not in login_logs}
        assert flags == {"--VN"}, flags
        assert {lg.server for lg in logs} == {home} | {u.home for u in others}

        # the server dies: the user lands elsewhere, without an error, and loses the session
        backends[home].refuse()
        syslog_receiver.clear()
        r = alice.get("/")
        assert r.status == 200
        other = r.header("X-Served-By")
        assert other not in (home, None, "ent-maintenance")
        assert "session lost" in r.text
        # (the line of this request; a first attempt cut with the dying server's connection may have its own)
        lg = parse_httplog(parse_syslog(syslog_receiver.wait_for(
            lambda x: '"GET / HTTP/1.1"' in x and f" esup-proxy/{other} " in x, timeout=10.0)).message)
        # D: the cookie named a server that is down; insert mode gives the user a cookie for the new server (I)
        assert lg.server == other and lg.termination_state == ("--DI" if mode == "insert" else "--DN"), lg
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
        for b in (alice, *others):
            b.close()


def alice_server(browser: Browser, backends: dict[str, Backend], mode: str) -> str:
    """The server named by the client's persistence cookie."""
    value = browser.jar["JSESSIONID"].split("~", 1)[0] if mode == "prefix" else browser.jar["SERVERID"]
    return {c: n for n, c, _ in FARM}[value]
