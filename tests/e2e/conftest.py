"""The e2e suite's last check: nothing of ours is left behind (namespaces, links, processes).

The namespace beds of this suite are named ``bt<pid>-*`` (balancier.testbed.topology); the VIP agent's
test uses ``bv-<pid>*``. After the whole session, no namespace with either prefix and this process's
pid may exist, no process may still run inside one, and the root namespace must not have gained a
veth (every veth of a bed is created inside the bed's switch namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


def _netns() -> list[str]:
    if shutil.which("ip") is None:
        return []
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [str(e["name"]) for e in json.loads(out or "[]")]


def _root_veths() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    out = subprocess.run(["ip", "-j", "link", "show", "type", "veth"], capture_output=True, text=True,
                         timeout=10).stdout
    return {str(e["ifname"]) for e in json.loads(out or "[]")}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = _root_veths()
    yield
    if os.geteuid() != 0:
        return
    pid = os.getpid()
    ours = [ns for ns in _netns() if ns.startswith((f"bt{pid}-", f"bv-{pid}"))]
    assert not ours, f"namespaces left behind: {ours}"
    gained = _root_veths() - before
    assert not gained, f"veth links left in the root namespace: {sorted(gained)}"
