"""One picture of the cluster as the dashboard shows it, read from the daemon without changing anything.

Rules this file governs:
- The base is the status document every admin interface shows (``Daemon.status_document``); this file
  adds what only a person looking at a screen needs: transport health (drop counters, late heartbeats),
  each node's connectivity score (the ``pingd`` attribute) and the gap since its last heartbeat, each
  member's last operation with its duration, the location constraints in force with their remaining
  lifetime, and the timeline.
- Everything is JSON-able; times are epoch seconds and durations milliseconds, so the same picture feeds
  the HTML tables and the server-sent events.
- The daemon is read, never written: a snapshot is taken on the event loop between two HA-loop passes.
- The daemon keeps only its last transition; ``TransitionLog`` remembers the ones the dashboard saw (it looks
  several times a second), so the timeline still says why a resource moved after the next transition ran.
  A transition's sentences are kept only when they differ from the previous transition's: a decision that
  did not change ("keeping web on lb1: ...") is told once, not after every CIB update.

Public API:
    take(daemon, now_wall, now_mono) -> dict; timeline(daemon, proxy_events, transitions=None) -> list[dict]
    TransitionLog(size).observe(last_transition) / .items
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from balancier.cluster.model import Cib
from balancier.cluster.scores import INFINITY

TIMELINE_SIZE = 40


def _last_op(cib: Cib, rid: str, node: str | None) -> dict[str, Any] | None:
    """The newest non-probe result of a member on its node (or anywhere when it runs nowhere)."""
    best = None
    for rs in cib.status.resources:
        if rs.resource != rid or (node is not None and rs.node != node):
            continue
        for op in rs.ops:
            if best is None or (op.time, op.call_id) > (best.time, best.call_id):
                best = op
    if best is None:
        return None
    return {"op": best.op, "node": best.node, "rc": best.rc, "ok": best.ok, "exec_ms": best.exec_ms,
            "time": best.time, "interval_ms": best.interval_ms}


def _heartbeat_gaps(daemon: Any, now_mono: float) -> dict[str, int | None]:
    peers = getattr(daemon.membership, "_peers", {})
    gaps: dict[str, int | None] = {}
    for name, peer in peers.items():
        last = getattr(peer, "last_heard", None)
        gaps[name] = int((now_mono - last) * 1000) if last is not None else None
    return gaps


def _score_text(score: int) -> str:
    return "+INFINITY" if score >= INFINITY else "-INFINITY" if score <= -INFINITY else str(score)


def take(daemon: Any, now_wall: float, now_mono: float) -> dict[str, Any]:
    doc: dict[str, Any] = daemon.status_document()
    cib: Cib = daemon.cib
    gaps = _heartbeat_gaps(daemon, now_mono)
    for n in doc["nodes"]:
        n["me"] = n["name"] == daemon.me
        n["pingd"] = cib.node(n["name"]).attribute("pingd")
        n["gap_ms"] = 0 if n["me"] else gaps.get(n["name"])
    for top in doc["resources"]:
        for m in top["members"]:
            m["last_op"] = _last_op(cib, m["id"], m.get("node"))
            m["fail_count"] = sum(rs.fail_count for rs in cib.status.resources if rs.resource == m["id"])
    locations = []
    for c in cib.configuration.locations:
        if not c.active(now_wall):
            continue
        locations.append({"id": c.id, "resource": c.resource, "node": c.node, "score": _score_text(c.score),
                          "runtime": c.id.startswith("cli-"), "expires": c.expires,
                          "remaining_s": None if c.expires is None else max(0, int(c.expires - now_wall))})
    events = list(daemon.events)
    doc["locations"] = locations
    doc["transport"] = {"drops": dict(daemon.receiver.drops),
                        "late_heartbeats": sum(1 for e in events if e.get("kind") == "late"),
                        "retransmissions": daemon.reliable.retransmissions}
    doc["election"] = daemon.election_sentence
    doc["now"] = now_wall
    return doc


def _sentences(trans: dict[str, Any]) -> list[str]:
    out = [str(r) for r in trans.get("reasons", [])]
    if trans.get("error"):
        out.append(f"the policy engine failed: {trans['error']}")
    return out


class TransitionLog:
    """The transitions seen so far (newest last), each with the sentences that changed since the previous one."""

    def __init__(self, size: int = TIMELINE_SIZE) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=size)
        self._at: float | None = None
        self._previous: set[str] = set()

    def observe(self, trans: dict[str, Any] | None) -> None:
        at = (trans or {}).get("at")
        if trans is None or at is None or at == self._at:
            return
        self._at = at
        sentences = _sentences(trans)
        new = [s for s in sentences if s not in self._previous]
        self._previous = set(sentences)
        if new:
            self.items.append({"t": at, "sentences": new})


def timeline(daemon: Any, proxy_events: Iterable[dict[str, Any]] = (),
             transitions: TransitionLog | None = None) -> list[dict[str, Any]]:
    """Newest first: membership, election, fencing and admin events, the transitions' sentences (those the
    log kept, else the last transition's) and the proxy's server state changes."""
    items = [{"t": e.get("t", 0.0), "kind": e.get("kind", ""), "sentence": e.get("sentence", "")}
             for e in daemon.events]
    if transitions is not None:
        transitions.observe(daemon.last_transition)
        for tr in transitions.items:
            items.extend({"t": tr["t"], "kind": "policy", "sentence": s} for s in tr["sentences"])
    else:
        trans = daemon.last_transition or {}
        if trans.get("at") is not None:
            items.extend({"t": trans["at"], "kind": "policy", "sentence": s} for s in _sentences(trans))
    items.extend(proxy_events)
    items.sort(key=lambda e: e["t"], reverse=True)
    return items[:TIMELINE_SIZE]
