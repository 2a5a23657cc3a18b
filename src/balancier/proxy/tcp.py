"""`mode tcp`: one client connection relayed byte for byte to one server connection (HAProxy §3, basic form).

Rules:
- On accept a server is picked (balance algorithm; `source` hashes the client address), or the connection waits
  in the backend/server queue under `maxconn` (`timeout queue` → closed, `sQ`).
- Connect failures are retried and redispatched with the same rules as HTTP (§8, shared helper); when they are
  exhausted the client connection is simply closed (nothing is sent in TCP mode), `SC`.
- Bytes the client sends before the server connection is up are kept and sent first.
- Half-close is relayed: an EOF from one side becomes a write EOF on the other; the stream ends when both
  directions are closed or on an error. `timeout client`/`timeout server` are inactivity timeouts
  (`timeout tunnel` replaces both once connected). Flow control uses the same high/low water marks as HTTP.
- One tcplog record per connection (Tw/Tc/Tt, bytes to the client, the 2-character termination state).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from balancier.proxy import queue as squeue
from balancier.proxy.logs import TcpLogRecord
from balancier.proxy.pool import HIGH_WATER, LOW_WATER, ServerConn
from balancier.proxy.serverside import GIVE_UP, REDISPATCH, after_connect_failure

if TYPE_CHECKING:
    from balancier.proxy.runtime import Route, Runtime
    from balancier.proxy.servers import Server

WAIT, QUEUED, TURNAROUND, CONNECTING, RELAY, CLOSED = range(6)


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
        self.t_conn = 0.0
        self.t_connected = -1.0
        self.srv: Server | None = None
        self.prev_srv: Server | None = None
        self.fails = 0
        self.redispatched = False
        self.pending: squeue.Pending | None = None
        self.q_srv = 0
        self.q_be = 0
        self.task: asyncio.Task[Any] | None = None
        self.turn: asyncio.TimerHandle | None = None
        self.sconn: ServerConn | None = None
        self.early = bytearray()
        self.c_eof = False
        self.s_eof = False
        self.c_last = 0.0
        self.s_last = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.c_paused = False
        self.s_paused = False
        self.c_write_paused = False
        self.in_be = False

    # client side
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
        self.rt.sweeper.add(self)
        if self.rt.accept(self):
            self._enter_backend()
        else:
            transport.pause_reading()

    def unpark(self) -> None:
        self.transport.resume_reading()
        self.t_phase = self.c_last = self.rt.loop.time()
        self._enter_backend()

    def _enter_backend(self) -> None:
        self.route.be.backend.beconn += 1
        self.in_be = True
        self._assign()

    def data_received(self, data: bytes) -> None:
        self.c_last = self.rt.loop.time()
        self.bytes_in += len(data)
        sc = self.sconn
        if self.phase == RELAY and sc is not None and sc.transport is not None:
            sc.transport.write(data)
        else:
            self.early += data
            if len(self.early) > HIGH_WATER and not self.c_paused:
                self.c_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.c_eof = True
        sc = self.sconn
        if self.phase == RELAY and sc is not None and sc.transport is not None:
            if sc.transport.can_write_eof():
                sc.transport.write_eof()
            if self.s_eof:
                self._end("-", "-")
                return False
        elif self.phase != RELAY:
            pass  # the early bytes (if any) still go to the server; the EOF follows them
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase == CLOSED:
            return
        if self.phase == RELAY:
            self._end("C" if not (self.c_eof and self.s_eof) else "-", "D" if not self.c_eof else "-")
        else:
            self._end("C", {QUEUED: "Q", CONNECTING: "C", TURNAROUND: "C"}.get(self.phase, "R"))

    def pause_writing(self) -> None:
        self.c_write_paused = True
        sc = self.sconn
        if sc is not None and sc.transport is not None and not self.s_paused:
            self.s_paused = True
            sc.transport.pause_reading()

    def resume_writing(self) -> None:
        self.c_write_paused = False
        sc = self.sconn
        if sc is not None and sc.transport is not None and self.s_paused:
            self.s_paused = False
            sc.transport.resume_reading()

    # server choice
    def _assign(self) -> None:
        backend = self.route.be.backend
        srv = backend.pick(self.cip, self.prev_srv)
        if srv is None:
            if backend.has_usable():
                now = self.rt.loop.time()
                self.pending = squeue.enqueue(self, now, backend, None)
                self.q_be = len(backend.queue)
                self.phase = QUEUED
                self.t_phase = now
                return
            self._end("S", "C")
            return
        if srv.saturated:  # `source` returns its server even when saturated: wait for it
            now = self.rt.loop.time()
            self.pending = squeue.enqueue(self, now, backend, srv)
            self.q_srv = len(srv.queue)
            self.phase = QUEUED
            self.t_phase = now
            return
        backend.acquire(srv)
        self.srv = srv
        self._connect()

    def dequeued(self, server: Server) -> None:
        self.pending = None
        if self.phase != QUEUED:
            self._release(server)
            return
        self.srv = server
        self._connect()

    def _connect(self) -> None:
        srv = self.srv
        assert srv is not None
        loop = self.rt.loop
        self.phase = CONNECTING
        self.t_phase = self.t_conn = loop.time()
        host, port = srv.addr
        self.task = loop.create_task(
            loop.create_connection(lambda: ServerConn(srv), host, port if port is not None else self.dport))
        self.task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task is not self.task:
            if not task.cancelled() and task.exception() is None:
                task.result()[0].close()
            return
        self.task = None
        if task.cancelled():
            return
        if task.exception() is not None:
            self._connect_failed(timeout=False)
            return
        _tr, conn = task.result()
        self.t_connected = self.rt.loop.time()
        self.sconn = conn
        conn.owner = self
        self.phase = RELAY
        self.s_last = self.t_connected
        assert conn.transport is not None
        if self.early:
            conn.transport.write(bytes(self.early))
            self.early = bytearray()
        if self.c_paused:
            self.c_paused = False
            self.transport.resume_reading()
        if self.c_eof and conn.transport.can_write_eof():
            conn.transport.write_eof()

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

    # server side (ConnOwner)
    def srv_data(self, data: bytes) -> None:
        self.s_last = self.rt.loop.time()
        self.bytes_out += len(data)
        self.transport.write(data)

    def srv_eof(self) -> None:
        self.s_eof = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.c_eof:
            self._end("-", "-")

    def srv_lost(self, exc: Exception | None) -> None:
        if self.phase != RELAY:
            return
        self.sconn = None
        if self.s_eof and self.c_eof:
            self._end("-", "-")
        elif self.s_eof:
            # the server closed its side and then the connection: the client may still be reading; finish
            self._end("-", "-")
        else:
            self._end("S", "D")

    def srv_pause_writing(self) -> None:
        if not self.c_paused:
            self.c_paused = True
            self.transport.pause_reading()

    def srv_resume_writing(self) -> None:
        if self.c_paused:
            self.c_paused = False
            self.transport.resume_reading()

    # timeouts
    def check(self, now: float) -> None:
        ph = self.phase
        route = self.route
        if ph == QUEUED:
            if route.t_queue is not None and now - self.t_phase >= route.t_queue:
                self._end("s", "Q")
        elif ph == CONNECTING:
            if route.t_connect is not None and now - self.t_phase >= route.t_connect:
                task, self.task = self.task, None
                if task is not None:
                    task.cancel()
                self._connect_failed(timeout=True)
        elif ph == RELAY:
            tc = route.t_tunnel if route.t_tunnel is not None else route.t_client
            ts = route.t_tunnel if route.t_tunnel is not None else route.t_server
            if self.c_eof and route.t_client_fin is not None:
                tc = route.t_client_fin
            if self.s_eof and route.t_server_fin is not None:
                ts = route.t_server_fin
            if ts is not None and not self.s_paused and now - self.s_last >= ts and now - self.c_last >= ts:
                self._end("s", "D")
            elif tc is not None and now - self.c_last >= tc and now - self.s_last >= tc:
                self._end("c", "D")
        elif ph == WAIT:
            pass

    # end
    def _end(self, a: str, b: str) -> None:
        if self.phase == CLOSED:
            return
        prev_phase = self.phase
        self.phase = CLOSED
        if self.pending is not None:
            squeue.cancel(self.pending)
            self.pending = None
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
        self._log(a, b, prev_phase)
        if srv is not None:
            srv.stot += 1
            srv.bin += self.bytes_in
            srv.bout += self.bytes_out
            if a == "C":
                srv.cli_abrt += 1
            elif a == "S" and b == "D":
                srv.srv_abrt += 1
        backend.bin += self.bytes_in
        backend.bout += self.bytes_out
        fe = self.route.fe
        fe.bin += self.bytes_in
        fe.bout += self.bytes_out
        sc, self.sconn = self.sconn, None
        if sc is not None:
            sc.owner = None
            if a == "-":
                sc.close()
            else:
                sc.abort()
        if srv is not None:
            self.srv = None
            squeue.on_release(backend, srv)
        if self.transport is not None:
            if a == "-":
                self.transport.close()
            else:
                self.transport.abort()
        self.rt.sweeper.discard(self)
        self.rt.release(self)

    def _log(self, a: str, b: str, phase: int) -> None:
        fe = self.route.fe
        lg = fe.tcp_logger
        if lg is None:
            return
        if fe.cfg.dontlognull and self.bytes_in == 0 and self.bytes_out == 0:
            return
        now = self.rt.loop.time()
        if self.t_connected >= 0:
            tw = int((self.t_conn - self.t_accept) * 1000)
            tc = int((self.t_connected - self.t_conn) * 1000)
        elif self.t_conn or self.pending is not None or b == "Q":
            tw = int((now - self.t_accept) * 1000)
            tc = -1
        else:
            tw = tc = -1
        srv = self.srv
        backend = self.route.be.backend
        lg.log_tcp(TcpLogRecord(
            self.cip, self.cport, self.date, fe.log_name, backend.name,
            srv.name if srv is not None else "<NOSRV>", tw, tc, int((now - self.t_accept) * 1000),
            self.bytes_out, a + b, self.rt.actconn, fe.feconn, backend.beconn,
            srv.served if srv is not None else 0, self.fails, self.redispatched, self.q_srv, self.q_be))

    def soft_stop(self) -> None:
        """TCP connections finish by themselves; a parked or queued one closes now."""
        if self.phase in (WAIT, QUEUED):
            self._end("K", "Q" if self.phase == QUEUED else "R")

    def hard_close(self) -> None:
        self._end("K", "D")
