"""Numbers in the configuration: times, sizes and plain integers, validated before any conversion.

Rules (HAProxy's ``parse_time_err`` / ``parse_size_err``):
- A time is unsigned digits plus an optional lowercase unit: ``us``, ``ms`` (the default, so a bare number is
  milliseconds), ``s``, ``m`` (minutes), ``h``, ``d``. No sign, no decimals, no blanks.
- Conversion rounds UP to the target unit (``1500us`` = 2 ms). The largest value is 2147483647 ms (~24.8 days);
  above it is an overflow. A non-zero value that would round to 0 is an underflow.
- A size is unsigned digits plus an optional ``k``/``m``/``g`` suffix (any case), powers of 1024.
- Nothing here calls ``int()`` on text that has not first matched a digits-only pattern.

The functions return ``(value, error)``: exactly one of them is meaningful. Errors are :class:`TimeError` kinds so
that each caller can word the message the way HAProxy words it for that keyword.
"""

from __future__ import annotations

import enum
import re

TIME_MAX_MS = 2147483647

_TIME_RE = re.compile(r"([0-9]+)(us|ms|s|m|h|d)?")
_DIGITS_RE = re.compile(r"[0-9]+")
_SIGNED_RE = re.compile(r"[-+]?[0-9]+")
_SIZE_RE = re.compile(r"([0-9]+)([kKmMgG])?")

# Length of one unit in microseconds: the common base lets us round up exactly.
_UNIT_US = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class TimeError(enum.Enum):
    OVERFLOW = "overflow"
    UNDERFLOW = "underflow"
    BAD_CHAR = "bad character"
    EMPTY = "empty"


def parse_time(text: str, unit: str = "ms") -> tuple[int, TimeError | None, str]:
    """Parse a time into ``unit`` ('ms' or 's'). Returns (value, error, offending character)."""
    if text == "":
        return 0, TimeError.EMPTY, ""
    m = _TIME_RE.match(text)
    if m is None:
        return 0, TimeError.BAD_CHAR, text[0]
    if m.end() != len(text):
        return 0, TimeError.BAD_CHAR, text[m.end()]
    digits, suffix = m.group(1), m.group(2) or "ms"
    raw = int(digits)  # digits-only by the pattern above
    total_us = raw * _UNIT_US[suffix]
    target_us = _UNIT_US[unit]
    value = -(-total_us // target_us)  # ceiling division
    if value > TIME_MAX_MS:
        return 0, TimeError.OVERFLOW, ""
    if raw and not value:
        return 0, TimeError.UNDERFLOW, ""
    return value, None, ""


def parse_size(text: str) -> int | None:
    """A size in bytes, or None when the text is not digits with an optional k/m/g suffix."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * _SIZE_MULT[(m.group(2) or "").lower()]


def parse_uint(text: str) -> int | None:
    """An unsigned decimal integer, or None."""
    if _DIGITS_RE.fullmatch(text) is None:
        return None
    return int(text)


def parse_int(text: str) -> int | None:
    """A decimal integer with an optional sign, or None."""
    if _SIGNED_RE.fullmatch(text) is None:
        return None
    return int(text)


def time_message(err: TimeError, char: str, arg: str, what: str) -> str:
    """HAProxy's wording for a bad time given to a proxy keyword such as 'timeout client'."""
    if err is TimeError.OVERFLOW:
        return f"timer overflow in argument '{arg}' to '{what}' (maximum value is 2147483647 ms or ~24.8 days)"
    if err is TimeError.UNDERFLOW:
        return f"timer underflow in argument '{arg}' to '{what}' (minimum non-null value is 1 ms)"
    if err is TimeError.EMPTY:
        return f"'{what}' expects an integer value (in milliseconds)"
    return f"unexpected character '{char}' in '{what}'"
