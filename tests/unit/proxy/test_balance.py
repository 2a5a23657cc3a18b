"""Balancing algorithms against the spec's vectors (haproxy.md §4) and hand-derived FWRR traces."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancier.proxy.balance import source_hash, static_weight_divisor

from proxy_builders import make_backend


def picks(be, n: int, ip: str = "127.0.0.1") -> list[str]:
    out = []
    for _ in range(n):
        s = be.pick(ip)
        out.append(s.name if s is not None else None)
    return out


# --- roundrobin (FWRR) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([("a", 3), ("b", 2), ("c", 1)], "a b a c a b a b a c a b"),
        ([("a", 1), ("b", 1), ("c", 1)], "a b c a b c a b c"),
        ([("a", 5), ("b", 1)], "a a a a a b a a a a a b"),
    ],
)
def test_fwrr_spec_vectors(weights, expected):
    be = make_backend(weights)
    assert " ".join(picks(be, len(expected.split()))) == expected


def test_fwrr_seed_weights_770_picks():
    be = make_backend([("ents3", 256), ("ents2", 128), ("ents1", 1)])
    seq = picks(be, 770)
    # The first picks as HAProxy 2.6 makes them: ents3 ents3 ents2, repeated.
    assert seq[:12] == ["ents3", "ents3", "ents2"] * 4
    assert [i for i, s in enumerate(seq) if s == "ents1"] == [193, 578]
    # Every window of 385 consecutive picks holds exactly the weights 256/128/1.
    for start in range(0, 770 - 385 + 1):
        c = Counter(seq[start:start + 385])
        assert (c["ents3"], c["ents2"], c["ents1"]) == (256, 128, 1), start


def test_fwrr_proportions_hold_for_uneven_weights():
    weights = [("a", 7), ("b", 3), ("c", 2), ("d", 1)]
    be = make_backend(weights)
    total = sum(w for _, w in weights)
    seq = picks(be, total * 20)
    c = Counter(seq)
    assert {n: c[n] for n, _ in weights} == {n: w * 20 for n, w in weights}


def test_fwrr_server_down_then_up_trace():
    """Hand-derived from §4.2 with weights 1,1,1 (eweight 16, total 48)."""
    be = make_backend([("a", 1), ("b", 1), ("c", 1)])
    assert picks(be, 6) == ["a", "b", "c", "a", "b", "c"]
    b = be.server("b")
    be.set_op(b, "down")
    # b leaves at once; a (npos 54) then c, which sits ahead of curr_pos and is taken as a hole.
    assert picks(be, 2) == ["a", "c"]
    be.set_op(b, "up")
    # b comes back at npos = curr_pos + (next_weight + curr_weight - curr_pos) / eweight = 56 + 40/16 = 58,
    # queued after c (same key, FIFO).
    assert picks(be, 6) == ["a", "c", "b", "a", "c", "b"]


def test_fwrr_down_server_never_picked_and_weights_rebalance():
    be = make_backend([("a", 2), ("b", 1), ("c", 1)])
    picks(be, 5)
    be.set_op(be.server("a"), "down")
    seq = picks(be, 40)
    assert "a" not in seq
    assert Counter(seq) == {"b": 20, "c": 20}
    be.set_op(be.server("a"), "up")
    picks(be, 8)  # let a settle back into the window
    c = Counter(picks(be, 64))
    assert (c["a"], c["b"], c["c"]) == (32, 16, 16)


def test_fwrr_weight_change_applies_dynamically():
    be = make_backend([("a", 1), ("b", 1)])
    picks(be, 4)
    be.set_weight(be.server("a"), 3)
    picks(be, 8)
    c = Counter(picks(be, 80))
    assert (c["a"], c["b"]) == (60, 20)
    be.set_weight(be.server("a"), 0)  # weight 0 = no load-balanced traffic
    assert set(picks(be, 10)) == {"b"}


def test_fwrr_skips_saturated_and_gives_its_turn_back():
    be = make_backend([("a", 1, {"maxconn": 1}), ("b", 1), ("c", 1)])
    a = be.server("a")
    assert picks(be, 3) == ["a", "b", "c"]
    be.acquire(a)  # a is busy: served == maxconn
    assert a.saturated
    seq = picks(be, 6)
    assert "a" not in seq
    assert Counter(seq) == {"b": 3, "c": 3}
    be.release(a)
    assert not a.saturated
    assert "a" in picks(be, 3)


def test_fwrr_avoid_on_redispatch():
    be = make_backend([("a", 1), ("b", 1)])
    a, b = be.server("a"), be.server("b")
    assert be.pick("x", avoid=a) is b
    assert be.pick("x", avoid=b) is a
    only = make_backend([("a", 1)])
    # Nothing else fits: the avoided server is returned rather than nothing.
    assert only.pick("x", avoid=only.server("a")) is only.server("a")


def test_fwrr_all_saturated_returns_none():
    be = make_backend([("a", 1, {"maxconn": 1}), ("b", 1, {"maxconn": 1})])
    for s in be.servers:
        be.acquire(s)
    assert be.pick("x") is None
    assert not be.any_unsaturated()
    assert be.has_usable()



# Sequences observed on HAProxy 2.6.12 (Debian) driven through its stats socket: one request per connection,
# `disable server` / `enable server` / `set weight` issued before the request of the given index.
OBSERVED = [
    ("roundrobin", [3, 2, 1], "2:maint:a 3:maint:b 4:maint:c 6:ready:c 7:ready:a",
     "a b c c - - c c a a a c a a a c a a a c a a a c"),
    ("roundrobin", [5, 3, 2, 1], "3:w10:d 20:w1:a 31:w0:b 50:w7:b",
     "a b a d a b d d a d c d b a d d a d b d c d d d b d d c d d b d d d d c a d d d d d c d d d d d c a d b d "
     "d b c d b d d b d a b d c d b d b"),
    ("roundrobin", [7, 5, 3, 1], "10:w0:a 17:w7:a 23:maint:d 60:ready:d",
     "a b a c b a a b c a b d b c b b c b a c d b a a b c a b a b a c a b a c b a a b c a b a b a c a b a c b a a "
     "b c a b a b a c a b a c b a a b c a d b a b a c a b"),
    ("static-rr", [3, 2, 1], "4:maint:a 9:ready:a",
     "a a b a b b c b b b a b c a a b a b c a a b a b"),
    ("leastconn", [2, 1, 3], "3:maint:a 5:ready:a", "a b c b c b c a b c a b"),
]


@pytest.mark.parametrize(("algo", "weights", "ops", "observed"), OBSERVED)
def test_sequences_observed_on_haproxy_with_state_changes(algo, weights, ops, observed):
    names = "abcd"
    be = make_backend([(names[i], w) for i, w in enumerate(weights)], algo)
    todo: dict[int, list[tuple[str, str]]] = {}
    for op in ops.split():
        i, what, srv = op.split(":")
        todo.setdefault(int(i), []).append((what, srv))
    got = []
    for i in range(len(observed.split())):
        for what, srv in todo.get(i, []):
            s = be.server(srv)
            if what in ("maint", "ready"):
                be.set_admin(s, what)
            else:
                be.set_weight(s, int(what[1:]))
        s = be.pick("127.0.0.1")
        got.append(s.name if s is not None else "-")  # '-': HAProxy answered 503, no server
        if s is not None:  # each request completes before the next one starts
            be.acquire(s)
            be.release(s)
    assert " ".join(got) == observed


# --- usability, drain, maint, backups ---------------------------------------------------------------------------

def test_drain_and_maint_are_not_balanced():
    be = make_backend([("a", 1), ("b", 1), ("c", 1)])
    be.set_admin(be.server("a"), "drain")
    be.set_admin(be.server("b"), "maint")
    assert set(picks(be, 6)) == {"c"}
    be.set_admin(be.server("a"), "ready")
    assert set(picks(be, 6)) == {"a", "c"}


def test_stopping_server_is_not_balanced():
    be = make_backend([("a", 1), ("b", 1)])
    be.set_op(be.server("a"), "stopping")
    assert not be.server("a").usable
    assert set(picks(be, 4)) == {"b"}


def test_backup_used_only_when_no_active_is_usable():
    be = make_backend([("a", 1), ("b", 1), ("m1", 1, {"backup": True}), ("m2", 1, {"backup": True})])
    assert set(picks(be, 4)) == {"a", "b"}
    be.set_op(be.server("a"), "down")
    be.set_op(be.server("b"), "down")
    assert be.usable_counts() == (0, 2)
    assert picks(be, 4) == ["m1"] * 4  # only the first usable backup
    be.set_op(be.server("m1"), "down")
    assert picks(be, 2) == ["m2"] * 2
    be.set_op(be.server("b"), "up")
    assert picks(be, 2) == ["b", "b"]


def test_allbackups_balances_over_every_backup():
    be = make_backend([("a", 1), ("m1", 1, {"backup": True}), ("m2", 3, {"backup": True})], allbackups=True)
    be.set_op(be.server("a"), "down")
    assert Counter(picks(be, 40)) == {"m1": 10, "m2": 30}


def test_nothing_usable_gives_none():
    be = make_backend([("a", 1), ("m", 1, {"backup": True})])
    be.set_op(be.server("a"), "down")
    be.set_op(be.server("m"), "down")
    assert be.pick("x") is None
    assert not be.has_usable()


def test_disabled_server_starts_in_maint():
    be = make_backend([("a", 1, {"disabled": True}), ("b", 1)])
    assert be.server("a").admin == "maint"
    assert set(picks(be, 3)) == {"b"}


# --- static-rr ------------------------------------------------------------------------------------------------

def test_static_rr_spec_vector():
    be = make_backend([("a", 3), ("b", 2), ("c", 1)], "static-rr")
    assert " ".join(picks(be, 12)) == "a a b a b c a a b a b c"


def test_static_rr_gcd_reduction_gives_the_same_map():
    assert static_weight_divisor([6, 4, 2]) == 2
    assert static_weight_divisor([0, 3]) == 3
    be = make_backend([("a", 6), ("b", 4), ("c", 2)], "static-rr")
    assert " ".join(picks(be, 6)) == "a a b a b c"


def test_static_rr_seed_weights():
    be = make_backend([("ents3", 256), ("ents2", 128), ("ents1", 1)], "static-rr")
    seq = picks(be, 385)
    assert seq[:3] == ["ents3", "ents3", "ents2"]
    assert Counter(seq) == {"ents3": 256, "ents2": 128, "ents1": 1}


def test_static_rr_down_up_and_saturation():
    be = make_backend([("a", 1), ("b", 1, {"maxconn": 1}), ("c", 1)], "static-rr")
    assert picks(be, 3) == ["a", "b", "c"]
    be.set_op(be.server("a"), "down")
    assert set(picks(be, 4)) == {"b", "c"}
    be.set_op(be.server("a"), "up")
    assert set(picks(be, 3)) == {"a", "b", "c"}  # reinserted at once
    be.acquire(be.server("b"))
    assert "b" not in picks(be, 6)


def test_static_rr_accepts_only_0_or_full_weight():
    be = make_backend([("a", 2), ("b", 1)], "static-rr")
    with pytest.raises(ValueError, match="static LB algorithm"):
        be.set_weight(be.server("a"), 1)
    be.set_weight(be.server("a"), 0)
    assert set(picks(be, 4)) == {"b"}


# --- leastconn -----------------------------------------------------------------------------------------------

def test_leastconn_idle_servers_rotate():
    be = make_backend([("a", 1), ("b", 1), ("c", 1)], "leastconn")
    seq = []
    for _ in range(6):
        s = be.pick("x")
        be.acquire(s)
        be.release(s)
        seq.append(s.name)
    assert seq == ["a", "b", "c", "a", "b", "c"]


def test_leastconn_prefers_fewest_weighted_inflight():
    be = make_backend([("a", 2), ("b", 1)], "leastconn")
    got = []
    for _ in range(5):
        s = be.pick("x")
        be.acquire(s)
        got.append(s.name)
    # keys (inflight+1)*4096/eweight: a=256,384,512...; b=512,768...; ties go to the earlier-inserted server.
    assert got == ["a", "b", "a", "a", "b"]
    assert (be.server("a").served, be.server("b").served) == (3, 2)


def test_leastconn_counts_the_server_queue_and_maxconn():
    be = make_backend([("a", 1, {"maxconn": 1}), ("b", 1)], "leastconn")
    a = be.server("a")
    be.acquire(a)
    a.queue.append("waiting")
    be.requeue_changed(a)
    assert be.pick("x").name == "b"


# --- first ---------------------------------------------------------------------------------------------------

def test_first_fills_servers_in_order():
    be = make_backend([("a", 1, {"maxconn": 2}), ("b", 5, {"maxconn": 1}), ("c", 1)], "first")
    got = []
    for _ in range(5):
        s = be.pick("x")
        be.acquire(s)
        got.append(s.name)
    assert got == ["a", "a", "b", "c", "c"]


def test_first_without_maxconn_always_first():
    be = make_backend([("a", 1), ("b", 1)], "first")
    assert set(picks(be, 5)) == {"a"}


# --- source --------------------------------------------------------------------------------------------------

def test_source_spec_vector():
    be = make_backend([("a", 1), ("b", 1), ("c", 1)], "source")
    assert [be.pick(f"127.0.0.{i}").name for i in (1, 2, 3)] == ["c", "a", "b"]
    assert be.pick("127.0.0.1").name == "c"  # stable


def test_source_hash_words():
    assert source_hash("127.0.0.1") == 2130706433
    assert source_hash("::1") == 1
    assert source_hash("2001:db8::1") == (0x20010DB8 ^ 0 ^ 0 ^ 1)
    assert source_hash("::ffff:127.0.0.1") == 2130706433


def test_source_single_usable_server_takes_everything():
    be = make_backend([("a", 1), ("b", 1)], "source")
    be.set_op(be.server("a"), "down")
    assert {be.pick(f"10.0.0.{i}").name for i in range(10)} == {"b"}


# --- properties (hypothesis) -----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 256), min_size=1, max_size=6))
def test_fwrr_long_run_shares_follow_weights(weights):
    be = make_backend([(f"s{i}", w) for i, w in enumerate(weights)])
    total = sum(weights)
    c = Counter(picks(be, 4 * total))
    for i, w in enumerate(weights):
        assert abs(c[f"s{i}"] - 4 * w) <= 1, (weights, c)


OPS = st.lists(
    st.tuples(st.sampled_from(["down", "up", "drain", "ready", "maint", "weight", "pick", "acquire", "release"]),
              st.integers(0, 3), st.integers(0, 256)),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["roundrobin", "static-rr", "leastconn", "first", "source"]), OPS)
def test_random_state_changes_never_pick_an_unusable_server(algo, ops):
    be = make_backend([("a", 3, {"maxconn": 2}), ("b", 2), ("c", 1), ("m", 1, {"backup": True})], algo)
    held = []
    for op, idx, w in ops:
        s = be.servers[idx]
        if op == "down":
            be.set_op(s, "down")
        elif op == "up":
            be.set_op(s, "up")
        elif op in ("drain", "ready", "maint"):
            be.set_admin(s, op)
        elif op == "weight":
            if algo in ("static-rr", "source"):
                w = 0 if w < 128 else s.cfg.weight
            be.set_weight(s, w)
        elif op == "acquire":
            got = be.pick(f"10.0.0.{idx}")
            if got is not None:
                be.acquire(got)
                held.append(got)
        elif op == "release" and held:
            be.release(held.pop(0))
        got = be.pick(f"10.0.0.{idx}")
        actives = [x for x in be.servers if not x.is_backup and x.usable]
        if got is None:
            if algo != "source":
                assert not any(x.usable and not x.saturated for x in (actives or be.servers)), (op, be.servers)
            continue
        assert got.usable, (algo, op, got)
        if actives:
            assert not got.is_backup  # backups only when no active server is usable
        if algo != "source":
            assert not got.saturated or all(x.saturated for x in (actives or [got])), (algo, got)
