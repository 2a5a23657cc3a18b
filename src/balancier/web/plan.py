"""What an administrator's change would do, computed before it is made: the confirmation step.

Rules this file governs:
- Pure: the change is applied to a copy of the CIB with the same function the DC uses
  (``changes.apply_change``), and the policy engine (``policy.schedule``) runs on the result at the same
  ``now``. Nothing is written; the answer says which CIB version it was computed from, because the DC may
  decide on a newer copy when the change is really made.
- A change the DC would refuse is refused here with the same status and sentence.
- The plan lists the placement moves (what runs where before -> after), the policy engine's sentences and
  its ordered actions, so the confirmation shows the transition itself, not a paraphrase.

Public API:
    CLUSTER_OPS; plan_change(cib, op, args, now) -> dict
"""

from __future__ import annotations

from typing import Any

from balancier.cluster.changes import ChangeError, apply_change, describe
from balancier.cluster.model import Cib
from balancier.cluster.policy import schedule

CLUSTER_OPS = ("migrate", "unmigrate", "cleanup", "standby", "online")


def _version(cib: Cib) -> str:
    return f"{cib.admin_epoch}.{cib.epoch}.{cib.num_updates}"


def plan_change(cib: Cib, op: str, args: dict[str, Any], now: float) -> dict[str, Any]:
    """{ok, status, change, cib_version, moves, reasons, actions} or {ok: False, status, error}."""
    if op not in CLUSTER_OPS:
        return {"ok": False, "status": 400, "error": f"unknown operation {op!r} (known: {', '.join(CLUSTER_OPS)})"}
    what = describe(op, args)
    try:
        new = apply_change(cib, op, args, now)
    except ChangeError as exc:
        return {"ok": False, "status": exc.status, "error": exc.message, "change": what}
    before = schedule(cib, now).placement
    after = schedule(new, now)
    moves = []
    for unit in sorted(set(before) | set(after.placement)):
        a, b = before.get(unit), after.placement.get(unit)
        if a != b:
            moves.append({"resource": unit, "from": a, "to": b})
    return {"ok": True, "status": 200, "change": what, "cib_version": _version(cib),
            "changed": new.version != cib.version, "moves": moves, "reasons": list(after.reasons),
            "actions": [str(a) for a in after.actions]}
