"""Builders for the data plane's pure cores: backends from plain tuples, a fake clock (imported by the tests)."""

from __future__ import annotations

from collections.abc import Callable

from balancier.proxy.config.model import Balance, CookieConfig, HttpCheck, Proxy, ServerConfig
from balancier.proxy.servers import Backend


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
