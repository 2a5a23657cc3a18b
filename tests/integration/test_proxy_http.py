"""The HTTP data plane end to end: `balancier proxy` as a process, real portal backends, raw sockets and curl.

Each test writes a small configuration on loopback (free ports), starts the proxy, drives real clients, and asserts
what the clients got and what the backends received.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request, curl


def _cfg(body: str, glob: str = "", defaults: str = "") -> str:
    return (
        "global\n"
        f"{glob}"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        f"{defaults}"
        f"{body}"
    )


def _get(port: int, target: str = "/", host: str = "127.0.0.1", source: str | None = None,
         headers: list[tuple[str, str]] | None = None, timeout: float = 5.0) -> object:
    with RawConnection(host, port, timeout=timeout, source=source) as c:
        return c.request(build_request("GET", target, headers=headers))


def test_roundrobin_sequence_770_requests(proxy_factory, backend_factory) -> None:
    """256/128/1 weights: HAProxy's FWRR order (ents3 ents3 ents2 ...) and 512/256/2 over 770 requests."""
    b3, b2, b1 = backend_factory("ents3"), backend_factory("ents2"), backend_factory("ents1")
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    balance roundrobin\n"
        f"    server ents3 {b3.address} weight 256\n"
        f"    server ents2 {b2.address} weight 128\n"
        f"    server ents1 {b1.address} weight 1\n",
        glob="    nbthread 1\n"))  # one worker: an exact sequence (each worker has its own FWRR cycle)
    seq = []
    with RawConnection("127.0.0.1", port) as c:
        for _ in range(770):
            r = c.request(build_request("GET", "/"))
            assert r.status == 200
            seq.append(r.header("X-Served-By"))
    assert seq[:6] == ["ents3", "ents3", "ents2", "ents3", "ents3", "ents2"]
    assert Counter(seq) == {"ents3": 512, "ents2": 256, "ents1": 2}
    assert seq[193] == "ents1" and seq[578] == "ents1"


def test_forwardfor_and_except(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port("127.0.0.1")
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    option forwardfor except 127.0.0.2\n"
        f"    server s {b.address}\n"))
    r = _get(port, source="127.0.0.3")
    assert r.status == 200
    r = _get(port, source="127.0.0.2", headers=[("X-Forwarded-For", "9.9.9.9")])
    assert r.status == 200
    recs = b.requests()
    assert recs[0].header_values("X-Forwarded-For") == ["127.0.0.3"]
    assert recs[0].headers[-1][0].lower() == "x-forwarded-for"  # appended last
    assert recs[1].header_values("X-Forwarded-For") == ["9.9.9.9"]  # excepted: passed through unchanged


def test_httpclose_closes_both_sides(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    option httpclose\n    server s {b.address}\n"))
    for _ in range(3):
        with RawConnection("127.0.0.1", port) as c:
            r = c.request(build_request("GET", "/"))
            assert r.status == 200
            assert (r.header("Connection") or "").lower() == "close"
            assert c.is_closed(wait=2.0)
    recs = b.requests()
    assert len(recs) == 3
    assert all(rec.index == 0 for rec in recs)  # one request per server connection
    assert len({rec.conn_id for rec in recs}) == 3
    assert all((rec.header("Connection") or "").lower() == "close" for rec in recs)


def test_keepalive_reuses_server_connections(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        for _ in range(20):
            r = c.request(build_request("GET", "/"))
            assert r.status == 200
            assert not r.wants_close()
    recs = b.requests()
    assert len(recs) == 20
    assert len({rec.conn_id for rec in recs}) < 5


def test_reuse_always_with_close_clients(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    http-reuse always\n    server s {b.address}\n"))
    for _ in range(10):
        with RawConnection("127.0.0.1", port) as c:
            r = c.request(build_request("GET", "/", headers=[("Connection", "close")]))
            assert r.status == 200
            assert (r.header("Connection") or "").lower() == "close"
    recs = b.requests()
    assert len(recs) == 10
    assert len({rec.conn_id for rec in recs}) <= 2


def test_reuse_safe_not_for_first_request(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    for _ in range(4):
        with RawConnection("127.0.0.1", port) as c:
            assert c.request(build_request("GET", "/", headers=[("Connection", "close")])).status == 200
    recs = b.requests()
    assert len({rec.conn_id for rec in recs}) == 4  # safe: a first request never takes an idle connection


def test_pipelined_requests_answered_in_order(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        c.send(b"".join(build_request("GET", f"/echo?n={i}") for i in range(5)))
        for i in range(5):
            r = c.read_response()
            assert r.status == 200
            assert f"n={i}" in r.text
    assert [rec.target for rec in b.requests()] == [f"/echo?n={i}" for i in range(5)]


class _ContinueServer:
    """A raw backend that answers `100 Continue` before reading the body, then 200 with the body length."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                self.seen.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if rest:  # the body must not arrive before our 100
                    self.seen.append(b"EARLY BODY")
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = rest
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                msg = f"got {len(body)}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(msg), msg))

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def continue_server() -> Iterator[_ContinueServer]:
    s = _ContinueServer()
    try:
        yield s
    finally:
        s.close()


def test_expect_100_continue_is_forwarded(proxy_factory, continue_server) -> None:
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s 127.0.0.1:{continue_server.port}\n"))
    with RawConnection("127.0.0.1", port) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:  # the body is sent only once the server said 100
            chunk = c.sock.recv(4096)
            assert chunk, "closed before the interim response"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 ")
        c.send(b"hello")
        r = c.read_response(method="POST")
        assert r.status == 200
        assert r.text == "got 5"
    assert b"expect: 100-continue" in continue_server.seen[0].lower()
    assert b"EARLY BODY" not in continue_server.seen


def test_bad_request_gets_400_and_closes(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert c.is_closed(wait=2.0)
    assert b.requests() == []
    assert _get(port).status == 200


def test_curl_through_proxy(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    r = curl(f"http://127.0.0.1:{port}/")
    assert r.status == 200
    assert "web" in r.text


def test_frontend_backend_sections(proxy_factory, backend_factory) -> None:
    b1, b2 = backend_factory("a"), backend_factory("b")
    port = free_port()
    proxy_factory(_cfg(
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    balance roundrobin\n    server a {b1.address}\n    server b {b2.address}\n",
        glob="    nbthread 1\n"))  # one worker: an exact sequence (each worker has its own FWRR cycle)
    served = [_get(port).header("X-Served-By") for _ in range(4)]
    assert served == ["a", "b", "a", "b"]


def test_http_server_close_keeps_client_connection(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    option http-server-close\n"
                       f"    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        for _ in range(3):
            r = c.request(build_request("GET", "/"))
            assert r.status == 200 and not r.wants_close()
    recs = b.requests()
    assert len({rec.conn_id for rec in recs}) == 3  # server side closed after each response
    assert all((rec.header("Connection") or "").lower() == "close" for rec in recs)


MODE_CASES = [  # (frontend option, backend option, the client connection closes after the response)
    ("httpclose", "", True),
    ("", "httpclose", False),  # the backend's httpclose closes the server side only
    ("httpclose", "httpclose", True),
    ("http-server-close", "", False),
    ("", "http-server-close", False),
    ("httpclose", "http-server-close", True),
    ("http-keep-alive", "httpclose", False),
]


@pytest.mark.parametrize("impl", ["balancier", "haproxy"])
@pytest.mark.parametrize(("fe_opt", "be_opt", "client_closes"), MODE_CASES)
def test_connection_mode_of_frontend_and_backend(proxy_factory, backend_factory, impl: str, fe_opt: str,
                                                 be_opt: str, client_closes: bool) -> None:
    """Observed on HAProxy 2.6: the server side closes after each response when either section says
    httpclose or http-server-close; the client side only when the frontend says httpclose. Run against
    haproxy too, so the table is the real one."""
    b = backend_factory("web")
    port = free_port()
    fe_line = f"    option {fe_opt}\n" if fe_opt else ""
    be_line = f"    option {be_opt}\n" if be_opt else ""
    proxy_factory(_cfg(
        f"frontend fe\n    bind 127.0.0.1:{port}\n{fe_line}    default_backend be\n"
        f"backend be\n{be_line}    server s {b.address}\n"), impl=impl)
    with RawConnection("127.0.0.1", port) as c:
        r = c.request(build_request("GET", "/"))
        assert r.status == 200
        assert r.wants_close() is client_closes
        assert c.is_closed(wait=0.5) is client_closes
        if not client_closes:
            assert c.request(build_request("GET", "/")).status == 200
    recs = b.requests()
    assert len({rec.conn_id for rec in recs}) == len(recs)  # a server connection per request
    assert all((rec.header("Connection") or "").lower() == "close" for rec in recs)


def test_http10_client_keepalive_only_when_asked(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        r = c.request(build_request("GET", "/", version="HTTP/1.0"))
        assert r.status == 200 and (r.header("Connection") or "").lower() == "close"
        assert c.is_closed(wait=2.0)
    with RawConnection("127.0.0.1", port) as c:
        for _ in range(2):
            r = c.request(build_request("GET", "/", version="HTTP/1.0", headers=[("Connection", "keep-alive")]))
            assert r.status == 200 and (r.header("Connection") or "").lower() == "keep-alive"


def test_chunked_bodies_both_ways(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response(method="POST")
        assert r.status == 200
        r2 = c.request(build_request("GET", "/"))  # the connection is still in sync
        assert r2.status == 200
    assert b.requests()[0].body_length == 11


class _DyingKeepAliveServer:
    """Answers the first request of each connection with keep-alive, then closes on the next one without answering:
    the shape of an idle server connection that died while pooled."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.answered = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            served = 0
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = conn.recv(4096)
                    except OSError:
                        return
                    if not chunk:
                        return
                    data += chunk
                _, _, data = data.partition(b"\r\n\r\n")
                if served == 1:
                    return  # close without a byte of response
                served += 1
                self.answered += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)


def test_request_on_dead_reused_connection_is_replayed(proxy_factory) -> None:
    srv = _DyingKeepAliveServer()
    try:
        port = free_port()
        proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    http-reuse always\n"
                           f"    retries 0\n    server s 127.0.0.1:{srv.port}\n"))
        for _ in range(3):
            with RawConnection("127.0.0.1", port) as c:
                r = c.request(build_request("GET", "/"))
                assert r.status == 200 and r.body == b"ok"
        assert srv.answered == 3
        assert srv.connections >= 3  # each pooled connection died on reuse and a fresh one answered
    finally:
        srv.close()


def test_server_maxqueue_full_gives_503(proxy_factory, backend_factory) -> None:
    slow = backend_factory("slow", delay=1.0)
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout queue 5s\n    cookie SRV insert\n"
                       f"    server s {slow.address} cookie s maxconn 1 maxqueue 1\n"))
    results: list[int] = []

    def one() -> None:
        with RawConnection("127.0.0.1", port, timeout=10) as c:
            results.append(c.request(build_request("GET", "/", headers=[("Cookie", "SRV=s")])).status)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert sorted(results) == [200, 200, 503]  # one served, one queued, the third finds the queue full


def test_forwardfor_header_name_and_if_none(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    option forwardfor header X-Client if-none\n"
                       f"    server s {b.address}\n"))
    _get(port)
    _get(port, headers=[("X-Client", "1.2.3.4")])
    first, second = b.requests()
    assert first.header_values("X-Client") == ["127.0.0.1"] and first.header("X-Forwarded-For") is None
    assert second.header_values("X-Client") == ["1.2.3.4"]  # if-none: an existing header is kept alone


def test_reuse_never_keeps_connections_private(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    http-reuse never\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c1, RawConnection("127.0.0.1", port) as c2:
        for _ in range(3):
            assert c1.request(build_request("GET", "/")).status == 200
            assert c2.request(build_request("GET", "/")).status == 200
    per_conn = b.per_connection()
    assert sorted(per_conn.values()) == [3, 3]  # each client kept its own server connection


def test_debug_mode_logs_requests_on_stderr(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"),
                      extra_args=["-d"])
    assert _get(port, "/echo?dbg").status == 200
    deadline = time.monotonic() + 3
    while '"GET /echo?dbg HTTP/1.1"' not in p.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"GET /echo?dbg HTTP/1.1"' in p.stderr and "web web/s" in p.stderr


def test_server_without_port_uses_the_client_destination_port(proxy_factory, backend_factory) -> None:
    port = free_port()
    b = backend_factory("same-port", host="127.0.0.2", port=port)
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s 127.0.0.2\n"))
    assert _get(port).header("X-Served-By") == "same-port"
    assert b.requests()[0].peer[0] == "127.0.0.1"  # reached on 127.0.0.2:<the port the client used>
