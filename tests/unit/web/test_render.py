"""The dashboard's HTML (render.py): semantic tables, state words, actions only for the admin role, escaping,
the plan as the confirmation shows it; and the timeline's order (snapshot.timeline)."""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from balancier.web import render, snapshot
from balancier.web.dashboard import STATIC_DIR
from balancier.web.render import Viewer

ADMIN = Viewer("alice", "admin", "tok123")
READER = Viewer("bob", "read", "tok456")


def snap(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cluster": "esup", "node": "lb2", "dc": "lb1", "quorum": True, "cib_version": "0.4.9", "updated": 1e9,
        "state": "following DC lb1", "now": 1e9,
        "nodes": [{"name": "lb1", "state": "online", "online": True, "standby": False, "unclean": False, "dc": True,
                   "me": False, "pingd": "100", "gap_ms": 180},
                  {"name": "lb2", "state": "standby", "online": True, "standby": True, "unclean": False, "dc": False,
                   "me": True, "pingd": None, "gap_ms": 0}],
        "resources": [{"id": "web", "kind": "group", "target_role": "Started", "state": "started", "node": "lb1",
                       "members": [{"id": "vip", "agent": "balancier:vip", "state": "started", "node": "lb1",
                                    "nodes": ["lb1"], "failed": False, "managed": True, "fail_count": 2,
                                    "last_op": {"op": "start", "node": "lb1", "rc": 0, "ok": True, "exec_ms": 41,
                                                "time": 1e9, "interval_ms": 0}}]}],
        "failed_actions": [], "fail_counts": [],
        "locations": [{"id": "cli-prefer-web", "resource": "web", "node": "lb1", "score": "+INFINITY",
                       "runtime": True, "expires": 1e9 + 290, "remaining_s": 290}],
        "transport": {"drops": {"bad_signature": 3, "duplicate": 40, "replay": 0}, "late_heartbeats": 1,
                      "retransmissions": 0},
    }
    doc.update(over)
    return doc


PANEL = [{"resource": "lbproxy", "node": "lb1", "socket": "/run/s", "rows": [
    {"_type": "Frontend", "pxname": "www", "svname": "FRONTEND", "status": "OPEN", "scur": 1, "req_rate": 4},
    {"_type": "Server", "pxname": "esup", "svname": "ents2", "status": "DRAIN", "weight": 128, "scur": 0,
     "smax": 3, "rate": 0, "check_status": "L7OK", "check_duration": 2},
    {"_type": "Backend", "pxname": "esup", "svname": "BACKEND", "status": "UP", "act": 1, "bck": 0, "rtime": 7}]}]


def test_tables_are_semantic_and_states_are_words() -> None:
    s = render.sections(snap(), PANEL, [], READER)
    assert '<strong id="dc-name">lb1</strong>' in s["header"]
    assert "bad signature 3" in s["header"] and ">3<" in s["header"]  # duplicates (second medium) do not count
    nodes = s["nodes"]
    assert '<th scope="col">Node</th>' in nodes and '<caption class="sr">Nodes</caption>' in nodes
    assert re.search(r'data-node="lb1" data-state="online">.*?DC.*?st-online">online<.*?100.*?180 ms', nodes)
    assert 'st-standby">standby<' in nodes and "this node" in nodes
    res = s["resources"]
    assert 'data-resource="web" data-node="lb1"' in res and "start on lb1" in res and "41 ms" in res
    assert 'st-failed">2<' in res  # a fail count stands out, as a number
    assert "4 min 50 s left" in s["constraints"] and "migration (runtime)" in s["constraints"]
    proxy = s["proxy"]
    assert 'data-server="esup/ents2" data-state="DRAIN"' in proxy and 'st-drain">DRAIN<' in proxy
    assert "L7OK" in proxy and "response time 7 ms" in proxy


def test_read_only_viewer_gets_no_action_and_admin_gets_all() -> None:
    ro = "".join(render.sections(snap(), PANEL, [], READER).values())
    assert "<form" not in ro and "<button" not in ro and "Actions" not in ro
    rw = render.sections(snap(), PANEL, [], ADMIN)
    ops = re.findall(r'data-op="([a-z]+)"', "".join(rw.values()))
    assert sorted(set(ops)) == ["cleanup", "drain", "maint", "migrate", "online", "ready", "standby", "unmigrate",
                                "weight"]
    assert 'name="csrf" value="tok123"' in rw["nodes"]
    # standby node offers online, the other one standby
    assert re.search(r'data-node="lb2".*?value="online"', rw["nodes"])
    assert re.search(r'data-node="lb1".*?value="standby"', rw["nodes"])
    # a migrate offers the nodes where it does not run
    assert '<option value="lb2">' in rw["resources"] and '<option value="lb1">' not in rw["resources"]


def test_no_unmigrate_without_a_runtime_constraint() -> None:
    rw = render.sections(snap(locations=[]), [], [], ADMIN)
    assert 'data-op="unmigrate"' not in rw["resources"] and 'data-op="migrate"' in rw["resources"]


def test_values_from_the_cluster_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    s = render.sections(snap(cluster=evil, state=evil), [{"resource": "p", "node": None, "error": evil}],
                        [{"t": 1.0, "kind": "admin", "sentence": evil}], ADMIN)
    html = "".join(s.values())
    assert "<script>" not in html and "&lt;script&gt;" in html
    page = render.page(snap(cluster=evil), [], [], ADMIN)
    assert "<script>alert" not in page


def test_page_without_javascript_and_its_assets() -> None:
    page = render.page(snap(), PANEL, [], ADMIN)
    assert page.startswith("<!doctype html>") and '<meta name="viewport"' in page
    assert '<meta name="csrf-token" content="tok123">' in page
    assert 'src="/dashboard/static/dashboard.js" defer' in page and "http" not in page.split("<body>")[0]
    for sid in ("sec-header", "sec-nodes", "sec-resources", "sec-constraints", "sec-proxy", "sec-timeline"):
        assert f'id="{sid}"' in page
    assert "need JavaScript" in page  # the charts say what they need; the tables do not


def test_summary_says_where_it_runs_and_which_servers_are_up() -> None:
    panel = [{**PANEL[0], "rows": PANEL[0]["rows"] + [
        {"_type": "Server", "pxname": "esup", "svname": "ents3", "status": "UP", "weight": 256, "bck": 0},
        {"_type": "Server", "pxname": "esup", "svname": "maint-page", "status": "no check", "bck": 1},
        {"_type": "Server", "pxname": "esup", "svname": "ents1", "status": "DOWN 1/2", "bck": 0}]}]
    html = render.summary(snap(), panel, READER)
    assert re.search(r'<strong>web</strong> runs on <strong class="where">lb1</strong> <span class="st st-started">'
                     r'started</span>', html)
    # ents2 is DRAIN, ents1 DOWN: 2 of 4 are UP (an unchecked server counts as UP, as in HAProxy), each named
    assert '<strong class="up-count">2 of 4</strong> servers UP' in html
    assert 'ents2 <span class="st st-drain">DRAIN</span>' in html and 'st-down">DOWN 1/2<' in html
    assert "maint-page <small>(backup)</small>" in html
    assert "move it" not in html and "move it with Migrate" in render.summary(snap(), panel, ADMIN)
    stopped = snap(resources=[{**snap()["resources"][0], "node": None, "nodes": [], "state": "stopped"}])
    assert "runs nowhere" in render.summary(stopped, [], ADMIN)
    # the page opens with it, and the event stream refreshes it like every section
    assert render.page(snap(), panel, [], READER).index('id="sec-summary"') < \
        render.page(snap(), panel, [], READER).index('id="sec-header"')
    assert "summary" in render.sections(snap(), panel, [], READER)


def test_static_assets_fetch_nothing_from_elsewhere() -> None:
    """No URL to another site in the shipped files (the SVG namespace is a name, never fetched)."""
    found = []
    for f in sorted(STATIC_DIR.iterdir()):
        text = f.read_text()
        found += [(f.name, u) for u in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"')]*", text)
                  if u not in ("http://www.w3.org/2000/svg",)]
        assert "@import" not in text and "url(http" not in text
    assert found == []
    assert {f.name for f in STATIC_DIR.iterdir()} >= {"dashboard.css", "dashboard.js", "favicon.svg"}
    page = render.page(snap(), PANEL, [], ADMIN)
    assert re.findall(r'(?:src|href)="([^"#]+)"', page) == ["/dashboard/static/favicon.svg",
                                                              "/dashboard/static/dashboard.css",
                                                              "/dashboard/static/dashboard.js"]


def test_proxy_panel_notes() -> None:
    assert "No <code>balancier:proxy</code> resource" in render.proxy([], ADMIN)
    html = render.proxy([{"resource": "lbproxy", "node": "lb1", "error": "The stats socket of lbproxy is not "
                                                                          "configured"}], ADMIN)
    assert "not configured" in html and "<table" not in html


def test_plan_html() -> None:
    plan = {"ok": True, "change": "migrate web to lb2", "cib_version": "0.1.2", "changed": True,
            "moves": [{"resource": "web", "from": "lb1", "to": "lb2"}], "reasons": ["moving web to lb2: pref"],
            "actions": ["stop vip on lb1", "start vip on lb2"]}
    html = render.plan_html(plan)
    assert "<strong>web</strong>: lb1 → lb2" in html
    assert html.index("stop vip on lb1") < html.index("start vip on lb2")
    assert "moving web to lb2: pref" in html
    assert "nothing moves" in render.plan_html({**plan, "moves": [], "changed": False})
    assert 'role="alert">no such node' in render.plan_html({"ok": False, "error": "no such node"})
    server = render.plan_html({"ok": True, "change": "set server esup/ents2 to DRAIN", "command": "set server "
                               "esup/ents2 state drain", "socket": "/run/s", "current": "UP, weight 1"})
    assert "set server esup/ents2 state drain" in server and "UP, weight 1" in server


def test_confirm_page_reposts_the_fields_with_the_token() -> None:
    html = render.confirm_page({"ok": True, "change": "standby lb1", "cib_version": "0.1.2", "moves": [],
                                "reasons": [], "actions": []},
                               {"op": "standby", "node": "lb1", "csrf": "old"}, ADMIN)
    assert 'action="/dashboard/do"' in html and 'name="node" value="lb1"' in html
    assert 'name="csrf" value="tok123"' in html and 'value="old"' not in html
    refused = render.confirm_page({"ok": False, "error": "no"}, {"op": "x"}, ADMIN)
    assert "Confirm</button>" not in refused


class FakeDaemon:
    """The two attributes snapshot.timeline reads."""

    def __init__(self) -> None:
        self.events = deque([{"t": 10.0, "kind": "up", "node": "lb2", "sentence": "lb2 is up"},
                             {"t": 30.0, "kind": "election", "node": "lb1", "sentence": "lb1 elected DC"}])
        self.last_transition = {"at": 20.0, "reasons": ["starting web on lb1"]}


def test_timeline_newest_first_with_transition_and_proxy_events() -> None:
    items = snapshot.timeline(FakeDaemon(), [{"t": 25.0, "kind": "server", "sentence": "server esup/a is DOWN"}])
    assert [i["sentence"] for i in items] == ["lb1 elected DC", "server esup/a is DOWN", "starting web on lb1",
                                              "lb2 is up"]
    assert [i["kind"] for i in items] == ["election", "server", "policy", "up"]


def test_transition_log_keeps_why_things_moved_after_the_next_transition() -> None:
    log = snapshot.TransitionLog()
    d = FakeDaemon()
    d.last_transition = {"at": 40.0, "reasons": ["starting web on lb2: lb1 is dead"]}
    snapshot.timeline(d, [], log)
    log.observe({"at": 40.0, "reasons": ["starting web on lb2: lb1 is dead"]})  # the same transition: once
    log.observe({"at": 41.0, "reasons": ["keeping web on lb2: no other node can run it"]})
    log.observe({"at": 42.0, "reasons": ["keeping web on lb2: no other node can run it"]})  # unchanged: not again
    log.observe({"at": 43.0, "error": "KeyError: 'x'"})
    log.observe(None)
    d.last_transition = {"at": 43.0, "error": "KeyError: 'x'"}
    items = snapshot.timeline(d, [], log)
    assert [i["sentence"] for i in items if i["kind"] == "policy"] == [
        "the policy engine failed: KeyError: 'x'", "keeping web on lb2: no other node can run it",
        "starting web on lb2: lb1 is dead"]
    # without a log, the timeline shows the last transition only (a one-off view)
    assert [i["sentence"] for i in snapshot.timeline(d, []) if i["kind"] == "policy"] == [
        "the policy engine failed: KeyError: 'x'"]
