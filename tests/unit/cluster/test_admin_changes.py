"""Administrator changes (changes.py): lifetimes, each operation's effect on the CIB, refusals with a status."""

from __future__ import annotations

import pytest

from balancier.cluster import cib as C
from balancier.cluster.changes import ChangeError, apply_change, describe, parse_lifetime
from balancier.cluster.model import (
    INFINITY,
    Cib,
    CibConfiguration,
    GroupConfig,
    LocationConstraint,
    OpResult,
    ResourceConfig,
)

NOW = 1_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT1H", 3600), ("PT30M", 1800), ("PT90S", 90), ("P1D", 86400), ("P1DT2H30M", 95400), ("P2W", 1209600),
    ("PT0.5S", 0.5), ("pt1h", 3600), ("90s", 90), ("5min", 300), ("2h", 7200), ("1500ms", 1.5),
])
def test_lifetimes(text: str, seconds: float) -> None:
    assert parse_lifetime(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "P1DT", "PT1X", "1 hour", "-PT1H", "PT0S", "0s", "soon", ""])
def test_bad_lifetimes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lifetime(text)


def base() -> Cib:
    conf = CibConfiguration(nodes=("lb1", "lb2"),
                            resources=(ResourceConfig("vip", "balancier:vip"), ResourceConfig("proxy", "lsb:x")),
                            groups=(GroupConfig("web", ("vip", "proxy")),),
                            locations=(LocationConstraint("pref", "web", "lb1", 200),))
    cib = C.from_configuration(conf)
    for n in ("lb1", "lb2"):
        cib = C.set_node_online(cib, n, True)
    return cib


def test_migrate_with_lifetime_then_unmigrate() -> None:
    cib = apply_change(base(), "migrate", {"resource": "web", "node": "lb2", "lifetime": "PT1H"}, NOW)
    cons = [c for c in cib.configuration.locations if c.id.startswith("cli-")]
    assert [(c.id, c.node, c.score, c.expires) for c in cons] == [("cli-prefer-web", "lb2", INFINITY, NOW + 3600)]
    assert cib.epoch == base().epoch + 1
    cib = apply_change(cib, "unmigrate", {"resource": "web"}, NOW)
    assert [c.id for c in cib.configuration.locations] == ["pref"]


def test_ban_defaults_to_the_node_where_it_runs() -> None:
    cib = C.record_op(base(), OpResult("vip", "lb1", "start", 0, call_id=1))
    cib = apply_change(cib, "ban", {"resource": "web"}, NOW)
    assert [(c.id, c.score) for c in cib.configuration.locations if c.id.startswith("cli-")] == \
        [("cli-ban-web-on-lb1", -INFINITY)]
    with pytest.raises(ChangeError) as exc:
        apply_change(base(), "ban", {"resource": "web"}, NOW)
    assert exc.value.status == 409 and "name the node" in exc.value.message


def test_cleanup_start_stop_standby_online_and_options() -> None:
    cib = C.record_op(base(), OpResult("vip", "lb1", "start", 1, call_id=1, time=NOW))
    assert cib.resource_status("vip", "lb1").fail_count == INFINITY
    cib = apply_change(cib, "cleanup", {"resource": "web", "node": "lb1"}, NOW)
    assert cib.resource_status("vip", "lb1").fail_count == 0 and cib.resource_status("vip", "lb1").ops == ()
    cib = apply_change(cib, "stop", {"resource": "web"}, NOW)
    assert cib.configuration.group("web").meta_value("target-role") == "Stopped"  # type: ignore[union-attr]
    cib = apply_change(cib, "start", {"resource": "web"}, NOW)
    assert cib.configuration.group("web").meta_value("target-role") == "Started"  # type: ignore[union-attr]
    cib = apply_change(cib, "standby", {"node": "lb1"}, NOW)
    assert cib.standby("lb1") and cib.configuration.standby_nodes == ("lb1",)
    cib = apply_change(cib, "online", {"node": "lb1"}, NOW)
    assert not cib.standby("lb1")
    cib = apply_change(cib, "cib_set", {"key": "resource-stickiness", "value": "100"}, NOW)
    cib = apply_change(cib, "cib_set", {"key": "no_quorum_policy", "value": "freeze"}, NOW)
    cib = apply_change(cib, "cib_set", {"key": "failure-timeout", "value": "60s"}, NOW)
    opts = cib.configuration.options
    assert (opts.stickiness, opts.no_quorum_policy, opts.failure_timeout_ms) == (100, "freeze", 60_000)


def test_replace_configuration() -> None:
    cib = base()
    conf = cib.configuration.to_dict()
    conf["locations"] = []
    new = apply_change(cib, "cib_replace", {"configuration": conf}, NOW)
    assert new.configuration.locations == () and new.epoch == cib.epoch + 1
    conf["nodes"] = ["lb1"]
    with pytest.raises(ChangeError, match="nodes are set by the cluster configuration file"):
        apply_change(cib, "cib_replace", {"configuration": conf}, NOW)


@pytest.mark.parametrize(("op", "args", "status", "message"), [
    ("migrate", {"resource": "nope", "node": "lb1"}, 404, "no such resource 'nope'"),
    ("migrate", {"resource": "web", "node": "lb9"}, 404, "no such node 'lb9'"),
    ("migrate", {"resource": "web"}, 400, "missing 'node'"),
    ("migrate", {"resource": "web", "node": "lb2", "lifetime": "PT1X"}, 400, "lifetime: 'PT1X' is not an ISO-8601"),
    ("standby", {"node": "lb3"}, 404, "no such node 'lb3'"),
    ("cib_set", {"key": "colour", "value": "blue"}, 400, "unknown cluster option 'colour'"),
    ("cib_set", {"key": "no-quorum-policy", "value": "panic"}, 400, "no-quorum-policy: 'panic': expected"),
    ("cib_set", {"key": "stickiness", "value": "lots"}, 400, "stickiness: invalid score"),
    ("cib_replace", {"configuration": "x"}, 400, "expected {\"configuration\""),
    ("reboot", {}, 400, "unknown operation 'reboot'"),
])
def test_refusals(op: str, args: dict[str, object], status: int, message: str) -> None:
    with pytest.raises(ChangeError) as exc:
        apply_change(base(), op, args, NOW)
    assert exc.value.status == status
    assert exc.value.message.startswith(message), exc.value.message


def test_migrate_to_where_it_runs_is_refused_by_the_cib() -> None:
    cib = C.record_op(base(), OpResult("vip", "lb1", "start", 0, call_id=1))
    with pytest.raises(ChangeError) as exc:
        apply_change(cib, "migrate", {"resource": "web", "node": "lb1"}, NOW)
    assert exc.value.status == 409 and "already active on lb1" in exc.value.message
    assert apply_change(cib, "migrate", {"resource": "web", "node": "lb1", "force": True}, NOW) is not cib


def test_describe() -> None:
    assert describe("migrate", {"resource": "web", "node": "lb2", "lifetime": "PT1H"}) == \
        "migrate web to lb2 (lifetime PT1H)"
    assert describe("cleanup", {"resource": "web", "node": "lb1"}) == "cleanup web on lb1"
    assert describe("standby", {"node": "lb1"}) == "standby lb1"
    assert describe("cib_set", {"key": "stickiness", "value": "100"}) == "set stickiness=100"
