"""Real external agents through the executor: Debian's ocf:heartbeat:Dummy, agents of our own written to a
temp OCF root (a hung one that forks, a broken one), an LSB script, and Debian's stunnel4 wrapping the proxy.

A systemd unit through a stand-in systemctl (this host need not run systemd). Nothing here needs root
except the stunnel4 test (it starts the real init script on loopback ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from balancier.cluster.agents.lsb_check import lsb_compliance
from balancier.cluster.agents.registry import agent_for
from balancier.cluster.executor import Executor
from balancier.cluster.model import OpResult, ResourceConfig

from support.backends import free_port

DUMMY = "/usr/lib/ocf/resource.d/heartbeat/Dummy"


@dataclass
class Act:
    kind: str
    resource: str | None
    interval_ms: int = 0
    timeout_ms: int = 20_000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _executor(reports: list[OpResult], ocf_root: str = "/usr/lib/ocf", init_dir: str = "/etc/init.d") -> Executor:
    return Executor("lb1", report=reports.append,
                    agent_factory=lambda r: agent_for(r, ocf_root, node="lb1", init_dir=init_dir))


@pytest.mark.skipif(not os.path.exists(DUMMY), reason="Debian's resource-agents is not installed")
def test_dummy_start_monitor_fail_stop(tmp_path: Path) -> None:
    state = tmp_path / "dummy.state"
    res = ResourceConfig(id="d1", agent="ocf:heartbeat:Dummy", params=(("state", str(state)),))
    reports: list[OpResult] = []
    ex = _executor(reports)
    ex.configure([res])

    async def go() -> None:
        try:
            assert (await ex.execute(Act("probe", "d1"))).rc == 7
            assert (await ex.execute(Act("start", "d1"))).rc == 0 and state.exists()
            assert (await ex.execute(Act("start", "d1"))).rc == 0  # idempotent
            first = await ex.execute(Act("monitor", "d1", interval_ms=100, timeout_ms=5000))
            assert first.rc == 0
            state.unlink()  # the "process" dies behind the cluster's back
            for _ in range(40):
                await asyncio.sleep(0.05)
                if reports[-1].rc == 7:
                    break
            failed = reports[-1]
            assert (failed.op, failed.rc, failed.interval_ms) == ("monitor", 7, 100) and not failed.ok
            assert "No process state file found" in failed.output
            # the recovery the policy engine would order: stop, start again
            assert (await ex.execute(Act("stop", "d1"))).rc == 0
            assert ex.monitors() == []
            assert (await ex.execute(Act("start", "d1"))).rc == 0 and state.exists()
            assert (await ex.execute(Act("stop", "d1"))).rc == 0 and not state.exists()
            assert (await ex.execute(Act("stop", "d1"))).rc == 0
        finally:
            await ex.close()
    asyncio.run(go())
    call_ids = [r.call_id for r in reports]
    assert call_ids == sorted(call_ids) and len(set(call_ids)) == len(call_ids)


HUNG_AGENT = """#!/bin/sh
# starts a child, records both pids, then hangs
sleep 300 &
echo "$$ $!" > "$OCF_RESKEY_pids"
echo "starting slowly"
echo "ocf-exit-reason:should not matter" >&2
sleep 300
"""

BROKEN_AGENT = """#!/bin/sh
echo "checking for /usr/sbin/frobd"
echo "ocf-exit-reason:frobd is not installed (/usr/sbin/frobd missing)" >&2
exit 5
"""

ENV_AGENT = """#!/bin/sh
env | grep '^OCF_' | sort > "$OCF_RESKEY_out"
exit 0
"""


def _ocf_root(tmp_path: Path) -> Path:
    d = tmp_path / "ocf" / "resource.d" / "test"
    d.mkdir(parents=True)
    for name, text in (("Hung", HUNG_AGENT), ("Broken", BROKEN_AGENT), ("Env", ENV_AGENT)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    return tmp_path / "ocf"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    root = _ocf_root(tmp_path)
    pids_file = tmp_path / "pids"
    res = ResourceConfig(id="h", agent="ocf:test:Hung", params=(("pids", str(pids_file)),))
    reports: list[OpResult] = []
    ex = _executor(reports, str(root))
    started = time.monotonic()
    result = asyncio.run(ex.execute(Act("start", "h", timeout_ms=500), res))
    elapsed = time.monotonic() - started
    assert result.timed_out and result.rc == 1 and not result.ok
    assert "timed out after 500ms; its process group was killed" in result.output
    assert "starting slowly" in result.output  # output captured up to the kill
    assert elapsed < 4.0
    agent_pid, child_pid = map(int, pids_file.read_text().split())
    deadline = time.monotonic() + 3
    while (_alive(agent_pid) or _alive(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(agent_pid), "the agent survived its timeout"
    assert not _alive(child_pid), "the agent's child survived its timeout"
    assert reports == [result]


def test_not_installed_agent_reports_rc5_with_output(tmp_path: Path) -> None:
    root = _ocf_root(tmp_path)
    res = ResourceConfig(id="b", agent="ocf:test:Broken")
    reports: list[OpResult] = []
    result = asyncio.run(_executor(reports, str(root)).execute(Act("start", "b"), res))
    assert result.rc == 5 and not result.timed_out
    assert "checking for /usr/sbin/frobd" in result.output
    assert "ocf-exit-reason:frobd is not installed (/usr/sbin/frobd missing)" in result.output
    assert result.hard and not result.ok  # not retried on this node (spec §5)


def test_agent_sees_the_ocf_environment(tmp_path: Path) -> None:
    root = _ocf_root(tmp_path)
    out = tmp_path / "env.txt"
    res = ResourceConfig(id="e1", agent="ocf:test:Env", params=(("out", str(out)), ("ip", "10.0.0.5")),
                         meta=(("migration-threshold", "3"),))
    reports: list[OpResult] = []
    result = asyncio.run(_executor(reports, str(root)).execute(Act("monitor", "e1", timeout_ms=7000), res))
    assert result.rc == 0
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["OCF_ROOT"] == str(root)
    assert env["OCF_RESOURCE_INSTANCE"] == "e1" and env["OCF_RESOURCE_TYPE"] == "Env"
    assert env["OCF_RESOURCE_PROVIDER"] == "test" and env["OCF_RESKEY_ip"] == "10.0.0.5"
    assert env["OCF_RESKEY_CRM_meta_timeout"] == "7000" and env["OCF_RESKEY_CRM_meta_interval"] == "0"
    assert env["OCF_RESKEY_CRM_meta_name"] == "monitor" and env["OCF_RESKEY_CRM_meta_on_node"] == "lb1"
    assert env["OCF_RESKEY_CRM_meta_migration_threshold"] == "3"


def test_runner_prints_the_op_result() -> None:
    proc = subprocess.run([sys.executable, "-m", "balancier.cluster.agents.runner", "ocf:heartbeat:Dummy", "probe",
                           "-p", "state=/nonexistent/dummy.state"], capture_output=True, text=True, timeout=30)
    if not os.path.exists(DUMMY):
        pytest.skip("Debian's resource-agents is not installed")
    assert proc.returncode == 7
    assert '"op": "probe"' in proc.stdout and '"rc": 7' in proc.stdout


# --------------------------------------------------------------------------- systemd units

# A stand-in for systemctl with systemd's exit statuses and is-active words: units are files in
# $UNITS (present = installed), a running unit has a ".active" marker, "bad" fails to start and
# is then "failed". Every call is logged so the test sees exactly what the agent asked.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$UNITS/calls.log"
verb=$1; unit=$2
[ -f "$UNITS/$unit" ] || { echo "Unit $unit not found." >&2; [ "$verb" = is-active ] && { echo inactive; exit 4; }; exit 5; }
case "$verb" in
  start) case "$unit" in bad.service) touch "$UNITS/$unit.failed"; echo "Job for $unit failed." >&2; exit 1 ;; esac
         touch "$UNITS/$unit.active"; exit 0 ;;
  stop) rm -f "$UNITS/$unit.active" "$UNITS/$unit.failed"; exit 0 ;;
  is-active) if [ -f "$UNITS/$unit.active" ]; then echo active; exit 0; fi
             if [ -f "$UNITS/$unit.failed" ]; then echo failed; exit 3; fi
             echo inactive; exit 3 ;;
esac
exit 1
"""


def test_systemd_units_through_systemctl(tmp_path: Path) -> None:
    """With systemd running (its runtime directory present), a unit is started, monitored and stopped with
    systemctl; a unit systemctl does not know is rc 5 for start (hard: not retried on this node) and
    success for stop; a unit that fails to start is a soft failure whose monitor says 1 (failed), not 7."""
    from balancier.cluster.agents.external import SystemdAgent

    units = tmp_path / "units"
    units.mkdir()
    for u in ("web.service", "bad.service"):
        (units / u).write_text("[Service]\n")
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.replace("$UNITS", str(units)))
    systemctl.chmod(0o755)
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    reports: list[OpResult] = []
    ex = Executor("lb1", report=reports.append, agent_factory=lambda r: SystemdAgent(
        r, r.agent.split(":", 1)[1], runtime_dir=str(runtime), systemctl=str(systemctl)))
    web, bad, gone = (ResourceConfig(id=i, agent=f"systemd:{i}") for i in ("web", "bad", "gone"))

    async def go() -> list[tuple[str, str, int]]:
        out = []
        for res, op in ((web, "probe"), (web, "start"), (web, "monitor"), (web, "start"), (web, "stop"),
                        (web, "monitor"), (web, "stop"), (gone, "probe"), (gone, "start"), (gone, "stop"),
                        (bad, "start"), (bad, "monitor"), (bad, "stop"), (bad, "monitor")):
            r = await ex.execute(Act(op, res.id, timeout_ms=5000), res)
            out.append((res.id, op, r.rc))
        return out
    assert asyncio.run(go()) == [
        ("web", "probe", 7), ("web", "start", 0), ("web", "monitor", 0), ("web", "start", 0), ("web", "stop", 0),
        ("web", "monitor", 7), ("web", "stop", 0), ("gone", "probe", 7), ("gone", "start", 5), ("gone", "stop", 0),
        ("bad", "start", 1), ("bad", "monitor", 1), ("bad", "stop", 0), ("bad", "monitor", 7)]
    by = {(r.resource, r.op, r.call_id): r for r in reports}
    gone_start = next(r for (rid, op, _), r in by.items() if (rid, op) == ("gone", "start"))
    assert gone_start.hard and "gone.service is not installed on this host" in gone_start.output
    bad_start = next(r for (rid, op, _), r in by.items() if (rid, op) == ("bad", "start"))
    assert not bad_start.hard and "Job for bad.service failed." in bad_start.output
    assert "systemctl start bad.service exited with 1" in bad_start.output
    calls = (units / "calls.log").read_text().splitlines()
    assert calls[:3] == ["is-active web.service", "start web.service", "is-active web.service"]
    # without systemd nothing is asked of systemctl: a clear "not installed here" instead
    os.rmdir(runtime)
    r = asyncio.run(ex.execute(Act("start", "web", timeout_ms=5000), web))
    assert r.rc == 5 and "systemd not running on this host" in r.output
    assert len((units / "calls.log").read_text().splitlines()) == len(calls)


# --------------------------------------------------------------------------- stunnel4 as an LSB service

STUNNEL_INIT = "/etc/init.d/stunnel4"


def _https_get(port: int, ca_pem: str) -> str:
    ctx = ssl.create_default_context(cafile=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data.decode("latin-1")


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(STUNNEL_INIT) or not shutil.which("stunnel4"),
                    reason="needs root and Debian's stunnel4 (its init script writes to /etc/stunnel, /run)")
def test_stunnel4_lsb_service_wrapping_the_proxy(tmp_path: Path, backend_factory) -> None:
    """The reference deployment's TLS front: Debian's real /etc/init.d/stunnel4 run by the executor as
    `lsb:stunnel4`, terminating TLS in front of a `balancier:proxy`, in front of a portal backend.
    Started, monitored, killed, seen dead, restarted, stopped; and the checker names the script's LSB
    deviation in plain words."""
    import trustme

    backend = backend_factory("ents1")
    proxy_port, tls_port = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n"
                   f"    timeout server 5s\nlisten web\n    bind 127.0.0.1:{proxy_port}\n"
                   f"    server s {backend.address}\n")
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    conf = Path("/etc/stunnel") / f"balancier-test-{os.getpid()}.conf"
    pidfile = f"/run/stunnel4/balancier-test-{os.getpid()}.pid"
    conf.write_text(f"pid = {pidfile}\nforeground = no\n[https]\naccept = 127.0.0.1:{tls_port}\n"
                    f"connect = 127.0.0.1:{proxy_port}\ncert = {pem}\n")
    proxy = ResourceConfig(id="proxy", agent="balancier:proxy",
                           params=(("config", str(cfg)), ("pidfile", str(tmp_path / "proxy.pid"))))
    tls = ResourceConfig(id="tls", agent="lsb:stunnel4")
    reports: list[OpResult] = []
    ex = _executor(reports)
    ex.configure([proxy, tls])
    daemons: list[int] = []

    async def wait_accepting(port: int) -> bool:
        for _ in range(60):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                await asyncio.sleep(0.05)
        return False

    async def reaper() -> None:
        """Reap the stunnel daemons (our children while we are the subreaper) as soon as they exit."""
        while True:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(Path(pidfile).read_text().split()[0])
                if pid not in daemons:
                    daemons.append(pid)
            for pid in daemons:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            await asyncio.sleep(0.02)

    async def go() -> None:
        reaping = asyncio.ensure_future(reaper())
        try:
            assert (await ex.execute(Act("start", "proxy"))).rc == 0
            assert (await ex.execute(Act("probe", "tls"))).rc == 7
            assert (await ex.execute(Act("start", "tls"))).rc == 0
            assert await wait_accepting(tls_port)
            answer = await asyncio.to_thread(_https_get, tls_port, str(ca_pem))
            assert answer.startswith("HTTP/1.1 200") and "X-Served-By: ents1" in answer
            assert (await ex.execute(Act("monitor", "tls", interval_ms=5000))).rc == 0
            pid = int(Path(pidfile).read_text().split()[0])
            os.kill(pid, 9)
            # Wait until the killed daemon is reaped, not merely a zombie: Debian's status
            # (pidofproc, `kill -0`) still sees a zombie as running.
            for _ in range(250):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.02)
            assert not _alive(pid)
            dead = await ex.execute(Act("probe", "tls"))
            assert dead.rc == 7 and "status exited with" in dead.output  # the cluster sees it stopped
            assert (await ex.execute(Act("stop", "tls"))).rc == 0
            assert (await ex.execute(Act("start", "tls"))).rc == 0  # the restart the policy would order
            assert await wait_accepting(tls_port)
            assert (await ex.execute(Act("stop", "tls"))).rc == 0
            assert (await ex.execute(Act("probe", "tls"))).rc == 7
        finally:
            await ex.close()
            await ex.run(tls, "stop", 20_000, publish=False)
            await ex.run(proxy, "stop", 20_000, publish=False)
            reaping.cancel()
    # The machine's PID 1 may not reap orphans (a container's init): become the subreaper for the
    # daemons this test starts, so a killed stunnel is really gone, not a zombie its status still sees.
    try:
        _set_subreaper(1)
        try:
            asyncio.run(go())
        finally:
            _set_subreaper(0)
            for pid in daemons:  # reap only the stunnel processes this test started
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        # Debian 12's script: `status` exits 1 ("dead but pid file exists") for a stopped service. (Run
        # without the subreaper: the checker only starts and stops, it never kills.)
        assert lsb_compliance("stunnel4") == ["status on a stopped service returned 1; LSB requires 3"]
    finally:
        subprocess.run([STUNNEL_INIT, "stop"], capture_output=True, timeout=30)
        conf.unlink(missing_ok=True)
        Path(pidfile).unlink(missing_ok=True)


def _set_subreaper(on: int) -> None:
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0)
