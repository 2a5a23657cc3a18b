"""The rawio layer (accept loop, transports and server connects on an epoll set of our own) against real loopback
sockets, nested in asyncio's loop and in uvloop.

What the HTTP stream relies on, as with the loop's own transports: bytes both ways in order, a queue and
pause_writing/resume_writing past the write limits, pause_reading that really stops reading, end of input
(eof_received keeping or closing), close after the queue is flushed, abort, connection_lost once and never inside
close(), errors ending the connection, and a connect that ends exactly once (connected, refused, cancelled).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from balancier.proxy import rawio

from proxy_builders import closed_port


class Proto(asyncio.Protocol):
    """Records every callback; `keep_on_eof` is what eof_received answers."""

    def __init__(self, keep_on_eof: bool = False) -> None:
        self.transport: Any = None
        self.data = b""
        self.events: list[str] = []
        self.lost_exc: Any = "not lost"
        self.keep_on_eof = keep_on_eof

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost_exc = exc


@pytest.fixture
def loop(any_loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    return any_loop  # conftest's: asyncio's loop, then uvloop


@pytest.fixture
def layer(loop: asyncio.AbstractEventLoop) -> Iterator[rawio.Layer]:
    ly = rawio.Layer(loop)
    try:
        yield ly
    finally:
        ly.close()


def spin(loop: asyncio.AbstractEventLoop, until: Any, timeout: float = 3.0) -> None:
    """Run the loop until `until()` is true (or fail after `timeout`)."""

    async def wait() -> None:
        end = time.monotonic() + timeout
        while not until():
            if time.monotonic() > end:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.002)

    loop.run_until_complete(wait())


class Served:
    """A RawServer on a fresh loopback listener whose protocols are recorded in ``protos`` (made by ``make``,
    a Proto by default); used as a context manager, it closes its clients, pauses and closes the listener."""

    def __init__(self, layer: rawio.Layer, keep_on_eof: bool = False, make: Any = None) -> None:
        self.protos: list[Proto] = []
        self.clients: list[socket.socket] = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.setblocking(False)

        def factory() -> Proto:
            self.protos.append(make(len(self.protos)) if make is not None else Proto(keep_on_eof))
            return self.protos[-1]

        self.srv = rawio.RawServer(layer, self.lsock, factory)
        self.srv.start()

    def connect(self) -> socket.socket:
        c = socket.create_connection(self.lsock.getsockname())
        self.clients.append(c)
        return c

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:
            c.close()
        self.srv.pause()
        self.lsock.close()


def test_accepted_connection_moves_bytes_both_ways(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    with Served(layer) as sv:
        c = sv.connect()
        c.sendall(b"hello")
        spin(loop, lambda: sv.protos and sv.protos[0].data == b"hello")
        p = sv.protos[0]
        assert p.transport.get_extra_info("peername") == c.getsockname()
        assert p.transport.get_extra_info("sockname") == sv.lsock.getsockname()
        p.transport.write(b"world")
        c.settimeout(2)
        assert c.recv(100) == b"world"
        assert c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the client's own, untouched
    spin(loop, lambda: "lost" in p.events)
    assert p.events == ["made", "eof", "lost"]  # eof_received said False: the transport closed
    assert p.lost_exc is None
    assert not layer.table  # nothing left in the set


def test_accepted_sockets_are_nonblocking_with_nodelay(loop: asyncio.AbstractEventLoop,
                                                      layer: rawio.Layer) -> None:
    with Served(layer) as sv:
        sv.connect()
        spin(loop, lambda: bool(sv.protos))
        fd = sv.protos[0].transport.fd
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        s = socket.socket(fileno=fd)
        try:
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            s.detach()


def test_close_waits_for_the_queue_and_limits_pause_and_resume_writing(loop: asyncio.AbstractEventLoop,
                                                                      layer: rawio.Layer) -> None:
    got = bytearray()
    with Served(layer) as sv:
        c = sv.connect()
        spin(loop, lambda: bool(sv.protos))
        p = sv.protos[0]
        t = p.transport
        t.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        payload = bytes(range(256)) * 128 * 1024  # 32 MiB: far more than loopback's socket buffers hold
        t.write(payload)
        assert t.get_write_buffer_size() > 0
        assert p.events[-1] == "pause_writing"
        t.close()  # the queue still goes out
        assert t.is_closing()
        assert "lost" not in p.events  # never inside close()

        def reader() -> None:
            c.settimeout(5)
            while True:
                d = c.recv(65536)
                if not d:
                    return
                got.extend(d)

        th = threading.Thread(target=reader)
        th.start()
        spin(loop, lambda: "lost" in p.events, timeout=10)
        th.join(5)
        assert bytes(got) == payload
        assert p.events == ["made", "pause_writing", "resume_writing", "lost"]


def test_pause_reading_stops_reading_until_resumed(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    with Served(layer) as sv:
        c = sv.connect()
        spin(loop, lambda: bool(sv.protos))
        p = sv.protos[0]
        p.transport.pause_reading()
        assert not p.transport.is_reading()
        c.sendall(b"held")
        loop.run_until_complete(asyncio.sleep(0.1))
        assert p.data == b""
        p.transport.resume_reading()
        spin(loop, lambda: p.data == b"held")


def test_eof_kept_open_until_the_answer_is_written(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    with Served(layer, keep_on_eof=True) as sv:
        c = sv.connect()
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)
        spin(loop, lambda: bool(sv.protos) and "eof" in sv.protos[0].events)
        p = sv.protos[0]
        assert not p.transport.is_closing()  # half-closed, kept
        p.transport.write(b"answer")
        p.transport.close()
        c.settimeout(2)
        assert c.recv(100) == b"answer"
        assert c.recv(100) == b""
        spin(loop, lambda: "lost" in p.events)
        assert p.data == b"request"


def test_a_reset_ends_the_connection_with_the_error(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    with Served(layer, keep_on_eof=True) as sv:
        c = sv.connect()
        spin(loop, lambda: bool(sv.protos))
        p = sv.protos[0]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST
        spin(loop, lambda: "lost" in p.events or "eof" in p.events)
        if "lost" not in p.events:  # the reset was read as an end of input first: a write finds it
            for _ in range(3):
                p.transport.write(b"x" * 1000)
                loop.run_until_complete(asyncio.sleep(0.01))
        spin(loop, lambda: "lost" in p.events)
        assert isinstance(p.lost_exc, OSError)
        assert p.transport.is_closing()


def test_abort_drops_the_queue_and_reports_lost_later(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    with Served(layer) as sv:
        sv.connect()
        spin(loop, lambda: bool(sv.protos))
        p = sv.protos[0]
        t = p.transport
        t.write(b"y" * (32 * 1024 * 1024))
        t.abort()
        assert "lost" not in p.events
        assert t.get_write_buffer_size() == 0
        spin(loop, lambda: "lost" in p.events)
        assert p.lost_exc is None
        t.write(b"ignored")  # writing to a closed transport is a no-op, as asyncio's


class CloseOnData(Proto):
    """Closes its transport from data_received, inside the layer's drain, and notes when that callback returns."""

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.transport.close()
        self.events.append("closed")  # connection_lost must come after this


def test_close_inside_an_event_reports_lost_after_the_callback(loop: asyncio.AbstractEventLoop,
                                                              layer: rawio.Layer) -> None:
    """A transport closed while the layer handles its events hears connection_lost once, after the callback that
    closed it returned; a connection_lost that closes another transport gets that one reported as well."""
    with Served(layer, make=lambda i: CloseOnData()) as sv:
        c0 = sv.connect()
        sv.connect()
        spin(loop, lambda: len(sv.protos) == 2)
        p0, p1 = sv.protos
        lost0 = p0.connection_lost

        def lost_then_close_the_other(exc: Exception | None) -> None:
            lost0(exc)
            p1.transport.close()
            assert "lost" not in p1.events  # not inside close(), even from a connection_lost
        p0.connection_lost = lost_then_close_the_other  # type: ignore[method-assign]
        c0.sendall(b"x")
        spin(loop, lambda: "lost" in p1.events)
        assert p0.events == ["made", "closed", "lost"] and p0.data == b"x"
        assert p1.events == ["made", "lost"]
        assert c0.recv(10) == b""  # closed for the client too


def test_paused_listener_leaves_clients_in_the_backlog(loop: asyncio.AbstractEventLoop,
                                                        layer: rawio.Layer) -> None:
    with Served(layer) as sv:
        sv.srv.pause()
        sv.connect()  # the kernel completes it; nobody accepts yet
        loop.run_until_complete(asyncio.sleep(0.1))
        assert sv.protos == []
        sv.srv.start()
        spin(loop, lambda: len(sv.protos) == 1)


def test_a_callback_that_raises_ends_only_its_connection(loop: asyncio.AbstractEventLoop,
                                                         layer: rawio.Layer) -> None:
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))

    class Bad(Proto):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("bug")

    with Served(layer, make=lambda n: Bad() if n == 0 else Proto()) as sv:
        c1, c2 = sv.connect(), sv.connect()
        spin(loop, lambda: len(sv.protos) == 2)
        c1.sendall(b"boom")
        c2.sendall(b"fine")
        bad, good = sv.protos
        spin(loop, lambda: "lost" in bad.events and good.data == b"fine")
        assert isinstance(errors[0]["exception"], RuntimeError)
        assert "lost" not in good.events


# ---- server connects ------------------------------------------------------------------------------------------
@pytest.fixture
def listening() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    try:
        yield srv
    finally:
        srv.close()


def answer(loop: asyncio.AbstractEventLoop, listening: socket.socket, proto: Proto, expect: bytes,
           reply: bytes) -> None:
    """The server side of a connect: accept it, check it received `expect`, send `reply` and end; the connect's
    protocol hears the reply, then the end of input, then its connection's end."""
    peer, _ = listening.accept()
    try:
        peer.settimeout(2)
        assert peer.recv(100) == expect
        peer.sendall(reply)
        peer.shutdown(socket.SHUT_WR)
        spin(loop, lambda: "lost" in proto.events)
        assert proto.data == reply and proto.events == ["made", "eof", "lost"]
    finally:
        peer.close()


def test_connect_succeeds_and_moves_bytes(loop: asyncio.AbstractEventLoop, layer: rawio.Layer,
                                          listening: socket.socket) -> None:
    ends: list[rawio.RawConnect] = []
    host, port = listening.getsockname()
    c = rawio.RawConnect(layer, lambda _arg: Proto(), None, host, port, socket.AF_INET, ends.append)
    c.start()
    assert ends == []  # never inside start()
    spin(loop, lambda: len(ends) == 1)
    tr, proto = c.value
    assert c.error is None and proto.transport is tr and proto.events == ["made"]
    tr.write(b"request")
    answer(loop, listening, proto, b"request", b"response")
    loop.run_until_complete(asyncio.sleep(0.05))
    assert len(ends) == 1


def test_connect_refused_is_an_oserror(loop: asyncio.AbstractEventLoop, layer: rawio.Layer) -> None:
    ends: list[rawio.RawConnect] = []
    c = rawio.RawConnect(layer, lambda _arg: Proto(), None, "127.0.0.1", closed_port(), socket.AF_INET, ends.append)
    c.start()
    spin(loop, lambda: len(ends) == 1)
    assert isinstance(c.error, ConnectionRefusedError)
    assert c.value is None and not layer.table


def test_cancelled_connect_ends_once_and_leaves_nothing_open(loop: asyncio.AbstractEventLoop,
                                                             layer: rawio.Layer) -> None:
    ends: list[rawio.RawConnect] = []
    # a listener whose backlog is full makes the connect hang (SYNs dropped)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(full.getsockname())
            fillers.append(f)
        host, port = full.getsockname()
        # with first bytes: the write finds the connect in progress (EAGAIN), so it waits as without them
        c = rawio.RawConnect(layer, lambda _arg: Proto(), None, host, port, socket.AF_INET, ends.append, b"req")
        c.start()
        assert not c.sent and ends == [] and len(layer.table) == 1
        loop.run_until_complete(asyncio.sleep(0.05))
        c.cancel()
        assert not layer.table  # its socket is closed at once
        spin(loop, lambda: len(ends) == 1)
        assert c.cancelled() and c.value is None
        c.cancel()  # a second cancel changes nothing
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(ends) == 1
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_connect_sends_its_first_bytes_at_once(loop: asyncio.AbstractEventLoop, layer: rawio.Layer,
                                               listening: socket.socket) -> None:
    """On loopback the handshake is over when connect returns: the first bytes go out inside start(), and done
    is called there too (the answer may come before a later turn); the connection then reads as usual."""
    ends: list[rawio.RawConnect] = []
    host, port = listening.getsockname()
    c = rawio.RawConnect(layer, lambda _arg: Proto(), None, host, port, socket.AF_INET, ends.append,
                         b"GET / HTTP/1.1\r\n\r\n")
    c.start()
    assert ends == [c] and c.sent and c.error is None
    tr, proto = c.value
    assert proto.events == ["made"] and layer.table[tr.fd] is tr
    answer(loop, listening, proto, b"GET / HTTP/1.1\r\n\r\n", b"answer")
    assert ends == [c]


def test_connect_queues_the_first_bytes_the_socket_does_not_take(loop: asyncio.AbstractEventLoop,
                                                                 layer: rawio.Layer,
                                                                 listening: socket.socket) -> None:
    first = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the socket takes at once
    ends: list[rawio.RawConnect] = []
    host, port = listening.getsockname()
    c = rawio.RawConnect(layer, lambda _arg: Proto(), None, host, port, socket.AF_INET, ends.append, first)
    c.start()
    assert ends == [c] and c.sent
    tr, _ = c.value
    assert 0 < tr.get_write_buffer_size() < len(first)  # the rest waits in the transport's queue
    peer, _ = listening.accept()
    got: list[bytes] = []

    def read() -> None:
        peer.settimeout(5)
        n = 0
        while n < len(first):
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            got.append(chunk)
            n += len(chunk)

    th = threading.Thread(target=read)
    th.start()
    try:
        spin(loop, lambda: not th.is_alive(), timeout=10)
        assert b"".join(got) == first and tr.get_write_buffer_size() == 0
    finally:
        th.join(5)
        peer.close()
        tr.abort()


def test_connect_with_first_bytes_refused_is_reported_later(loop: asyncio.AbstractEventLoop,
                                                            layer: rawio.Layer) -> None:
    ends: list[rawio.RawConnect] = []
    c = rawio.RawConnect(layer, lambda _arg: Proto(), None, "127.0.0.1", closed_port(), socket.AF_INET, ends.append,
                         b"request")
    c.start()
    assert ends == [] and not c.sent  # a failure is never reported inside start()
    spin(loop, lambda: len(ends) == 1)
    assert isinstance(c.error, ConnectionRefusedError) and c.value is None and not layer.table


def test_literal_family() -> None:
    assert rawio.literal_family("127.0.0.1") == socket.AF_INET
    assert rawio.literal_family("::1") == socket.AF_INET6
    assert rawio.literal_family("localhost") == 0
