"""Designated coordinator (DC) election among the members of one partition (pure).

Every node runs the same function on its own view and reaches the same answer once the views agree
(heartbeats carry each sender's current DC, so views agree within one keepalive). The rule, in
order (stable first, then deterministic; in the spirit of Pacemaker's election, spec §2.4):

1. **The incumbent keeps the role.** A *claimant* is a member whose last heartbeat names itself as
   DC. If there are claimants, the DC is the claimant with the lowest name. With one claimant this
   is plain stability: a node that joins never takes the role from a working DC. With several
   (two partitions that each had a DC just healed) the lowest name wins and the other steps down.
2. **Wait for the peers we have not heard from yet.** With no claimant, a node does not elect
   while some configured peer is still ``init`` (never heard, initdead not over): that peer may be
   the DC of a running cluster, and electing ourselves now would make two DCs for one keepalive.
   This is also the cold-start wait (Pacemaker's dc-deadtime, corosync's wait_for_all).
3. **Otherwise the lowest node name among the members wins** (case-insensitive, then exact, as
   Pacemaker breaks its last tie). Members not up are not candidates.

A partition always elects exactly one DC once views agree; a partition without quorum still has a
DC (it keeps the CIB and logs), the policy engine just won't start anything there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Election:
    """The outcome: who is DC (None = not decided yet) and the sentence explaining it."""

    dc: str | None
    sentence: str


def _name_key(name: str) -> tuple[str, str]:
    return (name.lower(), name)


def elect(members: Sequence[str], claims: Mapping[str, str | None], pending: Sequence[str]) -> Election:
    """Decide the DC of this partition.

    ``members``: the nodes up in this partition (including this node); ``claims``: for each member,
    the DC its last heartbeat named (this node's own current DC included); ``pending``: configured
    peers never heard from while initdead still runs.
    """
    claimants = sorted((m for m in members if claims.get(m) == m), key=_name_key)
    if len(claimants) == 1:
        return Election(claimants[0], f"{claimants[0]} stays DC: incumbent")
    if claimants:
        others = ", ".join(claimants[1:])
        return Election(claimants[0],
                        f"{claimants[0]} is DC: lowest name among the claiming DCs {claimants[0]}, {others}")
    if pending:
        return Election(None, f"no DC yet: waiting for {', '.join(sorted(pending))} (initdead)")
    ordered = sorted(members, key=_name_key)
    if len(ordered) == 1:
        return Election(ordered[0], f"{ordered[0]} elected DC: only member of this partition")
    return Election(ordered[0], f"{ordered[0]} elected DC: lowest name among members {', '.join(ordered)}")


def has_quorum(configured: int, members: int) -> bool:
    """Quorum of a partition of ``members`` nodes out of ``configured``.

    Three nodes or more: a strict majority (Heartbeat's "majority" plugin, corosync's votequorum).
    Two nodes: a lone node keeps quorum (Heartbeat's "twonodes" tie-breaker, corosync's two_node);
    the cold-start guard that goes with it (wait_for_all) is rule 2 of :func:`elect`.
    """
    if configured <= 2:
        return members >= 1
    return 2 * members > configured
