"""Time and size units (spec 2.5), and how a bad time reads in a message (HAProxy 2.6 wording)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancier.proxy.config.units import TimeError, parse_size, parse_time, parse_uint

from proxycfg_helpers import errors, one_proxy

TIMES = [
    ("0", 0), ("1", 1), ("5000", 5000), ("1us", 1), ("999us", 1), ("1000us", 1), ("1001us", 2), ("1500us", 2),
    ("3ms", 3), ("2s", 2000), ("1m", 60000), ("1h", 3600000), ("1d", 86400000), ("24d", 2073600000),
    ("2147483647", 2147483647), ("2147483647ms", 2147483647), ("0us", 0), ("0d", 0),
]


@pytest.mark.parametrize(("text", "ms"), TIMES)
def test_time_values(text: str, ms: int) -> None:
    assert parse_time(text) == (ms, None, "")


BAD_TIMES = [
    ("25d", TimeError.OVERFLOW, ""), ("2147483648", TimeError.OVERFLOW, ""), ("99999999999", TimeError.OVERFLOW, ""),
    ("5S", TimeError.BAD_CHAR, "S"), ("1.5s", TimeError.BAD_CHAR, "."), ("-1", TimeError.BAD_CHAR, "-"),
    ("+5", TimeError.BAD_CHAR, "+"), (" 5", TimeError.BAD_CHAR, " "), ("10x", TimeError.BAD_CHAR, "x"),
    ("5sec", TimeError.BAD_CHAR, "e"), ("abc", TimeError.BAD_CHAR, "a"), ("", TimeError.EMPTY, ""),
    ("٣", TimeError.BAD_CHAR, "٣"),  # a Unicode digit is not a digit here
]


@pytest.mark.parametrize(("text", "err", "char"), BAD_TIMES)
def test_bad_times(text: str, err: TimeError, char: str) -> None:
    assert parse_time(text) == (0, err, char)


def test_seconds_round_up() -> None:
    assert parse_time("1500ms", unit="s") == (2, None, "")
    assert parse_time("30m", unit="s") == (1800, None, "")
    assert parse_time("1", unit="s") == (1, None, "")  # 1 ms rounds up to 1 s, never down to 0


@given(st.integers(min_value=0, max_value=2147483647))
def test_bare_number_is_milliseconds(n: int) -> None:
    assert parse_time(str(n)) == (n, None, "")


@given(st.integers(min_value=1, max_value=10**12))
def test_microseconds_round_up(us: int) -> None:
    value, err, _ = parse_time(f"{us}us")
    if err is None:
        assert value == -(-us // 1000)
    else:
        assert err is TimeError.OVERFLOW and -(-us // 1000) > 2147483647


SIZES = [("16384", 16384), ("16k", 16384), ("16K", 16384), ("1m", 1048576), ("2G", 2 * 1024**3), ("0", 0)]


@pytest.mark.parametrize(("text", "value"), SIZES)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "1.5k", "k", "-1", "16kb", "1t", " 1"])
def test_bad_sizes(text: str) -> None:
    assert parse_size(text) is None


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), ("", None), ("4 2", None), ("0x10", None),
                                              ("+1", None), ("١", None)])
def test_uint(text: str, value: int | None) -> None:
    assert parse_uint(text) == value


TIMEOUT_MESSAGES = [
    ("timeout client 25d", "timer overflow in argument '25d' to 'timeout client' (maximum value is 2147483647 ms "
                           "or ~24.8 days)"),
    ("timeout server 10x", "unexpected character 'x' in 'timeout server'"),
    ("timeout connect 1.5s", "unexpected character '.' in 'timeout connect'"),
    ("timeout queue", "'timeout queue' expects an integer value (in milliseconds)"),
]


@pytest.mark.parametrize(("line", "message"), TIMEOUT_MESSAGES)
def test_timeout_messages(tmp_path: Path, line: str, message: str) -> None:
    assert errors(tmp_path, f"listen l\n    {line}\n") == [f"alert x.cfg:2: {message}"]


def test_units_reach_the_model(tmp_path: Path) -> None:
    px = one_proxy(tmp_path, "timeout connect 1500us\ntimeout queue 2m\ntimeout check 0\ntimeout tunnel 1h")
    assert (px.timeouts.connect, px.timeouts.queue, px.timeouts.check, px.timeouts.tunnel) == (2, 120000, None,
                                                                                               3600000)
