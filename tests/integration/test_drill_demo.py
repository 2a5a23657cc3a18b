"""The failure drill on loopback, no root: `balancier demo --drill`, and `balancier drill` run by an administrator
against a live cluster (the demo's) with command templates as fault injectors.

Everything is real: the portal servers, two cluster daemons, the proxy the cluster starts, the probe's
connections, the admin API over the daemons' UNIX sockets, the administrator's shell commands.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_block(size: int = 24) -> int:
    """A base port such that base .. base+size-1 are free on loopback (the demo uses base .. base+21)."""
    for base in range(30000, 40000, size):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            for port in (base,):  # the service address too
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.100", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


def _demo_cmd() -> list[str]:
    """`balancier demo` when the command line offers --drill, else the same code through its module."""
    helptext = subprocess.run([sys.executable, "-m", "balancier", "demo", "--help"], capture_output=True,
                              text=True, timeout=30).stdout
    return [sys.executable, "-m", "balancier", "demo"] if "--drill" in helptext else \
        [sys.executable, "-m", "balancier.demo"]


def test_demo_drill_passes_and_reports_each_scenario() -> None:
    base = _free_block()
    proc = subprocess.run([*_demo_cmd(), "--drill", "--scenario", "1,2,7", "--seed", "7", "--base-port", str(base)],
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # the listing first: what it will do, in order, on which node
    assert "scenario 1 (node-dies)" in out and "kill lb1 hard: its daemon, its proxy, its network" in out
    report = out[out.index("scenario                outage ms"):].splitlines()
    rows = {line.split()[1]: line.split() for line in report[1:] if line[:1].isdigit()}
    assert set(rows) == {"node-dies", "proxy-crash", "server-dies"}
    assert all(row[-1] == "PASS" for row in rows.values()), "\n".join(report)
    node_outage, node_failed = float(rows["node-dies"][2]), int(rows["node-dies"][3])
    assert 0 < node_outage <= 1000 + 200 + 3000 and node_failed > 0  # lb1 really died: the client saw it
    assert float(rows["proxy-crash"][2]) > 0  # the proxy really crashed
    assert int(rows["server-dies"][3]) <= 2
    assert "persistent users checked:" in out and ", affected: 0" in out
    assert report[-1] == "drill: 3/3 scenarios passed"
    print("\n" + "\n".join(report))


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[Path, int]]:
    """A running demo (the cluster an administrator drills): its work directory and base port."""
    base = _free_block()
    proc = subprocess.Popen([sys.executable, "-m", "balancier", "demo", "--base-port", str(base), "--duration", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        workdir = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("logs and configuration:"):
                workdir = Path(line.split(":", 1)[1].strip())
                break
        assert workdir is not None, "the demo did not start"
        # The demo prints its directory before the cluster has placed the group: a drill needs the service
        # running (it refuses otherwise), so wait until the proxy answers through the service address.
        assert _wait_service(base, 90), "the demo's cluster did not start the proxy"
        yield workdir, base
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the demo stops its processes and removes its directory
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_service(base: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.100", base), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _drill_file(workdir: Path, base: int) -> Path:
    path = workdir / "drill.toml"
    path.write_text(f"""[drill]
url = "http://127.0.0.100:{base}/"
resource = "esup_proxy"
server = "ents2"
crash_proxy = "sh -c 'kill -9 $(cat {workdir}/proxy-$0.pid)' {{node}}"
admin = {{ lb1 = "{workdir}/lb1/admin.sock", lb2 = "{workdir}/lb2/admin.sock" }}
""")
    return path


def _drill(workdir: Path, base: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancier.testbed.drill", "-c", str(workdir / "cluster.toml"),
                           "--drill-config", str(_drill_file(workdir, base)), *args],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_drill_dry_run_lists_and_does_nothing(demo: tuple[Path, int]) -> None:
    workdir, base = demo
    pid_before = (workdir / "proxy-lb1.pid").read_text()
    done = _drill(workdir, base, "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("drill of cluster 'esup' (lb1, lb2): esup_proxy runs on lb1")
    # only the scenarios the configured commands allow: 2 (crash_proxy) and 4 (the admin API)
    assert "scenario 2 (proxy-crash)" in out and "scenario 4 (migrations)" in out
    assert "scenario 1 (node-dies) left out: no kill_node, restore_node command" in out
    assert "kill the proxy on lb1 with SIGKILL" in out and "migration 50/50: move esup_proxy to lb1" in out
    assert (workdir / "proxy-lb1.pid").read_text() == pid_before


def test_drill_refuses_to_run_unconfirmed(demo: tuple[Path, int]) -> None:
    workdir, base = demo
    done = _drill(workdir, base, "--scenario", "2")
    assert done.returncode == 2
    assert "not confirmed (no terminal to ask): add --yes" in done.stderr


def test_drill_bad_input_is_a_clear_error(demo: tuple[Path, int]) -> None:
    workdir, base = demo
    done = _drill(workdir, base, "--scenario", "1", "--yes")
    assert done.returncode == 2 and "scenario 1 needs kill_node, restore_node" in done.stderr
    done = _drill(workdir, base, "--scenario", "6", "--yes")
    assert done.returncode == 2 and "unknown scenario '6'" in done.stderr


def test_drill_runs_command_templates_and_the_admin_api(demo: tuple[Path, int]) -> None:
    workdir, base = demo
    pid_before = int((workdir / "proxy-lb1.pid").read_text().split()[0])
    done = _drill(workdir, base, "--scenario", "2,4", "--migrations", "2", "--yes", "--json", "--seed", "3")
    doc = json.loads(done.stdout)
    assert doc["format"] == "balancier-drill/1" and doc["resource"] == "esup_proxy"
    s2, s4 = doc["scenarios"]
    assert s2["name"] == "proxy-crash" and s2["passed"], s2["why"]
    assert s2["failed"] > 0 and s2["outage_ms"] > 0  # the administrator's command really killed the proxy
    assert int((workdir / "proxy-lb1.pid").read_text().split()[0]) != pid_before  # restarted in place
    assert s4["name"] == "migrations" and s4["error"] is None and s4["probes"] > 50
    # the verdict and the exit code agree; the listing and progress went to stderr
    assert done.returncode == (0 if doc["passed"] else 1) and doc["passed"] == (s2["passed"] and s4["passed"])
    assert "migration 2/2: move esup_proxy to lb1" in done.stderr
    print(f"\nproxy crash: outage {s2['outage_ms']} ms, {s2['failed']} failed; 2 migrations in the demo: "
          f"outage {s4['outage_ms']} ms, {s4['failed']} failed ({s4['errors']})")
