"""The FWRR cycle cache (fwrr.py, "Cycle cache"): a cached Fwrr makes exactly the picks of a cache-less one and
holds the same state, whatever the interleaving of picks, weight changes, downs/ups, avoided servers and limits."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from balancier.proxy import fwrr
from balancier.proxy import queue as squeue
from balancier.proxy.balance import make_group_balancer
from balancier.proxy.fwrr import MAX_CYCLE, Fwrr

from proxy_builders import make_backend


class Cfg:
    def __init__(self) -> None:
        self.maxconn = 0


class Srv:
    """What Fwrr reads from a server; `busy` makes it saturated when it has a maxconn (as served >= maxconn)."""

    def __init__(self, name: str, weight: int) -> None:
        self.name = name
        self.uweight = weight
        self.up = True
        self.busy = False
        self.cfg = Cfg()

    @property
    def usable(self) -> bool:
        return self.uweight > 0 and self.up

    @property
    def saturated(self) -> bool:
        return bool(self.cfg.maxconn) and self.busy

    def __repr__(self) -> str:
        return self.name


def pair(weights: list[int]) -> tuple[list[Srv], Fwrr, Fwrr]:
    servers = [Srv(f"s{i}", w) for i, w in enumerate(weights)]
    return servers, Fwrr(servers), Fwrr(servers, cache=False)


def apply(op: tuple[Any, ...], servers: list[Srv], cached: Fwrr, ref: Fwrr) -> int:
    """One step on both balancers; asserts the same picks. Returns the picks the cache served."""
    kind = op[0]
    served = 0
    if kind == "picks":
        for _ in range(op[1]):
            served += cached.cached
            a, b = cached.pick("127.0.0.1"), ref.pick("127.0.0.1")
            assert a is b
        return served
    s = servers[op[1] % len(servers)]
    if kind == "avoid":
        served += cached.cached
        a, b = cached.pick("127.0.0.1", s), ref.pick("127.0.0.1", s)
        assert a is b
        return served
    if kind == "down":
        s.up = False
    elif kind == "up":
        s.up = True
    elif kind == "weight":
        s.uweight = op[2]
    elif kind == "maxconn":
        s.cfg.maxconn = op[2]
        for f in (cached, ref):  # Backend.requeue_changed after `set maxconn server`
            f.served_changed(s)
        return 0
    elif kind == "busy":
        s.busy = op[2]  # saturation is read at pick time, nobody is told
        return 0
    for f in (cached, ref):
        f.update(s)
    return 0


IDX = st.integers(0, 5)
EVENTS = st.one_of(
    st.tuples(st.sampled_from(["down", "up", "avoid"]), IDX),
    st.tuples(st.just("weight"), IDX, st.integers(0, 9)),
    st.tuples(st.just("maxconn"), IDX, st.sampled_from([0, 0, 1])),
    st.tuples(st.just("busy"), IDX, st.booleans()),
)
# Each step: an event, then a run of picks long enough, often, for a cycle to be found and served.
STEPS = st.lists(st.tuples(EVENTS, st.sampled_from([0, 1, 7, 60, 500, 1200, 2500])), max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=5), STEPS)
def test_cached_fwrr_equals_the_plain_algorithm(weights, steps):
    servers, cached, ref = pair(weights)
    assert cached.state() == ref.state()
    served = 0
    for ev, n in steps:
        served += apply(ev, servers, cached, ref)
        assert cached.state() == ref.state(), ev
        served += apply(("picks", n), servers, cached, ref)
        assert cached.state() == ref.state(), (ev, n)
    event("picks served from a cycle" if served else "no pick served from a cycle")


def test_random_interleavings_use_the_cache():
    """The same driver as the property above, seeded: most picks come from the cache, and the state matches."""
    rnd = random.Random(7)
    total = served = 0
    for _ in range(25):
        servers, cached, ref = pair([rnd.randint(1, 9) for _ in range(rnd.randint(1, 5))])
        for _ in range(12):
            r = rnd.random()
            i = rnd.randrange(6)
            if r < 0.5:
                op: tuple[Any, ...] = ("picks", rnd.randint(200, 3000))
                total += op[1]
            elif r < 0.6:
                op = ("avoid", i)
            elif r < 0.8:
                op = (rnd.choice(["down", "up"]), i)
            else:
                op = ("weight", i, rnd.randint(0, 9))
            served += apply(op, servers, cached, ref)
            assert cached.state() == ref.state(), op
    assert served > total // 2, (served, total)


def test_bench_weights_cycle_is_one_window_and_events_resume_exactly():
    """256/128/1: the cycle is found after two windows (2 x 6160 picks) and survives events at any position."""
    servers, cached, ref = pair([256, 128, 1])
    seq = [ref.pick() for _ in range(12320)]
    assert [cached.pick() for _ in range(12320)] == seq
    assert cached.cached and not ref.cached
    assert cached._period == 6160
    assert Counter(s.name for s in seq[-6160:]) == {"s0": 4096, "s1": 2048, "s2": 16}
    rnd = random.Random(3)
    for op in [("picks", 4000), ("weight", 1, 100), ("picks", 30000), ("down", 2), ("picks", 9000), ("up", 2),
               ("picks", 20000), ("avoid", 0), ("picks", 15000)]:
        apply(op, servers, cached, ref)
        assert cached.state() == ref.state(), op
        apply(("picks", rnd.randint(1, 7000)), servers, cached, ref)
        assert cached.state() == ref.state()
    assert cached.cached


class CountingFwrr(Fwrr):
    """Counts the real picks (the algorithm itself), whoever makes them."""

    computed = 0

    def _compute(self, client_ip: str = "", avoid: Any = None, unlimited: bool = False) -> Any:
        self.computed += 1
        return super()._compute(client_ip, avoid, unlimited)


def test_an_event_replays_at_most_one_checkpoint_spacing():
    servers = [Srv(f"s{i}", w) for i, w in enumerate([256, 128, 1])]
    cached, ref = CountingFwrr(servers), Fwrr(servers, cache=False)
    apply(("picks", 12320), servers, cached, ref)
    assert cached.cached and cached.computed == 12320
    apply(("picks", 5000), servers, cached, ref)
    assert cached.computed == 12320  # served from the cycle
    apply(("weight", 0, 3), servers, cached, ref)
    # Brought to position 5000 from the checkpoint before it, not from the cycle's start.
    assert 0 < cached.computed - 12320 < cached._spacing
    assert cached.state() == ref.state()
    apply(("picks", 3000), servers, cached, ref)


def test_recording_gives_up_within_its_budget_until_the_next_event():
    # A pick with a server to avoid every 10 picks: no cycle can be recorded across it.
    servers, cached, ref = pair([1, 1])
    for _ in range(40):
        apply(("picks", 9), servers, cached, ref)
        apply(("avoid", 0), servers, cached, ref)
    assert cached._mode == fwrr._IDLE and cached._rec is None  # 400 picks > 8 windows of 32 + 64
    apply(("weight", 1, 2), servers, cached, ref)  # an event: look again
    apply(("picks", 200), servers, cached, ref)
    assert cached.cached
    assert cached.state() == ref.state()


def test_no_cache_with_a_maxconn_until_it_is_lifted():
    servers, cached, ref = pair([3, 2, 1])
    servers[1].cfg.maxconn = 1
    apply(("picks", 2000), servers, cached, ref)
    assert not cached.cached
    apply(("maxconn", 1, 0), servers, cached, ref)
    apply(("picks", 2000), servers, cached, ref)
    assert cached.cached
    apply(("picks", 37), servers, cached, ref)
    assert cached.cached
    # A limit set while the cycle is served, on a server already busy (saturated at once): the state is brought
    # up to the cycle's position as recorded (no limit then), and saturation counts from now on.
    apply(("busy", 0, True), servers, cached, ref)
    apply(("maxconn", 0, 1), servers, cached, ref)
    assert not cached.cached
    assert cached.state() == ref.state()
    seq = [cached.pick() for _ in range(100)]
    assert servers[0] not in seq
    assert seq == [ref.pick() for _ in range(100)]


def test_a_window_longer_than_the_bound_is_not_cached():
    n = MAX_CYCLE // (256 * 16) + 1
    servers, cached, ref = pair([256] * n)
    assert 256 * 16 * n > MAX_CYCLE
    assert not cached.cached
    assert cached._mode == fwrr._IDLE  # not even watching: no cycle can fit
    for _ in range(100):
        assert cached.pick() is ref.pick()


def test_nothing_usable_then_a_server_comes_up():
    servers, cached, ref = pair([0, 0])
    assert cached.pick() is None
    apply(("weight", 1, 2), servers, cached, ref)
    apply(("picks", 200), servers, cached, ref)
    assert cached.cached
    apply(("down", 1), servers, cached, ref)
    assert cached.pick() is None and ref.pick() is None
    assert cached.state() == ref.state()


def test_make_group_balancer_caches_roundrobin():
    servers = [Srv("a", 1), Srv("b", 2)]
    f = make_group_balancer("roundrobin", servers)
    assert isinstance(f, Fwrr) and f.cache
    ref = Fwrr(servers, cache=False)
    seq = [f.pick("x") for _ in range(200)]
    assert f.cached
    assert seq == [ref.pick("x") for _ in range(200)]
    assert Counter(s.name for s in seq[-48:]) == {"b": 32, "a": 16}


def test_backend_with_real_servers_follows_the_plain_algorithm():
    """Through servers.Backend: checks, admin states, weights and `set maxconn server` reach the cached balancer."""
    be = make_backend([("a", 256), ("b", 128), ("c", 1), ("m", 1, {"backup": True})])
    actives = [s for s in be.servers if not s.is_backup]
    ref = Fwrr(actives, cache=False)
    a, b, c = actives

    def picks(n: int) -> None:
        for _ in range(n):
            s = be.pick("10.0.0.1")
            assert s is ref.pick("10.0.0.1")
            be.acquire(s)
            be.release(s)

    picks(13000)
    assert be._act.cached
    for change in [lambda: be.set_op(b, "down"), lambda: be.set_op(b, "up"), lambda: be.set_weight(a, 17),
                   lambda: be.set_admin(c, "drain"), lambda: be.set_admin(c, "ready"),
                   lambda: squeue.set_maxconn(c, 5), lambda: squeue.set_maxconn(c, 0)]:
        change()
        for s in actives:  # what Backend._changed and requeue_changed tell the group's balancer
            ref.update(s)
            ref.served_changed(s)
        assert be._act.state() == ref.state()
        picks(7000)
        assert be._act.state() == ref.state()
    assert be._act.cached
