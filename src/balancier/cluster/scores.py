"""Scores: Pacemaker's saturating integer arithmetic, and the value parsers the CIB needs.

Rules (spec cluster.md §4.1):
- A score is an integer in [-INFINITY, +INFINITY] with INFINITY = 1,000,000. Parsed values are clamped.
- Addition saturates and -INFINITY dominates: if either operand is <= -INFINITY the sum is -INFINITY
  (so INFINITY + -INFINITY = -INFINITY); else if either is >= INFINITY the sum is INFINITY; else the
  plain sum, clamped.
- A node whose final score for a resource is negative cannot run it.
- Durations in meta-attributes follow Pacemaker: a bare number is seconds; units ms, s, m/min, h.
"""

from __future__ import annotations

import re

INFINITY = 1_000_000

_SCORE_WORDS = {"infinity": INFINITY, "+infinity": INFINITY, "-infinity": -INFINITY,
                "inf": INFINITY, "+inf": INFINITY, "-inf": -INFINITY}
_INT_RE = re.compile(r"[+-]?[0-9]+")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|msec|s|sec|m|min|h|hr)?")
_UNIT_MS = {None: 1000, "ms": 1, "msec": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000,
            "h": 3_600_000, "hr": 3_600_000}


class ScoreError(ValueError):
    """A value that is not a valid score or duration."""


def clamp(value: int) -> int:
    """Clamp a plain integer into the score range."""
    return max(-INFINITY, min(INFINITY, value))


def add(a: int, b: int) -> int:
    """Pacemaker's pcmk__add_scores(): saturating, -INFINITY dominates."""
    if a <= -INFINITY or b <= -INFINITY:
        return -INFINITY
    if a >= INFINITY or b >= INFINITY:
        return INFINITY
    return clamp(a + b)


def total(*values: int) -> int:
    """Sum several scores with add(), left to right as Pacemaker does (near the bounds order matters:
    999,999 + 1 saturates to INFINITY and stays there)."""
    result = 0
    for v in values:
        result = add(result, v)
    return result


def scale(score: int, factor_num: int, factor_den: int = INFINITY) -> int:
    """score × (num/den), truncated toward zero, keeping ±INFINITY when the factor is 1.

    Colocation influence multiplies a dependent's scores by colocation-score / INFINITY, so only
    mandatory (±INFINITY) colocations carry a dependent's preferences in full.
    """
    if factor_num == factor_den:
        return score
    if factor_num == -factor_den:
        return -score
    return clamp(int(score * factor_num / factor_den))


def parse_score(text: str | int) -> int:
    """'INFINITY', '+INFINITY', '-INFINITY', 'inf' or an integer; clamped to the score range."""
    if isinstance(text, bool):
        raise ScoreError(f"invalid score {text!r}")
    if isinstance(text, int):
        return clamp(text)
    s = text.strip()
    word = _SCORE_WORDS.get(s.lower())
    if word is not None:
        return word
    if not _INT_RE.fullmatch(s):
        raise ScoreError(f"invalid score {text!r}: expected an integer or [+-]INFINITY")
    return clamp(int(s))


def format_score(score: int) -> str:
    """The way Pacemaker prints a score: INFINITY / -INFINITY / the integer."""
    if score >= INFINITY:
        return "INFINITY"
    if score <= -INFINITY:
        return "-INFINITY"
    return str(score)


def parse_duration_ms(text: str | int) -> int:
    """'30s', '500ms', '2min', '1h', or a bare number of seconds -> milliseconds."""
    if isinstance(text, bool):
        raise ScoreError(f"invalid duration {text!r}")
    if isinstance(text, int):
        return text * 1000
    m = _DURATION_RE.fullmatch(text.strip().lower())
    if not m:
        raise ScoreError(f"invalid duration {text!r}: expected a number with an optional unit ms, s, min, h")
    return int(round(float(m.group(1)) * _UNIT_MS[m.group(2)]))


def format_duration_ms(ms: int) -> str:
    """Milliseconds -> the shortest exact form: '500ms', '30s', '2min', '1h'."""
    if ms % 3_600_000 == 0 and ms:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0 and ms:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
