"""Reliable delivery: ordered, complete, under 20% loss each way (seeded RNG, fake clock), restarts."""

from __future__ import annotations

import random

import pytest

from balancier.cluster.reliable import FRAGMENT_CHARS, MAX_MESSAGE_CHARS, MessageTooLarge, Reliable


class Net:
    """Two endpoints joined by a lossy, delaying, reordering link, driven by a fake clock."""

    def __init__(self, loss: float, seed: int, gens: tuple[int, int] = (1, 1)) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.ends = {"a": Reliable("a", gens[0]), "b": Reliable("b", gens[1])}
        self.gens = {"a": gens[0], "b": gens[1]}
        self.in_flight: list[tuple[float, str, str, dict]] = []  # (arrival, src, dst, frame)
        self.got: dict[str, list[dict]] = {"a": [], "b": []}
        self.frames_sent = 0

    def put(self, src: str, out: list[tuple[str, dict]]) -> None:
        for dst, frame in out:
            self.frames_sent += 1
            if self.rng.random() >= self.loss:
                self.in_flight.append((self.now + self.rng.uniform(0.001, 0.02), src, dst, frame))

    def send(self, src: str, dst: str, message: dict) -> None:
        self.put(src, self.ends[src].send(dst, self.gens[dst], message, self.now))

    def run(self, until: float) -> None:
        while self.now < until:
            self.now = round(self.now + 0.005, 3)
            due = [f for f in self.in_flight if f[0] <= self.now]
            self.in_flight = [f for f in self.in_flight if f[0] > self.now]
            for _, src, dst, frame in due:
                delivered, out = self.ends[dst].receive(src, self.gens[src], frame, self.now)
                self.got[dst] += delivered
                self.put(dst, out)
            for name, end in self.ends.items():
                self.put(name, end.poll(self.now))


def test_lossless_in_order() -> None:
    net = Net(0.0, 1)
    for i in range(10):
        net.send("a", "b", {"i": i})
    net.run(0.5)
    assert net.got["b"] == [{"i": i} for i in range(10)]
    assert net.ends["a"].pending("b") == 0 and net.ends["a"].retransmissions == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_twenty_percent_loss_each_way_delivers_everything_in_order(seed: int) -> None:
    net = Net(0.2, seed)
    big = {"cib": "x" * (FRAGMENT_CHARS * 7 + 13)}  # 8 fragments
    sent_a = [{"i": i} for i in range(100)] + [big]
    sent_b = [{"j": j} for j in range(50)]
    for m in sent_a:
        net.send("a", "b", m)
    for m in sent_b:
        net.send("b", "a", m)
    net.run(20.0)
    assert net.got["b"] == sent_a
    assert net.got["a"] == sent_b
    assert net.ends["a"].pending("b") == 0 and net.ends["b"].pending("a") == 0
    assert net.ends["a"].retransmissions > 0  # the loss really happened


def test_receiver_restart_drops_frames_for_the_old_incarnation() -> None:
    net = Net(0.0, 1)
    net.send("a", "b", {"i": 1})
    net.run(0.2)
    # b restarts with generation 2: a frame addressed to generation 1 is ignored
    net.ends["b"] = Reliable("b", 2)
    net.gens["b"] = 2
    stale = {"k": "d", "dst": "b", "to": 1, "q": 0, "m": 0, "d": '{"i":99}'}
    assert net.ends["b"].receive("a", 1, stale, net.now) == ([], [])
    # a learns the new generation from a heartbeat: its next send starts a fresh stream
    net.send("a", "b", {"i": 2})
    net.run(0.5)
    assert net.got["b"] == [{"i": 1}, {"i": 2}]


def test_sender_restart_resets_the_receive_stream() -> None:
    net = Net(0.0, 1)
    net.send("a", "b", {"i": 1})
    net.send("a", "b", {"i": 2})
    net.run(0.2)
    net.ends["a"] = Reliable("a", 9)
    net.gens["a"] = 9
    net.send("a", "b", {"i": 3})  # seq 0 again, under a new generation
    net.run(0.4)
    assert net.got["b"] == [{"i": 1}, {"i": 2}, {"i": 3}]


def test_frames_for_another_node_are_ignored() -> None:
    r = Reliable("b", 1)
    assert r.receive("a", 1, {"k": "d", "dst": "c", "to": 1, "q": 0, "m": 0, "d": "{}"}, 0.0) == ([], [])
    assert r.receive("a", 1, {"garbage": True}, 0.0) == ([], [])


def test_window_limits_frames_in_flight_and_backoff_caps() -> None:
    r = Reliable("a", 1, window=4, rto=0.1, rto_max=0.4)
    out = []
    for i in range(10):
        out += r.send("b", 1, {"i": i}, 0.0)
    assert len(out) == 4 and r.pending("b") == 10
    times = []
    while len(times) < 5:
        t = r.next_timer()
        assert t is not None
        assert r.poll(t - 0.001) == []  # nothing before the timer
        assert len(r.poll(t)) == 4  # the whole window is retransmitted, never the queued frames
        times.append(t)
    assert times == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5])  # 0.1, then doubling to the 0.4 cap


def test_too_large_message_is_refused() -> None:
    with pytest.raises(MessageTooLarge):
        Reliable("a", 1).send("b", 1, {"x": "y" * MAX_MESSAGE_CHARS}, 0.0)


def test_an_endless_message_is_not_buffered_without_bound() -> None:
    r = Reliable("b", 1, window=4)
    for q in range(MAX_MESSAGE_CHARS // FRAGMENT_CHARS + 10):
        r.receive("a", 1, {"k": "d", "dst": "b", "to": 1, "q": q, "m": 1, "d": "x" * FRAGMENT_CHARS}, 0.0)
    assert len(r._recv["a"].chunks) * FRAGMENT_CHARS <= MAX_MESSAGE_CHARS + FRAGMENT_CHARS
    delivered, _ = r.receive("a", 1, {"k": "d", "dst": "b", "to": 1, "q": MAX_MESSAGE_CHARS // FRAGMENT_CHARS + 10,
                                      "m": 0, "d": "{}"}, 0.0)
    assert delivered == []  # the tail of a dropped message is not a message
