"""The cluster model: score arithmetic, value parsers, serialisation, derived resource state, checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancier.cluster.model import (
    INFINITY,
    Cib,
    CibConfiguration,
    CibStatus,
    ClusterOptions,
    ColocationConstraint,
    GroupConfig,
    LocationConstraint,
    NodeStatus,
    OpConfig,
    OpResult,
    OrderConstraint,
    ResourceConfig,
    ResourceStatus,
    agent_parts,
)
from balancier.cluster.scores import (
    ScoreError,
    add,
    format_duration_ms,
    format_score,
    parse_duration_ms,
    parse_score,
    scale,
    total,
)

NEG = -INFINITY


@pytest.mark.parametrize("a,b,expected", [
    (1, 2, 3),
    (INFINITY, NEG, NEG),  # -INFINITY dominates
    (NEG, INFINITY, NEG),
    (INFINITY, 5, INFINITY),
    (INFINITY, -5, INFINITY),
    (NEG, 5, NEG),
    (INFINITY, INFINITY, INFINITY),
    (999_999, 5, INFINITY),  # plain sums are clamped
    (-999_999, -5, NEG),
    (200, -300, -100),
    (-2 * INFINITY, 10, NEG),
])
def test_add_saturates(a: int, b: int, expected: int) -> None:
    assert add(a, b) == expected


@given(st.lists(st.integers(-INFINITY, INFINITY), max_size=6))
def test_total_is_bounded_and_infinities_win(values: list[int]) -> None:
    t = total(*values)
    assert -INFINITY <= t <= INFINITY
    if NEG in values:
        assert t == NEG and total(*reversed(values)) == NEG
    elif INFINITY in values and sum(v for v in values if v < 0) > NEG:
        assert t == INFINITY  # the negatives never reached -INFINITY on their own
    elif abs(sum(values)) < INFINITY and all(abs(v) < INFINITY // 10 for v in values):
        assert t == sum(values)


@pytest.mark.parametrize("text,expected", [
    ("INFINITY", INFINITY), ("+INFINITY", INFINITY), ("-INFINITY", NEG), ("inf", INFINITY), ("-inf", NEG),
    ("200", 200), ("-50", -50), ("+7", 7), ("5000000", INFINITY), ("-5000000", NEG), (12, 12),
])
def test_parse_score(text: str | int, expected: int) -> None:
    assert parse_score(text) == expected


@pytest.mark.parametrize("bad", ["", "1.5", "ten", "0x10", "--1"])
def test_parse_score_rejects(bad: str) -> None:
    with pytest.raises(ScoreError, match="invalid score"):
        parse_score(bad)


def test_format_and_scale() -> None:
    assert [format_score(v) for v in (INFINITY, NEG, 3)] == ["INFINITY", "-INFINITY", "3"]
    assert scale(NEG, INFINITY) == NEG  # a mandatory colocation carries bans in full
    assert scale(200, -INFINITY) == -200
    assert scale(200, 100) == 0  # a finite colocation barely carries preferences (Pacemaker truncates)
    assert scale(INFINITY, 500_000) == 500_000


@pytest.mark.parametrize("text,ms", [
    ("30", 30_000), ("30s", 30_000), ("500ms", 500), ("2min", 120_000), ("2m", 120_000), ("1h", 3_600_000),
    ("1.5s", 1_500), (5, 5_000),
])
def test_parse_duration(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_duration_errors_and_format() -> None:
    with pytest.raises(ScoreError, match="invalid duration"):
        parse_duration_ms("soon")
    assert [format_duration_ms(v) for v in (500, 1000, 60_000, 3_600_000, 0)] == ["500ms", "1s", "1min", "1h", "0s"]


def test_agent_parts() -> None:
    assert agent_parts("ocf:heartbeat:IPaddr2") == ("ocf", "heartbeat", "IPaddr2")
    assert agent_parts("lsb:haproxy") == ("lsb", None, "haproxy")
    assert agent_parts("balancier:vip") == ("balancier", None, "vip")
    for bad in ("ocf:IPaddr2", "xen:foo", "lsb", "lsb:"):
        with pytest.raises(ValueError, match="agent"):
            agent_parts(bad)


def _full_cib() -> Cib:
    conf = CibConfiguration(
        nodes=("lb1", "lb2"),
        resources=(ResourceConfig("vip", "balancier:vip", (("ip", "10.0.0.100"),),
                                  (OpConfig("monitor", 2000, 1000), OpConfig("stop", on_fail="block")),
                                  (("priority", "5"),)),
                   ResourceConfig("proxy", "balancier:proxy")),
        groups=(GroupConfig("esup", ("vip", "proxy"), (("resource-stickiness", "100"),)),),
        locations=(LocationConstraint("l1", "esup", "lb1", 200), LocationConstraint("cli-prefer-esup", "esup", "lb2",
                                                                                    INFINITY, 99.5)),
        colocations=(), orders=(),
        options=ClusterOptions(stickiness=3, no_quorum_policy="ignore", ping_score_attribute="pingd"),
        standby_nodes=("lb2",))
    status = CibStatus(
        nodes=(NodeStatus("lb1", online=True, attributes=(("pingd", "100"),), is_dc=True), NodeStatus("lb2")),
        resources=(ResourceStatus("vip", "lb1", (OpResult("vip", "lb1", "start", 0, call_id=3, time=1.5),),
                                  fail_count=2, last_failure=1.0),))
    return Cib(admin_epoch=1, epoch=7, num_updates=3, configuration=conf, status=status, have_quorum=True, dc="lb1")


def test_round_trip_to_dict() -> None:
    cib = _full_cib()
    data = cib.to_dict()
    assert data["configuration"]["resources"][0]["params"] == [["ip", "10.0.0.100"]]
    assert Cib.from_dict(data) == cib
    assert cib.version == (1, 7, 3)


def test_from_dict_rejects_unknown_fields_and_wrong_types() -> None:
    data = _full_cib().to_dict()
    data["configuration"]["options"]["bogus"] = 1
    with pytest.raises(ValueError, match="unknown field"):
        Cib.from_dict(data)
    data = _full_cib().to_dict()
    data["epoch"] = "7"
    with pytest.raises(TypeError, match="expected int"):
        Cib.from_dict(data)


def test_meta_inheritance_and_defaults() -> None:
    conf = _full_cib().configuration
    assert conf.stickiness("vip") == 100  # from the group
    assert conf.priority("vip") == 5  # its own
    assert conf.meta("proxy", "target-role") == "Started"  # Pacemaker's default
    assert conf.migration_threshold("proxy") == INFINITY  # current default: INFINITY, not 0
    assert conf.failure_timeout_ms("proxy") == 0
    assert conf.resource("vip") is not None and conf.resource("vip").op("stop") is not None  # type: ignore[union-attr]
    stop = OpConfig("stop")
    assert (stop.effective_on_fail(True), stop.effective_on_fail(False)) == ("fence", "block")
    assert OpConfig("monitor", 1000).effective_on_fail(False) == "restart"


def _rs(*ops: tuple[str, int, int]) -> ResourceStatus:
    return ResourceStatus("r", "n", tuple(OpResult("r", "n", o, rc, interval_ms=iv, call_id=i + 1)
                                          for i, (o, rc, iv) in enumerate(ops)))


@pytest.mark.parametrize("ops,state", [
    ((), "unknown"),
    ((("probe", 7, 0),), "stopped"),
    ((("probe", 0, 0),), "started"),
    ((("probe", 5, 0),), "stopped"),  # not installed: not running here
    ((("probe", 1, 0),), "failed"),  # odd probe: must be stopped before anything else
    ((("monitor", 7, 0),), "stopped"),  # a monitor with interval 0 is a probe
    ((("probe", 7, 0), ("start", 0, 0)), "started"),
    ((("probe", 7, 0), ("start", 1, 0)), "failed"),
    ((("start", 0, 0), ("monitor", 0, 10_000)), "started"),
    ((("start", 0, 0), ("monitor", 7, 10_000)), "failed"),
    ((("start", 0, 0), ("monitor", 3, 10_000)), "started"),  # unsupported recurring op: no recovery
    ((("start", 0, 0), ("monitor", 190, 10_000)), "started"),  # degraded is success
    ((("start", 0, 0), ("stop", 0, 0)), "stopped"),
    ((("start", 0, 0), ("stop", 7, 0)), "stopped"),  # a stop that finds nothing running reached its goal
    ((("start", 0, 0), ("stop", 1, 0)), "blocked"),
])
def test_resource_state(ops: tuple[tuple[str, int, int], ...], state: str) -> None:
    assert _rs(*ops).state == state


@pytest.mark.parametrize("op,ok,hard,fatal", [
    (OpResult("r", "n", "start", 0), True, False, False),
    (OpResult("r", "n", "start", 1), False, False, False),
    (OpResult("r", "n", "start", 5), False, True, False),
    (OpResult("r", "n", "start", 3), False, True, False),  # rc 3 of a non-recurring op is hard
    (OpResult("r", "n", "monitor", 3, interval_ms=1000), True, False, False),
    (OpResult("r", "n", "monitor", 2, interval_ms=1000), False, True, False),
    (OpResult("r", "n", "start", 6), False, False, True),
    (OpResult("r", "n", "probe", 5), True, True, False),
    (OpResult("r", "n", "start", 0, timed_out=True), False, False, False),
])
def test_op_classification(op: OpResult, ok: bool, hard: bool, fatal: bool) -> None:
    assert (op.ok, op.hard, op.fatal) == (ok, hard, fatal)


def test_monitor_active_since_last_start() -> None:
    rs = _rs(("start", 0, 0), ("monitor", 0, 10_000))
    assert rs.monitor_active(10_000) and not rs.monitor_active(5_000)
    restarted = ResourceStatus("r", "n", rs.ops + (OpResult("r", "n", "start", 0, call_id=9),))
    assert not restarted.monitor_active(10_000)


@pytest.mark.parametrize("change,message", [
    ({"resources": (ResourceConfig("a", "balancier:x"), ResourceConfig("a", "balancier:y"))}, "duplicate id 'a'"),
    ({"resources": (ResourceConfig("a", "nope:x"),)}, "resource 'a': agent 'nope:x'"),
    ({"resources": (ResourceConfig("a", "balancier:x", meta=(("colour", "red"),)),)},
     "unsupported meta-attribute 'colour'"),
    ({"resources": (ResourceConfig("a", "balancier:x", meta=(("target-role", "Slave"),)),)},
     "meta-attribute target-role='Slave'"),
    ({"resources": (ResourceConfig("a", "balancier:x", meta=(("resource-stickiness", "lots"),)),)},
     "invalid score"),
    ({"resources": (ResourceConfig("a", "balancier:x", ops=(OpConfig("monitor", 1000, 2000),)),)},
     "monitor timeout 2000ms must be shorter than its interval 1000ms"),
    ({"resources": (ResourceConfig("a", "balancier:x", ops=(OpConfig("promote"),)),)},
     "unsupported operation 'promote'"),
    ({"resources": (ResourceConfig("a", "balancier:x", ops=(OpConfig("monitor", 10_000, 2000, role="Stopped"),)),)},
     "operation monitor role 'Stopped': only Started is supported"),
    ({"groups": (GroupConfig("g", ("a", "zz")),)}, "group 'g': unknown resource 'zz'"),
    ({"groups": (GroupConfig("g", ("a",)), GroupConfig("h", ("a",)))}, "resource 'a' is in groups 'g' and 'h'"),
    ({"locations": (LocationConstraint("l", "a", "lb9", 1),)}, "location 'l': unknown node 'lb9'"),
    ({"locations": (LocationConstraint("l", "b", "lb1", 1),)}, "location 'l': unknown resource 'b'"),
    ({"colocations": (ColocationConstraint("c", "a", "a", 1),)}, "cannot be colocated with itself"),
    ({"orders": (OrderConstraint("o", "a", "b"),)}, "order 'o': unknown resource 'b'"),
    ({"orders": (OrderConstraint("o", "a", "a", kind="Sometimes"),)}, "kind must be Mandatory, Optional"),
    ({"options": ClusterOptions(no_quorum_policy="suicide")}, "no-quorum-policy 'suicide'"),
    ({"standby_nodes": ("lb7",)}, "standby: unknown node 'lb7'"),
])
def test_problems(change: dict[str, object], message: str) -> None:
    base = {"nodes": ("lb1", "lb2"), "resources": (ResourceConfig("a", "balancier:x"),)}
    conf = CibConfiguration(**{**base, **change})  # type: ignore[arg-type]
    problems = conf.problems()
    assert any(message in p for p in problems), problems


def test_constraints_on_group_members_are_refused() -> None:
    conf = CibConfiguration(nodes=("lb1",), resources=(ResourceConfig("a", "balancier:x"),
                                                       ResourceConfig("b", "balancier:x")),
                            groups=(GroupConfig("g", ("a",)),),
                            colocations=(ColocationConstraint("c", "b", "a", INFINITY),))
    assert conf.problems() == ("colocation 'c': 'a' is a member of group 'g'; constrain the group",)
    assert _full_cib().configuration.problems() == ()
