"""`TcpStream` driven in-process with recording transports and a fake clock: half-close both ways, the per-side
timeouts (client/server, tunnel, client-fin/server-fin) and what they log, a server that speaks first, the
lingering close. The same behaviours are checked against HAProxy 2.6 with real sockets in
tests/integration/test_tcp_differential.py; here every timer step is exact and instantaneous.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config import load
from balancier.proxy.logs import TcpLogRecord
from balancier.proxy.runtime import Runtime
from balancier.proxy.tcp import CLOSED, RELAY, TcpServerConn, TcpStream, queue_position, relay_timeout


class Transport:
    """Records what the stream does to one side's transport."""

    def __init__(self) -> None:
        self.data = b""
        self.eof = False
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.eof, "write after write_eof"
        self.data += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.9", 40000) if name in ("peername", "sockname") else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Task:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []
        self._result: Any = None
        self._cancelled = False

    def add_done_callback(self, cb: Callable[[Any], None]) -> None:
        self.callbacks.append(cb)

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return None

    def result(self) -> Any:
        return self._result

    def finish(self, result: Any) -> None:
        self._result = result
        for cb in self.callbacks:
            cb(self)


class Loop:
    """Time stands still until the test moves it; tasks and timers are kept, not run."""

    def __init__(self) -> None:
        self.now = 100.0
        self.tasks: list[Task] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def create_connection(self, factory: Callable[[], Any], host: str, port: int) -> Any:
        return ("connect", factory)

    def create_task(self, coro: Any) -> Task:
        t = Task()
        t.coro = coro  # type: ignore[attr-defined]
        self.tasks.append(t)
        return t

    def call_later(self, delay: float, cb: Callable[[], None]) -> Any:
        entry = (self.now + delay, cb)
        self.timers.append(entry)
        loop = self

        class Handle:
            def cancel(self) -> None:
                if entry in loop.timers:
                    loop.timers.remove(entry)
        return Handle()


class Log:
    def __init__(self) -> None:
        self.records: list[TcpLogRecord] = []

    def log_tcp(self, r: TcpLogRecord) -> None:
        self.records.append(r)


class Harness:
    def __init__(self, tmp_path: Path, real_loop: asyncio.AbstractEventLoop, timeouts: str) -> None:
        cfg = tmp_path / "p.cfg"
        cfg.write_text("defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
                       f"listen t\n    bind 127.0.0.1:18998\n{timeouts}    server s 127.0.0.1:9\n")
        config, _ = load([str(cfg)])
        self.rt = Runtime(config, real_loop, {})
        self.loop = Loop()
        self.rt.loop = self.loop  # type: ignore[assignment]
        self.route = self.rt.routes[0]
        self.log = Log()
        self.route.fe.tcp_logger = self.log  # type: ignore[assignment]
        self.client = Transport()
        self.server = Transport()
        self.stream = TcpStream(self.rt, self.route)
        self.stream.connection_made(self.client)
        self.conn: TcpServerConn | None = None

    def connect(self) -> TcpServerConn:
        task = self.loop.tasks[-1]
        _, factory = task.coro  # type: ignore[attr-defined]
        conn = factory()
        conn.connection_made(self.server)
        self.conn = conn
        task.finish((self.server, conn))
        return conn

    def at(self, seconds: float) -> None:
        """Move the clock to `seconds` after the accept and run the sweep (tests step half a millisecond past a
        deadline: the clock is a float)."""
        self.loop.now = 100.0 + seconds
        self.stream.check(self.loop.now)

    @property
    def record(self) -> TcpLogRecord:
        assert len(self.log.records) == 1, self.log.records
        return self.log.records[0]


@pytest.fixture
def make(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Callable[[str], Harness]:
    return lambda timeouts="": Harness(tmp_path, loop, timeouts)


@pytest.mark.parametrize(("eof_relayed", "fin", "tunnel", "plain", "expected"), [
    (False, None, None, 5.0, 5.0),
    (False, None, 2.0, 5.0, 2.0),  # tunnel replaces client/server once connected
    (False, 0.3, 2.0, 5.0, 2.0),  # -fin only after our EOF went to that side
    (True, 0.3, 2.0, 5.0, 0.3),
    (True, None, 2.0, 5.0, 2.0),
    (True, None, None, None, None),  # no timeout at all
])
def test_relay_timeout_table(eof_relayed: bool, fin: float | None, tunnel: float | None, plain: float | None,
                             expected: float | None) -> None:
    assert relay_timeout(eof_relayed, fin, tunnel, plain, True) == expected


@pytest.mark.parametrize(("now", "at_enqueue", "expected"), [(0, 0, 1), (5, 5, 1), (7, 5, 3)])
def test_queue_position_table(now: int, at_enqueue: int, expected: int) -> None:
    assert queue_position(now, at_enqueue) == expected


def test_half_close_both_ways_and_early_bytes(make: Callable[[str], Harness]) -> None:
    h = make("")
    h.stream.data_received(b"early ")
    h.stream.eof_received()  # the client is done before the server connection is even up
    assert h.stream.phase != RELAY and h.server.data == b""
    h.loop.now += 0.004
    h.connect()
    assert h.server.data == b"early " and h.server.eof, "bytes first, then the relayed EOF"
    assert h.stream.phase == RELAY
    h.conn.data_received(b"answer")  # type: ignore[union-attr]
    assert h.client.data == b"answer" and not h.client.eof
    h.loop.now += 0.010
    h.conn.eof_received()  # type: ignore[union-attr]
    assert h.client.eof and h.stream.phase == CLOSED
    r = h.record
    assert (r.termination, r.bytes_out, r.Tw, r.Tc, r.Tt, r.server) == ("--", 6, 0, 4, 14, "s")


def test_server_speaking_first_is_not_lost(make: Callable[[str], Harness]) -> None:
    h = make("")
    task = h.loop.tasks[-1]
    _, factory = task.coro  # type: ignore[attr-defined]
    conn = factory()
    conn.connection_made(h.server)
    conn.data_received(b"220 greeting\r\n")  # before the stream adopted the connection
    conn.eof_received()
    task.finish((h.server, conn))
    assert h.client.data == b"220 greeting\r\n" and h.client.eof
    assert h.stream.phase == RELAY, "only the server is done: the client may still talk"
    h.stream.data_received(b"QUIT\r\n")
    assert h.server.data == b"QUIT\r\n"


def test_client_timeout_is_an_eof_and_sets_the_state(make: Callable[[str], Harness]) -> None:
    h = make("    timeout client 300\n    timeout server 1s\n")
    h.connect()
    h.stream.data_received(b"x")
    h.at(0.299)
    assert h.stream.phase == RELAY and not h.server.eof
    h.at(0.3005)
    assert h.server.eof, "the client side expired: its EOF goes to the server"
    assert h.stream.phase == RELAY and h.log.records == []
    h.at(0.999)
    assert h.stream.phase == RELAY
    h.at(1.0005)
    assert h.stream.phase == CLOSED
    assert (h.record.termination, h.record.Tt) == ("cD", 1000)  # the first expiry names the end


def test_tunnel_replaces_client_and_server(make: Callable[[str], Harness]) -> None:
    h = make("    timeout client 200\n    timeout server 200\n    timeout tunnel 2s\n")
    h.connect()
    h.at(1.5)
    assert h.stream.phase == RELAY
    h.stream.data_received(b"ping")  # activity on the client side; writing to the server counts for it too
    h.at(3.4)
    assert h.stream.phase == RELAY
    h.at(3.5005)
    assert h.stream.phase == CLOSED and h.record.termination == "cD"


def test_client_fin_after_the_server_closed(make: Callable[[str], Harness]) -> None:
    h = make("    timeout client-fin 300\n")
    conn = h.connect()
    conn.data_received(b"HELLO\n")
    conn.eof_received()
    assert h.client.eof
    h.at(0.299)
    assert h.stream.phase == RELAY
    h.at(0.3005)
    assert h.stream.phase == CLOSED
    assert (h.record.termination, h.record.bytes_out, h.record.Tt) == ("cD", 6, 300)


def test_server_fin_after_the_client_closed(make: Callable[[str], Harness]) -> None:
    h = make("    timeout server-fin 300\n")
    h.connect()
    h.stream.data_received(b"data\n")
    h.stream.eof_received()
    assert h.server.eof
    h.at(0.3005)
    assert h.stream.phase == CLOSED and h.record.termination == "sD"
    assert not h.client.aborted, "a timeout closes the client with a FIN, not a reset"


def test_no_server_lingering_close(make: Callable[[str], Harness]) -> None:
    h = make("")
    h.rt.backends["t"].backend.set_admin(h.rt.backends["t"].backend.servers[0], "maint")
    h2 = Harness.__new__(Harness)  # a second connection, now that the only server is in maintenance
    h2.__dict__.update(h.__dict__)
    h2.client = Transport()
    h2.log = h.log
    h2.stream = TcpStream(h.rt, h.route)
    h2.stream.connection_made(h2.client)
    assert h2.stream.phase == CLOSED
    rec = h.log.records[-1]
    assert (rec.termination, rec.server, rec.Tw, rec.Tc) == ("SC", "<NOSRV>", -1, -1)
    # a FIN, and what the client still sends is read and dropped until its own EOF: no reset
    assert h2.client.eof and not h2.client.closed and not h2.client.aborted
    h2.stream.data_received(b"late bytes")
    assert h2.stream.eof_received() is False  # the transport closes itself now


def test_client_reset_while_relaying(make: Callable[[str], Harness]) -> None:
    h = make("")
    h.connect()
    h.stream.data_received(b"abc")
    h.stream.connection_lost(ConnectionResetError())
    assert h.stream.phase == CLOSED and h.server.aborted
    assert h.record.termination == "CD"
    srv = h.route.be.backend.servers[0]
    assert (srv.cli_abrt, srv.bin, srv.stot, srv.served) == (1, 3, 1, 0)


def test_client_not_draining_ends_the_stream(make: Callable[[str], Harness]) -> None:
    h = make("    timeout client 300\n    timeout server 5s\n")
    conn = h.connect()
    conn.data_received(b"x" * 10)
    h.stream.pause_writing()  # the client's buffer is full: stop reading the server
    assert not h.server.reading
    h.at(0.3005)
    # not only the read side: nothing written can reach a client that does not read, so the stream ends now
    assert h.stream.phase == CLOSED and h.record.termination == "cD"


def test_draining_client_keeps_a_slow_transfer_alive(make: Callable[[str], Harness]) -> None:
    h = make("    timeout client 300\n    timeout server 300\n")
    conn = h.connect()
    for step in range(1, 10):  # a one-way download: the client never sends, but it reads
        h.stream.pause_writing()
        h.at(0.2 * step)
        h.stream.resume_writing()
        conn.data_received(b"chunk")
    assert h.stream.phase == RELAY
