"""DC election outcomes: incumbent kept, lowest name, waiting for pending peers, healed partitions."""

from __future__ import annotations

import itertools

import pytest

from balancier.cluster.election import elect, has_quorum

CASES = [
    # (name, members, claims, pending, expected dc, expected sentence)
    ("lone node, nobody pending", ["lb2"], {}, [], "lb2", "lb2 elected DC: only member of this partition"),
    ("cold start, all heard", ["lb1", "lb2", "lb3"], {}, [], "lb1",
     "lb1 elected DC: lowest name among members lb1, lb2, lb3"),
    ("cold start, a peer still pending", ["lb1", "lb2"], {}, ["lb3"], None,
     "no DC yet: waiting for lb3 (initdead)"),
    ("incumbent keeps the role when a lower name joins", ["lb1", "lb2", "lb3"],
     {"lb2": "lb2", "lb3": "lb2", "lb1": None}, [], "lb2", "lb2 stays DC: incumbent"),
    ("a joining node follows the incumbent even while others are pending", ["lb1", "lb3"],
     {"lb3": "lb3"}, ["lb2"], "lb3", "lb3 stays DC: incumbent"),
    ("DC died: re-election among survivors", ["lb2", "lb3"], {"lb2": "lb1", "lb3": "lb1"}, [], "lb2",
     "lb2 elected DC: lowest name among members lb2, lb3"),
    ("healed partition with two DCs: lowest claimant wins", ["lb1", "lb2", "lb3"],
     {"lb1": "lb1", "lb2": "lb2", "lb3": "lb2"}, [], "lb1",
     "lb1 is DC: lowest name among the claiming DCs lb1, lb2"),
    ("claims of non-members are ignored", ["lb2", "lb3"], {"lb1": "lb1", "lb2": "lb1"}, [], "lb2",
     "lb2 elected DC: lowest name among members lb2, lb3"),
    ("a member naming another node does not claim", ["lb1", "lb2"], {"lb1": "lb2", "lb2": "lb1"}, [], "lb1",
     "lb1 elected DC: lowest name among members lb1, lb2"),
    ("names compare case-insensitively", ["LB2", "lb1"], {}, [], "lb1",
     "lb1 elected DC: lowest name among members lb1, LB2"),
]


@pytest.mark.parametrize("name,members,claims,pending,dc,sentence", CASES, ids=[c[0] for c in CASES])
def test_election_table(name: str, members: list[str], claims: dict[str, str | None], pending: list[str],
                        dc: str | None, sentence: str) -> None:
    result = elect(members, claims, pending)
    assert (result.dc, result.sentence) == (dc, sentence)


def test_views_that_agree_elect_the_same_dc_whatever_the_order() -> None:
    members = ["c", "a", "b", "d"]
    claims = {"b": "b", "d": "d", "a": "b", "c": "d"}
    results = {elect(list(p), claims, []).dc for p in itertools.permutations(members)}
    assert results == {"b"}


def test_after_election_every_node_converges_on_one_dc() -> None:
    """Simulate rounds of heartbeats: each node elects from the claims it last heard, then claims."""
    nodes = ["lb3", "lb1", "lb2"]
    claims: dict[str, str | None] = {n: None for n in nodes}
    for _ in range(3):
        claims = {n: elect(nodes, claims, []).dc for n in nodes}
    assert set(claims.values()) == {"lb1"}
    # lb1 dies: survivors re-elect and converge
    survivors = ["lb2", "lb3"]
    for _ in range(3):
        claims = {n: elect(survivors, claims, []).dc for n in survivors}
    assert set(claims.values()) == {"lb2"}
    # lb1 returns (restarted, no claim): lb2 keeps the role
    back = {**claims, "lb1": None}
    for _ in range(3):
        back = {n: elect(nodes, back, []).dc for n in nodes}
    assert set(back.values()) == {"lb2"}


@pytest.mark.parametrize("configured,members,expected", [
    (1, 1, True), (2, 2, True), (2, 1, True),  # two-node: alone keeps quorum
    (3, 3, True), (3, 2, True), (3, 1, False),
    (4, 3, True), (4, 2, False),  # exactly half of an even cluster is not a majority
    (5, 3, True), (5, 2, False), (16, 9, True), (16, 8, False),
])
def test_quorum(configured: int, members: int, expected: bool) -> None:
    assert has_quorum(configured, members) is expected
