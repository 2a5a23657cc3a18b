"""The cluster's status for people and programs: the JSON document, a crm_mon-like table, a Nagios line.

Pure functions (spec cluster.md §8.1, §8.3); the daemon builds the document, the CLI formats it.

Rules:
- ``status_document`` is what ``GET /api/status`` answers and ``balancier status --json`` prints:
  ``format`` (``balancier-status/1``), cluster, node (who answered), dc, quorum, cib_version,
  updated (epoch seconds), nodes [{name, state: online|standby|offline|unclean (online = in the
  answering node's membership), online, standby,
  unclean, dc}], resources [{id, kind: group|clone|primitive, target_role, state, node, nodes, members
  [{id, agent, state, node, nodes, failed, managed}]}], failed_actions [{resource, op, interval_ms,
  node, call_id, rc, rc_text, status, time, exec_ms, reason}], fail_counts [{resource, node,
  fail_count, last_failure}], constraints (the runtime ``cli-*`` ones), transition (the DC's last
  one: reasons and actions) and members. The daemon adds monitors [{resource, interval_ms}] (the
  recurring monitors running on the answering node) and state (its one-sentence role).
- A top-level resource (a group counts once, as in crm_mon) is "started" when every member is
  started on one node, "stopped" when none runs, "partial" otherwise; "disabled" when its
  target-role is Stopped and nothing runs. A clone is "started" when its instances run (healthy) on
  one node or more, listed in ``nodes`` (``node`` stays null), "failed" when an instance failed.
  The table shows it as crm_mon does: ``Clone Set: id [primitive]`` then ``Started: [ lb1 lb2 ]``.
- The table follows crm_mon -1 of the Heartbeat era: a header (Last updated, Current DC with
  "partition with quorum" / "WITHOUT quorum" / NONE), the node lists (Online: [ ... ],
  OFFLINE: [ ... ], "Node X: standby"), one line per primitive ``id<TAB>(class::provider:type):<TAB>
  Started node`` (groups indented under "Resource Group: id"), "Failed actions:" with
  ``rsc_op_interval (node=, call=, rc=, status=): rc text``, then fail counts (crm_mon -f).
- Nagios (monitoring-plugins conventions): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one line
  ``CLUSTER STATE: text | perfdata``. CRITICAL: no DC, no quorum, a resource that should run is
  stopped or partly started. WARNING: fewer nodes online than expected (default: all configured),
  failed actions, fail counts above 0. UNKNOWN: the daemon could not be asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from balancier.cluster.model import Cib, OpResult, agent_parts

FORMAT = "balancier-status/1"
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Pacemaker 1.1's rc texts (spec §8.1)
RC_TEXT = {0: "ok", 1: "unknown error", 2: "invalid parameter", 3: "unimplemented feature",
           4: "insufficient privileges", 5: "not installed", 6: "not configured", 7: "not running",
           8: "master", 9: "master (failed)", 190: "degraded", 191: "degraded (master)"}


# --------------------------------------------------------------------------- the document


def _failed(op: OpResult) -> bool:
    return not op.ok or op.timed_out


def _reason(output: str) -> str:
    """The agent's exit reason (the last ``ocf-exit-reason:`` line), or ''."""
    if "ocf-exit-reason:" not in output:
        return ""
    rest = output.rsplit("ocf-exit-reason:", 1)[1].strip()
    return rest.splitlines()[0] if rest else ""


def status_document(cib: Cib, *, cluster: str, node: str, dc: str | None, quorum: bool | None,
                    members: list[str], transition: dict[str, Any] | None, now: float,
                    failures: Iterable[OpResult] = ()) -> dict[str, Any]:
    """The status document; ``failures``: failed results the CIB no longer holds (replaced by a restart)."""
    conf = cib.configuration
    nodes = []
    online = set(members)  # the answering node's membership: the CIB's copy is refreshed only by a DC
    for name in conf.nodes:
        ns = cib.node(name)
        up = name in online
        standby = cib.standby(name) and up
        state = "unclean" if ns.unclean else "offline" if not up else "standby" if standby else "online"
        nodes.append({"name": name, "state": state, "online": up, "standby": standby,
                      "unclean": ns.unclean, "dc": name == dc})

    def member(rid: str) -> dict[str, Any]:
        r = conf.resource(rid)
        where = [n for n in conf.nodes if n in online and cib.resource_status(rid, n).state in ("started", "failed")]
        states = {n: cib.resource_status(rid, n).state for n in where}
        failed = any(s == "failed" for s in states.values()) or any(
            cib.resource_status(rid, n).state == "blocked" for n in conf.nodes)
        state = "started" if len(where) == 1 and not failed else "failed" if failed else \
            "multiple" if len(where) > 1 else "stopped"
        return {"id": rid, "agent": r.agent if r is not None else "", "state": state,
                "node": where[0] if len(where) == 1 else None, "nodes": where, "failed": failed,
                "managed": (conf.meta(rid, "is-managed") or "true").lower() not in ("false", "no", "off", "0")}

    resources = []
    seen: set[str] = set()
    for r in conf.resources:
        g = conf.group_of(r.id)
        c = conf.clone_of(r.id)
        uid = g.id if g is not None else c.id if c is not None else r.id
        if uid in seen:
            continue
        seen.add(uid)
        members_ = [member(m) for m in (g.resources if g is not None else (r.id,))]
        if c is not None:
            m = members_[0]
            role = c.meta_value("target-role") or conf.meta(r.id, "target-role") or "Started"
            state = "failed" if m["failed"] else "started" if m["nodes"] else \
                "disabled" if role == "Stopped" else "stopped"
            resources.append({"id": uid, "kind": "clone", "target_role": role, "state": state, "node": None,
                              "nodes": list(m["nodes"]), "members": members_})
            continue
        role = (g.meta_value("target-role") if g is not None else None) or conf.meta(r.id, "target-role") or "Started"
        nodes_used = {m["node"] for m in members_ if m["node"] is not None}
        if all(m["state"] == "started" for m in members_) and len(nodes_used) == 1:
            state, where = "started", next(iter(nodes_used))
        elif all(m["state"] == "stopped" for m in members_):
            state, where = ("disabled" if role == "Stopped" else "stopped"), None
        else:
            state, where = ("failed" if any(m["failed"] for m in members_) else "partial"), None
        resources.append({"id": uid, "kind": "group" if g is not None else "primitive", "target_role": role,
                          "state": state, "node": where, "nodes": [where] if where else [], "members": members_})

    failed_actions, fail_counts = [], []
    failed_ops = {(op.node, op.call_id): op for rs in cib.status.resources for op in rs.ops if _failed(op)}
    failed_ops.update({(op.node, op.call_id): op for op in failures})
    for op in failed_ops.values():
        failed_actions.append({
            "resource": op.resource, "op": op.op, "interval_ms": op.interval_ms, "node": op.node,
            "call_id": op.call_id, "rc": op.rc, "rc_text": RC_TEXT.get(op.rc, f"unknown exit code {op.rc}"),
            "status": "Timed Out" if op.timed_out else "complete", "time": op.time,
            "exec_ms": op.exec_ms, "reason": _reason(op.output)})
    for rs in cib.status.resources:
        if rs.fail_count:
            fail_counts.append({"resource": rs.resource, "node": rs.node, "fail_count": rs.fail_count,
                                "last_failure": rs.last_failure})
    failed_actions.sort(key=lambda f: (f["node"], f["call_id"]))
    constraints = [{"id": c.id, "resource": c.resource, "node": c.node, "score": c.score, "expires": c.expires}
                   for c in conf.locations if c.id.startswith("cli-")]
    trans = None
    if transition is not None:
        trans = {k: transition.get(k) for k in ("reasons", "actions", "placement", "cib_version", "at", "error",
                                               "graph") if k in transition}
    return {"format": FORMAT, "cluster": cluster, "node": node, "dc": dc, "quorum": quorum,
            "cib_version": ".".join(str(v) for v in cib.version), "updated": round(now, 3),
            "nodes": nodes, "resources": resources, "failed_actions": failed_actions,
            "fail_counts": fail_counts, "constraints": constraints, "transition": trans,
            "members": list(members)}


# --------------------------------------------------------------------------- the table


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(t))


def _agent_text(agent: str) -> str:
    try:
        cls, provider, rtype = agent_parts(agent)
    except ValueError:
        return agent
    return f"{cls}::{provider}:{rtype}" if provider else f"{cls}:{rtype}"


def _primitive_line(m: dict[str, Any], indent: str) -> str:
    if m["state"] == "multiple":
        role = "Started [ " + " ".join(m["nodes"]) + " ]"
    elif m["node"] is not None:
        role = f"Started {m['node']}"
    else:
        role = "Stopped"
    suffix = (" (unmanaged)" if not m["managed"] else "") + (" FAILED" if m["failed"] else "")
    return f"{indent}{m['id']}\t({_agent_text(m['agent'])}):\t{role}{suffix}"


def format_table(doc: dict[str, Any]) -> str:
    """crm_mon -1 -f, adapted (see the module rules)."""
    dc = doc.get("dc")
    if dc is None:
        dc_line = "Current DC: NONE"
    else:
        dc_line = f"Current DC: {dc} - partition {'with' if doc.get('quorum') else 'WITHOUT'} quorum"
    tops = doc["resources"]
    n_nodes = len(doc["nodes"])
    lines = [
        "============",
        f"Last updated: {_when(doc['updated'])}",
        f"Cluster: {doc['cluster']} (answered by {doc['node']})",
        dc_line,
        f"CIB version: {doc['cib_version']}",
        f"{n_nodes} Nodes configured",
        f"{len(tops)} Resources configured.",
        "============",
        "",
    ]
    online = [n["name"] for n in doc["nodes"] if n["state"] == "online"]
    for n in doc["nodes"]:
        if n["state"] == "standby":
            lines.append(f"Node {n['name']}: standby")
        elif n["state"] == "unclean":
            lines.append(f"Node {n['name']}: UNCLEAN ({'online' if n['online'] else 'offline'})")
    if online:
        lines.append(f"Online: [ {' '.join(online)} ]")
    offline = [n["name"] for n in doc["nodes"] if n["state"] == "offline"]
    if offline:
        lines.append(f"OFFLINE: [ {' '.join(offline)} ]")
    lines.append("")
    for top in tops:
        if top["kind"] == "clone":
            m = top["members"][0]
            lines.append(f" Clone Set: {top['id']} [{m['id']}]" + (" (disabled)" if top["target_role"] == "Stopped"
                                                                    else "") + (" FAILED" if m["failed"] else ""))
            lines.append(f"     Started: [ {' '.join(m['nodes'])} ]" if m["nodes"] else "     Stopped")
        elif top["kind"] == "group":
            lines.append(f" Resource Group: {top['id']}" + (" (disabled)" if top["target_role"] == "Stopped" else ""))
            lines.extend(_primitive_line(m, "     ") for m in top["members"])
        else:
            lines.append(_primitive_line(top["members"][0], " ")
                         + (" (disabled)" if top["target_role"] == "Stopped" else ""))
    if doc["failed_actions"]:
        lines += ["", "Failed actions:"]
        for f in doc["failed_actions"]:
            op = "monitor" if f["op"] == "probe" else f["op"]
            reason = f": {f['reason']}" if f.get("reason") else ""
            lines.append(f"    {f['resource']}_{op}_{f['interval_ms']} (node={f['node']}, call={f['call_id']}, "
                         f"rc={f['rc']}, status={f['status']}): {f['rc_text']}{reason}, "
                         f"last-rc-change='{_when(f['time'])}', exec={f['exec_ms']}ms")
    if doc["fail_counts"]:
        lines += ["", "Migration summary:"]
        for n in doc["nodes"]:
            counts = [c for c in doc["fail_counts"] if c["node"] == n["name"]]
            if not counts:
                continue
            lines.append(f"* Node {n['name']}:")
            for c in counts:
                count = "INFINITY" if c["fail_count"] >= 1_000_000 else str(c["fail_count"])
                lines.append(f"   {c['resource']}: fail-count={count} last-failure='{_when(c['last_failure'])}'")
    if doc["constraints"]:
        lines += ["", "Runtime constraints:"]
        for c in doc["constraints"]:
            score = "INFINITY" if c["score"] >= 1_000_000 else "-INFINITY" if c["score"] <= -1_000_000 \
                else str(c["score"])
            until = f" until {_when(c['expires'])}" if c.get("expires") else ""
            lines.append(f"    {c['id']}: {c['resource']} on {c['node']} ({score}){until}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Nagios


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def nagios(doc: dict[str, Any] | None, *, expect_nodes: int | None = None, error: str | None = None,
           failcount_warn: bool = True) -> tuple[int, str]:
    """(exit code, the plugin's one line) for a status document, or UNKNOWN when there is none."""
    if doc is None:
        return UNKNOWN, f"CLUSTER UNKNOWN: {error or 'no status'}"
    configured = len(doc["nodes"])
    online = [n["name"] for n in doc["nodes"] if n["online"]]
    offline = [n["name"] for n in doc["nodes"] if not n["online"]]
    standby = [n["name"] for n in doc["nodes"] if n["online"] and n["standby"]]
    expected = configured if expect_nodes is None else expect_nodes
    failed = len(doc["failed_actions"])
    failcount = sum(min(c["fail_count"], 1_000_000) for c in doc["fail_counts"])
    tops = doc["resources"]
    started = [t for t in tops if t["state"] == "started"]
    crit: list[str] = []
    warn: list[str] = []
    if doc.get("dc") is None:
        crit.append("no DC")
    elif not doc.get("quorum"):
        crit.append(f"partition WITHOUT quorum ({len(online)} of {configured} nodes)")
    for t in tops:
        if t["state"] in ("stopped", "partial", "failed"):
            crit.append(f"{t['id']} {t['state']}")
    if len(online) < expected:
        warn.append(f"{_plural(len(offline), 'node')} offline: {' '.join(offline)}")
    if failed:
        warn.append(_plural(failed, "failed action"))
    if failcount and failcount_warn:
        warn.append(f"fail count {failcount}")
    text = [f"{_plural(len(online), 'node')} online"]
    if standby:
        text.append(f"{len(standby)} standby")
    by_node: dict[tuple[str, str], int] = {}
    for t in started:
        word = {"group": "resource group", "clone": "clone"}.get(t["kind"], "resource")
        key = (word, t["node"] if t["node"] is not None else " ".join(t.get("nodes") or []))
        by_node[key] = by_node.get(key, 0) + 1
    for (word, node), count in sorted(by_node.items(), key=lambda kv: (kv[0][1], kv[0][0] != "resource group")):
        text.append(f"{_plural(count, word)} started on {node}")
    disabled = [t["id"] for t in tops if t["state"] == "disabled"]
    if disabled:
        text.append(f"disabled: {' '.join(disabled)}")
    code = CRITICAL if crit else WARNING if warn else OK
    problems = crit + warn
    body = ", ".join(problems + text) if problems else ", ".join(text)
    perf = (f"nodes_online={len(online)};;;0;{configured} failed_actions={failed};;1 "
            f"failcount={failcount};;1 resources_started={len(started)};;;0;{len(tops)}")
    return code, f"CLUSTER {STATE_WORDS[code]}: {body} | {perf}"
