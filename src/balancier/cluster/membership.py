"""Who is alive: the membership state machine of one node (pure, clock passed in).

Rules (Heartbeat's, spec cluster.md §1.4-1.5):

- Every configured peer starts in ``init`` (never heard from). This node itself is always ``up``.
- A heartbeat from a peer records the local receive time and the deadtime *the sender advertised*:
  the sender's configuration governs how long we wait for it.
- ``init -> up`` on the first heartbeat. ``up -> dead`` when ``now - last_heard > deadtime_of_sender``.
  A peer never heard from is declared dead once ``initdead`` has passed since our own boot
  (the network may be slow right after boot, so we are more patient then).
- The gap between two heartbeats of an ``up`` peer above ``warntime`` gives a warning with the
  measured gap ("late heartbeat from lb2: 812 ms since the last one (warntime 600 ms)"); it does
  not change the state.
- A heartbeat carrying a higher generation than known is a restart of the peer ("heartbeat restart
  on lb2"); the peer lost its state and everything built on it (reliable streams, CIB copy) must
  be redone. A heartbeat with the same generation from a peer we declared dead is a healed
  partition ("lb2 returning after partition"): deadtime was probably too small for that network.
- A heartbeat with a lower generation than known is a replay of an old incarnation and is ignored
  (the transport drops and counts it first; this is a second line of defence).
- A clean leave (the peer's SIGTERM) marks it dead at once, so nobody waits deadtime.

Every state change returns one :class:`MemberEvent` whose sentence is logged as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

INIT = "init"
UP = "up"
DEAD = "dead"


@dataclass(frozen=True)
class MemberEvent:
    """One change of membership, with the sentence that explains it."""

    kind: str  # "up" | "late" | "dead" | "restart" | "return" | "left"
    node: str
    sentence: str


@dataclass
class _Peer:
    state: str = INIT
    generation: int = -1
    last_heard: float | None = None
    deadtime_ms: int = 0
    left: bool = False


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class Membership:
    """The membership view of node ``me``; feed it heartbeats, leaves and clock ticks."""

    def __init__(self, me: str, peers: Iterable[str], *, warntime_ms: int, initdead_ms: int,
                 boot: float) -> None:
        self.me = me
        self.warntime_ms = warntime_ms
        self.initdead_ms = initdead_ms
        self.boot = boot
        self._peers: dict[str, _Peer] = {name: _Peer() for name in sorted(peers) if name != me}

    # ---- inputs -------------------------------------------------------------------------------

    def heartbeat(self, node: str, generation: int, deadtime_ms: int, now: float) -> list[MemberEvent]:
        """A valid heartbeat (already authenticated and de-duplicated) arrived from ``node``."""
        peer = self._peers.get(node)
        if peer is None:
            return []
        if generation < peer.generation:
            return []  # an old incarnation: replay, never revives a node
        events: list[MemberEvent] = []
        if peer.state == INIT:
            events.append(MemberEvent("up", node, f"{node} is up (generation {generation})"))
        elif peer.state == DEAD:
            if peer.generation < 0:  # given up on after initdead, never heard before: no restart to speak of
                events.append(MemberEvent(
                    "up", node, f"{node} is up (generation {generation}), first heard after initdead"))
            elif generation > peer.generation:
                events.append(MemberEvent(
                    "up", node,
                    f"{node} is back after a restart (generation {peer.generation} -> {generation})"))
            elif peer.left:
                events.append(MemberEvent("up", node, f"{node} is up again (generation {generation})"))
            else:
                events.append(MemberEvent(
                    "return", node,
                    f"{node} returning after partition (generation {generation}); "
                    f"deadtime may be too small for this network"))
        elif generation > peer.generation:
            events.append(MemberEvent(
                "restart", node,
                f"heartbeat restart on {node}: generation {peer.generation} -> {generation}"))
        elif peer.last_heard is not None:
            gap = _ms(now - peer.last_heard)
            if gap > self.warntime_ms:
                events.append(MemberEvent(
                    "late", node,
                    f"late heartbeat from {node}: {gap} ms since the last one "
                    f"(warntime {self.warntime_ms} ms)"))
        peer.state = UP
        peer.generation = generation
        peer.last_heard = now
        peer.deadtime_ms = deadtime_ms
        peer.left = False
        return events

    def leave(self, node: str, generation: int, now: float) -> list[MemberEvent]:
        """``node`` announced a clean shutdown."""
        peer = self._peers.get(node)
        if peer is None or generation < peer.generation or peer.state == DEAD:
            return []
        peer.state = DEAD
        peer.generation = generation
        peer.left = True
        peer.last_heard = now
        return [MemberEvent("left", node, f"{node} left the cluster (clean shutdown)")]

    def tick(self, now: float) -> list[MemberEvent]:
        """Declare dead every peer whose silence exceeded its deadtime (or initdead if never heard)."""
        events: list[MemberEvent] = []
        for name, peer in self._peers.items():
            if peer.state == UP and peer.last_heard is not None:
                silence = _ms(now - peer.last_heard)
                if silence > peer.deadtime_ms:
                    peer.state = DEAD
                    events.append(MemberEvent(
                        "dead", name,
                        f"{name} is dead: no heartbeat for {silence} ms (deadtime {peer.deadtime_ms} ms)"))
            elif peer.state == INIT and _ms(now - self.boot) > self.initdead_ms:
                peer.state = DEAD
                events.append(MemberEvent(
                    "dead", name, f"{name} is dead: never heard from within initdead {self.initdead_ms} ms"))
        return events

    # ---- queries ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`tick` may change something (for the timer)."""
        times: list[float] = []
        for peer in self._peers.values():
            if peer.state == UP and peer.last_heard is not None:
                times.append(peer.last_heard + peer.deadtime_ms / 1000.0 + 0.001)
            elif peer.state == INIT:
                times.append(self.boot + self.initdead_ms / 1000.0 + 0.001)
        return min(times) if times else None

    def state(self, node: str) -> str:
        if node == self.me:
            return UP
        return self._peers[node].state

    def generation(self, node: str) -> int | None:
        peer = self._peers.get(node)
        return None if peer is None or peer.generation < 0 else peer.generation

    def members(self) -> tuple[str, ...]:
        """Nodes of this partition: this node and every peer that is up, sorted by name."""
        return tuple(sorted([self.me] + [n for n, p in self._peers.items() if p.state == UP]))

    def pending(self) -> tuple[str, ...]:
        """Peers never heard from and not yet given up on (initdead still running)."""
        return tuple(n for n, p in self._peers.items() if p.state == INIT)

    def ever_seen(self, node: str) -> bool:
        peer = self._peers.get(node)
        return node == self.me or (peer is not None and peer.generation >= 0)

    def left(self, node: str) -> bool:
        peer = self._peers.get(node)
        return peer is not None and peer.left

    def view(self, now: float) -> dict[str, dict[str, object]]:
        """A JSON-able picture for status.json (stable fields only, so it changes only on events)."""
        out: dict[str, dict[str, object]] = {self.me: {"state": UP, "self": True}}
        for name, peer in self._peers.items():
            out[name] = {
                "state": peer.state,
                "generation": peer.generation if peer.generation >= 0 else None,
                "deadtime_ms": peer.deadtime_ms or None,
                "left": peer.left,
            }
        return out
