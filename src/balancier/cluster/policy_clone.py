"""The policy engine's clones and live migrations (steps 8 and 9 of policy.py's docstring).

Split from policy.py to keep each file readable; the rules are stated there. Pure functions on the
scheduler's working records (World, Unit, Prim), called by policy.py while it places units.
"""

from __future__ import annotations

from balancier.cluster.policy import _FROZEN, Prim, Unit, World
from balancier.cluster.policy_reasons import no_node, stopped_sentence
from balancier.cluster.scores import INFINITY, format_score


def dangling_migration(w: World, p: Prim) -> None:
    """Active on a migration's source (migrate_to) and target (migrate_from): it runs on the target."""
    if p.clone or len(p.active) < 2:
        return
    last = {n: w.cib.resource_status(p.id, n).last_call for n in p.active}
    dst = [n for n, o in last.items() if o is not None and o.op == "migrate_from" and o.ok]
    src = [n for n, o in last.items() if o is not None and o.op == "migrate_to" and o.ok]
    if len(dst) == 1 and src and len(dst) + len(src) == len(p.active):
        p.active = dst
        p.dangling = src
        w.say(f"finishing the migration of {p.id} to {dst[0]}: stopping it on {', '.join(src)}")


def healthy_instances(w: World, dep: Unit, clone: Unit, where: set[str]) -> set[str]:
    """Where a dependent of a clone may go: its placed instances, but only those already running healthy
    when there are any (an instance that failed and restarts, or one still to start, does not hold the
    dependent there while another node's instance serves; it comes back by a move once that one runs)."""
    p = clone.members[0]
    healthy = {n for n in where if p.states.get(n) == "started"}
    if not healthy or healthy == where:
        return where
    for n in sorted(where - healthy, key=w.nodes.index):
        state = "failed and restarts" if p.states.get(n) == "failed" else "is not running yet"
        dep.members[0].notes.setdefault(n, f"the instance of {clone.id} on {n} {state}")
    return healthy


def assign_clone(w: World, unit: Unit) -> None:
    """Step 8: the instances of a clone, one per node, on the best nodes that can run it."""
    p = unit.members[0]
    scores = unit.scores
    if w.mode == "stop":
        unit.targets = []
        unit.decided = stopped_sentence(unit, "partition without quorum")
    elif w.mode in ("freeze", "wait"):
        unit.targets = [n for n in p.active if scores.get(n, -INFINITY) >= 0 and not p.stopped_why]
        unit.decided = (f"keeping {unit.id} on {', '.join(unit.targets)}: {_FROZEN[w.mode]}" if unit.targets
                        else stopped_sentence(unit, _FROZEN[w.mode]))
    elif p.stopped_why:
        unit.targets = []
        unit.decided = stopped_sentence(unit, p.stopped_why)
    elif not p.managed or p.blocked_on is not None:
        unit.targets = list(p.active)
    else:
        def rank(n: str) -> tuple[int, int, int, str]:
            return (-scores[n], w.assigned_count[n], 0 if n in p.active else 1, n)

        candidates = sorted((n for n in w.nodes if scores[n] >= 0), key=rank)
        unit.targets = sorted(candidates[:unit.clone_max], key=w.nodes.index)
        left = [n for n in w.nodes if n not in unit.targets]
        if not unit.targets:
            unit.decided = stopped_sentence(unit, no_node(w, unit))
        else:
            why = [w.eligible[n] or p.notes.get(n) or
                   (f"clone-max {unit.clone_max} reached" if scores[n] >= 0 else
                    f"{unit.id} scores {format_score(scores[n])} on {n}") for n in left]
            unit.decided = (f"running {unit.id} on {', '.join(unit.targets)}: one instance per node that can run it"
                            + (f"; none on {', '.join(left)} ({'; '.join(why)})" if left else ""))
    unit.target = unit.targets[0] if unit.targets else None
