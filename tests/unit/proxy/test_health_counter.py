"""HAProxy's health counter, check intervals and start-up spreading (haproxy.md §6), with no clock at all."""

from __future__ import annotations

import pytest

from balancier.proxy.health import HealthState, first_check_delays, spread_interval, status_text


def run(h: HealthState, results: str) -> list[str | None]:
    """results: a string of '+' (pass) and '-' (fail); returns the transition of each."""
    return [h.on_result(c == "+") for c in results]


def test_seed_rise1_fall3_starts_at_1_and_one_failure_takes_it_down():
    h = HealthState(rise=1, fall=3, inter=5000)
    assert (h.health, h.up, h.full) == (1, True, 3)
    assert status_text(h) == "1/3 UP"
    assert h.on_result(False) == "down"
    assert (h.health, h.up) == (0, False)


def test_seed_one_success_at_start_gives_full_health_then_fall_failures():
    h = HealthState(rise=1, fall=3, inter=5000)
    assert h.on_result(True) is None
    assert h.health == 3 and status_text(h) == "3/3 UP"
    assert run(h, "--") == [None, None]
    assert h.health == 1 and h.up
    assert h.on_result(False) == "down"
    assert h.health == 0
    assert h.on_result(True) == "up"  # rise 1: one success brings it back, at full health
    assert h.health == 3


@pytest.mark.parametrize(
    ("rise", "fall", "results", "transitions", "final"),
    [
        # defaults rise 2 fall 3: start at 2 (UP 1/3); one failure at start → DOWN at once.
        (2, 3, "-", ["down"], 0),
        # start, one success → full (4); three failures → DOWN, straight from 2 to 0.
        (2, 3, "+---", [None, None, None, "down"], 0),
        # DOWN needs rise consecutive successes; a failure in between resets to 0.
        (2, 3, "-+-++", ["down", None, None, None, "up"], 4),
        # failures interleaved with successes never reach the edge: any pass while UP restores full health.
        (2, 3, "+--+--+", [None, None, None, None, None, None, None], 4),
        (3, 2, "---+++", ["down", None, None, None, None, "up"], 4),
        (1, 1, "-+-+", ["down", "up", "down", "up"], 1),
    ],
)
def test_counter_table(rise, fall, results, transitions, final):
    h = HealthState(rise, fall, 2000)
    assert run(h, results) == transitions
    assert h.health == final


def test_health_never_leaves_its_range():
    h = HealthState(2, 3, 1000)
    run(h, "+" * 10)
    assert h.health == 4
    run(h, "-" * 10)
    assert h.health == 0
    assert h.failed_checks == 3  # failures at health 0 are not counted again


def test_status_text_down_side():
    h = HealthState(rise=2, fall=3, inter=1000)
    h.on_result(False)
    h.on_result(True)
    assert status_text(h) == "1/2 DOWN"
    h.on_result(True)
    assert status_text(h) == "3/3 UP"


def test_intervals_follow_health():
    h = HealthState(rise=2, fall=3, inter=5000, fastinter=1000, downinter=10000)
    assert h.next_interval() == 1000  # start: transitional
    h.on_result(True)
    assert h.next_interval() == 5000  # full health
    h.on_result(False)
    assert h.next_interval() == 1000  # going down
    h.on_result(False)
    h.on_result(False)
    assert not h.up and h.next_interval() == 10000  # DOWN at 0
    h.on_result(True)
    assert h.next_interval() == 1000  # rising


def test_unset_fast_and_down_intervals_fall_back_to_inter():
    h = HealthState(rise=1, fall=3, inter=5000)
    assert h.next_interval() == 5000
    h.on_result(False)
    assert h.next_interval() == 5000


def test_seed_detection_time_is_inter_times_fall_from_full_health():
    # Seed: inter 5000 rise 1 fall 3, no fastinter: from full health, 3 failed checks 5 s apart.
    h = HealthState(rise=1, fall=3, inter=5000)
    h.on_result(True)
    elapsed = 0
    for _ in range(3):
        t = h.on_result(False)
        if t == "down":
            break
        elapsed += h.next_interval()
    assert t == "down" and elapsed == 10000  # 2 intervals between the 3 failing checks


def test_reset_and_force():
    h = HealthState(rise=2, fall=3, inter=1000)
    h.force(False)
    assert (h.health, h.up) == (0, False)
    h.force(True)
    assert (h.health, h.up) == (4, True)
    h.reset()
    assert (h.health, h.up) == (2, True)


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError):
        HealthState(0, 3, 1000)
    with pytest.raises(ValueError):
        HealthState(1, 3, 0)


@pytest.mark.parametrize(
    ("intervals", "max_spread", "expected"),
    [
        ([], None, []),
        ([2000, 2000, 2000, 2000], None, [0, 500, 1000, 1500]),
        # mininter is the smallest interval >= 1000 ms; a faster check uses it too, a slower one its own.
        ([60000, 500], None, [0, 30000]),
        ([5000, 10000], None, [0, 5000]),
        ([500, 200], None, [0, 100]),  # no interval reaches the threshold: each uses its own
        ([60000, 60000, 60000], 3000, [0, 20000, 40000]),  # own interval larger than the capped mininter
        ([2000, 2000], 1000, [0, 1000]),
    ],
)
def test_first_check_spreading(intervals, max_spread, expected):
    assert first_check_delays(intervals, max_spread) == expected


def test_spread_checks_noise_bounds():
    assert spread_interval(1000, 0, 0.3) == 1000
    assert spread_interval(1000, 10, 0.0) == 1100
    assert spread_interval(1000, 10, 1.0) == 900
    assert spread_interval(1000, 10, 0.5) == 1000
