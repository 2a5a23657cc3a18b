"""The reference topology from network namespaces, its processes, and fault injection.

Rules this file governs (spec testbed.md §1, "Fault injection"):

- Every namespace of one bed is named ``<prefix><host>`` with ``prefix = "bt<pid>-"`` by default:
  ``bt<pid>-sw`` holds the bridge ``br0`` (so the host's own network is never touched), and each host
  namespace gets one veth, created directly from inside the switch namespace (``v-<host>`` there,
  ``eth0`` in the host), with its address in ``10.99.0.0/24``. That subnet exists only inside the
  namespaces, so concurrent beds do not collide.
- Hosts: lb1 .11, lb2 .12, ents3 .21, ents2 .22, ents1 .23, maintenance .29, client .100, gateway
  .254 (the ping node: the kernel answers ICMP, no process needed). The VIP is .10.
- Leftovers of a crashed run are removed at setup: a namespace ``bt<N>-*`` whose process N is gone
  is ours and stale; the processes inside it (ours, by construction) are killed, then it is deleted.
- Processes started through :meth:`Testbed.spawn` get their own session (process group) and are
  tracked by pid. Teardown SIGKILLs those groups, then every process still inside one of our
  namespaces (daemons that left their group, e.g. ``balancier proxy -D``), then deletes the
  namespaces (which removes the veths and the bridge). It runs from the context manager, from atexit
  and on SIGTERM, and is idempotent. Nothing is killed by name.
- Faults use nftables inside the namespaces (``tc netem`` is absent on the machines we run on): a table
  ``inet bt_faults`` per host, with input and output chains; ``clear_faults`` deletes it. Link down is
  ``ip link set eth0 down`` in the host. A partition drops IP traffic between the two hosts' addresses
  (and the VIP) in both hosts, leaving every other host, the gateway included, reachable.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SUBNET = "10.99.0"
PREFIX_LEN = 24
VIP = f"{SUBNET}.10"
FAMILY = "bt"  # namespace names: bt<pid>-<host>
HOSTS: dict[str, str] = {
    "lb1": f"{SUBNET}.11",
    "lb2": f"{SUBNET}.12",
    "ents3": f"{SUBNET}.21",
    "ents2": f"{SUBNET}.22",
    "ents1": f"{SUBNET}.23",
    "maintenance": f"{SUBNET}.29",
    "client": f"{SUBNET}.100",
    "gateway": f"{SUBNET}.254",
}
APP_SERVERS = ("ents3", "ents2", "ents1")
LB_NODES = ("lb1", "lb2")
FAULT_TABLE = "bt_faults"
_STALE_RE = re.compile(rf"^{FAMILY}(\d+)-")


class TestbedError(RuntimeError):
    """A command building or driving the bed failed; the message carries its stderr."""


def sh(argv: Sequence[str], check: bool = True, timeout: float = 30.0, input_text: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); with check, a failure raises TestbedError with the command's stderr."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_list() -> list[str]:
    out = sh(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return []
    return [str(e["name"]) for e in json.loads(out)]


def netns_pids(ns: str) -> list[int]:
    """Every process whose network namespace is ``ns``."""
    out = sh(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _delete_namespace(ns: str) -> None:
    """Kill what runs inside ``ns`` (ours: the namespace is ours), then delete it."""
    for _ in range(3):
        pids = netns_pids(ns)
        if not pids:
            break
        _kill_pids(pids)
        time.sleep(0.05)
    sh(["ip", "netns", "del", ns], check=False)


def remove_stale(family: str = FAMILY) -> list[str]:
    """Delete the namespaces ``<family><N>-*`` whose creator N no longer runs; returns their names."""
    pattern = re.compile(rf"^{re.escape(family)}(\d+)-")
    removed = []
    for ns in netns_list():
        m = pattern.match(ns)
        if m and not pid_alive(int(m.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


@dataclass
class Spawned:
    """A process the bed started: its Popen, the host it runs on, and its log file."""

    host: str
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


class Testbed:
    """One bed: ``with Testbed() as tb: ...`` builds it on entry and removes it on exit."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, prefix: str | None = None, workdir: str | Path | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.prefix = prefix or f"{FAMILY}{os.getpid()}-"
        self.hosts = dict(hosts or HOSTS)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=self.prefix))
        self.procs: list[Spawned] = []
        self.created: list[str] = []
        self._up = False
        self._prev_sigterm: Any = None
        self._seen_pids: set[int] = set()  # every process found inside our namespaces at teardown

    # ------------------------------------------------------------------ names
    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def ns(self, host: str) -> str:
        if host not in self.hosts:
            raise KeyError(f"unknown host {host!r} (hosts: {', '.join(self.hosts)})")
        return f"{self.prefix}{host}"

    def addr(self, host: str) -> str:
        return self.hosts[host]

    def host_of(self, ip: str) -> str | None:
        for h, a in self.hosts.items():
            if a == ip:
                return h
        return None

    # ------------------------------------------------------------------ build / remove
    def up(self) -> Testbed:
        remove_stale()
        atexit.register(self.down)
        if self._prev_sigterm is None and _main_thread():
            self._prev_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._up = True
        try:
            self._add_ns(self.switch)
            self.nsexec_sh(self.switch, "link", "add", "br0", "type", "bridge", "stp_state", "0",
                           "forward_delay", "0")
            self.nsexec_sh(self.switch, "link", "set", "br0", "up")
            for host, address in self.hosts.items():
                ns = self.ns(host)
                self._add_ns(ns)
                self.nsexec_sh(self.switch, "link", "add", f"v-{host}", "type", "veth", "peer", "name", "eth0",
                               "netns", ns)
                self.nsexec_sh(self.switch, "link", "set", f"v-{host}", "master", "br0")
                self.nsexec_sh(self.switch, "link", "set", f"v-{host}", "up")
                self.nsexec_sh(ns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
                self.nsexec_sh(ns, "link", "set", "eth0", "up")
        except BaseException:
            self.down()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        if ns in netns_list():  # a leftover of this very pid (a previous bed in the same process)
            _delete_namespace(ns)
        sh(["ip", "netns", "add", ns])
        self.created.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def down(self) -> None:
        """Kill our processes and delete our namespaces; safe to call more than once."""
        if not self._up:
            return
        self._up = False
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(5)
        for ns in reversed(self.created):
            self._seen_pids.update(netns_pids(ns))
            _delete_namespace(ns)
        self.created.clear()
        with contextlib.suppress(Exception):
            atexit.unregister(self.down)
        if self._prev_sigterm is not None and _main_thread():
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None
        if self._own_workdir and not os.environ.get("BALANCIER_TESTBED_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.down()
        raise SystemExit(128 + signum)

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def leftovers(self) -> dict[str, list[Any]]:
        """What of this bed still exists: namespaces, processes we started. Empty lists when clean."""
        names = [ns for ns in netns_list() if ns.startswith(self.prefix)]
        alive = {p.pid for p in self.procs if p.popen.poll() is None}
        alive |= {pid for pid in self._seen_pids if _running(pid)}
        return {"namespaces": names, "processes": sorted(alive)}

    def reap(self) -> None:
        """Collect the exit status of our processes that died (killed by a fault), so none stays a zombie."""
        for p in self.procs:
            p.popen.poll()

    # ------------------------------------------------------------------ commands and processes
    def nsexec_sh(self, ns: str, *ip_args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NS ARGS`` (iproute2 inside a namespace given by its full name)."""
        return sh(["ip", "-n", ns, *ip_args], check=check)

    def ip(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n <host's namespace> ARGS``."""
        return sh(["ip", "-n", self.ns(host), *args], check=check)

    def run(self, host: str, argv: Sequence[str], check: bool = True, timeout: float = 30.0,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host's namespace and wait for it."""
        return sh(["ip", "netns", "exec", self.ns(host), *argv], check=check, timeout=timeout,
                  input_text=input_text)

    def spawn(self, host: str, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              private_run: bool = False) -> Spawned:
        """Start ``argv`` inside a host's namespace, in its own session, logging to ``workdir/<name>.log``.

        private_run: give the process a private mount namespace whose /run is ``workdir/<host>/run``, as
        a real node has its own /run (pid files and state files of agents would collide otherwise).
        """
        log = self.workdir / f"{name}.log"
        cmd = ["ip", "netns", "exec", self.ns(host)]
        if private_run:
            run_dir = self.run_dir(host)
            cmd += ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /run && exec "$@"', str(run_dir)]
        cmd += list(argv)
        fh: IO[bytes]
        with open(log, "ab") as fh:
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        sp = Spawned(host, name, popen, log)
        self.procs.append(sp)
        return sp

    def run_dir(self, host: str) -> Path:
        d = self.workdir / host / "run"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def kill(self, sp: Spawned, sig: int = signal.SIGKILL, group: bool = True) -> None:
        """Signal a process we started (its whole process group by default)."""
        if sp not in self.procs:
            raise ValueError(f"{sp.name} was not started by this bed")
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(sp.pid, sig)
            else:
                os.kill(sp.pid, sig)

    def pids_in(self, host: str) -> list[int]:
        return netns_pids(self.ns(host))

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process inside a host's namespace (all ours); returns their pids."""
        pids = self.pids_in(host)
        _kill_pids(pids)
        return pids

    def wait_tcp(self, host: str, port: int, timeout: float = 10.0, from_host: str = "client") -> None:
        """Wait until ``host:port`` accepts a TCP connection from inside ``from_host``'s namespace."""
        code = ("import socket,sys,time\n"
                "d=time.monotonic()+float(sys.argv[3])\n"
                "while True:\n"
                "    try:\n"
                "        socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close(); break\n"
                "    except OSError:\n"
                "        if time.monotonic() > d: sys.exit(1)\n"
                "        time.sleep(0.05)\n")
        target = self.hosts.get(host, host)
        proc = self.run(from_host, ["python3", "-c", code, target, str(port), str(timeout)], check=False,
                        timeout=timeout + 10)
        if proc.returncode != 0:
            raise TestbedError(f"{target}:{port} did not accept a connection within {timeout:g} s")

    # ------------------------------------------------------------------ state
    def addresses(self, host: str) -> list[str]:
        """IPv4 addresses on the host's eth0."""
        out = json.loads(self.ip(host, "-j", "-4", "addr", "show", "dev", "eth0").stdout or "[]")
        return [str(a["local"]) for entry in out for a in entry.get("addr_info", [])]

    def has_vip(self, host: str, vip: str = VIP) -> bool:
        return vip in self.addresses(host)

    def vip_holders(self, vip: str = VIP) -> list[str]:
        return [h for h in LB_NODES if h in self.hosts and self.has_vip(h, vip)]

    # ------------------------------------------------------------------ faults
    def link_down(self, host: str) -> None:
        self.ip(host, "link", "set", "eth0", "down")

    def link_up(self, host: str) -> None:
        self.ip(host, "link", "set", "eth0", "up")

    def _nft(self, host: str, script: str) -> None:
        self.run(host, ["nft", "-f", "-"], input_text=script)

    def _ensure_fault_table(self, host: str) -> None:
        self._nft(host, f"table inet {FAULT_TABLE} {{\n"
                        "  chain input { type filter hook input priority -10; policy accept; }\n"
                        "  chain output { type filter hook output priority -10; policy accept; }\n"
                        "}\n")

    def loss(self, host: str, percent: int, peer: str | None = None) -> None:
        """Drop ``percent``% of the IP packets ``host`` receives (from ``peer`` only, if given)."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        self._ensure_fault_table(host)
        match = f"ip saddr {self.hosts[peer]} " if peer else ""
        self._nft(host, f"add rule inet {FAULT_TABLE} input {match}numgen random mod 100 < {percent} drop\n")

    def partition(self, a: str, b: str, extra: Sequence[str] = (VIP,)) -> None:
        """Cut IP traffic between hosts a and b (their addresses and ``extra``, e.g. the VIP), both ways.

        Every other host stays reachable from both, the gateway included.
        """
        for me, other in ((a, b), (b, a)):
            self._ensure_fault_table(me)
            addrs = ", ".join([self.hosts[other], *extra])
            self._nft(me, f"add rule inet {FAULT_TABLE} input ip saddr {{ {addrs} }} drop\n"
                          f"add rule inet {FAULT_TABLE} output ip daddr {{ {addrs} }} drop\n")

    def block_host(self, host: str, other: str) -> None:
        """``host`` can no longer exchange IP packets with ``other`` (one side only, e.g. the gateway)."""
        self._ensure_fault_table(host)
        addr = self.hosts[other]
        self._nft(host, f"add rule inet {FAULT_TABLE} input ip saddr {addr} drop\n"
                        f"add rule inet {FAULT_TABLE} output ip daddr {addr} drop\n")

    def block_gateway(self, host: str) -> None:
        self.block_host(host, "gateway")

    def clear_faults(self, host: str) -> None:
        self.run(host, ["nft", "delete", "table", "inet", FAULT_TABLE], check=False)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
