"""Fixtures of the data plane's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from proxy_builders import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop for tests that build a Runtime (never run unless the test runs it)."""
    lp = asyncio.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()
