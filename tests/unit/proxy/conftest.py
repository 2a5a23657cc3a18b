"""Fixtures of the data plane's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

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


@pytest.fixture(params=["asyncio", "uvloop"])
def any_loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh asyncio loop, then a fresh uvloop: for code on real sockets that must behave the same on both
    (a module takes it as its `loop` by overriding that fixture)."""
    lp = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
    try:
        yield lp
    finally:
        lp.close()
