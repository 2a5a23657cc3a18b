"""The server side of an HTTP stream: choosing a server, queueing, connecting, retrying, redispatching.

Rules (HAProxy §8, §9, §11):
- Persistence first: a cookie-chosen server is used while it can take the request, else the request waits in
  that server's queue; a full `maxqueue` redispatches (with `option redispatch`) or gives 503 `sQ`.
- Otherwise the balancer picks; nothing usable → 503 `SC` (`<NOSRV>`); every usable server saturated → the
  backend queue. The slot is `acquire`d on the server before connecting; `queue.py` hands freed slots over.
- Connection reuse by `http-reuse`: `never` keeps a private connection per client connection; `safe` uses the
  pool except for the first request of a client connection; `aggressive` also for first requests but only with
  connections that already carried a request; `always` any idle connection. SCL/CLO never reuse.
- Only connect failures are retried (`retries N`): the turn-around delay `min(1 s, timeout connect)` precedes a
  retry on the same server after a real error (not after a connect timeout); `should_redispatch` decides when the
  retry moves to another server (no delay, `+` in the log, persistence broken: cookie flag D).
- A connect is `pool.connect` (plain TCP, or TLS for `server ... ssl`) stepped by `Connect`, not by an asyncio
  Task: one connect per request in `option httpclose` makes the Task's own cost (creation, registration, one
  more loop turn) worth saving. `Connect` reports like a Task (`cancel`, `cancelled`, `exception`, `result`).
- This is a mixin of `HttpStream` (stream.py): it reads and writes the stream's per-request attributes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from balancier.proxy import queue as squeue
from balancier.proxy.pool import ServerConn, connect
from balancier.proxy.rawio import RawConnect

if TYPE_CHECKING:
    from balancier.proxy.runtime import Route, Runtime
    from balancier.proxy.servers import Server

# stream phases (shared with stream.py)
IDLE, QUEUED, TURNAROUND, CONNECTING, ACTIVE, TUNNEL, CLOSED = range(7)
R_HEAD, R_BODY = 0, 1
PAUSE_SRV_FULL, PAUSE_PIPELINE, PAUSE_PARKED = 1, 2, 4
KAL, SCL, CLO = "kal", "scl", "clo"
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))


class ServerSide:
    """Server choice and connection management for `HttpStream`."""

    if not TYPE_CHECKING:  # the state lives in HttpStream's slots (the type checker reads the declarations)
        __slots__ = ()

    # state owned by HttpStream (declared here for the type checker)
    rt: Runtime
    route: Route
    phase: int
    cip: str
    transport: Any
    dport: int
    nreq: int
    cpause: int
    c_write_paused: bool
    private: ServerConn | None
    t_phase: float
    pers: Any
    head: Any  # the request head (http1.RequestHead)
    ck_req: str
    srv: Server | None
    prev_srv: Server | None
    direct: bool
    fails: int
    redispatched: bool
    pending: squeue.Pending | None
    q_srv: int
    q_be: int
    task: Connect | None
    turn: asyncio.TimerHandle | None
    sconn: ServerConn | None
    reused: bool
    out: bytes
    replay: bytes | None
    rstate: int
    s_last: float
    s_read_paused: bool
    t_conn: float
    t_connected: float

    if TYPE_CHECKING:  # implemented by HttpStream or the other mixin; declared only for the type checker

        def _fail(self, status: int, a: str, b: str) -> None:
            ...

        def _resume_client(self, why: int) -> None:
            ...

        def _pause_client(self, why: int) -> None:
            ...

    def _assign(self, persistent: Server | None) -> None:
        be = self.route.be
        backend = be.backend
        if persistent is not None:
            self.direct = True
            srv = persistent
            if srv.saturated:
                if squeue.server_queue_full(srv):
                    if self.route.redispatch is not None:
                        self._break_persistence()
                        self._assign(None)
                        return
                    self._fail(503, "s", "Q")
                    return
                self._enqueue(srv)
                return
            backend.acquire(srv)
            self._use_server(srv)
            return
        picked = backend.pick(self.cip, self.prev_srv)
        if picked is None:
            if backend.has_usable():
                self._enqueue(None)
                return
            self._fail(503, "S", "C")
            return
        # hash algorithms return their server even when it is saturated: wait for it (only a server with a
        # maxconn can be saturated; the test first spares the usual request a property call)
        if picked.cfg.maxconn and picked.saturated:
            self._enqueue(picked)
            return
        backend.acquire(picked)
        self._use_server(picked)

    def _break_persistence(self) -> None:
        """A redispatch broke cookie persistence: flag D, and insert mode will issue a new cookie."""
        if self.direct and self.pers is not None:
            self.pers.redispatched()
            self.ck_req = self.pers.flag
        self.direct = False

    def _enqueue(self, srv: Server | None) -> None:
        now = self.rt.loop.time()
        be = self.route.be.backend
        self.pending = squeue.enqueue(self, now, be, srv)
        # HAProxy logs the queue lengths seen when the request entered them, itself included
        self.q_srv = len(srv.queue) if srv is not None else 0
        self.q_be = len(be.queue)
        self.phase = QUEUED
        self.t_phase = now

    def dequeued(self, server: Server) -> None:
        """queue.py gave us a slot on `server` (already acquired)."""
        self.pending = None
        if self.phase != QUEUED:  # raced with our own end: give the slot back
            self._release_server(server)
            return
        self._use_server(server)

    def _use_server(self, srv: Server) -> None:
        self.srv = srv
        route = self.route
        mode = route.reuse
        conn: ServerConn | None = None
        if route.conn_mode == KAL:
            if mode == "never":
                p = self.private
                if p is not None and p.server is srv and p.alive:
                    conn = p
                self.private = None
                if conn is None and p is not None:
                    p.close()
            elif mode == "always" or (mode == "safe" and self.nreq > 1):
                conn = self.rt.pool.get(srv)
            elif mode == "aggressive":
                conn = self.rt.pool.get(srv, 1 if self.nreq > 1 else 2)
        if conn is not None:
            now = self.rt.loop.time()
            self.t_conn = now
            self.t_connected = now
            self.reused = True
            self._attach(conn, now)
            return
        self._connect()

    def _connect(self) -> None:
        srv = self.srv
        assert srv is not None
        rt = self.rt
        now = rt.loop.time()
        self.phase = CONNECTING
        self.t_phase = self.t_conn = now
        self.reused = False
        host, port = srv.addr
        if port is None:  # a server without a port: the port the client connected to (HAProxy semantics)
            port = self._client_port()
        io = rt.io
        attempt: Any
        if io is not None and srv.raw_family and self.route.conn_mode != KAL:
            # a plain connection for one request (SCL, CLO) to an address literal: on the runtime's rawio layer
            # (the request goes with the connect: sent at once when the handshake is over, see RawConnect)
            attempt = RawConnect(io, ServerConn, srv, host, port, srv.raw_family, self._connected, self.out)
        else:  # pool.connect: TLS for `server ... ssl` (SNI possibly from this request's Host), or the loop's TCP
            attempt = Connect(rt.loop, connect(rt.loop, srv, host, port, self.head), self._connected)
        self.task = attempt
        attempt.start()

    def _client_port(self) -> int:
        if not self.dport:
            sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
            self.dport = sock[1] if sock else 0
        return self.dport

    def _connected(self, task: Connect | RawConnect) -> None:
        # reads the attempt's outcome from its slots: this runs once per connect (a call per request in
        # `option httpclose`), and cancelled()/exception()/result() would be three more calls
        exc = task.error
        if task is not self.task:  # a cancelled attempt
            if exc is None:
                task.value[0].close()
            return
        self.task = None
        if exc is not None:
            if not isinstance(exc, asyncio.CancelledError):
                self._connect_failed(timeout=False)
            return
        now = self.t_connected = self.rt.loop.time()
        self._attach(task.value[1], now, task.sent)

    def _attach(self, conn: ServerConn, now: float, sent: bool = False) -> None:
        """Start the request on `conn`: its bytes (`out`) go out now, unless the connect `sent` them already."""
        self.sconn = conn
        # HttpStream implements the ConnOwner callbacks; no typing.cast(): it is a call per request
        conn.owner = self  # type: ignore[assignment]
        conn.uses += 1
        self.phase = ACTIVE
        self.rstate = R_HEAD
        self.s_last = now
        self.t_phase = now
        out = self.out
        self.out = b""
        self.replay = out if self.reused else None
        if conn.write_paused:
            # its queue is past the high-water mark already (what a connect sent with it, before this stream
            # owned it and could hear pause_writing): hold the client until it drains
            self._pause_client(PAUSE_SRV_FULL)
        elif self.cpause & PAUSE_SRV_FULL:
            self._resume_client(PAUSE_SRV_FULL)
        if self.c_write_paused and conn.transport is not None:
            self.s_read_paused = True
            conn.transport.pause_reading()
        assert conn.transport is not None
        if not sent:
            conn.transport.write(out)

    def _connect_failed(self, timeout: bool) -> None:
        srv = self.srv
        assert srv is not None
        self.fails += 1
        step, delay = after_connect_failure(self.route, srv, self.fails, self.direct, timeout)
        if step == GIVE_UP:
            self.fails -= 1
            self._fail(503, "s" if timeout else "S", "C")
            return
        if step == REDISPATCH:
            self.redispatched = True
            self._break_persistence()
            self.prev_srv = srv
            self.srv = None
            self._release_server(srv)
            self._assign(None)
            return
        if delay <= 0:
            self._connect()
            return
        self.phase = TURNAROUND
        self.turn = self.rt.loop.call_later(delay, self._turnaround_done)

    def _turnaround_done(self) -> None:
        self.turn = None
        if self.phase == TURNAROUND:
            self._connect()

    def _release_server(self, srv: Server) -> None:
        squeue.release(self.route.be.backend, srv)

class Connect:
    """One server connect (`loop.create_connection`) driven without an asyncio Task.

    A Task per connect costs its creation, its registration in asyncio's task set (Python code in 3.11) and an
    extra turn of the loop before the connect starts; this driver steps the coroutine itself, as a Task would:
    the first step runs at `start()`, then on each awaited future's completion. It offers what the stream uses of
    a Task: `cancel()` (cancels the awaited future; the coroutine then closes its transport and ends with
    CancelledError), `cancelled()`, `exception()`, `result()` (or the slots `value` and `error`, which the
    stream reads directly), and calls `done(self)` once, when it ends. As with a Task, `done` never runs inside
    `start()`: an attempt that ends at once (an address refused before any wait) reports on the next loop turn,
    so the stream never re-enters its own connect (or a queue hand-over) while still inside it."""

    __slots__ = ("loop", "coro", "done", "fut", "value", "error", "cancelling", "finished", "starting")
    sent = False  # the request is the stream's to send (RawConnect may have sent it with the connect)

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Any, done: Callable[[Connect], None]) -> None:
        self.loop = loop
        self.coro = coro
        self.done = done
        self.fut: Any = None  # the future the coroutine waits for
        self.value: Any = None  # the coroutine's result, once it returned
        self.error: BaseException | None = None  # what it raised instead (CancelledError when cancelled)
        self.cancelling = False
        self.finished = False
        self.starting = False

    def start(self) -> None:
        self.starting = True
        try:
            self._step(None)
        finally:
            self.starting = False

    def _step(self, _fut: Any) -> None:
        self.fut = None
        try:
            if self.cancelling:  # cancelled while no future was awaited (a bare yield)
                r = self.coro.throw(asyncio.CancelledError())
            else:
                r = self.coro.send(None)
        except StopIteration as e:  # the usual end: connected
            self.value = e.value
            self._end()
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # CancelledError included: it is this attempt's outcome
            self.error = e
            self._end()
            return
        if r is None:  # a bare yield: step again on the next turn, as a Task does
            self.loop.call_soon(self._step, None)
        else:
            r._asyncio_future_blocking = False
            self.fut = r
            if self.cancelling:
                r.cancel()
            r.add_done_callback(self._step)

    def _end(self) -> None:
        self.finished = True
        self.coro = None
        if self.starting:
            self.loop.call_soon(self.done, self)
        else:
            self.done(self)

    def cancel(self) -> None:
        if self.finished or self.cancelling:
            return
        self.cancelling = True
        if self.fut is not None:
            self.fut.cancel()  # the coroutine sees CancelledError at its await, cleans up and ends

    def cancelled(self) -> bool:
        return isinstance(self.error, asyncio.CancelledError)

    def exception(self) -> BaseException | None:
        return None if self.cancelled() else self.error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


GIVE_UP, REDISPATCH, RETRY = "give up", "redispatch", "retry"


def after_connect_failure(route: Route, srv: Server, fails: int, direct: bool, timeout: bool) -> tuple[str, float]:
    """What follows connect failure number `fails` on `srv` (§8), for HTTP and TCP streams alike: GIVE_UP once
    `retries` is exhausted; REDISPATCH to another server; or RETRY the same server after the turn-around delay
    (`min(1 s, timeout connect)` after a real error, none after a connect timeout). Counts econ/wretr/wredis;
    econ only when giving up, as HAProxy's failed_conns (a retried or redispatched connect is not an error)."""
    backend = route.be.backend
    if fails > route.retries:
        srv.econ += 1
        backend.econ += 1
        return GIVE_UP, 0.0
    if should_redispatch(route, srv, fails, direct):
        srv.wredis += 1
        backend.wredis += 1
        return REDISPATCH, 0.0
    srv.wretr += 1
    backend.wretr += 1
    return RETRY, 0.0 if timeout else min(1.0, route.t_connect or 1.0)


def should_redispatch(route: Route, srv: Server, retry: int, direct: bool) -> bool:
    """HAProxy's redispatch test for retry number `retry` (1-based) after a connect failure on `srv` (§8)."""
    rd = route.redispatch
    if rd is None or rd == 0:
        return False
    if srv.op != "up" or srv.admin == "maint":
        return True
    if rd > 0 and retry % rd == 0:
        return True
    if rd < 0:
        every = route.retries + 1 + rd
        if every > 0 and retry % every == 0:
            return True
    return (not direct) and route.be.active_usable() > 1 and not route.hash_algo
