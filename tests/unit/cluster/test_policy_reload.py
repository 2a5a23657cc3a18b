"""The policy engine and definition changes (spec cluster.md §2.5): reload when the agent can, else restart.

Same notation as test_policy_table.py: "<id> <kind> <resource>@<node>[/<interval ms>][ <inputs>]".
Nodes record what they applied (params_digest, file_digest of the start/reload) and what a later
monitor saw (file_digest); reloadable says whether the agent can reload.
"""

from __future__ import annotations

import dataclasses

import pytest

from balancier.cluster import cib as C
from balancier.cluster.model import (
    Cib,
    CibConfiguration,
    ClusterOptions,
    GroupConfig,
    LocationConstraint,
    OpConfig,
    OpResult,
    ResourceConfig,
)
from balancier.cluster.policy import Transition, schedule

N1, N2 = "node1", "node2"
MON = (OpConfig("monitor", 10_000, 5_000),)
PROXY = ResourceConfig("proxy", "balancier:proxy", params=(("config", "/etc/p.cfg"),), ops=MON)
DUMMY = ResourceConfig("dummy", "ocf:heartbeat:Dummy", params=(("state", "/tmp/d"),), ops=MON)


def conf(*resources: ResourceConfig, group: bool = False) -> CibConfiguration:
    groups = (GroupConfig("g", tuple(r.id for r in resources)),) if group else ()
    target = "g" if group else resources[0].id
    return CibConfiguration(nodes=(N1, N2), resources=resources, groups=groups,
                            locations=(LocationConstraint("pref", target, N1, 100),),
                            options=ClusterOptions())


def running(cf: CibConfiguration, reloadable: dict[str, bool], file_digest: str = "f1") -> Cib:
    cib = C.from_configuration(cf)
    for n in (N1, N2):
        cib = C.set_node_online(cib, n, True)
    cib = C.set_dc(C.set_quorum(cib, True), N1)
    for r in cf.resources:
        cib = C.record_op(cib, OpResult(r.id, N2, "probe", 7))
        cib = C.record_op(cib, OpResult(r.id, N1, "start", 0, params_digest=r.params_digest,
                                        file_digest=file_digest, reloadable=reloadable[r.id]))
        cib = C.record_op(cib, OpResult(r.id, N1, "monitor", 0, interval_ms=10_000,
                                        params_digest=r.params_digest, file_digest=file_digest,
                                        reloadable=reloadable[r.id]))
    return cib


def with_param(cib: Cib, rid: str, name: str, value: str) -> Cib:
    cf = cib.configuration
    res = tuple(dataclasses.replace(r, params=tuple((k, value if k == name else v) for k, v in r.params))
                if r.id == rid else r for r in cf.resources)
    return C.replace_configuration(cib, dataclasses.replace(cf, resources=res))


def monitor_sees(cib: Cib, rid: str, file_digest: str) -> Cib:
    r = cib.configuration.resource(rid)
    assert r is not None
    return C.record_op(cib, OpResult(rid, N1, "monitor", 0, interval_ms=10_000, params_digest=r.params_digest,
                                     file_digest=file_digest, reloadable=True))


def fmt(t: Transition) -> list[str]:
    return [f"{a.id} {a.kind} {a.resource}@{a.node}" + (f"/{a.interval_ms}" if a.interval_ms else "")
            + (" <" + ",".join(map(str, a.inputs)) if a.inputs else "") for a in t.actions]


def reasons(t: Transition) -> list[str]:
    return [r for r in t.reasons if not r.startswith(("keeping", "starting"))]


CASES: list[tuple[str, Cib, list[str], list[str]]] = [
    ("unchanged definition: nothing to do",
     running(conf(PROXY), {"proxy": True}), [], []),
    ("proxy config file changed (seen by its monitor): reload in place",
     monitor_sees(running(conf(PROXY), {"proxy": True}), "proxy", "f2"),
     ["1 reload proxy@node1"], ["reloading proxy on node1: its configuration changed"]),
    ("proxy parameter changed in the CIB: reload in place",
     with_param(running(conf(PROXY), {"proxy": True}), "proxy", "config", "/etc/other.cfg"),
     ["1 reload proxy@node1"], ["reloading proxy on node1: its parameters changed"]),
    ("agent without reload: a parameter change restarts it (stop, then start, then its monitor)",
     with_param(running(conf(DUMMY), {"dummy": False}), "dummy", "state", "/tmp/e"),
     ["1 stop dummy@node1", "2 start dummy@node1 <1", "3 monitor dummy@node1/10000 <2"],
     ["restarting dummy on node1: its parameters changed and its agent cannot reload"]),
    ("a non-reloadable group member restarts, and the members after it restart too",
     with_param(running(conf(DUMMY, PROXY, group=True), {"dummy": False, "proxy": True}), "dummy", "state", "/x"),
     ["1 stop proxy@node1", "2 stop dummy@node1 <1", "3 start dummy@node1 <2", "4 start proxy@node1 <1,3",
      "5 monitor dummy@node1/10000 <3", "6 monitor proxy@node1/10000 <4"],
     ["restarting dummy on node1: its parameters changed and its agent cannot reload",
      "restarting proxy on node1: dummy restarts before it in g"]),
    ("the reload's result records the new digest: nothing more to do",
     C.record_op(monitor_sees(running(conf(PROXY), {"proxy": True}), "proxy", "f2"),
                 OpResult("proxy", N1, "reload", 0, params_digest=PROXY.params_digest, file_digest="f2",
                          reloadable=True)), [], []),
    ("a failed reload is a failure: restart in place",
     C.record_op(monitor_sees(running(conf(PROXY), {"proxy": True}), "proxy", "f2"),
                 OpResult("proxy", N1, "reload", 1, params_digest=PROXY.params_digest, reloadable=True)),
     ["1 stop proxy@node1", "2 start proxy@node1 <1", "3 monitor proxy@node1/10000 <2"],
     ["restarting proxy on node1: its reload failed (rc=1), fail count 1"]),
    ("results without digests (an older node) are never stale",
     with_param(C.record_op(C.record_op(C.set_dc(C.set_quorum(C.set_node_online(C.set_node_online(
         C.from_configuration(conf(DUMMY)), N1, True), N2, True), True), N1),
         OpResult("dummy", N2, "probe", 7)), OpResult("dummy", N1, "start", 0)), "dummy", "state", "/y"),
     ["1 monitor dummy@node1/10000"], ["monitoring dummy on node1 every 10s: no such monitor is active"]),
]


@pytest.mark.parametrize(("name", "cib", "actions", "said"), CASES, ids=[c[0] for c in CASES])
def test_definition_change(name: str, cib: Cib, actions: list[str], said: list[str]) -> None:
    t = schedule(cib, 0.0)
    assert fmt(t) == actions
    assert reasons(t) == said
    assert t.placement[cib.configuration.resources[0].id] == N1


def test_params_digest_follows_parameters_only() -> None:
    moved = dataclasses.replace(PROXY, ops=(), meta=(("priority", "5"),))
    assert moved.params_digest == PROXY.params_digest
    assert dataclasses.replace(PROXY, params=(("config", "/x"),)).params_digest != PROXY.params_digest
    # the order parameters are written in does not matter
    two = ResourceConfig("a", "ocf:x:y", params=(("a", "1"), ("b", "2")))
    assert two.params_digest == dataclasses.replace(two, params=(("b", "2"), ("a", "1"))).params_digest


def test_reload_result_round_trips_and_counts_as_started() -> None:
    r = OpResult("proxy", N1, "reload", 0, params_digest="p", file_digest="f", reloadable=True)
    assert OpResult.from_dict(r.to_dict()) == r
    cib = C.record_op(running(conf(PROXY), {"proxy": True}), r)
    assert cib.resource_status("proxy", N1).state == "started"
