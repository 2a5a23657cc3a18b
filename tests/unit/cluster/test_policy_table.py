"""The policy engine, case by case: placement, ordered actions (with inputs) and the sentences.

Each case builds a CIB with the small helpers below (the reference deployment's `esup_proxy`
group on node1/node2, or standalone primitives A, B) and asserts the whole Transition. Action
notation: "<id> <kind> <resource>@<node>[/<interval ms>][ <input ids>]", fencing "<id> fence <node>".
The cases of the spec's worked example (cluster.md §4.6) come first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

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
from balancier.cluster.policy import Transition, schedule

N1, N2, N3 = "node1", "node2", "node3"
IP, HAP, ST, G = "esup_ip", "esup_haproxy", "esup_stunnel", "esup_proxy"
MEMBERS = (IP, HAP, ST)
MON = (OpConfig("monitor", 10_000, 5_000),)

# --------------------------------------------------------------------------- builders


def esup_conf(s: int = 0, monitors: bool = False, group_meta: tuple[tuple[str, str], ...] = (),
              member_meta: dict[str, tuple[tuple[str, str], ...]] | None = None,
              locations: tuple[LocationConstraint, ...] | None = None, **options: object) -> CibConfiguration:
    """The seed's group: esup_ip -> esup_haproxy -> esup_stunnel, node1 200, node2 100."""
    member_meta = member_meta or {}
    agents = {IP: "ocf:heartbeat:IPaddr", HAP: "lsb:haproxy", ST: "lsb:stunnel"}
    resources = tuple(ResourceConfig(r, agents[r], ops=MON if monitors else (), meta=member_meta.get(r, ()))
                      for r in MEMBERS)
    if locations is None:
        locations = (LocationConstraint("pref-node1", G, N1, 200), LocationConstraint("pref-node2", G, N2, 100))
    return CibConfiguration(nodes=(N1, N2), resources=resources, groups=(GroupConfig(G, MEMBERS, group_meta),),
                            locations=locations, options=ClusterOptions(stickiness=s, **options))  # type: ignore[arg-type]


def prims_conf(*ids: str, nodes: tuple[str, ...] = (N1, N2), locations: tuple[tuple[str, str, int], ...] = (),
               colocations: tuple[ColocationConstraint, ...] = (), orders: tuple[OrderConstraint, ...] = (),
               meta: dict[str, tuple[tuple[str, str], ...]] | None = None, monitors: tuple[str, ...] = (),
               on_fail: str | None = None, **options: object) -> CibConfiguration:
    meta = meta or {}
    mon = (OpConfig("monitor", 10_000, 5_000, on_fail=on_fail),)
    resources = tuple(ResourceConfig(r, "balancier:dummy", ops=mon if r in monitors else (), meta=meta.get(r, ()))
                      for r in ids)
    locs = tuple(LocationConstraint(f"loc-{r}-{n}-{i}", r, n, sc) for i, (r, n, sc) in enumerate(locations))
    return CibConfiguration(nodes=nodes, resources=resources, locations=locs, colocations=colocations,
                            orders=orders, options=ClusterOptions(**options))  # type: ignore[arg-type]


def cluster(conf: CibConfiguration, online: tuple[str, ...] | None = None, probed: bool = True) -> Cib:
    """Nodes online with quorum and a DC; with probed=True every resource was probed 'not running'."""
    cib = C.from_configuration(conf)
    online = conf.nodes if online is None else online
    for n in online:
        cib = C.set_node_online(cib, n, True)
    cib = C.set_quorum(cib, True)
    if online:
        cib = C.set_dc(cib, online[0])
    if probed:
        for r in conf.resources:
            for n in online:
                cib = C.record_op(cib, OpResult(r.id, n, "probe", 7))
    return cib


def op(cib: Cib, res: str, node: str, name: str, rc: int = 0, t: float = 0.0, interval: int = 0) -> Cib:
    return C.record_op(cib, OpResult(res, node, name, rc, interval_ms=interval, time=t))


def run(cib: Cib, node: str, *res: str) -> Cib:
    """Record successful starts (and first monitor results) of `res` (default: the group) on `node`."""
    for r in res or MEMBERS:
        cib = op(cib, r, node, "start")
        rc = cib.configuration.resource(r)
        assert rc is not None
        for m in rc.recurring_monitors:
            cib = op(cib, r, node, "monitor", interval=m.interval_ms)
    return cib


def stop(cib: Cib, node: str, *res: str) -> Cib:
    for r in reversed(res or MEMBERS):
        cib = op(cib, r, node, "stop")
    return cib


def fail(cib: Cib, res: str, node: str, times: int = 1, t: float = 0.0, rc: int = 7) -> Cib:
    for _ in range(times):
        cib = op(cib, res, node, "monitor", rc=rc, t=t, interval=10_000)
    return cib


def down(cib: Cib, node: str, unclean: bool = False) -> Cib:
    return C.set_node_online(cib, node, False, unclean=unclean)


def up(cib: Cib, node: str, probed: bool = True) -> Cib:
    """A node (re)joins: its own history is gone (status is rebuilt), probes may have run."""
    cib = C.set_node_online(C.forget_node(cib, node), node, True)
    if probed:
        for r in cib.configuration.resources:
            cib = op(cib, r.id, node, "probe", rc=7)
    return cib


def with_options(cib: Cib, **changes: object) -> Cib:
    conf = cib.configuration
    return C.replace_configuration(cib, dataclasses.replace(conf, options=dataclasses.replace(conf.options, **changes)))


def group_at(node: str | None) -> dict[str, str | None]:
    return {G: node, IP: node, HAP: node, ST: node}


def move(src: str, dst: str, first: int = 1) -> list[str]:
    """The group moving from src to dst: stops in reverse order, then starts in order."""
    a, b, c, d, e = first, first + 1, first + 2, first + 3, first + 4
    return [f"{a} stop {ST}@{src}", f"{b} stop {HAP}@{src} <{a}", f"{c} stop {IP}@{src} <{b}",
            f"{d} start {IP}@{dst} <{c}", f"{e} start {HAP}@{dst} <{b},{d}", f"{e + 1} start {ST}@{dst} <{a},{e}"]


def starts(node: str, first: int = 1, extra: str = "") -> list[str]:
    """The group starting on node from scratch; `extra` = inputs every start also has (fencing)."""
    pre = f"{extra}," if extra else ""
    return [f"{first} start {IP}@{node}" + (f" <{extra}" if extra else ""),
            f"{first + 1} start {HAP}@{node} <{pre}{first}", f"{first + 2} start {ST}@{node} <{pre}{first + 1}"]


def monitors(node: str, start_ids: tuple[int, int, int], first: int) -> list[str]:
    return [f"{first + i} monitor {r}@{node}/10000 <{sid}" for i, (r, sid) in enumerate(zip(MEMBERS, start_ids,
                                                                                              strict=True))]


def fmt(t: Transition) -> list[str]:
    out = []
    for a in t.actions:
        s = f"{a.id} fence {a.node}" if a.kind == "fence" else f"{a.id} {a.kind} {a.resource}@{a.node}"
        if a.interval_ms:
            s += f"/{a.interval_ms}"
        if a.inputs:
            s += " <" + ",".join(map(str, a.inputs))
        out.append(s)
    return out


@dataclass
class Case:
    name: str
    cib: Cib
    placement: dict[str, str | None]
    actions: list[str]
    reasons: list[str]
    now: float = 0.0
    recheck: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


CASES: list[Case] = []


def case(name: str, cib: Cib, placement: dict[str, str | None], actions: list[str], reasons: list[str],
         now: float = 0.0, recheck: float | None = None) -> None:
    CASES.append(Case(name, cib, placement, actions, reasons, now, recheck))


PREFER_1 = "preference 200 beats 100 on node2"

# --------------------------------------------------------------------------- §4.6 worked example

case("cold start: probe everything, then start the group on node1",
     cluster(esup_conf(), probed=False), group_at(N1),
     [f"1 probe {IP}@node1", f"2 probe {IP}@node2", f"3 probe {HAP}@node1", f"4 probe {HAP}@node2",
      f"5 probe {ST}@node1", f"6 probe {ST}@node2", f"7 start {IP}@node1 <1,2", f"8 start {HAP}@node1 <3,4,7",
      f"9 start {ST}@node1 <5,6,8"],
     ["probing esup_ip, esup_haproxy, esup_stunnel on node1: state unknown there",
      "probing esup_ip, esup_haproxy, esup_stunnel on node2: state unknown there",
      f"starting esup_proxy on node1: {PREFER_1}"])
case("steady state: scores 200 vs 100 start the group on node1 in order",
     cluster(esup_conf()), group_at(N1), starts(N1), [f"starting esup_proxy on node1: {PREFER_1}"])
case("steady state: nothing to do once running",
     run(cluster(esup_conf(monitors=True)), N1), group_at(N1), [], [f"keeping esup_proxy on node1: {PREFER_1}"])
case("running without its monitors: the recurring monitors are started",
     C.replace_configuration(run(cluster(esup_conf()), N1), esup_conf(monitors=True)), group_at(N1),
     [f"1 monitor {IP}@node1/10000", f"2 monitor {HAP}@node1/10000", f"3 monitor {ST}@node1/10000"],
     [f"keeping esup_proxy on node1: {PREFER_1}",
      "monitoring esup_ip on node1 every 10s: no such monitor is active",
      "monitoring esup_haproxy on node1 every 10s: no such monitor is active",
      "monitoring esup_stunnel on node1 every 10s: no such monitor is active"])
case("node1 dies: the group starts on node2, then its monitors",
     down(run(cluster(esup_conf(monitors=True)), N1), N1), group_at(N2),
     starts(N2) + monitors(N2, (1, 2, 3), 4), ["moving esup_proxy to node2: node1 is dead"])
case("node1 returns without stickiness: automatic failback (stop on node2 in reverse, start on node1)",
     up(run(down(cluster(esup_conf()), N1), N2), N1), group_at(N1), move(N2, N1),
     [f"moving esup_proxy to node1: {PREFER_1}"])
case("node1 returns unprobed: the failback starts wait for node1's probes",
     up(run(down(cluster(esup_conf()), N1), N2), N1, probed=False), group_at(N1),
     [f"1 probe {IP}@node1", f"2 probe {HAP}@node1", f"3 probe {ST}@node1", f"4 stop {ST}@node2",
      f"5 stop {HAP}@node2 <4", f"6 stop {IP}@node2 <5", f"7 start {IP}@node1 <1,6",
      f"8 start {HAP}@node1 <2,5,7", f"9 start {ST}@node1 <3,4,8"],
     ["probing esup_ip, esup_haproxy, esup_stunnel on node1: state unknown there",
      f"moving esup_proxy to node1: {PREFER_1}"])
case("node1 returns, stickiness 33 per member: 100+99 < 200, fails back",
     up(run(down(cluster(esup_conf(s=33)), N1), N2), N1), group_at(N1), move(N2, N1),
     ["moving esup_proxy to node1: preference 200 beats 100+99 on node2"])
case("node1 returns, stickiness 34 per member: 100+102 >= 200, stays on node2",
     up(run(down(cluster(esup_conf(s=34)), N1), N2), N1), group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness 102 beats preference 200-100"])
case("node1 returns, stickiness 100: 400 vs 200, stays",
     up(run(down(cluster(esup_conf(s=100)), N1), N2), N1), group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness 300 beats preference 200-100"])
case("node1 returns, stickiness INFINITY: never fails back",
     up(run(down(cluster(esup_conf(s=INFINITY)), N1), N2), N1), group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness INFINITY beats preference 200-100"])
case("stickiness 34 set on the group overrides the default 0",
     up(run(down(cluster(esup_conf(group_meta=(("resource-stickiness", "34"),))), N1), N2), N1), group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness 102 beats preference 200-100"])
case("a member's own stickiness overrides the default: 100+0+50+50 ties 200, the current node keeps it",
     up(run(down(cluster(esup_conf(s=50, member_meta={IP: (("resource-stickiness", "0"),)})), N1), N2), N1),
     group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness 100 matches preference 200-100, and a tie favours the current node"])
case("migrate esup_proxy to node2: cli-prefer INFINITY moves it",
     C.migrate(run(cluster(esup_conf()), N1), G, N2), group_at(N2), move(N1, N2),
     ["moving esup_proxy to node2: preference INFINITY beats 200 on node1"])
case("node2 dies while migrated: +INFINITY is a preference, not a pin",
     down(C.migrate(run(cluster(esup_conf()), N2), G, N2, force=True), N2), group_at(N1), starts(N1),
     ["moving esup_proxy to node1: node2 is dead"])
case("unmigrate without stickiness: back to node1 at once",
     C.unmigrate(C.migrate(run(cluster(esup_conf()), N2), G, N2, force=True), G), group_at(N1), move(N2, N1),
     [f"moving esup_proxy to node1: {PREFER_1}"])
case("unmigrate with stickiness 100: stays on node2",
     C.unmigrate(C.migrate(run(cluster(esup_conf(s=100)), N2), G, N2, force=True), G), group_at(N2), [],
     ["keeping esup_proxy on node2: stickiness 300 beats preference 200-100"])
case("migrate with a lifetime, before expiry: stays, recheck at expiry",
     C.migrate(run(cluster(esup_conf()), N2), G, N2, lifetime_s=3600, now=1000, force=True), group_at(N2), [],
     ["keeping esup_proxy on node2: preference INFINITY beats 200 on node1"], now=2000, recheck=4600)
case("migrate lifetime expired: the constraint is ignored and the group fails back",
     C.migrate(run(cluster(esup_conf()), N2), G, N2, lifetime_s=3600, now=1000, force=True), group_at(N1),
     move(N2, N1), ["ignoring cli-prefer-esup_proxy: its lifetime ended at 4600", f"moving esup_proxy to node1: {PREFER_1}"],
     now=5000)
case("migrate without a node = ban the current node",
     C.ban(run(cluster(esup_conf()), N1), G, N1), group_at(N2), move(N1, N2),
     ["moving esup_proxy to node2: esup_proxy is banned from node1 by cli-ban-esup_proxy-on-node1"])
case("a ban holds even when the banned node is the last one left",
     down(C.ban(run(cluster(esup_conf()), N2), G, N1), N2), group_at(None), [],
     ["leaving esup_proxy stopped: no node can run it (esup_proxy is banned from node1 by "
      "cli-ban-esup_proxy-on-node1; node2 is dead)"])
case("monitor failure below migration-threshold: the member and its successors restart in place",
     fail(run(cluster(esup_conf(monitors=True, migration_threshold=3)), N1), HAP, N1), group_at(N1),
     [f"1 stop {ST}@node1", f"2 stop {HAP}@node1 <1", f"3 start {HAP}@node1 <2", f"4 start {ST}@node1 <1,3",
      f"5 monitor {HAP}@node1/10000 <3", f"6 monitor {ST}@node1/10000 <4"],
     [f"keeping esup_proxy on node1: {PREFER_1}",
      "restarting esup_haproxy on node1: its monitor failed (rc=7), fail count 1",
      "restarting esup_stunnel on node1: esup_haproxy restarts before it in esup_proxy"])
case("fail count reaching migration-threshold: the whole group moves",
     fail(run(cluster(esup_conf(monitors=True, migration_threshold=3)), N1), HAP, N1, times=3), group_at(N2),
     move(N1, N2) + monitors(N2, (4, 5, 6), 7),
     ["esup_haproxy cannot run on node1: fail count 3 reached migration-threshold 3 (clean up to allow again)",
      "moving esup_proxy to node2: esup_haproxy reached migration-threshold 3 on node1 (fail count 3)"])

_FT = run(stop(fail(run(cluster(esup_conf(group_meta=(("failure-timeout", "60s"),), migration_threshold=3)), N1),
                    HAP, N1, times=3, t=100.0), N1), N2)
case("failure-timeout not yet passed: node1 stays banned, recheck when it expires",
     _FT, group_at(N2), [],
     ["esup_haproxy cannot run on node1: fail count 3 reached migration-threshold 3 (clean up to allow again)",
      "keeping esup_proxy on node2: no other node can run it"], now=130, recheck=160)
case("failure-timeout passed: fail count cleared, the group fails back to node1",
     _FT, group_at(N1),
     [f"1 clear_failcount {HAP}@node1", f"2 stop {ST}@node2", f"3 stop {HAP}@node2 <2", f"4 stop {IP}@node2 <3",
      f"5 start {IP}@node1 <4", f"6 start {HAP}@node1 <1,3,5", f"7 start {ST}@node1 <2,6"],
     ["clearing the fail count of esup_haproxy on node1: failure-timeout 1min has passed since its last failure",
      f"moving esup_proxy to node1: {PREFER_1}"], now=170)
case("standby node1: the group moves to node2",
     C.set_standby(run(cluster(esup_conf()), N1), N1, True), group_at(N2), move(N1, N2),
     ["moving esup_proxy to node2: node1 is in standby"])
case("standby until reboot (transient) does the same",
     C.set_standby(run(cluster(esup_conf()), N1), N1, True, lifetime="reboot"), group_at(N2), move(N1, N2),
     ["moving esup_proxy to node2: node1 is in standby"])
case("both nodes in standby: the group stops",
     C.set_standby(C.set_standby(run(cluster(esup_conf()), N1), N1, True), N2, True), group_at(None),
     [f"1 stop {ST}@node1", f"2 stop {HAP}@node1 <1", f"3 stop {IP}@node1 <2"],
     ["stopping esup_proxy on node1: no node can run it (node1 is in standby; node2 is in standby)"])
case("node1 back online after standby: fails back without stickiness",
     C.set_standby(run(C.set_standby(cluster(esup_conf()), N1, True), N2), N1, False), group_at(N1),
     move(N2, N1), [f"moving esup_proxy to node1: {PREFER_1}"])

_BOTH = run(run(cluster(esup_conf()), N1), N2)
_MULTI = [f"1 stop {ST}@node1", f"2 stop {ST}@node2", f"3 stop {HAP}@node1 <1,2", f"4 stop {HAP}@node2 <1,2",
          f"5 stop {IP}@node1 <3,4", f"6 stop {IP}@node2 <3,4", f"7 start {IP}@node1 <5,6",
          f"8 start {HAP}@node1 <3,4,7", f"9 start {ST}@node1 <1,2,8"]
case("multiple-active after a partition heals: stop everywhere, start on node1",
     _BOTH, group_at(N1), _MULTI,
     [f"placing esup_proxy on node1: {PREFER_1}"] +
     [f"{r} is active on node1 and node2: stopping it everywhere, then starting it on node1 "
      f"(multiple-active=stop_start)" for r in MEMBERS])
case("multiple-active ignores stickiness (it applies only on a single active node)",
     with_options(_BOTH, stickiness=100), group_at(N1), _MULTI,
     [f"placing esup_proxy on node1: {PREFER_1}"] +
     [f"{r} is active on node1 and node2: stopping it everywhere, then starting it on node1 "
      f"(multiple-active=stop_start)" for r in MEMBERS])
case("a probe finds haproxy started at boot on node2: stopped everywhere, restarted on node1 with stunnel",
     op(op(op(C.set_node_online(run(cluster(esup_conf(), online=(N1,)), N1), N2, True), IP, N2, "probe", 7),
           HAP, N2, "probe", 0), ST, N2, "probe", 7), group_at(N1),
     [f"1 stop {ST}@node1", f"2 stop {HAP}@node1 <1", f"3 stop {HAP}@node2 <1", f"4 start {HAP}@node1 <2,3",
      f"5 start {ST}@node1 <1,4"],
     [f"keeping esup_proxy on node1: {PREFER_1}",
      "esup_haproxy is active on node1 and node2: stopping it everywhere, then starting it on node1 "
      "(multiple-active=stop_start)",
      "restarting esup_stunnel on node1: esup_haproxy restarts before it in esup_proxy"])

# --------------------------------------------------------------------------- roles, failures, blocking

case("target-role Stopped on a running group stops it in reverse order",
     run(cluster(esup_conf(group_meta=(("target-role", "Stopped"),))), N1), group_at(None),
     [f"1 stop {ST}@node1", f"2 stop {HAP}@node1 <1", f"3 stop {IP}@node1 <2"],
     ["stopping esup_proxy on node1: target-role is Stopped"])
case("target-role Stopped on a stopped group: nothing to do",
     cluster(esup_conf(group_meta=(("target-role", "Stopped"),))), group_at(None), [],
     ["leaving esup_proxy stopped: target-role is Stopped"])
case("target-role Stopped on the last member stops only that member",
     run(cluster(esup_conf(member_meta={ST: (("target-role", "Stopped"),)})), N1),
     {G: N1, IP: N1, HAP: N1, ST: None}, [f"1 stop {ST}@node1"],
     [f"keeping esup_proxy on node1: {PREFER_1}", "stopping esup_stunnel on node1: target-role is Stopped"])
case("target-role Stopped on the middle member stops it and the members after it",
     run(cluster(esup_conf(member_meta={HAP: (("target-role", "Stopped"),)})), N1),
     {G: N1, IP: N1, HAP: None, ST: None}, [f"1 stop {ST}@node1", f"2 stop {HAP}@node1 <1"],
     [f"keeping esup_proxy on node1: {PREFER_1}", "stopping esup_haproxy on node1: target-role is Stopped",
      "stopping esup_stunnel on node1: esup_haproxy before it in esup_proxy is not running"])
case("a failed start is fatal by default: fail count INFINITY, the group moves to node2",
     op(run(cluster(esup_conf()), N1, IP), HAP, N1, "start", rc=1), group_at(N2),
     [f"1 stop {HAP}@node1", f"2 stop {IP}@node1 <1", f"3 start {IP}@node2 <2", f"4 start {HAP}@node2 <1,3",
      f"5 start {ST}@node2 <4"],
     ["esup_haproxy cannot run on node1: fail count INFINITY reached migration-threshold INFINITY "
      "(clean up to allow again)",
      "moving esup_proxy to node2: esup_haproxy reached migration-threshold INFINITY on node1 (fail count INFINITY)"])
case("start-failure-is-fatal=false: a failed start counts 1 and restarts in place",
     op(run(cluster(esup_conf(start_failure_is_fatal=False)), N1, IP), HAP, N1, "start", rc=1), group_at(N1),
     [f"1 stop {HAP}@node1", f"2 start {HAP}@node1 <1", f"3 start {ST}@node1 <2"],
     [f"keeping esup_proxy on node1: {PREFER_1}", "restarting esup_haproxy on node1: its start failed (rc=1), fail count 1"])
case("a member not installed on node2 (probe rc 5): after node1 dies only the earlier member runs",
     down(op(run(cluster(esup_conf()), N1), HAP, N2, "probe", rc=5), N1), {G: N2, IP: N2, HAP: None, ST: None},
     [f"1 start {IP}@node2"],
     ["esup_haproxy cannot run on node2: its probe returned rc=5 (clean up to allow again)",
      "moving esup_proxy to node2: node1 is dead",
      "leaving esup_haproxy stopped: esup_haproxy had a hard failure on node2 (probe returned rc=5)",
      "leaving esup_stunnel stopped: esup_haproxy before it in esup_proxy is not running"])
case("a member's hard failure on node2 keeps the whole group off node2",
     op(run(cluster(esup_conf()), N1), HAP, N2, "probe", rc=5), group_at(N1), [],
     ["esup_haproxy cannot run on node2: its probe returned rc=5 (clean up to allow again)",
      "keeping esup_proxy on node1: no other node can run it"])
case("rc 6 (not configured) is fatal: the member may run nowhere, earlier members are unaffected",
     op(run(cluster(esup_conf()), N1, IP), HAP, N1, "start", rc=6), {G: N1, IP: N1, HAP: None, ST: None},
     [f"1 stop {HAP}@node1"],
     ["esup_haproxy cannot run on node1: fail count INFINITY reached migration-threshold INFINITY "
      "(clean up to allow again)",
      "esup_haproxy cannot run anywhere: esup_haproxy is misconfigured (start on node1 returned rc=6)",
      f"keeping esup_proxy on node1: {PREFER_1}",
      "stopping esup_haproxy on node1: esup_haproxy reached migration-threshold INFINITY on node1 "
      "(fail count INFINITY)",
      "leaving esup_stunnel stopped: esup_haproxy before it in esup_proxy is not running"])
case("is-managed=false: the cluster neither stops nor moves the group",
     C.set_standby(run(cluster(esup_conf(group_meta=(("is-managed", "false"),))), N1), N1, True), group_at(N1), [],
     [f"leaving {r} unmanaged on node1" for r in MEMBERS])
case("a failed stop without fencing blocks the resource where it is",
     op(run(C.migrate(cluster(prims_conf("A")), "A", N2), N1, "A"), "A", N1, "stop", rc=1), {"A": N1}, [],
     ["A cannot run on node1: fail count INFINITY reached migration-threshold INFINITY (clean up to allow again)",
      "leaving A blocked on node1: its stop failed and fencing is disabled (clean up to retry)"])
case("a failed stop with fencing: fence the node, then start elsewhere",
     op(run(C.migrate(cluster(prims_conf("A", stonith_enabled=True)), "A", N2), N1, "A"), "A", N1, "stop", rc=1),
     {"A": N2}, ["1 fence node1", "2 start A@node2 <1"],
     ["fencing node1: the stop of A failed on node1", "moving A to node2: node1 must be fenced"])
case("an unclean node with fencing: fenced before the group starts on node2",
     down(run(cluster(esup_conf(stonith_enabled=True)), N1), N1, unclean=True), group_at(N2),
     ["1 fence node1"] + starts(N2, first=2, extra="1"),
     ["fencing node1: node1 is unclean", "moving esup_proxy to node2: node1 is unclean"])
case("an unclean node without fencing is assumed to run nothing",
     down(run(cluster(esup_conf()), N1), N1, unclean=True), group_at(N2), starts(N2),
     ["moving esup_proxy to node2: node1 is unclean"])

# --------------------------------------------------------------------------- quorum, wait_for_all, ping

_Q3 = C.set_quorum(run(cluster(prims_conf("A", "B", nodes=(N1, N2, N3)), online=(N1,)), N1, "A"), False)
case("no quorum, no-quorum-policy=stop: everything stops",
     _Q3, {"A": None, "B": None}, ["1 stop A@node1"],
     ["partition without quorum: stopping every resource (no-quorum-policy=stop)",
      "stopping A on node1: partition without quorum", "leaving B stopped: partition without quorum"])
case("no quorum, freeze: running resources stay, nothing starts",
     with_options(_Q3, no_quorum_policy="freeze"), {"A": N1, "B": None}, [],
     ["partition without quorum: keeping running resources in place, starting nothing (no-quorum-policy=freeze)",
      "keeping A on node1: partition without quorum (no-quorum-policy=freeze)",
      "leaving B stopped: partition without quorum (no-quorum-policy=freeze)"])
case("no quorum, ignore: carry on (B starts on the only live node)",
     with_options(_Q3, no_quorum_policy="ignore"), {"A": N1, "B": N1}, ["1 start B@node1"],
     ["keeping A on node1: no other node can run it", "starting B on node1: the only node that can run it"])
case("three nodes with quorum: ties spread by count then name",
     run(cluster(prims_conf("A", "B", nodes=(N1, N2, N3))), N1, "A"), {"A": N1, "B": N2}, ["1 start B@node2"],
     ["keeping A on node1: tie at 0 with node2, and a tie favours the current node",
      "starting B on node2: tie at 0 with node3, broken by node name"])
case("wait_for_all: a node that never saw its peer starts nothing (probes still run)",
     C.set_node_online(cluster(esup_conf(), online=(), probed=False), N1, True, seen_peer=False), group_at(None),
     [f"1 probe {IP}@node1", f"2 probe {HAP}@node1", f"3 probe {ST}@node1"],
     ["not starting anything: node1 has not seen its peer since it started (wait_for_all)",
      "probing esup_ip, esup_haproxy, esup_stunnel on node1: state unknown there",
      "leaving esup_proxy stopped: waiting for the peer"])
case("after initdead (or once the peer was seen) the lone node starts the group",
     cluster(esup_conf(), online=(N1,)), group_at(N1), starts(N1),
     ["starting esup_proxy on node1: the only node that can run it"])
case("ping: node1 lost its uplink (pingd=0), the group moves to node2",
     C.set_attribute(C.set_attribute(run(cluster(esup_conf(ping_score_attribute="pingd")), N1), N1, "pingd", "0"),
                     N2, "pingd", "100"), group_at(N2), move(N1, N2),
     ["moving esup_proxy to node2: node1 has lost connectivity (pingd=0)"])
case("ping: a node whose ping attribute is unset may run nothing",
     C.set_attribute(run(cluster(esup_conf(ping_score_attribute="pingd")), N1), N1, "pingd", "100"), group_at(N1),
     [], ["keeping esup_proxy on node1: no other node can run it"])
case("ping: the attribute adds to the score (node2 reaches more ping nodes)",
     C.set_attribute(C.set_attribute(cluster(esup_conf(ping_score_attribute="pingd")), N1, "pingd", "100"),
                     N2, "pingd", "300"), group_at(N2), starts(N2),
     ["starting esup_proxy on node2: preference 400 beats 300 on node1"])

# --------------------------------------------------------------------------- symmetric / asymmetric, arithmetic

_ASYM = esup_conf(symmetric_cluster=False, locations=(LocationConstraint("pref-node2", G, N2, 100),))
case("asymmetric cluster: only nodes enabled by a constraint may run the group",
     cluster(_ASYM), group_at(N2), starts(N2), ["starting esup_proxy on node2: the only node that can run it"])
case("asymmetric cluster: when the enabled node dies the group stops",
     down(run(cluster(_ASYM), N2), N2), group_at(None), [],
     ["leaving esup_proxy stopped: no node can run it (no location constraint enables esup_proxy on node1 "
      "(asymmetric cluster); node2 is dead)"])
case("asymmetric cluster: a score 0 constraint enables a node",
     cluster(esup_conf(symmetric_cluster=False, locations=(LocationConstraint("en1", G, N1, 0),))), group_at(N1),
     starts(N1), ["starting esup_proxy on node1: the only node that can run it"])
case("-INFINITY dominates +INFINITY on the same node",
     cluster(prims_conf("A", locations=(("A", N1, INFINITY), ("A", N1, -INFINITY)))), {"A": N2},
     ["1 start A@node2"], ["starting A on node2: the only node that can run it"])
case("a negative finite score excludes the node",
     cluster(prims_conf("A", locations=(("A", N1, -50),))), {"A": N2}, ["1 start A@node2"],
     ["starting A on node2: the only node that can run it"])
case("all scores negative: stays stopped",
     cluster(prims_conf("A", locations=(("A", N1, -50), ("A", N2, -10)))), {"A": None}, [],
     ["leaving A stopped: no node can run it (A scores -50 on node1; A scores -10 on node2)"])
case("INFINITY + 100 saturates at INFINITY: a tie broken by node name",
     cluster(prims_conf("A", locations=(("A", N1, INFINITY), ("A", N1, 100), ("A", N2, INFINITY)))), {"A": N1},
     ["1 start A@node1"], ["starting A on node1: tie at INFINITY with node2, broken by node name"])
case("ties: lowest node name first, then the node with fewer resources",
     cluster(prims_conf("A", "B")), {"A": N1, "B": N2}, ["1 start A@node1", "2 start B@node2"],
     ["starting A on node1: tie at 0 with node2, broken by node name",
      "starting B on node2: tie at 0 with node1, broken by fewer resources on node2"])
case("ties: the current node wins over the name",
     run(cluster(prims_conf("A")), N2, "A"), {"A": N2}, [],
     ["keeping A on node2: tie at 0 with node1, and a tie favours the current node"])
case("ties: fewer assigned resources comes before the current node (no stickiness)",
     run(cluster(prims_conf("A", "B")), N1, "A", "B"), {"A": N1, "B": N2}, ["1 stop B@node1", "2 start B@node2 <1"],
     ["keeping A on node1: tie at 0 with node2, and a tie favours the current node",
      "moving B to node2: tie at 0 with node1, broken by fewer resources on node2"])
case("stickiness keeps two resources together on a tie",
     run(cluster(prims_conf("A", "B", stickiness=1)), N1, "A", "B"), {"A": N1, "B": N1}, [],
     ["keeping A on node1: preference 1 beats 0 on node2", "keeping B on node1: preference 1 beats 0 on node2"])
case("priority decides who is assigned first",
     cluster(prims_conf("A", "B", meta={"B": (("priority", "10"),)})), {"A": N2, "B": N1},
     ["1 start A@node2", "2 start B@node1"],
     ["starting B on node1: tie at 0 with node2, broken by node name",
      "starting A on node2: tie at 0 with node1, broken by fewer resources on node2"])

# --------------------------------------------------------------------------- colocation

case("INFINITY colocation: B runs where A runs, whatever B prefers",
     cluster(prims_conf("A", "B", locations=(("A", N1, 100), ("B", N2, 50)),
                        colocations=(ColocationConstraint("c1", "B", "A", INFINITY),))), {"A": N1, "B": N1},
     ["1 start A@node1", "2 start B@node1"],
     ["starting A on node1: preference 100 beats 50 on node2", "starting B on node1: the only node that can run it"])
case("influence: B banned from node1 pulls A (colocated INFINITY) to node2",
     cluster(prims_conf("A", "B", locations=(("A", N1, 100), ("B", N1, -INFINITY)),
                        colocations=(ColocationConstraint("c1", "B", "A", INFINITY),))), {"A": N2, "B": N2},
     ["1 start A@node2", "2 start B@node2"],
     ["starting A on node2: the only node that can run it", "starting B on node2: the only node that can run it"])
case("-INFINITY colocation: B avoids A's node",
     cluster(prims_conf("A", "B", locations=(("A", N1, 100),),
                        colocations=(ColocationConstraint("c1", "B", "A", -INFINITY),))), {"A": N1, "B": N2},
     ["1 start A@node1", "2 start B@node2"],
     ["starting A on node1: preference 100 beats 0 on node2", "starting B on node2: the only node that can run it"])
case("INFINITY colocation with a stopped primary: the dependent cannot run",
     cluster(prims_conf("A", "B", meta={"A": (("target-role", "Stopped"),)},
                        colocations=(ColocationConstraint("c1", "B", "A", INFINITY),))), {"A": None, "B": None}, [],
     ["leaving A stopped: target-role is Stopped", "leaving B stopped: it must run with A, which is not running"])
case("finite colocation adds its score where the primary runs",
     cluster(prims_conf("A", "B", locations=(("A", N1, 100), ("B", N2, 20)),
                        colocations=(ColocationConstraint("c1", "B", "A", 50),))), {"A": N1, "B": N1},
     ["1 start A@node1", "2 start B@node1"],
     ["starting A on node1: preference 100 beats 0 on node2", "starting B on node1: preference 50 beats 20 on node2"])
case("a group colocated with a primitive follows it",
     cluster(dataclasses.replace(esup_conf(), resources=esup_conf().resources + (ResourceConfig("D", "balancier:d"),),
                                 locations=(LocationConstraint("d2", "D", N2, 500),) + esup_conf().locations,
                                 colocations=(ColocationConstraint("c1", G, "D", INFINITY),))),
     {**group_at(N2), "D": N2}, ["1 start esup_ip@node2", "2 start esup_haproxy@node2 <1",
                                 "3 start esup_stunnel@node2 <2", "4 start D@node2"],
     ["starting D on node2: preference 600 beats 200 on node1",
      "starting esup_proxy on node2: the only node that can run it"])

# --------------------------------------------------------------------------- order

_AB = {"locations": (("A", N1, 100), ("B", N2, 100))}
case("Mandatory order: B starts after A",
     cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B"),), **_AB)),  # type: ignore[arg-type]
     {"A": N1, "B": N2}, ["1 start A@node1", "2 start B@node2 <1"],
     ["starting A on node1: preference 100 beats 0 on node2", "starting B on node2: preference 100 beats 0 on node1"])
case("Mandatory order: B cannot start while A is stopped",
     cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B"),), meta={"A": (("target-role", "Stopped"),)},
                        **_AB)),  # type: ignore[arg-type]
     {"A": None, "B": None}, [],
     ["leaving A stopped: target-role is Stopped", "leaving B stopped: it must start after A, which is stopped (o1)"])
case("Mandatory order: when A restarts, B restarts too (stop B, stop A, start A, start B)",
     fail(run(run(cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B"),), monitors=("A",),
                                     **_AB)), N1, "A"), N2, "B"), "A", N1),  # type: ignore[arg-type]
     {"A": N1, "B": N2},
     ["1 stop B@node2", "2 stop A@node1 <1", "3 start A@node1 <2", "4 start B@node2 <1,3", "5 monitor A@node1/10000 <3"],
     ["keeping A on node1: preference 100 beats 0 on node2", "keeping B on node2: preference 100 beats 0 on node1",
      "restarting A on node1: its monitor failed (rc=7), fail count 1", "restarting B on node2: A restarts before it (o1)"])
case("Optional order: B starts even though A is stopped",
     cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B", kind="Optional"),),
                        meta={"A": (("target-role", "Stopped"),)}, **_AB)),  # type: ignore[arg-type]
     {"A": None, "B": N2}, ["1 start B@node2"],
     ["leaving A stopped: target-role is Stopped", "starting B on node2: preference 100 beats 0 on node1"])
case("Optional order: orders the starts that happen in the same transition",
     cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B", kind="Optional"),),
                        **_AB)),  # type: ignore[arg-type]
     {"A": N1, "B": N2}, ["1 start A@node1", "2 start B@node2 <1"],
     ["starting A on node1: preference 100 beats 0 on node2", "starting B on node2: preference 100 beats 0 on node1"])
_STOP_AB = {"A": (("target-role", "Stopped"),), "B": (("target-role", "Stopped"),)}
case("symmetrical order: stops happen in reverse (B before A)",
     run(run(cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B"),), meta=_STOP_AB,
                                **_AB)), N1, "A"), N2, "B"),  # type: ignore[arg-type]
     {"A": None, "B": None}, ["1 stop B@node2", "2 stop A@node1 <1"],
     ["stopping A on node1: target-role is Stopped", "stopping B on node2: target-role is Stopped"])
case("non-symmetrical order: stops are not ordered",
     run(run(cluster(prims_conf("A", "B", orders=(OrderConstraint("o1", "A", "B", symmetrical=False),),
                                meta=_STOP_AB, **_AB)), N1, "A"), N2, "B"),  # type: ignore[arg-type]
     {"A": None, "B": None}, ["1 stop A@node1", "2 stop B@node2"],
     ["stopping A on node1: target-role is Stopped", "stopping B on node2: target-role is Stopped"])

# --------------------------------------------------------------------------- probes, monitors, cleanup

_P = prims_conf("A", locations=(("A", N1, 100),), monitors=("A",))
case("a probe finds A already running on its best node: no start, only its monitor",
     op(op(cluster(_P, probed=False), "A", N1, "probe", 0), "A", N2, "probe", 7), {"A": N1},
     ["1 monitor A@node1/10000"],
     ["keeping A on node1: preference 100 beats 0 on node2", "monitoring A on node1 every 10s: no such monitor is active"])
case("a probe finds A running on the wrong node: moved to its best node",
     op(op(cluster(_P, probed=False), "A", N1, "probe", 7), "A", N2, "probe", 0), {"A": N1},
     ["1 stop A@node2", "2 start A@node1 <1", "3 monitor A@node1/10000 <2"],
     ["moving A to node1: preference 100 beats 0 on node2"])
case("a recurring monitor answering rc 3 (unsupported) is not a failure",
     fail(run(cluster(_P), N1, "A"), "A", N1, rc=3), {"A": N1}, [],
     ["keeping A on node1: preference 100 beats 0 on node2"])
case("cleanup forgets a member's history: it is probed again and started after its probes",
     C.cleanup(fail(run(cluster(esup_conf()), N1), HAP, N1), HAP), group_at(N1),
     [f"1 probe {HAP}@node1", f"2 probe {HAP}@node2", f"3 start {HAP}@node1 <1,2"],
     ["probing esup_haproxy on node1: state unknown there", "probing esup_haproxy on node2: state unknown there",
      f"keeping esup_proxy on node1: {PREFER_1}"])
case("multiple-active=stop_only: stopped everywhere, started nowhere",
     run(run(cluster(prims_conf("A", locations=(("A", N1, 100),), meta={"A": (("multiple-active", "stop_only"),)})),
             N1, "A"), N2, "A"), {"A": None}, ["1 stop A@node1", "2 stop A@node2"],
     ["placing A on node1: preference 100 beats 0 on node2",
      "A is active on node1 and node2: stopping it everywhere (multiple-active=stop_only)"])
case("multiple-active=block: left alone",
     run(run(cluster(prims_conf("A", locations=(("A", N1, 100),), meta={"A": (("multiple-active", "block"),)})),
             N1, "A"), N2, "A"), {"A": None}, [],
     ["placing A on node1: preference 100 beats 0 on node2",
      "leaving A alone although it is active on node1 and node2 (multiple-active=block)"])
case("next_recheck: the earliest of a lifetime and a failure-timeout",
     C.migrate(fail(run(cluster(prims_conf("A", "B", monitors=("A",), failure_timeout_ms=2000_000)), N1, "A", "B"),
                    "A", N1, t=1000.0), "B", N2, lifetime_s=4000, now=1000),
     {"A": N1, "B": N2},
     ["1 stop A@node1", "2 stop B@node1", "3 start A@node1 <1", "4 start B@node2 <2", "5 monitor A@node1/10000 <3"],
     ["keeping A on node1: tie at 0 with node2, and a tie favours the current node",
      "moving B to node2: preference INFINITY beats 0 on node1",
      "restarting A on node1: its monitor failed (rc=7), fail count 1"], now=1500, recheck=3000)


# --------------------------------------------------------------------------- on-fail


def _onfail(policy: str, **options: object) -> Cib:
    conf = prims_conf("A", "B", locations=(("A", N1, 100), ("B", N1, 100)), monitors=("A",), on_fail=policy,
                      **options)
    return fail(run(cluster(conf), N1, "A", "B"), "A", N1)


case("on-fail=ignore: a failed monitor is pretended a success",
     _onfail("ignore"), {"A": N1, "B": N1}, [],
     ["ignoring the failure of A on node1 (on-fail=ignore)", "keeping A on node1: preference 100 beats 0 on node2",
      "keeping B on node1: preference 100 beats 0 on node2"])
case("on-fail=block: nothing more is done with the resource",
     _onfail("block"), {"A": N1, "B": N1}, [],
     ["leaving A blocked on node1: its monitor failed and on-fail=block (clean up to retry)",
      "keeping B on node1: preference 100 beats 0 on node2"])
case("on-fail=stop: stopped and left stopped",
     _onfail("stop"), {"A": None, "B": N1}, ["1 stop A@node1"],
     ["stopping A on node1: its monitor failed on node1 and on-fail=stop keeps it stopped (clean up to allow again)",
      "keeping B on node1: preference 100 beats 0 on node2"])
case("on-fail=standby: every resource leaves the node",
     _onfail("standby"), {"A": N2, "B": N2},
     ["1 stop A@node1", "2 stop B@node1", "3 start A@node2 <1", "4 start B@node2 <2", "5 monitor A@node2/10000 <3"],
     ["moving A to node2: node1 is in standby because A failed there (on-fail=standby)",
      "moving B to node2: node1 is in standby because A failed there (on-fail=standby)"])
case("on-fail=fence with fencing enabled: fence the node, then recover elsewhere",
     _onfail("fence", stonith_enabled=True), {"A": N2, "B": N2},
     ["1 fence node1", "2 start A@node2 <1", "3 start B@node2 <1", "4 monitor A@node2/10000 <2"],
     ["fencing node1: A failed on node1 (on-fail=fence)", "moving A to node2: node1 must be fenced",
      "moving B to node2: node1 must be fenced"])


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_policy_case(c: Case) -> None:
    t = schedule(c.cib, c.now)
    assert dict(t.placement) == c.placement
    assert fmt(t) == c.actions
    assert list(t.reasons) == c.reasons
    assert t.next_recheck == c.recheck
    # Same input, same output.
    assert schedule(c.cib, c.now) == t


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)
