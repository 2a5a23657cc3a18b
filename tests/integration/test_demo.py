"""`balancier demo --self-test`: the README's main command, run as a newcomer would, checked end to end.

It starts the portal farm, two cluster daemons and (through the cluster) the proxy on loopback, checks the seed's
weighted spread over 385 requests, a JSESSIONID session that sticks, and the failover to lb2 when lb1 is killed.
"""

from __future__ import annotations

import socket
import subprocess
import sys


def _free_block(size: int = 24) -> int:
    """A base port such that base .. base+size-1 are all free on loopback (the demo uses that many)."""
    for base in range(24000, 30000, size):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


def test_demo_self_test_passes() -> None:
    base = _free_block()
    proc = subprocess.run([sys.executable, "-m", "balancier", "demo", "--self-test", "--base-port", str(base)],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "385 requests: ents3 256, ents2 128, ents1 1" in out
    assert "self-test passed" in out
    assert "service answered again after" in out
