"""Real agents under real `balancier cluster run` daemons: the cluster, not the test, does the recovery.

test_agents_external.py drives the executor by hand; here the daemons decide. Asserted from what
really runs and from `balancier status --json`:
- Debian's `ocf:heartbeat:Dummy` monitored every second: its state file removed behind the cluster's
  back, the monitor fails (rc 7), the cluster stops and starts it again on the same node by itself,
  and the fail count is 1; cleanup clears it.
- Debian's `/etc/init.d/stunnel4` as `lsb:stunnel4`, grouped after a `balancier:proxy` it wraps in TLS:
  the stunnel daemon killed with SIGKILL, the cluster restarts it (TLS answers again) and counts the
  failure; the proxy before it in the group is not restarted.
- An agent that exits 5 (not installed) on one node: a clear failed action (rc 5, "not installed", the
  agent's exit reason), the resource starts on the other node, and it is never retried on the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_harness import AdminCluster
from support.backends import free_port

OCF_LIB = "/usr/lib/ocf"
DUMMY = f"{OCF_LIB}/resource.d/heartbeat/Dummy"
STUNNEL_INIT = "/etc/init.d/stunnel4"


def _with_heartbeat_agents(c: AdminCluster) -> None:
    """Make Debian's heartbeat agents (and the shell functions they source) visible in the cluster's OCF_ROOT."""
    (c.ocf_root / "lib").symlink_to(f"{OCF_LIB}/lib")
    (c.ocf_root / "resource.d" / "heartbeat").symlink_to(f"{OCF_LIB}/resource.d/heartbeat")


def _fail_counts(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(f["resource"], f["node"]): f["fail_count"] for f in doc.get("fail_counts", [])}


def _member(doc: dict[str, Any], rid: str) -> dict[str, Any]:
    for top in doc.get("resources", []):
        if top["id"] == rid:
            return top  # type: ignore[no-any-return]
        for m in top.get("members", []):
            if m["id"] == rid:
                return m  # type: ignore[no-any-return]
    return {}


def _started_on(doc: dict[str, Any], rid: str, node: str) -> bool:
    m = _member(doc, rid)
    return m.get("state") == "started" and m.get("node") == node


# --------------------------------------------------------------------------- Dummy


@pytest.mark.skipif(not os.path.exists(DUMMY), reason="Debian's resource-agents is not installed")
def test_dummy_monitor_failure_is_restarted_by_the_cluster(tmp_path: Path) -> None:
    state = tmp_path / "dummy.state"
    c = AdminCluster(tmp_path, ["lb1"], resources=(
        '[[resource]]\nid = "d"\nagent = "ocf:heartbeat:Dummy"\n'
        f'params = {{ state = "{state}" }}\nop.monitor = {{ interval = "1s", timeout = "900ms" }}\n'))
    _with_heartbeat_agents(c)
    try:
        c.start("lb1")
        c.wait("Dummy started by the cluster", lambda: _started_on(c.status(), "d", "lb1") and state.exists(), 20)
        assert _fail_counts(c.status()) == {}
        born = state.stat().st_mtime_ns
        state.unlink()  # the "process" dies behind the cluster's back
        c.wait("a fail count on d", lambda: _fail_counts(c.status()), 10)
        c.wait("d started again", lambda: state.exists() and _started_on(c.status(), "d", "lb1"), 10)
        doc = c.status()
        assert _fail_counts(doc) == {("d", "lb1"): 1}
        assert [(f["resource"], f["node"], f["op"], f["interval_ms"], f["rc"]) for f in doc["failed_actions"]] \
            == [("d", "lb1", "monitor", 1000, 7)]
        assert state.stat().st_mtime_ns != born  # a new start wrote it, not a leftover
        log = (tmp_path / "lb1.log").read_text()
        # every result is one structured line: a sentence, then fields to filter on
        assert re.search(r'^ts=\S+ level=info node=lb1 component=executor msg="monitor d on lb1 every 1000ms: '
                         r'rc 7 in \d+ms \(No process state file found\)" resource=d op=monitor interval_ms=1000 '
                         r'rc=7 exec_ms=\d+ call_id=\d+$', log, re.M), log
        starts = re.findall(r'^.* component=executor msg="start d on lb1: rc 0 in \d+ms" resource=d op=start '
                            r'interval_ms=0 rc=0 exec_ms=\d+ call_id=\d+$', log, re.M)
        assert len(starts) == 2, log  # the first start and the restart
        r = c.cli("resource", "cleanup", "d", "-s", c.socket("lb1"))
        assert r.returncode == 0, r.stderr
        c.wait("fail count cleared", lambda: (lambda d: d.get("nodes") and not d["fail_counts"]
                                              and not d["failed_actions"])(c.status()), 10)
        c.wait("d re-probed and still running", lambda: _started_on(c.status(), "d", "lb1") and state.exists(), 10)
    finally:
        c.stop_all()
    assert not state.exists()  # the daemon stopped its resource on the way out


# --------------------------------------------------------------------------- stunnel4 (LSB) wrapping the proxy


def _https_get(port: int, ca_pem: str) -> str:
    ctx = ssl.create_default_context(cafile=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data.decode("latin-1")


def _answers(port: int, ca_pem: str) -> str:
    try:
        return _https_get(port, ca_pem)
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _set_subreaper(on: int) -> None:
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0)


@contextlib.contextmanager
def _reaping(*pidfiles: str) -> Iterator[None]:
    """Adopt and reap the daemons the cluster starts (and only them: the pids their pid files name).

    stunnel daemonizes: its parent exits and it is re-parented to the nearest subreaper. Where PID 1
    does not reap orphans (some containers), a killed stunnel would stay a zombie that `kill -0` (and
    so the init script's status) still sees as running. The test process becomes the subreaper and
    waits for exactly the pids stunnel and the proxy write to their pid files.
    """
    seen: set[int] = set()
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            for pidfile in pidfiles:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    seen.add(int(Path(pidfile).read_text().split()[0]))
            for pid in list(seen):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            done.wait(0.02)

    _set_subreaper(1)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(5)
        _set_subreaper(0)
        for pid in seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(STUNNEL_INIT) or not shutil.which("stunnel4"),
                    reason="needs root and Debian's stunnel4 (its init script writes to /etc/stunnel, /run)")
def test_stunnel4_killed_is_restarted_by_the_cluster(tmp_path: Path, backend_factory) -> None:
    import trustme

    backend = backend_factory("clus1")
    proxy_port, tls_port = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n"
                   f"    timeout server 5s\nlisten web\n    bind 127.0.0.1:{proxy_port}\n"
                   f"    server s {backend.address}\n")
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_pem = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_pem)
    conf = Path("/etc/stunnel") / f"balancier-cluster-test-{os.getpid()}.conf"
    pidfile = f"/run/stunnel4/balancier-cluster-test-{os.getpid()}.pid"
    conf.write_text(f"pid = {pidfile}\nforeground = no\n[https]\naccept = 127.0.0.1:{tls_port}\n"
                    f"connect = 127.0.0.1:{proxy_port}\ncert = {pem}\n")
    proxy_pid = tmp_path / "proxy.pid"
    c = AdminCluster(tmp_path, ["lb1"], resources=(
        f'[[resource]]\nid = "proxy"\nagent = "balancier:proxy"\n'
        f'params = {{ config = "{cfg}", pidfile = "{proxy_pid}" }}\n'
        'op.monitor = { interval = "2s", timeout = "1500ms" }\n'
        '[[resource]]\nid = "tls"\nagent = "lsb:stunnel4"\n'
        'op.monitor = { interval = "1s", timeout = "900ms" }\n'
        '[[group]]\nid = "front"\nresources = ["proxy", "tls"]\n'))
    try:
        with _reaping(pidfile, str(proxy_pid)):
            c.start("lb1")
            c.wait("front started, TLS answering", lambda: _started_on(c.status(), "tls", "lb1")
                   and "X-Served-By: clus1" in _answers(tls_port, ca_pem), 30)
            assert _fail_counts(c.status()) == {}
            proxy_before = int(proxy_pid.read_text().split()[0])
            victim = int(Path(pidfile).read_text().split()[0])
            os.kill(victim, 9)
            c.wait("the killed stunnel reaped", lambda: not _alive(victim), 5)
            c.wait("a fail count on tls", lambda: _fail_counts(c.status()), 15)
            c.wait("stunnel restarted by the cluster, TLS answering",
                   lambda: _started_on(c.status(), "tls", "lb1")
                   and "X-Served-By: clus1" in _answers(tls_port, ca_pem), 20)
            restarted = int(Path(pidfile).read_text().split()[0])
            assert restarted != victim and _alive(restarted)
            doc = c.status()
            assert _fail_counts(doc) == {("tls", "lb1"): 1}
            failed = [(f["resource"], f["op"], f["rc"], f["rc_text"]) for f in doc["failed_actions"]]
            assert failed == [("tls", "monitor", 7, "not running")]
            assert "status exited with 1" in doc["failed_actions"][0]["reason"]
            # the proxy before stunnel in the group was left alone
            assert int(proxy_pid.read_text().split()[0]) == proxy_before and _alive(proxy_before)
            c.stop_all()
            assert not os.path.exists(pidfile) or not _alive(int(Path(pidfile).read_text().split()[0]))
    finally:
        c.stop_all()
        subprocess.run([STUNNEL_INIT, "stop"], capture_output=True, timeout=30)
        conf.unlink(missing_ok=True)
        Path(pidfile).unlink(missing_ok=True)


# --------------------------------------------------------------------------- not installed on one node

HALF_AGENT = r"""#!/bin/sh
# ocf:test:Half - like Flag, but its program is "missing" on lb1: start there exits 5.
STATE="$OCF_RESKEY_dir/${OCF_RESKEY_CRM_meta_on_node}-$OCF_RESOURCE_INSTANCE"
log() { echo "$(date +%s.%N) $OCF_RESKEY_CRM_meta_on_node $OCF_RESOURCE_INSTANCE $1" >> "$OCF_RESKEY_dir/actions.log"; }
case "$1" in
  start)
    log start
    if [ "$OCF_RESKEY_CRM_meta_on_node" = lb1 ]; then
      echo "checking for /usr/sbin/halfd"
      echo "ocf-exit-reason:halfd is not installed (/usr/sbin/halfd missing)" >&2
      exit 5
    fi
    touch "$STATE"; exit 0 ;;
  stop) rm -f "$STATE"; log stop; exit 0 ;;
  monitor|status) [ -f "$STATE" ] && exit 0; exit 7 ;;
  meta-data|validate-all) exit 0 ;;
  *) exit 3 ;;
esac
"""


def test_not_installed_fails_clearly_and_is_not_retried_on_that_node(tmp_path: Path) -> None:
    c = AdminCluster(tmp_path, ["lb1", "lb2"], resources=(
        '[[resource]]\nid = "half"\nagent = "ocf:test:Half"\n'
        f'params = {{ dir = "{tmp_path / "flags"}" }}\nop.monitor = {{ interval = "1s", timeout = "900ms" }}\n'
        '[[location]]\nresource = "half"\nnode = "lb1"\nscore = 200\n'))
    agent = c.ocf_root / "resource.d" / "test" / "Half"
    agent.write_text(HALF_AGENT)
    agent.chmod(0o755)
    try:
        for n in c.names:
            c.start(n)
        c.wait("half running on lb2", lambda: _started_on(c.status(), "half", "lb2"), 25)
        failed = c.wait("the failed start on lb1", lambda: c.status()["failed_actions"], 5)
        assert [(f["resource"], f["node"], f["op"], f["rc"], f["rc_text"]) for f in failed] == \
            [("half", "lb1", "start", 5, "not installed")]
        assert "halfd is not installed (/usr/sbin/halfd missing)" in failed[0]["reason"]
        table = c.cli("status", "-s", c.socket("lb2")).stdout
        assert "half_start_0 (node=lb1" in table and "rc=5" in table and "not installed" in table
        # Several monitor intervals later: still one start attempt on lb1, still running on lb2.
        time.sleep(4)
        starts = [(a[1], a[2]) for a in c.actions() if a[3] == "start"]
        assert starts.count(("lb1", "half")) == 1, starts
        assert starts.count(("lb2", "half")) == 1, starts
        assert _started_on(c.status(), "half", "lb2")
        # a node move asked of the cluster does not override the ban either
        r = c.cli("resource", "migrate", "half", "lb1", "-s", c.socket("lb2"))
        time.sleep(2)
        starts = [(a[1], a[2]) for a in c.actions() if a[3] == "start"]
        assert starts.count(("lb1", "half")) == 1, (r.stdout, r.stderr, starts)
        assert _started_on(c.status(), "half", "lb2")
    finally:
        c.stop_all()
