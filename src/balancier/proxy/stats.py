"""Statistics as HAProxy prints them: ``show stat`` (CSV, typed, JSON), ``show info``, ``show servers state``,
the rows the HTML page and the Prometheus exposition are drawn from. Pure code: objects and a clock in, text out.

Rules (spec/haproxy.md §14, §6; checked field by field against HAProxy 2.6):
- ``show stat`` is CSV with a ``# ``-prefixed header naming columns 0..102 and the ``-`` column 103 that ends the
  static fields; every line (header included) ends with a comma. Rows per proxy in configuration order: FRONTEND
  (frontends and listen sections), one per server, BACKEND (backends and listen sections). A field is empty when
  HAProxy leaves it empty for that kind of row; text fields are quoted only when they hold ``,``, ``"`` or a line
  break. ``pid`` is the process number (1), ``iid`` the proxy id in configuration order (HAProxy numbers its
  internal CLI proxy first when a ``stats socket`` is declared, so the first proxy of the file is then 2, else 1:
  ``first_id``), ``sid`` the server's position in its backend (0 for FRONTEND/BACKEND).
- Server ``status``: ``MAINT`` in maintenance; running: ``UP``, ``UP n/m`` while health is below full (n =
  health-rise+1, m = fall), ``DRAIN`` when drained, ``no check`` without an enabled check; stopping: ``NOLB``
  (``NOLB n/m``); stopped: ``DOWN``, ``DOWN n/m`` while rising (n = health, m = rise). Weight 0 alone does not
  change the text. Frontends are ``OPEN``, ``FULL`` at their maxconn, ``STOP`` when disabled; backends ``UP`` while
  one server is usable for load balancing, else ``DOWN``.
- Check columns (chkfail, chkdown, downtime, check_*) are filled only for servers whose check is configured and
  enabled; in maintenance the check is paused and only chkfail, chkdown and downtime remain. ``addr`` and
  ``cookie`` are shown only at level operator or admin.
- Backend ``weight``/``uweight``: the summed weights of the group that takes traffic (actives, else the backups in
  use); ``act``/``bck``: usable servers of each group.
- ``typed`` and ``json`` carry the non-empty fields 0..102 with HAProxy's tags (origin, nature, scope) and types.
- ``show servers state``: format version line ``1``, the ``#`` header, one space-separated line per server.
- Counters and gauges are read through ``view.totals(obj)``: the object's own values in one process, the sum over
  every worker's shared-memory slot with several workers (sharedstate.py; other workers' figures are at most
  ``sharedstate.PUBLISH_INTERVAL`` old). States (status, weight, checks) are the local objects': every worker holds
  the same states. ``slim`` is the configured frontend limit (a worker's own share is internal).
- Downtime and the backend's ``chkdown`` are not kept by the data plane; :class:`StatsView` follows server events
  to count them, so it is built when the backends are (before the first state change).

Public API:
    ProcessInfo(...); StatsView(frontends, backends, proxies=None, clock=time.monotonic, wall=time.time,
                                process_num=1, first_id=2)
    render_csv(view, level="admin", iid=-1, types=TYPE_ALL, sid=-1) -> str
    render_typed(view, level=..., ...) -> str; render_json(view, level=..., ...) -> str
    render_info(info) / render_info_typed(info) / render_info_json(info) -> str
    render_servers_state(view, backend=None, forced_maint=()) -> str
    frontend_row / server_row / backend_row / iter_rows (column number -> value; the page and Prometheus use them)
    server_status(s) -> str; server_state_label(s) -> "UP" | "DOWN" | "MAINT" | "DRAIN" | "NOLB"
"""

from __future__ import annotations

import json
import platform
import time
import weakref
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from balancier.proxy.config.model import Proxy
from balancier.proxy.servers import Backend, Server, ServerEvent
from balancier.proxy.sharedstate import live_totals

TYPE_FE, TYPE_BE, TYPE_SV = 1, 2, 4
TYPE_ALL = TYPE_FE | TYPE_BE | TYPE_SV

# name:tags:type for columns 0..102 (tags = origin, nature, scope letters as HAProxy's typed output).
_FIELD_SPECS = """
pxname:KNS:str svname:KNS:str qcur:MGP:u32 qmax:MMP:u32 scur:MGP:u32 smax:MMP:u32 slim:CLP:u32 stot:MCP:u64
bin:MCP:u64 bout:MCP:u64 dreq:MCP:u64 dresp:MCP:u64 ereq:MCP:u64 econ:MCP:u64 eresp:MCP:u64 wretr:MCP:u64
wredis:MCP:u64 status:SGP:str weight:MaP:u32 act:MGP:u32 bck:MGP:u32 chkfail:MCP:u64 chkdown:MCP:u64
lastchg:MAP:u32 downtime:MCP:u32 qlimit:CLP:u32 pid:KGP:u32 iid:KGS:u32 sid:KGS:u32 throttle:MOP:u32
lbtot:MCP:u64 tracked:CGS:str type:CGS:u32 rate:MRP:u32 rate_lim:CLP:u32 rate_max:MMP:u32 check_status:MOP:str
check_code:MOP:u32 check_duration:MDP:u64 hrsp_1xx:MCP:u64 hrsp_2xx:MCP:u64 hrsp_3xx:MCP:u64 hrsp_4xx:MCP:u64
hrsp_5xx:MCP:u64 hrsp_other:MCP:u64 hanafail:MCP:u64 req_rate:MRP:u32 req_rate_max:MMP:u32 req_tot:MCP:u64
cli_abrt:MCP:u64 srv_abrt:MCP:u64 comp_in:MCP:u64 comp_out:MCP:u64 comp_byp:MCP:u64 comp_rsp:MCP:u64
lastsess:MAP:s32 last_chk:MOP:str last_agt:MOP:str qtime:MaP:u32 ctime:MaP:u32 rtime:MaP:u32 ttime:MaP:u32
agent_status:MOP:str agent_code:MOP:u32 agent_duration:MDP:u64 check_desc:MOP:str agent_desc:MOP:str
check_rise:CGS:u32 check_fall:CGS:u32 check_health:CGS:u32 agent_rise:CGS:u32 agent_fall:CGS:u32
agent_health:CGS:u32 addr:CGS:str cookie:CNS:str mode:CGS:str algo:CGS:str conn_rate:MRP:u32
conn_rate_max:MMP:u32 conn_tot:MCP:u64 intercepted:MCP:u64 dcon:MCP:u64 dses:MCP:u64 wrew:MCP:u64
connect:MCP:u64 reuse:MCP:u64 cache_lookups:MCP:u64 cache_hits:MCP:u64 srv_icur:MGP:u32 src_ilim:MGP:u32
qtime_max:MMP:u32 ctime_max:MMP:u32 rtime_max:MMP:u32 ttime_max:MMP:u32 eint:MCP:u64 idle_conn_cur:MGP:u32
safe_conn_cur:MGP:u32 used_conn_cur:MGP:u32 need_conn_est:MGP:u32 uweight:MaP:u32 agg_server_status:MGP:u32
agg_server_check_status:MGP:u32 agg_check_status:MGP:u32
"""
FIELDS: tuple[tuple[str, str, str], ...] = tuple(
    tuple(spec.split(":")) for spec in _FIELD_SPECS.split()  # type: ignore[misc]
)
assert len(FIELDS) == 103
FIELD_NAMES: tuple[str, ...] = tuple(f[0] for f in FIELDS)
# Where a field's tags depend on the kind of row (HAProxy: a server's act/bck are a status, a backend's rate a gauge).
_TAG_OVERRIDES = {("S", 19): "SGP", ("S", 20): "SGP", ("B", 33): "MGP", ("B", 35): "MGP"}
CSV_HEADER = "# " + ",".join(FIELD_NAMES) + ",-,\n"

_ORIGIN = {"K": "Key", "C": "Config", "M": "Metric", "S": "Status", "P": "Product"}
_NATURE = {"N": "Name", "G": "Gauge", "M": "Max", "L": "Limit", "C": "Counter", "R": "Rate", "a": "Avg",
           "A": "Age", "O": "Output", "D": "Duration"}
_SCOPE = {"P": "Process", "S": "Service"}
_OBJ_TYPE = {"F": "Frontend", "B": "Backend", "S": "Server"}

REASONS = {
    "": "Initializing", "INI": "Initializing", "L4OK": "Layer4 check passed", "L4TOUT": "Layer4 timeout",
    "L4CON": "Layer4 connection problem", "L6OK": "Layer6 check passed", "L6TOUT": "Layer6 timeout",
    "L6RSP": "Layer6 invalid response", "L7TOUT": "Layer7 timeout", "L7RSP": "Layer7 invalid response",
    "L7OK": "Layer7 check passed", "L7OKC": "Layer7 check conditionally passed", "L7STS": "Layer7 wrong status",
    "SOCKERR": "Socket error",
}
# HAProxy's enum healthcheck_status, as written in `show servers state`.
CHECK_STATUS_CODES = {"": 1, "INI": 1, "SOCKERR": 5, "L4OK": 6, "L4TOUT": 7, "L4CON": 8, "L6OK": 9,
                      "L6TOUT": 10, "L6RSP": 11, "L7TOUT": 12, "L7RSP": 13, "L7OK": 15, "L7OKC": 16, "L7STS": 17}
_WITH_CODE = frozenset({"L7OK", "L7OKC", "L7STS"})
_PASSED = frozenset({"L4OK", "L6OK", "L7OK"})


class FrontendLike(Protocol):
    """What stats read from a frontend (the runtime's FrontendRt)."""

    name: str
    cfg: Proxy
    feconn: int
    maxconn: int
    stot: int
    bin: int
    bout: int
    dreq: int
    dresp: int
    ereq: int
    req_tot: int
    hrsp: list[int]

    def clear_counters(self) -> None: ...


@dataclass
class ProcessInfo:
    """What ``show info`` and the process metrics report. ``extra`` overrides or adds ``show info`` fields."""

    pid: int
    start_time: float  # epoch seconds
    uptime: float  # seconds
    version: str
    release_date: str = ""
    name: str = "HAProxy"  # scripts written for HAProxy identify the runtime API by this name
    nbthread: int = 1
    maxconn: int = 0
    hard_maxconn: int = 0
    ulimit_n: int = 0
    maxsock: int = 0
    curr_conns: int = 0
    cum_conns: int = 0
    cum_req: int = 0
    stopping: bool = False
    jobs: int = 0
    listeners: int = 0
    node: str = ""
    description: str = ""
    extra: Mapping[str, int | str] = field(default_factory=dict)


def check_enabled(s: Server) -> bool:
    """A check is configured and not disabled from the runtime API."""
    return s.hstate is not None and bool(getattr(s, "check_enabled", True))


def server_status(s: Server) -> str:
    """The ``status`` column of a server row (HAProxy's srv_hlt_st)."""
    if s.admin == "maint":
        return "MAINT"
    hs = s.hstate if check_enabled(s) else None
    if s.op == "up":
        going_down = hs is not None and hs.health < hs.full
        if s.admin == "drain":
            return f"DRAIN {hs.health - hs.rise + 1}/{hs.fall}" if going_down and hs else "DRAIN"
        if hs is None:
            return "no check"
        return f"UP {hs.health - hs.rise + 1}/{hs.fall}" if going_down else "UP"
    if s.op == "stopping":
        if hs is None or hs.health >= hs.full:
            return "NOLB"
        return f"NOLB {hs.health - hs.rise + 1}/{hs.fall}"
    if hs is None or hs.health == 0:
        return "DOWN"
    return f"DOWN {hs.health}/{hs.rise}"


def server_state_label(s: Server) -> str:
    """The state label of the Prometheus ``status`` family and of the HTML page's colours."""
    if s.admin == "maint":
        return "MAINT"
    if s.admin == "drain":
        return "DRAIN"
    if s.op == "down":
        return "DOWN"
    if s.op == "stopping":
        return "NOLB"
    return "UP"


def group_in_use(be: Backend) -> list[Server]:
    """The servers taking load-balanced traffic: usable actives, else the usable backup(s)."""
    act = [s for s in be.servers if not s.is_backup and s.usable]
    if act:
        return act
    bck = [s for s in be.servers if s.is_backup and s.usable]
    return bck if be.cfg.allbackups else bck[:1]


class StatsView:
    """The objects stats are drawn from, their ids, and the downtime bookkeeping the data plane does not keep."""

    def __init__(self, frontends: Sequence[FrontendLike], backends: Sequence[Backend],
                 proxies: Sequence[Proxy] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, process_num: int = 1, first_id: int = 2) -> None:
        self.frontends = list(frontends)
        self.backends = list(backends)
        self.clock = clock
        self.wall = wall
        self.process_num = process_num
        # counters of an object summed over the workers (sharedstate.CounterSlot.totals when there are several)
        self.totals: Callable[[Any], Any] = live_totals
        if proxies is None:
            seen: dict[str, Proxy] = {}
            for cfg in [*(fe.cfg for fe in self.frontends), *(be.cfg for be in self.backends)]:
                seen.setdefault(cfg.name, cfg)
            proxies = sorted(seen.values(), key=lambda p: (p.where.file, p.where.line))
        self.proxy_ids = {p.name: i + first_id for i, p in enumerate(proxies)}
        self._fe = {fe.name: fe for fe in self.frontends}
        self._be = {be.name: be for be in self.backends}
        self.order = [p.name for p in proxies if p.name in self._fe or p.name in self._be]
        # Downtimes count whole seconds as HAProxy does (`now.tv_sec - last_change`, its clock starting at the
        # date): a backend down from 12:00:00.9 to 12:00:01.1 has been down 1 s. The monotonic clock, shifted to
        # the wall clock's second boundaries once, gives the same seconds without following clock jumps.
        self._epoch = wall() - clock()
        now = self._sec()
        # per server: [accumulated downtime, down since or None] in whole seconds (_sec); per backend the same
        # plus the down count
        self._sdown: weakref.WeakKeyDictionary[Server, list[Any]] = weakref.WeakKeyDictionary()
        self._bdown: dict[str, list[Any]] = {}
        # HAProxy keeps a health counter even for unchecked servers (start value rise; `set server health` and
        # maintenance move it); only `show servers state` shows it, so it lives here.
        self.nocheck_health: weakref.WeakKeyDictionary[Server, int] = weakref.WeakKeyDictionary()
        for be in self.backends:
            self._bdown[be.name] = [0, None if be.has_usable() else now, 0]
            for s in be.servers:
                self._sdown[s] = [0, now if s.op == "down" else None]
            be.subscribe(self._on_event)

    def frontend(self, name: str) -> FrontendLike | None:
        return self._fe.get(name)

    def backend(self, name: str) -> Backend | None:
        """A backend by name or ``#id``."""
        if name.startswith("#"):
            for n, i in self.proxy_ids.items():
                if f"#{i}" == name and n in self._be:
                    return self._be[n]
            return None
        return self._be.get(name)

    def _sec(self) -> int:
        return int(self.clock() + self._epoch)

    def since(self, t: float) -> int:
        """Whole seconds since ``t`` (a time of ``clock``), counted as HAProxy counts `lastchg` (see _sec)."""
        return max(0, self._sec() - int(t + self._epoch))

    def _on_event(self, ev: ServerEvent) -> None:
        now = self._sec()
        s = ev.server
        if ev.what == "admin" and ev.new == "maint" and s.hstate is None:
            self.nocheck_health[s] = 0
        rec = self._sdown.setdefault(s, [0, None])
        is_down = s.op == "down"
        if is_down and rec[1] is None:
            rec[1] = now
        elif not is_down and rec[1] is not None:
            rec[0] += now - rec[1]
            rec[1] = None
        brec = self._bdown.setdefault(s.backend.name, [0, None, 0])
        if ev.had_usable and not ev.has_usable:
            brec[1] = now
            brec[2] += 1
        elif ev.has_usable and brec[1] is not None:
            brec[0] += now - brec[1]
            brec[1] = None

    def server_downtime(self, s: Server) -> int:
        rec = self._sdown.get(s)
        return 0 if rec is None else self._downtime(rec)

    def backend_downtime(self, be: Backend) -> tuple[int, int]:
        """(downtime in seconds, number of times the backend lost its last server)."""
        rec = self._bdown.get(be.name, [0, None, 0])
        return self._downtime(rec), rec[2]

    def _downtime(self, rec: list[Any]) -> int:
        """Accumulated seconds plus those of the current down period, if any."""
        return max(0, rec[0] + (self._sec() - rec[1] if rec[1] is not None else 0))


# --- rows ---------------------------------------------------------------------------------------------------------

Row = dict[int, Any]


def _hrsp(obj: Any, row: Row) -> None:
    h = obj.hrsp
    for i in range(5):
        row[39 + i] = h[i + 1]
    row[44] = h[0]


def frontend_row(view: StatsView, fe: FrontendLike) -> Row:
    cfg = fe.cfg
    c = view.totals(fe)
    slim = getattr(fe, "slim", fe.maxconn)
    if getattr(fe, "disabled", False):
        status = "STOP"
    elif slim and c.feconn >= slim:
        status = "FULL"
    else:
        status = "OPEN"
    row: Row = {0: fe.name, 1: "FRONTEND", 4: c.feconn, 5: c.smax, 6: slim,
                7: c.stot, 8: c.bin, 9: c.bout, 10: c.dreq, 11: c.dresp, 12: c.ereq, 17: status,
                26: view.process_num, 27: view.proxy_ids.get(fe.name, 0), 28: 0, 32: 0, 33: 0, 34: 0, 35: 0,
                46: 0, 47: 0, 48: c.req_tot, 51: 0, 52: 0, 53: 0, 54: 0, 75: cfg.mode, 77: 0, 78: 0,
                79: c.stot, 81: 0, 82: 0, 83: 0, 94: 0}
    if cfg.mode == "http":
        _hrsp(c, row)
        row.update({80: c.intercepted, 86: 0, 87: 0})
    return row


def server_row(view: StatsView, s: Server, legends: bool) -> Row:
    be = s.backend
    cfg = s.cfg
    c = view.totals(s)
    row: Row = {0: be.name, 1: s.name, 2: c.qcur, 3: c.qmax, 4: c.served,
                5: c.smax, 6: getattr(s, "slim", cfg.maxconn) or None, 7: c.stot, 8: c.bin, 9: c.bout,
                11: c.dresp, 13: c.econ, 14: c.eresp, 15: c.wretr, 16: c.wredis, 17: server_status(s),
                18: s.uweight, 19: 0 if s.is_backup else 1, 20: 1 if s.is_backup else 0,
                23: view.since(s.lastchg), 25: cfg.maxqueue or None, 26: view.process_num,
                27: view.proxy_ids.get(be.name, 0), 28: s.sid, 30: c.lbtot, 32: 2, 33: 0, 35: 0,
                49: c.cli_abrt, 50: c.srv_abrt, 55: -1, 58: 0, 59: 0, 60: 0, 61: 0, 75: be.cfg.mode, 83: 0,
                84: c.connect, 85: c.reuse, 88: 0, 90: 0, 91: 0, 92: 0, 93: 0,
                94: 0, 95: 0, 96: 0, 97: 0, 98: 0, 99: s.uweight}
    if be.cfg.mode == "http":
        _hrsp(c, row)
        row[48] = c.req_tot
    if check_enabled(s):
        hs = s.hstate
        assert hs is not None
        row.update({21: c.chkfail, 22: c.chkdown, 24: view.server_downtime(s)})
        if s.admin != "maint":  # checks are paused in maintenance: no check details then
            status = s.check_status or "INI"
            row.update({36: status, 38: s.check_duration, 56: s.check_info or None, 65: REASONS.get(status, status),
                        67: hs.rise, 68: hs.fall, 69: hs.health})
            if status in _WITH_CODE and s.check_code is not None:
                row[37] = s.check_code
    if legends:
        host, port = s.addr
        row[73] = f"{host}:{port}" if port else host
        row[74] = cfg.cookie
    return row


def backend_row(view: StatsView, be: Backend, legends: bool) -> Row:
    act, bck = be.usable_counts()
    weight = sum(s.uweight for s in group_in_use(be))
    downtime, downs = view.backend_downtime(be)
    c = view.totals(be)
    row: Row = {0: be.name, 1: "BACKEND", 2: c.qcur, 3: c.qmax, 4: c.beconn,
                5: c.smax, 6: be.fullconn, 7: c.stot, 8: c.bin, 9: c.bout, 10: c.dreq,
                11: c.dresp, 13: c.econ, 14: c.eresp, 15: c.wretr, 16: c.wredis,
                17: "UP" if be.has_usable() else "DOWN", 18: weight, 19: act, 20: bck, 22: downs,
                23: view.since(be.lastchg), 24: downtime, 26: view.process_num,
                27: view.proxy_ids.get(be.name, 0), 28: 0, 30: c.lbtot, 32: 1, 33: 0, 35: 0,
                49: c.cli_abrt, 50: c.srv_abrt, 51: 0, 52: 0, 53: 0, 54: 0, 55: -1, 58: 0, 59: 0, 60: 0, 61: 0,
                75: be.cfg.mode,
                76: be.cfg.balance.algorithm, 83: 0, 84: c.connect, 85: c.reuse,
                90: 0, 91: 0, 92: 0, 93: 0, 94: 0, 99: weight, 100: 0, 101: 0, 102: 0}
    if be.cfg.mode == "http":
        _hrsp(c, row)
        row.update({48: c.req_tot, 86: 0, 87: 0})
    if legends and be.cfg.cookie is not None:
        row[74] = be.cfg.cookie.name
    return row


ServerFilter = Callable[[Server], bool] | None


def iter_rows(view: StatsView, level: str = "admin", iid: int = -1, types: int = TYPE_ALL,
              sid: int = -1, only: ServerFilter = None) -> Iterator[tuple[str, Row]]:
    """(object letter F/B/S, row) in HAProxy's order, filtered as ``show stat <iid> <type> <sid>``; ``only``
    keeps the servers it accepts (``up``, ``no-maint``)."""
    legends = level in ("operator", "admin")
    for name in view.order:
        if iid != -1 and view.proxy_ids.get(name) != iid:
            continue
        fe = view.frontend(name)
        be = view.backend(name)
        if fe is not None and types & TYPE_FE and sid in (-1, 0):
            yield "F", frontend_row(view, fe)
        if be is not None:
            if types & TYPE_SV:
                for s in be.servers:
                    if sid in (-1, s.sid) and (only is None or only(s)):
                        yield "S", server_row(view, s, legends)
            if types & TYPE_BE and sid in (-1, 0):
                yield "B", backend_row(view, be, legends)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    s = str(v)
    if any(c in s for c in ',"\r\n') or s != s.strip():
        return '"' + s.replace('"', '""') + '"'
    return s


def render_csv(view: StatsView, level: str = "admin", iid: int = -1, types: int = TYPE_ALL, sid: int = -1,
               only: ServerFilter = None) -> str:
    out = [CSV_HEADER]
    for _kind, row in iter_rows(view, level, iid, types, sid, only):
        out.append(",".join(_csv_value(row.get(i)) for i in range(103)) + ",-,\n")
    return "".join(out)


def _typed_fields(kind: str, row: Row) -> Iterator[tuple[int, str, str, str, Any]]:
    for pos, (name, tags, typ) in enumerate(FIELDS):
        v = row.get(pos)
        if v is None:
            continue
        yield pos, name, _TAG_OVERRIDES.get((kind, pos), tags), typ, v


def render_typed(view: StatsView, level: str = "admin", iid: int = -1, types: int = TYPE_ALL,
                 sid: int = -1, only: ServerFilter = None) -> str:
    out = []
    for kind, row in iter_rows(view, level, iid, types, sid, only):
        prefix = f"{kind}.{row[27]}.{row[28]}."
        for pos, name, tags, typ, v in _typed_fields(kind, row):
            out.append(f"{prefix}{pos}.{name}.{view.process_num}:{tags}:{typ}:{v}\n")
    return "".join(out)


def _tags(tags: str) -> dict[str, str]:
    return {"origin": _ORIGIN[tags[0]], "nature": _NATURE[tags[1]], "scope": _SCOPE[tags[2]]}


def render_json(view: StatsView, level: str = "admin", iid: int = -1, types: int = TYPE_ALL,
                sid: int = -1, only: ServerFilter = None) -> str:
    objs = []
    for kind, row in iter_rows(view, level, iid, types, sid, only):
        objs.append([
            {"objType": _OBJ_TYPE[kind], "proxyId": row[27], "id": row[28], "field": {"pos": pos, "name": name},
             "processNum": view.process_num, "tags": _tags(tags),
             "value": {"type": typ, "value": v if typ == "str" else int(v)}}
            for pos, name, tags, typ, v in _typed_fields(kind, row)
        ])
    return json.dumps(objs, separators=(",", ":")) + "\n"


# --- show info ----------------------------------------------------------------------------------------------------

def _uptime(sec: int) -> str:
    d, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d}d {h}h{m:02d}m{s:02d}s"


def info_fields(info: ProcessInfo) -> list[tuple[int, str, str, str, int | str]]:
    """(position, name, tags, type, value) in HAProxy's order; counters this process does not keep are 0. As in
    HAProxy, positions 45-46 (zlib memory, not built in) and an empty description are left out."""
    up = int(info.uptime)
    base: list[tuple[str, str, str, int | str]] = [
        ("Name", "POS", "str", info.name), ("Version", "POS", "str", info.version),
        ("Release_date", "POS", "str", info.release_date), ("Nbthread", "CGS", "u32", info.nbthread),
        ("Nbproc", "CGS", "u32", 1), ("Process_num", "KGP", "u32", 1), ("Pid", "SGP", "u32", info.pid),
        ("Uptime", "MDP", "str", _uptime(up)), ("Uptime_sec", "MDP", "u32", up),
        ("Memmax_MB", "CLP", "u32", 0), ("PoolAlloc_MB", "MGP", "u32", 0), ("PoolUsed_MB", "MGP", "u32", 0),
        ("PoolFailed", "MCP", "u32", 0), ("Ulimit-n", "CLP", "u32", info.ulimit_n),
        ("Maxsock", "CLP", "u32", info.maxsock), ("Maxconn", "CLP", "u32", info.maxconn),
        ("Hard_maxconn", "CLP", "u32", info.hard_maxconn or info.maxconn),
        ("CurrConns", "MGP", "u32", info.curr_conns), ("CumConns", "MCP", "u32", info.cum_conns),
        ("CumReq", "MCP", "u32", info.cum_req),
    ]
    zeros = ("MaxSslConns:MMP CurrSslConns:MGP CumSslConns:MCP Maxpipes:CLP PipesUsed:MGP PipesFree:MGP "
             "ConnRate:MRP ConnRateLimit:CLP MaxConnRate:MMP SessRate:MRP SessRateLimit:CLP MaxSessRate:MRP "
             "SslRate:MRP SslRateLimit:CLP MaxSslRate:MMP SslFrontendKeyRate:MGP SslFrontendMaxKeyRate:MMP "
             "SslFrontendSessionReuse_pct:MGP SslBackendKeyRate:MRP SslBackendMaxKeyRate:MMP SslCacheLookups:MCP "
             "SslCacheMisses:MCP CompressBpsIn:MRP CompressBpsOut:MRP CompressBpsRateLim:CLP ZlibMemUsage:- "
             "MaxZlibMemUsage:- Tasks:MGP Run_queue:MGP Idle_pct:MaP")
    base += [(n, t, "u32", 0) for n, t in (z.split(":") for z in zeros.split())]
    base += [
        ("node", "COS", "str", info.node or platform.node()), ("description", "COS", "str", info.description),
        ("Stopping", "MGP", "u32", int(info.stopping)), ("Jobs", "MGP", "u32", info.jobs),
        ("Unstoppable Jobs", "MGP", "u32", 0), ("Listeners", "MGP", "u32", info.listeners),
        ("ActivePeers", "MGP", "u32", 0), ("ConnectedPeers", "MGP", "u32", 0), ("DroppedLogs", "MGP", "u32", 0),
        ("BusyPolling", "MGP", "u32", 0), ("FailedResolutions", "MGP", "u32", 0),
        ("TotalBytesOut", "MGP", "u64", 0), ("TotalSplicdedBytesOut", "MGP", "u64", 0),
        ("BytesOutRate", "MRP", "u64", 0), ("DebugCommandsIssued", "MGP", "u32", 0),
        ("CumRecvLogs", "MCP", "u32", 0), ("Build info", "POS", "str", info.version),
        ("Memmax_bytes", "CLP", "u32", 0), ("PoolAlloc_bytes", "MGP", "u64", 0),
        ("PoolUsed_bytes", "MGP", "u64", 0), ("Start_time_sec", "MDP", "u32", int(info.start_time)),
        ("Tainted", "SGP", "str", "0x0"),
    ]
    out = []
    for pos, (name, tags, typ, v) in enumerate(base):
        if name in info.extra:
            v = info.extra[name]
        if tags == "-" or (typ == "str" and v == "" and name == "description"):
            continue
        out.append((pos, name, tags, typ, v))
    known = {n for _p, n, *_ in out}
    out += [(len(base) + i, n, "MGP", "str" if isinstance(v, str) else "u32", v)
            for i, (n, v) in enumerate((n, v) for n, v in info.extra.items() if n not in known)]
    return out


def render_info(info: ProcessInfo) -> str:
    return "".join(f"{n}: {v}\n" for _p, n, _t, _ty, v in info_fields(info))


def render_info_typed(info: ProcessInfo) -> str:
    return "".join(f"{p}.{n}.1:{t}:{ty}:{v}\n" for p, n, t, ty, v in info_fields(info))


def render_info_json(info: ProcessInfo) -> str:
    out = [{"field": {"pos": p, "name": n}, "processNum": 1,
            "tags": {"origin": _ORIGIN[t[0]], "nature": _NATURE[t[1]], "scope": _SCOPE[t[2]]},
            "value": {"type": ty, "value": v}} for p, n, t, ty, v in info_fields(info)]
    return json.dumps(out, separators=(",", ":")) + "\n"


# --- show servers state -------------------------------------------------------------------------------------------

SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port\n"
)


def server_state_line(view: StatsView, s: Server, forced_maint: Container[Server] = ()) -> str:
    cfg = s.cfg
    if s.admin == "maint":
        op = 0  # a server in maintenance is stopped
    else:
        op = {"up": 2, "stopping": 3, "down": 0}[s.op]
    if s.admin == "maint":
        admin = 0x04 if cfg.disabled and s not in forced_maint else 0x01
    else:
        admin = 0x08 if s.admin == "drain" else 0
    status = s.check_status
    if status in _PASSED:
        result = 3
    elif status == "L7OKC":
        result = 4
    elif status:
        result = 2
    else:
        result = 0
    if s.admin == "maint":
        health = 0  # maintenance counts as a failure, as HAProxy resets the counter
    elif s.hstate is not None:
        health = s.hstate.health
    else:
        health = view.nocheck_health.get(s, cfg.rise)
    cstate = 0
    if s.hstate is not None:
        cstate = 0x2 | (0x4 if check_enabled(s) else 0) | (0x8 if s.admin == "maint" else 0)
    host, port = s.addr
    fields = [view.proxy_ids.get(s.backend.name, 0), s.backend.name, s.sid, s.name, host, op, admin, s.uweight,
              cfg.weight, view.since(s.lastchg), CHECK_STATUS_CODES.get(status, 1), result, health,
              cstate, 0, 0, 0, "-", port or 0, "-", 0, cfg.check_port or 0, cfg.check_addr or "-", "-", 0]
    return " ".join(str(f) for f in fields) + "\n"


def render_servers_state(view: StatsView, backend: Backend | None = None,
                         forced_maint: Container[Server] = ()) -> str:
    out = ["1\n", SERVERS_STATE_HEADER]
    for name in view.order:
        be = view.backend(name)
        if be is None or (backend is not None and be is not backend):
            continue
        out.extend(server_state_line(view, s, forced_maint) for s in be.servers)
    return "".join(out)
