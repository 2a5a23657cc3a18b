"""Membership transitions with a fake clock: up, late, dead, initdead, partition, restart, replay, leave."""

from __future__ import annotations

import pytest

from balancier.cluster.membership import DEAD, INIT, UP, Membership

WARN, INITDEAD = 600, 5000


def make(boot: float = 0.0) -> Membership:
    return Membership("lb1", ["lb1", "lb2", "lb3"], warntime_ms=WARN, initdead_ms=INITDEAD, boot=boot)


# Each scenario: a list of (time, op, node, generation) and the sentences expected in order.
# op: "hb" heartbeat (deadtime 1000 ms advertised), "hb3000" (sender advertises 3000 ms), "tick", "leave".
SCENARIOS = [
    ("first heartbeat", [(0.1, "hb", "lb2", 1)], ["lb2 is up (generation 1)"]),
    ("regular heartbeats are silent",
     [(0.1, "hb", "lb2", 1), (0.3, "hb", "lb2", 1), (0.5, "hb", "lb2", 1), (0.6, "tick", "", 0)],
     ["lb2 is up (generation 1)"]),
    ("late heartbeat warns with the measured gap",
     [(0.1, "hb", "lb2", 1), (0.912, "hb", "lb2", 1)],
     ["lb2 is up (generation 1)", "late heartbeat from lb2: 812 ms since the last one (warntime 600 ms)"]),
    ("exactly warntime is not late",
     [(0.1, "hb", "lb2", 1), (0.7, "hb", "lb2", 1)], ["lb2 is up (generation 1)"]),
    ("dead after the advertised deadtime",
     [(0.1, "hb", "lb2", 1), (1.1, "tick", "", 0), (1.102, "tick", "", 0)],
     ["lb2 is up (generation 1)", "lb2 is dead: no heartbeat for 1002 ms (deadtime 1000 ms)"]),
    ("the sender's deadtime governs, not ours",
     [(0.1, "hb3000", "lb2", 1), (2.0, "tick", "", 0), (3.2, "tick", "", 0)],
     ["lb2 is up (generation 1)", "lb2 is dead: no heartbeat for 3100 ms (deadtime 3000 ms)"]),
    ("never heard: dead after initdead since our boot",
     [(4.9, "tick", "", 0), (5.1, "tick", "", 0)],
     ["lb2 is dead: never heard from within initdead 5000 ms",
      "lb3 is dead: never heard from within initdead 5000 ms"]),
    ("first heard after initdead gave up on it: up, not a restart",
     [(5.1, "tick", "", 0), (6.0, "hb", "lb2", 1)],
     ["lb2 is dead: never heard from within initdead 5000 ms",
      "lb3 is dead: never heard from within initdead 5000 ms",
      "lb2 is up (generation 1), first heard after initdead"]),
    ("return after partition with the same generation",
     [(0.1, "hb", "lb2", 4), (1.2, "tick", "", 0), (3.0, "hb", "lb2", 4)],
     ["lb2 is up (generation 4)", "lb2 is dead: no heartbeat for 1100 ms (deadtime 1000 ms)",
      "lb2 returning after partition (generation 4); deadtime may be too small for this network"]),
    ("restart while still up: a new generation",
     [(0.1, "hb", "lb2", 4), (0.3, "hb", "lb2", 5)],
     ["lb2 is up (generation 4)", "heartbeat restart on lb2: generation 4 -> 5"]),
    ("back after death with a new generation",
     [(0.1, "hb", "lb2", 4), (1.2, "tick", "", 0), (3.0, "hb", "lb2", 5)],
     ["lb2 is up (generation 4)", "lb2 is dead: no heartbeat for 1100 ms (deadtime 1000 ms)",
      "lb2 is back after a restart (generation 4 -> 5)"]),
    ("an old generation (replay) does not revive a dead node",
     [(0.1, "hb", "lb2", 4), (0.2, "hb", "lb2", 5), (1.3, "tick", "", 0), (1.4, "hb", "lb2", 4),
      (1.5, "tick", "", 0)],
     ["lb2 is up (generation 4)", "heartbeat restart on lb2: generation 4 -> 5",
      "lb2 is dead: no heartbeat for 1100 ms (deadtime 1000 ms)"]),
    ("clean leave: dead at once, no deadtime wait",
     [(0.1, "hb", "lb2", 2), (0.2, "leave", "lb2", 2), (0.25, "tick", "", 0)],
     ["lb2 is up (generation 2)", "lb2 left the cluster (clean shutdown)"]),
    ("after a leave the node comes back with a new generation",
     [(0.1, "hb", "lb2", 2), (0.2, "leave", "lb2", 2), (5.0, "hb", "lb2", 3)],
     ["lb2 is up (generation 2)", "lb2 left the cluster (clean shutdown)",
      "lb2 is back after a restart (generation 2 -> 3)"]),
    ("a leave of an older generation is ignored",
     [(0.1, "hb", "lb2", 2), (0.2, "leave", "lb2", 1)], ["lb2 is up (generation 2)"]),
    ("unknown nodes are ignored", [(0.1, "hb", "lbX", 1)], []),
]


@pytest.mark.parametrize("name,steps,expected", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_membership_table(name: str, steps: list[tuple[float, str, str, int]], expected: list[str]) -> None:
    m = make()
    sentences: list[str] = []
    for now, op, node, gen in steps:
        if op == "hb":
            events = m.heartbeat(node, gen, 1000, now)
        elif op == "hb3000":
            events = m.heartbeat(node, gen, 3000, now)
        elif op == "leave":
            events = m.leave(node, gen, now)
        else:
            events = m.tick(now)
        sentences += [e.sentence for e in events]
    assert sentences == expected


def test_states_members_and_pending() -> None:
    m = make()
    assert m.state("lb1") == UP and m.state("lb2") == INIT
    assert m.members() == ("lb1",) and m.pending() == ("lb2", "lb3")
    m.heartbeat("lb3", 7, 1000, 0.5)
    assert m.members() == ("lb1", "lb3") and m.pending() == ("lb2",)
    assert m.generation("lb3") == 7 and m.generation("lb2") is None
    m.tick(1.6)
    assert m.state("lb3") == DEAD and m.members() == ("lb1",)
    assert m.ever_seen("lb3") and not m.ever_seen("lb2")


def test_next_deadline_drives_the_timer() -> None:
    m = make()
    assert m.next_deadline() == pytest.approx(5.001)
    m.heartbeat("lb2", 1, 1000, 0.2)
    m.heartbeat("lb3", 1, 1000, 0.3)
    assert m.next_deadline() == pytest.approx(1.201)
    # ticking exactly at the deadline declares lb2 dead, not earlier
    assert m.tick(1.199) == []
    assert [e.kind for e in m.tick(m.next_deadline() or 0)] == ["dead"]


def test_detection_is_bounded_by_deadtime_plus_tick() -> None:
    """Ticking every 50 ms, a node silent since t=1.0 is declared dead within (1.0 s, 1.05 s]."""
    m = make()
    m.heartbeat("lb2", 1, 1000, 1.0)
    m.heartbeat("lb3", 1, 1000, 1.0)
    t, dead_at = 1.0, None
    while dead_at is None and t < 5:
        t = round(t + 0.05, 3)
        m.heartbeat("lb3", 1, 1000, t)
        if any(e.node == "lb2" and e.kind == "dead" for e in m.tick(t)):
            dead_at = t
    assert dead_at is not None and 2.0 < dead_at <= 2.05


def _false_deaths(keepalive_ms: int, deadtime_ms: int, loss: float, hours: float, seed: int) -> int:
    """Simulate one peer's heartbeats through a lossy link; count the times it is declared dead."""
    import random

    rng = random.Random(seed)
    m = Membership("lb1", ["lb1", "lb2"], warntime_ms=deadtime_ms // 2, initdead_ms=2 * deadtime_ms, boot=0.0)
    deaths = 0
    steps = int(hours * 3_600_000 / keepalive_ms)
    for i in range(1, steps):
        now = i * keepalive_ms / 1000
        deaths += sum(e.kind == "dead" for e in m.tick(now))
        if rng.random() >= loss:
            m.heartbeat("lb2", 1, deadtime_ms, now)
    return deaths


def test_twenty_percent_loss_never_kills_a_peer_at_the_default_timings() -> None:
    assert _false_deaths(1000, 10_000, 0.2, hours=2, seed=7) == 0


def test_twenty_percent_loss_does_kill_peers_at_aggressive_timings() -> None:
    """The same simulation can fail: 5 lost heartbeats in a row (p = 0.2^5) happen a few times an hour."""
    assert 1 <= _false_deaths(200, 1000, 0.2, hours=1, seed=7) <= 20
