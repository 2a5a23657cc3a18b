"""Server-side connections and the pool of idle keep-alive ones.

Rules (HAProxy §11 `http-reuse`):
- A `ServerConn` is an asyncio Protocol owned by at most one stream at a time. While owned, every event goes to the
  owner (`srv_data`, `srv_eof`, `srv_lost`, `srv_pause_writing`, `srv_resume_writing`). While idle in the pool, any
  byte or close from the server makes the connection useless: it is closed and forgotten.
- The pool keeps idle connections per server, newest first (LIFO keeps few connections warm). `get()` pops the
  newest live one; `min_uses` lets `http-reuse aggressive` ask for connections that already carried 2+ requests.
- Which requests may take a pooled connection is the stream's decision (never / safe / aggressive / always); a
  `never` stream keeps its connection private instead of pooling it.
- Idle connections are purged after `IDLE_TIMEOUT` seconds (HAProxy's pool-purge-delay is 5 s) and at most
  `MAX_IDLE_PER_SERVER` are kept, so a burst does not pin thousands of sockets on the servers.
- Write buffer limits (HIGH_WATER/LOW_WATER, named in rawio.py, whose transports start with them) drive flow
  control in both directions (see stream.py).
- `connect()` opens every server connection (HTTP and TCP streams alike): plain TCP, or TLS for `server ... ssl`
  with the client context built when the configuration was loaded (proxy/tls.py). The SNI is `sni str(..)`, or
  the request's Host name for `sni req.hdr(host)`; no SNI otherwise. A failed handshake or a certificate that does
  not verify is a failed connect (retried, then 503 `sC`). Connections whose SNI came from a request's Host field
  are never pooled: the pool does not know which name a later request would need.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from balancier.proxy.rawio import HIGH_WATER, LOW_WATER  # the write buffer limits (flow control both ways)
from balancier.proxy.rawio import RawTransport as _RawTransport
from balancier.proxy.tls import sni_for

if TYPE_CHECKING:
    from balancier.proxy.servers import Server

IDLE_TIMEOUT = 5.0
MAX_IDLE_PER_SERVER = 256
TLS_HANDSHAKE_TIMEOUT = 10.0  # bounded further by the stream's connect timeout


def plain(server: Server) -> bool:
    """Whether connections to ``server`` are plain TCP: no ``ssl``, or no client context to use."""
    cfg = server.cfg
    return not cfg.ssl or cfg.tls_context is None


def connect(loop: asyncio.AbstractEventLoop, server: Server, host: str, port: int,
            request: Any = None) -> Coroutine[Any, Any, tuple[asyncio.Transport, ServerConn]]:
    """The coroutine that opens a connection to ``server`` at host:port (TLS when the server says ``ssl``).

    ``request``: the request head the connection is for (its Host field is the SNI of ``sni req.hdr(host)``)."""
    if plain(server):
        return loop.create_connection(lambda: ServerConn(server), host, port)  # type: ignore[return-value]
    cfg = server.cfg
    tls = cfg.tls
    from_host = tls is not None and tls.sni_from_host
    host_field = request.get("host") if (from_host and request is not None) else None
    sni = sni_for(tls, host_field)

    def make() -> ServerConn:
        conn = ServerConn(server)
        conn.private = from_host
        return conn

    # server_hostname "" sends no SNI (and the context checks a name only when an SNI is configured)
    return loop.create_connection(make, host, port, ssl=cfg.tls_context,  # type: ignore[return-value]
                                  server_hostname=sni or "", ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)


class ConnOwner(Protocol):
    def srv_data(self, data: bytes) -> None: ...
    def srv_eof(self) -> None: ...
    def srv_lost(self, exc: Exception | None) -> None: ...
    def srv_pause_writing(self) -> None: ...
    def srv_resume_writing(self) -> None: ...


class ServerConn(asyncio.Protocol):
    __slots__ = ("server", "transport", "owner", "uses", "alive", "idle_since", "pool", "write_paused", "private")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.owner: ConnOwner | None = None
        self.uses = 0  # requests sent on this connection
        self.alive = True
        self.idle_since = 0.0
        self.pool: Pool | None = None  # set while idle in a pool
        self.write_paused = False
        self.private = False  # never pooled (TLS with an SNI taken from one request's Host field)

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if type(transport) is not _RawTransport:  # rawio's starts with these limits (a call per connection less)
            transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.srv_data(data)
        else:  # unsolicited bytes on an idle connection: it can no longer be trusted
            self.close()

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            owner.srv_eof()
        else:
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.pool is not None:
            self.pool.forget(self)
        owner = self.owner
        self.owner = None
        if owner is not None:
            owner.srv_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.srv_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.srv_resume_writing()

    def close(self) -> None:
        self.alive = False
        self.owner = None
        if self.pool is not None:
            self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.alive = False
        self.owner = None
        if self.pool is not None:
            self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Idle keep-alive server connections, per server.

    Each server's idle connections live in its own deque (`Server.idle`, newest last), so taking one is an
    attribute read, not a lookup; `idle` maps id(server) to that deque for the servers that have had one (purge,
    close_server, close_all walk it)."""

    def __init__(self) -> None:
        self.idle: dict[int, deque[ServerConn]] = {}  # keyed by id(server): servers need not be hashable

    def put(self, conn: ServerConn, now: float) -> None:
        t = conn.transport
        if conn.alive and not conn.private and t is not None and not t.is_closing():
            server = conn.server
            q = server.idle
            if len(q) < MAX_IDLE_PER_SERVER:
                if not q:
                    self.idle[id(server)] = q
                conn.owner = None
                conn.idle_since = now
                conn.pool = self
                q.append(conn)
                return
        conn.close()

    def get(self, server: Server, min_uses: int = 1) -> ServerConn | None:
        q = server.idle
        if not q:
            return None
        conn = q[-1]
        t = conn.transport
        if conn.alive and conn.uses >= min_uses and t is not None and not t.is_closing():  # the usual case
            q.pop()
            conn.pool = None
            return conn
        # newest first; a stale one found on the way is dropped
        for _ in range(len(q)):
            conn = q.pop()
            conn.pool = None
            if conn.alive and conn.transport is not None and not conn.transport.is_closing():
                if conn.uses >= min_uses:
                    return conn
                q.appendleft(conn)  # usable later by a less demanding request
                conn.pool = self
                continue
            conn.close()
        return None

    def forget(self, conn: ServerConn) -> None:
        if conn.pool is not self:
            return
        conn.pool = None
        try:
            conn.server.idle.remove(conn)
        except ValueError:
            pass

    def purge(self, now: float, max_idle: float = IDLE_TIMEOUT) -> None:
        for q in self.idle.values():
            while q and now - q[0].idle_since > max_idle:
                conn = q.popleft()
                conn.pool = None
                conn.close()

    def close_server(self, server: Server) -> None:
        q = self.idle.pop(id(server), None)
        while q:
            conn = q.pop()
            conn.pool = None
            conn.close()

    def close_all(self) -> None:
        for key in list(self.idle):
            q = self.idle.pop(key)
            while q:
                conn = q.pop()
                conn.pool = None
                conn.close()
