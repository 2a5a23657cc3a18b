"""`mode tcp`: one client connection relayed byte for byte to one server connection (HAProxy §3, §10, §12.3).

Rules (each one checked against HAProxy 2.6 by tests/integration/test_tcp_differential.py):
- On accept a server is picked (balance algorithm; `source` hashes the client address), or the connection waits
  in the backend/server queue under `maxconn`; `timeout queue` (default `timeout connect`) closes it, `sQ`, as
  does a full `maxqueue` on the server `source` chose. No usable server at all: the client connection is closed,
  `SC`, `<NOSRV>`.
- Connect failures are retried and redispatched with the same rules as HTTP (§8, serverside.py); when they are
  exhausted the client connection is simply closed (nothing is sent in TCP mode): `SC` (refused) or `sC`
  (`timeout connect`).
- Bytes the client sends before the server connection is up are kept and sent first; bytes a server sends
  first (a greeting) before its stream takes the connection are kept too (`TcpServerConn`).
- Half-close is relayed both ways: an EOF read on one side becomes a write EOF on the other, and the other
  direction keeps flowing. The stream ends once both sides have sent their EOF (or on an error).
- Timeouts are per side, as HAProxy's read timeouts: the client side expires after `timeout client` without a
  byte read from or written to the client, the server side likewise with `timeout server`; `timeout tunnel`
  replaces both once the server connection is up. Once we have shut the write side towards a peer (its
  counterpart's EOF was relayed), that side uses `timeout client-fin` / `timeout server-fin` when set. An expiry
  does not kill the stream: it acts as an EOF on that side (relayed to the other one), and the first one sets the
  termination state (`cD` / `sD`). So with a silent server, `timeout client 300` and `timeout server 1s`, the
  stream ends after 1 s and is logged `cD`, as HAProxy does. A side that does not drain what we write to it
  (its write buffer stays above the high-water mark) for its timeout ends the stream at once. `timeout client`
  also runs while the connection waits for its server: a client silent that long is closed, `cQ` / `cC`.
- TLS has no half-close: towards a TLS client the server's EOF ends the stream (close_notify after the data); a
  TLS client that closes without close_notify is a clean end of its data.
- A side that resets (error) ends the stream at once: `CD` for the client in any phase (HAProxy 2.6 flags a
  client error with `D` even while queued or connecting), `SD` for the server. Other ends close the client with a
  FIN and drain what it still sends (a lingering close), so a client never sees a reset it did not cause.
- One tcplog record per connection, logged once the stream has left its server and backend (srv_conn and
  beconn exclude it): Tw = accept → server assigned (or → leaving the queue); Tc = assigned → connected
  (retries on the same server included), -1 if never connected; Tt = total; bytes sent to the client; the
  2-character termination state; retries (`+` after a redispatch); srv_queue/backend_queue as HAProxy counts
  them: 0 if never queued, else 1 + the number of entries that left that queue for a server while this one
  waited. `option dontlognull` skips connections that received no byte from the client (HAProxy looks at the
  request channel only). A TLS listener adds `~` to the frontend name.
- Stats: the backend counts the connection (stot) when it enters, a server each time it is assigned; bytes and
  client/server aborts (cli_abrt, srv_abrt) when the stream ends; econ/wretr/wredis come from serverside.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from balancier.proxy import queue as squeue
from balancier.proxy.logs import TcpLogRecord
from balancier.proxy.pool import HIGH_WATER, LOW_WATER, ServerConn, connect
from balancier.proxy.serverside import GIVE_UP, REDISPATCH, after_connect_failure

if TYPE_CHECKING:
    from balancier.proxy.runtime import Route, Runtime
    from balancier.proxy.servers import Server

WAIT, QUEUED, TURNAROUND, CONNECTING, RELAY, CLOSED = range(6)
LINGER = 2.0  # seconds a closed stream keeps reading (and discarding) what its client still sends

# How many entries left each queue (a Backend's or a Server's) for a server: HAProxy's `queue.idx`, from which
# the srv_queue/backend_queue log fields are computed. Keyed by the queue's owner; TCP and HTTP never share a
# backend, so counting TCP dequeues here is counting every dequeue of that queue.
_dequeued: dict[Any, int] = {}


class TcpServerConn(ServerConn):
    """A plain server connection for one TCP stream.

    It stays open for writing after the server's EOF (half-close), and it keeps what the server sends before the
    stream takes it: a server that speaks first (SMTP, SSH, MySQL greetings) may be faster than the callback
    that hands the new connection to its stream."""

    __slots__ = ("early", "early_eof")

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.early: list[bytes] = []
        self.early_eof = False

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.srv_data(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            owner.srv_eof()
        else:
            self.early_eof = True
        return True

    def adopt(self, owner: Any) -> None:
        """The stream takes the connection: replay what came before."""
        self.owner = owner
        early, self.early = self.early, []
        for data in early:
            owner.srv_data(data)
        if self.early_eof:
            owner.srv_eof()


def relay_timeout(eof_relayed: bool, fin: float | None, tunnel: float | None, plain: float | None,
                  connected: bool) -> float | None:
    """The inactivity timeout of one side: `-fin` once we shut our write side towards it, else `tunnel` once
    connected, else `client`/`server`. None = no timeout."""
    if eof_relayed and fin is not None:
        return fin
    if connected and tunnel is not None:
        return tunnel
    return plain


def queue_position(dequeued_now: int, dequeued_at_enqueue: int) -> int:
    """HAProxy's srv_queue/backend_queue log field for a stream that waited in a queue."""
    return dequeued_now - dequeued_at_enqueue + 1


class TcpStream(asyncio.Protocol):
    def __init__(self, rt: Runtime, route: Route) -> None:
        self.rt = rt
        self.route = route
        self.transport: Any = None
        self.phase = WAIT
        self.counted = False
        self.cip = ""
        self.cport = 0
        self.dport = 0
        self.t_accept = 0.0
        self.date = 0.0
        self.t_phase = 0.0
        self.t_assign = -1.0  # when the (last) server was assigned, or the queue left
        self.t_connected = -1.0
        self.srv: Server | None = None
        self.prev_srv: Server | None = None
        self.fails = 0
        self.redispatched = False
        self.pending: squeue.Pending | None = None
        self.q_key: Any = None  # the Backend or Server whose queue this stream waits in
        self.q_idx0 = 0
        self.q_srv = 0
        self.q_be = 0
        self.task: asyncio.Task[Any] | None = None
        self.turn: asyncio.TimerHandle | None = None  # the turn-around delay, or the connect timeout
        self.linger: asyncio.TimerHandle | None = None
        self.sconn: ServerConn | None = None
        self.early = bytearray()
        self.c_eof = False  # nothing more comes from the client (EOF read, or its side timed out)
        self.c_fin = False  # the client really sent its EOF
        self.s_eof = False  # nothing more comes from the server
        self.c_shut = False  # we sent our EOF to the client
        self.s_shut = False  # we sent our EOF to the server
        self.flags = ""  # termination state set by the first side timeout ("cD" / "sD")
        self.c_last = 0.0  # last byte read from or written to the client
        self.s_last = 0.0  # likewise for the server
        self.bytes_in = 0
        self.bytes_out = 0
        self.c_paused = False  # we stopped reading the client (server side full, or before connect)
        self.s_paused = False  # we stopped reading the server (client side full)
        self.in_be = False
        self.ssl_fc = False  # set by a TLS listener

    # ------------------------------------------------------------------ client side
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.cip, self.cport = peer[0], peer[1]
        sock = transport.get_extra_info("sockname")
        self.dport = sock[1] if sock else 0
        now = self.rt.loop.time()
        self.t_accept = self.t_phase = self.c_last = now
        self.date = time.time()
        if self.rt.accept(self):
            self._enter_backend()
        else:
            transport.pause_reading()

    def unpark(self) -> None:
        self.transport.resume_reading()
        self.t_phase = self.c_last = self.rt.loop.time()
        self._enter_backend()

    def _enter_backend(self) -> None:
        backend = self.route.be.backend
        backend.beconn += 1
        backend.stot += 1  # counted when the connection starts: a long-lived one shows up in `show stat` at once
        self.in_be = True
        self._assign()

    def data_received(self, data: bytes) -> None:
        if self.phase == CLOSED:
            return  # lingering close: what the client still sends is read and dropped
        self.c_last = self.rt.loop.time()
        self.bytes_in += len(data)
        sc = self.sconn
        if self.phase == RELAY and sc is not None and sc.transport is not None:
            self.s_last = self.c_last
            sc.transport.write(data)
        else:
            self.early += data
            if len(self.early) > HIGH_WATER and not self.c_paused:
                self.c_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.phase == CLOSED:
            return False  # the lingering close is over
        self.c_fin = True
        self._client_done()
        return True  # keep our write side open: the server's answer may still be coming

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.phase == CLOSED:
            return
        if exc is None and self.phase == RELAY:
            # A TLS client that closed its socket without close_notify: a clean end of its data, but nothing
            # can be written back any more. The server gets its EOF; the stream ends when the server is done.
            self.c_shut = True
            self._client_done()
            return
        self._end("C", "D")

    def pause_writing(self) -> None:
        sc = self.sconn
        if sc is not None and sc.transport is not None and not self.s_paused:
            self.s_paused = True
            sc.transport.pause_reading()

    def resume_writing(self) -> None:
        self.c_last = self.rt.loop.time()
        sc = self.sconn
        if sc is not None and sc.transport is not None and self.s_paused:
            self.s_paused = False
            sc.transport.resume_reading()

    # ------------------------------------------------------------------ half-close
    def _client_done(self) -> None:
        """Nothing more will be read from the client: relay the EOF to the server (now, or once connected)."""
        if self.c_eof:
            return
        self.c_eof = True
        if self.phase == RELAY:
            self._shut_server()
            self._maybe_finish()
        # before RELAY: the early bytes (if any) go to the server first, the EOF follows them (_connected)

    def _server_done(self) -> None:
        if self.s_eof:
            return
        self.s_eof = True
        if not self.c_shut:
            self.c_shut = True
            if not self.transport.is_closing() and self.transport.can_write_eof():
                self.transport.write_eof()
            elif not self.c_eof:
                # a TLS client: no half-close in TLS, and the client could not learn that the server is done
                # other than by the close (close_notify) that ends the stream now
                self.c_eof = True
        self._maybe_finish()

    def _shut_server(self) -> None:
        sc = self.sconn
        if self.s_shut or sc is None or sc.transport is None or sc.transport.is_closing():
            return
        self.s_shut = True
        if sc.transport.can_write_eof():
            sc.transport.write_eof()

    def _maybe_finish(self) -> None:
        if self.c_eof and self.s_eof:
            a, b = (self.flags[0], self.flags[1]) if self.flags else ("-", "-")
            self._end(a, b)

    # ------------------------------------------------------------------ server choice
    def _assign(self) -> None:
        backend = self.route.be.backend
        now = self.rt.loop.time()
        srv = backend.pick(self.cip, self.prev_srv)
        if srv is None:
            if backend.has_usable():
                self._enqueue(now, backend, None)
                return
            self._end("S", "C")
            return
        if srv.saturated:  # `source` returns its server even when saturated: wait for it
            if squeue.server_queue_full(srv):  # ... unless its `maxqueue` is reached
                self._end("s", "Q")
                return
            self._enqueue(now, backend, srv)
            return
        backend.acquire(srv)
        srv.stot += 1
        self.srv = srv
        self.t_assign = now
        self._connect()

    def _enqueue(self, now: float, backend: Any, srv: Server | None) -> None:
        self.q_key = srv if srv is not None else backend
        self.q_idx0 = _dequeued.get(self.q_key, 0)
        self.pending = squeue.enqueue(self, now, backend, srv)
        self.phase = QUEUED
        self.t_phase = now

    def _left_queue(self, served: bool, stamp: bool = True) -> None:
        key = self.q_key
        if key is None:
            return
        n = _dequeued.get(key, 0)
        pos = queue_position(n, self.q_idx0)
        if key is self.route.be.backend:
            self.q_be = pos
        else:
            self.q_srv = pos
        if served:
            _dequeued[key] = n + 1
        self.q_key = None
        if stamp:
            self.t_assign = self.rt.loop.time()

    def dequeued(self, server: Server) -> None:
        self.pending = None
        if self.phase != QUEUED:
            self._release(server)
            return
        self._left_queue(served=True)
        server.stot += 1
        self.srv = server
        self._connect()

    def _connect(self) -> None:
        srv = self.srv
        assert srv is not None
        loop = self.rt.loop
        self.phase = CONNECTING
        self.t_phase = loop.time()
        host, port = srv.addr
        port = port if port is not None else self.dport
        if srv.cfg.ssl:
            coro: Any = connect(loop, srv, host, port)
        else:
            coro = loop.create_connection(lambda: TcpServerConn(srv), host, port)
        self.task = loop.create_task(coro)
        self.task.add_done_callback(self._connected)
        if self.route.t_connect is not None:  # a precise timer: the sweep's 100 ms steps would add up per retry
            self.turn = loop.call_later(self.route.t_connect, self._connect_timeout)

    def _connect_timeout(self) -> None:
        self.turn = None
        if self.phase != CONNECTING:
            return
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self._connect_failed(timeout=True)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task is not self.task:
            if not task.cancelled() and task.exception() is None:
                task.result()[0].close()
            return
        self.task = None
        if task.cancelled():
            return
        if task.exception() is not None:
            if self.turn is not None:
                self.turn.cancel()
                self.turn = None
            self._connect_failed(timeout=False)
            return
        _tr, conn = task.result()
        if self.turn is not None:
            self.turn.cancel()
            self.turn = None
        now = self.rt.loop.time()
        self.t_connected = now
        self.sconn = conn
        conn.owner = self
        self.phase = RELAY
        self.s_last = self.c_last = now
        assert conn.transport is not None
        if self.early:
            conn.transport.write(bytes(self.early))
            self.early = bytearray()
        if self.c_paused:
            self.c_paused = False
            self.transport.resume_reading()
        if self.c_eof:
            self._shut_server()
        if isinstance(conn, TcpServerConn):
            conn.adopt(self)

    def _connect_failed(self, timeout: bool) -> None:
        srv = self.srv
        assert srv is not None
        self.fails += 1
        step, delay = after_connect_failure(self.route, srv, self.fails, False, timeout)
        if step == GIVE_UP:
            self.fails -= 1
            self._end("s" if timeout else "S", "C")
            return
        if step == REDISPATCH:
            self.redispatched = True
            self.prev_srv = srv
            self.srv = None
            self._release(srv)
            self._assign()
            return
        if delay <= 0:
            self._connect()
            return
        self.phase = TURNAROUND
        self.turn = self.rt.loop.call_later(delay, self._turn_done)

    def _turn_done(self) -> None:
        self.turn = None
        if self.phase == TURNAROUND:
            self._connect()

    def _release(self, srv: Server) -> None:
        squeue.release(self.route.be.backend, srv)

    # ------------------------------------------------------------------ server side (ConnOwner)
    def srv_data(self, data: bytes) -> None:
        now = self.rt.loop.time()
        self.s_last = self.c_last = now  # writing to the client is activity on the client side too
        self.bytes_out += len(data)
        if not self.c_shut:
            self.transport.write(data)

    def srv_eof(self) -> None:
        self._server_done()

    def srv_lost(self, exc: Exception | None) -> None:
        if self.phase != RELAY:
            return
        self.sconn = None
        if exc is not None or not self.s_eof:
            self._end("S", "D")
            return
        # the server closed after its EOF: nothing can be written to it any more
        self.c_eof = True
        self._maybe_finish()

    def srv_pause_writing(self) -> None:
        if not self.c_paused:
            self.c_paused = True
            self.transport.pause_reading()

    def srv_resume_writing(self) -> None:
        self.s_last = self.rt.loop.time()
        if self.c_paused:
            self.c_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ timeouts
    def check(self, now: float) -> None:
        ph = self.phase
        route = self.route
        if ph in (QUEUED, CONNECTING, TURNAROUND):
            # `timeout client` runs from the accept: a client silent that long while it waits is closed
            if not self.c_eof and route.t_client is not None and now - self.c_last >= route.t_client:
                self._end("c", "Q" if ph == QUEUED else "C")
            elif ph == QUEUED and route.t_queue is not None and now - self.t_phase >= route.t_queue:
                self._end("s", "Q")
        elif ph == RELAY:
            # client side: reading it (unless we stopped because the server is not draining) or writing to it
            # while it does not drain (s_paused)
            if (not self.c_eof and not self.c_paused) or self.s_paused:
                t = relay_timeout(self.c_shut, route.t_client_fin, route.t_tunnel, route.t_client, True)
                if t is not None and now - self.c_last >= t:
                    self._side_timeout("cD")
                    if self.phase != RELAY:
                        return
            if (not self.s_eof and not self.s_paused) or self.c_paused:
                t = relay_timeout(self.s_shut, route.t_server_fin, route.t_tunnel, route.t_server, True)
                if t is not None and now - self.s_last >= t:
                    self._side_timeout("sD")

    def _side_timeout(self, state: str) -> None:
        """A side stayed idle too long. Not reading from it: that counts as its EOF (HAProxy shuts its read
        side) and the stream goes on; not draining what we write to it: the stream ends."""
        if not self.flags:
            self.flags = state
        if state[0] == "c":
            if self.s_paused:
                self._end(self.flags[0], self.flags[1])
                return
            if not self.transport.is_closing():
                self.transport.pause_reading()
            self._client_done()
        else:
            if self.c_paused:
                self._end(self.flags[0], self.flags[1])
                return
            sc = self.sconn
            if sc is not None and sc.transport is not None and not sc.transport.is_closing():
                sc.transport.pause_reading()
            self._server_done()

    # ------------------------------------------------------------------ end
    def _end(self, a: str, b: str) -> None:
        if self.phase == CLOSED:
            return
        prev_phase = self.phase
        self.phase = CLOSED
        if self.pending is not None:
            squeue.cancel(self.pending)
            self.pending = None
            self._left_queue(served=False, stamp=a != "c")  # HAProxy: Tw -1 after a client timeout
        if self.task is not None:
            t, self.task = self.task, None
            t.cancel()
        if self.turn is not None:
            self.turn.cancel()
            self.turn = None
        srv = self.srv
        backend = self.route.be.backend
        if self.in_be:  # logged once off the backend and the server, as HAProxy does
            self.in_be = False
            backend.beconn -= 1
        if srv is not None:
            backend.release(srv)
        if not (prev_phase == WAIT and a == "C"):  # parked unread: HAProxy would not have accepted it yet
            self._log(a, b)
        if srv is not None:
            srv.bin += self.bytes_in
            srv.bout += self.bytes_out
            if a == "C":
                srv.cli_abrt += 1
            elif a == "S" and b == "D":
                srv.srv_abrt += 1
        if a == "C" and b == "D" and prev_phase == RELAY:
            backend.cli_abrt += 1
        elif a == "S" and b == "D":
            backend.srv_abrt += 1
        backend.bin += self.bytes_in
        backend.bout += self.bytes_out
        fe = self.route.fe
        fe.bin += self.bytes_in
        fe.bout += self.bytes_out
        sc, self.sconn = self.sconn, None
        if sc is not None:
            sc.owner = None
            if a == "C":
                sc.abort()  # the client reset: so does the server connection
            else:
                sc.close()
        if srv is not None:
            self.srv = None
            squeue.on_release(backend, srv)
        self.rt.release(self)
        self._close_client(a)

    def _close_client(self, a: str) -> None:
        tr = self.transport
        if tr is None or tr.is_closing():
            return
        if a == "C":
            tr.abort()
            return
        if self.c_fin or not tr.can_write_eof():
            tr.close()
            return
        # A FIN now, and read (and drop) what the client still sends until its own EOF or LINGER seconds, so
        # unread bytes never turn our close into a reset.
        if not self.c_shut:
            tr.write_eof()
        tr.resume_reading()
        self.linger = self.rt.loop.call_later(LINGER, tr.abort)

    def _log(self, a: str, b: str) -> None:
        fe = self.route.fe
        lg = fe.tcp_logger
        if lg is None:
            return
        if fe.cfg.dontlognull and self.bytes_in == 0:
            return
        now = self.rt.loop.time()
        if self.t_assign >= 0:
            tw = int((self.t_assign - self.t_accept) * 1000)
            tc = int((self.t_connected - self.t_assign) * 1000) if self.t_connected >= 0 else -1
        else:
            tw = tc = -1
        srv = self.srv
        backend = self.route.be.backend
        lg.log_tcp(TcpLogRecord(
            self.cip, self.cport, self.date, fe.log_name + "~" if self.ssl_fc else fe.log_name, backend.name,
            srv.name if srv is not None else "<NOSRV>", tw, tc, int((now - self.t_accept) * 1000),
            self.bytes_out, a + b, self.rt.actconn, fe.feconn, backend.beconn,
            srv.served if srv is not None else 0, self.fails, self.redispatched, self.q_srv, self.q_be))

    def soft_stop(self) -> None:
        """TCP connections finish by themselves; a parked or queued one closes now."""
        if self.phase in (WAIT, QUEUED):
            self._end("K", "Q" if self.phase == QUEUED else "R")

    def hard_close(self) -> None:
        self._end("K", "D")
