"""The drill's pure part: scenario plans, limits, selection, verdicts and the report (no I/O)."""

from __future__ import annotations

import json

import pytest

from balancier.testbed import drill_plan as dp

T = dp.Timers(keepalive_ms=100, deadtime_ms=300, monitor_interval_ms=1000, monitor_timeout_ms=800)
ALL = frozenset(dp.INJECTOR_ACTIONS)


def ctx(**kw: object) -> dp.Context:
    base: dict[str, object] = dict(nodes=("lb1", "lb2"), group="esup_proxy", active="lb1", timers=T, can=ALL,
                                   server="ents2", migrations=4)
    base.update(kw)
    return dp.Context(**base)  # type: ignore[arg-type]


def actions(p: dp.ScenarioPlan) -> list[tuple[str, str | None]]:
    return [(s.action, s.node) for s in p.steps]


def test_every_scenario_has_exactly_one_fault_and_ends_where_it_started() -> None:
    for n in dp.SCENARIOS:
        (p,) = dp.plan([n], ctx())
        assert sum(s.fault for s in p.steps) == 1, n
        # once a restoring step appears, nothing after it is part of the event except checks
        waits = [s for s in p.steps if s.action == "wait_group"]
        if waits:
            assert waits[-1].node == "lb1", f"scenario {n} must leave the group on lb1"


def test_scenario1_kills_the_active_node_then_restores_it() -> None:
    (p,) = dp.plan([1], ctx(active="lb2"))
    assert (p.active, p.other) == ("lb2", "lb1")
    assert actions(p)[:3] == [("kill_node", "lb2"), ("wait_group", "lb1"), ("wait_service", None)]
    kill = p.steps[0]
    assert kill.fault and kill.jitter and kill.measured
    restore = [s for s in p.steps if s.action == "restore_node"]
    assert restore and restore[0].node == "lb2" and not restore[0].measured


def test_scenario4_alternates_and_comes_back_with_an_odd_count() -> None:
    (p,) = dp.plan([4], ctx(migrations=3))
    moves = [s.node for s in p.steps if s.action == "migrate"]
    assert moves == ["lb2", "lb1", "lb2", "lb1"]  # three measured moves, one unmeasured back home
    assert [s.measured for s in p.steps if s.action == "migrate"] == [True, True, True, False]
    assert p.steps[0].fault and not any(s.fault for s in p.steps[1:])
    assert p.steps[-1].action == "unmigrate"
    assert p.limits == dp.Limits(0, 0)


def test_scenario5_follows_stickiness() -> None:
    (back,) = dp.plan([5], ctx(stickiness=0))
    (stay,) = dp.plan([5], ctx(stickiness=100))
    fault = next(s for s in back.steps if s.fault)
    assert fault.action == "restore_node" and fault.node == "lb1"
    assert [s.node for s in back.steps if s.action == "wait_group" and s.measured] == ["lb1"]
    assert [s.node for s in stay.steps if s.action == "wait_group" and s.measured] == ["lb2"]
    # with stickiness the drill moves the group home afterwards, as a planned (unmeasured) move
    assert [(s.action, s.node) for s in stay.steps if not s.measured][-3:] == [
        ("migrate", "lb1"), ("wait_group", "lb1"), ("unmigrate", None)]


def test_scenario7_checks_sessions_of_the_other_servers() -> None:
    (p,) = dp.plan([7], ctx(server="ents3"))
    assert p.sessions and p.victim == "ents3"
    assert actions(p)[0] == ("kill_server", "ents3") and ("start_server", "ents3") in actions(p)
    with pytest.raises(dp.PlanError, match="server"):
        dp.plan([7], ctx(server=None))


def test_missing_injector_commands_are_named() -> None:
    with pytest.raises(dp.PlanError, match=r"scenario 3 needs break_tls, reload_proxy, repair_tls"):
        dp.plan([3], ctx(can=frozenset({"kill_node"})))
    assert dp.plan([4], ctx(can=frozenset()))  # migrations need only the admin API


def test_one_node_cannot_be_drilled() -> None:
    with pytest.raises(dp.PlanError, match="second node"):
        dp.plan([4], ctx(nodes=("lb1",)))
    with pytest.raises(dp.PlanError, match="does not run on a cluster node"):
        dp.plan([4], ctx(active="lb9"))


@pytest.mark.parametrize("text, want", [("1,2,4", [1, 2, 4]), ("4, 1,4", [4, 1]), ("all", [1, 2, 3, 4, 5, 7, 8])])
def test_selection(text: str, want: list[int]) -> None:
    assert dp.parse_selection(text) == want


@pytest.mark.parametrize("text", ["6", "9", "1,x", ""])
def test_selection_rejects_unknown(text: str) -> None:
    with pytest.raises(dp.PlanError, match="unknown scenario"):
        dp.parse_selection(text)


def test_default_limits_follow_the_timers() -> None:
    assert dp.default_limits(1, T) == dp.Limits(300 + 100 + dp.START_BUDGET_MS, None)
    assert dp.default_limits(8, T) == dp.default_limits(1, T)
    assert dp.default_limits(2, T) == dp.Limits(1000 + 800 + dp.START_BUDGET_MS, None)
    assert dp.default_limits(7, T) == dp.Limits(None, 2)
    for n in (3, 4, 5):
        assert dp.default_limits(n, T) == dp.Limits(0, 0)


def test_limit_overrides_global_and_per_scenario() -> None:
    outage = dp.parse_limit("2000,4=10", "--max-outage-ms")
    failed = dp.parse_limit("1=5", "--max-failed")
    assert dp.limits_for(4, T, outage, failed) == dp.Limits(10, 0)
    assert dp.limits_for(1, T, outage, failed) == dp.Limits(2000, 5)
    assert dp.limits_for(7, T, None, None) == dp.Limits(None, 2)
    for bad in ("x", "-1", "6=3"):
        with pytest.raises(dp.PlanError):
            dp.parse_limit(bad, "--max-outage-ms")


@pytest.mark.parametrize("fields, passed, why", [
    (dict(outage_ms=120.0, failed=12, max_outage_ms=400.0), True, []),
    (dict(outage_ms=520.0, failed=52, max_outage_ms=400.0), False, ["outage 520 ms > limit 400 ms"]),
    (dict(outage_ms=10.0, failed=1, max_outage_ms=0.0, max_failed=0), False,
     ["outage 10 ms > limit 0 ms", "1 failed probes > limit 0"]),
    (dict(outage_ms=None, failed=30, recovered=False, max_outage_ms=None), False,
     ["the service did not answer again within the window"]),
    (dict(error="step 2 (wait): esup_proxy did not run on lb2 within 30 s"), False,
     ["step 2 (wait): esup_proxy did not run on lb2 within 30 s"]),
    (dict(sessions_checked=4, sessions_broken=["user 1 of ents3: 2/9 requests, first timeout"]), False,
     ["1 persistent user(s) of healthy servers affected: user 1 of ents3: 2/9 requests, first timeout"]),
])
def test_judge(fields: dict[str, object], passed: bool, why: list[str]) -> None:
    r = dp.judge(dp.Result(1, "node-dies", "t", **fields))  # type: ignore[arg-type]
    assert (r.passed, r.why) == (passed, why)


def test_plan_listing_and_report() -> None:
    plans = dp.plan([1, 4], ctx(migrations=2))
    text = dp.format_plan(plans, ["header"])
    assert text.splitlines()[0] == "header"
    assert "scenario 1 (node-dies)" in text and "limits: outage <= 3400 ms, failed <= -" in text
    assert "at a random phase of the heartbeat, kill lb1 hard" in text and "<- fault: measured from here" in text
    assert "migration 2/2: move esup_proxy to lb1" in text
    ok = dp.judge(dp.Result(1, "node-dies", "t", outage_ms=310.0, failed=31, probes=400, max_outage_ms=3400))
    bad = dp.judge(dp.Result(4, "migrations", "t", outage_ms=8.0, failed=2, probes=900, max_outage_ms=0,
                             max_failed=0, errors={"timeout": 2}))
    report = dp.format_report([ok, bad])
    assert "1 node-dies" in report and "PASS" in report and "FAIL" in report
    assert "failed probes: timeout x2" in report
    assert report.splitlines()[-1] == "drill: 1/2 scenarios passed - FAILED"
    doc = dp.report_json([ok, bad], {"cluster": "esup"})
    assert json.loads(json.dumps(doc))["passed"] is False and doc["scenarios"][0]["outage_ms"] == 310.0
