"""The failure drill on the namespace test bed: its injector, its probe, its admin clients.

Rules this file governs:

- The faults are those of ``scenarios`` (the e2e suite's): a node dies = SIGKILL of every process in its
  namespace, then its link down ~7 ms later; it returns as a rebooted host (no stale VIP, an empty
  /run, link up) and its daemon starts again. A proxy crash is SIGKILL of the pid in the agent's pid
  file, a daemon kill SIGKILL of the daemon's process group (its proxy and links stay), an
  application server dies by SIGKILL of its process group and is started again the same way.
- TLS (scenario 3): ``break_tls`` replaces the certificate file with a truncated copy (a file that no
  longer parses, as a botched renewal leaves it), ``repair_tls`` puts the saved original back, and
  ``reload_proxy`` asks the master-worker proxy (``-W -S SOCKET``) to reload through its master socket,
  synchronously (``balancier proxy reload -S``): it fails when the new configuration or a certificate
  does not load, and the old workers keep serving.
- The probe runs in the client's namespace as its own process (``scenarios.ProbeRun``), so it sees
  exactly what a client of the VIP sees; "does the service answer" is asked from there too.
- Every process started here is started through the bed (``Testbed.spawn``) and is therefore killed
  by its teardown.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from balancier.cluster.admin import Client
from balancier.testbed import scenarios as sc
from balancier.testbed.deployment import APP_PORT, GROUP, SERVICE_PORT, ClusterDeployment
from balancier.testbed.drill_runner import ClusterAdmin, DrillError
from balancier.testbed.probe import Sample
from balancier.testbed.topology import LB_NODES, VIP, Spawned, Testbed, TestbedError


class NamespaceInjector:
    """Faults on the bed's hosts (balancier.testbed.drill.Injector)."""

    def __init__(self, tb: Testbed, cd: ClusterDeployment, apps: dict[str, Spawned] | None = None,
                 cert: Path | None = None, master_socket: Callable[[str], Path] | None = None) -> None:
        self.tb = tb
        self.cd = cd
        self.apps = apps if apps is not None else {}
        self.cert = cert
        self.master_socket = master_socket
        self._cert_backup: bytes | None = None
        self.done: list[tuple[str, str]] = []

    def can(self) -> frozenset[str]:
        out = {"kill_node", "restore_node", "crash_proxy", "kill_daemon", "start_daemon"}
        if self.apps:
            out |= {"kill_server", "start_server"}
        if self.cert is not None and self.master_socket is not None:
            out |= {"break_tls", "repair_tls", "reload_proxy"}
        return frozenset(out)

    def do(self, action: str, node: str) -> None:
        self.done.append((action, node))
        try:
            getattr(self, f"_{action}")(node)
        except (TestbedError, OSError) as exc:
            raise DrillError(f"{action} on {node}: {exc}") from None

    def _kill_node(self, node: str) -> None:
        sc.hard_failure(self.tb, node)

    def _restore_node(self, node: str) -> None:
        self.tb.reap()
        sc.return_node(self.tb, node)
        self.cd.start(node)

    def _proxy(self, node: str) -> int:
        pid = self.cd.proxy_pid(node)
        if pid is None or pid not in self.tb.pids_in(node):
            raise DrillError(f"no proxy runs on {node}")
        return pid

    def _crash_proxy(self, node: str) -> None:
        sc.kill_in(self.tb, node, self._proxy(node), signal.SIGKILL)

    def _kill_daemon(self, node: str) -> None:
        self.tb.kill(self.cd.daemons[node], signal.SIGKILL)

    def _start_daemon(self, node: str) -> None:
        self.tb.reap()
        self.cd.start(node)

    def _kill_server(self, server: str) -> None:
        sp = self.apps.get(server)
        if sp is None:
            raise DrillError(f"no application server {server!r} on this bed")
        self.tb.kill(sp, signal.SIGKILL)
        sp.popen.wait(5)

    def _start_server(self, server: str) -> None:
        self.apps[server] = self.tb.spawn(server, f"app-{server}-{len(self.done)}", [
            sys.executable, "-m", "balancier.portal", "--name", server, "--port", str(APP_PORT), "--host", "0.0.0.0"])
        self.tb.wait_tcp(server, APP_PORT, timeout=15)

    def _break_tls(self, node: str) -> None:
        assert self.cert is not None
        self._cert_backup = self.cert.read_bytes()
        self.cert.write_bytes(self._cert_backup[: len(self._cert_backup) // 3])

    def _repair_tls(self, node: str) -> None:
        assert self.cert is not None
        if self._cert_backup is not None:
            self.cert.write_bytes(self._cert_backup)

    def _reload_proxy(self, node: str) -> None:
        assert self.master_socket is not None
        done = self.tb.run(node, [sys.executable, "-m", "balancier", "proxy", "reload", "-S",
                                  str(self.master_socket(node))], check=False, timeout=60)
        if done.returncode != 0:
            said = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise DrillError(f"reload on {node} failed: {said}")


class NamespaceProbe:
    """``scenarios.ProbeRun`` as the drill's probe handle."""

    def __init__(self, tb: Testbed, name: str, sessions: int = 0, duration: float = 300.0) -> None:
        self.run = sc.ProbeRun(tb, name, duration=duration, sessions=sessions)

    def start(self) -> NamespaceProbe:
        self.run.start()
        return self

    def stop(self) -> tuple[list[Sample], list[dict[str, Any]]]:
        try:
            samples = self.run.stop()
        finally:
            if self.run.sp is not None:  # stop() raised: do not leave the probe behind
                self.run.__exit__(None, None, None)
        return samples, self.run.logins


def service_ok(tb: Testbed) -> bool:
    """Does the client get a 2xx/3xx through the VIP (curl from the client's namespace, 1 s timeout)?"""
    proc = tb.run("client", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                             f"http://{VIP}:{SERVICE_PORT}/"], check=False, timeout=10)
    return proc.stdout.strip()[:1] in ("2", "3")


def moving(cd: ClusterDeployment) -> str:
    """The resource that carries the VIP in this deployment (the vip when the proxy is cloned, else the group)."""
    return str(getattr(cd, "moving", GROUP))


def admin_for(cd: ClusterDeployment) -> ClusterAdmin:
    """The admin API of lb1 and lb2 through their admin sockets (in their state directories)."""
    return ClusterAdmin({n: Client(socket_path=str(cd.state_dir(n) / "admin.sock"), timeout=3.0)
                         for n in LB_NODES}, moving(cd))
