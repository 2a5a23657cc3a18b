"""Running one transition: which actions are ready, in flight, done; when the transition ends (pure).

Rules this file governs (Pacemaker's transition engine, spec cluster.md §2.5):
- An action is ready when every action named in its ``inputs`` completed successfully; the DC
  sends each ready action once, to the node it names.
- A result that matches an action in flight (same resource, node, operation and interval) completes
  it. A failed result (``OpResult.ok`` False), a probe that finds the resource already active (any
  answer but "not running": the transition was computed without knowing it), a failure nobody asked
  for, or a CIB change that did not come from a result of this transition (an administrator's
  change, a membership change) aborts the transition: nothing more is sent, the actions already in
  flight are awaited, then the DC schedules again from the new CIB.
- An action in flight longer than its timeout plus :data:`LOST_GRACE_S` is lost (its node died or
  its result was never delivered): it is dropped and the transition aborts.
- The transition is over when every action completed, or when it was aborted and nothing is in
  flight any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from balancier.cluster.model import OCF, OpResult
from balancier.cluster.policy import Action, Transition

LOST_GRACE_S = 10.0


def _matches(action: Action, result: OpResult) -> bool:
    if action.resource != result.resource or action.node != result.node:
        return False
    if action.kind == "probe":
        return result.is_probe
    return action.kind == result.op and action.interval_ms == result.interval_ms


@dataclass
class Graph:
    """The execution state of one transition computed on CIB version ``base``."""

    transition: Transition
    base: tuple[int, int, int]
    done: set[int] = field(default_factory=set)
    in_flight: dict[int, float] = field(default_factory=dict)  # action id -> when it was sent
    aborted: str | None = None  # the sentence saying why

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.transition.actions

    def ready(self) -> list[Action]:
        """Actions whose inputs completed and that were neither sent nor done; none once aborted."""
        if self.aborted is not None:
            return []
        return [a for a in self.actions
                if a.id not in self.done and a.id not in self.in_flight and all(i in self.done for i in a.inputs)]

    def sent(self, action: Action, now: float) -> None:
        self.in_flight[action.id] = now

    def complete(self, action_id: int) -> None:
        """An action the DC performs itself (clear_failcount, fence) finished successfully."""
        self.in_flight.pop(action_id, None)
        self.done.add(action_id)

    def result(self, result: OpResult) -> Action | None:
        """Account for one operation result; returns the action it completes (None: unsolicited)."""
        for a in self.actions:
            if a.id in self.in_flight and _matches(a, result):
                del self.in_flight[a.id]
                if a.kind == "probe" and result.ok and result.rc != OCF.NOT_RUNNING:
                    # the transition was computed not knowing this: Pacemaker's "unexpected probe result"
                    self.done.add(a.id)
                    self.abort(f"{a}: {result.resource} is already active on {result.node} (rc={result.rc})")
                elif result.ok:
                    self.done.add(a.id)
                else:
                    self.abort(f"{a} failed (rc={result.rc}{', timed out' if result.timed_out else ''})")
                return a
        if not result.ok:
            self.abort(f"unexpected failure: {result.op} {result.resource} on {result.node} rc={result.rc}")
        elif not result.is_probe and result.op != "monitor":
            self.abort(f"unexpected result: {result.op} {result.resource} on {result.node}")
        return None

    def abort(self, why: str) -> None:
        if self.aborted is None:
            self.aborted = why

    def lost(self, now: float) -> list[Action]:
        """Drop (and abort for) actions in flight past their timeout plus the grace."""
        by_id = {a.id: a for a in self.actions}
        gone = [by_id[i] for i, t in self.in_flight.items()
                if now - t > by_id[i].timeout_ms / 1000.0 + LOST_GRACE_S]
        for a in gone:
            del self.in_flight[a.id]
            self.abort(f"{a}: no result within its timeout")
        return gone

    def node_lost(self, nodes: Iterable[str]) -> list[Action]:
        """Drop the in-flight actions of nodes that left or died: their results will never come."""
        lost = set(nodes)
        gone = [a for a in self.actions if a.id in self.in_flight and a.node in lost]
        for a in gone:
            del self.in_flight[a.id]
            self.abort(f"{a}: {a.node} left the cluster")
        return gone

    def next_timeout(self) -> float | None:
        by_id = {a.id: a for a in self.actions}
        return min((t + by_id[i].timeout_ms / 1000.0 + LOST_GRACE_S for i, t in self.in_flight.items()),
                   default=None)

    @property
    def finished(self) -> bool:
        if self.aborted is not None:
            return not self.in_flight
        return len(self.done) == len(self.actions)

    def summary(self) -> dict[str, object]:
        return {"done": sorted(self.done), "in_flight": sorted(self.in_flight), "aborted": self.aborted,
                "complete": self.aborted is None and len(self.done) == len(self.actions)}
