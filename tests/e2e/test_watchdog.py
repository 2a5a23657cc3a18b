"""The VIP watchdog, for real, as root, in a network namespace the test creates and always removes.

A daemon that dies without saying goodbye (SIGKILL) must not leave its node answering for the virtual IP: the
watchdog (started by the daemon in its own session, reading a pipe only the daemon writes to) removes the addresses
recorded in the state file as soon as the pipe closes. A clean exit says `keep` first and nothing is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="needs root and iproute2 to create network namespaces"),
]

VIP = "10.97.0.10"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ns = f"bw-{os.getpid()}"
    sh("ip", "netns", "del", ns, check=False)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # a veth pair inside the namespace (this kernel has no dummy links); both ends up so eth0 is up
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
        sh("ip", "-n", ns, "addr", "add", VIP + "/24", "dev", "eth0")
        state = tmp_path / "vips.json"
        state.write_text(json.dumps([{"ip": VIP, "prefix": 24, "nic": "eth0"}]))
        yield ns, state
    finally:
        sh("ip", "netns", "del", ns, check=False)


def has_vip(ns: str) -> bool:
    return VIP in sh("ip", "-n", ns, "-4", "addr", "show", "dev", "eth0").stdout


def watchdog(ns: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "balancier.cluster.watchdog",
                             str(state)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def test_daemon_death_removes_the_vip_at_once(node: tuple[str, Path]) -> None:
    ns, state = node
    guard = watchdog(ns, state)
    time.sleep(0.3)
    assert has_vip(ns)
    t0 = time.monotonic()
    assert guard.stdin is not None
    guard.stdin.close()  # what the kernel does when the daemon is SIGKILLed
    guard.wait(10)
    assert guard.stderr is not None
    err = guard.stderr.read()
    elapsed = time.monotonic() - t0
    assert not has_vip(ns)
    assert json.loads(state.read_text()) == []
    assert b"removed 10.97.0.10" in err
    assert elapsed < 2.0, f"the watchdog took {elapsed:.2f} s"


def test_clean_exit_keeps_the_vip(node: tuple[str, Path]) -> None:
    ns, state = node
    guard = watchdog(ns, state)
    guard.communicate(b"keep", timeout=10)
    assert has_vip(ns)
    assert json.loads(state.read_text())[0]["ip"] == VIP
