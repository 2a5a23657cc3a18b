"""The admin interfaces of a real cluster: `balancier status`, the HTTP API's auth, `check-cluster`.

Daemons and resources as in cluster_harness.py. Asserted: `balancier status` matches the golden
file once times and the CIB version are masked; `--json` follows the documented schema; the admin
socket is mode 0600; the HTTP API refuses a change without credentials (401) or with a read token
(403), accepts reads with a read token and changes with an admin token (bearer or basic);
`check-cluster` exits 0 with the documented line, 1 with a node offline, 2 on a 3-node cluster
with two nodes down (no quorum), 3 when the daemon cannot be reached.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_harness import ADMIN_TOKEN, READ_TOKEN, AdminCluster

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[AdminCluster]:
    c = AdminCluster(tmp_path, ["lb1", "lb2"])
    try:
        for n in c.names:
            c.start(n)
        c.wait("web started on lb1 and every transition done", lambda: c.resource("web").get("node") == "lb1"
               and (c.status("lb2").get("transition") or {}).get("actions") == []
               and c.status("lb2").get("cib_version") == c.status("lb1").get("cib_version"), 20)
        yield c
    finally:
        c.stop_all()


def _mask(text: str) -> str:
    text = re.sub(r"^Last updated: .*$", "Last updated: <time>", text, flags=re.M)
    return re.sub(r"^CIB version: \d+\.\d+\.\d+$", "CIB version: <version>", text, flags=re.M)


def _http(url: str, method: str = "GET", auth: str | None = None, body: dict[str, Any] | None = None
          ) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_status_table_matches_golden_and_json_schema(cluster: AdminCluster) -> None:
    c = cluster
    r = c.cli("status", "-s", c.socket("lb2"))
    assert r.returncode == 0, r.stderr
    assert _mask(r.stdout) == (GOLDEN / "status_two_nodes.txt").read_text()
    # the same through the HTTP API with a read token
    r = c.cli("status", "--url", c.url("lb1"), "--token", READ_TOKEN)
    assert r.returncode == 0, r.stderr
    assert _mask(r.stdout) == (GOLDEN / "status_two_nodes.txt").read_text().replace("answered by lb2",
                                                                                     "answered by lb1")

    doc = json.loads(c.cli("status", "--json", "-s", c.socket("lb1")).stdout)
    assert doc["format"] == "balancier-status/1"
    assert {k: type(v).__name__ for k, v in doc.items() if k not in ("transition",)} == {
        "format": "str", "cluster": "str", "node": "str", "dc": "str", "quorum": "bool", "cib_version": "str",
        "updated": "float", "nodes": "list", "resources": "list", "failed_actions": "list",
        "fail_counts": "list", "constraints": "list", "members": "list", "monitors": "list", "state": "str"}
    assert doc["dc"] == "lb1" and doc["quorum"] is True and sorted(doc["members"]) == ["lb1", "lb2"]
    assert doc["nodes"] == [
        {"name": "lb1", "state": "online", "online": True, "standby": False, "unclean": False, "dc": True},
        {"name": "lb2", "state": "online", "online": True, "standby": False, "unclean": False, "dc": False}]
    web = doc["resources"][0]
    assert (web["id"], web["kind"], web["state"], web["node"], web["target_role"]) == \
        ("web", "group", "started", "lb1", "Started")
    assert [(m["id"], m["agent"], m["state"], m["node"], m["failed"], m["managed"]) for m in web["members"]] == [
        ("ip", "ocf:test:Flag", "started", "lb1", False, True), ("app", "ocf:test:Flag", "started", "lb1", False, True)]
    assert doc["monitors"] == [{"resource": "app", "interval_ms": 1000}]
    assert doc["transition"]["reasons"] == ["keeping web on lb1: preference 200 beats 0 on lb2"]

    # --watch refreshes (bounded here by --iterations)
    r = c.cli("status", "--watch", "--interval", "0.2", "--iterations", "2", "-s", c.socket("lb1"))
    assert r.returncode == 0 and r.stdout.count("Current DC: lb1") == 2


def test_api_authentication_and_roles(cluster: AdminCluster) -> None:
    c = cluster
    mode = stat.S_IMODE(Path(c.socket("lb1")).stat().st_mode)
    assert mode == 0o600
    base = c.url("lb2")
    assert _http(f"{base}/api/status")[0] == 401
    status, body = _http(f"{base}/api/resource/web/migrate", "POST", body={"node": "lb2"})
    assert (status, body["error"]) == (401, "authentication required")
    assert _http(f"{base}/api/resource/web/migrate", "POST", "Bearer wrong-token-123", {"node": "lb2"})[0] == 401
    status, body = _http(f"{base}/api/resource/web/migrate", "POST", f"Bearer {READ_TOKEN}", {"node": "lb2"})
    assert status == 403 and "read role" in body["error"]
    status, body = _http(f"{base}/api/status", auth=f"Bearer {READ_TOKEN}")
    assert status == 200 and body["resources"][0]["node"] == "lb1"
    # nothing changed by the refused requests
    assert c.status()["constraints"] == []
    # an admin (HTTP basic user:token) on the follower: forwarded to the DC, answered with the transition
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()
    status, body = _http(f"{base}/api/node/lb1/standby", "POST", basic)
    assert status == 200, body
    assert body["dc"] == "lb1" and body["user"] == "admin@lb2" and body["change"] == "standby lb1"
    assert "moving web to lb2: lb1 is in standby" in body["transition"]["reasons"]
    assert body["transition"]["actions"][:2] == ["stop app on lb1", "stop ip on lb1"]
    log = (c.root / "lb1.log").read_text()
    assert re.search(r'component=admin msg="standby lb1 by admin@lb2: CIB \S+ -> \S+" user=admin@lb2', log)
    # a bad request gets a sentence and the right status
    status, body = _http(f"{base}/api/resource/nope/migrate", "POST", f"Bearer {ADMIN_TOKEN}", {"node": "lb1"})
    assert (status, body["error"]) == (404, "no such resource 'nope'")
    r = c.cli("resource", "migrate", "web", "lb9", "--url", base, "--token", ADMIN_TOKEN)
    assert r.returncode == 1 and "no such node 'lb9'" in r.stderr
    r = c.cli("resource", "migrate", "web", "lb2", "--lifetime", "PT1X", "-s", c.socket("lb1"))
    assert r.returncode == 1 and "ISO-8601" in r.stderr
    r = c.cli("cib", "set", "stickiness", "100", "--url", base, "--token", READ_TOKEN)
    assert r.returncode == 1 and "refused (403)" in r.stderr
    r = c.cli("cib", "set", "stickiness", "100", "--url", base, "--token", ADMIN_TOKEN)
    assert r.returncode == 0, r.stderr
    c.wait("the option replicated to lb2", lambda: json.loads(c.cli("cib", "show", "-s", c.socket("lb2")).stdout)
           ["configuration"]["options"]["stickiness"] == 100, 5)


def test_check_cluster_ok_warning_unknown(cluster: AdminCluster) -> None:
    c = cluster
    r = c.cli("check-cluster", "-s", c.socket("lb1"))
    assert (r.returncode, r.stdout) == (0, "CLUSTER OK: 2 nodes online, 1 resource group started on lb1 | "
                                           "nodes_online=2;;;0;2 failed_actions=0;;1 failcount=0;;1 "
                                           "resources_started=1;;;0;1\n")
    assert c.stop("lb2") == 0
    c.wait("lb2 offline", lambda: not c.status("lb1")["nodes"][1]["online"], 10)
    r = c.cli("check-cluster", "--url", c.url("lb1"), "--token", READ_TOKEN)
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("CLUSTER WARNING: 1 node offline: lb2, 1 node online, 1 resource group started on lb1 |")
    r = c.cli("check-cluster", "--expect-nodes", "1", "-s", c.socket("lb1"))
    assert r.returncode == 0 and r.stdout.startswith("CLUSTER OK: 1 node online")
    # unreachable: a socket nobody listens on, a port nobody listens on
    r = c.cli("check-cluster", "-s", c.socket("lb2"))
    assert r.returncode == 3 and r.stdout.startswith("CLUSTER UNKNOWN: cannot reach the cluster daemon at ")
    assert len(r.stdout.splitlines()) == 1
    r = c.cli("check-cluster", "--url", c.url("lb2"), "--token", READ_TOKEN, "--timeout", "2")
    assert r.returncode == 3 and "Connection refused" in r.stdout
    # a wrong token is not an answer about the cluster either
    r = c.cli("check-cluster", "--url", c.url("lb1"), "--token", "nope-nope-nope")
    assert r.returncode == 3 and "401" in r.stdout


def test_check_cluster_critical_without_quorum(tmp_path: Path) -> None:
    c = AdminCluster(tmp_path, ["lb1", "lb2", "lb3"])
    try:
        c.start("lb1")
        c.wait("lb1 answering", lambda: c.status("lb1"), 10)
        r = c.wait("a critical check", lambda: (lambda p: p if p.returncode == 2 else None)(
            c.cli("check-cluster", "-s", c.socket("lb1"))), 10)
        assert r.stdout.startswith("CLUSTER CRITICAL: ")
        assert "WITHOUT quorum" in r.stdout or "no DC" in r.stdout
        assert "web stopped" in r.stdout and "2 nodes offline: lb2 lb3, 1 node online" in r.stdout
        assert c.running() == set()  # no quorum: nothing starts
    finally:
        c.stop_all()
