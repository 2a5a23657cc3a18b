"""What every client connection goes through, with the per-connection work cut down: admission, parking and the
listeners (runtime.py), timeouts through the runtime's own set of streams (timers.py), and the factory the event
loop calls per accepted connection (listener.py).

Real `HttpStream`s and a real `Runtime` built from a configuration, driven with recording transports and recording
listeners (the edge of the unit test: no sockets). The integration tests (test_proxy_process.py maxconn,
test_reload.py, test_tls_proxy.py) run the same paths over loopback.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config import load
from balancier.proxy.httprules import rules_for
from balancier.proxy.listener import wrap_factory
from balancier.proxy.runtime import Runtime, _factory
from balancier.proxy.stream import HttpStream
from balancier.proxy.tcp import TcpStream
from balancier.proxy.timers import Sweeper

from proxy_builders import Recorder


class FakeListener:
    """Records pause/resume as the runtime drives them (a real Listener needs a running loop and a socket)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.serving = True

    def pause(self) -> None:
        self.calls.append("pause")
        self.serving = False

    def resume(self) -> None:
        self.calls.append("resume")
        self.serving = True

    def close(self) -> None:
        self.serving = False


def runtime(tmp_path: Path, loop: asyncio.AbstractEventLoop, global_maxconn: int, fe_maxconn: int,
            extra: str = "") -> tuple[Runtime, Any, FakeListener]:
    cfg = tmp_path / "p.cfg"
    cfg.write_text(
        f"global\n    maxconn {global_maxconn}\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        f"frontend fe\n    bind 127.0.0.1:18999\n    maxconn {fe_maxconn}\n{extra}    default_backend be\n"
        "backend be\n    server s1 127.0.0.1:9\n")
    config, _ = load([str(cfg)])
    lst = FakeListener()
    rt = Runtime(config, loop, {"fe": [lst]})  # type: ignore[dict-item]
    return rt, rt.routes[0], lst


def connect(rt: Runtime, route: Any) -> tuple[HttpStream, Recorder]:
    s = HttpStream(rt, route)
    tr = Recorder()
    s.connection_made(tr)
    return s, tr


@pytest.mark.parametrize("global_max, fe_max", [(2, 100), (100, 2)])
def test_limit_parks_and_pauses_then_release_unparks_and_resumes(
        tmp_path: Path, loop: asyncio.AbstractEventLoop, global_max: int, fe_max: int) -> None:
    rt, route, lst = runtime(tmp_path, loop, global_max, fe_max)
    fe = route.fe
    a, _ = connect(rt, route)
    assert (rt.actconn, fe.feconn, fe.stot, lst.calls, rt.limited) == (1, 1, 1, [], False)
    b, _ = connect(rt, route)  # reaches the limit: the listener stops accepting
    assert (rt.actconn, fe.feconn, fe.smax, lst.calls, rt.limited) == (2, 2, 2, ["pause"], True)
    c, c_tr = connect(rt, route)  # slipped in past the limit: parked unread
    assert list(rt.parked) == [c] and not c.counted and not c_tr.reading
    assert (rt.actconn, fe.feconn, fe.stot) == (2, 2, 2)
    assert rt.streams == {a, b, c} and rt.sweeper.items is rt.streams
    a.connection_lost(None)  # a slot frees: the parked one takes it, the limit still holds
    assert not rt.parked and c.counted and c_tr.reading
    assert (rt.actconn, fe.feconn, fe.stot, lst.calls, rt.limited) == (2, 2, 3, ["pause"], True)
    assert rt.streams == {b, c}
    b.connection_lost(None)  # below the limit: accepting again
    assert (rt.actconn, fe.feconn, lst.calls, rt.limited) == (1, 1, ["pause", "resume"], False)
    c.connection_lost(None)
    assert (rt.actconn, fe.feconn, fe.stot, fe.smax, rt.streams) == (0, 0, 3, 2, set())
    c.connection_lost(None)  # a second loss of the same connection changes nothing
    assert (rt.actconn, fe.feconn) == (0, 0)


def test_parked_connection_that_leaves_is_forgotten(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, lst = runtime(tmp_path, loop, 1, 10)
    a, _ = connect(rt, route)
    b, _ = connect(rt, route)
    assert list(rt.parked) == [b]
    b.connection_lost(None)  # the client gave up while parked: nothing was counted for it
    assert not rt.parked and rt.streams == {a} and (rt.actconn, route.fe.feconn, route.fe.stot) == (1, 1, 1)
    a.connection_lost(None)
    assert (rt.actconn, route.fe.feconn, lst.calls, rt.limited) == (0, 0, ["pause", "resume"], False)


def test_resume_listeners_keeps_the_limit_flag(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, lst = runtime(tmp_path, loop, 100, 1)
    a, _ = connect(rt, route)
    assert rt.limited and lst.calls == ["pause"]
    rt.resume_listeners()  # SIGTTIN while full: the frontend stays paused, and known to be
    assert rt.limited and route.fe.paused and not lst.serving
    a.connection_lost(None)
    assert not rt.limited and lst.serving


def test_stopping_serves_a_late_accept_without_parking(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, _ = runtime(tmp_path, loop, 1, 1)
    a, _ = connect(rt, route)
    rt.soft_stop(close_idle=False)
    b, b_tr = connect(rt, route)  # accepted in the turn of the stop: served, its answer will close
    assert b.counted and b_tr.reading and not rt.parked and rt.actconn == 2
    a.connection_lost(None)
    b.connection_lost(None)
    assert rt.actconn == 0 and rt.done.done()


def test_sweeper_checks_the_runtime_streams(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """A stream is under the timeouts from its admission to its release, with no registration of its own."""
    rt, route, _ = runtime(tmp_path, loop, 10, 10)
    quiet, quiet_tr = connect(rt, route)
    busy, busy_tr = connect(rt, route)
    assert rt.sweeper.items is rt.streams  # admission is the registration
    assert rt.sweeper.items == {quiet, busy}
    quiet.t_phase -= 10.0  # silent since its accept, longer than `timeout client` (5 s)
    rt.sweeper._tick()
    assert quiet_tr.closing and quiet not in rt.streams and rt.actconn == 1
    assert not busy_tr.closing and rt.sweeper.items == {busy}
    busy.connection_lost(None)
    assert not rt.sweeper.items


def test_sweeper_checks_the_set_it_is_given(loop: asyncio.AbstractEventLoop) -> None:
    seen: list[float] = []

    class Item:
        def check(self, now: float) -> None:
            seen.append(now)

    items: set[Item] = set()
    sw = Sweeper(loop, items)  # type: ignore[arg-type]
    it = Item()
    items.add(it)
    sw._tick()
    items.discard(it)
    sw._tick()
    sw.stop()
    assert len(seen) == 1


def test_factory_without_rules_is_the_stream_class_itself(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, _ = runtime(tmp_path, loop, 10, 10)
    factory = _factory(HttpStream, rt, route)
    assert wrap_factory(factory, False, route) is factory  # the event loop calls the class: no frame of ours
    s = factory()
    assert type(s) is HttpStream and s.rt is rt and s.route is route
    assert s.http_rules is None and s.ssl_fc is False


def test_factory_with_rules_gives_them_to_every_stream(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    rt, route, _ = runtime(tmp_path, loop, 10, 10, "    http-request set-header X-Proto https\n")
    rules = rules_for(route.fe.cfg.http_rules, route.be.cfg.http_rules, False)
    assert rules
    plain = wrap_factory(_factory(HttpStream, rt, route), False, route)
    s1, s2 = plain(), plain()
    assert type(s1) is HttpStream and s1.http_rules == rules and s2.http_rules == rules
    assert s1.ssl_fc is False and s1.route is route
    assert HttpStream(rt, route).http_rules is None  # set on each instance, not on the class every route shares
    tls = wrap_factory(_factory(HttpStream, rt, route), True, route)()
    assert tls.ssl_fc is True and tls.http_rules == rules
    # the rules found from the first stream when the route is not given (the former way)
    late = wrap_factory(_factory(HttpStream, rt, route), False)()
    assert late.http_rules == rules


def test_tls_tcp_stream_is_marked(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """TcpStream sets ssl_fc in its __init__: a TLS bind must set it on the instance, after construction."""
    cfg = tmp_path / "t.cfg"
    cfg.write_text("defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
                   "listen raw\n    bind 127.0.0.1:18998\n    server s1 127.0.0.1:9\n")
    config, _ = load([str(cfg)])
    rt = Runtime(config, loop, {})
    route = rt.routes[0]
    factory = _factory(TcpStream, rt, route)
    assert isinstance(factory, functools.partial)
    assert wrap_factory(factory, False, route) is factory
    t = wrap_factory(factory, True, route)()
    assert isinstance(t, TcpStream) and t.ssl_fc is True
