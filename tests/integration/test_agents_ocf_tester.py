"""Debian's ocf-tester on the shipped OCF script ocf/balancier-proxy (a Pacemaker user's view of the agent).

The VIP script needs a network namespace: its ocf-tester run is in tests/e2e/test_vip_agent.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from balancier.cluster.agents.proxy import read_pid

from support.backends import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("ocf-tester") is None, reason="ocf-tester (resource-agents) is not installed")
def test_ocf_tester_passes_on_the_proxy_wrapper(tmp_path: Path, backend_factory) -> None:
    b = backend_factory("ents1")
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n"
                   f"    timeout server 5s\nlisten web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n")
    pidfile = tmp_path / "proxy.pid"
    env = {**os.environ, "BALANCIER_PYTHON": sys.executable}
    try:
        proc = subprocess.run(
            ["ocf-tester", "-n", "proxy", "-o", f"config={cfg}", "-o", f"pidfile={pidfile}",
             str(ROOT / "ocf" / "balancier-proxy")],
            capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "passed all tests" in proc.stdout
    finally:
        pid = read_pid(str(pidfile))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_wrapper_answers_unsupported_actions_and_prints_exit_reasons(tmp_path: Path) -> None:
    script = str(ROOT / "ocf" / "balancier-proxy")
    env = {"PATH": os.environ["PATH"], "BALANCIER_PYTHON": sys.executable, "OCF_ROOT": "/usr/lib/ocf",
           "OCF_RESOURCE_INSTANCE": "p", "OCF_RESKEY_config": str(tmp_path / "absent.cfg")}
    promote = subprocess.run([script, "promote"], capture_output=True, text=True, env=env, timeout=30)
    assert promote.returncode == 3
    start = subprocess.run([script, "start"], capture_output=True, text=True, env=env, timeout=30)
    assert start.returncode == 5
    assert f"ocf-exit-reason:configuration {tmp_path}/absent.cfg does not exist on this node" in start.stderr
    usage = subprocess.run([script], capture_output=True, text=True, env=env, timeout=30)
    assert usage.returncode == 2 and "usage:" in usage.stderr
