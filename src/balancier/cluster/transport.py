"""Authenticated UDP messages between cluster nodes: the wire format, replay guard and the sockets.

Wire format (one UDP datagram = one message)::

    b"BLC1" | key_id (1 byte) | body (compact JSON, sorted keys) | MAC (HMAC over everything before it)

``body`` = ``{"t": type, "c": cluster, "n": node, "g": generation, "s": seq, "dt": deadtime_ms,
"p": payload}``. The MAC is HMAC-SHA256 (or the method the key id names in the key file) over the
magic, the key id and the body, so every field including generation and sequence is covered: an
attacker without the key can neither forge a message nor advance its counters (spec §1.3-1.4).
Messages are signed with the key named by ``auth N`` and accepted with any key listed (rotation).

A received datagram is dropped, and the drop counted under one reason, in this order:
``malformed`` (too short, bad magic, not JSON, missing fields), ``unknown_key`` (key id not in our
key file), ``bad_signature`` (MAC mismatch), ``wrong_cluster`` (another cluster's name),
``unknown_node`` (sender not configured), then the per-sender :class:`SequenceGuard`:
``old_generation`` (an older boot of that sender), ``duplicate`` (the last sequence number again:
the same packet on a second medium), ``replay`` (an older sequence number already seen, or too old to
tell). Packets a node receives from itself (broadcast) are ignored without counting.

The sockets: ``ucast`` sends one datagram per peer from a socket bound to our address; ``mcast``
joins the group (TTL configurable, loopback of our own packets off); ``bcast`` sends to the
interface's broadcast address. Several media may run at once; a message goes out on every one, the
guard drops the extra copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"BLC1"
MAX_DATAGRAM = 65_000
SEQ_WINDOW = 1024  # how far back an out-of-order (not yet seen) sequence number is still accepted

DROP_REASONS = ("malformed", "unknown_key", "bad_signature", "wrong_cluster", "unknown_node",
                "old_generation", "duplicate", "replay")


@dataclass(frozen=True)
class Keyring:
    """Shared keys of the cluster, from the key file: sign with ``send_id``, verify with any."""

    send_id: int
    keys: Mapping[int, tuple[str, bytes]]  # key id -> (hash method name, secret)


@dataclass(frozen=True)
class Envelope:
    """One decoded, authenticated message."""

    type: str  # "hb" heartbeat | "leave" clean shutdown | "rel" reliable-layer frame
    cluster: str
    node: str
    generation: int
    seq: int
    deadtime_ms: int
    payload: Any = None


class Dropped(Exception):
    """A datagram that must be ignored; ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def encode(env: Envelope, keyring: Keyring) -> bytes:
    """Serialize and sign a message with the keyring's sending key."""
    method, secret = keyring.keys[keyring.send_id]
    body = json.dumps({"t": env.type, "c": env.cluster, "n": env.node, "g": env.generation, "s": env.seq,
                       "dt": env.deadtime_ms, "p": env.payload},
                      separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode("ascii")
    head = MAGIC + struct.pack("B", keyring.send_id) + body
    data = head + hmac.new(secret, head, method).digest()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"message of {len(data)} bytes exceeds the datagram limit {MAX_DATAGRAM}")
    return data


def decode(data: bytes, keyring: Keyring) -> Envelope:
    """Verify and parse one datagram; raise :class:`Dropped` with the reason otherwise."""
    if len(data) < len(MAGIC) + 1 + 2 or data[:4] != MAGIC:
        raise Dropped("malformed", "bad magic or too short")
    key_id = data[4]
    entry = keyring.keys.get(key_id)
    if entry is None:
        raise Dropped("unknown_key", f"key id {key_id}")
    method, secret = entry
    size = hashlib.new(method).digest_size
    if len(data) < 5 + size + 2:
        raise Dropped("malformed", "too short for its MAC")
    head, mac = data[:-size], data[-size:]
    if not hmac.compare_digest(hmac.new(secret, head, method).digest(), mac):
        raise Dropped("bad_signature", f"key id {key_id}")
    try:
        obj = json.loads(head[5:])
        env = Envelope(type=obj["t"], cluster=obj["c"], node=obj["n"], generation=obj["g"],
                       seq=obj["s"], deadtime_ms=obj["dt"], payload=obj.get("p"))
    except (ValueError, KeyError, TypeError) as exc:
        raise Dropped("malformed", str(exc)) from None
    if not (isinstance(env.type, str) and isinstance(env.node, str) and isinstance(env.cluster, str)
            and type(env.generation) is int and type(env.seq) is int and type(env.deadtime_ms) is int
            and env.generation >= 0 and env.seq >= 0 and env.deadtime_ms > 0):
        raise Dropped("malformed", "bad field types")
    return env


@dataclass
class _SenderState:
    generation: int
    highest: int
    seen: set[int] = field(default_factory=set)


class SequenceGuard:
    """Per-sender generation and sequence tracking (pure): in-order or recent unseen numbers pass.

    Rules: a generation lower than the highest seen from that sender -> ``old_generation``; a higher
    one resets the tracking (the sender restarted); the same sequence number as the last one ->
    ``duplicate``; a lower number already seen, or older than the window -> ``replay``; a lower number
    not seen yet within the window passes (UDP may reorder).
    """

    def __init__(self, known_generations: Mapping[str, int] | None = None) -> None:
        self._senders: dict[str, _SenderState] = {}
        self._floor = dict(known_generations or {})

    def check(self, node: str, generation: int, seq: int) -> str | None:
        """Return the drop reason, or None and record the message as seen."""
        st = self._senders.get(node)
        if st is None:
            if generation < self._floor.get(node, 0):
                return "old_generation"
            self._senders[node] = _SenderState(generation, seq, {seq})
            return None
        if generation < st.generation:
            return "old_generation"
        if generation > st.generation:
            self._senders[node] = _SenderState(generation, seq, {seq})
            return None
        if seq > st.highest:
            st.highest = seq
            st.seen.add(seq)
            if len(st.seen) > 2 * SEQ_WINDOW:
                st.seen = {s for s in st.seen if s > st.highest - SEQ_WINDOW}
            return None
        if seq == st.highest:
            return "duplicate"
        if seq in st.seen or seq <= st.highest - SEQ_WINDOW:
            return "replay"
        st.seen.add(seq)
        return None

    def generations(self) -> dict[str, int]:
        return {n: s.generation for n, s in self._senders.items()}


class Receiver:
    """Decode, authenticate and de-duplicate datagrams; count drops per reason (pure)."""

    def __init__(self, cluster: str, me: str, nodes: set[str], keyring: Keyring,
                 known_generations: Mapping[str, int] | None = None) -> None:
        self.cluster = cluster
        self.me = me
        self.nodes = nodes
        self.keyring = keyring
        self.guard = SequenceGuard(known_generations)
        self.drops: dict[str, int] = {r: 0 for r in DROP_REASONS}
        self.last_drop: tuple[str, str] | None = None

    def accept(self, data: bytes) -> Envelope | None:
        try:
            env = decode(data, self.keyring)
            if env.cluster != self.cluster:
                raise Dropped("wrong_cluster", env.cluster)
            if env.node == self.me:
                return None  # our own broadcast coming back
            if env.node not in self.nodes:
                raise Dropped("unknown_node", env.node)
            reason = self.guard.check(env.node, env.generation, env.seq)
            if reason is not None:
                raise Dropped(reason, f"{env.node} generation {env.generation} seq {env.seq}")
            return env
        except Dropped as drop:
            self.drops[drop.reason] += 1
            self.last_drop = (drop.reason, drop.detail)
            return None


# ---- sockets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Medium:
    """One way of reaching the peers (built by the configuration)."""

    kind: str  # "ucast" | "mcast" | "bcast"
    bind: tuple[str, int]  # local address to bind
    destinations: tuple[tuple[str, int], ...]  # where every message is sent
    group: str | None = None  # mcast group
    ttl: int = 1
    interface: str | None = None  # device name ("eth0") for mcast and bcast


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a stopped peer: expected, the membership handles silence.
        pass


def _make_socket(medium: Medium) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if medium.kind == "mcast":
        assert medium.group is not None
        # ip_mreqn names the interface by index, so one configuration ("eth0") serves every node
        ifindex = socket.if_nametoindex(medium.interface) if medium.interface else 0
        mreqn = socket.inet_aton(medium.group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
        sock.bind(("", medium.bind[1]))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, medium.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    elif medium.kind == "bcast":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if medium.interface:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, medium.interface.encode())
        sock.bind(("", medium.bind[1]))
    else:
        sock.bind(medium.bind)
    sock.setblocking(False)
    return sock


class Transport:
    """The sockets of every medium: send bytes everywhere, hand received bytes to a callback."""

    def __init__(self, media: tuple[Medium, ...], on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.media = media
        self.on_datagram = on_datagram
        self._endpoints: list[tuple[Medium, asyncio.DatagramTransport]] = []
        self.send_errors = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for medium in self.media:
            sock = _make_socket(medium)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.on_datagram), sock=sock)
            self._endpoints.append((medium, transport))

    def send(self, data: bytes, only: tuple[str, int] | None = None) -> None:
        """Send on every medium (``only``: just this unicast destination, for replies to one peer)."""
        for medium, transport in self._endpoints:
            for dest in medium.destinations:
                if only is not None and medium.kind == "ucast" and dest != only:
                    continue
                try:
                    transport.sendto(data, dest)
                except OSError:
                    self.send_errors += 1

    def close(self) -> None:
        for _, transport in self._endpoints:
            transport.close()
        self._endpoints.clear()
