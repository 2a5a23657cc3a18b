"""Ping nodes: this node's connectivity score, a tie-breaker for two-node clusters (spec §1.6).

Choice of probe, per configured target:

- ``"host"`` -> an ICMP echo request. We first try the unprivileged datagram ping socket
  (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``, allowed when the daemon's group is inside
  ``net.ipv4.ping_group_range``; the kernel then fills identifier and checksum), and fall back to a
  raw ICMP socket (root or CAP_NET_RAW). If neither is allowed, :func:`check_icmp` says so at start-up
  so the administrator can widen ping_group_range or use a TCP target instead.
- ``"host:port"`` -> a TCP connection attempt: an accepted connection *or a refusal* (RST) proves
  the host is reachable; only a timeout or a network error counts as unreachable. No ICMP rights
  needed, and it follows the same path as the clients' traffic.

Score (as pingd): ``multiplier x number of targets that answered within the last deadping``, so
one lost probe does not move a resource. The daemon probes every keepalive/2 (clamped to 0.05..1 s)
and takes deadping = max(3 probe periods, deadtime - keepalive - one probe period): a node that loses
the ping node together with its peer (a partition on its side) gives its resources up before the
peer can declare it dead (deadtime after its last heartbeat, which is at most a keepalive old), so
the two never hold the VIP together. The score is announced in this node's heartbeats and written by the DC into the CIB as
the node attribute ``pingd``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from dataclasses import dataclass, field

MULTIPLIER = 100


def parse_target(text: str) -> tuple[str, int | None]:
    """``"10.0.0.254"`` -> (host, None) for ICMP; ``"10.0.0.254:80"`` -> (host, 80) for TCP."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in ping target {text!r}")
    return host, int(port)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_socket() -> tuple[socket.socket, bool]:
    """An ICMP socket and whether it is the unprivileged datagram kind."""
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), True
    except OSError:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), False


def check_icmp() -> str | None:
    """None if ICMP probes can be sent by this process, else a sentence saying why not."""
    try:
        sock, _ = _icmp_socket()
        sock.close()
        return None
    except OSError as exc:
        return (f"cannot send ICMP echo ({exc.strerror}): add this group to net.ipv4.ping_group_range, "
                f"run as root, or use 'host:port' ping targets (TCP probe)")


async def _probe_icmp(host: str, timeout: float, ident: int, seq: int) -> bool:
    loop = asyncio.get_running_loop()
    sock, dgram = _icmp_socket()
    sock.setblocking(False)
    try:
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        payload = b"balancier-ping"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
        # a plain sendto: an echo request never blocks in practice, and uvloop has no loop.sock_sendto
        sock.sendto(packet, (host, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
            if not dgram:
                data = data[(data[0] & 0x0F) * 4:]  # raw sockets include the IP header
            if len(data) >= 8:
                typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[:8])
                # datagram sockets rewrite the identifier; match on the sequence only there
                if typ == 0 and rseq == seq and (dgram or rid == ident):
                    return True
    except (TimeoutError, OSError):
        return False
    finally:
        sock.close()


async def _probe_tcp(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError:
        return True  # the host answered with a reset: reachable
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def probe(target: str, timeout: float, seq: int = 0) -> bool:
    host, port = parse_target(target)
    if port is None:
        return await _probe_icmp(host, timeout, os.getpid() & 0xFFFF, seq & 0xFFFF)
    return await _probe_tcp(host, port, timeout)


@dataclass
class PingScore:
    """The score over time (pure): record answers, read the score at ``now``."""

    targets: tuple[str, ...]
    deadping: float
    last_ok: dict[str, float] = field(default_factory=dict)

    def record(self, target: str, ok: bool, now: float) -> None:
        if ok:
            self.last_ok[target] = now

    def reachable(self, now: float) -> tuple[str, ...]:
        return tuple(t for t in self.targets if now - self.last_ok.get(t, float("-inf")) <= self.deadping)

    def score(self, now: float) -> int:
        return MULTIPLIER * len(self.reachable(now))

    def next_change(self, now: float) -> float | None:
        """When the score drops next if no answer comes (a target's last answer turns deadping old)."""
        due = [t + self.deadping for t in self.last_ok.values() if t + self.deadping >= now]
        return min(due) + 0.001 if due else None  # (just past it: the score counts an answer deadping old)
