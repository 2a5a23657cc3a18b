"""The stream's fast paths, byte for byte: what the server and the client receive.

An `HttpStream` is driven in-process with recording transports (no sockets: the edge of a unit test); each case
is one request/response exchange whose forwarded bytes are checked exactly: the raw head kept as received where
nothing has to change, `Connection` fields removed or replaced where the connection modes differ, and the full
path still taken (and still rewriting) when a cookie or an HTTP/1.0 client needs it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from balancier.http1.heads import RESPONSE_MEMO
from balancier.proxy.config import load
from balancier.proxy.pool import ServerConn
from balancier.proxy.runtime import Runtime
from balancier.proxy.stream import HttpStream

from proxy_builders import Recorder

BODY = b"hello"
RESP_KA = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n" + BODY
RESP_PLAIN = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5\r\n\r\n" + BODY
RESP_CLOSE = b"HTTP/1.1 200 OK\r\nServer: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\n" + BODY


def setup(tmp_path: Path, loop: asyncio.AbstractEventLoop, extra: str) -> tuple[Runtime, Any, ServerConn]:
    cfg = tmp_path / "p.cfg"
    cfg.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        "    option forwardfor\n"
        f"listen web\n    bind 127.0.0.1:18999\n{extra}    server s1 127.0.0.1:9 cookie A\n")
    config, _ = load([str(cfg)])
    rt = Runtime(config, loop, {})
    route = rt.routes[0]
    srv = route.be.backend.servers[0]
    conn = ServerConn(srv)
    conn.connection_made(Recorder())
    conn.uses = 1
    rt.pool.put(conn, 0.0)
    return rt, route, conn


def exchange(rt: Runtime, route: Any, conn: ServerConn, request: bytes, response: bytes) -> tuple[bytes, bytes, Any]:
    s = HttpStream(rt, route)
    client = Recorder()
    s.connection_made(client)
    s.data_received(request)
    assert s.sconn is conn, "the pooled server connection is used"
    conn.data_received(response)
    server_tr = conn.transport
    assert isinstance(server_tr, Recorder)
    return server_tr.data, client.data, s


def test_keepalive_client_raw_both_ways(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    to_srv, to_cli, s = exchange(rt, route, conn, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", RESP_KA)
    assert to_srv == b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.9\r\n\r\n"
    assert to_cli == RESP_KA  # validated, forwarded as received
    assert not s.transport.closing and s.nreq == 1 and s.sconn is None
    assert rt.pool.get(conn.server) is conn, "the server connection went back to the pool"


def test_close_client_gets_connection_close(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-A: 1\r\n\r\n"
    to_srv, to_cli, s = exchange(rt, route, conn, req, RESP_KA)
    # the client's Connection field is not forwarded: the server connection stays reusable
    assert to_srv == b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-Forwarded-For: 127.0.0.9\r\n\r\n"
    assert to_cli == b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\n" + BODY
    assert s.transport.closing
    assert rt.pool.get(conn.server) is conn


def test_server_close_with_keepalive_client(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    _, to_cli, s = exchange(rt, route, conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", RESP_CLOSE)
    assert to_cli == RESP_PLAIN  # the server's close is hop-by-hop: the client connection stays
    assert not s.transport.closing
    assert rt.pool.get(conn.server) is None and not conn.alive, "a closing server connection is not pooled"


def test_httpclose_mode(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    option httpclose\n")
    s = HttpStream(rt, route)
    client = Recorder()
    s.connection_made(client)
    # httpclose never reuses: the stream connects; hand it the prepared connection as if connected
    s.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    task = s.task
    assert task is not None
    task.cancel()
    s.task = None
    loop.run_until_complete(asyncio.sleep(0.01))  # the cancelled attempt ends (and is ignored by the stream)
    s._attach(conn, loop.time())
    assert isinstance(conn.transport, Recorder)
    assert conn.transport.data == b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.9\r\nConnection: close\r\n\r\n"
    conn.data_received(RESP_CLOSE)
    assert client.data == RESP_CLOSE and client.closing  # already says close: forwarded as received


def test_cookie_prefix_without_set_cookie_stays_raw(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n    cookie JSESSIONID prefix\n")
    _, to_cli, s = exchange(rt, route, conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", RESP_KA)
    assert to_cli == RESP_KA
    assert (s.ck_req, s.ck_resp) == ("-", "-")  # reset for the next request once logged


def test_cookie_prefix_rewrites_set_cookie(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n    cookie JSESSIONID prefix\n")
    resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=xyz; path=/\r\nContent-Length: 5\r\n\r\n" + BODY
    to_srv, to_cli, _ = exchange(rt, route, conn,
                                 b"GET / HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=A~abc\r\n\r\n", resp)
    assert b"Cookie: JSESSIONID=abc\r\n" in to_srv  # prefix removed towards the server
    assert b"Set-Cookie: JSESSIONID=A~xyz; path=/\r\n" in to_cli  # and added towards the client


def test_http10_client_takes_the_full_path(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    _, to_cli, s = exchange(rt, route, conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", RESP_KA)
    assert to_cli.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: keep-alive\r\n" in to_cli and to_cli.count(b"Connection") == 1
    assert not s.transport.closing


def test_body_split_over_reads(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    s = HttpStream(rt, route)
    client = Recorder()
    s.connection_made(client)
    s.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.data_received(RESP_KA[:-3])
    assert s.sconn is conn and s.status == 200  # head forwarded, body still expected
    conn.data_received(RESP_KA[-3:])
    assert client.data == RESP_KA and s.sconn is None
    # junk after the body: the server connection is not trusted any more
    s.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.data_received(RESP_KA + b"JUNK")
    assert client.data == RESP_KA * 2 and not conn.alive


def _request_state(s: HttpStream) -> dict[str, Any]:
    from balancier.proxy.stream import _REQUEST_DEFAULTS

    return {k: getattr(s, k) for k in _REQUEST_DEFAULTS}


def test_every_request_starts_from_the_defaults(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The reset between keep-alive requests restores every per-request field, the rare ones (request body,
    interim response, persistence flags...) included, whichever path the previous request took."""
    from balancier.proxy.stream import _REQUEST_DEFAULTS

    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n    cookie JSESSIONID prefix\n")
    s = HttpStream(rt, route)
    client = Recorder()
    s.connection_made(client)
    assert _request_state(s) == _REQUEST_DEFAULTS
    exchanges = [
        # a body (q_left, req_done, bytes_in), an interim response (rbuf, resp) and a Set-Cookie (full path)
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
         b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=x\r\nContent-Length: 5\r\n\r\n"
         + BODY),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", RESP_KA),  # the fast path
        (b"GET / HTTP/1.1\r\nHost: h\r\nCookie: JSESSIONID=A~abc\r\n\r\n", RESP_KA),  # direct persistence
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n0\r\n\r\n"),  # a chunked response (rframer)
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", RESP_KA),
    ]
    changed: set[str] = set()
    for request, response in exchanges:
        s.data_received(request)
        assert s.sconn is conn
        changed |= {k for k, v in _request_state(s).items() if v != _REQUEST_DEFAULTS[k]}
        conn.data_received(response[:-1])  # all but the last byte: the response is in progress
        changed |= {k for k, v in _request_state(s).items() if v != _REQUEST_DEFAULTS[k]}
        conn.data_received(response[-1:])
        assert s.sconn is None and not client.closing
        assert _request_state(s) == _REQUEST_DEFAULTS, "a field kept a value of the previous request"
    assert {"bytes_in", "resp", "rframer", "r_left", "direct"} <= changed, changed  # the slow paths ran
    assert s.nreq == len(exchanges)
    assert client.data.count(b"HTTP/1.1 200 OK") == len(exchanges)


REQ_KA = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
REQ_CLOSE = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def test_a_remembered_response_head_is_forwarded_as_the_first_time(tmp_path: Path,
                                                                   loop: asyncio.AbstractEventLoop) -> None:
    """The response memo (heads.HeadMemo): a head's first reading (the match), its second (found in the memo) and
    a reading with the memo off forward the same bytes and leave the connections in the same state, for every
    pair of connection modes."""
    memo = RESPONSE_MEMO
    try:
        for req in (REQ_KA, REQ_CLOSE):
            for resp in (RESP_KA, RESP_PLAIN, RESP_CLOSE, RESP_KA + b"junk", RESP_PLAIN[:-2]):
                seen = []
                memo.reset()
                for state in ("first", "found", "off"):
                    if state == "off":
                        memo.on, memo.paused = False, 10
                    hits = memo.hits
                    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
                    to_srv, to_cli, s = exchange(rt, route, conn, req, resp)
                    if resp == RESP_PLAIN[:-2]:  # the rest of the body comes later
                        conn.data_received(RESP_PLAIN[-2:])
                        to_cli = s.transport.data
                    assert memo.hits == hits + (state == "found")
                    seen.append((to_srv, to_cli, s.transport.closing, s.nreq, rt.pool.get(conn.server) is conn))
                assert seen[0] == seen[1] == seen[2], (req, resp)
                assert seen[0][1].endswith(BODY)
    finally:
        memo.reset()


def test_the_response_memo_hint_never_takes_a_body_for_a_head(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The response memo first looks where the last head ended (servers answer with heads of one length). A
    response with a shorter head whose body has CRLFCRLF at that offset is still read by its own head, and heads
    of two lengths in turn are each found in the memo."""
    memo = RESPONSE_MEMO
    long_head = b"HTTP/1.1 200 OK\r\nServer: t\r\nX-Pad: " + b"p" * 40 + b"\r\nContent-Length: 5\r\n\r\n"
    try:
        memo.reset()
        rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
        _, to_cli, _ = exchange(rt, route, conn, REQ_KA, long_head + BODY)
        assert to_cli.endswith(b"\r\n\r\n" + BODY) and memo.last == len(long_head) - 4
        for k in range(len(long_head)):  # k bytes, then CRLFCRLF exactly where the long head's ended
            body = b"b" * k + b"\r\n\r\n" + b"tail"
            short = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            if len(short) + k == memo.last:
                break
        assert (short + body)[memo.last:memo.last + 4] == b"\r\n\r\n"  # the trap: the hint lands in the body
        for response in (short + body, long_head + BODY, short + body, long_head + BODY):
            rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
            to_srv, to_cli, s = exchange(rt, route, conn, REQ_KA, response)
            assert to_cli == response and not s.transport.closing  # as received: keep-alive both sides
            assert rt.pool.get(conn.server) is conn  # the response ended where its length said
        assert memo.hits >= 2  # each head found again the second time
    finally:
        memo.reset()


class ClientAt(Recorder):
    """A client transport at a given address."""

    def __init__(self, ip: str) -> None:
        super().__init__()
        self.ip = ip

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.ip, 40000) if name == "peername" else super().get_extra_info(name, default)


def test_each_client_gets_its_own_forwarded_for_on_new_connections(tmp_path: Path,
                                                                   loop: asyncio.AbstractEventLoop) -> None:
    """The route remembers the tail (X-Forwarded-For line, blank line) of its last new connection's request;
    connections from other addresses, and back from the first one, still get their own address."""
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.1", "192.0.2.7"):
        s = HttpStream(rt, route)
        s.connection_made(ClientAt(ip))
        s.data_received(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        assert s.sconn is conn
        conn.data_received(RESP_KA)
        server_tr = conn.transport
        assert isinstance(server_tr, Recorder)
        assert server_tr.data == b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: %s\r\n\r\n" % ip.encode()
        server_tr.data = b""


def test_a_server_connection_already_full_holds_the_client(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """A server connection whose queue is past the high-water mark when the stream takes it (a connect that sent
    the request with it, before the stream could hear pause_writing) pauses the client until it drains."""
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n")
    conn.write_paused = True
    s = HttpStream(rt, route)
    client = Recorder()
    s.connection_made(client)
    s.data_received(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
    assert s.sconn is conn and not client.reading  # held
    conn.resume_writing()  # drained below the low-water mark
    assert client.reading
