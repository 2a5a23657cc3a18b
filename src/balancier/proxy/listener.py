"""Listening sockets from `bind` lines, and pausing them when a connection limit is reached.

Rules:
- Sockets are created and bound synchronously at start-up, before the daemon fork, the chroot and the privilege
  drop (binding port 80 needs root; errors must reach the terminal). SO_REUSEADDR is set, and SO_REUSEPORT as
  HAProxy does on Linux, so that a new process started with `-sf`/`-st` can bind while the old one still listens
  (the kernel spreads new connections over both until the old one closes its listeners). Backlog = the frontend's
  maxconn, as HAProxy does.
- The event loop serves a *duplicate* of the listening descriptor. Pausing (global or frontend `maxconn` reached)
  closes only that duplicate: the socket stays in LISTEN state and new clients wait in the kernel backlog, exactly
  as HAProxy's "stop accepting" (no error is sent). Resuming serves a fresh duplicate.
- A soft stop closes the listeners for good, so new connects are refused.
- TLS (`bind ... ssl crt ...`): the listener serves with the bind's context (proxy/tls.py, loaded with the
  configuration), so a protocol only ever sees decrypted bytes, in HTTP and TCP mode alike; the handshake is
  bounded by `TLS_HANDSHAKE_TIMEOUT`. A client that fails the handshake (plaintext, garbage, no shared version,
  unknown name under strict-sni) is dropped by the TLS layer before any protocol is told, so it costs no stream.
- Each protocol made for a TLS bind gets `ssl_fc = True`; when its route has `http-request` rules
  (proxy/httprules.py) it gets them as `http_rules`. Both default to False / None in the stream, so plain binds
  without rules pay nothing for them per request, nor per connection: the event loop then calls the runtime's
  factory (a `functools.partial` of the stream class) directly.
- A plain bind of HTTP streams is served by the runtime's rawio layer (`RawServer`: accept loop and transports on
  an epoll set of our own, one descriptor in the loop); pausing takes the listening descriptor out of that set.
  TLS binds and TCP-mode binds use the loop's own server (`create_server` on a duplicate of the listening
  socket, closed to pause). Measured before the rawio layer: uvloop's server beat an accept loop *through the
  loop* (`socket.accept` + `loop.connect_accepted_socket`: 3.4x the instructions; a bare `add_reader` per
  connection: +14 %); the rawio layer registers nothing with the loop per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from balancier.proxy.config.model import Bind
from balancier.proxy.process import StartError
from balancier.proxy.rawio import RawServer

# Time allowed for a client's TLS handshake (HAProxy bounds it with `timeout client`; a fixed bound keeps a silent
# client from holding a socket forever, whatever the configuration says).
TLS_HANDSHAKE_TIMEOUT = 10.0
_UNKNOWN: Any = object()


class _QuietTlsEof(logging.Filter):
    """The HTTP stream keeps a half-closed connection until its response is out (eof_received returns True); over
    TLS the event loop ignores that and says so once per connection on the `asyncio` logger. Drop that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_QUIET = _QuietTlsEof()


def _route_rules(proto: Any) -> Any:
    """The http-request rules of the route a stream serves (None when it has none or is not an HTTP stream)."""
    return _rules_of(getattr(proto, "route", None))


def _rules_of(route: Any) -> Any:
    """The http-request rules of a route (None when it has none or is not an HTTP route)."""
    from balancier.proxy.httprules import rules_for

    if route is None or getattr(route, "mode", "http") != "http":
        return None
    fe, be = route.fe.cfg, route.be.cfg
    return rules_for(fe.http_rules, be.http_rules, fe is be)


def wrap_factory(factory: Callable[[], asyncio.BaseProtocol], ssl_fc: bool,
                 route: Any = _UNKNOWN) -> Callable[[], asyncio.BaseProtocol]:
    """A factory that marks its protocols as TLS ones and hands them their route's http-request rules.

    With the `route` known, a plain bind without rules gives the event loop `factory` itself (for the runtime's
    `functools.partial` of the stream class: no Python frame of ours per accepted connection). Otherwise the
    wrapper sets the marks on each instance. (A subclass per listener with class-level rules was measured: it
    costs more per request than the instance store saves per connection.)"""
    if route is not _UNKNOWN and not ssl_fc and _rules_of(route) is None:
        return factory
    rules = _UNKNOWN if route is _UNKNOWN else _rules_of(route)

    def make() -> asyncio.BaseProtocol:
        nonlocal rules
        proto = factory()
        if rules is _UNKNOWN:  # one route per listener: look the rules up once
            rules = _route_rules(proto)
        if rules is not None:
            proto.http_rules = rules  # type: ignore[attr-defined]
        if ssl_fc:
            proto.ssl_fc = True  # type: ignore[attr-defined]
        return proto

    return make


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Listener:
    def __init__(self, bind: Bind, backlog: int) -> None:
        self.bind = bind
        self.backlog = max(1, backlog)
        self.sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._want_serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: Callable[[], asyncio.BaseProtocol] | None = None
        self._pending: asyncio.Task[None] | None = None
        self._raw: RawServer | None = None  # the accept loop of a plain HTTP bind on the runtime's rawio layer

    @property
    def label(self) -> str:
        host = self.bind.host or "*"
        return f"[{host}]:{self.bind.port}" if ":" in host else f"{host}:{self.bind.port}"

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the kernel's choice for port 0)."""
        if self.sock is None:
            return self.bind.port
        return int(self.sock.getsockname()[1])

    def open(self) -> None:
        host = self.bind.host
        if host in ("", "*"):
            host = "0.0.0.0"
        fam = _family(host)
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, self.bind.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise StartError(f"{self.bind.where}: cannot bind socket [{self.label}]: {e.strerror}") from None
        self.sock = sock

    def start(self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol],
              route: Any = _UNKNOWN, io: Any = None) -> None:
        """Serve with protocols from `factory`; `route` (the runtime's Route of these protocols) lets the listener
        know their http-request rules without making one. `io`: the runtime's rawio.Layer, which serves a plain
        (non-TLS) bind of HTTP streams; None leaves the bind to the loop's server."""
        self._loop = loop
        self._factory = wrap_factory(factory, self.bind.tls is not None, route)
        if self.bind.tls is not None:
            logging.getLogger("asyncio").addFilter(_QUIET)
        elif io is not None and self.sock is not None:
            self._raw = RawServer(io, self.sock, self._factory)
        self.resume()

    def resume(self) -> None:
        if self._want_serving or self.sock is None or self._loop is None:
            return
        self._want_serving = True
        if self._raw is not None:
            self._raw.start()
            return
        if self._server is None and self._pending is None:
            self._pending = self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self._want_serving and self._server is None and self.sock is not None:
                assert self._loop is not None and self._factory is not None
                dup = socket.socket(fileno=os.dup(self.sock.fileno()))
                dup.setblocking(False)
                tls = self.bind.tls
                if tls is None:
                    self._server = await self._loop.create_server(self._factory, sock=dup, backlog=self.backlog)
                else:
                    self._server = await self._loop.create_server(
                        self._factory, sock=dup, backlog=self.backlog, ssl=tls.context,
                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
                if not self._want_serving:  # paused while we were starting
                    self._server.close()
                    self._server = None
        finally:
            self._pending = None

    def pause(self) -> None:
        if not self._want_serving:
            return
        self._want_serving = False
        if self._raw is not None:
            self._raw.pause()
        if self._server is not None:
            self._server.close()
            self._server = None

    def close(self) -> None:
        self.pause()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
