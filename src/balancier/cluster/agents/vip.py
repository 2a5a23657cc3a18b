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
- Live migration (allow-migrate=true, make-before-break): migrate_to on the source checks that the
  address is held and keeps it (the source goes on serving); migrate_from on the target is a start
  (the address is added and announced: clients switch at the gratuitous ARP); the stop on the
  source that follows waits until migrate_drain_ms (default 500) have passed since its migrate_to,
  so the replies of requests the source accepted before the announcement still leave from the
  address, then removes it. A connection the source accepted before the announcement sends its
  last packets (the client's ACK, FIN) to the target after it: the target's kernel would answer
  them with a reset, which a client reading up to the end of the reply sees as an error, and a
  client whose handshake straddled the announcement sends its request there. So for
  migrate_guard_ms (default 1000; 0 = off) after migrate_from, the target hands TCP segments to the
  address that belong to no connection it knows (not a SYN, conntrack state new) back to the
  source (``dup to`` every peer address: only the node still holding the address accepts them) and
  drops its own copy: one nftables table ``bvip_<address>`` (input hook), removed when the guard
  ends, at stop, and at the next start. The peers are the param migrate_peers (addresses separated
  by spaces) or $BALANCIER_CLUSTER_PEERS, which the cluster daemon sets to the other nodes'
  addresses. Without the nft program the migration goes on unguarded (said in its output).
- release_all(addresses): the daemon calls it at start-up with the addresses recorded in the
  state file by a previous run (read_state()), so a node that crashed while holding the VIP does
  not keep serving it next to the new holder (the split seen with keepalived after a SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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
from balancier.cluster.agents.vip_guard import guard_peers, set_guard
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
    migrate_drain_ms: int = 500
    migrate_guard_ms: int = 1000


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
    drain = _int(get, "migrate_drain_ms", 500, 0, 60_000)
    guard = _int(get, "migrate_guard_ms", 1000, 0, 60_000)
    return VipParams(ip, prefix, nic, arp_count, arp_interval_ms, label, arp_bg, state_file, drain, guard)


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
    """The link by name in one RTM_GETLINK request (link_lookup dumps every link: ~6 ms)."""
    try:
        links = ipr.link("get", ifname=nic)
    except Exception:
        return None
    return links[0] if links else None


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


_PACKET: list[socket.socket] = []


def _packet_socket() -> socket.socket:
    """One send-only packet socket (protocol 0) for the life of the process, named interface per send.

    Closing a packet socket waits for an RCU grace period (10-25 ms measured), and binding one to ETH_P_ARP
    hooks it into the receive path: on a takeover's critical path, neither is affordable.
    """
    if not _PACKET:
        _PACKET.append(socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
    return _PACKET[0]


def send_announcement(nic: str, ifindex: int, mac: bytes, ip: Address) -> None:
    """One gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) on nic."""
    if ip.version == 4:
        _packet_socket().sendto(garp_frame(mac, str(ip)), (nic, ETH_P_ARP))
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
        mac = mac_bytes(link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00")
        already = False
        try:
            add_address(ipr, index, p, nic)
        except Exception as exc:
            if getattr(exc, "code", None) != errno.EEXIST:
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"adding {p.ip}/{p.prefix} to {nic}: {exc}"), None
            already = True
        if p.arp_count:
            # the first announcement right away: clients switch at it (the takeover's last step)
            send_announcement_safe(nic, index, mac, p.ip)
        if not has_address(ipr, index, p.ip):
            return AgentResult(OCF_ERR_GENERIC, exit_reason=f"{p.ip} was added to {nic} but is not there"), None
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
        self._migrated_at: float | None = None  # monotonic time of the last migrate_to (the source drains)
        self._guard: asyncio.Task[None] | None = None  # removes the migration guard when it ends

    def _params(self) -> VipParams | AgentResult:
        try:
            return parse_params(self.param)
        except ParamError as exc:
            return AgentResult(OCF_ERR_CONFIGURED, exit_reason=str(exc))

    async def validate(self, timeout_ms: int = 20_000) -> AgentResult:
        p = self._params()
        return p if isinstance(p, AgentResult) else AgentResult(OCF_SUCCESS)

    async def start(self, timeout_ms: int = 20_000, keep_guard: bool = False) -> AgentResult:
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        self._migrated_at = None
        if not keep_guard:
            await self._drop_guard(p)
        if os.geteuid() != 0:
            return AgentResult(OCF_ERR_PERM, exit_reason="adding an address needs root (CAP_NET_ADMIN)")
        # pyroute2's synchronous API runs its own event loop: keep it off ours.
        result, held = await asyncio.to_thread(start_sync, p)
        if held is None:
            return result
        self._cancel_announcer()
        if p.arp_count:  # (the first one went out from start_sync, right after the address was added)
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

    async def migrate_to(self, timeout_ms: int = 20_000) -> AgentResult:
        """The source of a live migration: the address stays (and serves) until the stop that follows."""
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        held = await asyncio.to_thread(monitor_sync, p, False)
        if held.rc != OCF_SUCCESS:
            return AgentResult(OCF_ERR_GENERIC, exit_reason=f"cannot migrate: {held.exit_reason or held.output}")
        self._migrated_at = asyncio.get_running_loop().time()
        return AgentResult(OCF_SUCCESS, f"{p.ip} stays here until the target has announced it")

    async def migrate_from(self, timeout_ms: int = 20_000) -> AgentResult:
        """The target of a live migration: guard the connections of the source, then start (add + announce)."""
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        note = ""
        if p.migrate_guard_ms > 0 and os.geteuid() == 0:
            peers = guard_peers(self.param)
            why = await asyncio.to_thread(set_guard, p.ip, True, p.nic or "", peers)
            note = f"; unguarded ({why})" if why else \
                (f"; guarding the source's connections for {p.migrate_guard_ms} ms"
                 + (f" (handed back to {' '.join(peers)})" if peers and p.nic else ""))
        result = await self.start(timeout_ms, keep_guard=True)
        if p.migrate_guard_ms > 0 and not note.startswith("; unguarded"):
            self._guard = asyncio.ensure_future(_after_guard(p))
        return AgentResult(result.rc, result.output + note, result.exit_reason, result.timed_out)

    async def _drop_guard(self, p: VipParams) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
            await asyncio.to_thread(set_guard, p.ip, False)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        self._cancel_announcer()
        p = self._params()
        if isinstance(p, AgentResult):
            return p
        await self._drop_guard(p)
        if self._migrated_at is not None:
            # the source of a migration: let the replies of requests accepted before the target's announcement
            # leave from the address before it goes (bounded by the stop's own timeout)
            wait = self._migrated_at + p.migrate_drain_ms / 1000 - asyncio.get_running_loop().time()
            self._migrated_at = None
            if wait > 0:
                await asyncio.sleep(min(wait, max(0.0, timeout_ms / 1000 - 1.0)))
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


async def _after_guard(p: VipParams) -> None:
    await asyncio.sleep(p.migrate_guard_ms / 1000)
    await asyncio.to_thread(set_guard, p.ip, False)


async def _after(delay_ms: int, work: Any) -> int:
    await asyncio.sleep(delay_ms / 1000)
    return int(await work)
