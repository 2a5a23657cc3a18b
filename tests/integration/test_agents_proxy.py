"""`balancier:proxy` against real processes: `balancier proxy -D` in front of the bundled portal backend.

Each test writes its config and pidfile in a temp dir and kills, by pid, every proxy it started (read from
the pidfiles it used), even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancier.cluster.agents.proxy import ProxyAgent, pid_alive, read_pid
from balancier.cluster.executor import Executor
from balancier.cluster.model import OpResult, ResourceConfig

from support.backends import free_port


def _cfg(port: int, server: str, extra: str = "") -> str:
    # mode tcp: these tests are about the process (start, readiness, signals, hand-over), not HTTP.
    return ("global\n"
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
            f"listen web\n    bind 127.0.0.1:{port}\n    server s {server}\n{extra}")


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.config = tmp / "haproxy.cfg"
        self.pidfile = tmp / "proxy.pid"
        self.pids: set[int] = set()
        self.resource = ResourceConfig(id="proxy", agent="balancier:proxy",
                                       params=(("config", str(self.config)), ("pidfile", str(self.pidfile))))
        self.agent = ProxyAgent(self.resource)

    def run(self, op: str, timeout_ms: int = 15_000):  # type: ignore[no-untyped-def]
        result = asyncio.run(self.agent.run(op, timeout_ms))
        pid = read_pid(str(self.pidfile))
        if pid is not None:
            self.pids.add(pid)
        return result

    def cleanup(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()


def _get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.headers.get("X-Served-By", "")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_start_monitor_stop_idempotent(setup: Setup, backend_factory) -> None:
    b = backend_factory("ents1")
    port = free_port()
    setup.config.write_text(_cfg(port, b.address))
    assert setup.run("probe").rc == 7
    started = setup.run("start")
    assert started.rc == 0, started
    pid = read_pid(str(setup.pidfile))
    assert pid is not None and pid_alive(pid)
    assert _get(port) == (200, "ents1")  # start returned only once it serves
    again = setup.run("start")
    assert again.rc == 0 and "already running" in again.output and read_pid(str(setup.pidfile)) == pid
    assert setup.run("monitor").rc == 0
    # with a runtime API configured, monitor also asks it `show info`: no answer -> failed (1)
    silent = ProxyAgent(ResourceConfig(id="proxy", agent="balancier:proxy",
                                       params=setup.resource.params + (("runtime_socket", str(setup.tmp / "rt.sock")),)))
    r = asyncio.run(silent.monitor())
    assert r.rc == 1 and "the runtime API at" in (r.exit_reason or "") and "does not answer" in (r.exit_reason or "")
    stopped = setup.run("stop")
    assert stopped.rc == 0 and "stopped softly" in stopped.output
    assert not pid_alive(pid) and _refused(port)
    assert setup.run("monitor").rc == 7
    assert setup.run("stop").rc == 0


def test_invalid_config_is_not_configured(setup: Setup) -> None:
    setup.config.write_text("global\nlisten web\n    bind 127.0.0.1:1\n    frobnicate yes\n")
    r = setup.run("start")
    assert r.rc == 6, r
    assert r.exit_reason is not None and "invalid configuration" in r.exit_reason
    assert f"{setup.config}:4" in r.exit_reason  # the checker's file:line
    assert read_pid(str(setup.pidfile)) is None


def test_missing_config_is_not_installed_here(setup: Setup) -> None:
    r = setup.run("start")
    assert r.rc == 5 and "does not exist on this node" in (r.exit_reason or "")


def test_killed_proxy_and_paused_listener_are_seen(setup: Setup, backend_factory) -> None:
    b = backend_factory("ents1")
    port = free_port()
    setup.config.write_text(_cfg(port, b.address))
    assert setup.run("start").rc == 0
    pid = read_pid(str(setup.pidfile))
    assert pid is not None
    # The configuration now names a port the running process does not listen on (edited, not
    # reloaded): alive but not serving what it should -> 1, so the cluster restarts it.
    other = free_port()
    setup.config.write_text(_cfg(port, b.address) + f"listen extra\n    bind 127.0.0.1:{other}\n"
                            f"    server s {b.address}\n")
    result = setup.run("monitor")
    assert result.rc == 1, result
    assert f"127.0.0.1:{other} refuses connections" in (result.exit_reason or "")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = setup.run("monitor")
    assert r.rc == 7 and f"process {pid}" in (r.exit_reason or "")
    assert setup.run("stop").rc == 0  # stale pidfile: nothing to stop
    assert setup.run("start").rc == 0  # and it starts again


def test_soft_stop_finishes_in_flight_request(setup: Setup, backend_factory) -> None:
    slow = backend_factory("slow", delay=1.0)
    port = free_port()
    setup.config.write_text(_cfg(port, slow.address))
    assert setup.run("start").rc == 0
    answers: list[tuple[int, str]] = []
    t = threading.Thread(target=lambda: answers.append(_get(port, "/")))
    t.start()
    time.sleep(0.3)  # the request is at the backend
    r = setup.run("stop", timeout_ms=10_000)
    t.join(10)
    assert r.rc == 0 and "stopped softly" in r.output
    assert answers == [(200, "slow")]


def test_reload_hands_over_without_refusing(setup: Setup, backend_factory) -> None:
    b1 = backend_factory("ents1")
    b2 = backend_factory("ents2")
    port = free_port()
    setup.config.write_text(_cfg(port, b1.address))
    assert setup.run("start").rc == 0
    old = read_pid(str(setup.pidfile))
    same = setup.run("reload")
    assert same.rc == 0 and "unchanged" in same.output and read_pid(str(setup.pidfile)) == old
    # clients keep connecting during the hand-over: none may be refused
    errors: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                _get(port)
            except OSError as exc:
                errors.append(str(exc))
            time.sleep(0.01)
    t = threading.Thread(target=hammer)
    t.start()
    try:
        setup.config.write_text(_cfg(port, b2.address))
        r = setup.run("reload")
    finally:
        time.sleep(0.2)
        stop.set()
        t.join(10)
    assert r.rc == 0, r
    new = read_pid(str(setup.pidfile))
    assert new is not None and new != old
    assert _get(port) == (200, "ents2")
    deadline = time.monotonic() + 5
    while old is not None and pid_alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old is not None and not pid_alive(old)
    assert errors == []
    assert setup.run("stop").rc == 0


def test_proxy_through_the_executor(setup: Setup, backend_factory) -> None:
    b = backend_factory("ents3")
    port = free_port()
    setup.config.write_text(_cfg(port, b.address))
    reports: list[OpResult] = []
    ex = Executor("lb1", report=reports.append)
    ex.configure([setup.resource])

    class Act:
        def __init__(self, kind: str, interval_ms: int = 0) -> None:
            self.kind, self.resource, self.interval_ms, self.timeout_ms = kind, "proxy", interval_ms, 10_000

    async def go() -> None:
        try:
            assert (await ex.execute(Act("start"))).rc == 0
            pid = read_pid(str(setup.pidfile))
            assert pid is not None
            setup.pids.add(pid)
            assert (await ex.execute(Act("monitor", 100))).rc == 0
            os.kill(pid, signal.SIGKILL)
            for _ in range(60):
                await asyncio.sleep(0.05)
                if reports[-1].rc == 7:
                    break
            assert (reports[-1].op, reports[-1].rc) == ("monitor", 7)
            assert (await ex.execute(Act("stop"))).rc == 0
        finally:
            await ex.close()
    asyncio.run(go())
