"""The running data plane: frontends, backends and routes built from the configuration, connection admission, stops.

Rules:
- Built once from a `Config` after the listeners are bound (and after the daemon fork: loggers remember their pid).
- A `Route` is a frontend + the backend it sends to, with every setting the stream needs precomputed (the stronger
  connection mode of the two, timeouts in seconds with HAProxy's fallbacks, forwardfor, reuse, retries) so the hot
  path reads plain attributes.
- Admission (HAProxy §9): the global and frontend `maxconn` count client connections. When a limit is reached the
  listeners concerned stop accepting (clients wait in the kernel backlog) and resume below it. A connection that
  slipped in past the limit (several accepts per loop turn) is parked unread until a slot frees. A release
  looks at the parked and the listeners only when something is parked or a frontend paused (`limited`).
- `streams` is the set of live client connections (admitted or parked) and the sweeper's set too (timers.py):
  admission and release are all the registration a connection needs.
- Soft stop (SIGUSR1): listeners close, idle connections close, busy ones finish their current response (with
  `Connection: close`) and the process exits when the last one is gone, or at `hard-stop-after`. Hard stop
  (SIGTERM/SIGINT): everything closes now. Both end with exit code 0. The soft stop of a reload
  (`soft_stop(close_idle=False)`, HAProxy's `idle-close-on-response`) leaves idle keep-alive connections open: each
  one's next request is answered with `Connection: close`, and one that stays silent closes at its keep-alive
  timeout, so a client never sees an idle connection closed under a request it is sending.
- One worker among several (`WorkerRole`): the global and frontend `maxconn` are shared out exactly (worker i gets
  `total // n`, plus one while `i < total % n`; a worker whose share is 0 never accepts on that frontend, the
  others do); a server's `maxconn` is counted across the workers (servers.py `gserved`). Only the state owner
  (worker 0) runs health checks; the others receive the states.
- Accepting in turn (several workers): all workers accept on the same sockets, and the event loop takes every
  connection waiting in a backlog at once, so a burst of connects (a client opening its keep-alive pool) would
  land almost whole on the worker that woke first. Each worker therefore writes its frontends' connection counts
  into shared memory (`gview`, a column of sharedstate's array) and pauses a frontend's listeners while it holds
  more than its share of that frontend's connections, all workers counted, plus `BALANCE_SLACK`
  (`WorkerRole.over`): the connections still waiting go to the others, which are woken on the same socket. A
  frontend paused that way looks again every `BALANCE_POLL` seconds and at each of its releases. Not every worker
  can be over its share at once, so the frontend is never paused by all of them; a single worker pays nothing.
- SIGTTOU holds every listener until SIGTTIN, whatever admission or balance would do meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from balancier.proxy import rawio
from balancier.proxy.config.model import Config, LogTarget, Proxy
from balancier.proxy.listener import Listener
from balancier.proxy.logs import INFO, WARNING, Logger, format_connect, write_stderr
from balancier.proxy.pool import Pool
from balancier.proxy.process import StartError, default_maxconn
from balancier.proxy.servers import Backend, Counters, Server
from balancier.proxy.timers import Sweeper

if TYPE_CHECKING:
    from balancier.http1 import RequestHead

_MODE_RANK = {"kal": 0, "scl": 1, "clo": 2}
_NO_XFF_YET = object()  # Route.tail_xff before any request tail was made
BALANCE_SLACK = 2  # connections a worker may hold beyond its share of a frontend's before it stops accepting there
BALANCE_POLL = 0.005  # seconds between two looks at the shares while a frontend is paused for balance


def _sec(ms: int | None) -> float | None:
    return None if ms is None or ms <= 0 else ms / 1000.0


class BackendRt:
    """A backend section at run time: D's `Backend` (servers, balancing) plus persistence hooks."""

    def __init__(self, cfg: Proxy, logger: Logger | None) -> None:
        self.cfg = cfg
        self.backend = Backend(cfg, time.monotonic)
        self.cookie = cfg.cookie if cfg.mode == "http" else None
        self.logger = logger
        if self.cookie is not None:
            from balancier.proxy import persistence

            self._persistence: Any = persistence

    def active_usable(self) -> int:
        return self.backend.usable_counts()[0]

    def persist_request(self, head: RequestHead, now: float) -> Any:
        return self._persistence.on_request(self.cookie, self.backend, head.get_all("cookie"), head.method,
                                            time.time())

    def persist_response(self, pers: Any, srv: Server | None, headers: list[tuple[str, str]], method: str,
                         status: int, now: float) -> tuple[list[tuple[str, str]], str]:
        p = self._persistence
        cfg = self.cookie
        set_cookies = [v for n, v in headers if len(n) == 10 and n.lower() == "set-cookie"]
        cacheable = cfg is not None and cfg.nocache and p.is_cacheable(method, status, headers)
        res = p.on_response(cfg, srv, pers, set_cookies, method, status, cacheable, time.time())
        if res.changed:
            out: list[tuple[str, str]] = []
            placed = False
            for n, v in headers:
                if len(n) == 10 and n.lower() == "set-cookie":
                    if not placed:
                        placed = True
                        out.extend((n, c) for c in res.set_cookie_headers)
                    continue
                out.append((n, v))
            if not placed:
                out.extend(("Set-Cookie", c) for c in res.set_cookie_headers)
            out.extend(res.add_headers)
            headers = out
        return headers, res.flag


class FrontendRt(Counters):
    """A frontend (or the front half of a listen section) at run time, with HAProxy's frontend counters."""

    def __init__(self, cfg: Proxy, maxconn: int, logger: Logger | None, debug: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.log_name = cfg.name
        self.maxconn = maxconn  # this process's limit (a worker's share of the configured one)
        self.slim = maxconn  # the configured limit, as the stats show it
        self.feconn = 0
        self.smax = 0  # highest feconn seen (stats column 5)
        self.listeners: list[Listener] = []
        self.paused = False
        # with several workers (accepting in turn): the shared int64 array of every worker's count, this worker's
        # index in it, the slice of this frontend's counts, the worker count and BALANCE_SLACK x that count
        self.gview: Any = None
        self.gown = 0
        self.gall = slice(0)
        self.gcount = 1
        self.gslack = 0
        self.connect_logger: Logger | None = None
        # Traffic lines: http records for httplog(-clf); tcp records for tcplog; "Connect from" otherwise.
        self.logger = logger if logger is not None and cfg.log_format in ("httplog", "httplog-clf") else None
        self.tcp_logger = logger if logger is not None and cfg.log_format == "tcplog" else None
        if logger is not None and cfg.log_format == "default":
            self.connect_logger = logger
        if debug:  # -d: every request or connection on stderr, whatever the configuration logs
            dbg = Logger((LogTarget("stderr", 0),), "balancier")
            if cfg.mode == "http" and self.logger is None:
                self.logger = dbg
            elif cfg.mode == "tcp" and self.tcp_logger is None:
                self.tcp_logger = dbg


class Route:
    """Everything a stream needs about its frontend and backend, flattened."""

    def __init__(self, fe: FrontendRt, be: BackendRt) -> None:
        self.fe = fe
        self.be = be
        self.stats: Any = None  # statsapplet.RouteStats when this route serves the stats page or the exporter
        fc, bc = fe.cfg, be.cfg
        self.mode = bc.mode
        # the server side closes after each response with the stronger mode of both sections (SCL, CLO); the
        # client side only when the frontend itself says httpclose: HAProxy 2.6 keeps the client connection of a
        # KAL frontend alive when only its backend says httpclose (observed: no `Connection: close`, no close)
        self.conn_mode = max(fc.http_conn_mode, bc.http_conn_mode, key=_MODE_RANK.__getitem__)
        self.client_close = fc.http_conn_mode == "clo"
        self.reuse = bc.http_reuse
        self.retries = bc.retries
        self.redispatch = bc.redispatch
        self.hash_algo = bc.balance.algorithm == "source"
        # derived once for the request path (stream.py): the cookie flag of a request or response without the
        # persistence cookie (N, or - for a passive cookie; None without a cookie), and whether responses may take
        # the fast path (not when a cookie is to be inserted)
        ck = be.cookie
        self.ck_none = None if ck is None else ("-" if ck.mode == "passive" and not ck.indirect else "N")
        self.resp_fast = ck is None or ck.mode != "insert"
        ft, bt = fc.timeouts, bc.timeouts
        self.t_client = _sec(ft.client)
        self.t_http_request = _sec(ft.http_request)
        self.t_request_first = self.t_http_request if self.t_http_request is not None else self.t_client
        ka = ft.http_keep_alive if ft.http_keep_alive is not None else ft.http_request
        self.t_keepalive = _sec(ka) if ka is not None else self.t_client
        self.t_connect = _sec(bt.connect)
        self.t_server = _sec(bt.server)
        self.t_queue = _sec(bt.queue) if bt.queue is not None else self.t_connect
        self.t_tunnel = _sec(bt.tunnel)
        self.t_client_fin = _sec(ft.client_fin)
        self.t_server_fin = _sec(bt.server_fin)
        # option forwardfor: enabled by either side; header name from the backend first; `except` per side
        ffs = [p.forwardfor for p in ((fc, bc) if fc is not bc else (fc,)) if p.forwardfor is not None]
        self.xff_enabled = bool(ffs) and self.mode == "http"
        self.xff_header = (bc.forwardfor or fc.forwardfor).header if ffs else "X-Forwarded-For"  # type: ignore[union-attr]
        self.xff_if_none = bool(ffs) and all(f.if_none for f in ffs)
        self._xff_except: list[list[Any]] = []
        # stream.py: the tail of the last HTTP/1.1 request head made without set-header fields, and the
        # X-Forwarded-For value (an object of xff_cache) it was made for; a new connection from the same client
        # takes it without a lookup
        self.tail_xff: Any = _NO_XFF_YET
        self.tail = b""
        self.xff_cache: dict[str, str | None] = {}  # client ip -> header value: parsing an address per
        # connection costs more than the rest of the accept path
        for f in ffs:
            nets = []
            if f.except_net:
                nets.append(ipaddress.ip_network(f.except_net, strict=False))
            self._xff_except.append(nets)

    def xff_value(self, client_ip: str) -> str | None:
        """The X-Forwarded-For value for this client, or None when no header is to be added."""
        if not self.xff_enabled or not client_ip:
            return None
        cache = self.xff_cache  # (stream.py looks it up first itself: a call per connection less)
        try:
            return cache[client_ip]
        except KeyError:
            pass
        value: str | None = None
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            addr = None
        if addr is not None:
            # the header is skipped only when every side that enables it excepts this client
            for nets in self._xff_except:
                if not any(addr in n for n in nets if n.version == addr.version):
                    value = client_ip
                    break
        if len(cache) >= 4096:
            cache.clear()
        cache[client_ip] = value
        return value


class WorkerRole:
    """Which worker this runtime is: index among count; the owner (index 0) runs the checks."""

    __slots__ = ("index", "count")

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count

    @property
    def owner(self) -> bool:
        return self.index == 0

    def share(self, total: int) -> int:
        """This worker's exact share of a limit (the shares add up to ``total``)."""
        base, extra = divmod(total, self.count)
        return base + (1 if self.index < extra else 0)

    def over(self, own: int, total: int) -> bool:
        """This worker holds more than its share of ``total`` connections (its ``own`` included) plus the slack.
        The workers' counts add up to ``total``, so they cannot all be over at once."""
        return own * self.count > total + BALANCE_SLACK * self.count


class Runtime:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, listeners: dict[str, list[Listener]],
                 debug: bool = False, role: WorkerRole | None = None) -> None:
        self.config = config
        self.loop = loop
        self.debug = debug
        self.role = role
        g = config.global_
        self.bufsize = g.bufsize
        self.maxconn = g.maxconn or default_maxconn()
        if role is not None and role.count > 1:
            self.maxconn = role.share(self.maxconn)
        self.actconn = 0
        self.stopping = False
        self.hard = False  # a hard stop: nothing is waited for
        # every live stream, admitted or parked; the sweeper checks the timeouts of this very set, so being
        # admitted (accept) and released is all the registration a connection needs
        self.streams: set[Any] = set()
        self.sweeper = Sweeper(loop, self.streams)
        self.pool = Pool()
        self.limited = False  # some frontend is paused by a maxconn or for balance (kept by _update_listeners)
        self.held = False  # SIGTTOU: every listener paused until SIGTTIN
        self._balance_timer: asyncio.TimerHandle | None = None
        self.parked: collections.deque[Any] = collections.deque()
        self.done: asyncio.Future[int] = loop.create_future()
        self._hard_timer: asyncio.TimerHandle | None = None
        self.checker: Any = None
        tag = g.log_tag
        global_logs = g.logs
        self.loggers: dict[str, Logger | None] = {}
        for p in config.proxies:
            targets = p.logs
            self.loggers[p.name] = Logger(targets, tag) if targets else None
        self.backends: dict[str, BackendRt] = {p.name: BackendRt(p, self.loggers[p.name]) for p in config.backends}
        self.frontends: list[FrontendRt] = []
        self.routes: list[Route] = []
        self._global_logger = Logger(global_logs, tag) if global_logs else None
        for p in config.frontends:
            fe_max = p.maxconn or g.maxconn or default_maxconn()
            if role is not None and role.count > 1:
                fe_max = role.share(fe_max)
            fe = FrontendRt(p, fe_max, self.loggers[p.name], debug)
            fe.slim = p.maxconn or g.maxconn or default_maxconn()  # the configured limit, shown by the stats
            fe.listeners = listeners.get(p.name, [])
            be_cfg = config.backend_for(p)
            if be_cfg is None:
                raise StartError(f"{p.where}: proxy '{p.name}' has no backend to send to (no default_backend)")
            be = self.backends[be_cfg.name]
            if p.mode != be_cfg.mode:
                raise StartError(f"{p.where}: frontend '{p.name}' and backend '{be_cfg.name}' use different modes")
            self.frontends.append(fe)
            self.routes.append(Route(fe, be))
        # the connection-per-request sides of HTTP streams on an epoll set of our own (proxy/rawio.py): clients of
        # an httpclose frontend, plain connections to servers in httpclose or http-server-close mode; made only
        # when some route has such a side
        uses_raw = any(r.mode == "http" and r.conn_mode != "kal" for r in self.routes)
        self.io: Any = rawio.Layer(loop) if uses_raw and rawio.enabled() else None
        # HAProxy's default fullconn: 10% of the summed maxconn of the frontends that route to the backend
        for be in self.backends.values():
            if not be.cfg.fullconn:
                total = sum(r.fe.slim for r in self.routes if r.be is be)  # configured limits, not a worker's
                be.backend.fullconn = max(1, total // 10) if total else 0

    def serves_stats(self) -> bool:
        """A proxy has a stats page or a Prometheus exporter (so a stats view is needed)."""
        return any(p.stats is not None or p.prometheus_path is not None for p in self.config.proxies)

    def attach_stats(self, view: Any, info: Any, api: Any) -> None:
        """Give each route that serves stats its state; `view` is the one the stats sockets read too."""
        from balancier.proxy import statsapplet

        for route in self.routes:
            route.stats = statsapplet.route_stats(route.fe.cfg, route.be.cfg, view, api, info)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        from balancier.proxy.stream import new_stream
        from balancier.proxy.tcp import TcpStream

        for route in self.routes:
            factory: Callable[[], asyncio.BaseProtocol]
            if route.mode == "http":
                factory = _factory(new_stream, self, route)
            else:
                factory = _factory(TcpStream, self, route)
            for lst in route.fe.listeners:
                # a frontend whose clients get a connection per request (httpclose) accepts on the rawio layer
                lst.start(self.loop, factory, route, self.io if route.mode == "http" and route.client_close else None)
        for be in self.backends.values():
            be.backend.subscribe(_queue_keeper(be))
        self.sweeper.start()
        self.loop.call_later(1.0, self._purge)
        if self.role is None or self.role.owner:
            self._start_checker()
        if any(fe.maxconn <= 0 for fe in self.frontends):
            self._update_listeners()  # a worker whose share of a frontend's maxconn is 0 does not accept there

    def _start_checker(self) -> None:
        if not any(s.cfg.check for be in self.backends.values() for s in be.backend.servers):
            return
        try:
            from balancier.proxy.checker import Checker
        except ImportError:
            write_stderr("WARNING", "health checks are not available in this build; servers stay UP")
            return
        backends = [be.backend for be in self.backends.values()]
        loggers = {name: lg for name, lg in self.loggers.items() if lg is not None}
        self.checker = Checker(backends, loggers, time.monotonic, global_cfg=self.config.global_)
        self.checker.start()

    def _purge(self) -> None:
        self.pool.purge(self.loop.time())
        if not self.done.done():
            self.loop.call_later(1.0, self._purge)

    # ------------------------------------------------------------------ admission
    def accept(self, s: Any) -> bool:
        """A new client connection: counted in (True) or parked unread until a slot frees (False)."""
        self.streams.add(s)
        fe = s.route.fe
        if self.stopping:
            # accepted in the same loop turn as the stop: serve it (its answer says Connection: close); parking it
            # would leave the client waiting for a slot that never frees
            self._count_in(s)
            return True
        if self.parked or self.actconn >= self.maxconn or fe.feconn >= fe.maxconn:
            s.counted = False
            self.parked.append(s)
            self._update_listeners()
            return False
        self._count_in(s)
        return True

    def _count_in(self, s: Any) -> None:
        s.counted = True
        fe = s.route.fe
        self.actconn += 1
        fe.feconn += 1
        fe.stot += 1
        if fe.feconn > fe.smax:
            fe.smax = fe.feconn
        if fe.connect_logger is not None:
            self._log_connect(s, fe)
        if self.actconn >= self.maxconn or fe.feconn >= fe.maxconn:
            self._update_listeners()
        elif fe.gview is not None:
            v = fe.gview
            n = v[fe.gown] = fe.feconn
            # WorkerRole.over written out (a connection's cost): at most BALANCE_SLACK connections never are
            if n > BALANCE_SLACK and n * fe.gcount > sum(v[fe.gall]) + fe.gslack:
                self._update_listeners()

    def _log_connect(self, s: Any, fe: FrontendRt) -> None:
        """The "Connect from" line of a frontend without httplog/tcplog (rare: asks the transport its address)."""
        assert fe.connect_logger is not None
        sock = s.transport.get_extra_info("sockname") if s.transport is not None else None
        dst = (sock[0], sock[1]) if sock else ("-", 0)
        fe.connect_logger.log(INFO, format_connect(s.cip, s.cport, dst[0], dst[1], fe.name, s.route.mode))

    def release(self, s: Any) -> None:
        """A client connection is gone (called once, by the stream's close)."""
        self.streams.discard(s)
        if s.counted:
            s.counted = False
            fe = s.route.fe
            self.actconn -= 1
            fe.feconn -= 1
            if fe.gview is not None:
                fe.gview[fe.gown] = fe.feconn
        else:
            try:
                self.parked.remove(s)
            except ValueError:
                pass
        # a release only frees capacity: the parked and the listeners need a look only when something is
        # parked or paused
        if self.parked or self.limited:
            self._released_capacity()
        if self.stopping and not self.streams:
            self._set_done()

    def _released_capacity(self) -> None:
        if self.parked and not self.stopping:
            for p in list(self.parked):
                pfe = p.route.fe
                if self.actconn >= self.maxconn:
                    break
                if pfe.feconn < pfe.maxconn:
                    self.parked.remove(p)
                    self._count_in(p)
                    p.unpark()
        self._update_listeners()

    def _update_listeners(self) -> None:
        if self.stopping or self.held:
            return
        full = self.actconn >= self.maxconn or bool(self.parked)
        role = self.role
        balancing = False
        for fe in self.frontends:
            want_pause = full or fe.feconn >= fe.maxconn
            g = fe.gview
            if g is not None:
                g[fe.gown] = fe.feconn
                if not want_pause and role is not None and role.over(fe.feconn, sum(g[fe.gall])):
                    want_pause = balancing = True
            if want_pause and not fe.paused:
                fe.paused = True
                for lst in fe.listeners:
                    lst.pause()
            elif not want_pause and fe.paused:
                fe.paused = False
                for lst in fe.listeners:
                    lst.resume()
        self.limited = any(fe.paused for fe in self.frontends)
        if balancing and self._balance_timer is None:
            self._balance_timer = self.loop.call_later(BALANCE_POLL, self._balance_tick)

    def _balance_tick(self) -> None:
        """A frontend paused for balance: the other workers' counts changed without telling us; look again."""
        self._balance_timer = None
        self._update_listeners()

    # ------------------------------------------------------------------ stops
    def soft_stop(self, close_idle: bool = True) -> None:
        if self.stopping:
            return
        self.stopping = True
        for fe in self.frontends:
            for lst in fe.listeners:
                lst.close()
            be = self.routes[self.frontends.index(fe)].be.backend
            msg = f"Proxy {fe.name} stopped (cumulated conns: FE: {fe.stot}, BE: {be.stot})."
            write_stderr("WARNING", msg)
            if fe.logger is not None or self.loggers.get(fe.name) is not None:
                lg = self.loggers.get(fe.name)
                if lg is not None:
                    lg.log(WARNING, msg)
        if close_idle:
            for s in list(self.streams):
                s.soft_stop()
        else:
            for s in list(self.streams):
                if s.route.mode != "http":
                    s.soft_stop()  # TCP streams: only parked/queued ones close; the rest finish by themselves
        self.pool.close_all()
        hsa = self.config.global_.hard_stop_after
        if hsa:
            self._hard_timer = self.loop.call_later(hsa / 1000.0, self._hard_stop_after)
        if not self.streams:
            self._set_done()

    async def finish(self) -> None:
        """After `done`: serve the connections the loop had already accepted when the listeners closed (their
        `connection_made` comes later in the same turn), so that none is cut by the process exit; bounded by
        `hard-stop-after` (10 s without it)."""
        hsa = self.config.global_.hard_stop_after
        end = self.loop.time() + (hsa / 1000.0 if hsa else 10.0)
        await asyncio.sleep(0.05)  # let closing transports flush, and late accepts show up
        while self.streams and self.loop.time() < end and not self.hard:
            await asyncio.sleep(0.02)
        if self.streams:
            self.hard_stop()
            await asyncio.sleep(0.01)

    def _hard_stop_after(self) -> None:
        self._hard_timer = None
        phases = collections.Counter(f"{s.route.mode}:{getattr(s, 'phase', '?')}" for s in self.streams)
        detail = ", ".join(f"{k} x{n}" for k, n in sorted(phases.items()))
        write_stderr("WARNING", f"hard-stop-after expired: closing {len(self.streams)} connections still open"
                                f"{' (' + detail + ')' if detail else ''}")
        self.hard_stop()

    def hard_stop(self) -> None:
        self.stopping = True
        self.hard = True
        for fe in self.frontends:
            for lst in fe.listeners:
                lst.close()
        for s in list(self.streams):
            s.hard_close()
        self.streams.clear()
        self.pool.close_all()
        self._set_done()

    def pause_listeners(self) -> None:
        """SIGTTOU: stop accepting (used around reloads) until SIGTTIN."""
        self.held = True
        for fe in self.frontends:
            for lst in fe.listeners:
                lst.pause()

    def resume_listeners(self) -> None:
        """SIGTTIN: accept again."""
        self.held = False
        if self.stopping:
            return
        for fe in self.frontends:
            fe.paused = False
        self._update_listeners()
        for fe in self.frontends:
            if not fe.paused:
                for lst in fe.listeners:
                    lst.resume()

    def dump_states(self) -> None:
        """SIGHUP: one line per server on stderr, as HAProxy's state dump."""
        for be in self.backends.values():
            b = be.backend
            write_stderr("NOTICE", f"SIGHUP: Proxy {b.name} has {b.usable_counts()[0]} active servers and "
                                   f"{b.usable_counts()[1]} backup servers available. Conn: act(FE+BE): "
                                   f"{b.beconn}+{b.beconn}, {len(b.queue)} pend ({len(b.queue)} max), tot: {b.stot}.")
            for s in b.servers:
                write_stderr("NOTICE", f"SIGHUP: Server {b.name}/{s.name} is {s.op.upper()}. Conn: {s.served} act, "
                                       f"{len(s.queue)} pend, {s.stot} tot.")

    def _set_done(self) -> None:
        if self._hard_timer is not None:
            self._hard_timer.cancel()
            self._hard_timer = None
        self.sweeper.stop()
        if self.checker is not None:
            try:
                self.checker.stop()
            except Exception as e:  # stopping must go on
                print(f"checker stop failed: {e}", file=sys.stderr)
            self.checker = None
        if not self.done.done():
            self.done.set_result(0)


def _queue_keeper(be: BackendRt) -> Callable[[Any], None]:
    """Server state changes and the queues: a server leaving takes its persistent waiters to the backend queue
    (with `option redispatch`, as HAProxy's pendconn_redistribute), a server arriving serves the backend queue."""
    from balancier.proxy import queue as squeue

    backend = be.backend

    def on_event(ev: Any) -> None:
        s = ev.server
        if not s.usable and s.queue and be.cfg.redispatch is not None:
            while s.queue:
                p = s.queue.popleft()
                p.server = None
                backend.queue.append(p)
            squeue.published(s)
            backend.requeue_changed(s)
        if s.usable and (backend.queue or s.queue):
            squeue.wake_backend(backend)

    return on_event


def _factory(make: Any, rt: Runtime, route: Route) -> Callable[[], asyncio.BaseProtocol]:
    # a partial, not a closure: the event loop calls it once per accepted connection, and a partial of a class
    # (or of stream.new_stream) runs no Python frame of its own besides the constructor's
    return functools.partial(make, rt, route)
