"""Fixtures of the data plane's unit tests."""

from __future__ import annotations

import pytest

from proxy_builders import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
