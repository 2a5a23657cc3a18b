"""The confirmation step (plan.py: the policy engine on a copy of the CIB) and the CSRF rules (csrf.py)."""

from __future__ import annotations

import pytest

from balancier.cluster import cib as C
from balancier.cluster.model import (
    Cib,
    CibConfiguration,
    GroupConfig,
    LocationConstraint,
    OpResult,
    ResourceConfig,
)
from balancier.web import csrf
from balancier.web.plan import plan_change

NOW = 1_000_000.0


def running_on_lb1() -> Cib:
    """Two online nodes with quorum; group web (vip, proxy) started on lb1 and probed stopped on lb2."""
    conf = CibConfiguration(nodes=("lb1", "lb2"),
                            resources=(ResourceConfig("vip", "balancier:vip"), ResourceConfig("proxy", "lsb:x")),
                            groups=(GroupConfig("web", ("vip", "proxy")),),
                            locations=(LocationConstraint("pref", "web", "lb1", 200),))
    cib = C.set_quorum(C.from_configuration(conf), True)
    for n in ("lb1", "lb2"):
        cib = C.set_node_online(cib, n, True)
    call = 0
    for r in ("vip", "proxy"):
        for n in ("lb1", "lb2"):
            call += 1
            cib = C.record_op(cib, OpResult(r, n, "monitor", 7, call_id=call))
        call += 1
        cib = C.record_op(cib, OpResult(r, "lb1", "start", 0, call_id=call))
    return cib


def test_migrate_plan_shows_the_move_and_the_ordered_actions() -> None:
    cib = running_on_lb1()
    plan = plan_change(cib, "migrate", {"resource": "web", "node": "lb2", "lifetime": "PT1H"}, NOW)
    assert plan["ok"] and plan["status"] == 200 and plan["changed"]
    assert plan["change"] == "migrate web to lb2 (lifetime PT1H)"
    assert {"resource": "web", "from": "lb1", "to": "lb2"} in plan["moves"]
    acts = plan["actions"]
    # stop-then-start, members in reverse order on the old node, in order on the new one
    assert acts.index("stop proxy on lb1") < acts.index("stop vip on lb1") < acts.index("start vip on lb2") \
        < acts.index("start proxy on lb2")
    assert any("lb2" in r for r in plan["reasons"])
    assert plan["cib_version"] == ".".join(map(str, cib.version))


def test_plan_writes_nothing() -> None:
    cib = running_on_lb1()
    before = C.to_json(cib)
    plan_change(cib, "standby", {"node": "lb1"}, NOW)
    assert C.to_json(cib) == before


def test_standby_plan_moves_what_runs_there() -> None:
    plan = plan_change(running_on_lb1(), "standby", {"node": "lb1"}, NOW)
    assert {"resource": "web", "from": "lb1", "to": "lb2"} in plan["moves"]


def test_a_change_that_changes_nothing_says_so() -> None:
    plan = plan_change(running_on_lb1(), "online", {"node": "lb1"}, NOW)
    assert plan["ok"] and plan["changed"] is False and plan["moves"] == []


@pytest.mark.parametrize(("op", "args", "status", "words"), [
    ("migrate", {"resource": "web", "node": "lb3"}, 404, "no such node"),
    ("migrate", {"resource": "nope", "node": "lb2"}, 404, "no such resource"),
    ("migrate", {"resource": "web"}, 400, "missing 'node'"),
    ("migrate", {"resource": "web", "node": "lb2", "lifetime": "soon"}, 400, "lifetime"),
    ("ban", {"resource": "web"}, 400, "unknown operation"),
    ("cib_replace", {}, 400, "unknown operation"),
])
def test_refusals_carry_the_dc_status(op: str, args: dict[str, str], status: int, words: str) -> None:
    plan = plan_change(running_on_lb1(), op, args, NOW)
    assert plan["ok"] is False and plan["status"] == status and words in plan["error"]


def test_csrf_token_is_bound_to_session_user_and_secret() -> None:
    secret, other_secret = b"s" * 32, b"t" * 32
    session = csrf.new_session()
    token = csrf.token_for(secret, session, "admin")
    assert csrf.check(secret, session, "admin", token)
    assert not csrf.check(secret, session, "viewer", token)
    assert not csrf.check(secret, csrf.new_session(), "admin", token)
    assert not csrf.check(other_secret, session, "admin", token)
    assert not csrf.check(secret, None, "admin", token)
    assert not csrf.check(secret, session, "admin", None)
    assert not csrf.check(secret, session, "admin", "")
    assert csrf.new_session() != session


@pytest.mark.parametrize(("headers", "host", "refused"), [
    ({}, "127.0.0.1:8080", False),  # curl, the CLI: not a browser
    ({"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, "127.0.0.1:8080", False),
    ({"Sec-Fetch-Site": "none"}, "lb1:8080", False),  # typed in the address bar
    ({"Origin": "http://evil.example"}, "127.0.0.1:8080", True),
    ({"Origin": "http://127.0.0.1:9999"}, "127.0.0.1:8080", True),
    ({"Origin": "null"}, "127.0.0.1:8080", True),
    ({"Sec-Fetch-Site": "cross-site"}, "127.0.0.1:8080", True),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8080"}, "127.0.0.1:8080", True),
])
def test_cross_site_changes_are_recognised(headers: dict[str, str], host: str, refused: bool) -> None:
    assert (csrf.cross_site(headers, host) is not None) is refused
