"""`balancier:vip`: a virtual IP address on an interface, announced to the neighbours.

Parameters: ip (required, IPv4 or IPv6), cidr_netmask (prefix length; default 32 / 128), nic (the
interface; default: the one the kernel routes `ip` through), arp_count (5), arp_interval_ms (200),
label (IPv4 only: the address label becomes NIC:LABEL, at most 15 characters), arp_bg (true: the
announcements after the first go on in the background), state_file (optional: where held addresses
are recorded for start-up cleanup, see release_all(); default: $BALANCIER_VIP_STATE_FILE, which the cluster
daemon sets to <state-dir>/vips.json for its watchdog).

Rules this file governs (spec cluster.md §6 IPaddr2; testbed.md §3):
- Addresses are added and removed through netlink (pyroute2), never by running `ip`.
- start is idempotent (address already there: 0) and always announces: a gratuitous ARP (IPv4:
  an ARP request whose sender and target are both the VIP, broadcast, from an AF_PACKET socket) or
  an unsolicited neighbour advertisement (IPv6: ICMPv6 type 136 to ff02::1 with the override flag
  and our link-layer address), arp_count times every arp_interval_ms. Without it clients keep the
  old MAC for up to a minute (measured: 28-45 s outages).
- IPv6 addresses are added with IFA_F_NODAD: the address must serve at once on a takeover, and
  the cluster, not DAD, guarantees that one node holds it.
- monitor: 0 when the address is on the nic and the link is up; 7 otherwise (absent, or the link
  is down: the address would not serve). stop removes the address; 0 when it is already absent.
- Exit codes: not root -> 4; parameters inherently invalid -> 6 (bans everywhere); the interface
  missing or down on this node -> 5 (bans this node only: another node may have a working nic).
- release_all(addresses): the daemon calls it at start-up with the addresses recorded in the
  state file by a previous run (read_state()), so a node that crashed while holding the VIP does
  not keep serving it next to the new holder (the split seen with keepalived after a SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from balancier.cluster.agents.base import (
    OCF_ERR_CONFIGURED,
    OCF_ERR_GENERIC,
    OCF_ERR_INSTALLED,
    OCF_ERR_PERM,
    OCF_NOT_RUNNING,
    OCF_SUCCESS,
    AgentResult,
    ResourceAgent,
)
from balancier.cluster.model import ResourceConfig

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST_MAC = b"\xff" * 6
IFF_UP = 0x1
IFA_F_NODAD = 0x02
ALL_NODES = "ff02::1"
MAX_LABEL = 15

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class VipAddress:
    """One virtual address on one interface: what the state file records."""

    ip: str
    prefix: int
    nic: str

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefix} on {self.nic}"


# --------------------------------------------------------------------------- packets (pure)


def garp_frame(mac: bytes, ip: str) -> bytes:
    """An Ethernet frame carrying a gratuitous ARP request: sender = target = ip, to broadcast."""
    addr = socket.inet_aton(ip)
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr
    return eth + arp


def unsolicited_na(mac: bytes, ip: str) -> bytes:
    """An ICMPv6 neighbour advertisement for ip (override flag, target link-layer address option).

    The checksum is left 0: the kernel fills it in for IPPROTO_ICMPV6 raw sockets (RFC 3542).
    """
    flags = 0x20000000  # O (override); not a router, not solicited
    body = struct.pack("!BBHI", 136, 0, 0, flags) + socket.inet_pton(socket.AF_INET6, ip)
    option = struct.pack("!BB", 2, 1) + mac  # type 2 = target link-layer address, length 1 (8 bytes)
    return body + option


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class VipParams:
    ip: Address
    prefix: int
    nic: str | None
    arp_count: int
    arp_interval_ms: int
    label: str | None
    arp_bg: bool
    state_file: str | None


class ParamError(ValueError):
    pass


def parse_params(get: Any) -> VipParams:
    """VipParams from a param getter (name -> str | None); ParamError with a sentence when invalid."""
    raw_ip = get("ip")
    if not raw_ip:
        raise ParamError("parameter ip is required")
    try:
        ip = ipaddress.ip_address(raw_ip)
    except ValueError:
        raise ParamError(f"ip {raw_ip!r} is not an IPv4 or IPv6 address") from None
    maxlen = 32 if ip.version == 4 else 128
    prefix = _int(get, "cidr_netmask", maxlen, 1, maxlen)
    arp_count = _int(get, "arp_count", 5, 0, 100)
    arp_interval_ms = _int(get, "arp_interval_ms", 200, 1, 60_000)
    nic = get("nic") or None
    if nic is not None and (":" in nic or "/" in nic or len(nic) > 15):
        raise ParamError(f"nic {nic!r} is not an interface name (no alias names such as eth0:1)")
    label = get("label") or None
    if label is not None:
        if ip.version == 6:
            raise ParamError("label applies to IPv4 addresses only")
        if len((nic or "") + ":" + label) > MAX_LABEL:
            raise ParamError(f"label {nic}:{label} is longer than {MAX_LABEL} characters")
    arp_bg = (get("arp_bg") or "true").strip().lower() in ("true", "yes", "1", "on")
    # the daemon names its node-wide state file in the environment (see cluster/watchdog.py)
    state_file = get("state_file") or os.environ.get("BALANCIER_VIP_STATE_FILE") or None
    return VipParams(ip, prefix, nic, arp_count, arp_interval_ms, label, arp_bg, state_file)


def _int(get: Any, name: str, default: int, low: int, high: int) -> int:
    text = get(name)
    if text is None or text == "":
        return default
    if not str(text).strip().isdigit():
        raise ParamError(f"{name} {text!r} is not a whole number")
    value = int(str(text).strip())
    if not low <= value <= high:
        raise ParamError(f"{name} {value} is out of range {low}..{high}")
    return value


# --------------------------------------------------------------------------- netlink


def _ipr() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def route_nic(ipr: Any, ip: Address) -> str | None:
    """The interface the kernel would use to reach ip (the default for `nic`)."""
    try:
        routes = ipr.route("get", dst=str(ip))
    except Exception:
        return None
    for r in routes:
        oif = r.get_attr("RTA_OIF")
        if oif is not None:
            links = ipr.get_links(oif)
            name = links[0].get_attr("IFLA_IFNAME") if links else None
            return None if name == "lo" else name
    return None


def find_link(ipr: Any, nic: str) -> Any | None:
    idx = ipr.link_lookup(ifname=nic)
    if not idx:
        return None
    return ipr.get_links(idx[0])[0]


def has_address(ipr: Any, index: int, ip: Address) -> bool:
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    for a in ipr.get_addr(index=index, family=family):
        for attr in ("IFA_LOCAL", "IFA_ADDRESS"):
            value = a.get_attr(attr)
            if value is not None and ipaddress.ip_address(value) == ip:
                return True
    return False


def add_address(ipr: Any, index: int, p: VipParams, nic: str) -> None:
    kwargs: dict[str, Any] = {"index": index, "address": str(p.ip), "prefixlen": p.prefix}
    if p.ip.version == 4:
        kwargs["family"] = socket.AF_INET
        net = ipaddress.ip_network(f"{p.ip}/{p.prefix}", strict=False)
        if p.prefix < 31:
            kwargs["broadcast"] = str(net.broadcast_address)
        if p.label:
            kwargs["label"] = f"{nic}:{p.label}"
    else:
        kwargs["family"] = socket.AF_INET6
        kwargs["flags"] = IFA_F_NODAD
    ipr.addr("add", **kwargs)


def del_address(ipr: Any, index: int, ip: Address, prefix: int) -> None:
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    ipr.addr("del", index=index, address=str(ip), prefixlen=prefix, family=family)


# --------------------------------------------------------------------------- announcements


def send_announcement(nic: str, ifindex: int, mac: bytes, ip: Address) -> None:
    """One gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) on nic."""
    if ip.version == 4:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((nic, ETH_P_ARP))
            s.send(garp_frame(mac, str(ip)))
        return
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        s.bind((str(ip), 0, 0, ifindex))
        s.sendto(unsolicited_na(mac, str(ip)), (ALL_NODES, 0, 0, ifindex))


async def announce(nic: str, ifindex: int, mac: bytes, ip: Address, count: int, interval_ms: int) -> int:
    """Send `count` announcements `interval_ms` apart; how many went out."""
    sent = 0
    for i in range(count):
        if i:
            await asyncio.sleep(interval_ms / 1000)
        try:
            send_announcement(nic, ifindex, mac, ip)
            sent += 1
        except OSError:
            pass  # link flapping: the next one may pass; monitor reports a real problem
    return sent


# --------------------------------------------------------------------------- state file


def read_state(path: str) -> list[VipAddress]:
    """Addresses recorded as held by this node (missing or unreadable file: none)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return [VipAddress(str(d["ip"]), int(d["prefix"]), str(d["nic"])) for d in data]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_state(path: str, addresses: Iterable[VipAddress]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump([{"ip": a.ip, "prefix": a.prefix, "nic": a.nic} for a in addresses], f)
    os.replace(tmp, path)


def _record(path: str | None, address: VipAddress, held: bool) -> None:
    if path is None:
        return
    current = [a for a in read_state(path) if a != address]
    if held:
        current.append(address)
    with contextlib.suppress(OSError):
        write_state(path, current)


def release_all(addresses: Iterable[VipAddress]) -> list[str]:
    """Remove every listed address that is still configured (start-up cleanup); what was removed.

    Call it before the node joins, with read_state(state_file), then empty the file. Absent
    addresses and missing interfaces are skipped silently: the goal is "not held here". Blocking
    (netlink): from a coroutine, use `await asyncio.to_thread(release_all, addresses)`.
    """
    removed = []
    with _ipr() as ipr:
        for a in addresses:
            ip = ipaddress.ip_address(a.ip)
            link = find_link(ipr, a.nic)
            if link is None or not has_address(ipr, link["index"], ip):
                continue
            with contextlib.suppress(Exception):
                del_address(ipr, link["index"], ip, a.prefix)
                removed.append(str(a))
    return removed


# --------------------------------------------------------------------------- the agent


@dataclass(frozen=True)
class _Held:
    """What a successful start needs for the announcements."""

    nic: str
    index: int
    mac: bytes


def _locate(ipr: Any, p: VipParams) -> tuple[str, Any] | AgentResult:
    nic = p.nic or route_nic(ipr, p.ip)
    if nic is None:
        return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"no nic given and no interface routes {p.ip}")
    link = find_link(ipr, nic)
    if link is None:
        return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"interface {nic} does not exist on this node")
    return nic, link


def start_sync(p: VipParams) -> tuple[AgentResult, _Held | None]:
    """Add the address (netlink, blocking): the result, and where to announce it when it is held."""
    with _ipr() as ipr:
        found = _locate(ipr, p)
        if isinstance(found, AgentResult):
            return found, None
        nic, link = found
        if not link["flags"] & IFF_UP:
            return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"interface {nic} is down"), None
        index = link["index"]
        already = has_address(ipr, index, p.ip)
        if not already:
            try:
                add_address(ipr, index, p, nic)
            except Exception as exc:
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"adding {p.ip}/{p.prefix} to {nic}: {exc}"), None
            if not has_address(ipr, index, p.ip):
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"{p.ip} was added to {nic} but is not there"), None
        mac = mac_bytes(link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00")
    _record(p.state_file, VipAddress(str(p.ip), p.prefix, nic), True)
    what = "already on" if already else "added to"
    return AgentResult(OCF_SUCCESS, f"{p.ip}/{p.prefix} {what} {nic}; announcing it {p.arp_count} times"), \
        _Held(nic, index, mac)


def stop_sync(p: VipParams) -> AgentResult:
    """Remove the address (netlink, blocking); absent is success."""
    with _ipr() as ipr:
        found = _locate(ipr, p)
        if isinstance(found, AgentResult):
            return AgentResult(OCF_SUCCESS, f"{p.ip} not held here ({found.exit_reason})")
        nic, link = found
        index = link["index"]
        if has_address(ipr, index, p.ip):
            try:
                del_address(ipr, index, p.ip, p.prefix)
            except Exception as exc:
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"removing {p.ip} from {nic}: {exc}")
            if has_address(ipr, index, p.ip):
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"{p.ip} is still on {nic} after removal")
            message = f"{p.ip}/{p.prefix} removed from {nic}"
        else:
            message = f"{p.ip} already absent from {nic}"
    _record(p.state_file, VipAddress(str(p.ip), p.prefix, nic), False)
    return AgentResult(OCF_SUCCESS, message)


def monitor_sync(p: VipParams, probe: bool) -> AgentResult:
    with _ipr() as ipr:
        found = _locate(ipr, p)
        if isinstance(found, AgentResult):
            # A probe asks "does it run here?": with no such interface, certainly not.
            return AgentResult(OCF_NOT_RUNNING, exit_reason=found.exit_reason) if probe else found
        nic, link = found
        if not has_address(ipr, link["index"], p.ip):
            return AgentResult(OCF_NOT_RUNNING, exit_reason=f"{p.ip} is not on {nic}")
        if not link["flags"] & IFF_UP:
            return AgentResult(OCF_NOT_RUNNING, exit_reason=f"{p.ip} is on {nic} but {nic} is down")
    return AgentResult(OCF_SUCCESS, f"{p.ip} is on {nic}")


class VipAgent(ResourceAgent):
    standard = "balancier:vip"

    def __init__(self, resource: ResourceConfig) -> None:
        super().__init__(resource)
        self._announcer: asyncio.Task[int] | None = None

    def _params(self) -> VipParams | AgentResult:
        try:
            return parse_params(self.param)
        except ParamError as exc:
            return AgentResult(OCF_ERR_CONFIGURED, exit_reason=str(exc))

    async def validate(self, timeout_ms: int = 20_000) -> AgentResult:
        p = self._params()
        return p if isinstance(p, AgentResult) else AgentResult(OCF_SUCCESS)

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        if os.geteuid() != 0:
            return AgentResult(OCF_ERR_PERM, exit_reason="adding an address needs root (CAP_NET_ADMIN)")
        # pyroute2's synchronous API runs its own event loop: keep it off ours.
        result, held = await asyncio.to_thread(start_sync, p)
        if held is None:
            return result
        self._cancel_announcer()
        if p.arp_count:
            send_announcement_safe(held.nic, held.index, held.mac, p.ip)
            if p.arp_count > 1:
                rest = announce(held.nic, held.index, held.mac, p.ip, p.arp_count - 1, p.arp_interval_ms)
                if p.arp_bg:
                    self._announcer = asyncio.ensure_future(_after(p.arp_interval_ms, rest))
                else:
                    await _after(p.arp_interval_ms, rest)
        return result

    async def wait_announced(self) -> None:
        """Wait for the background announcements of the last start (a short-lived process must)."""
        if self._announcer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer

    def _cancel_announcer(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            self._announcer = None

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        self._cancel_announcer()
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        if os.geteuid() != 0:
            return AgentResult(OCF_ERR_PERM, exit_reason="removing an address needs root (CAP_NET_ADMIN)")
        return await asyncio.to_thread(stop_sync, p)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        return await asyncio.to_thread(monitor_sync, p, probe)

    async def meta_data(self) -> AgentResult:
        from balancier.cluster.agents.metadata import VIP_METADATA

        return AgentResult(OCF_SUCCESS, VIP_METADATA)


def send_announcement_safe(nic: str, ifindex: int, mac: bytes, ip: Address) -> None:
    with contextlib.suppress(OSError):
        send_announcement(nic, ifindex, mac, ip)


async def _after(delay_ms: int, work: Any) -> int:
    await asyncio.sleep(delay_ms / 1000)
    return int(await work)
