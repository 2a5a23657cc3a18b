"""The transition graph: from current state + placement to ordered actions with dependencies.

Rules (Pacemaker's implicit orderings, spec cluster.md §2.5, §3.3, §3.4, §4.4):
- A primitive stops on every node where it is active and not placed; a failed primitive that stays
  is restarted in place (stop, then start); active on several nodes, multiple-active=stop_start
  stops it everywhere and starts it on its node (stop_only: stops only; block: leaves it alone).
- Restarts propagate: when a group member stops, every later member that stays must stop and start
  again too; the same holds along Mandatory order constraints (first restarts -> then restarts).
- Without quorum (freeze) or while waiting for the peer, nothing is started or restarted.
- Definition changes (spec §2.5): a resource staying where it runs whose definition is stale is
  reloaded when its agent can (balancier:proxy; OCF agents advertising reload), else restarted
  (stop, then start). Stale: the parameters of its last successful start/reload (or of the probe
  that found it) differ from the configuration's, or a monitor since then saw another digest of
  what the agent reads besides its parameters (a changed configuration file). Results without
  digests (older nodes) are never stale. A failed reload is a failure like any other (restart).
- Orderings: every stop of a resource precedes its start; probes of a resource precede its start;
  fencing precedes every start; a cleared fail count precedes the start on that node; a start
  precedes its recurring monitors; group members start in order and stop in reverse; order
  constraints (Mandatory, Optional, Serialize) put `then` starts after `first` starts and, when
  symmetrical, `first` stops after `then` stops.
- Clones: each instance is planned on its own node as above (stop where it is no longer placed,
  restart in place when failed or stale, start where newly placed). An order with a clone as `first`
  works per node (as Pacemaker's interleave does between clones): a `then` start (or migration) to
  node N waits for the instance starting on N only, and a restart of the instance on N restarts only
  the `then` resources placed on N.
- Live migration (allow-migrate=true, a standalone primitive, healthy on one online node that has not
  lost its connectivity (ping nodes), placed on another, normal mode): migrate_to on the source, then migrate_from on the target, then stop on the
  source (make-before-break: for balancier:vip the target adds the address and announces it while
  the source keeps it, so connections in flight on the source finish). migrate_to waits for what a
  start would wait for (probes, fencing, cleared fail counts, `first` starts of orders); the
  migrate_from stands for the start (monitors and `then` starts follow it); the source's stop comes
  last and `first` stops of symmetrical orders wait for it.
- Ids are positions in a deterministic topological order: creation order (fence, probe,
  clear_failcount, stop, reload, start, monitor; units in configuration order) breaks ties.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from balancier.cluster.policy import Action, Prim, Unit, World
from balancier.cluster.scores import format_duration_ms, format_score


@dataclass
class _Plan:
    stops: list[str] = field(default_factory=list)
    start: bool = False
    clone_starts: list[str] = field(default_factory=list)  # a clone's instances to start, per node
    migrate_from: str | None = None  # live migration: the source node (its stop comes last)

    def start_nodes(self, p: Prim) -> list[str]:
        if p.clone:
            return list(self.clone_starts)
        return [p.target] if self.start and p.target is not None else []


@dataclass
class _Draft:
    kind: str
    resource: str | None
    node: str
    interval_ms: int = 0
    timeout_ms: int = 20_000
    after: set[int] = field(default_factory=set)  # draft indexes


def _op_timeout(w: World, rid: str, name: str, interval_ms: int = 0) -> int:
    r = w.conf.resource(rid)
    op = r.op(name, interval_ms) if r is not None else None
    return op.timeout_ms if op is not None else 20_000


def _failure(w: World, p: Prim, node: str) -> str:
    rs = w.cib.resource_status(p.id, node)
    last = rs.last_call
    if last is None:
        return "it failed"
    what = "probe" if last.is_probe else last.op
    how = "timed out" if last.timed_out else f"failed (rc={last.rc})"
    count = f", fail count {format_score(rs.fail_count)}" if rs.fail_count else ""
    return f"its {what} {how}{count}"


def stale_definition(w: World, p: Prim, node: str) -> tuple[str, bool] | None:
    """(why, reloadable) when the instance of p on node no longer matches its definition; else None."""
    r = w.conf.resource(p.id)
    if r is None:
        return None
    rs = w.cib.resource_status(p.id, node)
    applied = max((o for o in rs.ops if o.ok and (o.op in ("start", "reload") or (o.is_probe and o.rc in (0, 190)))),
                  key=lambda o: o.call_id, default=None)
    if applied is None:
        return None
    if applied.params_digest and applied.params_digest != r.params_digest:
        return "its parameters changed", applied.reloadable
    seen = max((o for o in rs.ops if o.op == "monitor" and o.call_id > applied.call_id and o.file_digest),
               key=lambda o: o.call_id, default=None)
    if applied.file_digest and seen is not None and seen.file_digest != applied.file_digest:
        return "its configuration changed", applied.reloadable
    return None


def _plan(w: World) -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    normal = w.mode == "normal"
    for unit in w.units:
        for p in unit.members:
            plan = plans[p.id] = _Plan()
            if not p.managed or p.blocked_on is not None:
                continue
            plan.stops = list(p.dangling)
            if p.clone:
                _plan_clone(w, p, plan)
                continue
            target = p.target
            if len(p.active) > 1:
                policy = w.conf.meta(p.id, "multiple-active") or "stop_start"
                where = " and ".join(p.active)
                if policy == "block":
                    w.say(f"leaving {p.id} alone although it is active on {where} (multiple-active=block)")
                    p.target = None
                    continue
                plan.stops = list(p.active)
                if policy == "stop_only" or target is None or not normal:
                    p.target = None
                    w.say(f"{p.id} is active on {where}: stopping it everywhere (multiple-active={policy})")
                else:
                    plan.start = True
                    w.say(f"{p.id} is active on {where}: stopping it everywhere, then starting it on "
                          f"{target} (multiple-active=stop_start)")
                continue
            plan.stops += [n for n in p.active if n != target]
            if target is None:
                continue
            if target in p.active:
                if p.states.get(target) == "failed" and normal:
                    plan.stops.append(target)
                    plan.start = True
                    w.say(f"restarting {p.id} on {target}: {_failure(w, p, target)}")
                elif normal and p.states.get(target) == "started":
                    stale = stale_definition(w, p, target)
                    if stale is not None and stale[1]:
                        w.reloads.append((p.id, target))
                        w.say(f"reloading {p.id} on {target}: {stale[0]}")
                    elif stale is not None:
                        plan.stops.append(target)
                        plan.start = True
                        w.say(f"restarting {p.id} on {target}: {stale[0]} and its agent cannot reload")
            elif normal:
                plan.start = True
                src = plan.stops[0] if len(plan.stops) == 1 else None
                if (src is not None and not unit.is_group and w.conf.allow_migrate(p.id)
                        and p.states.get(src) == "started" and p.active == [src] and not _lost_connectivity(w, src)):
                    plan.migrate_from = src
                    w.say(f"migrating {p.id} from {src} to {target} (allow-migrate): migrate_to on {src}, "
                          f"migrate_from on {target}, then stop on {src}")
            else:
                p.target = None
    _propagate_restarts(w, plans)
    for p in w.prims.values():
        plan = plans[p.id]
        if plan.migrate_from is not None and (plan.migrate_from not in plan.stops or len(plan.stops) != 1):
            plan.migrate_from = None  # a restart propagated onto it: stop-then-start after all
    return plans


def _lost_connectivity(w: World, node: str) -> bool:
    """A node that lost its ping nodes serves nobody: what runs there stops at once, no migration from it."""
    why = w.eligible.get(node)
    return why is not None and "lost connectivity" in why


def _plan_clone(w: World, p: Prim, plan: _Plan) -> None:
    """Every instance of a clone on its own node (rules in the module docstring)."""
    normal = w.mode == "normal"
    plan.stops += [n for n in p.active if n not in p.targets]
    for n in p.targets:
        if n not in p.active:
            if normal:
                plan.clone_starts.append(n)
            continue
        if not normal:
            continue
        if p.states.get(n) == "failed":
            plan.stops.append(n)
            plan.clone_starts.append(n)
            w.say(f"restarting {p.id} on {n}: {_failure(w, p, n)}")
        elif p.states.get(n) == "started":
            stale = stale_definition(w, p, n)
            if stale is not None and stale[1]:
                w.reloads.append((p.id, n))
                w.say(f"reloading {p.id} on {n}: {stale[0]}")
            elif stale is not None:
                plan.stops.append(n)
                plan.clone_starts.append(n)
                w.say(f"restarting {p.id} on {n}: {stale[0]} and its agent cannot reload")


def _restart(w: World, plans: dict[str, _Plan], p: Prim, why: str, only: set[str] | None = None) -> bool:
    """Restart p in place (a clone: its instances, on the nodes in `only` when given)."""
    plan = plans[p.id]
    if not p.managed or p.blocked_on is not None or w.mode != "normal":
        return False
    changed = False
    for t in p.nodes():
        if t not in p.active or t in plan.stops or (only is not None and t not in only):
            continue
        plan.stops.append(t)
        if p.clone:
            plan.clone_starts.append(t)
        else:
            plan.start = True
        w.say(f"restarting {p.id} on {t}: {why}")
        changed = True
    return changed


def _propagate_restarts(w: World, plans: dict[str, _Plan]) -> None:
    for _ in range(len(w.prims) + 1):
        changed = False
        for unit in w.units:
            for i, p in enumerate(unit.members):
                if plans[p.id].stops:
                    for later in unit.members[i + 1:]:
                        changed |= _restart(w, plans, later, f"{p.id} restarts before it in {unit.id}")
                    break
        for o in w.conf.orders:
            if o.kind != "Mandatory" or o.first not in w.unit_of or o.then not in w.unit_of:
                continue
            first, then = w.unit_of[o.first], w.unit_of[o.then]
            stopping = {n for m in first.members for n in plans[m.id].stops}
            if stopping:
                # a clone's instance restarting concerns what runs on its node only
                only = stopping if first.is_clone else None
                for m in then.members:
                    changed |= _restart(w, plans, m, f"{first.id} restarts before it ({o.id})", only)
        if not changed:
            return


def build_actions(w: World) -> tuple[Action, ...]:
    plans = _plan(w)
    drafts: list[_Draft] = []

    def new(d: _Draft) -> int:
        drafts.append(d)
        return len(drafts) - 1

    fences = [new(_Draft("fence", None, n)) for n in w.fence]
    probes: dict[str, list[int]] = {}
    for rid, n in w.probes:
        probes.setdefault(rid, []).append(new(_Draft("probe", rid, n, 0, _op_timeout(w, rid, "monitor", 0))))
    clears: dict[tuple[str, str], int] = {}
    for rid, n in w.clear:
        clears[(rid, n)] = new(_Draft("clear_failcount", rid, n))
    stops: dict[str, list[int]] = {}
    migrate_tos: dict[str, int] = {}
    for unit in w.units:
        for p in reversed(unit.members):
            plan = plans[p.id]
            for n in sorted(plan.stops, key=w.nodes.index):
                if n == plan.migrate_from:
                    migrate_tos[p.id] = new(_Draft("migrate_to", p.id, n, 0, _op_timeout(w, p.id, "migrate_to")))
                stops.setdefault(p.id, []).append(new(_Draft("stop", p.id, n, 0, _op_timeout(w, p.id, "stop"))))
    for rid, n in w.reloads:
        if n not in plans[rid].stops:  # a restart (e.g. of an earlier group member) supersedes the reload
            new(_Draft("reload", rid, n, 0, _op_timeout(w, rid, "reload")))
    starts: dict[str, list[int]] = {}
    start_on: dict[tuple[str, str], int] = {}
    for unit in w.units:
        for p in unit.members:
            plan = plans[p.id]
            for node in plan.start_nodes(p):
                kind = "start" if plan.migrate_from is None else "migrate_from"
                d = _Draft(kind, p.id, node, 0, _op_timeout(w, p.id, kind))
                before = d.after if plan.migrate_from is None else drafts[migrate_tos[p.id]].after
                before.update(probes.get(p.id, ()), fences)
                if (p.id, node) in clears:
                    before.add(clears[(p.id, node)])
                if plan.migrate_from is None:
                    # a clone instance restarting on this node waits for its own stop only
                    d.after.update(s for s in stops.get(p.id, ()) if not p.clone or drafts[s].node == node)
                else:
                    d.after.add(migrate_tos[p.id])
                i = new(d)
                if plan.migrate_from is not None:
                    for s in stops.get(p.id, ()):
                        drafts[s].after.add(i)  # make-before-break: the source stops last
                starts.setdefault(p.id, []).append(i)
                start_on[(p.id, node)] = i
    for unit in w.units:
        for p in unit.members:
            r = w.conf.resource(p.id)
            if r is None or not p.managed or p.blocked_on is not None:
                continue
            for node in p.nodes():
                started = (p.id, node) in start_on
                running = p.states.get(node) == "started" and node in p.active
                if not started and not running:
                    continue
                rs = w.cib.resource_status(p.id, node)
                for op in r.recurring_monitors:
                    if not started and rs.monitor_active(op.interval_ms):
                        continue
                    d = _Draft("monitor", p.id, node, op.interval_ms, op.timeout_ms)
                    if started:
                        d.after.add(start_on[(p.id, node)])
                    else:
                        w.say(f"monitoring {p.id} on {node} every {format_duration_ms(op.interval_ms)}: "
                              f"no such monitor is active")
                    new(d)
    _group_orderings(w, drafts, starts, stops)
    _order_constraints(w, drafts, starts, stops, migrate_tos)
    return _sorted(drafts)


def _group_orderings(w: World, drafts: list[_Draft], starts: dict[str, list[int]],
                     stops: dict[str, list[int]]) -> None:
    for unit in w.units:
        ms = unit.members
        for a, b in zip(ms, ms[1:], strict=False):
            if b.id in starts and a.id in starts:
                for i in starts[b.id]:
                    drafts[i].after.update(starts[a.id])
            for s in stops.get(a.id, ()):
                drafts[s].after.update(stops.get(b.id, ()))


def _heads(unit: Unit, starts: dict[str, list[int]], migrate_tos: dict[str, int]) -> list[int]:
    """Starts of the unit not already ordered after an earlier member's start (a migration: its migrate_to)."""
    out: list[int] = []
    prev_started = False
    for m in unit.members:
        if m.id in starts and not prev_started:
            out.extend([migrate_tos[m.id]] if m.id in migrate_tos else starts[m.id])
        prev_started = m.id in starts
    return out


def _order_constraints(w: World, drafts: list[_Draft], starts: dict[str, list[int]],
                       stops: dict[str, list[int]], migrate_tos: dict[str, int]) -> None:
    for o in w.conf.orders:
        if o.first not in w.unit_of or o.then not in w.unit_of:
            continue
        first, then = w.unit_of[o.first], w.unit_of[o.then]
        first_starts = [i for m in first.members for i in starts.get(m.id, ())]
        for h in _heads(then, starts, migrate_tos):
            node = drafts[h].node if drafts[h].kind != "migrate_to" else \
                next(drafts[i].node for i in starts.get(drafts[h].resource or "", ()))
            # from a clone, per node: a start waits for the instance starting on its own node only
            drafts[h].after.update(i for i in first_starts if not first.is_clone or drafts[i].node == node)
        if o.symmetrical:
            then_stops = [s for m in then.members for s in stops.get(m.id, ())]
            for m in first.members:
                for s in stops.get(m.id, ()):
                    drafts[s].after.update(then_stops)


def _sorted(drafts: list[_Draft]) -> tuple[Action, ...]:
    """Kahn's algorithm, smallest creation index first: deterministic, inputs before dependents."""
    indeg = [len(d.after) for d in drafts]
    users: list[list[int]] = [[] for _ in drafts]
    for i, d in enumerate(drafts):
        for j in d.after:
            users[j].append(i)
    ready = [i for i, k in enumerate(indeg) if k == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(drafts):
        # An order-constraint cycle: keep the creation order for what is left, without the cyclic inputs.
        done = set(order)
        order.extend(i for i in range(len(drafts)) if i not in done)
    ident = {d: pos + 1 for pos, d in enumerate(order)}
    out = []
    for pos, i in enumerate(order):
        d = drafts[i]
        inputs = tuple(sorted(ident[j] for j in d.after if ident[j] < pos + 1))
        out.append(Action(id=pos + 1, kind=d.kind, resource=d.resource, node=d.node,
                          interval_ms=d.interval_ms, timeout_ms=d.timeout_ms, inputs=inputs))
    return tuple(out)
