"""A real cluster of `balancier cluster run` daemons on loopback, with a real OCF resource agent.

Each daemon has its own state directory, its own admin socket and HTTP API port (its own copy of the
configuration, differing only in ``[api] listen``), and runs resources through the executor. The
resource is ``ocf:test:Flag``, an OCF shell script written into a temporary OCF_ROOT: its state is a
file per node (``<dir>/<node>-<instance>``, from OCF_RESKEY_CRM_meta_on_node), so several "nodes" on one
machine do not see each other's resources, and every start/stop is appended, with a timestamp, to
``<dir>/actions.log`` so ordering can be asserted. Daemons are stopped by pid, even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.backends import free_port

SECRET = "admin-integration-secret"
ADMIN_TOKEN = "admin-token-0123456789"
READ_TOKEN = "read-token-0123456789"

FLAG_AGENT = r"""#!/bin/sh
# ocf:test:Flag - a resource whose "process" is a file per node; every start/stop is logged.
: ${OCF_RESKEY_dir:?dir is required}
STATE="$OCF_RESKEY_dir/${OCF_RESKEY_CRM_meta_on_node:-local}-$OCF_RESOURCE_INSTANCE"
log() { echo "$(date +%s.%N) ${OCF_RESKEY_CRM_meta_on_node:-local} $OCF_RESOURCE_INSTANCE $1" >> "$OCF_RESKEY_dir/actions.log"; }
case "$1" in
  start) [ -f "$STATE" ] || { sleep 0.1; touch "$STATE"; }; log start; exit 0 ;;
  stop) if [ -f "$STATE" ]; then sleep 0.1; rm -f "$STATE"; fi; log stop; exit 0 ;;
  monitor|status) [ -f "$STATE" ] && exit 0; echo "ocf-exit-reason:no state file $STATE" >&2; exit 7 ;;
  validate-all) exit 0 ;;
  meta-data) cat <<'XML'
<?xml version="1.0"?>
<resource-agent name="Flag" version="1.0"><version>1.0</version>
<parameters><parameter name="dir" required="1"><content type="string"/></parameter></parameters>
<actions><action name="start" timeout="5s"/><action name="stop" timeout="5s"/>
<action name="monitor" timeout="5s" interval="1s"/><action name="meta-data" timeout="5s"/>
<action name="validate-all" timeout="5s"/></actions></resource-agent>
XML
  exit 0 ;;
  *) exit 3 ;;
esac
"""


def free_ports(n: int, kind: int, host: str = "127.0.0.1") -> list[int]:
    if kind == socket.SOCK_STREAM:  # distinct from every TCP port handed out to the test process (free_port)
        return [free_port(host) for _ in range(n)]
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def resources_toml(flags: Path) -> str:
    """A group `web` of two Flag resources (`ip` then `app`, app monitored every second), preferring lb1."""
    return (f'[[resource]]\nid = "ip"\nagent = "ocf:test:Flag"\nparams = {{ dir = "{flags}" }}\n'
            f'[[resource]]\nid = "app"\nagent = "ocf:test:Flag"\nparams = {{ dir = "{flags}" }}\n'
            'op.monitor = { interval = "1s", timeout = "900ms" }\n'
            '[[group]]\nid = "web"\nresources = ["ip", "app"]\n'
            '[[location]]\nresource = "web"\nnode = "lb1"\nscore = 200\n')


class AdminCluster:
    def __init__(self, root: Path, names: list[str], resources: str | None = None) -> None:
        self.root = root
        self.names = names
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.flags = root / "flags"
        self.flags.mkdir()
        self.ocf_root = root / "ocf"
        agent = self.ocf_root / "resource.d" / "test" / "Flag"
        agent.parent.mkdir(parents=True)
        agent.write_text(FLAG_AGENT)
        agent.chmod(0o755)
        key = root / "authkey"
        key.write_text(f"auth 1\n1 sha256 {SECRET}\n")
        key.chmod(0o600)
        self.tokens = root / "tokens"
        self.tokens.write_text(f"# user:role:token\nadmin:admin:{ADMIN_TOKEN}\nviewer:read:{READ_TOKEN}\n")
        self.tokens.chmod(0o600)
        udp = free_ports(len(names), socket.SOCK_DGRAM)
        tcp = free_ports(len(names), socket.SOCK_STREAM)
        self.api_port = dict(zip(names, tcp, strict=True))
        nodes = "".join(f'[[node]]\nname = "{n}"\naddress = "127.0.0.1:{p}"\n' for n, p in zip(names, udp, strict=True))
        body = resources if resources is not None else resources_toml(self.flags)
        for n in names:
            (root / f"{n}.toml").write_text(
                '[cluster]\nname = "it"\nkeepalive = "200ms"\nwarntime = "600ms"\ndeadtime = "1s"\n'
                'initdead = "3s"\nauthkey_file = "authkey"\n'
                f'[api]\nlisten = "127.0.0.1:{self.api_port[n]}"\nauth_file = "tokens"\n{nodes}{body}')

    def state_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(exist_ok=True)
        return d

    def socket(self, name: str) -> str:
        return str(self.state_dir(name) / "admin.sock")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.api_port[name]}"

    def start(self, name: str) -> None:
        cmd = [sys.executable, "-m", "balancier", "cluster", "run", "-c", str(self.root / f"{name}.toml"),
               "--node", name, "--state-dir", str(self.state_dir(name))]
        env = dict(os.environ, OCF_ROOT=str(self.ocf_root))
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def cli(self, *args: str, timeout: float = 20.0, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "balancier", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def status(self, name: str = "lb1") -> dict[str, Any]:
        r = self.cli("status", "--json", "-s", self.socket(name), timeout=10)
        if r.returncode != 0:
            return {}
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def resource(self, rid: str, name: str = "lb1") -> dict[str, Any]:
        for top in self.status(name).get("resources", []):
            if top["id"] == rid:
                return top  # type: ignore[no-any-return]
            for m in top["members"]:
                if m["id"] == rid:
                    return m  # type: ignore[no-any-return]
        return {}

    def actions(self) -> list[tuple[float, str, str, str]]:
        """(time, node, resource, start|stop) for every start/stop the agent performed."""
        path = self.flags / "actions.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            t, node, rid, what = line.split()
            out.append((float(t), node, rid, what))
        return out

    def running(self) -> set[tuple[str, str]]:
        """(node, resource) pairs whose state file exists: what really runs."""
        return {tuple(p.name.split("-", 1)) for p in self.flags.iterdir() if p.name != "actions.log"}  # type: ignore[misc]

    def logs(self) -> str:
        out = []
        for n in self.names:
            p = self.root / f"{n}.log"
            if p.exists():
                out.append(f"--- {n}\n" + "\n".join(p.read_text().splitlines()[-30:]))
        return "\n".join(out)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 15.0, step: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(step)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")
