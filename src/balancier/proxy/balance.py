"""Load-balancing algorithms over one server group (active or backup). Pure code: no I/O, no clock.

Rules (spec/haproxy.md §4):
- A group balancer sees only the servers of its group, in declaration order. It reads from each server ``usable``,
  ``uweight``, ``saturated``, ``served``, ``queue`` and ``cfg.maxconn``/``cfg.maxqueue``; it never changes them.
- The owner (``servers.Backend``) calls ``update(s)`` after anything that may change a server's usability or weight
  (op/admin state, weight), and ``served_changed(s)`` after ``served`` or its queue length changed (leastconn keys).
- ``roundrobin`` is HAProxy's FWRR, with a cycle cache: fwrr.py.
- ``static-rr`` and ``source`` use HAProxy's static map (lb_map.c): effective weight = ceil(uweight / gcd of all the
  backend's user weights); the map is rebuilt on every change; ``source`` = map[h mod total] with h the XOR of the
  address's 32-bit big-endian words (no hashing when a single server is usable). ``source`` ignores saturation and
  the server to avoid, as HAProxy does: the caller queues on the hashed server.
- ``leastconn``: smallest ``(inflight+1) x 4096 / eweight`` (0 when idle), inflight = served + queued; equal keys in
  insertion order, a server being re-inserted when its key changes (so idle servers rotate); a server is a candidate
  while ``served + queued < maxconn + maxqueue`` (or no maxconn).
- ``first``: the first usable server in declaration order that is not saturated.
- Every ``pick`` returns None when nothing fits; the server to avoid is returned only when nothing else fits.

Public API:
    make_group_balancer(algorithm, servers, wmult) -> GroupBalancer
    GroupBalancer.update(s), .served_changed(s), .pick(client_ip, avoid) -> server | None
    static_weight_divisor(uweights) -> int (gcd), source_hash(client_ip) -> int
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from itertools import count
from math import gcd
from typing import Any, Protocol

from balancier.proxy.fwrr import BE_WEIGHT_SCALE, SRV_EWGHT_MAX, Fwrr


class LbServer(Protocol):
    """What a balancer reads from a server (``servers.Server`` provides it)."""

    sid: int
    uweight: int
    served: int
    queue: Any
    cfg: Any

    @property
    def usable(self) -> bool: ...

    @property
    def saturated(self) -> bool: ...

    @property
    def dyn_maxconn(self) -> int: ...


class GroupBalancer(Protocol):
    def update(self, s: Any) -> None: ...

    def served_changed(self, s: Any) -> None: ...

    def pick(self, client_ip: str, avoid: Any = None) -> Any: ...


# Ties in a tree are served in insertion order, as in HAProxy's ebtrees; one process-wide counter suffices.
_seq = count()


def static_weight_divisor(uweights: Sequence[int]) -> int:
    """The gcd of the non-zero user weights (HAProxy's wmult for map-based algorithms)."""
    g = 0
    for w in uweights:
        if w:
            g = gcd(g, w)
    return g or 1


def source_hash(client_ip: str) -> int:
    """XOR of the address's 32-bit big-endian words; an IPv4 address is simply its integer value.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, from a dual-stack listener) hashes as its IPv4 address, so a
    client keeps its server whatever listener it came through. Anything that is not an address hashes to 0.
    """
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, client_ip), "big")
    except OSError:
        pass
    try:
        raw = socket.inet_pton(socket.AF_INET6, client_ip)
    except OSError:
        return 0
    if raw[:12] == _V4_MAPPED:
        return int.from_bytes(raw[12:], "big")
    h = 0
    for i in (0, 4, 8, 12):
        h ^= int.from_bytes(raw[i:i + 4], "big")
    return h


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


class StaticMap:
    """HAProxy's static map: `static-rr` walks it cyclically, `source` indexes it by hash."""

    def __init__(self, servers: Sequence[Any], wmult: int, hashed: bool = False) -> None:
        self.servers = list(servers)
        self.wmult = wmult
        self.hashed = hashed
        self.map: list[Any] = []
        self.used = 0
        self.rr_idx = 0
        self._weights: dict[Any, int] = {}
        self.rebuild()

    def _eweight(self, s: Any) -> int:
        return (s.uweight + self.wmult - 1) // self.wmult if s.usable else 0

    def rebuild(self) -> None:
        weights = {s: self._eweight(s) for s in self.servers}
        self._weights = weights
        usable = [s for s in self.servers if weights[s] > 0]
        self.used = len(usable)
        tot = sum(weights[s] for s in usable)
        if tot == 0:
            self.map = []
            return
        if tot == 1:
            self.map = [usable[0]]
            return
        # Each slot goes to the first server (declaration order) with the strictly highest score bucket.
        score = dict.fromkeys(usable, 0)
        out = []
        for _ in range(tot):
            best = None
            best_v = 0
            for s in usable:
                score[s] += weights[s]
                v = (score[s] + tot) // tot
                if best is None or v > best_v:
                    best_v = v
                    best = s
            out.append(best)
            score[best] -= tot
        self.map = out

    def update(self, s: Any) -> None:
        if self._weights.get(s) != self._eweight(s):
            self.rebuild()

    def served_changed(self, s: Any) -> None:
        return None

    def pick(self, client_ip: str = "", avoid: Any = None) -> Any:
        if self.hashed:
            return self.pick_hash(source_hash(client_ip))
        tot = len(self.map)
        if tot == 0:
            return None
        if self.rr_idx < 0 or self.rr_idx >= tot:
            self.rr_idx = 0
        start = newidx = self.rr_idx
        avoided = None
        avoididx = 0
        while True:
            s = self.map[newidx]
            newidx += 1
            if not s.saturated:
                avoided = s
                avoididx = newidx
                if s is not avoid:
                    self.rr_idx = newidx
                    return s
            if newidx == tot:
                newidx = 0
            if newidx == start:
                break
        if avoided is not None:
            self.rr_idx = avoididx
        return avoided

    def pick_hash(self, h: int) -> Any:
        if not self.map:
            return None
        if self.used == 1:
            h = 0  # a single usable server: HAProxy does not hash
        return self.map[h % len(self.map)]


class LeastConn:
    """Least outstanding requests, weighted; equal keys served in the order servers reached them."""

    def __init__(self, servers: Sequence[Any]) -> None:
        self.servers = list(servers)
        self.entries: dict[Any, tuple[int, int]] = {}
        for s in self.servers:
            self.update(s)

    @staticmethod
    def _key(s: Any) -> int:
        inflight = s.served + len(s.queue)
        return (inflight + 1) * SRV_EWGHT_MAX // (s.uweight * BE_WEIGHT_SCALE) if inflight else 0

    def update(self, s: Any) -> None:
        if s.usable and s.uweight > 0:
            key = self._key(s)
            cur = self.entries.get(s)
            if cur is None or cur[0] != key:
                self.entries[s] = (key, next(_seq))
        else:
            self.entries.pop(s, None)

    def served_changed(self, s: Any) -> None:
        cur = self.entries.get(s)
        if cur is not None:
            key = self._key(s)
            if cur[0] != key:
                self.entries[s] = (key, next(_seq))

    def pick(self, client_ip: str = "", avoid: Any = None) -> Any:
        avoided = None
        for s, _ in sorted(self.entries.items(), key=lambda kv: kv[1]):
            mc = s.cfg.maxconn
            if not mc or s.served + len(s.queue) < s.dyn_maxconn + s.cfg.maxqueue:
                if s is not avoid:
                    return s
                avoided = s
        return avoided


class First:
    """The first usable, unsaturated server in declaration order; weights are ignored."""

    def __init__(self, servers: Sequence[Any]) -> None:
        self.servers = sorted(servers, key=lambda s: s.sid)

    def update(self, s: Any) -> None:
        return None

    def served_changed(self, s: Any) -> None:
        return None

    def pick(self, client_ip: str = "", avoid: Any = None) -> Any:
        avoided = None
        for s in self.servers:
            if s.usable and not s.saturated:
                if s is not avoid:
                    return s
                avoided = s
        return avoided


def make_group_balancer(algorithm: str, servers: Sequence[Any], wmult: int = 1) -> GroupBalancer:
    if algorithm == "roundrobin":
        return Fwrr(servers)
    if algorithm == "static-rr":
        return StaticMap(servers, wmult)
    if algorithm == "source":
        return StaticMap(servers, wmult, hashed=True)
    if algorithm == "leastconn":
        return LeastConn(servers)
    if algorithm == "first":
        return First(servers)
    raise ValueError(f"unsupported balance algorithm '{algorithm}'")


STATIC_ALGORITHMS = frozenset({"static-rr", "source"})
