"""Fixtures shared by every test folder: real backends, a syslog receiver, proxy processes.

tests/ goes on sys.path so that `from support.backends import Backend` works from any test file.
Every fixture here stops what it started, by pid or by socket, even when the test fails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.backends import BackendFactory  # noqa: E402
from support.proxy import ProxyFactory  # noqa: E402
from support.syslog import SyslogReceiver  # noqa: E402


@pytest.fixture
def backend_factory() -> Iterator[BackendFactory]:
    """`backend_factory("ents3", host="127.0.0.2", delay=0.1)` -> a started Backend; all stopped at the end."""
    f = BackendFactory()
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def syslog_receiver() -> Iterator[SyslogReceiver]:
    """A UDP syslog receiver on 127.0.0.1:<free port>; `.address` goes on a `log` line."""
    r = SyslogReceiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def proxy_factory() -> Iterator[ProxyFactory]:
    """`proxy_factory(cfg_text, impl="balancier"|"haproxy")` -> a listening ProxyProcess; all stopped at the end."""
    f = ProxyFactory()
    try:
        yield f
    finally:
        f.stop_all()
