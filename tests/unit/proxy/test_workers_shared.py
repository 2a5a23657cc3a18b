"""What worker processes share, without processes: limit shares, counter slots, shared server counts, server
state snapshots and the reload carry-over rules, and how per-worker FWRR cycles combine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from balancier.proxy import sharedstate
from balancier.proxy.runtime import WorkerRole
from balancier.proxy.stats import StatsView, render_csv

from proxy_builders import make_backend


@pytest.mark.parametrize(("total", "count", "shares"), [
    (1, 2, [1, 0]), (2, 2, [1, 1]), (3, 2, [2, 1]), (10, 3, [4, 3, 3]), (2000, 2, [1000, 1000]), (5, 1, [5]),
])
def test_limit_shares_add_up_exactly(total: int, count: int, shares: list[int]) -> None:
    got = [WorkerRole(i, count).share(total) for i in range(count)]
    assert got == shares and sum(got) == total


def test_owner_is_worker_zero() -> None:
    assert WorkerRole(0, 2).owner and not WorkerRole(1, 2).owner


@pytest.mark.parametrize(("own", "total", "count", "over"), [
    (0, 0, 2, False), (4, 4, 2, False), (5, 5, 2, True),  # alone: up to twice the slack before pausing
    (28, 50, 2, True), (27, 50, 2, False), (25, 50, 2, False), (16, 40, 3, True), (15, 40, 3, False),
])
def test_over_share_pauses_past_share_plus_slack(own: int, total: int, count: int, over: bool) -> None:
    from balancier.proxy.runtime import BALANCE_SLACK

    assert BALANCE_SLACK == 2  # the table is written for it
    assert WorkerRole(0, count).over(own, total) is over


def test_workers_are_never_all_over_their_share() -> None:
    # every split of up to 60 connections over 2 or 3 workers leaves at least one worker accepting
    import itertools

    for count in (2, 3):
        for split in itertools.product(range(0, 61, 3 if count == 3 else 1), repeat=count):
            total = sum(split)
            assert not all(WorkerRole(i, count).over(k, total) for i, k in enumerate(split)), split


def test_an_absent_worker_never_makes_the_others_pause() -> None:
    # the master marks a slot absent before its worker starts and when it dies; the worker writes its own count
    conns = sharedstate.SharedServed(2, 3)
    conns.mark_absent(0)
    conns.mark_absent(1)
    h0, h1 = conns.handle(0, 2), conns.handle(1, 2)
    h0.set(50)  # worker 0 alone with 50 connections on the third frontend while worker 1 is away
    assert not WorkerRole(0, 2).over(50, h0.total())
    h1.set(0)  # worker 1 started: now worker 0 is far over its share, and worker 1 is not
    assert WorkerRole(0, 2).over(50, h0.total()) and not WorkerRole(1, 2).over(0, h1.total())
    assert conns.handle(1, 0).total() >= sharedstate.ABSENT  # worker 0's first frontend: still unwritten
    conns.mark_absent(1)  # worker 1 died
    assert not WorkerRole(0, 2).over(50, h0.total())
    # the hot path's view of the same array: a store at its own index, the total by its slice
    view, own, every = conns.column(1, 2)
    view[own] = 7
    assert h1.total() == 50 + 7 == sum(view[every])
    assert conns.column(0, 2)[1] != own and sum(view[conns.column(0, 0)[2]]) >= sharedstate.ABSENT


def _fe(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, feconn=0, smax=0, stot=0, bin=0, bout=0, dreq=0, dresp=0, ereq=0, req_tot=0,
                           hrsp=[0] * 6)


def test_counter_slots_sum_over_workers() -> None:
    be0, be1 = make_backend([("a", 1), ("b", 1)]), make_backend([("a", 1), ("b", 1)])
    fe0, fe1 = _fe("f"), _fe("f")
    shared = sharedstate.SharedCounters(2, 1 + 1 + 2)
    w0 = sharedstate.CounterSlot(shared, 0, [fe0], [be0])
    w1 = sharedstate.CounterSlot(shared, 1, [fe1], [be1])
    fe0.stot, fe0.req_tot, fe0.hrsp[2] = 3, 5, 5
    fe1.stot, fe1.req_tot, fe1.hrsp[2], fe1.feconn = 4, 7, 6, 2
    be1.servers[1].stot = 9
    be1.servers[1].served = 1
    w1.publish()
    t = w0.totals(fe0)  # worker 0: its live values + worker 1's published ones
    assert (t.stot, t.req_tot, t.hrsp[2], t.feconn) == (7, 12, 11, 2)
    assert w0.totals(be0.servers[1]).stot == 9 and w0.totals(be0.servers[1]).served == 1
    fe1.stot = 100  # not published yet: worker 0 still sees the last snapshot
    assert w0.totals(fe0).stot == 7
    # a worker replacing worker 1 starts from its slot's counters, not its gauges
    fe_new = _fe("f")
    be_new = make_backend([("a", 1), ("b", 1)])
    sharedstate.CounterSlot(shared, 1, [fe_new], [be_new]).restore()
    assert (fe_new.stot, fe_new.req_tot, fe_new.feconn, be_new.servers[1].stot) == (4, 7, 0, 9)


def test_layout_mismatch_is_refused() -> None:
    shared = sharedstate.SharedCounters(2, 5)
    with pytest.raises(ValueError, match="layout"):
        sharedstate.CounterSlot(shared, 0, [_fe("f")], [make_backend([("a", 1)])])


def test_stats_view_reads_totals() -> None:
    be0, be1 = make_backend([("a", 1)], kind="listen", name="web"), make_backend([("a", 1)], kind="listen", name="web")
    shared = sharedstate.SharedCounters(2, 2 + 1)
    fe0, fe1 = _fe("web"), _fe("web")
    fe0.cfg = fe1.cfg = be0.cfg
    fe0.maxconn = fe1.maxconn = 100
    w0 = sharedstate.CounterSlot(shared, 0, [fe0], [be0])
    w1 = sharedstate.CounterSlot(shared, 1, [fe1], [be1])
    be0.servers[0].stot, be1.servers[0].stot = 2, 5
    w1.publish()
    view = StatsView([fe0], [be0])
    view.totals = w0.totals
    row = [ln for ln in render_csv(view).splitlines() if ln.startswith("web,a,")][0]
    assert row.split(",")[7] == "7"


def test_shared_served_limits_across_workers() -> None:
    shared = sharedstate.SharedServed(2, 1)
    be0 = make_backend([("a", 1, {"maxconn": 2})])
    be1 = make_backend([("a", 1, {"maxconn": 2})])
    s0, s1 = be0.servers[0], be1.servers[0]
    s0.gserved, s1.gserved = shared.handle(0, 0), shared.handle(1, 0)
    be0.acquire(s0)
    assert not s1.saturated and s1.occupancy == 1
    be1.acquire(s1)
    assert s0.saturated and s1.saturated  # 2 in total, whichever worker holds them
    be0.release(s0)
    assert not s1.saturated and s0.served == 0 and s1.served == 1


def test_maxqueue_is_judged_on_the_queues_of_every_worker() -> None:
    from balancier.proxy import queue as squeue

    shared = sharedstate.SharedServed(2, 1)
    be0 = make_backend([("a", 1, {"maxconn": 1, "maxqueue": 2})])
    be1 = make_backend([("a", 1, {"maxconn": 1, "maxqueue": 2})])
    s0, s1 = be0.servers[0], be1.servers[0]
    s0.gqueued, s1.gqueued = shared.handle(0, 0), shared.handle(1, 0)
    waiter = SimpleNamespace(dequeued=lambda server: None)
    p0 = squeue.enqueue(waiter, 0.0, be0, s0)
    assert not squeue.server_queue_full(s1)  # one waits in worker 0: room for one more anywhere
    squeue.enqueue(waiter, 0.1, be1, s1)
    assert squeue.server_queue_full(s0) and squeue.server_queue_full(s1)  # 2 in total
    squeue.cancel(p0)  # the waiter of worker 0 gave up: its length is published again
    assert not squeue.server_queue_full(s1) and len(s1.queue) == 1


def test_snapshot_apply_moves_state() -> None:
    owner = make_backend([("a", 10, {"check": True}), ("b", 10, {"check": True})])
    other = make_backend([("a", 10, {"check": True}), ("b", 10, {"check": True})])
    events: list[str] = []
    other.subscribe(lambda ev: events.append(f"{ev.server.name}:{ev.what}:{ev.new}"))
    a = owner.servers[0]
    owner.set_admin(a, "drain")
    owner.set_weight(owner.servers[1], 3)
    a.hstate.on_result(False)
    owner.set_op(a, "down", "check")
    a.check_status = "L4CON"
    for s in owner.servers:
        sharedstate.apply(other, other.server(s.name), sharedstate.snapshot(s))
    oa, ob = other.servers
    assert (oa.admin, oa.op, oa.hstate.health, oa.check_status) == ("drain", "down", 0, "L4CON")
    assert ob.uweight == 3
    assert events == ["a:admin:drain", "a:op:down", "b:weight:3"]
    assert other.pick("") is ob


@pytest.mark.parametrize(("old", "new_weight", "expect"), [
    ({"admin": "maint", "dis": False, "w": 10, "iw": 10}, 10, {"admin": "maint"}),  # runtime maint: kept
    ({"admin": "maint", "dis": True, "w": 10, "iw": 10}, 10, {}),  # `disabled` in the old file: the new file says
    ({"admin": "ready", "dis": False, "w": 5, "iw": 10}, 10, {"w": 5}),  # runtime weight, same configured weight
    ({"admin": "ready", "dis": False, "w": 5, "iw": 10}, 20, {}),  # the configured weight changed: it wins
    ({"admin": "ready", "dis": False, "w": 10, "iw": 10}, 30, {}),
])
def test_carry_over_rules(old: dict, new_weight: int, expect: dict) -> None:
    new = make_backend([("a", new_weight)]).servers[0]
    snap = {"op": "up", "health": None, "hup": None, "chk": False, **old}
    assert sharedstate.carry_over(snap, new) == expect


def test_carry_over_keeps_health_of_checked_servers() -> None:
    old = make_backend([("a", 1, {"check": True})]).servers[0]
    old.backend.set_op(old, "down")
    old.hstate.force(False)
    new = make_backend([("a", 1, {"check": True})]).servers[0]
    got = sharedstate.carry_over(sharedstate.snapshot(old), new)
    assert got["op"] == "down" and got["health"] == 0
    unchecked = make_backend([("a", 1)]).servers[0]
    assert "health" not in sharedstate.carry_over(sharedstate.snapshot(old), unchecked)


def _offset_sequence(weights: list[int], index: int, count: int, n: int) -> list[str]:
    """What workers.py does: worker `index` skips index*W//count picks, then serves."""
    be = make_backend([(f"s{i}", w) for i, w in enumerate(weights)])
    total = sum(weights)
    for _ in range(index * total // count):
        be.pick("")
    return [be.pick("").name for _ in range(n)]


def test_fwrr_offsets_spread_first_requests() -> None:
    # two workers, two equal servers: their first requests go to different servers
    assert _offset_sequence([1, 1], 0, 2, 1) != _offset_sequence([1, 1], 1, 2, 1)
    # whatever the split of a full cycle between the workers, each server gets its weight's share
    weights = [256, 128, 1]
    cycle = sum(weights)
    for count in (2, 3):
        merged: list[str] = []
        for i in range(count):
            merged += _offset_sequence(weights, i, count, cycle)
        assert [merged.count(f"s{i}") for i in range(3)] == [w * count for w in weights]
