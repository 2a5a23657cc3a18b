"""The policy engine: schedule(cib, now) -> Transition. A pure, deterministic function.

It follows Pacemaker's scheduler (spec cluster.md §4.5) in this order, each step one guard:

1. Partition. Without quorum, no-quorum-policy=stop stops everything and freeze keeps what runs
   where it runs (on nodes that can still run it) but starts nothing; ignore carries on. In a
   two-node cluster, an online node that has not yet seen its peer since a cold start
   (NodeStatus.seen_peer False: wait_for_all until initdead) makes the partition start nothing.
2. Nodes. A node can run resources when it is online, not unclean, not being fenced, not in standby
   and, when ping nodes are configured (options.ping_score_attribute), its ping attribute is set
   and > 0. Unclean nodes (and nodes where a stop failed) are fenced when fencing is enabled; every
   start waits for the fencing. Without fencing, an offline or unclean node is assumed to run nothing.
   A failed operation applies its on-fail: ignore (pretend success), block (leave it alone),
   stop (stop and keep stopped), standby (the node takes no resources), fence, restart (default;
   a stop's default is fence with fencing, else block).
3. Scores per primitive and node: 0 (symmetric cluster) or -INFINITY unless a location constraint
   names the node (asymmetric); + location scores of the primitive (a group's constraints count on
   its first member only); + the ping attribute (first member only); + resource-stickiness on the
   node where it is active (only when active on exactly one node); -INFINITY where its fail count
   reached migration-threshold, where a hard error happened, and everywhere after a fatal one.
   Failures past failure-timeout are ignored (and their fail count cleared). Expired cli-prefer /
   cli-ban constraints are ignored. All sums saturate, -INFINITY dominates (scores.add).
4. Groups. A group is placed by its first member, whose scores absorb each later member's scores
   (so stickiness is additive and a member's ban moves the whole group), except that a member
   whose scores would leave no node available is rolled back: it and the members after it stop,
   earlier members are unaffected.
5. Assignment order: priority (desc), then the score on the current node (desc), then
   configuration order. Colocation primaries are assigned before their dependents; a dependent's
   scores flow into its primary with the factor score/INFINITY (influence). +INFINITY colocation
   needs the primary running and pins to its node; -INFINITY forbids it; finite scores add.
6. Choice: the highest score >= 0; ties go, as Pacemaker's code does, to the node with fewer
   resources already assigned in this run, then to the node where the resource is active, then to
   the lowest node name.
7. Mandatory orders: a `then` whose `first` ends up stopped cannot start (and is stopped).
   Unmanaged (is-managed=false) and blocked resources stay where they are, untouched.
8. Clones (anonymous, clone-node-max 1): a clone is a unit with one instance per node, placed on
   the nodes where its primitive scores >= 0 (location constraints name the clone), best first by
   the same ranking as step 6, at most clone-max of them. Each instance is sticky on its node
   (resource-stickiness, at least 1 as Pacemaker 2.x gives clone instances), fails, restarts and
   reaches migration-threshold on its own node. A dependent colocated with a clone (`vip with
   proxy-clone INFINITY`) may run only on a node where an instance is placed; a finite score adds to
   those nodes. A clone cannot be the dependent of a colocation (refused by the configuration).
9. Live migration (allow-migrate=true on a standalone primitive): a healthy instance moving between
   two online nodes migrates (migrate_to on the source, migrate_from on the target, then stop on the
   source) instead of stop-then-start (policy_actions.py). A node that died, or a failed instance,
   still recovers by a plain start. A migration interrupted after migrate_from (both nodes report it
   running, the source by migrate_to) is finished by stopping it on the source.

Actions (policy_actions.py) then turn current state + placement into starts, stops, monitors,
probes, reloads (a stale definition), fences and fail-count clearings with their dependencies. Every decision adds one sentence
to Transition.reasons, in the order the decisions were made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from balancier.cluster.cib import failure_expiry
from balancier.cluster.model import Cib, CibConfiguration, OpConfig, ResourceStatus
from balancier.cluster.policy_reasons import (
    no_node,
    placement_sentence,
    stopped_member,
    stopped_sentence,
)
from balancier.cluster.scores import INFINITY, add, format_duration_ms, format_score, scale

__all__ = ["Action", "Transition", "schedule", "node_eligibility", "fence_reasons", "on_fail_of"]


@dataclass(frozen=True)
class Action:
    """One step of a transition. inputs: ids of the actions that must complete before this one."""

    id: int
    kind: str  # start | stop | monitor | probe | reload | fence | clear_failcount
    resource: str | None
    node: str
    interval_ms: int = 0
    timeout_ms: int = 20_000
    inputs: tuple[int, ...] = ()

    def __str__(self) -> str:
        what = f"{self.kind} {self.resource}" if self.resource is not None else self.kind
        every = f" every {format_duration_ms(self.interval_ms)}" if self.interval_ms else ""
        return f"{what} on {self.node}{every}"


@dataclass(frozen=True)
class Transition:
    """The placement (primitive or group id -> node, None = stopped), ordered actions and reasons.

    next_recheck: the earliest future instant when a lifetime or failure-timeout expires, so the
    daemon can run the scheduler again exactly then. scores: the final score of every unit on
    every node (like crm_simulate -s).
    """

    placement: Mapping[str, str | None]
    actions: tuple[Action, ...]
    reasons: tuple[str, ...]
    next_recheck: float | None = None
    scores: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


# --------------------------------------------------------------------------- working records


@dataclass
class Prim:
    """What the scheduler knows and decides about one primitive (mutable while scheduling)."""

    id: str
    unit: str
    position: int  # index in its group, 0 for a standalone primitive
    states: dict[str, str] = field(default_factory=dict)  # node -> state, for nodes we can act on
    active: list[str] = field(default_factory=list)  # nodes where it runs (or may run, failed)
    known: list[str] = field(default_factory=list)  # active per history, including dead nodes
    own: dict[str, int] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)  # own scores without stickiness
    notes: dict[str, str] = field(default_factory=dict)  # node -> why it is -INFINITY there
    managed: bool = True
    stopped_why: str | None = None  # why it must stay stopped (target-role, on-fail=stop)
    blocked_on: str | None = None
    blocked_why: str = ""
    target: str | None = None
    restart: bool = False
    restart_reason: str = ""
    clone: bool = False  # an instance per node: `targets` lists them (target = the first, or None)
    targets: list[str] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)  # sources of an interrupted migration, to stop

    def nodes(self) -> list[str]:
        """Where it is placed: every instance of a clone, else its one target."""
        if self.clone:
            return list(self.targets)
        return [self.target] if self.target is not None else []


@dataclass
class Unit:
    """A group or a standalone primitive: what placement decides about as one thing."""

    id: str
    members: list[Prim]
    is_group: bool
    index: int
    scores: dict[str, int] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)  # the same without stickiness
    stickiness: int = 0  # stickiness counted on the current node
    current: str | None = None
    target: str | None = None
    assigned: bool = False
    decided: str = ""  # the placement sentence
    said: list[str] = field(default_factory=list)  # sentences about its members, after `decided`
    is_clone: bool = False
    clone_max: int = 0
    targets: list[str] = field(default_factory=list)  # a clone's instance nodes


@dataclass
class World:
    """The unpacked CIB: everything schedule() derives before deciding."""

    cib: Cib
    now: float
    conf: CibConfiguration
    nodes: list[str]
    eligible: dict[str, str | None]  # node -> None when it can run resources, else the reason
    fence: dict[str, str]  # node -> why it is fenced
    mode: str  # normal | stop | freeze | wait
    prims: dict[str, Prim] = field(default_factory=dict)
    units: list[Unit] = field(default_factory=list)
    unit_of: dict[str, Unit] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    clear: list[tuple[str, str]] = field(default_factory=list)  # (resource, node) fail counts to clear
    probes: list[tuple[str, str]] = field(default_factory=list)
    reloads: list[tuple[str, str]] = field(default_factory=list)  # (resource, node) to reload in place
    assigned_count: dict[str, int] = field(default_factory=dict)
    recheck: list[float] = field(default_factory=list)

    def say(self, sentence: str) -> None:
        self.reasons.append(sentence)


def _ping_value(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def on_fail_of(conf: CibConfiguration, rs: ResourceStatus) -> str:
    """The on-fail policy of the operation that decided rs's state (configured, else the default)."""
    last = rs.last_call
    if last is None:
        return "restart"
    r = conf.resource(rs.resource)
    name = "monitor" if last.is_probe else last.op
    op = r.op(name, last.interval_ms) if r is not None else None
    return (op or OpConfig(name)).effective_on_fail(conf.options.stonith_enabled)


def fence_reasons(cib: Cib) -> dict[str, str]:
    """Nodes to fence (only when fencing is enabled): unclean ones, and online ones where a stop failed
    (on-fail=fence, the default for stop) or an operation with on-fail=fence failed."""
    conf = cib.configuration
    if not conf.options.stonith_enabled:
        return {}
    out = {n: f"{n} is unclean" for n in conf.nodes if cib.node(n).unclean}
    for rs in cib.status.resources:
        if rs.node in out or rs.node not in conf.nodes or not cib.node(rs.node).online:
            continue
        if conf.resource(rs.resource) is None or on_fail_of(conf, rs) != "fence":
            continue
        if rs.state == "blocked":
            out[rs.node] = f"the stop of {rs.resource} failed on {rs.node}"
        elif rs.state == "failed":
            out[rs.node] = f"{rs.resource} failed on {rs.node} (on-fail=fence)"
    return out


def node_eligibility(cib: Cib) -> dict[str, str | None]:
    """node -> None if it can run resources, else the reason it cannot (a sentence fragment)."""
    conf = cib.configuration
    attr = conf.options.ping_score_attribute
    out: dict[str, str | None] = {}
    for n in conf.nodes:
        ns = cib.node(n)
        if ns.unclean:
            out[n] = f"{n} is unclean"
        elif not ns.online:
            out[n] = f"{n} is dead"
        elif cib.standby(n):
            out[n] = f"{n} is in standby"
        elif attr is not None and _ping_value(ns.attribute(attr)) <= 0:
            out[n] = f"{n} has lost connectivity ({attr}={ns.attribute(attr) or 'unset'})"
        else:
            out[n] = None
    for n in fence_reasons(cib):
        if out[n] is None:
            out[n] = f"{n} must be fenced"
    for rs in cib.status.resources:
        if out.get(rs.node, "") is None and rs.state == "failed" and conf.resource(rs.resource) is not None \
                and on_fail_of(conf, rs) == "standby":
            out[rs.node] = f"{rs.node} is in standby because {rs.resource} failed there (on-fail=standby)"
    return out


# --------------------------------------------------------------------------- unpack


def _unpack(cib: Cib, now: float) -> World:
    conf = cib.configuration
    opts = conf.options
    eligible = node_eligibility(cib)
    fence = fence_reasons(cib)
    mode = "normal"
    online = [n for n in conf.nodes if cib.node(n).online]
    # a partition without quorum follows no-quorum-policy first (stop is the stricter rule); a two-node cold
    # start that has not seen its peer yet (wait_for_all) only keeps what already runs
    if not cib.have_quorum and opts.no_quorum_policy != "ignore":
        mode = opts.no_quorum_policy
    elif len(conf.nodes) == 2 and any(not cib.node(n).seen_peer for n in online):
        mode = "wait"
    w = World(cib=cib, now=now, conf=conf, nodes=list(conf.nodes), eligible=eligible, fence=fence, mode=mode)
    w.assigned_count = {n: 0 for n in conf.nodes}
    if mode == "wait":
        waiting = ", ".join(n for n in online if not cib.node(n).seen_peer)
        w.say(f"not starting anything: {waiting} has not seen its peer since it started (wait_for_all)")
    elif mode == "stop":
        w.say("partition without quorum: stopping every resource (no-quorum-policy=stop)")
    elif mode == "freeze":
        w.say("partition without quorum: keeping running resources in place, starting nothing "
              "(no-quorum-policy=freeze)")
    for n, why in fence.items():
        w.say(f"fencing {n}: {why}")
    for loc in conf.locations:
        if not loc.active(now):
            w.say(f"ignoring {loc.id}: its lifetime ended at {loc.expires:g}")
        elif loc.expires is not None:
            w.recheck.append(loc.expires)
    # units, in configuration order (a group where its first member appears)
    seen: set[str] = set()
    for r in conf.resources:
        g = conf.group_of(r.id)
        c = conf.clone_of(r.id)
        uid = g.id if g is not None else c.id if c is not None else r.id
        if uid in seen:
            continue
        seen.add(uid)
        ids = list(g.resources) if g is not None else [r.id]
        unit = Unit(id=uid, members=[], is_group=g is not None, index=len(w.units), is_clone=c is not None,
                    clone_max=c.clone_max(len(conf.nodes)) if c is not None else 0)
        for pos, rid in enumerate(ids):
            p = Prim(id=rid, unit=uid, position=pos, clone=c is not None)
            unit.members.append(p)
            w.prims[rid] = p
            w.unit_of[rid] = unit
        w.unit_of[uid] = unit
        w.units.append(unit)
    for p in w.prims.values():
        _unpack_prim(w, p)
    by_node: dict[str, list[str]] = {}
    for rid, n in w.probes:
        by_node.setdefault(n, []).append(rid)
    for n in w.nodes:
        if n in by_node:
            w.say(f"probing {', '.join(by_node[n])} on {n}: state unknown there")
    return w


def _failures_expired(w: World, rs: ResourceStatus) -> bool:
    when = failure_expiry(w.cib, rs)
    if when is None:
        return False
    if w.now >= when:
        return True
    w.recheck.append(when)
    return False


def _failed_here(w: World, p: Prim, rs: ResourceStatus) -> str:
    """Apply the failed operation's on-fail (spec §3.3); returns the state to act on."""
    policy = on_fail_of(w.conf, rs)
    last = rs.last_call
    what = "probe" if last is None or last.is_probe else last.op
    if policy == "ignore":
        w.say(f"ignoring the failure of {p.id} on {rs.node} (on-fail=ignore)")
        return "started"
    if policy == "block" or (policy == "fence" and not w.conf.options.stonith_enabled):
        p.blocked_why = f"its {what} failed and on-fail=block"
        return "blocked"
    if policy == "stop":
        p.stopped_why = f"its {what} failed on {rs.node} and on-fail=stop keeps it stopped (clean up to allow again)"
    return "failed"


def _unpack_prim(w: World, p: Prim) -> None:
    conf, cib = w.conf, w.cib
    p.managed = (conf.meta(p.id, "is-managed") or "true").lower() in ("true", "on", "yes", "y", "1")
    if conf.meta(p.id, "target-role") == "Stopped":
        p.stopped_why = "target-role is Stopped"
    threshold = conf.migration_threshold(p.id)
    fatal = None
    for n in w.nodes:
        ns = cib.node(n)
        rs = cib.resource_status(p.id, n)
        state = rs.state
        if state in ("started", "failed", "blocked"):
            p.known.append(n)
        if ns.online and not ns.unclean and n not in w.fence:
            if state == "failed":
                state = _failed_here(w, p, rs)
            if state == "blocked" and p.blocked_on is None:
                p.blocked_on = n
                p.blocked_why = p.blocked_why or "its stop failed and fencing is disabled"
            p.states[n] = state
            if state in ("started", "failed", "blocked"):
                p.active.append(n)
            elif state == "unknown":
                w.probes.append((p.id, n))
        expired = _failures_expired(w, rs)
        if expired and rs.fail_count:
            w.clear.append((p.id, n))
            w.say(f"clearing the fail count of {p.id} on {n}: failure-timeout "
                  f"{format_duration_ms(conf.failure_timeout_ms(p.id))} has passed since its last failure")
        if expired:
            continue
        if threshold > 0 and rs.fail_count >= threshold:
            p.notes[n] = (f"{p.id} reached migration-threshold {format_score(threshold)} on {n} "
                          f"(fail count {format_score(rs.fail_count)})")
            if w.eligible[n] is None:
                w.say(f"{p.id} cannot run on {n}: fail count {format_score(rs.fail_count)} reached "
                      f"migration-threshold {format_score(threshold)} (clean up to allow again)")
        for o in rs.ops:
            if o.fatal and fatal is None:
                fatal = f"{p.id} is misconfigured ({o.op} on {n} returned rc=6)"
            elif o.hard and n not in p.notes:
                p.notes[n] = f"{p.id} had a hard failure on {n} ({o.op} returned rc={o.rc})"
                if w.eligible[n] is None:
                    w.say(f"{p.id} cannot run on {n}: its {o.op} returned rc={o.rc} (clean up to allow again)")
    if fatal is not None:
        w.say(f"{p.id} cannot run anywhere: {fatal}")
        for n in w.nodes:
            p.notes.setdefault(n, fatal)
    from balancier.cluster.policy_clone import dangling_migration

    dangling_migration(w, p)
    _own_scores(w, p)


def _own_scores(w: World, p: Prim) -> None:
    """Step 3 of the module docstring, for one primitive."""
    conf = w.conf
    unit = w.unit_of[p.id]
    first = p.position == 0
    locs = [c for c in conf.locations if c.active(w.now) and (c.resource == p.id or c.resource == unit.id)]
    attr = conf.options.ping_score_attribute
    sticky = conf.stickiness(p.id)
    if p.clone:
        sticky = max(sticky, 1)  # Pacemaker 2.x: clone instances stick to their node by at least 1
    for n in w.nodes:
        named = [c for c in locs if c.node == n]
        score = 0
        if not conf.options.symmetric_cluster and not any(c.score >= 0 for c in named):
            score = -INFINITY
            p.notes.setdefault(n, f"no location constraint enables {unit.id} on {n} (asymmetric cluster)")
        for c in named:
            if c.resource == p.id or first:
                score = add(score, c.score)
                if c.score <= -INFINITY:
                    p.notes.setdefault(n, f"{c.resource} is banned from {n} by {c.id}")
        if attr is not None and first:
            score = add(score, max(0, _ping_value(w.cib.node(n).attribute(attr))))
        if n in p.notes or w.eligible[n] is not None:
            score = -INFINITY
        p.base[n] = score
        here = n in p.active if p.clone else (len(p.active) == 1 and p.active[0] == n)
        if here and sticky > 0 and p.managed and score > -INFINITY:
            score = add(score, sticky)
        p.own[n] = score


# --------------------------------------------------------------------------- placement


def _available(scores: Mapping[str, int]) -> bool:
    return any(s >= 0 for s in scores.values())


def _fold(base: dict[str, int], other: Mapping[str, int], num: int = INFINITY) -> dict[str, int] | None:
    """base + other × num/INFINITY per node; None (roll back) when no node would remain available."""
    out = dict(base)
    for n, s in other.items():
        if num < 0 and s < 0:
            continue  # an anti-colocated dependent's bans do not attract its primary
        out[n] = add(out[n], scale(s, num))
    return out if _available(out) else None


def _unit_own_scores(unit: Unit, which: str = "own") -> dict[str, int]:
    """Step 4: the first member's scores with every later member folded in (rolled back if fatal)."""
    scores = dict(getattr(unit.members[0], which))
    for m in unit.members[1:]:
        if m.stopped_why:
            break
        folded = _fold(scores, getattr(m, which))
        if folded is None:
            break
        scores = folded
    return scores


def _unit_current(unit: Unit) -> str | None:
    if unit.is_clone:
        return None
    for m in unit.members:
        if len(m.active) == 1:
            return m.active[0]
        if m.active:
            return None
    return None


def _assign(w: World, unit: Unit, stack: tuple[str, ...] = ()) -> None:
    if unit.assigned or unit.id in stack:
        return
    conf = w.conf
    stack = stack + (unit.id,)
    # Primaries first (step 5).
    for col in conf.colocations:
        if col.resource == unit.id and col.with_resource in w.unit_of:
            _assign(w, w.unit_of[col.with_resource], stack)
    scores = dict(unit.scores)
    blocker: str | None = None
    for col in conf.colocations:
        if col.resource != unit.id:
            continue
        primary = w.unit_of[col.with_resource]
        if not primary.assigned:
            continue  # a colocation cycle: the later one of the two decides
        where = set(primary.targets) if primary.is_clone else \
            ({primary.target} if primary.target is not None else set())
        if primary.is_clone and col.score > 0:
            from balancier.cluster.policy_clone import healthy_instances

            where = healthy_instances(w, unit, primary, where)
        if col.score >= INFINITY:
            if not where:
                blocker = f"it must run with {primary.id}, which is not running"
                scores = {n: -INFINITY for n in scores}
            else:
                scores = {n: (s if n in where else -INFINITY) for n, s in scores.items()}
                if primary.is_clone:
                    for n in w.nodes:
                        if n not in where:
                            unit.members[0].notes.setdefault(n, w.eligible[n] or f"{primary.id} has no instance on {n}")
        else:
            for n in where:
                scores[n] = add(scores[n], col.score)
    for col in conf.colocations:
        if col.with_resource != unit.id or col.resource not in w.unit_of:
            continue
        dep = w.unit_of[col.resource]
        if dep.assigned or dep.id in stack or col.score == 0 or unit.is_clone:
            continue  # (a clone's instances are not pulled around by what depends on them)
        folded = _fold(scores, dep.scores, max(-INFINITY, min(INFINITY, col.score)))
        if folded is not None:
            scores = folded
    unit.scores = scores
    unit.assigned = True
    first = unit.members[0]
    if unit.is_clone:
        from balancier.cluster.policy_clone import assign_clone

        assign_clone(w, unit)
        return
    if w.mode == "stop":
        unit.target = None
        unit.decided = stopped_sentence(unit, "partition without quorum")
        return
    if w.mode in ("freeze", "wait"):
        cur = unit.current
        keep = cur is not None and scores.get(cur, -INFINITY) >= 0 and not first.stopped_why
        unit.target = cur if keep else None
        why = _FROZEN[w.mode]
        unit.decided = f"keeping {unit.id} on {cur}: {why}" if keep else stopped_sentence(unit, why)
        return
    if first.stopped_why:
        unit.target = None
        unit.decided = stopped_sentence(unit, first.stopped_why)
        return
    if not first.managed or first.blocked_on is not None:
        unit.target = first.active[0] if len(first.active) == 1 else None
        return  # members explain themselves in _members()
    candidates = [n for n in w.nodes if scores[n] >= 0]
    if not candidates:
        unit.target = None
        unit.decided = stopped_sentence(unit, blocker or no_node(w, unit))
        return
    cur = unit.current

    def rank(n: str) -> tuple[int, int, int, str]:
        return (-scores[n], w.assigned_count[n], 0 if n == cur else 1, n)

    candidates.sort(key=rank)
    best = candidates[0]
    unit.target = best
    unit.decided = placement_sentence(w, unit, best, candidates)


def _priority_key(w: World, unit: Unit) -> tuple[int, int, int]:
    prio = w.conf.priority(unit.id) if unit.is_group else w.conf.priority(unit.members[0].id)
    cur = unit.current
    here = unit.scores.get(cur, -INFINITY) if cur is not None else max(unit.scores.values(), default=0)
    return (-prio, -here, unit.index)


_FROZEN = {"freeze": "partition without quorum (no-quorum-policy=freeze)", "wait": "waiting for the peer",
           "stop": "partition without quorum"}


def _members(w: World, unit: Unit) -> None:
    """Member targets inside a group (or the lone primitive) once the unit is placed."""
    target = unit.target
    if unit.is_clone:
        m = unit.members[0]
        m.targets = [n for n in unit.targets if w.mode == "normal" or m.states.get(n) == "started"]
        m.target = m.targets[0] if m.targets else None
        for n in m.targets:
            w.assigned_count[n] += 1
        return
    prev: Prim | None = None
    for m in unit.members:
        if not m.managed or m.blocked_on is not None:
            m.target = m.active[0] if len(m.active) == 1 else None
            if m.blocked_on is not None:
                unit.said.append(f"leaving {m.id} blocked on {m.blocked_on}: {m.blocked_why} (clean up to retry)")
            else:
                unit.said.append(f"leaving {m.id} unmanaged" + (f" on {m.target}" if m.target else ""))
            prev = m
            continue
        if target is None:
            m.target = None
        elif prev is not None and prev.target != target:
            m.target = None
            unit.said.append(stopped_member(m, f"{prev.id} before it in {unit.id} is not running"))
        elif m.stopped_why:
            m.target = None
            if unit.members[0] is not m:
                unit.said.append(stopped_member(m, m.stopped_why))
        elif w.mode != "normal" and m.states.get(target) != "started":
            m.target = None  # nothing starts or recovers without quorum / before the peer was seen
            unit.said.append(stopped_member(m, _FROZEN[w.mode]))
        elif m.own[target] < 0 and m is not unit.members[0]:
            m.target = None
            unit.said.append(stopped_member(m, m.notes.get(target) or w.eligible[target] or
                                             f"it scores {format_score(m.own[target])} on {target}"))
        else:
            m.target = target
            w.assigned_count[target] += 1
        prev = m


def _apply_orders(w: World) -> None:
    """Step 7: a Mandatory `then` cannot run while its `first` is stopped (fixpoint, bounded)."""
    for _ in range(len(w.conf.orders) + 1):
        changed = False
        for o in w.conf.orders:
            if o.kind != "Mandatory" or o.first not in w.unit_of or o.then not in w.unit_of:
                continue
            first, then = w.unit_of[o.first], w.unit_of[o.then]
            if first.target is None and then.target is not None:
                then.target = None
                then.targets = []
                for m in then.members:
                    for n in m.nodes():
                        w.assigned_count[n] -= 1
                    m.target = None
                    m.targets = []
                then.decided = stopped_sentence(then, f"it must start after {first.id}, which is stopped ({o.id})")
                then.said = []
                changed = True
        if not changed:
            return


def schedule(cib: Cib, now: float) -> Transition:
    """Compute the placement and the ordered actions for this CIB snapshot at time `now`."""
    from balancier.cluster.policy_actions import build_actions

    w = _unpack(cib, now)
    for unit in w.units:
        unit.current = _unit_current(unit)
        unit.scores = _unit_own_scores(unit)
        unit.base = _unit_own_scores(unit, "base")
        unit.stickiness = min(INFINITY, sum(w.conf.stickiness(m.id) for m in unit.members
                                            if unit.current is not None and m.active == [unit.current]
                                            and m.managed))
    ordered = sorted(w.units, key=lambda u: _priority_key(w, u))
    for unit in ordered:
        _assign(w, unit)
        _members(w, unit)
    _apply_orders(w)
    for unit in ordered:
        if unit.decided:
            w.say(unit.decided)
        for sentence in unit.said:
            w.say(sentence)
    actions = build_actions(w)
    placement: dict[str, str | None] = {}
    for unit in w.units:
        if unit.is_group:
            placement[unit.id] = unit.members[0].target
        for m in unit.members:
            # a clone's instances: its nodes joined by commas ("lb1,lb2"), as `clones` lists them
            placement[m.id] = ",".join(m.nodes()) or None if m.clone else m.target
        if unit.is_clone:
            placement[unit.id] = placement[unit.members[0].id]
    future = [t for t in w.recheck if t > now]
    return Transition(placement=placement, actions=actions, reasons=tuple(w.reasons),
                      next_recheck=min(future) if future else None,
                      scores={u.id: dict(u.scores) for u in w.units})
