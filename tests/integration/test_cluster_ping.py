"""Ping-node probes on loopback (TCP connect, ICMP echo) and the score they feed (pingd rule)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from balancier.cluster.ping import MULTIPLIER, PingScore, check_icmp, parse_target, probe


def test_parse_target() -> None:
    assert parse_target("10.0.0.254") == ("10.0.0.254", None)
    assert parse_target("10.0.0.254:80") == ("10.0.0.254", 80)
    with pytest.raises(ValueError):
        parse_target("10.0.0.254:http")


def test_tcp_probe_accepted_and_refused_both_prove_reachability() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    open_port = listener.getsockname()[1]
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel answers with a reset
    closed_port = closed.getsockname()[1]
    try:
        assert asyncio.run(probe(f"127.0.0.1:{open_port}", 1.0)) is True
        assert asyncio.run(probe(f"127.0.0.1:{closed_port}", 1.0)) is True
    finally:
        listener.close()
        closed.close()


def test_icmp_probe_of_loopback() -> None:
    problem = check_icmp()
    if problem is not None:
        pytest.skip(f"ICMP not permitted for uid {os.getuid()}: {problem}")
    assert asyncio.run(probe("127.0.0.1", 1.0, seq=7)) is True


def test_score_counts_targets_answered_within_deadping() -> None:
    score = PingScore(("a", "b", "c"), deadping=1.0)
    assert score.score(0.0) == 0
    score.record("a", True, 0.0)
    score.record("b", True, 0.5)
    score.record("c", False, 0.5)
    assert score.reachable(0.9) == ("a", "b") and score.score(0.9) == 2 * MULTIPLIER
    assert score.score(1.0) == 2 * MULTIPLIER  # exactly deadping: still counted
    assert score.score(1.2) == MULTIPLIER  # a's last answer is too old
    assert score.score(2.0) == 0
