"""One worker process of `balancier proxy` with several workers: serve the inherited sockets, share state.

Rules:
- A worker is forked by the master (master.py) after every listening socket is bound, so all workers accept on
  the same sockets (the kernel queues new connections once, whichever worker takes them). It builds its own
  runtime and event loop after the fork (an event loop does not survive a fork), then chroots and drops to
  gid/uid unless the master did it already, then tells the master it is ready.
- One owner per state: worker 0 of the current generation runs the health checks and serves the stats sockets;
  every server state change it makes (check transitions, runtime API commands) is sent to the master at once,
  and its check details (health counter, last check status) every `STATE_SYNC` seconds; the master relays them
  to the other workers, which apply them (sharedstate.apply): every worker sees a change within milliseconds,
  well within one check interval. A change asked on another worker (an admin action of the stats page) is
  applied there at once and forwarded to the owner through the master, which runs it and relays the result.
  After any change it runs, the owner sends the states that changed at once (also for changes that fire no server
  event, like `set maxconn server`), and relays `clear counters` and `shutdown sessions server` so every worker
  does them on its own counters and streams. `show sess` on the owner lists its own streams and gathers the
  others' through the master (`sess?` out, one `sess-n` with the number of workers asked, then `sess` packets of
  at most `SESS_ROWS` streams each); the owner waits for them on its channel, handling whatever else arrives
  meanwhile, for at most `GATHER_TIMEOUT` (an admin command may hold the owner's loop that long; a worker that
  does not answer in time is left out).
- Counters: each worker publishes its counters into its shared-memory slot (sharedstate.CounterSlot) within
  `CHANGE_POLL` (10 ms) of a change of its frontends' counters, at least every `sharedstate.PUBLISH_INTERVAL`
  seconds, and when it stops; views sum the slots.
- Accepting in turn: each worker's frontends write their connection counts into the generation's shared array
  (`conns`, one slot per worker), and a worker holding more than its share stops accepting there (runtime.py).
- Fair balancing across workers: each worker has its own FWRR (roundrobin / static-rr) state. Worker i of n
  starts its cycle `i * W // n` picks ahead (W = the summed weights of the usable active servers), so the
  workers' sequences are shifted copies of one cycle: whatever worker a request lands on, every server receives
  its weight's share of each cycle, and the first requests of a freshly started set of workers are spread over
  different servers instead of all going to the first one. Other algorithms need no offset (leastconn reads
  per-worker connection counts, source hashing is the same function everywhere).
- Stops: SIGUSR1 soft stop (idle connections close at once, as HAProxy), SIGTERM/SIGINT hard stop, SIGTTOU/SIGTTIN
  pause/resume, SIGHUP dumps states (worker 0 only). The master's `stop` message is the soft stop of a reload:
  listeners stop accepting (the shared sockets stay open for the new workers), idle keep-alive connections stay
  until their next request (answered with `Connection: close`) or their keep-alive timeout, the stats sockets stop
  at once; `hard-stop-after` bounds it all. If the master disappears (its channel closes), the worker soft-stops.

Public API:
    WorkerContext(...); run_worker(ctx) -> int (exit code)
    ForwardingApi (a RuntimeApi that sends changes to the owner)
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import time
from dataclasses import astuple, dataclass, field
from typing import Any

from balancier.proxy import sharedstate
from balancier.proxy.eventloop import new_loop
from balancier.proxy.process import StartError, drop_privileges, say
from balancier.proxy.runtime_api import RuntimeApi, RuntimeHooks, Session, SessionInfo

STATE_SYNC = 0.5  # seconds between two sends of the owner's check details
CHANGE_POLL = 0.01  # seconds between two looks at the counters (publish when they changed)
QUEUE_POLL = 0.01  # seconds between two looks at slots freed by other workers (only with queued requests)
GATHER_TIMEOUT = 0.5  # seconds the owner waits for the other workers' streams (`show sess`)
SESS_ROWS = 200  # streams per `sess` packet (~30 KB: well under one SOCK_SEQPACKET datagram the reader takes)
_CHANGE_WORDS = ("set", "enable", "disable", "shutdown")


@dataclass
class WorkerContext:
    config: Any
    listeners: dict[str, list[Any]]  # frontend name -> Listener with an inherited socket
    stats_socks: dict[str, socket.socket]  # stats socket address -> inherited listening socket
    index: int
    count: int
    generation: int
    channel: socket.socket | None
    counters: sharedstate.SharedCounters | None
    served: sharedstate.SharedServed | None = None
    queued: sharedstate.SharedServed | None = None  # server queue lengths, for maxqueue across workers
    conns: sharedstate.SharedServed | None = None  # frontends' live connections, for accepting in turn
    states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    carry: bool = True  # states come from an older configuration (reload rules) or from this one (replacement)
    restore: bool = False  # this worker replaces a dead one: start from its slot's counters
    debug: bool = False
    drop: tuple[str | None, int | None, int | None] | None = None  # (chroot, uid, gid) still to do


def _say(level: str, msg: str) -> None:
    say(level, msg)


class Channel:
    """The worker's end of its SOCK_SEQPACKET socketpair with the master: one JSON message per packet."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def send(self, msg: dict[str, Any]) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send(json.dumps(msg, separators=(",", ":")).encode())
        except (BlockingIOError, InterruptedError):
            _say("WARNING", f"worker {os.getpid()}: channel to the master is full, message dropped")
        except OSError:
            self.sock = None


class ForwardingApi(RuntimeApi):
    """The runtime API of a worker that does not own server state: reading commands run here on the summed
    view; a change runs here and is sent to the owner (through the master), which relays it to every worker."""

    channel: Channel | None = None

    def run(self, words: list[str], sess: Session) -> str:
        if words and words[0] in _CHANGE_WORDS and self.channel is not None:
            # applied here at once (the page that follows shows it, errors are answered) and by the owner, who
            # relays it to every worker: the owner's word is the one that lasts
            out = super().run(words, sess)
            if not out:
                line = " ".join(w.replace("\\", "\\\\").replace(";", "\\;").replace(" ", "\\ ") for w in words)
                self.channel.send({"t": "cmd", "line": line})
            return out
        if words[:2] == ["clear", "counters"] and self.channel is not None:
            out = super().run(words, sess)
            if not out:
                self.channel.send({"t": "clear", "all": words[2:3] == ["all"]})
            return out
        return super().run(words, sess)


class OwnerApi(RuntimeApi):
    """The runtime API of the state owner (its stats sockets and stats page): after a change, the states that
    changed go to the other workers at once (a change that fires no server event, like `set maxconn server`,
    included), and `clear counters` / `shutdown sessions server` are relayed so that every worker does them."""

    worker: _Worker | None = None

    def run(self, words: list[str], sess: Session) -> str:
        out = super().run(words, sess)
        if not out and words and self.worker is not None:
            self.worker.after_change(words)
        return out


class _Worker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.channel = Channel(ctx.channel)
        self.owner = ctx.index == 0
        self.rt: Any = None
        self.slot: sharedstate.CounterSlot | None = None
        self.stats_servers: list[Any] = []
        self.owner_api: RuntimeApi | None = None
        self.sent: dict[tuple[str, str], dict[str, Any]] = {}
        self.applying = False
        self.reloading = False
        self.limited: set[str] = set()  # backends with servers whose maxconn is counted across workers
        self._last_fp: tuple[int, ...] = ()
        self._last_pub = 0.0
        self._gather_id = 0

    # --- build --------------------------------------------------------------------------------------------------
    def build(self, loop: asyncio.AbstractEventLoop) -> None:
        from balancier.proxy.runtime import BALANCE_SLACK, Runtime, WorkerRole

        ctx = self.ctx
        rt = Runtime(ctx.config, loop, ctx.listeners, debug=ctx.debug, role=WorkerRole(ctx.index, ctx.count))
        self.rt = rt
        self._apply_states(ctx.states, ctx.carry)
        self._offset_balancers()
        backends = [b.backend for b in rt.backends.values()]
        if ctx.counters is not None:
            self.slot = sharedstate.CounterSlot(ctx.counters, ctx.index, rt.frontends, backends)
            if ctx.restore:
                self.slot.restore()
        self._share_limits(backends)
        if ctx.conns is not None:  # accepting in turn (runtime.py); a replaced worker's connections are gone
            for pos, fe in enumerate(rt.frontends):
                fe.gview, fe.gown, fe.gall = ctx.conns.column(ctx.index, pos)
                fe.gview[fe.gown] = 0
                fe.gcount = ctx.count
                fe.gslack = BALANCE_SLACK * ctx.count
        self._start_stats(loop, backends)
        if self.owner:
            for be in backends:
                be.subscribe(self._on_event)

    def _share_limits(self, backends: list[Any]) -> None:
        """Servers with a maxconn count their connections across the workers (servers.py `gserved`)."""
        by_name = {b.name: b for b in backends}
        queued = self.ctx.queued
        if queued is not None:
            for pos, (bname, sname) in enumerate(sharedstate.queued_servers(self.ctx.config)):
                s = by_name[bname].server(sname)
                s.gqueued = queued.handle(self.ctx.index, pos)
                s.gqueued.set(0)  # a replaced worker's waiters are gone
        shared = self.ctx.served
        if shared is None:
            return
        for pos, (bname, sname) in enumerate(sharedstate.limited_servers(self.ctx.config)):
            s = by_name[bname].server(sname)
            s.gserved = shared.handle(self.ctx.index, pos)
            s.gserved.set(0)  # a replaced worker's connections are gone
            self.limited.add(bname)

    def poll_queues(self) -> None:
        """Requests waiting for a server slot that another worker freed: look every QUEUE_POLL seconds."""
        from balancier.proxy import queue as squeue

        rt = self.rt
        if rt is None or rt.done.done():
            return
        for be in rt.backends.values():
            b = be.backend
            if b.name not in self.limited:
                continue
            if b.queue or any(s.queue for s in b.servers):
                for s in b.servers:
                    if s.queue or (b.queue and s.usable):
                        squeue.on_release(b, s)
        rt.loop.call_later(QUEUE_POLL, self.poll_queues)

    def _apply_states(self, states: dict[tuple[str, str], dict[str, Any]], carry: bool) -> None:
        if not states:
            return
        self.applying = True
        try:
            for be in self.rt.backends.values():
                for s in be.backend.servers:
                    snap = states.get((be.backend.name, s.name))
                    if snap is None:
                        continue
                    if carry:
                        snap = sharedstate.carry_over(snap, s)
                    sharedstate.apply(be.backend, s, snap)
        finally:
            self.applying = False

    def _offset_balancers(self) -> None:
        ctx = self.ctx
        if ctx.count <= 1 or ctx.index == 0:
            return
        for be in self.rt.backends.values():
            b = be.backend
            if b.cfg.balance.algorithm not in ("roundrobin", "static-rr"):
                continue
            total = sum(s.uweight for s in b.servers if s.usable and not s.is_backup)
            for _ in range(ctx.index * total // ctx.count):
                if b.pick("") is None:
                    break

    def _start_stats(self, loop: asyncio.AbstractEventLoop, backends: list[Any]) -> None:
        rt = self.rt
        ctx = self.ctx
        g = ctx.config.global_
        if not g.stats_sockets and not rt.serves_stats():
            return
        from balancier import __version__
        from balancier.proxy.runtime_api import hooks_for_runtime, info_for_runtime
        from balancier.proxy.stats import StatsView
        from balancier.proxy.statsock import StatsSocketServer

        view = StatsView(rt.frontends, backends, ctx.config.proxies, first_id=2)
        if self.slot is not None:
            view.totals = self.slot.totals
        info = info_for_runtime(rt, time.time(), time.monotonic(), __version__, view=view, nbthread=ctx.count)

        def make_api(level: str) -> RuntimeApi:
            """The owner's API (changes relayed after they run) or, on another worker, the forwarding one."""
            api: OwnerApi | ForwardingApi
            if self.owner:
                own = hooks_for_runtime(rt)
                assert own.sessions is not None
                own_sessions = own.sessions
                hooks = RuntimeHooks(sessions=lambda: [*own_sessions(), *self.gather_sessions()],
                                     shutdown_sessions=own.shutdown_sessions)
                api = OwnerApi(backends, rt.frontends, info, level, proxies=ctx.config.proxies, hooks=hooks,
                               view=view)
                api.worker = self
            else:
                api = ForwardingApi(backends, rt.frontends, info, level, proxies=ctx.config.proxies,
                                    hooks=hooks_for_runtime(rt), view=view)
                api.channel = self.channel
            return api

        if rt.serves_stats():
            import balancier.proxy.statsapplet  # noqa: F401  (imported before a chroot)

            rt.attach_stats(view, info, make_api("admin"))
        if not self.owner:
            return
        for sock_cfg in g.stats_sockets:
            api = make_api(sock_cfg.level)
            self.owner_api = self.owner_api or api
            server = StatsSocketServer(sock_cfg.address, sock_cfg.mode if sock_cfg.mode is not None else 0o600,
                                       sock_cfg.level, api, timeout=g.stats_timeout / 1000, maxconn=g.stats_maxconn,
                                       sock=ctx.stats_socks.get(sock_cfg.address))
            try:
                loop.run_until_complete(server.start())
            except OSError as e:
                raise StartError(f"{sock_cfg.where}: cannot serve stats socket '{sock_cfg.address}': "
                                 f"{e.strerror}") from None
            self.stats_servers.append(server)
        if self.owner_api is None:
            self.owner_api = make_api("admin")

    # --- state owner --------------------------------------------------------------------------------------------
    def _on_event(self, ev: Any) -> None:
        if not self.applying:
            self._send_state(ev.server, force=True)

    def _send_state(self, s: Any, force: bool = False) -> None:
        snap = sharedstate.snapshot(s)
        key = (snap["be"], snap["srv"])
        if not force and self.sent.get(key) == snap:
            return
        self.sent[key] = snap
        self.channel.send({"t": "state", "snap": snap})

    def after_change(self, words: list[str]) -> None:
        """The owner ran a command that succeeded (its socket, its page, or one forwarded by another worker)."""
        if words[:2] == ["clear", "counters"]:
            self.channel.send({"t": "clear", "all": words[2:3] == ["all"]})
            return
        if words[0] not in _CHANGE_WORDS or self.rt is None:
            return
        if words[:3] == ["shutdown", "sessions", "server"] and len(words) > 3 and "/" in words[3]:
            be, _, srv = words[3].partition("/")
            self.channel.send({"t": "kill", "be": be, "srv": srv})
        for be_route in self.rt.backends.values():  # only what changed goes out (_send_state compares)
            for s in be_route.backend.servers:
                self._send_state(s)

    def _server(self, be_name: str, srv_name: str) -> tuple[Any, Any] | None:
        """(backend, server) of this worker's runtime by names, None when this configuration has no such one."""
        be = self.rt.backends.get(be_name)
        if be is None:
            return None
        try:
            return be.backend, be.backend.server(srv_name)
        except KeyError:
            return None

    def _sync_states(self) -> None:
        if self.rt is None or self.rt.done.done() or self.reloading:
            return
        for be in self.rt.backends.values():
            for s in be.backend.servers:
                self._send_state(s)
        self.rt.loop.call_later(STATE_SYNC, self._sync_states)

    # --- show sess across workers -------------------------------------------------------------------------------
    def gather_sessions(self) -> list[SessionInfo]:
        """The other workers' streams, for the owner's `show sess` (see the module rules)."""
        sock = self.channel.sock
        if sock is None or self.ctx.count <= 1:
            return []
        self._gather_id += 1
        gid = self._gather_id
        self.channel.send({"t": "sess?", "id": gid})
        out: list[SessionInfo] = []
        expect: int | None = None
        done = 0
        deadline = time.monotonic() + GATHER_TIMEOUT
        while expect is None or done < expect:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            if not data:
                break  # the master is gone: the loop's reader sees the end too
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if msg.get("id") == gid and msg.get("t") == "sess-n":
                expect = int(msg.get("n", 0))
            elif msg.get("id") == gid and msg.get("t") == "sess":
                out.extend(SessionInfo(*row) for row in msg.get("rows", []))
                done += 1 if msg.get("last") else 0
            else:
                self._handle(msg)
        return out

    def _send_sessions(self, gid: Any) -> None:
        """This worker's streams, asked by the owner through the master."""
        from balancier.proxy.runtime_api import hooks_for_runtime

        sessions = hooks_for_runtime(self.rt).sessions
        assert sessions is not None
        rows = [astuple(si) for si in sessions()]  # SessionInfo(*row) on the owner's side
        for start in range(0, max(1, len(rows)), SESS_ROWS):
            self.channel.send({"t": "sess", "id": gid, "rows": rows[start:start + SESS_ROWS],
                               "last": start + SESS_ROWS >= len(rows)})

    # --- messages from the master -------------------------------------------------------------------------------
    def on_channel(self) -> None:
        sock = self.channel.sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.rt.loop.remove_reader(sock.fileno())
                self.channel.sock = None
                if not self.rt.stopping:
                    _say("WARNING", f"worker {os.getpid()}: the master is gone, stopping")
                    self.rt.soft_stop()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            self._handle(msg)

    def _handle(self, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        rt = self.rt
        if t == "state":
            snap = msg["snap"]
            found = self._server(snap["be"], snap["srv"])
            if found is None:
                return
            self.applying = True
            try:
                sharedstate.apply(found[0], found[1], snap)
            finally:
                self.applying = False
        elif t == "cmd" and self.owner and self.owner_api is not None:
            self.owner_api.execute(msg["line"], Session(level="admin"))
        elif t == "clear":
            self._clear(bool(msg.get("all")))
        elif t == "sess?" and not self.owner:
            self._send_sessions(msg.get("id"))
        elif t == "kill":  # `shutdown sessions server` relayed by the owner: this worker's own streams
            found = self._server(str(msg.get("be")), str(msg.get("srv")))
            if found is not None:
                from balancier.proxy.runtime_api import hooks_for_runtime

                shutdown = hooks_for_runtime(rt).shutdown_sessions
                assert shutdown is not None
                shutdown(found[1])
        elif t == "stop":
            self.reloading = True
            for server in self.stats_servers:
                rt.loop.create_task(server.stop())
            self.stats_servers = []
            if rt.checker is not None:
                try:
                    rt.checker.stop()
                except Exception as e:  # the stop must go on
                    _say("WARNING", f"checker stop failed: {e}")
                rt.checker = None
            rt.soft_stop(close_idle=False)

    def _clear(self, everything: bool) -> None:
        rt = self.rt
        objs: list[Any] = list(rt.frontends)
        for be in rt.backends.values():
            objs.append(be.backend)
            objs.extend(be.backend.servers)
        for o in objs:
            if everything:
                o.clear_counters()
            for attr in ("smax", "qmax"):
                if hasattr(o, attr):
                    setattr(o, attr, 0)
        self._publish()

    # --- counters -------------------------------------------------------------------------------------------------
    def _publish(self) -> None:
        if self.slot is not None:
            self.slot.publish()

    def _fingerprint(self) -> tuple[int, ...]:
        return tuple(x for fe in self.rt.frontends for x in (fe.stot, fe.req_tot, fe.bin, fe.bout, fe.feconn))

    def _publish_loop(self) -> None:
        """Publish every PUBLISH_INTERVAL, and within CHANGE_POLL of a change of the frontends' counters (a
        cheap look), so that the counters of a quiet worker are fresh soon after its last request."""
        rt = self.rt
        if rt is None or rt.done.done():
            return
        now = rt.loop.time()
        fp = self._fingerprint()
        if fp != self._last_fp or now - self._last_pub >= sharedstate.PUBLISH_INTERVAL:
            self._publish()
            self._last_fp = fp
            self._last_pub = now
        rt.loop.call_later(CHANGE_POLL, self._publish_loop)


def run_worker(ctx: WorkerContext) -> int:
    """Serve until stopped; the exit code."""
    loop, _ = new_loop()
    asyncio.set_event_loop(loop)
    w = _Worker(ctx)
    try:
        try:
            w.build(loop)
            if ctx.drop is not None:
                drop_privileges(*ctx.drop)
        except StartError as e:
            w.channel.send({"t": "failed", "msg": str(e)})
            return 1
        rt = w.rt
        if w.channel.sock is not None:
            w.channel.sock.setblocking(False)
            loop.add_reader(w.channel.sock.fileno(), w.on_channel)
        loop.add_signal_handler(signal.SIGUSR1, rt.soft_stop)
        loop.add_signal_handler(signal.SIGTERM, rt.hard_stop)
        loop.add_signal_handler(signal.SIGINT, rt.hard_stop)
        loop.add_signal_handler(signal.SIGTTOU, rt.pause_listeners)
        loop.add_signal_handler(signal.SIGTTIN, rt.resume_listeners)
        loop.add_signal_handler(signal.SIGHUP, rt.dump_states if w.owner else (lambda: None))

        async def start() -> None:
            rt.start()

        loop.run_until_complete(start())
        _tune_gc()
        w._publish_loop()
        if w.limited:
            w.poll_queues()
        if w.owner:
            w._sync_states()
        w.channel.send({"t": "ready", "pid": os.getpid()})
        code = loop.run_until_complete(rt.done)
        for server in w.stats_servers:
            loop.run_until_complete(server.stop())
        loop.run_until_complete(rt.finish())  # late accepts are served, closing transports flush
        w._publish()
        return int(code)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            pass
        loop.close()


def _tune_gc() -> None:
    """As main.py's: what lives as long as the process leaves the collector's reach. The master collected and
    froze its heap before forking, so no full collection here (it would also copy every shared page)."""
    import gc

    gc.freeze()
    gc.set_threshold(20000, 20, 20)
