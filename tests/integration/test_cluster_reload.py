"""A 2-daemon cluster running `balancier:proxy`: definition changes reload it, the notify hook, `cib edit`.

Daemons as in cluster_harness.py; the resource is a real `balancier proxy` (pidfile per node with
`{node}`) in front of the bundled portal backend. Asserted:
- editing the proxy's configuration file (a server weight) reloads it on its node: a new pid (handed
  over with -sf), the old one gone, the port never refusing a connection (polled every 10 ms);
- changing a parameter through `balancier cib edit` (EDITOR is a sed script) does the same, and the
  command prints the transition ("reloading proxy on lb1: its parameters changed");
- `cib edit` with an unchanged file sends nothing; invalid JSON and a configuration the DC refuses
  are reported with the edited file kept;
- the notify hook (a script appending its arguments to a file) sees dc-elected, node-up,
  resource-started, resource-stopped, resource-moved, resource-failed and node-dead with their sentences.
Every proxy started is killed by pid at the end, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancier.cluster.agents.proxy import is_balancier_proxy, pid_alive, read_pid

from cluster_harness import AdminCluster
from support.backends import free_port

NOTIFY_SCRIPT = """#!/bin/sh
# appends one line per event: EVENT|NODE|RESOURCE|SENTENCE|local node from the environment
printf '%s|%s|%s|%s|%s\\n' "$1" "$2" "$3" "$4" "$BALANCIER_LOCAL_NODE" >> "{out}"
"""


def _proxy_cfg(port: int, server: str, weight: int) -> str:
    return ("global\n"
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
            f"listen web\n    bind 127.0.0.1:{port}\n    balance roundrobin\n"
            f"    server s1 {server} weight {weight}\n")


class ProxyCluster(AdminCluster):
    def __init__(self, root: Path, backend: str) -> None:
        self.port = free_port()
        self.cfg1 = root / "haproxy.cfg"
        self.cfg2 = root / "haproxy2.cfg"
        self.cfg1.write_text(_proxy_cfg(self.port, backend, 10))
        self.cfg2.write_text(_proxy_cfg(self.port, backend, 30))
        self.pidfile = str(root / "proxy-{node}.pid")
        resources = ('[[resource]]\nid = "proxy"\nagent = "balancier:proxy"\n'
                     f'params = {{ config = "{self.cfg1}", pidfile = "{self.pidfile}" }}\n'
                     'op.monitor = { interval = "1s", timeout = "900ms" }\n'
                     'op.start = { timeout = "20s" }\nop.reload = { timeout = "20s" }\n'
                     '[[location]]\nresource = "proxy"\nnode = "lb1"\nscore = 200\n')
        super().__init__(root, ["lb1", "lb2"], resources)
        self.events = root / "events.txt"
        hook = root / "notify.sh"
        hook.write_text(NOTIFY_SCRIPT.format(out=self.events))
        hook.chmod(0o755)
        for n in self.names:
            path = root / f"{n}.toml"
            path.write_text(path.read_text().replace("[cluster]\n", f'[cluster]\nnotify_command = ["{hook}"]\n', 1))
        self.seen_pids: set[int] = set()

    def proxy_pid(self, node: str) -> int | None:
        pid = read_pid(self.pidfile.replace("{node}", node))
        if pid is not None:
            self.seen_pids.add(pid)
        return pid

    def kill_proxies(self) -> None:
        for n in self.names:
            self.proxy_pid(n)
        for pid in self.seen_pids:
            if pid_alive(pid) and is_balancier_proxy(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def daemon_logs(self) -> str:
        return "\n".join((self.root / f"{n}.log").read_text() for n in self.names if (self.root / f"{n}.log").exists())

    def event_lines(self) -> list[list[str]]:
        if not self.events.exists():
            return []
        return [line.split("|") for line in self.events.read_text().splitlines()]

    def settled(self) -> bool:
        s1, s2 = self.status("lb1"), self.status("lb2")
        return (self.resource("proxy").get("node") == "lb1" and (s2.get("transition") or {}).get("actions") == []
                and s1.get("cib_version") == s2.get("cib_version"))


class Poller:
    """Connects to the proxy's port every 10 ms in a thread; counts refusals."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts = 0
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.attempts += 1
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError as exc:
                self.refused.append(f"{time.monotonic():.3f} {exc}")
            time.sleep(0.01)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def cluster(tmp_path: Path, backend_factory) -> Iterator[ProxyCluster]:  # type: ignore[no-untyped-def]
    backend = backend_factory("ents1")
    c = ProxyCluster(tmp_path, backend.address)
    try:
        for n in c.names:
            c.start(n)
        c.wait("proxy started on lb1 and every transition done", c.settled, 30)
        yield c
    finally:
        c.stop_all()
        c.kill_proxies()


def _reloaded(c: ProxyCluster, old: int) -> int | None:
    pid = c.proxy_pid("lb1")
    return pid if pid is not None and pid != old and pid_alive(pid) else None


def test_config_file_and_parameter_changes_reload_the_proxy(cluster: ProxyCluster, tmp_path: Path) -> None:
    c = cluster
    first = c.proxy_pid("lb1")
    assert first is not None and pid_alive(first)
    assert c.proxy_pid("lb2") is None

    # 1. the configuration file changes under the running proxy: its monitor sees it, the DC reloads it
    with Poller(c.port) as poll:
        c.cfg1.write_text(c.cfg1.read_text().replace("weight 10", "weight 20"))
        second = c.wait("a new proxy process on lb1", lambda: _reloaded(c, first), 20, 0.05)
        c.wait("the old proxy gone", lambda: not pid_alive(first), 10, 0.05)
    assert poll.refused == [] and poll.attempts > 20
    assert "reloading proxy on lb1: its configuration changed" in c.daemon_logs()
    assert "restarting proxy" not in c.daemon_logs()
    c.wait("the cluster settled after the reload", c.settled, 15)
    assert c.resource("proxy")["state"] == "started" and c.status("lb1")["failed_actions"] == []

    # 2. a parameter changes in the CIB (cib edit with a sed script as the editor): reloaded again
    editor = tmp_path / "edit.sh"
    editor.write_text(f"#!/bin/sh\nsed -i 's#{c.cfg1}#{c.cfg2}#' \"$1\"\n")
    editor.chmod(0o755)
    with Poller(c.port) as poll:
        r = c.cli("cib", "edit", "-s", c.socket("lb2"), env=dict(os.environ, EDITOR=str(editor), VISUAL=""))
        assert r.returncode == 0, r.stderr + c.logs()
        assert "replace the configuration: done by the DC lb1" in r.stdout
        assert "reloading proxy on lb1: its parameters changed" in r.stdout
        assert "reload proxy on lb1" in r.stdout
        c.wait("a third proxy process on lb1", lambda: _reloaded(c, second), 20, 0.05)
        c.wait("the second proxy gone", lambda: not pid_alive(second), 10, 0.05)
    assert poll.refused == []
    c.wait("the cluster settled after the parameter change", c.settled, 15)
    assert "restarting proxy" not in c.daemon_logs()
    assert str(c.cfg2) in (tmp_path / "lb1" / "cib.json").read_text()


def test_cib_edit_refusals_and_the_notify_hook(cluster: ProxyCluster, tmp_path: Path) -> None:
    c = cluster
    # unchanged: nothing is sent
    r = c.cli("cib", "edit", "-s", c.socket("lb1"), env=dict(os.environ, EDITOR="true", VISUAL=""))
    assert r.returncode == 0 and "unchanged; nothing sent" in r.stdout, r.stderr
    version = c.status("lb1")["cib_version"]

    def edit(script: str) -> tuple[int, str]:
        ed = tmp_path / "ed.sh"
        ed.write_text(f"#!/bin/sh\n{script}\n")
        ed.chmod(0o755)
        res = c.cli("cib", "edit", "-s", c.socket("lb1"), env=dict(os.environ, EDITOR=str(ed), VISUAL=""))
        return res.returncode, res.stderr

    rc, err = edit("sed -i '3s/.*/  broken,/' \"$1\"")
    assert rc == 1 and ":3: invalid JSON" in err and "your edit is kept in" in err
    kept = err.rsplit("your edit is kept in ", 1)[1].strip()
    assert Path(kept).exists() and "broken," in Path(kept).read_text()
    Path(kept).unlink()
    rc, err = edit("sed -i 's/\"lb2\"/\"lb9\"/' \"$1\"")
    assert rc == 1 and "refused (400): the nodes are set by the cluster configuration file" in err
    kept = err.rsplit("your edit is kept in ", 1)[1].strip()
    assert '"lb9"' in Path(kept).read_text()
    Path(kept).unlink()
    assert c.status("lb1")["cib_version"] == version  # nothing applied

    # the hook saw the cluster form: lb1 elected, each node saw its peer, the proxy started on lb1
    c.wait("the first events", lambda: len(c.event_lines()) >= 4, 10)
    events = c.event_lines()
    assert ["dc-elected", "lb1", "", "lb1 is the DC", "lb1"] in [e[:2] + [e[2], e[3][:13], e[4]] for e in events]
    assert any(e[0] == "node-up" and e[1] == "lb2" and e[4] == "lb1" for e in events)
    assert any(e[0] == "node-up" and e[1] == "lb1" and e[4] == "lb2" for e in events)
    assert ["resource-started", "lb1", "proxy", "proxy started on lb1", "lb1"] in events

    # a migration: stopped on lb1, started on lb2, the DC reports the move
    r = c.cli("resource", "migrate", "proxy", "lb2", "-s", c.socket("lb1"))
    assert r.returncode == 0, r.stderr
    c.wait("resource-moved", lambda: ["resource-moved", "lb2", "proxy", "proxy moved from lb1 to lb2", "lb1"]
           in c.event_lines(), 30)
    events = c.event_lines()
    assert ["resource-stopped", "lb1", "proxy", "proxy stopped on lb1", "lb1"] in events
    assert ["resource-started", "lb2", "proxy", "proxy started on lb2", "lb2"] in events
    assert c.proxy_pid("lb2") is not None
    r = c.cli("resource", "unmigrate", "proxy", "-s", c.socket("lb1"))
    assert r.returncode == 0, r.stderr
    c.wait("the proxy back on lb1", lambda: c.settled() and c.proxy_pid("lb2") is None, 30)

    # the proxy dies under the cluster: its monitor fails (resource-failed), the DC restarts it in place
    victim = c.proxy_pid("lb1")
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    c.wait("resource-failed", lambda: any(e[:3] == ["resource-failed", "lb1", "proxy"] for e in c.event_lines()), 15)
    failed = next(e for e in c.event_lines() if e[0] == "resource-failed")
    assert failed[3] == "monitor of proxy on lb1 failed (rc=7)"
    c.wait("a new proxy on lb1", lambda: c.proxy_pid("lb1") not in (None, victim) and c.settled(), 20)

    # lb2's daemon dies (SIGKILL): lb1 reports it dead after deadtime
    c.stop("lb2", signal.SIGKILL)
    c.wait("node-dead", lambda: any(e[0] == "node-dead" and e[1] == "lb2" and e[4] == "lb1"
                                    for e in c.event_lines()), 10)
