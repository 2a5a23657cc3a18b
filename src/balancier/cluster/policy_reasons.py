"""The sentences of the policy engine: one per placement decision, in the field's words.

Rules: a sentence names the resource, the verb says what happens (starting, keeping, moving, placing,
stopping, leaving ... stopped) and the clause after the colon says why, with the numbers that
decided: "keeping esup_proxy on lb2: stickiness 102 beats preference 200-100" (the current node's
stickiness outweighs what the other node's preference exceeds it by), "moving esup_proxy to lb2:
lb1 is dead", "starting A on node1: tie at 0 with node2, broken by node name". Tests assert them
word for word, and the daemon logs them as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from balancier.cluster.scores import format_score

if TYPE_CHECKING:
    from balancier.cluster.policy import Prim, Unit, World


def no_node(w: World, unit: Unit) -> str:
    first = unit.members[0]
    why = []
    for n in w.nodes:
        e = w.eligible[n]
        why.append(e if e is not None else first.notes.get(n) or member_note(unit, n) or
                   f"{unit.id} scores {format_score(unit.scores[n])} on {n}")
    return "no node can run it (" + "; ".join(why) + ")"


def member_note(unit: Unit, node: str) -> str | None:
    for m in unit.members:
        if node in m.notes:
            return m.notes[node]
    return None


def stopped_sentence(unit: Unit, why: str) -> str:
    if unit.current is not None or any(m.active for m in unit.members):
        where = unit.current or ", ".join(sorted({n for m in unit.members for n in m.active}))
        return f"stopping {unit.id} on {where}: {why}"
    return f"leaving {unit.id} stopped: {why}"


def placement_sentence(w: World, unit: Unit, best: str, ranked: list[str]) -> str:
    scores = unit.scores
    cur = unit.current
    known = next((m.known[0] for m in unit.members if len(m.known) == 1), None) if cur is None else cur
    others = [n for n in ranked if n != best]
    runner = others[0] if others else None
    if cur == best:
        if runner is None:
            return f"keeping {unit.id} on {best}: no other node can run it"
        sticky = unit.stickiness
        base = unit.base[best]
        a = format_score(scores[runner])
        if sticky > 0 and base < scores[runner]:
            verb = "beats" if scores[best] > scores[runner] else "matches"
            tail = "" if verb == "beats" else ", and a tie favours the current node"
            return f"keeping {unit.id} on {best}: stickiness {format_score(sticky)} {verb} preference " \
                   f"{a}-{format_score(base)}{tail}"
        if scores[best] == scores[runner]:
            return f"keeping {unit.id} on {best}: tie at {format_score(scores[best])} with {runner}, " \
                   f"{tie_break(w, best, runner, cur)}"
        return f"keeping {unit.id} on {best}: preference {format_score(scores[best])} beats {a} on {runner}"
    if cur is not None or known is not None:
        src = cur if cur is not None else known
        assert src is not None
        if w.eligible[src] is not None:
            return f"moving {unit.id} to {best}: {w.eligible[src]}"
        if scores[src] < 0:
            note = member_note(unit, src)
            return f"moving {unit.id} to {best}: {note or f'it scores {format_score(scores[src])} on {src}'}"
        if cur is None:
            return f"starting {unit.id} on {best}: preference {format_score(scores[best])} beats " \
                   f"{format_score(scores[src])} on {src}"
        sticky = unit.stickiness
        base = unit.base[src]
        if scores[best] == scores[src]:
            return f"moving {unit.id} to {best}: tie at {format_score(scores[best])} with {src}, " \
                   f"{tie_break(w, best, src, cur)}"
        there = f"{format_score(base)}+{format_score(sticky)}" if sticky > 0 else format_score(scores[src])
        return f"moving {unit.id} to {best}: preference {format_score(scores[best])} beats {there} on {src}"
    # Not active anywhere, or active on several nodes (multiple-active is explained per member).
    verb = "placing" if any(m.active for m in unit.members) else "starting"
    if runner is None:
        return f"{verb} {unit.id} on {best}: the only node that can run it"
    if scores[best] == scores[runner]:
        return f"{verb} {unit.id} on {best}: tie at {format_score(scores[best])} with {runner}, " \
               f"{tie_break(w, best, runner, cur)}"
    return f"{verb} {unit.id} on {best}: preference {format_score(scores[best])} beats " \
           f"{format_score(scores[runner])} on {runner}"


def tie_break(w: World, best: str, other: str, cur: str | None) -> str:
    if w.assigned_count[best] != w.assigned_count[other]:
        return f"broken by fewer resources on {best}"
    if best == cur:
        return "and a tie favours the current node"
    return "broken by node name"


def stopped_member(m: Prim, why: str) -> str:
    if m.active:
        return f"stopping {m.id} on {', '.join(m.active)}: {why}"
    return f"leaving {m.id} stopped: {why}"
