"""Servers' state and the backend that selects among them. Pure code: no I/O; the clock is passed in.

Rules (spec/haproxy.md §4.1, §6, §7, §9):
- One owner per state: the checker writes the operational state (``op``: up / down / stopping), admin commands write
  the admin state (``admin``: ready / drain / maint) and the user weight; both go through ``Backend.set_op``,
  ``set_admin`` and ``set_weight``, which update the balancers and tell every subscriber (logs, stats).
- A server is *usable* for load balancing iff its weight is > 0, it is neither DRAIN nor MAINT, and it is UP.
  STOPPING (NOLB after disable-on-404) and DOWN are not usable. A server without ``check`` is always UP.
  DRAIN, weight 0 and STOPPING servers remain valid targets for cookie persistence (see ``persistence.py``).
- The active group is used while at least one active server is usable; otherwise the first usable backup in
  declaration order, or every usable backup (same algorithm) with ``option allbackups``. Nothing usable → None.
- A server is *saturated* when it has a ``maxconn`` and either requests wait in its queue or ``served`` reached its
  dynamic limit: ``max(minconn, beconn x maxconn / fullconn)`` below ``fullconn`` backend connections, else maxconn.
- ``pick`` does not do persistence and does not change ``served``: the caller calls ``acquire``/``release`` around
  each request it sends to a server (they also reposition leastconn keys). ``source`` returns the hashed server even
  when it is saturated (HAProxy queues on it); check ``server.saturated``.
- ``served``, the queues and the traffic counters are plain attributes the stream code updates.
- With several worker processes, a server with a ``maxconn`` gets ``gserved`` (sharedstate.SharedServed): every
  ``acquire``/``release`` publishes this worker's ``served`` there, and ``saturated``/``occupancy`` read the sum
  over the workers, so the limit holds for the whole proxy (a slot freed by another worker is noticed by the
  worker's queue poller, workers.py). A server with a ``maxqueue`` gets ``gqueued`` the same way: queue.py
  publishes this worker's queue length on every change, and a full queue is judged on the sum.

Public API:
    Server: cfg backend name addr sid uweight admin op health hstate check_enabled served queue
            counters (stot bin bout econ eresp wretr wredis cli_abrt srv_abrt chkfail chkdown) hrsp lastchg
            check_status check_code check_info check_duration; properties usable, saturated, dyn_maxconn, is_backup
    Backend(cfg, clock=time.monotonic): cfg name servers queue counters (+ req_tot) beconn fullconn
        pick(client_ip, avoid=None) -> Server | None; has_usable(); any_unsaturated(); usable_counts()
        acquire(s); release(s); requeue_changed(s); set_op(s, op, reason=""); set_admin(s, admin);
        set_weight(s, w); subscribe(cb); server(name)
    ServerEvent: what ("op" | "admin" | "weight"), server, old, new, reason, had_usable, has_usable
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from balancier.proxy.balance import STATIC_ALGORITHMS, make_group_balancer, static_weight_divisor
from balancier.proxy.config.model import Proxy, ServerConfig
from balancier.proxy.health import HealthState
from balancier.proxy.pool import plain
from balancier.proxy.rawio import literal_family

AdminState = Literal["ready", "drain", "maint"]
OpState = Literal["up", "down", "stopping"]


class Counters:
    """Traffic counters shared by servers and backends (names as HAProxy's stats columns)."""

    __slots__ = ("stot", "bin", "bout", "econ", "eresp", "wretr", "wredis", "cli_abrt", "srv_abrt", "hrsp",
                 "req_tot", "chkfail", "chkdown", "dreq", "dresp", "ereq")

    def __init__(self) -> None:
        self.clear_counters()

    def clear_counters(self) -> None:
        self.stot = 0
        self.bin = 0
        self.bout = 0
        self.econ = 0
        self.eresp = 0
        self.wretr = 0
        self.wredis = 0
        self.cli_abrt = 0
        self.srv_abrt = 0
        self.hrsp = [0, 0, 0, 0, 0, 0]  # index 1..5 = 1xx..5xx, 0 = other
        self.req_tot = 0
        self.chkfail = 0
        self.chkdown = 0
        self.dreq = 0
        self.dresp = 0
        self.ereq = 0


class Server(Counters):
    __slots__ = ("cfg", "backend", "name", "addr", "sid", "uweight", "admin", "op", "hstate", "check_enabled",
                 "served", "queue", "lastchg", "check_status", "check_code", "check_info", "check_duration",
                 "gserved", "gqueued", "idle", "raw_family", "__weakref__")

    def __init__(self, cfg: ServerConfig, backend: Backend, sid: int, now: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.backend = backend
        self.name = cfg.name
        self.addr: tuple[str, int | None] = (cfg.host, cfg.port)
        self.sid = sid
        self.uweight = cfg.weight
        self.admin: AdminState = "maint" if cfg.disabled else "ready"
        self.op: OpState = "up"
        self.hstate: HealthState | None = (
            HealthState(cfg.rise, cfg.fall, cfg.inter, cfg.fastinter, cfg.downinter) if cfg.check else None
        )
        # `disable health` / `enable health` at run time: the checker skips a server whose checks are disabled.
        self.check_enabled = cfg.check
        self.served = 0
        self.gserved: Any = None  # sharedstate.SharedServed with several workers and a maxconn
        self.gqueued: Any = None  # the same for the queue's length, with several workers and a maxqueue
        self.queue: collections.deque[Any] = collections.deque()
        self.idle: collections.deque[Any] = collections.deque()  # pool.py: idle keep-alive connections to it
        # plain TCP to an address literal: the address family a connection for one request takes on the rawio
        # layer (serverside.py), else 0 (TLS, or a host name: the loop's own connect)
        self.raw_family = literal_family(cfg.host) if cfg.host and plain(self) else 0
        self.lastchg = now
        self.check_status = ""  # L4OK, L4CON, L7STS, ... ('' before the first check)
        self.check_code: int | None = None
        self.check_info = ""
        self.check_duration: int | None = None  # ms

    def __repr__(self) -> str:
        return f"<Server {self.backend.name}/{self.name} {self.op}/{self.admin} w={self.uweight}>"

    @property
    def health(self) -> int:
        return self.hstate.health if self.hstate is not None else 0

    @property
    def is_backup(self) -> bool:
        return self.cfg.backup

    @property
    def usable(self) -> bool:
        return self.uweight > 0 and self.admin == "ready" and self.op == "up"

    @property
    def dyn_maxconn(self) -> int:
        cfg = self.cfg
        maxconn = cfg.maxconn
        if not maxconn:
            return 0
        be = self.backend
        minconn = cfg.minconn or maxconn
        if minconn >= maxconn or not be.fullconn or be.beconn >= be.fullconn:
            return maxconn
        return max(minconn, be.beconn * maxconn // be.fullconn, 1)

    @property
    def occupancy(self) -> int:
        """Connections the server serves for the whole proxy (every worker), compared with its limit."""
        g = self.gserved
        return self.served if g is None else g.total()

    @property
    def saturated(self) -> bool:
        if not self.cfg.maxconn:
            return False
        if self.queue:
            return True
        g = self.gserved
        return (self.served if g is None else g.total()) >= self.dyn_maxconn


@dataclass(frozen=True, slots=True)
class ServerEvent:
    what: Literal["op", "admin", "weight"]
    server: Server
    old: Any
    new: Any
    reason: str = ""  # e.g. 'reason: Layer4 connection problem, info: "Connection refused", check duration: 0ms'
    had_usable: bool = True  # did the backend have a usable server before / after this change
    has_usable: bool = True


class Backend(Counters):
    __slots__ = ("cfg", "name", "servers", "queue", "clock", "beconn", "fullconn", "_by_name", "_act", "_bck",
                 "_actives", "_backups", "_n_act", "_n_bck", "_subscribers", "lastchg", "static", "_keyed")

    def __init__(self, cfg: Proxy, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.clock = clock
        now = clock()
        self.servers = [Server(sc, self, i + 1, now) for i, sc in enumerate(cfg.servers)]
        self.queue: collections.deque[Any] = collections.deque()
        self.beconn = 0
        # 0 = no dynamic limit; the runtime may set HAProxy's default (10% of the frontends' maxconn).
        self.fullconn = cfg.fullconn
        self.lastchg = now
        self._by_name = {s.name: s for s in self.servers}
        algo = cfg.balance.algorithm
        self.static = algo in STATIC_ALGORITHMS
        self._keyed = algo == "leastconn"  # the only balancer whose served_changed() does something
        wmult = static_weight_divisor([s.uweight for s in self.servers])
        self._actives = [s for s in self.servers if not s.cfg.backup]
        self._backups = [s for s in self.servers if s.cfg.backup]
        self._act = make_group_balancer(algo, self._actives, wmult)
        self._bck = make_group_balancer(algo, self._backups, wmult)
        self._subscribers: list[Callable[[ServerEvent], None]] = []
        self._n_act = 0
        self._n_bck = 0
        self._recount()

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self._n_act}+{self._n_bck} usable>"

    # --- selection (hot path) --------------------------------------------------------------------------------
    def pick(self, client_ip: str, avoid: Server | None = None) -> Server | None:
        if self._n_act:
            return self._act.pick(client_ip, avoid)  # type: ignore[no-any-return]
        if not self._n_bck:
            return None
        if not self.cfg.allbackups:
            # Only the first usable backup in declaration order takes traffic.
            for s in self._backups:
                if s.usable:
                    return None if s.saturated else s
            return None
        return self._bck.pick(client_ip, avoid)  # type: ignore[no-any-return]

    def has_usable(self) -> bool:
        return bool(self._n_act or self._n_bck)

    def any_unsaturated(self) -> bool:
        group = self._actives if self._n_act else self._backups
        return any(s.usable and not s.saturated for s in group)

    def usable_counts(self) -> tuple[int, int]:
        """(active, backup) servers usable for load balancing: the numbers in HAProxy's state messages."""
        return self._n_act, self._n_bck

    def acquire(self, s: Server) -> None:
        s.served += 1
        if s.gserved is not None:
            s.gserved.set(s.served)
        if self._keyed:
            self._group(s).served_changed(s)

    def release(self, s: Server) -> None:
        if s.served > 0:
            s.served -= 1
        if s.gserved is not None:
            s.gserved.set(s.served)
        if self._keyed:
            self._group(s).served_changed(s)

    def requeue_changed(self, s: Server) -> None:
        """Tell leastconn that a server's queue length changed."""
        self._group(s).served_changed(s)

    def server(self, name: str) -> Server:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"No such server '{name}' in backend '{self.name}'.") from None

    # --- state changes ----------------------------------------------------------------------------------------
    def subscribe(self, cb: Callable[[ServerEvent], None]) -> None:
        self._subscribers.append(cb)

    def set_op(self, s: Server, op: OpState, reason: str = "") -> None:
        if s.op == op:
            return
        old = s.op
        had = self.has_usable()
        s.op = op
        if op == "down":
            s.chkdown += 1
        self._changed(s, ServerEvent("op", s, old, op, reason, had, had))

    def set_admin(self, s: Server, admin: AdminState, reason: str = "") -> None:
        if s.admin == admin:
            return
        old = s.admin
        had = self.has_usable()
        s.admin = admin
        if old == "maint" and s.hstate is not None:
            # Leaving maintenance restarts the health counter at its start value (UP, one step from the edge).
            s.hstate.reset()
            s.op = "up"
        self._changed(s, ServerEvent("admin", s, old, admin, reason, had, had))

    def set_weight(self, s: Server, weight: int) -> None:
        if not 0 <= weight <= 256:
            raise ValueError("Weight must be between 0 and 256.")
        if self.static and weight not in (0, s.cfg.weight):
            raise ValueError("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.")
        if s.uweight == weight:
            return
        old = s.uweight
        had = self.has_usable()
        s.uweight = weight
        self._changed(s, ServerEvent("weight", s, old, weight, "", had, had))

    # --- internals --------------------------------------------------------------------------------------------
    def _group(self, s: Server) -> Any:
        return self._bck if s.cfg.backup else self._act

    def _recount(self) -> None:
        self._n_act = sum(1 for s in self._actives if s.usable)
        self._n_bck = sum(1 for s in self._backups if s.usable)

    def _changed(self, s: Server, ev: ServerEvent) -> None:
        now = self.clock()
        s.lastchg = now
        self._group(s).update(s)
        self._recount()
        has = self.has_usable()
        if has != ev.had_usable:
            self.lastchg = now
        ev = ServerEvent(ev.what, ev.server, ev.old, ev.new, ev.reason, ev.had_usable, has)
        for cb in list(self._subscribers):
            cb(ev)
