"""The dashboard's HTML: plain, semantic tables rendered on the server, so the page reads without JavaScript.

Rules this file governs:
- Pure functions from the snapshot (snapshot.py), the proxy panel's data and the viewer (role, CSRF token)
  to HTML text. Every value from the cluster is escaped; nothing here reads a clock or a socket.
- Each section has a stable ``id`` and is rendered on its own (``sections()``): the page embeds them and the
  event stream sends the same HTML every second, so there is one way to draw a table.
- A state is always a word (``online``, ``standby``, ``UP``, ``DRAIN`` ...) in a badge whose colour only
  repeats it (``class="st st-online"``); tables have ``<caption>`` and ``<th scope>``.
- The page opens with the answers a newcomer looks for first (``summary``): where each resource runs and,
  per backend, how many servers are UP, each server named with its state word.
- Action forms are drawn only for the ``admin`` role. Each is a plain ``POST /dashboard/confirm`` form
  (hidden ``op`` + its arguments + the CSRF token): without JavaScript it leads to a confirmation page,
  with JavaScript the same form opens a confirmation dialog.

Public API:
    Viewer(user, role, csrf); sections(snap, proxy, timeline, viewer) -> {id: html}; summary(snap, proxy, viewer)
    page(snap, proxy, timeline, viewer) -> str; confirm_page(plan, fields, viewer, back) -> str
    message_page(title, text, status_ok) -> str
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape
from typing import Any

from balancier.web.proxystats import state_word

STATIC = "/dashboard/static"
SERVER_STATES = (("drain", "Drain"), ("maint", "Maint"), ("ready", "Ready"))


@dataclass(frozen=True)
class Viewer:
    user: str
    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def badge(word: str, kind: str | None = None) -> str:
    cls = (kind or word).lower().split(" ", 1)[0].replace("/", "")
    return f'<span class="st st-{e(cls)}">{e(word)}</span>'


def clock(t: float | None) -> str:
    return "—" if not t else time.strftime("%H:%M:%S", time.localtime(t))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _form(viewer: Viewer, op: str, label: str, hidden: dict[str, str], extra: str = "",
          cls: str = "") -> str:
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in hidden.items())
    return (f'<form method="post" action="/dashboard/confirm" class="action {cls}" data-op="{e(op)}">'
            f'<input type="hidden" name="op" value="{e(op)}">{fields}'
            f'<input type="hidden" name="csrf" value="{e(viewer.csrf)}">{extra}'
            f'<button type="submit" class="btn btn-{e(op)}">{e(label)}</button></form>')


def _table(caption: str, head: list[str], rows: list[str], cls: str = "", empty: str = "none",
           hide_caption: bool = False) -> str:
    cap = f'<caption class="sr">{e(caption)}</caption>' if hide_caption else f'<caption>{e(caption)}</caption>'
    ths = "".join(f'<th scope="col">{e(h)}</th>' for h in head)
    body = "".join(rows) if rows else f'<tr><td colspan="{len(head)}" class="empty">{e(empty)}</td></tr>'
    return (f'<div class="scroll"><table class="{cls}">{cap}'
            f'<thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table></div>')


# --------------------------------------------------------------------------- sections


def _servers(rows: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["_type"] == "Server" and r["pxname"] == backend]


def summary(snap: dict[str, Any], panel: list[dict[str, Any]], viewer: Viewer) -> str:
    """Where each resource runs and which servers are UP, in sentences: the page's first lines."""
    items = []
    for top in snap["resources"]:
        where = top["node"] or ", ".join(top.get("nodes") or [])
        place = (f'runs on <strong class="where">{e(where)}</strong>' if where else "runs nowhere")
        move = (' <a href="#h-res" class="hint">move it with Migrate below</a>'
                if viewer.admin and where else "")
        items.append(f'<li data-resource="{e(top["id"])}" data-node="{e(where)}"><strong>{e(top["id"])}</strong> '
                     f'{place} {badge(top["state"])}{move}</li>')
    for p in panel:
        if p.get("error"):
            continue
        for b in (r for r in p["rows"] if r["_type"] == "Backend"):
            servers = _servers(p["rows"], b["pxname"])
            up = sum(1 for r in servers if state_word(str(r.get("status", ""))) == "UP")
            names = ", ".join(f'{e(r["svname"])}{" <small>(backup)</small>" if r.get("bck") else ""} '
                              f'{badge(str(r.get("status") or "?"), state_word(str(r.get("status", ""))))}'
                              for r in servers)
            items.append(f'<li data-backend="{e(b["pxname"])}">Backend <strong>{e(b["pxname"])}</strong> '
                         f'<small>({e(p["resource"])} on {e(p["node"])})</small>: '
                         f'<strong class="up-count">{up} of {len(servers)}</strong> servers UP'
                         f'{": " + names if names else ""}</li>')
    if not items:
        return '<p class="note">No resource is configured in this cluster.</p>'
    return f'<ul class="glance">{"".join(items)}</ul>'


def header(snap: dict[str, Any]) -> str:
    dc = snap.get("dc")
    quorum = snap.get("quorum")
    q = badge("quorum", "online") if quorum else badge("NO quorum", "failed") if quorum is False else badge("unknown")
    drops = snap["transport"]["drops"]
    dropped = sum(v for k, v in drops.items() if k != "duplicate")
    drop_text = ", ".join(f"{e(k.replace('_', ' '))} {v}" for k, v in sorted(drops.items()) if v)
    late = snap["transport"]["late_heartbeats"]
    items = [
        ("Cluster", f'<strong>{e(snap["cluster"])}</strong>'),
        ("Designated coordinator", f'<strong id="dc-name">{e(dc)}</strong>' if dc else badge("NONE", "failed")),
        ("Quorum", q),
        ("Nodes online", f'{sum(1 for n in snap["nodes"] if n["online"])} of {len(snap["nodes"])}'),
        ("Dropped packets", (badge(str(dropped), "warn") if dropped else "0")
         + (f' <small>({drop_text})</small>' if drop_text else "")),
        ("Late heartbeats", badge(str(late), "warn") if late else "0"),
        ("CIB version", e(snap["cib_version"])),
        ("Answered by", f'{e(snap["node"])} <small>at {clock(snap.get("updated"))}</small>'),
    ]
    dl = "".join(f'<div><dt>{k}</dt><dd>{v}</dd></div>' for k, v in items)
    state = f'<p class="sentence">{e(snap.get("state", ""))}</p>' if snap.get("state") else ""
    return f'<dl class="facts">{dl}</dl>{state}'


def nodes(snap: dict[str, Any], viewer: Viewer) -> str:
    rows = []
    for n in snap["nodes"]:
        dc = ' <span class="mark" title="designated coordinator">DC</span>' if n["dc"] else ""
        me = ' <small>(this node)</small>' if n.get("me") else ""
        gap = n.get("gap_ms")
        gap_text = "this node" if n.get("me") else "—" if gap is None or not n["online"] else f"{gap} ms"
        action = ""
        if viewer.admin:
            if n["state"] == "standby":
                action = _form(viewer, "online", "Online", {"node": n["name"]})
            elif n["online"]:
                action = _form(viewer, "standby", "Standby", {"node": n["name"]})
        rows.append(f'<tr data-node="{e(n["name"])}" data-state="{e(n["state"])}">'
                    f'<th scope="row">{e(n["name"])}{dc}{me}</th><td>{badge(n["state"])}</td>'
                    f'<td>{e(n.get("pingd") if n.get("pingd") is not None else "—")}</td>'
                    f'<td>{gap_text}</td>' + (f'<td class="actions">{action}</td>' if viewer.admin else "") + '</tr>')
    head = ["Node", "State", "Connectivity", "Last heartbeat"] + (["Actions"] if viewer.admin else [])
    return _table("Nodes", head, rows, "nodes", hide_caption=True)


def _last_op_text(op: dict[str, Any] | None) -> str:
    if op is None:
        return "—"
    name = "probe" if op["op"] == "monitor" and op["interval_ms"] == 0 else op["op"]
    result = "ok" if op["ok"] else f"rc={op['rc']}"
    return (f'{e(name)} on {e(op["node"])} {badge(result, "online" if op["ok"] else "failed")} '
            f'<small>{op["exec_ms"]} ms at {clock(op["time"])}</small>')


def resources(snap: dict[str, Any], viewer: Viewer) -> str:
    node_names = [n["name"] for n in snap["nodes"]]
    runtime = {c["resource"] for c in snap.get("locations", []) if c["runtime"]}
    rows = []
    for top in snap["resources"]:
        where = top["node"] or ", ".join(top.get("nodes") or []) or "—"
        kind = top["kind"] if top["kind"] in ("group", "clone") else top["members"][0]["agent"]
        action = ""
        if viewer.admin:
            options = "".join(f'<option value="{e(n)}">{e(n)}</option>' for n in node_names if n != top["node"])
            rid = top["id"]
            extra = (f'<label>to <select name="node" aria-label="target node of {e(rid)}">{options}</select></label>'
                     f'<label>for <input name="lifetime" size="7" placeholder="PT10M" '
                     f'aria-label="lifetime of the migration of {e(rid)} (blank: until unmigrated)"></label>')
            action = _form(viewer, "migrate", "Migrate", {"resource": rid}, extra, "migrate")
            if rid in runtime:
                action += _form(viewer, "unmigrate", "Unmigrate", {"resource": rid})
            action += _form(viewer, "cleanup", "Cleanup", {"resource": rid})
        rows.append(f'<tr class="top" data-resource="{e(top["id"])}" data-node="{e(top["node"] or "")}">'
                    f'<th scope="row">{e(top["id"])}</th><td>{e(kind)}</td><td>{badge(top["state"])}</td>'
                    f'<td class="where">{e(where)}</td><td colspan="2"></td>'
                    + (f'<td class="actions" rowspan="{len(top["members"]) + 1}">{action}</td>' if viewer.admin
                       else "") + '</tr>')
        for m in top["members"]:
            fails = m.get("fail_count", 0)
            fail_text = badge(str(fails), "failed") if fails else "0"
            rows.append(f'<tr class="member" data-resource="{e(m["id"])}"><th scope="row">↳ {e(m["id"])}</th>'
                        f'<td><code>{e(m["agent"])}</code></td><td>{badge(m["state"])}</td>'
                        f'<td>{e(", ".join(m["nodes"]) or "—")}</td><td>{_last_op_text(m.get("last_op"))}</td>'
                        f'<td>{fail_text}</td></tr>')
    head = ["Resource", "Type", "State", "Runs on", "Last operation", "Fail count"] + \
        (["Actions"] if viewer.admin else [])
    out = _table("Resources and groups", head, rows, "resources")
    if snap.get("failed_actions"):
        frows = [f'<tr><th scope="row">{e(f["resource"])}</th><td>{e(f["op"])}</td><td>{e(f["node"])}</td>'
                 f'<td>{badge(f["rc_text"], "failed")} <small>rc={f["rc"]}</small></td><td>{e(f["reason"])}</td>'
                 f'<td>{clock(f["time"])}</td></tr>' for f in snap["failed_actions"]]
        out += _table("Failed actions", ["Resource", "Operation", "Node", "Result", "Reason", "At"], frows)
    return out


def constraints(snap: dict[str, Any]) -> str:
    rows = []
    for c in snap.get("locations", []):
        life = "until removed" if c["expires"] is None else f'{duration(c["remaining_s"])} left'
        origin = "migration (runtime)" if c["runtime"] else "configuration"
        rows.append(f'<tr data-constraint="{e(c["id"])}"><th scope="row"><code>{e(c["id"])}</code></th>'
                    f'<td>{e(c["resource"])}</td><td>{e(c["node"])}</td><td>{e(c["score"])}</td>'
                    f'<td>{e(origin)}</td><td class="lifetime">{e(life)}</td></tr>')
    return _table("Location constraints in force", ["Constraint", "Resource", "Node", "Score", "From", "Lifetime"],
                  rows, "constraints")


def _server_row(row: dict[str, Any], viewer: Viewer, resource: str) -> str:
    status = str(row.get("status", ""))
    state = state_word(status)
    check = row.get("check_status")
    check_text = f'{e(check)} <small>{e(row.get("check_duration", ""))} ms</small>' if check else "—"
    cols = (f'<td>{badge(status or "?", state)}</td><td>{e(row.get("weight", "—"))}</td>'
            f'<td>{e(row.get("scur", 0))} / {e(row.get("smax", 0))}</td><td>{e(row.get("rate", 0))}</td>'
            f'<td>{check_text}</td>')
    action = ""
    if viewer.admin:
        hidden = {"resource": resource, "backend": str(row["pxname"]), "server": str(row["svname"])}
        action = "".join(_form(viewer, op, label, hidden) for op, label in SERVER_STATES)
        extra = (f'<input name="weight" type="number" min="0" max="256" size="4" value="{e(row.get("weight", ""))}" '
                 f'aria-label="new weight of {e(row["svname"])}">')
        action += _form(viewer, "weight", "Set weight", hidden, extra, "weight")
    return (f'<tr data-server="{e(row["pxname"])}/{e(row["svname"])}" data-state="{e(state)}">'
            f'<th scope="row">{e(row["svname"])}{" <small>(backup)</small>" if row.get("bck") else ""}</th>{cols}'
            + (f'<td class="actions">{action}</td>' if viewer.admin else "") + '</tr>')


def proxy(panel: list[dict[str, Any]], viewer: Viewer) -> str:
    """One block per balancier:proxy resource: a note, or its frontends and backends with their servers."""
    if not panel:
        return '<p class="note">No <code>balancier:proxy</code> resource is configured in this cluster.</p>'
    out = []
    for p in panel:
        title = f'<h3>{e(p["resource"])} <small>on {e(p["node"] or "no node")}</small></h3>'
        if p.get("error"):
            out.append(f'{title}<p class="note" role="status">{e(p["error"])}</p>')
            continue
        rows: list[dict[str, Any]] = p["rows"]
        fe = [f'<tr><th scope="row">{e(r["pxname"])}</th><td>{badge(str(r.get("status", "?")))}</td>'
              f'<td>{e(r.get("scur", 0))}</td><td>{e(r.get("req_rate", r.get("rate", 0)))}</td>'
              f'<td>{e(r.get("req_tot", r.get("stot", 0)))}</td></tr>' for r in rows if r["_type"] == "Frontend"]
        block = [title, _table("Frontends", ["Frontend", "State", "Sessions", "Requests/s", "Requests"], fe,
                               "frontends")]
        for b in (r for r in rows if r["_type"] == "Backend"):
            servers = [_server_row(r, viewer, p["resource"]) for r in rows
                       if r["_type"] == "Server" and r["pxname"] == b["pxname"]]
            head = ["Server", "State", "Weight", "Sessions (cur / max)", "Sessions/s", "Last check"] + \
                (["Actions"] if viewer.admin else [])
            caption = f'Backend {b["pxname"]}: {b.get("status", "?")}, {b.get("act", 0)} active, ' \
                      f'{b.get("bck", 0)} backup, response time {b.get("rtime", 0)} ms'
            block.append(_table(caption, head, servers, "servers"))
        out.append("".join(block))
    return "".join(out)


def timeline(items: list[dict[str, Any]]) -> str:
    if not items:
        return '<p class="note">No event yet.</p>'
    lis = "".join(f'<li class="ev ev-{e(i["kind"])}"><time>{clock(i["t"])}</time> {badge(i["kind"], "kind")} '
                  f'{e(i["sentence"])}</li>' for i in items)
    return f'<ol class="timeline">{lis}</ol>'


def sections(snap: dict[str, Any], panel: list[dict[str, Any]], events: list[dict[str, Any]],
             viewer: Viewer) -> dict[str, str]:
    return {"summary": summary(snap, panel, viewer), "header": header(snap), "nodes": nodes(snap, viewer), "resources": resources(snap, viewer),
            "constraints": constraints(snap), "proxy": proxy(panel, viewer), "timeline": timeline(events)}


# --------------------------------------------------------------------------- pages


def _doc(title: str, body: str, viewer: Viewer | None = None, script: bool = False) -> str:
    meta = f'<meta name="csrf-token" content="{e(viewer.csrf)}">' if viewer is not None else ""
    js = f'<script src="{STATIC}/dashboard.js" defer></script>' if script else ""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f'<title>{e(title)}</title>{meta}<link rel="icon" href="{STATIC}/favicon.svg">'
            f'<link rel="stylesheet" href="{STATIC}/dashboard.css">{js}'
            f'</head><body>{body}</body></html>')


def page(snap: dict[str, Any], panel: list[dict[str, Any]], events: list[dict[str, Any]], viewer: Viewer) -> str:
    s = sections(snap, panel, events, viewer)
    role = "administrator" if viewer.admin else "read-only"
    body = (
        f'<header class="top"><h1>balancier <span>{e(snap["cluster"])}</span></h1>'
        f'<p class="who">{e(viewer.user)} · {role} · <span id="live" role="status">static view</span></p></header>'
        '<main>'
        f'<section aria-labelledby="h-summary" class="card wide glance-card"><h2 id="h-summary">At a glance</h2>'
        f'<div id="sec-summary">{s["summary"]}</div></section>'
        f'<section aria-labelledby="h-cluster" class="card wide"><h2 id="h-cluster">Cluster</h2>'
        f'<div id="sec-header">{s["header"]}</div></section>'
        f'<section aria-labelledby="h-nodes" class="card"><h2 id="h-nodes">Nodes</h2>'
        f'<div id="sec-nodes">{s["nodes"]}</div></section>'
        f'<section aria-labelledby="h-charts" class="card"><h2 id="h-charts">Traffic</h2>'
        '<div id="charts"><p class="note">Live charts of requests per second and response time per backend '
        'need JavaScript; the tables below are complete without it.</p></div></section>'
        f'<section aria-labelledby="h-res" class="card wide"><h2 id="h-res">Resources</h2>'
        f'<div id="sec-resources">{s["resources"]}</div><div id="sec-constraints">{s["constraints"]}</div></section>'
        f'<section aria-labelledby="h-proxy" class="card wide"><h2 id="h-proxy">Proxy</h2>'
        f'<div id="sec-proxy">{s["proxy"]}</div></section>'
        f'<section aria-labelledby="h-tl" class="card wide"><h2 id="h-tl">Events</h2>'
        f'<div id="sec-timeline">{s["timeline"]}</div></section>'
        '</main>'
        '<dialog id="confirm" aria-labelledby="confirm-title"><form method="dialog">'
        '<h2 id="confirm-title">Confirm</h2><div id="confirm-body"></div>'
        '<p class="buttons"><button value="cancel" class="btn">Cancel</button>'
        '<button value="ok" id="confirm-ok" class="btn btn-primary">Confirm</button></p></form></dialog>'
        '<div id="toast" role="status" aria-live="polite"></div>'
    )
    return _doc(f'{snap["cluster"]} · balancier', body, viewer, script=True)


def plan_html(plan: dict[str, Any]) -> str:
    """The planned transition, as the confirmation shows it (dialog and no-JS page alike)."""
    if not plan.get("ok"):
        return f'<p class="error" role="alert">{e(plan.get("error", "refused"))}</p>'
    parts = [f'<p class="change"><strong>{e(plan["change"])}</strong></p>']
    if "command" in plan:
        parts.append(f'<p>Runtime API command for <code>{e(plan["socket"])}</code>: <code>{e(plan["command"])}</code>'
                     f'</p><p>Now: {e(plan.get("current", "?"))}</p>')
        return "".join(parts)
    if not plan.get("changed", True):
        parts.append('<p class="note">This changes nothing in the CIB.</p>')
    moves = "".join(f'<li><strong>{e(m["resource"])}</strong>: {e(m["from"] or "stopped")} → '
                    f'{e(m["to"] or "stopped")}</li>' for m in plan["moves"])
    parts.append(f'<h3>Placement</h3><ul class="moves">{moves or "<li>nothing moves</li>"}</ul>')
    acts = "".join(f'<li><code>{e(a)}</code></li>' for a in plan["actions"])
    parts.append(f'<h3>Actions, in order</h3><ol class="plan-actions">{acts or "<li>none</li>"}</ol>')
    reasons = "".join(f'<li>{e(r)}</li>' for r in plan["reasons"])
    parts.append(f'<details><summary>Why (policy engine, CIB {e(plan["cib_version"])})</summary>'
                 f'<ul>{reasons}</ul></details>')
    return "".join(parts)


def confirm_page(plan: dict[str, Any], fields: dict[str, str], viewer: Viewer) -> str:
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items()
                     if k != "csrf")
    ok = plan.get("ok")
    button = ('<button type="submit" class="btn btn-primary">Confirm</button>' if ok else "")
    body = (f'<main class="narrow"><section class="card"><h1>Confirm</h1>{plan_html(plan)}'
            f'<form method="post" action="/dashboard/do">{hidden}'
            f'<input type="hidden" name="csrf" value="{e(viewer.csrf)}">'
            f'<p class="buttons"><a class="btn" href="/dashboard">Cancel</a> {button}</p></form></section></main>')
    return _doc("Confirm · balancier", body)


def message_page(title: str, text: str, ok: bool) -> str:
    cls = "note" if ok else "error"
    body = (f'<main class="narrow"><section class="card"><h1>{e(title)}</h1><p class="{cls}">{e(text)}</p>'
            '<p><a class="btn" href="/dashboard">Back to the dashboard</a></p></section></main>')
    return _doc(f"{title} · balancier", body)
