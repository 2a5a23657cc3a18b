"""CIB operations: versioning, runtime constraints, fail counts, expiry, merge, persistence with a digest."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from balancier.cluster import cib as C
from balancier.cluster.cib import CibError
from balancier.cluster.model import (
    INFINITY,
    Cib,
    CibConfiguration,
    ClusterOptions,
    GroupConfig,
    LocationConstraint,
    OpConfig,
    OpResult,
    ResourceConfig,
    ResourceStatus,
)


def conf(**options: object) -> CibConfiguration:
    return CibConfiguration(
        nodes=("lb1", "lb2"),
        resources=(ResourceConfig("vip", "balancier:vip", ops=(OpConfig("monitor", 2000, 1000),)),
                   ResourceConfig("proxy", "balancier:proxy",
                                  ops=(OpConfig("monitor", 5000, 2000, on_fail="ignore"),)),
                   ResourceConfig("other", "lsb:other")),
        groups=(GroupConfig("esup", ("vip", "proxy")),),
        locations=(LocationConstraint("pref", "esup", "lb1", 200),),
        options=ClusterOptions(**options))  # type: ignore[arg-type]


def base(**options: object) -> Cib:
    cib = C.from_configuration(conf(**options))
    for n in ("lb1", "lb2"):
        cib = C.set_node_online(cib, n, True)
    return cib


def test_first_version_and_invalid_configuration() -> None:
    cib = C.from_configuration(conf())
    assert cib.version == (0, 1, 0)
    assert [n.name for n in cib.status.nodes] == ["lb1", "lb2"]
    bad = dataclasses.replace(conf(), locations=(LocationConstraint("x", "nope", "lb1", 1),))
    with pytest.raises(CibError, match="location 'x': unknown resource 'nope'"):
        C.from_configuration(bad)


def test_versioning_rules() -> None:
    cib = C.from_configuration(conf())
    s1 = C.set_node_online(cib, "lb1", True)
    assert s1.version == (0, 1, 1)  # status change: num_updates + 1
    s2 = C.set_quorum(s1, True)
    assert s2.version == (0, 1, 2)
    c1 = C.migrate(s2, "esup", "lb2")
    assert c1.version == (0, 2, 0)  # configuration change: epoch + 1, num_updates reset
    assert C.set_quorum(c1, True) is c1  # no change, no bump: the same object
    assert C.unmigrate(C.unmigrate(c1, "esup"), "esup").version == (0, 3, 0)
    a = C.bump_admin_epoch(c1)
    assert a.version == (1, 2, 0) and a.version > c1.version


def test_migrate_writes_cli_prefer_and_clears_previous_ones() -> None:
    cib = C.ban(base(), "esup", "lb2", now=0)
    cib = C.migrate(cib, "esup", "lb1")
    cib = C.migrate(cib, "esup", "lb2", lifetime_s=3600, now=100.0)
    cli = [c for c in cib.configuration.locations if c.id.startswith("cli-")]
    # the ban on the target and the earlier cli-prefer are gone; one cli-prefer with its expiry remains
    assert cli == [LocationConstraint("cli-prefer-esup", "esup", "lb2", INFINITY, 3700.0)]
    cib = C.ban(cib, "esup", "lb1")
    assert {c.id for c in cib.configuration.locations} == {"pref", "cli-prefer-esup", "cli-ban-esup-on-lb1"}
    cib = C.unmigrate(cib, "esup")
    assert [c.id for c in cib.configuration.locations] == ["pref"]


def test_migrate_refuses_bad_targets() -> None:
    cib = C.record_op(base(), OpResult("vip", "lb2", "start", 0))
    with pytest.raises(CibError, match="esup is already active on lb2"):
        C.migrate(cib, "esup", "lb2")
    assert C.migrate(cib, "esup", "lb2", force=True).configuration.locations[-1].node == "lb2"
    with pytest.raises(CibError, match="no such resource 'nope'"):
        C.migrate(cib, "nope", "lb1")
    with pytest.raises(CibError, match="no such node 'lb9'"):
        C.ban(cib, "esup", "lb9")


def test_standby_forever_and_until_reboot() -> None:
    cib = C.set_standby(base(), "lb1", True)
    assert cib.configuration.standby_nodes == ("lb1",) and cib.standby("lb1")
    cib = C.set_standby(cib, "lb2", True, lifetime="reboot")
    assert cib.node("lb2").standby and "lb2" not in cib.configuration.standby_nodes
    # a reboot (offline) forgets the transient standby, not the persistent one
    cib = C.set_node_online(C.set_node_online(cib, "lb2", False), "lb2", True)
    assert not cib.standby("lb2")
    cib = C.set_node_online(C.set_node_online(cib, "lb1", False), "lb1", True)
    assert cib.standby("lb1")
    cib = C.set_standby(cib, "lb1", False)
    assert not cib.standby("lb1")


def test_target_role() -> None:
    cib = C.set_target_role(base(), "esup", "Stopped")
    assert cib.configuration.meta("vip", "target-role") == "Stopped"
    cib = C.set_target_role(cib, "esup", "Started")
    assert cib.configuration.group("esup").meta == (("target-role", "Started"),)  # type: ignore[union-attr]
    with pytest.raises(CibError, match="target-role must be Started or Stopped"):
        C.set_target_role(cib, "vip", "Master")


def fc(cib: Cib, res: str, node: str) -> int:
    return cib.resource_status(res, node).fail_count


def test_fail_counts_follow_the_spec() -> None:
    cib = base()
    cib = C.record_op(cib, OpResult("vip", "lb1", "start", 1, time=5.0))
    assert fc(cib, "vip", "lb1") == INFINITY  # start-failure-is-fatal
    assert cib.resource_status("vip", "lb1").last_failure == 5.0
    soft = C.record_op(base(start_failure_is_fatal=False), OpResult("vip", "lb1", "start", 1))
    assert fc(soft, "vip", "lb1") == 1
    cib = C.record_op(cib, OpResult("other", "lb1", "stop", 1))
    assert fc(cib, "other", "lb1") == INFINITY  # a failed stop
    for i in range(3):
        cib = C.record_op(cib, OpResult("vip", "lb2", "monitor", 7, interval_ms=2000, time=float(i)))
    assert fc(cib, "vip", "lb2") == 3  # +1 per failed monitor
    cib = C.record_op(cib, OpResult("vip", "lb2", "monitor", 0, interval_ms=2000))
    assert fc(cib, "vip", "lb2") == 3  # a later success does not reset it
    cib = C.record_op(cib, OpResult("other", "lb2", "probe", 1))
    assert fc(cib, "other", "lb2") == 0  # probes never count
    cib = C.record_op(cib, OpResult("proxy", "lb2", "monitor", 7, interval_ms=5000))
    assert fc(cib, "proxy", "lb2") == 0  # on-fail=ignore


def test_record_op_numbers_calls_and_forgets_cancelled_monitors() -> None:
    cib = C.record_op(base(), OpResult("vip", "lb1", "start", 0))
    cib = C.record_op(cib, OpResult("vip", "lb1", "monitor", 0, interval_ms=2000))
    rs = cib.resource_status("vip", "lb1")
    assert [o.call_id for o in rs.ops] == [1, 2]
    cib = C.record_op(cib, OpResult("vip", "lb1", "stop", 0))
    assert [(o.op, o.call_id) for o in cib.resource_status("vip", "lb1").ops] == [("start", 1), ("stop", 3)]
    with pytest.raises(CibError, match="no such primitive resource 'esup'"):
        C.record_op(cib, OpResult("esup", "lb1", "start", 0))
    with pytest.raises(CibError, match="unknown operation 'promote'"):
        C.record_op(cib, OpResult("vip", "lb1", "promote", 0))


def test_cleanup_forgets_history_of_group_members() -> None:
    cib = base()
    for r in ("vip", "proxy"):
        for n in ("lb1", "lb2"):
            cib = C.record_op(cib, OpResult(r, n, "start", 1))
    one = C.cleanup(cib, "esup", "lb1")
    assert {(r.resource, r.node) for r in one.status.resources} == {("vip", "lb2"), ("proxy", "lb2")}
    assert one.resource_status("vip", "lb1").state == "unknown"
    assert C.cleanup(cib, "esup").status.resources == ()
    assert C.cleanup(cib, "other") is cib


def test_node_history_is_replaced_by_what_the_node_reports() -> None:
    cib = C.record_op(C.record_op(base(), OpResult("vip", "lb1", "start", 0)), OpResult("vip", "lb2", "probe", 7))
    fresh = ResourceStatus("proxy", "lb1", (OpResult("proxy", "lb1", "probe", 0, call_id=1),))
    cib2 = C.set_node_history(cib, "lb1", (fresh,))
    assert cib2.resource_status("vip", "lb1").state == "unknown"
    assert cib2.resource_status("proxy", "lb1").state == "started"
    assert cib2.resource_status("vip", "lb2").state == "stopped"  # other nodes untouched
    assert C.forget_node(cib2, "lb1").resource_status("proxy", "lb1").state == "unknown"
    with pytest.raises(CibError, match="history of proxy on lb1 reported by lb2"):
        C.set_node_history(cib, "lb2", (fresh,))


def test_expire_drops_lifetimes_and_failures() -> None:
    cib = base(failure_timeout_ms=60_000)
    cib = C.migrate(cib, "esup", "lb2", lifetime_s=100, now=0.0)
    cib = C.record_op(cib, OpResult("vip", "lb1", "monitor", 7, interval_ms=2000, time=10.0))
    assert C.expire(cib, 50.0) is cib  # nothing due yet
    mid = C.expire(cib, 75.0)  # the failure (10 + 60 s) expired, the lifetime (100 s) not yet
    assert fc(mid, "vip", "lb1") == 0 and mid.resource_status("vip", "lb1").last_failure is None
    assert mid.resource_status("vip", "lb1").state == "failed"  # the last result still decides the state
    assert any(c.id == "cli-prefer-esup" for c in mid.configuration.locations)
    late = C.expire(mid, 100.0)
    assert [c.id for c in late.configuration.locations] == ["pref"]
    assert late.epoch == mid.epoch + 1


def test_merge_highest_version_wins_and_status_by_call_id() -> None:
    a = C.record_op(base(), OpResult("vip", "lb1", "start", 0, call_id=5))
    b = C.migrate(C.record_op(base(), OpResult("vip", "lb1", "start", 0, call_id=4)), "esup", "lb2")
    b = C.record_op(b, OpResult("vip", "lb2", "probe", 7, call_id=1))
    assert b.version > a.version
    m = C.merge(a, b)
    assert m.configuration == b.configuration and m.version == b.version
    assert m.resource_status("vip", "lb1").last_call.call_id == 5  # type: ignore[union-attr]  # newer history
    assert m.resource_status("vip", "lb2").state == "stopped"
    assert C.merge(b, a) == m
    # equal versions: the first argument wins
    tie = C.set_quorum(base(), True)
    other = C.set_dc(base(), "lb2")
    assert C.merge(tie, other).dc is None and C.merge(other, tie).dc == "lb2"


def test_json_and_digest() -> None:
    cib = C.migrate(base(), "esup", "lb2", lifetime_s=10, now=1.0)
    text = C.to_json(cib)
    assert C.from_json(text) == cib
    assert C.digest(C.from_json(text)) == C.digest(cib)
    assert C.digest(C.set_quorum(cib, True)) != C.digest(cib)
    # include_status=False covers only what is persisted: version + configuration
    same_version = dataclasses.replace(cib, have_quorum=not cib.have_quorum)
    assert C.digest(same_version, include_status=False) == C.digest(cib, include_status=False)
    assert C.digest(same_version) != C.digest(cib)
    assert C.digest(C.bump_admin_epoch(cib), include_status=False) != C.digest(cib, include_status=False)
    with pytest.raises(CibError, match="not a valid CIB"):
        C.from_json('{"epoch": "x"}')


def test_save_and_load(tmp_path: Path) -> None:
    cib = C.record_op(C.migrate(base(), "esup", "lb2"), OpResult("vip", "lb2", "start", 0))
    path = tmp_path / "cib.json"
    C.save(path, cib)
    loaded = C.load(path)
    assert loaded.version == cib.version and loaded.configuration == cib.configuration
    # status is not persisted: rebuilt from the nodes
    assert loaded.status.resources == () and not loaded.have_quorum and loaded.dc is None
    assert all(not n.online for n in loaded.status.nodes)
    # overwrite atomically; no temporary file left behind
    C.save(path, C.unmigrate(cib, "esup"))
    assert C.load(path).configuration.locations == (LocationConstraint("pref", "esup", "lb1", 200),)
    assert os.listdir(tmp_path) == ["cib.json"]


def test_load_refuses_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "cib.json"
    C.save(path, base())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CibError, match="torn or corrupt CIB file"):
        C.load(path)


def test_load_refuses_a_hand_edit(tmp_path: Path) -> None:
    path = tmp_path / "cib.json"
    C.save(path, base())
    doc = json.loads(path.read_text())
    doc["configuration"]["locations"][0]["score"] = 300
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(CibError, match="digest mismatch .*edited by hand"):
        C.load(path)
    doc.pop("digest")
    path.write_text(json.dumps(doc))
    with pytest.raises(CibError, match="no digest"):
        C.load(path)
    path.write_text("[]")
    with pytest.raises(CibError, match="not a balancier-cib/1 file"):
        C.load(path)
