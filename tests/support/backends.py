"""Real HTTP/1.1 backends for tests: the bundled portal app on loopback, each on its own event loop thread.

Rules:
- A backend is a real listening socket (127.0.0.0/8 only); nothing here fakes a server.
- What the backend received is read from its records (method, target, raw header pairs in order, body
  length, connection id and per-connection index, peer address); `clear()` between test steps.
- Knobs (`delay`, `status`, `body_size`, `close_after_head`, `garbage`, `close_after_response`) are plain
  attribute writes that apply to the next request; `refuse()` closes the port so connects get ECONNREFUSED,
  `accept()` listens again on the same port.
- `stop()` always runs (fixtures call it in `finally`), and closes every open connection.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from balancier.portal import Knobs, PortalServer, RequestRecord

HEALTH_CHECK_METHODS = ("OPTIONS", "HEAD", "GET")


def is_health_check(r: RequestRecord) -> bool:
    """A proxy's HTTP health check: OPTIONS/HEAD/GET without Host and without X-Forwarded-For.

    HAProxy's `option httpchk` sends `OPTIONS / HTTP/1.0` with no Host (spec §6); client traffic through a
    proxy with `option forwardfor` always carries X-Forwarded-For, and test clients send Host.
    """
    return (r.kind == "request" and r.method in HEALTH_CHECK_METHODS and r.header("Host") is None
            and r.header("X-Forwarded-For") is None)


_HANDED_OUT: set[int] = set()  # TCP ports free_port gave in this test process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (bind to 0, read it back, release it), and not one this process
    was given before: the kernel hands a released port out again, so two calls could otherwise give a test the
    same port for two listeners (a proxy's bind and a cluster node's API, seen once)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            if len(_HANDED_OUT) >= 8192:  # a long run: forget the oldest ones' test (long stopped)
                _HANDED_OUT.clear()
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no TCP port left that this test process was not given before")


class Backend:
    """A started portal server; `name` appears in every answer and in the `X-Served-By` header."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, listen: bool = True) -> None:
        self.name = name
        self.host = host
        self.server = PortalServer(name, host, port or (0 if listen else free_port(host)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listening = False
        self._loop, self._thread = _start_loop_thread(name)
        if listen:
            self.accept()

    # ---- addressing ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        """`host:port`, as written on a `server` line."""
        return f"{self.host}:{self.port}"

    @property
    def knobs(self) -> Knobs:
        return self.server.knobs

    # Shorthands for the knobs, so tests read `backend.delay = 0.5`.
    def set(self, **knobs: object) -> None:
        for k, v in knobs.items():
            if not hasattr(self.server.knobs, k):
                raise AttributeError(f"unknown knob {k!r}")
            setattr(self.server.knobs, k, v)

    def reset_knobs(self) -> None:
        self.server.knobs = Knobs()

    # ---- listening -------------------------------------------------------------------------------------
    def _call(self, coro_fn: Callable[[], Coroutine[Any, Any, None]], timeout: float = 10.0) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout)

    def accept(self) -> None:
        """(Re)open the listening socket on the same port."""
        if not self._listening:
            self._call(self.server.start)
            self._listening = True

    def refuse(self, drop_connections: bool = True) -> None:
        """Close the port: new connections are refused; open ones are cut unless told otherwise."""
        if self._listening:
            self._call(lambda: self.server.close(drop_connections))
            self._listening = False

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self.refuse()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None

    # ---- records ---------------------------------------------------------------------------------------
    def records(self, include_checks: bool = False) -> list[RequestRecord]:
        """Everything received so far; health checks (see `is_health_check`) left out by default."""
        recs = self.server.snapshot()
        if include_checks:
            return recs
        return [r for r in recs if not is_health_check(r)]

    def requests(self, include_checks: bool = False) -> list[RequestRecord]:
        """Only the well-formed requests (kind == "request")."""
        return [r for r in self.records(include_checks) if r.kind == "request"]

    def errors(self) -> list[RequestRecord]:
        """Input this backend could not parse (what a proxy should never forward)."""
        return [r for r in self.server.snapshot() if r.kind == "error"]

    def checks(self) -> list[RequestRecord]:
        return [r for r in self.server.snapshot() if is_health_check(r)]

    def per_connection(self, include_checks: bool = False) -> Counter[int]:
        """Requests per connection id."""
        return Counter(r.conn_id for r in self.records(include_checks))

    def clear(self) -> None:
        self.server.clear()

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, {self.address})"


def _start_loop_thread(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.close()

    t = threading.Thread(target=_run, name=f"backend-{name}", daemon=True)
    t.start()
    ready.wait(5)
    return loop, t


class BackendFactory:
    """Creates backends and stops every one of them at the end (used by the `backend_factory` fixture)."""

    def __init__(self) -> None:
        self.started: list[Backend] = []

    def __call__(self, name: str = "web", host: str = "127.0.0.1", port: int = 0,
                 listen: bool = True, **knobs: object) -> Backend:
        b = Backend(name, host, port, listen=listen)
        self.started.append(b)
        if knobs:
            b.set(**knobs)
        return b

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for b in self.started:
            try:
                b.stop()
            except BaseException as e:  # keep stopping the others
                errors.append(e)
        self.started.clear()
        if errors:
            raise errors[0]


__all__ = ["Backend", "BackendFactory", "free_port", "is_health_check"]
