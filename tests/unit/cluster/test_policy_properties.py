"""Properties of schedule() over random clusters (hypothesis).

Random: 2-5 nodes; 1-6 primitives, some in groups; location scores including ±INFINITY; colocations
and orders between top-level resources; stickiness, symmetric/asymmetric, migration-threshold,
fencing, ping rule, quorum and no-quorum-policy; node states (online, standby, unclean, ping
attribute); monitors with every on-fail policy but block; per node histories (unknown, stopped, started, failed monitor, failed start,
not installed). Checked for every transition:
- deterministic (same input, same output; also after a JSON round trip of the CIB);
- no primitive is placed on a node that cannot run resources;
- a group member is placed only with its predecessor, and never started before it;
- starts and stops agree with the placement and the current state;
- action ids are a topological order (inputs always come first).
"""

from __future__ import annotations

import dataclasses
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from balancier.cluster import cib as C
from balancier.cluster.model import (
    INFINITY,
    Cib,
    CibConfiguration,
    ClusterOptions,
    ColocationConstraint,
    GroupConfig,
    LocationConstraint,
    OpConfig,
    OpResult,
    OrderConstraint,
    ResourceConfig,
)
from balancier.cluster.policy import Transition, node_eligibility, schedule

SCORES = st.sampled_from([-INFINITY, -100, -1, 0, 1, 50, 100, 200, INFINITY])
HISTORY = st.sampled_from(["unknown", "stopped", "started", "started", "monitor_failed", "start_failed",
                           "not_installed"])


@st.composite
def clusters(draw: st.DrawFn) -> Cib:
    nodes = tuple(f"n{i}" for i in range(1, draw(st.integers(2, 5)) + 1))
    prims = [f"r{i}" for i in range(draw(st.integers(1, 6)))]
    # Cut the resource list into consecutive runs; runs of length >= 2 may become groups.
    groups: list[GroupConfig] = []
    i = 0
    while i < len(prims):
        size = draw(st.integers(1, 3))
        run = prims[i:i + size]
        if len(run) >= 2 and draw(st.booleans()):
            groups.append(GroupConfig(f"g{len(groups)}", tuple(run)))
        i += size
    grouped = {m for g in groups for m in g.resources}
    tops = [g.id for g in groups] + [p for p in prims if p not in grouped]
    stonith = draw(st.booleans())
    # on-fail=block (and fence without fencing) leave a resource where it is by design: not drawn here.
    on_fail = st.sampled_from([None, None, "restart", "ignore", "stop", "standby"] + (["fence"] if stonith else []))
    resources = tuple(ResourceConfig(p, "balancier:dummy", ops=(OpConfig("monitor", 10_000, 5_000, draw(on_fail)),)
                                     if draw(st.booleans()) else ()) for p in prims)
    locations = tuple(LocationConstraint(f"l{k}", draw(st.sampled_from(tops)), draw(st.sampled_from(nodes)),
                                         draw(SCORES)) for k in range(draw(st.integers(0, 6))))
    colocations = []
    for k in range(draw(st.integers(0, 2))):
        a, b = draw(st.sampled_from(tops)), draw(st.sampled_from(tops))
        if a != b:
            colocations.append(ColocationConstraint(f"c{k}", a, b, draw(SCORES)))
    orders = []
    for k in range(draw(st.integers(0, 2))):
        a, b = draw(st.sampled_from(tops)), draw(st.sampled_from(tops))
        if a != b:
            orders.append(OrderConstraint(f"o{k}", a, b, draw(st.sampled_from(["Mandatory", "Optional"])),
                                          draw(st.booleans())))
    ping = draw(st.booleans())
    options = ClusterOptions(
        stickiness=draw(st.sampled_from([0, 0, 1, 34, 100, INFINITY])),
        no_quorum_policy=draw(st.sampled_from(["stop", "ignore", "freeze"])),
        symmetric_cluster=draw(st.booleans()),
        migration_threshold=draw(st.sampled_from([INFINITY, 1, 3])),
        stonith_enabled=stonith,
        start_failure_is_fatal=draw(st.booleans()),
        ping_score_attribute="pingd" if ping else None)
    conf = CibConfiguration(nodes=nodes, resources=resources, groups=tuple(groups), locations=locations,
                            colocations=tuple(colocations), orders=tuple(orders), options=options)
    cib = C.from_configuration(conf)
    for n in nodes:
        online = draw(st.booleans()) or n == nodes[0]
        cib = C.set_node_online(cib, n, online, unclean=(not online and draw(st.booleans())))
        if online and draw(st.integers(0, 4)) == 0:
            cib = C.set_standby(cib, n, True, draw(st.sampled_from(["forever", "reboot"])))
        if online and ping:
            cib = C.set_attribute(cib, n, "pingd", draw(st.sampled_from(["0", "100", "200"])))
    cib = C.set_quorum(cib, draw(st.booleans()))
    if len(nodes) == 2 and draw(st.integers(0, 5)) == 0:
        cib = C.set_node_online(cib, nodes[0], True, seen_peer=False)  # cold start, initdead still running
    for p in prims:
        for n in nodes:
            h = draw(HISTORY)
            if h == "unknown":
                continue
            if h == "not_installed":
                cib = C.record_op(cib, OpResult(p, n, "probe", 5))
                continue
            cib = C.record_op(cib, OpResult(p, n, "probe", 7))
            if h in ("started", "monitor_failed"):
                cib = C.record_op(cib, OpResult(p, n, "start", 0))
            if h == "monitor_failed":
                cib = C.record_op(cib, OpResult(p, n, "monitor", 7, interval_ms=10_000, time=10.0))
            if h == "start_failed":
                cib = C.record_op(cib, OpResult(p, n, "start", 1, time=10.0))
    return cib


def _may_run(cib: Cib, res: str, node: str) -> str | None:
    """An oracle written from the spec (cluster.md §1.6, §4.2, §4.5, §5), not from the engine: why
    `res` may not run on `node`, or None. Deliberately partial: only rules that hold whatever else
    the cluster contains."""
    conf = cib.configuration
    ns = cib.node(node)
    if not ns.online or ns.unclean:
        return "offline or unclean"
    if ns.standby or node in conf.standby_nodes:  # until reboot, or forever (kept in the configuration)
        return "standby"
    attr = conf.options.ping_score_attribute
    if attr is not None and int(ns.attribute(attr) or "0") <= 0:
        return "no connectivity"
    top = next((g.id for g in conf.groups if res in g.resources), res)
    here = [loc.score for loc in conf.locations if loc.resource == top and loc.node == node]
    if -INFINITY in here:
        return "-INFINITY location"
    if not conf.options.symmetric_cluster and not any(sc >= 0 for sc in here):
        return "not enabled (opt-in cluster)"
    rs = cib.resource_status(res, node)
    if any(o.is_probe and o.rc == 5 for o in rs.ops):
        return "not installed (hard error)"
    return None


def _active(cib: Cib, t_fenced: set[str], res: str) -> set[str]:
    out = set()
    for n in cib.configuration.nodes:
        ns = cib.node(n)
        if ns.online and not ns.unclean and n not in t_fenced:
            if cib.resource_status(res, n).state in ("started", "failed"):
                out.add(n)
    return out


def _ancestors(t: Transition, action_id: int) -> set[int]:
    by_id = {a.id: a for a in t.actions}
    seen: set[int] = set()
    todo = [action_id]
    while todo:
        for i in by_id[todo.pop()].inputs:
            if i not in seen:
                seen.add(i)
                todo.append(i)
    return seen


@settings(max_examples=int(os.environ.get("POLICY_EXAMPLES", "300")), deadline=None)
@given(clusters(), st.sampled_from([0.0, 5.0, 100.0]))
def test_schedule_properties(cib: Cib, now: float) -> None:
    t = schedule(cib, now)
    conf = cib.configuration
    # Deterministic, also after a round trip through JSON.
    assert schedule(cib, now) == t
    assert schedule(C.from_json(C.to_json(cib)), now) == t
    # Topological ids.
    for pos, a in enumerate(t.actions, start=1):
        assert a.id == pos
        assert all(i < a.id for i in a.inputs)
    eligible = node_eligibility(cib)
    fenced = {a.node for a in t.actions if a.kind == "fence"}
    starts = {(a.resource, a.node): a for a in t.actions if a.kind == "start"}
    stops = {(a.resource, a.node) for a in t.actions if a.kind == "stop"}
    assert len(starts) == sum(1 for a in t.actions if a.kind == "start")
    for r in conf.resources:
        placed = t.placement[r.id]
        active = _active(cib, fenced, r.id)
        # Never on a node that cannot run resources (the engine's own view, and the spec's).
        if placed is not None:
            assert eligible[placed] is None, (r.id, placed, eligible[placed])
            assert _may_run(cib, r.id, placed) is None, (r.id, placed, _may_run(cib, r.id, placed))
        # Starts and stops agree with the placement.
        started_on = {n for (res, n) in starts if res == r.id}
        assert started_on <= ({placed} if placed else set())
        stopped_on = {n for (res, n) in stops if res == r.id}
        assert stopped_on <= active
        assert active - ({placed} if placed else set()) <= stopped_on
        if placed is not None and placed not in active:
            assert placed in started_on
        if placed in started_on and placed in active:
            assert placed in stopped_on  # a restart: stop before start
            assert any(a.kind == "stop" and a.resource == r.id and a.node == placed and a.id < starts[(r.id, placed)].id
                       for a in t.actions)
    # Quorum and wait_for_all: without quorum (policy stop), or on a two-node cold start before the peer
    # was seen, nothing starts.
    online = [n for n in conf.nodes if cib.node(n).online]
    if (not cib.have_quorum and conf.options.no_quorum_policy in ("stop", "freeze")) \
            or (len(conf.nodes) == 2 and any(not cib.node(n).seen_peer for n in online)):
        assert not starts, t.reasons
    # Groups: a member runs only with its predecessor, and never starts before it.
    for g in conf.groups:
        assert t.placement[g.id] == t.placement[g.resources[0]]
        for a, b in zip(g.resources, g.resources[1:], strict=False):
            if t.placement[b] is not None:
                assert t.placement[a] == t.placement[b]
            sb = starts.get((b, t.placement[b] or ""))
            sa = starts.get((a, t.placement[a] or ""))
            if sb is not None and sa is not None:
                assert sa.id in _ancestors(t, sb.id)
            elif sb is not None:
                # not started in this transition: the predecessor already runs there and stays
                assert t.placement[a] in _active(cib, fenced, a)
                assert (a, t.placement[a]) not in stops


@settings(max_examples=100, deadline=None)
@given(clusters())
def test_quorum_stop_starts_nothing(cib: Cib) -> None:
    conf = cib.configuration
    cib = C.set_quorum(C.replace_configuration(cib, dataclasses.replace(
        conf, options=dataclasses.replace(conf.options, no_quorum_policy="stop"))), False)
    t = schedule(cib, 0.0)
    assert not [a for a in t.actions if a.kind == "start"]
    assert all(v is None for v in t.placement.values())


def test_no_quorum_stop_wins_over_wait_for_all() -> None:
    """Found by test_quorum_stop_starts_nothing: a node of a two-node cluster that has not seen its peer since it
    started (wait_for_all) and has no quorum, with no-quorum-policy=stop, stops what runs there; wait_for_all
    alone would only keep it."""
    conf = CibConfiguration(nodes=("n1", "n2"), resources=(ResourceConfig("r0", "balancier:dummy"),),
                            options=ClusterOptions(no_quorum_policy="stop"))
    cib = C.set_node_online(C.from_configuration(conf), "n1", True, seen_peer=False)
    cib = C.record_op(C.record_op(cib, OpResult("r0", "n1", "probe", 7)), OpResult("r0", "n1", "start", 0))
    t = schedule(C.set_quorum(cib, False), 0.0)
    assert t.placement["r0"] is None
    assert [(a.kind, a.resource, a.node) for a in t.actions if a.kind in ("start", "stop")] == [("stop", "r0", "n1")]
    waiting = schedule(C.set_quorum(cib, True), 0.0)  # with quorum, wait_for_all keeps it where it runs
    assert waiting.placement["r0"] == "n1"
    assert not [a for a in waiting.actions if a.kind in ("start", "stop")]
