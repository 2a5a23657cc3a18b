"""Running a transition (graph.py): readiness by inputs, completion, aborts, lost actions; and the API's auth rules."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from balancier.cluster.api import AuthFileError, Credential, authenticate, load_auth_file
from balancier.cluster.graph import LOST_GRACE_S, Graph
from balancier.cluster.model import OpResult
from balancier.cluster.policy import Action, Transition

V = (0, 1, 5)


def move() -> Graph:
    """stop app@lb1 -> stop ip@lb1 -> start ip@lb2 -> start app@lb2 -> monitor app@lb2 (Pacemaker's group move)."""
    actions = (Action(1, "stop", "app", "lb1", timeout_ms=2000), Action(2, "stop", "ip", "lb1", inputs=(1,)),
               Action(3, "start", "ip", "lb2", inputs=(2,)), Action(4, "start", "app", "lb2", inputs=(2, 3)),
               Action(5, "monitor", "app", "lb2", interval_ms=1000, inputs=(4,)))
    return Graph(Transition(placement={}, actions=actions, reasons=()), V)


def res(rid: str, node: str, op: str, rc: int = 0, interval: int = 0, **kw: object) -> OpResult:
    return OpResult(resource=rid, node=node, op=op, rc=rc, interval_ms=interval, **kw)  # type: ignore[arg-type]


def test_actions_become_ready_in_order_and_the_graph_completes() -> None:
    g = move()
    order = []
    results = {1: res("app", "lb1", "stop"), 2: res("ip", "lb1", "stop"), 3: res("ip", "lb2", "start"),
               4: res("app", "lb2", "start"), 5: res("app", "lb2", "monitor", interval=1000)}
    while not g.finished:
        ready = g.ready()
        assert len(ready) == 1, "a group moves one step at a time"
        order.append(ready[0].id)
        g.sent(ready[0], 0.0)
        assert g.ready() == []  # sent once
        assert g.result(results[ready[0].id]) is ready[0]
    assert order == [1, 2, 3, 4, 5]
    assert g.summary() == {"done": [1, 2, 3, 4, 5], "in_flight": [], "aborted": None, "complete": True}


def test_a_failure_aborts_and_the_graph_ends_when_nothing_is_in_flight() -> None:
    actions = (Action(1, "probe", "ip", "lb1"), Action(2, "probe", "ip", "lb2"),
               Action(3, "start", "ip", "lb1", inputs=(1, 2)))
    g = Graph(Transition(placement={}, actions=actions, reasons=()), V)
    for a in g.ready():
        g.sent(a, 0.0)
    g.result(res("ip", "lb1", "probe", rc=7))
    assert not g.finished
    g.result(res("ip", "lb2", "probe", rc=1))  # an odd answer: a failure
    assert g.aborted == "probe ip on lb2 failed (rc=1)"
    assert g.finished and g.ready() == []


def test_a_probe_finding_the_resource_active_aborts() -> None:
    actions = (Action(1, "probe", "ip", "lb1"), Action(2, "start", "ip", "lb1", inputs=(1,)))
    g = Graph(Transition(placement={}, actions=actions, reasons=()), V)
    g.sent(g.ready()[0], 0.0)
    g.result(res("ip", "lb1", "monitor", rc=0))  # a probe is a monitor with interval 0
    assert g.aborted == "probe ip on lb1: ip is already active on lb1 (rc=0)"
    assert g.finished and g.ready() == []


def test_unsolicited_results() -> None:
    g = move()
    g.sent(g.ready()[0], 0.0)
    assert g.result(res("db", "lb2", "monitor", rc=0, interval=5000)) is None  # a monitor still fine: news only
    assert g.aborted is None
    assert g.result(res("db", "lb2", "monitor", rc=7, interval=5000)) is None
    assert g.aborted == "unexpected failure: monitor db on lb2 rc=7"
    assert not g.finished  # stop app@lb1 is still in flight
    g.result(res("app", "lb1", "stop"))
    assert g.finished


def test_lost_actions_and_lost_nodes() -> None:
    g = move()
    a = g.ready()[0]
    g.sent(a, 100.0)
    assert g.next_timeout() == 100.0 + 2.0 + LOST_GRACE_S
    assert g.lost(100.0 + 2.0 + LOST_GRACE_S - 0.1) == []
    assert g.lost(100.0 + 2.0 + LOST_GRACE_S + 0.1) == [a]
    assert g.aborted == "stop app on lb1: no result within its timeout" and g.finished
    g = move()
    g.sent(g.ready()[0], 0.0)
    assert [x.id for x in g.node_lost(["lb1"])] == [1]
    assert g.aborted == "stop app on lb1: lb1 left the cluster" and g.finished


def test_empty_transition_is_finished() -> None:
    g = Graph(Transition(placement={}, actions=(), reasons=()), V)
    assert g.finished and g.ready() == []


# --------------------------------------------------------------------------- API authentication


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "tokens"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_auth_file_and_headers(tmp_path: Path) -> None:
    creds = load_auth_file(write(tmp_path, "# comment\n\nalice:admin:alice-secret-1\nbob:read:bob-secret-22\n"))
    assert creds == [Credential("alice", "admin", "alice-secret-1"), Credential("bob", "read", "bob-secret-22")]
    assert authenticate(creds, "Bearer bob-secret-22") == creds[1]
    basic = base64.b64encode(b"alice:alice-secret-1").decode()
    assert authenticate(creds, f"Basic {basic}") == creds[0]
    wrong_user = base64.b64encode(b"bob:alice-secret-1").decode()
    assert authenticate(creds, f"Basic {wrong_user}") is None
    for header in (None, "", "Bearer", "Bearer nope", "Token alice-secret-1", "Basic !!!", "Basic " +
                   base64.b64encode(b"alice").decode()):
        assert authenticate(creds, header) is None, header


@pytest.mark.parametrize(("text", "mode", "message"), [
    ("alice:admin:alice-secret-1\n", 0o644, "lets others read the tokens"),
    ("alice:root:alice-secret-1\n", 0o600, ":1: unknown role 'root'"),
    ("alice:admin\n", 0o600, ":1: expected user:role:token"),
    ("alice:admin:short\n", 0o600, "shorter than 8 characters"),
    ("# nothing\n", 0o600, "no user:role:token line"),
])
def test_bad_auth_files(tmp_path: Path, text: str, mode: int, message: str) -> None:
    with pytest.raises(AuthFileError, match=message):
        load_auth_file(write(tmp_path, text, mode))
