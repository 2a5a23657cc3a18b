"""The reference deployment on a bed: configuration files and processes.

Rules this file governs:

- Application servers: the bundled portal on port 80 of ents3/ents2/ents1 and maintenance, bound to
  0.0.0.0. The proxy configuration is the seed's (``listen esup-proxy``, cookie JSESSIONID prefix,
  weights 256/128/1, the maintenance server as backup, httpchk, forwardfor, httpclose) with the
  test addresses, ``bind :80`` (so a standby proxy can already listen before the VIP arrives), and
  checks every second instead of five so a test does not wait on them.
- ``balancier cluster`` deployment: one TOML file for both nodes. The default layout ``"clone"`` is the
  recommended one: ``proxy`` (balancier:proxy) cloned on both nodes (``proxy-clone``, so a proxy already
  listens on ``:80`` of the standby before the address arrives), and ``vip`` (balancier:vip, the VIP on
  eth0, ``allow-migrate = true``) alone moving, colocated with the clone (INFINITY) and ordered after
  it, preferring lb1 (200) over lb2 (100): a hard failure only adds the address on the survivor, a
  planned move or failback migrates it live (zero loss). The layout ``"group"`` is the seed's form:
  ``esup_proxy`` = ``vip`` then ``proxy``, moving together stop-then-start. In both, the vip has no
  state_file, so the daemon's own record in its state directory is used, which its watchdog and
  start-up clean-up read; optionally the gateway is the ping node (``ping_gateway="icmp"`` for an ICMP echo,
  ``"tcp"`` for a TCP connection to a closed port, answered by a reset). Each daemon runs in lb1's/lb2's namespace with a
  private /run (``Testbed.spawn(private_run=True)``), as two real nodes would, so the agents' pid and
  state files do not collide. Timers default to keepalive 100 ms / deadtime 300 ms.
- keepalived deployment (the reference of bench/failover): VRRPv3 with unicast peers,
  ``advert_int`` = the cluster's keepalive, gratuitous ARP on (5 at once, 5 more after 5 s), lb1
  priority 200 and MASTER, lb2 100 and BACKUP (``nopreempt`` on both for the sticky variant), in
  front of a ``balancier proxy`` that runs all the time on both nodes. keepalived runs in the
  foreground in its own session with its own pid files, bounded by ``timeout -s KILL``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancier.cluster.config import ConfigError as ClusterConfigError
from balancier.cluster.config import load as load_cluster_config
from balancier.testbed.topology import APP_SERVERS, LB_NODES, VIP, Spawned, Testbed, TestbedError

APP_PORT = 80
SERVICE_PORT = 80
GROUP = "esup_proxy"
VIP_RESOURCE = "vip"  # what moves in the clone layout
LAYOUTS = ("clone", "group")
PING_TCP_PORT = 9  # nothing listens on the gateway: its RST proves it is reachable (ping.py's TCP probe)
KEEPALIVED_LIFETIME_S = 900  # a keepalived we lose track of still dies


def proxy_config(tb: Testbed, check_inter_ms: int = 1000) -> str:
    weights = {"ents3": ("s3", 256), "ents2": ("s2", 128), "ents1": ("s1", 1)}
    servers = "".join(
        f"    server {name} {tb.addr(name)}:{APP_PORT} cookie {cookie} weight {w} "
        f"check inter {check_inter_ms} rise 1 fall 3\n"
        for name, (cookie, w) in weights.items() if name in APP_SERVERS)
    return (
        "# The seed's load balancer (esup-haproxy.cfg) with the test bed's addresses.\n"
        "global\n    maxconn 4096\n\n"
        "defaults\n    mode http\n    option dontlognull\n    retries 3\n    option redispatch\n"
        "    maxconn 2000\n    timeout connect 1s\n    timeout client 50s\n    timeout server 50s\n\n"
        f"listen esup-proxy\n    bind :{SERVICE_PORT}\n    mode http\n    cookie JSESSIONID prefix\n"
        f"    option httpchk\n    option forwardfor except {VIP}\n    option httpclose\n"
        "    balance roundrobin\n"
        f"{servers}"
        f"    server ent-maintenance {tb.addr('maintenance')}:{APP_PORT} check inter {check_inter_ms} backup\n")


def start_apps(tb: Testbed) -> dict[str, Spawned]:
    """The three portal servers and the maintenance server; returns once they all accept connections."""
    out = {}
    for host in (*APP_SERVERS, "maintenance"):
        out[host] = tb.spawn(host, f"app-{host}", [sys.executable, "-m", "balancier.portal", "--name", host,
                                                   "--port", str(APP_PORT), "--host", "0.0.0.0"])
    for host in out:
        tb.wait_tcp(host, APP_PORT, timeout=15)
    return out


def _ms(value: int) -> str:
    return f"{value}ms"


@dataclass
class ClusterTimers:
    keepalive_ms: int = 100
    deadtime_ms: int = 300
    warntime_ms: int | None = None
    initdead_ms: int = 3000
    monitor_interval_ms: int = 1000
    monitor_timeout_ms: int = 800

    def warntime(self) -> int:
        return self.warntime_ms or (self.keepalive_ms + self.deadtime_ms) // 2


class ClusterDeployment:
    """``balancier cluster`` on lb1 and lb2 in front of the portal servers."""

    def __init__(self, tb: Testbed, timers: ClusterTimers | None = None, stickiness: int = 0,
                 ping_gateway: str | None = None, name: str = "cluster", layout: str = "clone") -> None:
        if layout not in LAYOUTS:
            raise TestbedError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
        self.tb = tb
        self.timers = timers or ClusterTimers()
        self.stickiness = stickiness
        self.ping_gateway = ping_gateway
        self.layout = layout
        # the resource an administrator moves (migrate/unmigrate), and the one whose placement shows the VIP
        self.moving = VIP_RESOURCE if layout == "clone" else GROUP
        self.dir = tb.workdir / name
        self.dir.mkdir(parents=True, exist_ok=False)
        self.daemons: dict[str, Spawned] = {}
        self.config = self.dir / "cluster.toml"
        self.proxy_cfg = self.dir / "haproxy.cfg"
        self._write()

    def _write(self) -> None:
        t = self.timers
        self.proxy_cfg.write_text(proxy_config(self.tb))
        key = self.dir / "authkey"
        key.write_text(f"auth 1\n1 sha256 {secrets.token_hex(16)}\n")
        key.chmod(0o600)
        nodes = "".join(f'[[node]]\nname = "{n}"\naddress = "{self.tb.addr(n)}"\n' for n in LB_NODES)
        target = {None: None, "icmp": self.tb.addr("gateway"), "tcp": f'{self.tb.addr("gateway")}:{PING_TCP_PORT}'}[
            self.ping_gateway]
        ping = f'ping = ["{target}"]\n' if target else ""
        mon = f'op.monitor = {{ interval = "{_ms(t.monitor_interval_ms)}", timeout = "{_ms(t.monitor_timeout_ms)}" }}\n'
        vip_meta = 'meta = { allow_migrate = true }\n' if self.layout == "clone" else ""
        if self.layout == "clone":
            placement = (
                '[[clone]]\nid = "proxy-clone"\nresource = "proxy"\nmeta = { clone_node_max = 1, interleave = true }\n\n'
                '[[colocation]]\nid = "vip-with-proxy"\nresource = "vip"\nwith = "proxy-clone"\nscore = "INFINITY"\n\n'
                '[[order]]\nid = "proxy-then-vip"\nfirst = "proxy-clone"\nthen = "vip"\n\n')
        else:
            placement = f'[[group]]\nid = "{GROUP}"\nresources = ["vip", "proxy"]\n\n'
        self.config.write_text(
            "# The seed's cluster on the namespace test bed.\n"
            f'[cluster]\nname = "bed"\nkeepalive = "{_ms(t.keepalive_ms)}"\nwarntime = "{_ms(t.warntime())}"\n'
            f'deadtime = "{_ms(t.deadtime_ms)}"\ninitdead = "{_ms(t.initdead_ms)}"\nport = 694\n'
            f'transport = "ucast"\nauthkey_file = "authkey"\n{ping}'
            f"auto_failback = {'true' if self.stickiness == 0 else 'false'}\n\n"
            f"[options]\nstickiness = {self.stickiness}\nmigration_threshold = 3\n\n"
            f"{nodes}\n"
            '[[resource]]\nid = "vip"\nagent = "balancier:vip"\n'
            f'params = {{ ip = "{VIP}", cidr_netmask = 24, nic = "eth0", arp_count = 5, '
            f'arp_interval_ms = 100 }}\n{mon}{vip_meta}\n'
            '[[resource]]\nid = "proxy"\nagent = "balancier:proxy"\n'
            f'params = {{ config = "{self.proxy_cfg}" }}\n'
            f'op.monitor = {{ interval = "{_ms(t.monitor_interval_ms)}", timeout = "{_ms(t.monitor_timeout_ms)}" }}\n\n'
            f'{placement}'
            f'[[location]]\nresource = "{self.moving}"\nnode = "lb1"\nscore = 200\n\n'
            f'[[location]]\nresource = "{self.moving}"\nnode = "lb2"\nscore = 100\n')
        try:
            load_cluster_config(str(self.config))
        except ClusterConfigError as exc:
            raise TestbedError(f"cluster configuration rejected: {exc}") from exc

    def state_dir(self, node: str) -> Path:
        d = self.dir / f"state-{node}"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def start(self, node: str) -> Spawned:
        argv = [sys.executable, "-m", "balancier", "cluster", "run", "-c", str(self.config), "--node", node,
                "--state-dir", str(self.state_dir(node))]
        sp = self.tb.spawn(node, f"cluster-{node}", argv, private_run=True)
        self.daemons[node] = sp
        return sp

    def start_all(self) -> None:
        for node in LB_NODES:
            self.start(node)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state_dir(node) / "status.json").read_text())
            return data
        except (OSError, ValueError):
            return None

    def proxy_pid(self, node: str) -> int | None:
        """The pid of the proxy the agent started on ``node`` (its default pid file in the node's /run)."""
        try:
            return int((self.tb.run_dir(node) / "balancier-proxy.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def wait_serving(self, node: str, timeout: float = 30.0) -> float:
        """Wait until ``node`` holds the VIP and the service answers through it; returns the time it took."""
        return _wait_serving(self.tb, node, timeout, "")

    def migrate(self, node: str, via: str = "lb1") -> None:
        """``balancier resource migrate`` of what moves (the vip, or the group in the group layout)."""
        self.tb.run(via, [sys.executable, "-m", "balancier", "resource", "migrate", self.moving, node,
                          "--state-dir", str(self.state_dir(via))])

    def unmigrate(self, via: str = "lb1") -> None:
        self.tb.run(via, [sys.executable, "-m", "balancier", "resource", "unmigrate", self.moving,
                          "--state-dir", str(self.state_dir(via))])


def reset_nodes(tb: Testbed) -> None:
    """lb1 and lb2 as freshly booted hosts: no process, no VIP, no fault, link up, an empty /run."""
    for node in LB_NODES:
        for _ in range(3):
            if not tb.kill_host(node):
                break
            time.sleep(0.05)
        tb.clear_faults(node)
        tb.link_up(node)
        if tb.has_vip(node):
            tb.ip(node, "addr", "del", f"{VIP}/24", "dev", "eth0")
        for leftover in tb.run_dir(node).iterdir():
            if leftover.is_file():
                leftover.unlink()
    tb.reap()
    for host in ("client", "gateway"):
        tb.clear_faults(host)
        tb.ip(host, "neigh", "flush", "dev", "eth0", check=False)


def _wait_serving(tb: Testbed, node: str, timeout: float, who: str) -> float:
    """Wait until ``node`` holds the VIP and the service answers through it; returns the time it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "not tried"
    while time.monotonic() < deadline:
        if tb.has_vip(node):
            ok, last = _answers(tb)
            if ok:
                return time.monotonic() - t0
        time.sleep(0.1)
    raise TestbedError(f"{node} did not serve the VIP within {timeout:g} s{who}; holders: {tb.vip_holders()}; "
                       f"last answer: {last}; logs in {tb.workdir}")


def _answers(tb: Testbed) -> tuple[bool, str]:
    """Does the client get a 2xx through the VIP? And what it got (status, or curl's error)."""
    proc = tb.run("client", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                             f"http://{VIP}:{SERVICE_PORT}/"], check=False, timeout=10)
    code = proc.stdout.strip()
    return code.startswith("2"), f"HTTP {code}" if code not in ("", "000") else proc.stderr.strip()[-200:]


class KeepalivedDeployment:
    """keepalived moving the VIP in front of a proxy that always runs on lb1 and lb2."""

    def __init__(self, tb: Testbed, advert_ms: int = 100, nopreempt: bool = False, name: str = "keepalived") -> None:
        self.tb = tb
        self.advert_ms = advert_ms
        self.nopreempt = nopreempt
        self.dir = tb.workdir / name
        self.dir.mkdir(parents=True, exist_ok=False)
        self.proxy_cfg = self.dir / "haproxy.cfg"
        self.proxy_cfg.write_text(proxy_config(tb))
        self.procs: dict[str, Spawned] = {}
        self.proxies: dict[str, Spawned] = {}

    def config(self, node: str) -> str:
        me, peer = (("lb1", "lb2") if node == "lb1" else ("lb2", "lb1"))
        prio = 200 if node == "lb1" else 100
        state = "BACKUP" if self.nopreempt or node != "lb1" else "MASTER"
        advert = f"{self.advert_ms / 1000:g}"
        return (
            f"global_defs {{\n  router_id bed_{node}\n  vrrp_version 3\n  script_user root\n"
            "  vrrp_garp_master_delay 5\n  vrrp_garp_master_repeat 5\n}\n"
            f"vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n"
            f"  priority {prio}\n  advert_int {advert}\n" + ("  nopreempt\n" if self.nopreempt else "") +
            f"  unicast_src_ip {self.tb.addr(me)}\n  unicast_peer {{\n    {self.tb.addr(peer)}\n  }}\n"
            f"  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n")

    def start_proxy(self, node: str) -> Spawned:
        sp = self.tb.spawn(node, f"proxy-{node}", [sys.executable, "-m", "balancier", "proxy", "-db", "-f",
                                                   str(self.proxy_cfg)])
        self.proxies[node] = sp
        self.tb.wait_tcp(node, SERVICE_PORT, timeout=15)
        return sp

    def start(self, node: str) -> Spawned:
        if shutil.which("keepalived") is None:
            raise TestbedError("keepalived is not installed (Debian: apt-get install keepalived)")
        conf = self.dir / f"{node}.conf"
        conf.write_text(self.config(node))
        argv = ["timeout", "-s", "KILL", str(KEEPALIVED_LIFETIME_S), "keepalived", "-n", "-l", "-D", "-G", "-P",
                "-f", str(conf), "-p", str(self.dir / f"{node}.pid"), "-r", str(self.dir / f"{node}-vrrp.pid")]
        sp = self.tb.spawn(node, f"keepalived-{node}", argv, private_run=True)
        self.procs[node] = sp
        return sp

    def parent_pid(self, node: str) -> int | None:
        try:
            return int((self.dir / f"{node}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start_all(self) -> None:
        for node in LB_NODES:
            self.start_proxy(node)
        for node in LB_NODES:
            self.start(node)

    def wait_serving(self, node: str, timeout: float = 30.0) -> float:
        return _wait_serving(self.tb, node, timeout, " (keepalived)")
