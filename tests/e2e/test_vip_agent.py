"""The virtual IP for real, as root, inside network namespaces this test creates and always removes.

Topology: namespace bv-<pid> ("the node", eth0 10.98.0.1/24) joined by a veth pair to bv-<pid>-c ("a client",
eth0 10.98.0.2/24). The agents run inside the node's namespace through the runner
(`ip netns exec bv-<pid> python3 -m balancier.cluster.agents.runner ...`, i.e. through the executor).

A client only learns a new MAC for an address it already knows from a gratuitous ARP (Linux's default
arp_accept=0 ignores GARPs for unknown addresses), which is exactly the failover case: so the client is given
a stale entry pointing at another MAC first, and the test watches that entry switch to the node's MAC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="needs root and iproute2 to create network namespaces"),
]

ROOT = Path(__file__).resolve().parents[2]
VIP = "10.98.0.10"
VIP6 = "fd00:98::10"
OLD_MAC = "02:00:00:00:00:99"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=check)


class Net:
    def __init__(self) -> None:
        self.node = f"bv-{os.getpid()}"
        self.client = f"bv-{os.getpid()}-c"

    def up(self) -> None:
        for ns in (self.node, self.client):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        sh("ip", "-n", self.node, "addr", "add", "10.98.0.1/24", "dev", "eth0")
        sh("ip", "-n", self.client, "addr", "add", "10.98.0.2/24", "dev", "eth0")
        for ns in (self.node, self.client):
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        for ns in (self.node, self.client):
            sh("ip", "netns", "del", ns, check=False)

    def mac(self) -> str:
        out = json.loads(sh("ip", "-j", "-n", self.node, "link", "show", "eth0").stdout)
        return str(out[0]["address"])

    def node_has(self, ip: str) -> bool:
        out = json.loads(sh("ip", "-j", "-n", self.node, "addr", "show", "dev", "eth0").stdout)
        return any(a["local"] == ip for a in out[0].get("addr_info", []))

    def client_mac_for(self, ip: str) -> str | None:
        out = json.loads(sh("ip", "-j", "-n", self.client, "neigh", "show", ip).stdout or "[]")
        return out[0].get("lladdr") if out else None

    def stale_client_entry(self, ip: str) -> None:
        fam = "-6" if ":" in ip else "-4"
        sh("ip", fam, "-n", self.client, "neigh", "replace", ip, "lladdr", OLD_MAC, "dev", "eth0", "nud", "stale")

    def agent(self, agent: str, op: str, *params: str, timeout_ms: int = 20_000,
              interval_ms: int = 0) -> tuple[int, dict]:
        argv = ["ip", "netns", "exec", self.node, sys.executable, "-m", "balancier.cluster.agents.runner",
                agent, op, "--timeout", str(timeout_ms), "--interval", str(interval_ms)]
        for p in params:
            argv += ["-p", p]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip(), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def wait_client_mac(self, ip: str, mac: str, seconds: float = 3.0) -> str | None:
        deadline = time.monotonic() + seconds
        seen = self.client_mac_for(ip)
        while seen != mac and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.client_mac_for(ip)
        return seen


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()


VIP_PARAMS = (f"ip={VIP}", "cidr_netmask=24", "nic=eth0", "arp_count=3", "arp_interval_ms=50")


def test_balancier_vip_add_announce_monitor_remove(net: Net) -> None:
    net.stale_client_entry(VIP)
    assert net.client_mac_for(VIP) == OLD_MAC
    assert net.agent("balancier:vip", "probe", *VIP_PARAMS)[0] == 7
    rc, result = net.agent("balancier:vip", "start", *VIP_PARAMS)
    assert rc == 0, result
    assert net.node_has(VIP)
    # the client's neighbour table followed the gratuitous ARP
    assert net.wait_client_mac(VIP, net.mac()) == net.mac()
    assert net.agent("balancier:vip", "start", *VIP_PARAMS)[0] == 0  # idempotent
    assert net.agent("balancier:vip", "monitor", *VIP_PARAMS)[0] == 0
    sh("ip", "-n", net.node, "addr", "del", f"{VIP}/24", "dev", "eth0")  # removed by hand
    rc, result = net.agent("balancier:vip", "monitor", *VIP_PARAMS)
    assert rc == 7 and f"{VIP} is not on eth0" in result["output"]
    assert net.agent("balancier:vip", "start", *VIP_PARAMS)[0] == 0
    rc, result = net.agent("balancier:vip", "stop", *VIP_PARAMS)
    assert rc == 0 and "removed from eth0" in result["output"]
    assert not net.node_has(VIP)
    assert net.agent("balancier:vip", "stop", *VIP_PARAMS)[0] == 0  # already absent
    assert net.agent("balancier:vip", "monitor", *VIP_PARAMS)[0] == 7


def test_balancier_vip_refusals(net: Net) -> None:
    sh("ip", "-n", net.node, "link", "set", "eth0", "down")
    rc, result = net.agent("balancier:vip", "start", *VIP_PARAMS)
    assert rc == 5 and "interface eth0 is down" in result["output"]
    rc, result = net.agent("balancier:vip", "start", f"ip={VIP}", "nic=eth7")
    assert rc == 5 and "interface eth7 does not exist on this node" in result["output"]
    assert net.agent("balancier:vip", "probe", f"ip={VIP}", "nic=eth7")[0] == 7
    rc, result = net.agent("balancier:vip", "start", "ip=10.98.0.300", "nic=eth0")
    assert rc == 6 and "is not an IPv4 or IPv6 address" in result["output"]


def test_balancier_vip_ipv6_unsolicited_advertisement(net: Net) -> None:
    params = (f"ip={VIP6}", "cidr_netmask=64", "nic=eth0", "arp_count=3", "arp_interval_ms=50")
    sh("ip", "-n", net.client, "addr", "add", "fd00:98::2/64", "dev", "eth0", "nodad")
    net.stale_client_entry(VIP6)
    rc, result = net.agent("balancier:vip", "start", *params)
    assert rc == 0, result
    assert net.node_has(VIP6)
    assert net.wait_client_mac(VIP6, net.mac()) == net.mac()
    assert net.agent("balancier:vip", "stop", *params)[0] == 0
    assert not net.node_has(VIP6)


def test_release_all_cleans_up_after_a_crash(net: Net, tmp_path: Path) -> None:
    state = tmp_path / "vips.json"
    rc, _ = net.agent("balancier:vip", "start", *VIP_PARAMS, f"state_file={state}")
    assert rc == 0 and net.node_has(VIP)
    assert json.loads(state.read_text()) == [{"ip": VIP, "prefix": 24, "nic": "eth0"}]
    # the node "crashed" holding the VIP: at the next start-up the daemon releases what the file lists
    code = ("from balancier.cluster.agents.vip import read_state, release_all; import sys; "
            f"print(release_all(read_state({str(state)!r})))")
    out = sh("ip", "netns", "exec", net.node, sys.executable, "-c", code).stdout
    assert out.strip() == f"['{VIP}/24 on eth0']"
    assert not net.node_has(VIP)


@pytest.mark.skipif(not os.path.exists("/usr/lib/ocf/resource.d/heartbeat/IPaddr2"),
                    reason="Debian's resource-agents is not installed")
def test_ipaddr2_through_the_executor(net: Net) -> None:
    params = (f"ip={VIP}", "cidr_netmask=24", "nic=eth0")
    net.stale_client_entry(VIP)
    assert net.agent("ocf:heartbeat:IPaddr2", "probe", *params)[0] == 7
    rc, result = net.agent("ocf:heartbeat:IPaddr2", "start", *params)
    assert rc == 0, result
    assert net.node_has(VIP)
    assert net.wait_client_mac(VIP, net.mac(), seconds=5) == net.mac()  # send_arp runs in the background
    assert net.agent("ocf:heartbeat:IPaddr2", "monitor", *params, interval_ms=10_000)[0] == 0
    sh("ip", "-n", net.node, "addr", "del", f"{VIP}/24", "dev", "eth0")
    assert net.agent("ocf:heartbeat:IPaddr2", "monitor", *params)[0] == 7
    assert net.agent("ocf:heartbeat:IPaddr2", "start", *params)[0] == 0
    assert net.agent("ocf:heartbeat:IPaddr2", "stop", *params)[0] == 0
    assert not net.node_has(VIP)
    rc, result = net.agent("ocf:heartbeat:IPaddr2", "start", "cidr_netmask=24")
    assert rc == 6 and "ocf-exit-reason:" in result["output"]  # IPaddr2's own exit reason travels


@pytest.mark.skipif(shutil.which("ocf-tester") is None, reason="ocf-tester (resource-agents) is not installed")
def test_ocf_tester_passes_on_the_vip_wrapper(net: Net) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", net.node, "ocf-tester", "-n", "vip", "-o", f"ip={VIP}", "-o", "cidr_netmask=24",
         "-o", "nic=eth0", "-o", "arp_count=1", str(ROOT / "ocf" / "balancier-vip")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "BALANCIER_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed all tests" in proc.stdout
    assert "does not support the migrate action" not in proc.stdout
    # ocf-tester's last calls are migrate_to then migrate_from, with no stop after them: migrate_from is the
    # target's half of a live migration, so it really holds the address now. A stop removes it.
    assert net.node_has(VIP)
    env = {**os.environ, "BALANCIER_PYTHON": sys.executable, "OCF_ROOT": "/usr/lib/ocf",
           "OCF_RESOURCE_INSTANCE": "vip", "OCF_RESKEY_ip": VIP, "OCF_RESKEY_cidr_netmask": "24",
           "OCF_RESKEY_nic": "eth0"}
    stop = subprocess.run(["ip", "netns", "exec", net.node, str(ROOT / "ocf" / "balancier-vip"), "stop"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not net.node_has(VIP)
