"""The DC runs its transitions on real nodes: actions out over the reliable channel, results back.

Two `balancier cluster run` daemons on loopback run a group `web` (ip, then app) of real OCF
scripts (ocf:test:Flag, see cluster_harness.py). Asserted from what really runs (the agent's state
files and its log of starts/stops) and from `balancier status --json`: the group starts on the
preferred node after both nodes were probed; migrate stops it on the old node before starting it on
the new one and writes cli-prefer with its lifetime; unmigrate moves it back; standby moves it and
online brings it back; a monitor failure (the test deletes the state file) restarts it in place and
the fail count increments; cleanup clears the fail count; SIGTERM on the node holding the group
makes the DC move it first; ban moves it off its node until unmigrate; stop and start set the target
role (stopped everywhere, not an alert for check-cluster; started again where it prefers).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_harness import AdminCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[AdminCluster]:
    c = AdminCluster(tmp_path, ["lb1", "lb2"])
    try:
        for n in c.names:
            c.start(n)
        c.wait("web started on lb1", lambda: c.resource("web").get("node") == "lb1" and
               c.resource("web").get("state") == "started", 20)
        yield c
    finally:
        c.stop_all()


def _on(c: AdminCluster, node: str) -> bool:
    top = c.resource("web")
    return top.get("state") == "started" and top.get("node") == node and \
        c.running() == {(node, "ip"), (node, "app")}


def _stops_before_starts(c: AdminCluster, since: float, old: str, new: str) -> None:
    acts = [a for a in c.actions() if a[0] >= since]
    stops = [a for a in acts if a[1] == old and a[3] == "stop"]
    starts = [a for a in acts if a[1] == new and a[3] == "start"]
    assert {a[2] for a in stops} == {"ip", "app"}, acts
    assert {a[2] for a in starts} == {"ip", "app"}, acts
    # group order: app stops before ip; ip starts before app; every start after the last stop
    assert [a[2] for a in stops] == ["app", "ip"]
    assert [a[2] for a in starts] == ["ip", "app"]
    assert max(a[0] for a in stops) < min(a[0] for a in starts)


def test_starts_on_preferred_node_after_probes(cluster: AdminCluster) -> None:
    c = cluster
    assert c.running() == {("lb1", "ip"), ("lb1", "app")}
    acts = c.actions()
    assert [(a[1], a[2], a[3]) for a in acts] == [("lb1", "ip", "start"), ("lb1", "app", "start")]
    log = (c.root / "lb1.log").read_text()
    assert "probing ip, app on lb2: state unknown there" in log
    doc = c.status("lb2")  # the follower's replica says the same
    assert doc["resources"][0]["node"] == "lb1"
    assert [m["interval_ms"] for m in c.status("lb1")["monitors"]] == [1000]


def test_migrate_stops_before_starting_then_unmigrate_moves_back(cluster: AdminCluster) -> None:
    c = cluster
    t0 = time.time()
    # asked of the follower: it forwards the change to the DC
    r = c.cli("resource", "migrate", "web", "lb2", "--lifetime", "PT1H", "-s", c.socket("lb2"))
    assert r.returncode == 0, r.stderr
    assert "moving web to lb2" in r.stdout
    assert "stop app on lb1" in r.stdout and "start ip on lb2" in r.stdout
    c.wait("web on lb2", lambda: _on(c, "lb2"))
    _stops_before_starts(c, t0, "lb1", "lb2")
    cons = c.status()["constraints"]
    assert [(x["id"], x["node"]) for x in cons] == [("cli-prefer-web", "lb2")]
    assert 3500 < cons[0]["expires"] - t0 < 3700
    cib = c.cli("cib", "show", "-s", c.socket("lb1"))
    assert '"cli-prefer-web"' in cib.stdout

    t1 = time.time()
    r = c.cli("resource", "unmigrate", "web", "-s", c.socket("lb1"))
    assert r.returncode == 0, r.stderr
    c.wait("web back on lb1", lambda: _on(c, "lb1"))
    _stops_before_starts(c, t1, "lb2", "lb1")
    assert c.status()["constraints"] == []


def test_standby_moves_the_group_and_online_brings_it_back(cluster: AdminCluster) -> None:
    c = cluster
    r = c.cli("node", "standby", "lb1", "-s", c.socket("lb1"))
    assert r.returncode == 0, r.stderr
    c.wait("web on lb2", lambda: _on(c, "lb2"))
    nodes = {n["name"]: n["state"] for n in c.status()["nodes"]}
    assert nodes == {"lb1": "standby", "lb2": "online"}
    table = c.cli("status", "-s", c.socket("lb2")).stdout
    assert "Node lb1: standby" in table
    r = c.cli("node", "online", "lb1", "-s", c.socket("lb2"))
    assert r.returncode == 0, r.stderr
    c.wait("web back on lb1", lambda: _on(c, "lb1"))


def test_monitor_failure_restarts_in_place_and_cleanup_clears_the_fail_count(cluster: AdminCluster) -> None:
    c = cluster
    starts_before = len([a for a in c.actions() if a[3] == "start"])
    (c.flags / "lb1-app").unlink()  # the "process" dies behind the cluster's back
    c.wait("a fail count on app", lambda: c.status()["fail_counts"], 10)
    c.wait("app restarted on lb1", lambda: _on(c, "lb1"), 10)
    doc = c.status()
    assert doc["fail_counts"][0]["resource"] == "app" and doc["fail_counts"][0]["node"] == "lb1"
    assert doc["fail_counts"][0]["fail_count"] == 1
    failed = doc["failed_actions"]
    assert [(f["resource"], f["op"], f["interval_ms"], f["rc"], f["rc_text"]) for f in failed] == \
        [("app", "monitor", 1000, 7, "not running")]
    assert "no state file" in failed[0]["reason"]
    # restarted in place: app (and only app: ip is before it in the group) started again on lb1
    new_starts = [a for a in c.actions() if a[3] == "start"][starts_before:]
    assert [(a[1], a[2]) for a in new_starts] == [("lb1", "app")]
    table = c.cli("status", "-s", c.socket("lb2")).stdout
    assert "Failed actions:" in table and "app_monitor_1000 (node=lb1" in table and "rc=7" in table
    assert "fail-count=1" in table

    r = c.cli("resource", "cleanup", "app", "-s", c.socket("lb2"))
    assert r.returncode == 0, r.stderr
    c.wait("fail count cleared", lambda: (lambda d: d.get("nodes") and not d["fail_counts"]
                                          and not d["failed_actions"])(c.status()), 10)
    c.wait("app re-probed and still on lb1", lambda: _on(c, "lb1"), 10)


def test_sigterm_on_the_holder_moves_the_group_first(cluster: AdminCluster) -> None:
    c = cluster
    t0 = time.time()
    code = c.stop("lb1", signal.SIGTERM, timeout=20)
    assert code == 0
    assert c.running() == {("lb2", "ip"), ("lb2", "app")}
    _stops_before_starts(c, t0, "lb1", "lb2")
    c.wait("lb2 reports web on lb2", lambda: c.resource("web", "lb2").get("node") == "lb2", 10)


def test_ban_moves_away_then_stop_and_start_follow_the_target_role(cluster: AdminCluster) -> None:
    c = cluster
    t0 = time.time()
    r = c.cli("resource", "ban", "web", "-s", c.socket("lb2"))  # no node: the node it runs on
    assert r.returncode == 0, r.stderr
    c.wait("web on lb2", lambda: _on(c, "lb2"))
    _stops_before_starts(c, t0, "lb1", "lb2")
    assert [(x["id"], x["node"]) for x in c.status()["constraints"]] == [("cli-ban-web-on-lb1", "lb1")]
    r = c.cli("resource", "unmigrate", "web", "-s", c.socket("lb1"))  # clears the ban too
    assert r.returncode == 0, r.stderr
    c.wait("web back on lb1", lambda: _on(c, "lb1"))
    assert c.status()["constraints"] == []

    r = c.cli("resource", "stop", "web", "-s", c.socket("lb1"))
    assert r.returncode == 0, r.stderr
    assert "stop app on lb1" in r.stdout and "stop ip on lb1" in r.stdout
    c.wait("web stopped everywhere", lambda: c.running() == set() and c.resource("web").get("state") == "disabled")
    assert c.resource("web")["target_role"] == "Stopped"
    time.sleep(1.5)  # a stopped resource stays stopped (no monitor failure, no restart)
    assert c.running() == set() and not c.status()["failed_actions"]
    check = c.cli("check-cluster", "-s", c.socket("lb2"))  # stopped on purpose is not an alert
    assert check.returncode == 0, check.stdout
    r = c.cli("resource", "start", "web", "-s", c.socket("lb2"))
    assert r.returncode == 0, r.stderr
    c.wait("web started again on lb1", lambda: _on(c, "lb1"))
    assert c.resource("web")["target_role"] == "Started"
