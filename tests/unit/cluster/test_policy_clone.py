"""Clones and live migration in the policy engine (policy.py steps 8-9, policy_actions.py).

The recommended deployment: `proxy` cloned on both nodes (`proxy-clone`), `vip` (allow-migrate=true)
colocated with the clone (INFINITY) and ordered after it, preferring lb1 (200) over lb2 (100).
Action notation: "<id> <kind> <resource>@<node>[/<interval ms>][ <inputs>]".
"""

from __future__ import annotations

import dataclasses

import pytest

from balancier.cluster import cib as C
from balancier.cluster.config import ConfigError, load
from balancier.cluster.model import (
    INFINITY,
    Cib,
    CibConfiguration,
    CloneConfig,
    ClusterOptions,
    ColocationConstraint,
    LocationConstraint,
    OpConfig,
    OpResult,
    OrderConstraint,
    ResourceConfig,
)
from balancier.cluster.policy import Transition, schedule
from balancier.cluster.statusfmt import format_table, nagios, status_document

L1, L2 = "lb1", "lb2"
MON = (OpConfig("monitor", 1000, 500),)


def conf(migrate: bool = True, stickiness: int = 0, clone_meta: tuple[tuple[str, str], ...] = (),
         nodes: tuple[str, ...] = (L1, L2), threshold: int = 3) -> CibConfiguration:
    vip_meta = (("allow-migrate", "true"),) if migrate else ()
    return CibConfiguration(
        nodes=nodes,
        resources=(ResourceConfig("vip", "balancier:dummy", ops=MON, meta=vip_meta),
                   ResourceConfig("proxy", "balancier:dummy", ops=MON)),
        clones=(CloneConfig("proxy-clone", "proxy", clone_meta),),
        locations=(LocationConstraint("pref-1", "vip", L1, 200), LocationConstraint("pref-2", "vip", L2, 100)),
        colocations=(ColocationConstraint("vip-with-proxy", "vip", "proxy-clone", INFINITY),),
        orders=(OrderConstraint("proxy-then-vip", "proxy-clone", "vip"),),
        options=ClusterOptions(stickiness=stickiness, migration_threshold=threshold))


def cluster(c: CibConfiguration) -> Cib:
    cib = C.from_configuration(c)
    for n in c.nodes:
        cib = C.set_node_online(cib, n, True)
    cib = C.set_dc(C.set_quorum(cib, True), c.nodes[0])
    for r in c.resources:
        for n in c.nodes:
            cib = C.record_op(cib, OpResult(r.id, n, "probe", 7))
    return cib


def op(cib: Cib, res: str, node: str, name: str, rc: int = 0, interval: int = 0) -> Cib:
    return C.record_op(cib, OpResult(res, node, name, rc, interval_ms=interval))


def running(c: CibConfiguration | None = None, vip_on: str = L1) -> Cib:
    """Steady state: a proxy instance on every node, the VIP on vip_on, monitors active."""
    c = c or conf()
    cib = cluster(c)
    for n in c.nodes:
        cib = op(op(cib, "proxy", n, "start"), "proxy", n, "monitor", interval=1000)
    return op(op(cib, "vip", vip_on, "start"), "vip", vip_on, "monitor", interval=1000)


def acts(t: Transition) -> list[str]:
    out = []
    for a in t.actions:
        every = f"/{a.interval_ms}" if a.interval_ms else ""
        inputs = f" <{','.join(map(str, a.inputs))}" if a.inputs else ""
        out.append(f"{a.id} {a.kind} {a.resource}@{a.node}{every}{inputs}")
    return out


def test_first_start_runs_an_instance_everywhere_then_the_vip_after_its_node_instance() -> None:
    t = schedule(cluster(conf()), 0)
    assert dict(t.placement) == {"vip": L1, "proxy": "lb1,lb2", "proxy-clone": "lb1,lb2"}
    # the VIP waits for lb1's instance only (an order from a clone works per node)
    assert acts(t) == ["1 start proxy@lb1", "2 start vip@lb1 <1", "3 start proxy@lb2",
                       "4 monitor vip@lb1/1000 <2", "5 monitor proxy@lb1/1000 <1", "6 monitor proxy@lb2/1000 <3"]
    assert "running proxy-clone on lb1, lb2: one instance per node that can run it" in t.reasons


def test_steady_state_does_nothing() -> None:
    t = schedule(running(), 0)
    assert acts(t) == []
    assert t.reasons[0] == "keeping vip on lb1: preference 200 beats 100 on lb2"


def test_hard_failure_starts_only_the_vip_on_the_survivor() -> None:
    """The proxy already runs on lb2: the takeover is one start (plus its monitor)."""
    t = schedule(C.set_node_online(running(), L1, False), 0)
    assert acts(t) == ["1 start vip@lb2", "2 monitor vip@lb2/1000 <1"]
    assert "moving vip to lb2: lb1 is dead" in t.reasons
    assert "running proxy-clone on lb2: one instance per node that can run it; none on lb1 (lb1 is dead)" \
        in t.reasons


def test_planned_move_is_a_live_migration_make_before_break() -> None:
    t = schedule(C.migrate(running(), "vip", L2), 0)
    assert acts(t) == ["1 migrate_to vip@lb1", "2 migrate_from vip@lb2 <1", "3 stop vip@lb1 <2",
                       "4 monitor vip@lb2/1000 <2"]
    assert ("migrating vip from lb1 to lb2 (allow-migrate): migrate_to on lb1, migrate_from on lb2, then stop "
            "on lb1") in t.reasons


def test_without_allow_migrate_a_move_is_stop_then_start() -> None:
    t = schedule(C.migrate(running(conf(migrate=False)), "vip", L2), 0)
    assert acts(t) == ["1 stop vip@lb1", "2 start vip@lb2 <1", "3 monitor vip@lb2/1000 <2"]


def test_standby_migrates_the_vip_then_stops_the_instance_after_it() -> None:
    t = schedule(C.set_standby(running(), L1, True), 0)
    assert acts(t) == ["1 migrate_to vip@lb1", "2 migrate_from vip@lb2 <1", "3 stop vip@lb1 <2",
                       "4 stop proxy@lb1 <3", "5 monitor vip@lb2/1000 <2"]


def test_failback_waits_for_the_returning_instance_then_migrates() -> None:
    """lb1 returns: its proxy instance starts first while the VIP stays on lb2; once it runs, the VIP
    migrates back (preference 200 > 100, no stickiness) without stopping first."""
    cib = C.set_node_online(running(), L1, False)
    cib = op(op(cib, "vip", L2, "start"), "vip", L2, "monitor", interval=1000)
    cib = C.set_node_online(C.forget_node(cib, L1), L1, True)
    for r in ("vip", "proxy"):
        cib = op(cib, r, L1, "probe", 7)
    t = schedule(cib, 0)
    assert acts(t) == ["1 start proxy@lb1", "2 monitor proxy@lb1/1000 <1"]
    assert t.placement["vip"] == L2
    t = schedule(op(op(cib, "proxy", L1, "start"), "proxy", L1, "monitor", interval=1000), 0)
    assert acts(t) == ["1 migrate_to vip@lb2", "2 migrate_from vip@lb1 <1", "3 stop vip@lb2 <2",
                       "4 monitor vip@lb1/1000 <2"]


def test_failback_with_stickiness_stays() -> None:
    cib = running(conf(stickiness=1000), vip_on=L2)
    assert acts(schedule(cib, 0)) == []


def test_a_failed_instance_under_the_vip_sends_the_vip_to_the_healthy_one_and_restarts() -> None:
    """The instance on lb1 failed: the VIP migrates to lb2's healthy instance at once, the failed instance
    restarts in place after the VIP left (symmetrical order: the VIP stops first)."""
    t = schedule(op(running(), "proxy", L1, "monitor", 7, 1000), 0)
    assert t.placement["vip"] == L2
    assert "moving vip to lb2: the instance of proxy-clone on lb1 failed and restarts" in t.reasons
    assert "restarting proxy on lb1: its monitor failed (rc=7), fail count 1" in t.reasons
    assert acts(t) == ["1 migrate_to vip@lb1", "2 migrate_from vip@lb2 <1", "3 stop vip@lb1 <2",
                       "4 stop proxy@lb1 <3", "5 start proxy@lb1 <4", "6 monitor vip@lb2/1000 <2",
                       "7 monitor proxy@lb1/1000 <5"]


def test_an_instance_failing_away_from_the_vip_restarts_alone() -> None:
    t = schedule(op(running(), "proxy", L2, "monitor", 7, 1000), 0)
    assert acts(t) == ["1 stop proxy@lb2", "2 start proxy@lb2 <1", "3 monitor proxy@lb2/1000 <2"]
    assert t.placement["vip"] == L1


def test_single_node_failed_instance_restarts_the_vip_in_place() -> None:
    """No healthy instance elsewhere: Pacemaker's restart in place, the VIP around it (order)."""
    c = conf(nodes=(L1,))
    c = dataclasses.replace(c, locations=c.locations[:1])
    t = schedule(op(running(c), "proxy", L1, "monitor", 7, 1000), 0)
    assert acts(t) == ["1 stop vip@lb1", "2 stop proxy@lb1 <1", "3 start proxy@lb1 <2", "4 start vip@lb1 <1,3",
                       "5 monitor vip@lb1/1000 <4", "6 monitor proxy@lb1/1000 <3"]


def test_migration_threshold_bans_the_instance_and_the_vip_follows_the_clone() -> None:
    cib = running()
    for _ in range(3):
        cib = op(cib, "proxy", L1, "monitor", 7, 1000)
    t = schedule(cib, 0)
    assert t.placement == {"vip": L2, "proxy": L2, "proxy-clone": L2}
    assert "moving vip to lb2: proxy-clone has no instance on lb1" in t.reasons


def test_clone_max_limits_the_instances_and_stickiness_keeps_them() -> None:
    c = conf(clone_meta=(("clone-max", "1"),))
    t = schedule(cluster(c), 0)
    assert t.placement["proxy-clone"] == L1  # tie at 0, broken by node name
    cib = op(cluster(c), "proxy", L2, "start")
    assert schedule(cib, 0).placement["proxy-clone"] == L2  # the running instance sticks (1 for clones)


def test_dangling_migration_is_finished_by_stopping_the_source() -> None:
    cib = C.migrate(running(), "vip", L2)
    cib = op(op(cib, "vip", L1, "migrate_to"), "vip", L2, "migrate_from")
    t = schedule(cib, 0)
    assert "finishing the migration of vip to lb2: stopping it on lb1" in t.reasons
    assert acts(t) == ["1 stop vip@lb1", "2 monitor vip@lb2/1000"]


def test_no_migration_from_a_node_that_lost_connectivity() -> None:
    c = dataclasses.replace(conf(), options=dataclasses.replace(conf().options, ping_score_attribute="pingd"))
    cib = running(c)
    for n in (L1, L2):
        cib = C.set_attribute(cib, n, "pingd", "100")
    cib = C.set_attribute(cib, L1, "pingd", "0")
    t = schedule(cib, 0)
    assert acts(t) == ["1 stop vip@lb1", "2 stop proxy@lb1 <1", "3 start vip@lb2 <1", "4 monitor vip@lb2/1000 <3"]


@pytest.mark.parametrize("change, message", [
    ({"clones": (CloneConfig("c", "ghost"),)}, "clone 'c': unknown resource 'ghost'"),
    ({"clones": (CloneConfig("c", "proxy", (("clone-node-max", "2"),)),)}, "only 1 instance per node"),
    ({"clones": (CloneConfig("c", "proxy", (("globally-unique", "true"),)),)}, "only false is supported"),
    ({"clones": (CloneConfig("c", "proxy", (("clone-max", "x"),)),)}, "clone-max='x'"),
    ({"clones": (CloneConfig("c", "proxy"), CloneConfig("d", "proxy"))}, "'proxy' is already cloned by 'c'"),
    ({"colocations": (ColocationConstraint("x", "proxy-clone", "vip", INFINITY),)},
     "a clone ('proxy-clone') as the dependent is not supported"),
    ({"orders": (OrderConstraint("x", "proxy", "vip"),)}, "'proxy' is cloned by 'proxy-clone'; order the clone"),
    ({"locations": (LocationConstraint("x", "proxy", L1, 5),)}, "'proxy' is cloned by 'proxy-clone'"),
])
def test_clone_configuration_problems(change: dict[str, object], message: str) -> None:
    c = dataclasses.replace(conf(), **change)  # type: ignore[arg-type]
    assert any(message in p for p in c.problems()), c.problems()


def test_allow_migrate_must_be_a_boolean() -> None:
    c = conf()
    bad = dataclasses.replace(c, resources=(dataclasses.replace(c.resources[0], meta=(("allow-migrate", "maybe"),)),
                                            c.resources[1]))
    assert any("allow-migrate='maybe'" in p for p in bad.problems())


def test_a_clone_cannot_be_migrated() -> None:
    with pytest.raises(C.CibError, match="is a clone"):
        C.migrate(running(), "proxy-clone", L2)


def test_status_shows_the_clone_set() -> None:
    cib = running()
    doc = status_document(cib, cluster="bed", node=L1, dc=L1, quorum=True, members=[L1, L2], transition=None,
                          now=0.0)
    tops = {t["id"]: t for t in doc["resources"]}
    assert tops["proxy-clone"]["kind"] == "clone" and tops["proxy-clone"]["state"] == "started"
    assert tops["proxy-clone"]["nodes"] == [L1, L2]
    assert tops["vip"]["node"] == L1
    table = format_table(doc)
    assert " Clone Set: proxy-clone [proxy]\n     Started: [ lb1 lb2 ]" in table
    code, line = nagios(doc)
    assert code == 0 and "1 clone started on lb1 lb2" in line, line


def test_toml_clone_section(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "authkey").write_text("auth 1\n1 sha256 secret\n")
    (d / "authkey").chmod(0o600)
    text = ('[cluster]\nname = "c"\nkeepalive = "100ms"\nwarntime = "200ms"\ndeadtime = "300ms"\n'
            'authkey_file = "authkey"\n\n[[node]]\nname = "lb1"\naddress = "10.0.0.1"\n\n'
            '[[node]]\nname = "lb2"\naddress = "10.0.0.2"\n\n'
            '[[resource]]\nid = "vip"\nagent = "balancier:vip"\nparams = { ip = "10.0.0.100" }\n'
            'meta = { allow_migrate = true }\n\n'
            '[[resource]]\nid = "proxy"\nagent = "balancier:proxy"\nparams = { config = "/x.cfg" }\n\n'
            '[[clone]]\nid = "proxy-clone"\nresource = "proxy"\nmeta = { clone_node_max = 1, interleave = true }\n\n'
            '[[colocation]]\nresource = "vip"\nwith = "proxy-clone"\nscore = "INFINITY"\n\n'
            '[[order]]\nfirst = "proxy-clone"\nthen = "vip"\n')
    (d / "cluster.toml").write_text(text)
    cfg = load(str(d / "cluster.toml"))
    clone = cfg.configuration.clone("proxy-clone")
    assert clone is not None and clone.resource == "proxy" and clone.interleave
    assert cfg.configuration.allow_migrate("vip")
    (d / "cluster.toml").write_text(text.replace('resource = "proxy"\nmeta', 'resource = "proxi"\nmeta'))
    with pytest.raises(ConfigError, match=r"cluster.toml:\d+: clone\[0\]: clone 'proxy-clone': unknown resource"):
        load(str(d / "cluster.toml"))
