"""The failure drill's pure part: which scenarios exist, what each one does in order, and the verdict.

Rules this file governs (issue "failure drill", spec testbed.md §1 "Definitions"):

- A scenario is a list of :class:`Step` s computed from the cluster's state before it starts (which node
  runs the group, which the other is) by :func:`plan`; nothing here performs I/O. The same plan is
  printed by ``--dry-run`` and executed by the runner (``balancier.testbed.drill``), so the listing is
  exactly what will happen.
- Every scenario is a closed loop: it starts and ends with the group on the node that ran it and every
  node online, so scenarios can be chained in any order and the dry run of the later ones stays true.
  Steps that only restore that state are marked ``measured=False`` and are not part of the verdict
  (except scenario 5, whose event *is* the return of the node).
- Exactly one step of a scenario is the fault (``fault=True``): the measurement window starts just
  before it. A fault that races a heartbeat (``jitter=True``) is delayed by uniform(0, keepalive) first,
  so the spread of the real outage shows (spec testbed.md §5.1).
- Limits per scenario (defaults from the issue, derived from the cluster's timers; both can be
  overridden): the outage (first failed probe -> first successful one) and the count of failed
  probes. ``None`` means "not limited". A scenario fails when a limit is exceeded, when the service
  never recovered in the window, when a step failed, or when a session check saw a persistent user
  of a healthy server moved or refused.
- A step may be expected to fail (scenario 3's first reload, with a broken certificate): its failure
  is recorded and is no error; its success is one (the proxy accepted a broken certificate).
- Scenario 6 (heartbeat partition) is not offered: judging it needs both nodes' addresses watched at
  the same instant (double VIP), which the end-to-end suite does inside its network namespaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Fault actions an injector may offer: the command-template keys of the [drill] table.
INJECTOR_ACTIONS = ("kill_node", "restore_node", "crash_proxy", "kill_daemon", "start_daemon",
                    "break_tls", "repair_tls", "reload_proxy", "kill_server", "start_server")
# Actions done through the cluster's own admin API.
ADMIN_ACTIONS = ("migrate", "unmigrate", "standby", "online")
# Conditions the runner waits for.
WAIT_ACTIONS = ("wait_group", "wait_members", "wait_service", "settle")
START_BUDGET_MS = 3000  # a proxy's start on a busy 2-core machine: `proxy -c`, then its listeners accepting


@dataclass(frozen=True)
class ScenarioSpec:
    number: int
    name: str
    title: str
    needs: tuple[str, ...]  # injector actions it cannot run without


SCENARIOS: dict[int, ScenarioSpec] = {s.number: s for s in (
    ScenarioSpec(1, "node-dies", "the active node dies hard (daemon, proxy, network)",
                 ("kill_node", "restore_node")),
    ScenarioSpec(2, "proxy-crash", "the proxy crashes on the active node and is restarted in place",
                 ("crash_proxy",)),
    ScenarioSpec(3, "tls-reload-fails", "a TLS certificate is broken and the reload fails: the old workers serve",
                 ("break_tls", "reload_proxy", "repair_tls")),
    ScenarioSpec(4, "migrations", "planned migrations back and forth under load", ()),
    ScenarioSpec(5, "node-returns", "the dead node returns (fail-back, or stays away with stickiness)",
                 ("kill_node", "restore_node")),
    ScenarioSpec(7, "server-dies", "an application server dies and returns under load",
                 ("kill_server", "start_server")),
    ScenarioSpec(8, "daemon-killed", "the cluster daemon alone is killed with SIGKILL on the active node",
                 ("kill_daemon", "start_daemon")),
)}


class DrillError(RuntimeError):
    """The drill cannot start as asked, or a step failed; the message is the sentence to report."""


class PlanError(ValueError):
    """The drill cannot be planned as asked (unknown scenario, missing injector command...)."""


@dataclass(frozen=True)
class Timers:
    keepalive_ms: int
    deadtime_ms: int
    monitor_interval_ms: int = 2000
    monitor_timeout_ms: int = 1000
    start_budget_ms: int = START_BUDGET_MS


@dataclass(frozen=True)
class Limits:
    max_outage_ms: float | None
    max_failed: int | None


def default_limits(number: int, t: Timers) -> Limits:
    """The issue's targets, with the budgets a real proxy start needs (see the module's rules)."""
    if number in (1, 8):  # detection (dead time + the keepalive the fault fell in) + the group's start
        return Limits(t.deadtime_ms + t.keepalive_ms + t.start_budget_ms, None)
    if number == 2:  # the next monitor notices, then the proxy restarts in place
        return Limits(t.monitor_interval_ms + t.monitor_timeout_ms + t.start_budget_ms, None)
    if number == 7:  # retries and redispatch cover refused connections; a request in flight is lost
        return Limits(None, 2)
    return Limits(0, 0)  # 3, 4, 5: planned or graceful, not one probe may fail


@dataclass(frozen=True)
class Step:
    action: str
    node: str | None = None
    text: str = ""
    fault: bool = False
    jitter: bool = False
    measured: bool = True
    timeout_s: float = 30.0
    args: tuple[tuple[str, str], ...] = ()

    def arg(self, key: str, default: str = "") -> str:
        return dict(self.args).get(key, default)


@dataclass(frozen=True)
class ScenarioPlan:
    spec: ScenarioSpec
    active: str
    other: str
    steps: tuple[Step, ...]
    limits: Limits
    sessions: bool = False  # check persistent (cookie) users of the other servers during the event
    victim: str | None = None  # the application server scenario 7 kills


@dataclass(frozen=True)
class Context:
    """What the planner knows: the cluster, where the group runs, and what the injector can do."""

    nodes: tuple[str, ...]
    group: str
    active: str
    timers: Timers
    can: frozenset[str]  # injector actions available
    stickiness: int = 0
    server: str | None = None  # the application server of scenario 7
    migrations: int = 50
    wait_s: float = 30.0


def parse_selection(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; ``"all"`` -> every scenario, in order."""
    if text.strip() == "all":
        return sorted(SCENARIOS)
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in SCENARIOS:
            raise PlanError(f"unknown scenario {part!r} (available: {', '.join(map(str, sorted(SCENARIOS)))}; "
                            "6, the heartbeat partition, runs in the end-to-end suite only)")
        if int(part) not in out:
            out.append(int(part))
    return out


def parse_limit(text: str, what: str) -> dict[int | None, float]:
    """``"2000"`` (every scenario) or ``"1=2000,4=0"`` (per scenario); ``None`` keys mean all."""
    out: dict[int | None, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise PlanError(f"{what}: expected MS or N=MS, got {part!r}") from None
        if number < 0:
            raise PlanError(f"{what}: a limit cannot be negative ({part!r})")
        if sep:
            if not key.strip().isdigit() or int(key) not in SCENARIOS:
                raise PlanError(f"{what}: unknown scenario {key!r}")
            out[int(key)] = number
        else:
            out[None] = number
    return out


def limits_for(number: int, t: Timers, outage: Mapping[int | None, float] | None = None,
               failed: Mapping[int | None, float] | None = None) -> Limits:
    base = default_limits(number, t)
    o = (outage or {}).get(number, (outage or {}).get(None))
    f = (failed or {}).get(number, (failed or {}).get(None))
    return Limits(base.max_outage_ms if o is None else o, base.max_failed if f is None else int(f))


def _other(ctx: Context) -> str:
    others = [n for n in ctx.nodes if n != ctx.active]
    if not others:
        raise PlanError(f"the drill needs a second node to move {ctx.group} to (nodes: {', '.join(ctx.nodes)})")
    return others[0]


def _back_home(ctx: Context, active: str) -> list[Step]:
    """After a failover: put the group back where it ran (a planned move) if stickiness kept it away."""
    return [Step("migrate", active, f"move {ctx.group} back to {active} if it is elsewhere (planned move)",
                 measured=False, args=(("if_elsewhere", "1"),)),
            Step("wait_group", active, f"wait until {ctx.group} runs on {active}", measured=False,
                 timeout_s=ctx.wait_s),
            Step("unmigrate", None, f"remove the drill's preference for {active}", measured=False,
                 args=(("if_elsewhere", "1"),))]


def _steps(n: int, ctx: Context, a: str, b: str) -> list[Step]:
    g, w = ctx.group, ctx.wait_s
    if n == 1:
        return [Step("kill_node", a, f"kill {a} hard: its daemon, its proxy, its network", fault=True, jitter=True),
                Step("wait_group", b, f"wait until {g} runs on {b}", timeout_s=w),
                Step("wait_service", None, "wait until the service answers steadily (1 s)", timeout_s=w),
                Step("settle", None, "keep probing 0.5 s", args=(("seconds", "0.5"),)),
                Step("restore_node", a, f"bring {a} back (a rebooted host)", measured=False),
                Step("wait_members", None, f"wait until {a} is a member again", measured=False, timeout_s=w),
                *_back_home(ctx, a)]
    if n == 2:
        return [Step("crash_proxy", a, f"kill the proxy on {a} with SIGKILL", fault=True, jitter=True),
                Step("wait_service", None, "wait until the service answers steadily (1 s)", timeout_s=w),
                Step("wait_group", a, f"check that {g} still runs on {a}", timeout_s=w),
                Step("settle", None, "keep probing 0.5 s", args=(("seconds", "0.5"),))]
    if n == 3:
        return [Step("break_tls", a, f"break the TLS certificate file on {a}", measured=False),
                Step("reload_proxy", a, f"reload the proxy on {a} (must fail and keep the old workers)",
                     fault=True, args=(("expect", "failure"),)),
                Step("settle", None, "keep probing 2 s", args=(("seconds", "2"),)),
                Step("repair_tls", a, f"restore the TLS certificate file on {a}", measured=False),
                Step("reload_proxy", a, f"reload the proxy on {a} again (must succeed)", measured=False),
                Step("wait_group", a, f"check that {g} still runs on {a}", timeout_s=w)]
    if n == 4:
        steps: list[Step] = []
        for i in range(ctx.migrations):
            to = b if i % 2 == 0 else a
            steps += [Step("migrate", to, f"migration {i + 1}/{ctx.migrations}: move {g} to {to}",
                           fault=i == 0),
                      Step("wait_group", to, f"wait until {g} runs on {to}", timeout_s=w)]
        if ctx.migrations % 2:
            steps += [Step("migrate", a, f"move {g} back to {a}", measured=False),
                      Step("wait_group", a, f"wait until {g} runs on {a}", measured=False, timeout_s=w)]
        steps += [Step("settle", None, "keep probing 0.5 s", args=(("seconds", "0.5"),)),
                  Step("unmigrate", None, f"remove the drill's preference ({g} stays on {a})")]
        return steps
    if n == 5:
        home = a if ctx.stickiness == 0 else b
        stay = "fails back" if ctx.stickiness == 0 else f"stays on {b} (stickiness {ctx.stickiness})"
        return [Step("kill_node", a, f"kill {a} hard", measured=False, jitter=True),
                Step("wait_group", b, f"wait until {g} runs on {b}", measured=False, timeout_s=w),
                Step("wait_service", None, "wait until the service answers steadily (1 s)", measured=False, timeout_s=w),
                Step("restore_node", a, f"bring {a} back: {g} {stay}", fault=True),
                Step("wait_members", None, f"wait until {a} is a member again", timeout_s=w),
                Step("wait_group", home, f"wait until {g} runs on {home}", timeout_s=w),
                Step("settle", None, "keep probing 1 s", args=(("seconds", "1"),)),
                *(_back_home(ctx, a) if home != a else [])]
    if n == 7:
        s = ctx.server
        return [Step("kill_server", s, f"kill the application server {s}", fault=True),
                Step("settle", None, "keep probing 3 s while it is dead", args=(("seconds", "3"),)),
                Step("start_server", s, f"start {s} again"),
                Step("settle", None, "keep probing 3 s", args=(("seconds", "3"),))]
    if n == 8:
        return [Step("kill_daemon", a, f"kill the cluster daemon on {a} with SIGKILL (its proxy and network stay)",
                     fault=True, jitter=True),
                Step("wait_group", b, f"wait until {g} runs on {b}", timeout_s=w),
                Step("wait_service", None, "wait until the service answers steadily (1 s)", timeout_s=w),
                Step("settle", None, "keep probing 0.5 s", args=(("seconds", "0.5"),)),
                Step("start_daemon", a, f"start the cluster daemon on {a} again", measured=False),
                Step("wait_members", None, f"wait until {a} is a member again", measured=False, timeout_s=w),
                *_back_home(ctx, a)]
    raise PlanError(f"unknown scenario {n}")


def plan(selection: Sequence[int], ctx: Context, outage: Mapping[int | None, float] | None = None,
         failed: Mapping[int | None, float] | None = None) -> list[ScenarioPlan]:
    """The steps of every selected scenario, in order; raises PlanError naming what is missing."""
    if ctx.active not in ctx.nodes:
        raise PlanError(f"{ctx.group} does not run on a cluster node (it runs on {ctx.active!r})")
    b = _other(ctx)
    missing = [f"scenario {n} needs {', '.join(a for a in SCENARIOS[n].needs if a not in ctx.can)}"
               for n in selection if any(a not in ctx.can for a in SCENARIOS[n].needs)]
    if missing:
        raise PlanError("; ".join(missing) + " (commands of the [drill] table: " + ", ".join(INJECTOR_ACTIONS) + ")")
    if 7 in selection and not ctx.server:
        raise PlanError("scenario 7 needs the application server to kill ([drill] server = \"NAME\")")
    if 4 in selection and ctx.migrations < 1:
        raise PlanError("scenario 4 needs at least one migration")
    out = []
    for n in selection:
        out.append(ScenarioPlan(SCENARIOS[n], ctx.active, b, tuple(_steps(n, ctx, ctx.active, b)),
                                limits_for(n, ctx.timers, outage, failed), sessions=n == 7,
                                victim=ctx.server if n == 7 else None))
    return out


# --------------------------------------------------------------------------- verdict and report


@dataclass
class Result:
    """What one scenario measured; ``passed`` and ``why`` come from :func:`judge`."""

    number: int
    name: str
    title: str
    outage_ms: float | None = None
    failed: int = 0
    probes: int = 0
    recovered: bool = True
    error: str | None = None  # a step that failed: its sentence
    sessions_checked: int = 0
    sessions_broken: list[str] = field(default_factory=list)
    nodes_after: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # what the failed probes got, and how often
    max_outage_ms: float | None = None
    max_failed: int | None = None
    passed: bool = False
    why: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def judge(r: Result) -> Result:
    """Set ``passed`` and the sentences that explain a failure (pure)."""
    why = []
    if r.error:
        why.append(r.error)
    if not r.recovered:
        why.append("the service did not answer again within the window")
    if r.max_outage_ms is not None and r.outage_ms is not None and r.outage_ms > r.max_outage_ms:
        why.append(f"outage {r.outage_ms:g} ms > limit {r.max_outage_ms:g} ms")
    if r.max_failed is not None and r.failed > r.max_failed:
        why.append(f"{r.failed} failed probes > limit {r.max_failed}")
    if r.sessions_broken:
        why.append(f"{len(r.sessions_broken)} persistent user(s) of healthy servers affected: "
                   + "; ".join(r.sessions_broken[:3]))
    r.why = why
    r.passed = not why
    return r


def _limit(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def format_plan(plans: Iterable[ScenarioPlan], header: Sequence[str] = ()) -> str:
    lines = list(header)
    for p in plans:
        lim = f"outage <= {_limit(p.limits.max_outage_ms, ' ms')}, failed <= {_limit(p.limits.max_failed)}"
        lines.append(f"scenario {p.spec.number} ({p.spec.name}): {p.spec.title}  [limits: {lim}]")
        for i, s in enumerate(p.steps, 1):
            marks = ("  <- fault: measured from here" if s.fault else "") + (
                "" if s.measured else "  (restores the cluster, not measured)")
            jitter = "at a random phase of the heartbeat, " if s.jitter else ""
            lines.append(f"  {i:3d}. {jitter}{s.text}{marks}")
    return "\n".join(lines)


def format_report(results: Sequence[Result], header: Sequence[str] = ()) -> str:
    lines = list(header)
    lines.append(f"{'scenario':<22} {'outage ms':>10} {'failed':>7} {'probes':>7}  {'limits (ms / failed)':<22} verdict")
    for r in results:
        outage = "never" if not r.recovered else _limit(r.outage_ms)
        lim = f"{_limit(r.max_outage_ms)} / {_limit(r.max_failed)}"
        lines.append(f"{f'{r.number} {r.name}':<22} {outage:>10} {r.failed:>7} {r.probes:>7}  {lim:<22} "
                     f"{'PASS' if r.passed else 'FAIL'}")
        for w in r.why:
            lines.append(f"    {w}")
        for k, v in r.extra.items():
            lines.append(f"    {k}: {v}")
        if r.errors:
            lines.append("    failed probes: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.errors.items())))
        if r.sessions_checked:
            lines.append(f"    persistent users checked: {r.sessions_checked}, affected: {len(r.sessions_broken)}")
    passed = sum(r.passed for r in results)
    lines.append(f"drill: {passed}/{len(results)} scenarios passed" + ("" if passed == len(results) else " - FAILED"))
    return "\n".join(lines)


def report_json(results: Sequence[Result], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": "balancier-drill/1", **meta, "passed": all(r.passed for r in results),
            "scenarios": [asdict(r) for r in results]}
