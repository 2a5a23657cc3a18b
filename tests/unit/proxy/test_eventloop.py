"""eventloop.py: uvloop's transport registry with plain references keeps its behaviour (a descriptor owned
by a live transport is refused to add_reader, one whose transport closed is accepted) and stays bounded. Real sockets on
loopback."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import pytest

from balancier.proxy.eventloop import LightRegistry, lighten, new_loop

uvloop = pytest.importorskip("uvloop")


def _registry(loop: asyncio.AbstractEventLoop) -> weakref.WeakValueDictionary:  # type: ignore[type-arg]
    found = [o for o in gc.get_referents(loop) if isinstance(o, weakref.WeakValueDictionary)]
    assert len(found) == 1
    return found[0]


def test_new_loop_is_uvloop_with_the_light_registry() -> None:
    loop, is_uvloop = new_loop()
    try:
        assert is_uvloop and isinstance(loop, uvloop.Loop)
        assert isinstance(_registry(loop), LightRegistry)
        plain = asyncio.new_event_loop()  # asyncio's own loop keeps the same registry: it is lightened too
        try:
            assert lighten(plain) and isinstance(_registry(plain), LightRegistry)
        finally:
            plain.close()
        assert not lighten(object())  # nothing to change: nothing done
    finally:
        loop.close()


def test_registry_behaviour_is_kept_and_bounded() -> None:
    loop, _ = new_loop()
    registry = _registry(loop)

    async def main() -> None:
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        fd = transport.get_extra_info("socket").fileno()
        assert registry.get(fd) is transport
        with pytest.raises(RuntimeError, match="used by transport"):
            loop.add_reader(fd, lambda: None)  # uvloop's own check still sees the live transport
        transport.close()
        await asyncio.sleep(0.05)
        # the closed transport stays registered, without its protocol (nothing of a stream is kept alive) ...
        assert registry.get(fd) is transport and transport.is_closing()
        assert transport.get_protocol() is None
        del transport
        gc.collect()
        # ... and does not own its descriptor any more: a new socket given that number can be watched
        with socket.socket() as sock:
            assert sock.fileno() == fd  # the lowest free number: the one the transport had
            loop.add_reader(sock.fileno(), lambda: None)
            loop.remove_reader(sock.fileno())
        for _ in range(300):  # connections come and go: the registry does not grow with them
            t, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            t.close()
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert len(registry.data) < 64, len(registry.data)
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()
