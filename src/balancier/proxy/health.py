"""The health-check state machine: HAProxy's health counter, check intervals and start-up spreading. Pure code.

Rules (spec/haproxy.md §6, HAProxy check.c / server.c):
- ``health`` ranges over ``0 .. rise+fall-1``; the server is health-UP while ``health >= rise``.
- A failed check: if ``health > 0`` it drops by one, and straight to 0 once below ``rise``. Only reaching 0 marks the
  server DOWN. So an UP server at full health needs ``fall`` consecutive failures.
- A passed check: if not full it rises by one, and jumps to full (``rise+fall-1``) on reaching ``rise``. Only reaching
  ``rise`` marks the server UP. So a DOWN server needs ``rise`` consecutive successes.
- Initial state: ``health = rise`` and UP, one step from the edge: one failure at start-up takes the server DOWN, one
  success gives full health. The same start applies when a server leaves maintenance.
- Interval to the next check (measured from the end of the previous one): ``inter`` at full health, ``downinter``
  while DOWN at health 0, ``fastinter`` otherwise (transitional health, including the start); an unset fastinter or
  downinter falls back to ``inter``.
- First checks are staggered: check number ``pos`` of ``nbcheck`` starts ``max(mininter, own interval) * pos /
  nbcheck`` after start-up, where mininter is the smallest interval >= 1000 ms among all checks (capped by the global
  ``max-spread-checks``). ``spread-checks P`` adds +/- P% noise to every later interval.

Public API:
    HealthState(rise, fall, inter, fastinter=None, downinter=None)
        .health .up .full .on_result(ok) -> "up" | "down" | None .next_interval() -> int (ms)
        .reset() (start state) .force(up) (runtime API "set server health")
    status_text(state) -> "1/3 UP"-style text used by log-health-checks
    first_check_delays(intervals, max_spread=None) -> list[int]
    spread_interval(interval, percent, rnd) -> int
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Transition = Literal["up", "down"]

# Checks faster than this do not dictate the start-up spreading of the others (HAProxy's SRV_CHK_INTER_THRES).
SPREAD_THRESHOLD_MS = 1000


class HealthState:
    """One server's health counter and the interval it implies."""

    __slots__ = ("rise", "fall", "inter", "fastinter", "downinter", "health", "up", "failed_checks")

    def __init__(self, rise: int, fall: int, inter: int, fastinter: int | None = None,
                 downinter: int | None = None) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        if inter <= 0:
            raise ValueError("inter must be positive")
        self.rise = rise
        self.fall = fall
        self.inter = inter
        self.fastinter = fastinter or inter
        self.downinter = downinter or inter
        self.health = rise
        self.up = True
        self.failed_checks = 0

    @property
    def full(self) -> int:
        return self.rise + self.fall - 1

    def reset(self) -> None:
        """The start state, also used when a server leaves maintenance."""
        self.health = self.rise
        self.up = True

    def force(self, up: bool) -> None:
        """Set the counter to the edge of a state, as `set server health up|down` does."""
        if up:
            self.health = self.full
            self.up = True
        else:
            self.health = 0
            self.up = False

    def on_result(self, ok: bool) -> Transition | None:
        """Apply one check result; return the transition it causes, if any."""
        if ok:
            if self.health < self.full:
                self.health += 1
                if self.health >= self.rise:
                    self.health = self.full
                    if not self.up:
                        self.up = True
                        return "up"
            return None
        if self.health > 0:
            self.failed_checks += 1
            self.health -= 1
            if self.health < self.rise:
                self.health = 0
        if self.health == 0 and self.up:
            self.up = False
            return "down"
        return None

    def next_interval(self) -> int:
        """Milliseconds between the end of this check and the start of the next one."""
        if self.health == self.full:
            return self.inter
        if self.health == 0 and not self.up:
            return self.downinter
        return self.fastinter

    def status(self) -> str:
        return status_text(self)


def status_text(h: HealthState) -> str:
    """`X/Y UP|DOWN` as in log-health-checks lines: health-rise+1/fall when UP, health/rise when DOWN."""
    if h.up:
        return f"{h.health - h.rise + 1}/{h.fall} UP"
    return f"{h.health}/{h.rise} DOWN"


def first_check_delays(intervals: Sequence[int], max_spread: int | None = None) -> list[int]:
    """Delay (ms) of each check's first run, given each check's start-up interval in process order."""
    nbcheck = len(intervals)
    if nbcheck == 0:
        return []
    mininter = 0
    for iv in intervals:
        if iv >= SPREAD_THRESHOLD_MS and (mininter == 0 or iv < mininter):
            mininter = iv
    if max_spread is not None and max_spread > 0 and mininter > max_spread:
        mininter = max_spread
    out = []
    for pos, iv in enumerate(intervals):
        base = mininter if mininter and mininter >= iv else iv
        out.append(base * pos // nbcheck)
    return out


def spread_interval(interval: int, percent: int, rnd: float) -> int:
    """`spread-checks`: interval +/- percent%, rnd uniform in [0, 1] (0 → +P%, 1 → -P%)."""
    if percent <= 0:
        return interval
    rv = interval * percent // 100
    rv -= int(2 * rv * rnd)
    return max(0, interval + rv)
