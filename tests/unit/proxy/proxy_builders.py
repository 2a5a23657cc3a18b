"""Builders for the data plane's unit tests: backends from plain tuples, a fake clock, a recording transport
(imported by the tests)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from balancier.proxy.config.model import Balance, CookieConfig, HttpCheck, Proxy, ServerConfig
from balancier.proxy.servers import Backend


class Recorder:
    """A transport that records what a stream writes and asks of it (the edge of a unit test: no socket)."""

    def __init__(self) -> None:
        self.data = b""
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.9", 40000) if name in ("peername", "sockname") else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def make_backend(servers: list[tuple], algo: str = "roundrobin", *, clock: Callable[[], float] | None = None,
                 kind: str = "backend", name: str = "b", cookie: CookieConfig | None = None,
                 httpchk: HttpCheck | None = None, **proxy_kw) -> Backend:
    """servers: (name, weight) or (name, weight, {ServerConfig overrides})."""
    scs = []
    for i, spec in enumerate(servers):
        sname, w = spec[0], spec[1]
        extra = spec[2] if len(spec) > 2 else {}
        scs.append(ServerConfig(sname, "127.0.0.1", 10000 + i, weight=w, **extra))
    cfg = Proxy(name=name, kind=kind, mode="http", balance=Balance(algo), servers=tuple(scs), cookie=cookie,
                httpchk=httpchk, **proxy_kw)
    return Backend(cfg, clock or FakeClock())


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connects to it are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
