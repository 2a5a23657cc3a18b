"""The Task-free server connect (serverside.Connect) against real loopback sockets, under asyncio and uvloop.

It must end exactly once with what a Task would report: the (transport, protocol) pair, the connect error, or a
cancellation that leaves no open transport behind.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from balancier.proxy.serverside import Connect

from proxy_builders import closed_port


class Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


@pytest.fixture
def loop(any_loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    return any_loop  # conftest's: asyncio's loop, then uvloop


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()
    finally:
        srv.close()


def run_until_done(loop: asyncio.AbstractEventLoop, ends: list[Connect], n: int = 1, turns: int = 400) -> None:
    """Run the loop until `n` ends were reported, or for `turns` x 5 ms."""

    async def wait() -> None:
        for _ in range(turns):
            if len(ends) >= n:
                return
            await asyncio.sleep(0.005)

    loop.run_until_complete(wait())


def test_connect_succeeds(loop: asyncio.AbstractEventLoop, listening: tuple[str, int]) -> None:
    ends: list[Connect] = []
    protos: list[Proto] = []

    def factory() -> Proto:
        protos.append(Proto())
        return protos[-1]

    c = Connect(loop, loop.create_connection(factory, *listening), ends.append)
    c.start()
    assert ends == []  # a TCP connect always waits: the callback never runs inside start()
    run_until_done(loop, ends)
    assert ends == [c]
    assert not c.cancelled() and c.exception() is None
    transport, proto = c.result()
    assert proto is protos[0] and proto.transport is transport
    assert transport.get_extra_info("peername")[1] == listening[1]
    transport.close()
    run_until_done(loop, ends, 2, turns=20)  # let the close happen; nothing else may call back
    assert ends == [c]


def test_connect_refused_reports_the_error(loop: asyncio.AbstractEventLoop) -> None:
    ends: list[Connect] = []
    c = Connect(loop, loop.create_connection(Proto, "127.0.0.1", closed_port()), ends.append)
    c.start()
    run_until_done(loop, ends)
    assert ends == [c]
    assert not c.cancelled()
    assert isinstance(c.exception(), OSError)
    with pytest.raises(OSError):
        c.result()


def test_cancel_while_connecting_ends_cancelled_without_a_transport(loop: asyncio.AbstractEventLoop,
                                                                     listening: tuple[str, int]) -> None:
    ends: list[Connect] = []
    protos: list[Proto] = []

    def factory() -> Proto:
        protos.append(Proto())
        return protos[-1]

    c = Connect(loop, loop.create_connection(factory, *listening), ends.append)
    c.start()
    c.cancel()
    c.cancel()  # twice is harmless
    run_until_done(loop, ends)
    assert ends == [c]
    assert c.cancelled() and c.exception() is None
    with pytest.raises(asyncio.CancelledError):
        c.result()
    run_until_done(loop, ends, 2, turns=20)
    # whatever the coroutine had opened was closed by its own cleanup
    assert all(p.transport is None or p.transport.is_closing() for p in protos)


def test_cancel_after_the_end_changes_nothing(loop: asyncio.AbstractEventLoop, listening: tuple[str, int]) -> None:
    ends: list[Connect] = []
    c = Connect(loop, loop.create_connection(Proto, *listening), ends.append)
    c.start()
    run_until_done(loop, ends)
    c.cancel()
    assert not c.cancelled()
    transport, _ = c.result()
    assert not transport.is_closing()
    transport.close()
    run_until_done(loop, ends, 2, turns=20)
    assert ends == [c]


def test_an_attempt_that_fails_at_once_reports_on_the_next_turn(loop: asyncio.AbstractEventLoop) -> None:
    """A coroutine that raises before its first wait (here: a port out of range) must not call back inside
    start(): the stream would re-enter its own connect."""
    ends: list[Connect] = []
    c = Connect(loop, loop.create_connection(Proto, "127.0.0.1", 70000), ends.append)
    c.start()
    assert ends == []
    run_until_done(loop, ends)
    assert ends == [c]
    assert c.exception() is not None and not c.cancelled()


def test_an_attempt_that_completes_at_once_reports_on_the_next_turn(loop: asyncio.AbstractEventLoop) -> None:
    async def immediate() -> str:
        return "done"

    ends: list[Connect] = []
    c = Connect(loop, immediate(), ends.append)
    c.start()
    assert ends == []
    run_until_done(loop, ends)
    assert ends == [c] and c.result() == "done"
