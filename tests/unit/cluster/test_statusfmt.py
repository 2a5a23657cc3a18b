"""statusfmt: the status document built from a CIB, the crm_mon-like table (golden strings), the Nagios line."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from balancier.cluster import cib as C
from balancier.cluster import statusfmt as S
from balancier.cluster.model import (
    Cib,
    CibConfiguration,
    GroupConfig,
    LocationConstraint,
    OpConfig,
    OpResult,
    ResourceConfig,
)

T0 = 1_700_000_000.0  # Tue Nov 14 22:13:20 2023 UTC


def conf() -> CibConfiguration:
    return CibConfiguration(
        nodes=("lb1", "lb2"),
        resources=(ResourceConfig("vip", "balancier:vip", ops=(OpConfig("monitor", 2000, 1000),)),
                   ResourceConfig("proxy", "ocf:heartbeat:Dummy"),
                   ResourceConfig("mail", "lsb:postfix")),
        groups=(GroupConfig("esup", ("vip", "proxy")),),
        locations=(LocationConstraint("pref", "esup", "lb1", 200),))


def cib_with(*ops: OpResult, online: tuple[str, ...] = ("lb1", "lb2")) -> Cib:
    cib = C.from_configuration(conf())
    for n in online:
        cib = C.set_node_online(cib, n, True)
    cib = C.set_quorum(C.set_dc(cib, "lb1"), True)
    for op in ops:
        cib = C.record_op(cib, op)
    return cib


def op(resource: str, node: str, name: str, rc: int = 0, call: int = 0, interval: int = 0, **kw: Any) -> OpResult:
    return OpResult(resource=resource, node=node, op=name, rc=rc, call_id=call, interval_ms=interval, time=T0,
                    **kw)


RUNNING = (op("vip", "lb1", "start", call=1), op("proxy", "lb1", "start", call=2),
           op("mail", "lb2", "start", call=3), op("vip", "lb2", "probe", rc=7, call=4),
           op("proxy", "lb2", "probe", rc=7, call=5), op("mail", "lb1", "probe", rc=7, call=6))
# everything on lb1: lb2 may go offline without stopping anything
ON_LB1 = RUNNING[:2] + (op("mail", "lb1", "start", call=3),)


def doc(cib: Cib, dc: str | None = "lb1", members: tuple[str, ...] = ("lb1", "lb2"), **kw: Any) -> dict[str, Any]:
    return S.status_document(cib, cluster="esup", node="lb2", dc=dc, quorum=cib.have_quorum if dc else None,
                             members=list(members), transition=None, now=T0 + 60, **kw)


def test_document_states_and_placement() -> None:
    d = doc(cib_with(*RUNNING))
    assert d["format"] == "balancier-status/1"
    assert [(r["id"], r["kind"], r["state"], r["node"]) for r in d["resources"]] == [
        ("esup", "group", "started", "lb1"), ("mail", "primitive", "started", "lb2")]
    assert d["failed_actions"] == [] and d["fail_counts"] == []
    assert d["nodes"][0] == {"name": "lb1", "state": "online", "online": True, "standby": False,
                             "unclean": False, "dc": True}


def test_table_golden_all_running() -> None:
    assert S.format_table(doc(cib_with(*RUNNING))) == (
        "============\n"
        "Last updated: Tue Nov 14 22:14:20 2023\n"
        "Cluster: esup (answered by lb2)\n"
        "Current DC: lb1 - partition with quorum\n"
        "CIB version: 0.1.10\n"
        "2 Nodes configured\n"
        "2 Resources configured.\n"
        "============\n"
        "\n"
        "Online: [ lb1 lb2 ]\n"
        "\n"
        " Resource Group: esup\n"
        "     vip\t(balancier:vip):\tStarted lb1\n"
        "     proxy\t(ocf::heartbeat:Dummy):\tStarted lb1\n"
        " mail\t(lsb:postfix):\tStarted lb2\n")


def test_table_golden_failures_standby_offline_and_constraints() -> None:
    failed = op("proxy", "lb1", "monitor", rc=7, call=7, interval=10000, exec_ms=12,
                output="some output\nocf-exit-reason:process 42 gone")
    cib = cib_with(*RUNNING, failed, op("mail", "lb2", "stop", call=8))
    cib = C.set_standby(cib, "lb2", True)
    cib = C.migrate(cib, "esup", "lb2", lifetime_s=3600, now=T0)
    d = doc(cib)
    assert d["resources"][0]["state"] == "failed"
    assert S.format_table(d).split("============\n\n", 1)[1] == (
        "Node lb2: standby\n"
        "Online: [ lb1 ]\n"
        "\n"
        " Resource Group: esup\n"
        "     vip\t(balancier:vip):\tStarted lb1\n"
        "     proxy\t(ocf::heartbeat:Dummy):\tStarted lb1 FAILED\n"
        " mail\t(lsb:postfix):\tStopped\n"
        "\n"
        "Failed actions:\n"
        "    proxy_monitor_10000 (node=lb1, call=7, rc=7, status=complete): not running: process 42 gone, "
        "last-rc-change='Tue Nov 14 22:13:20 2023', exec=12ms\n"
        "\n"
        "Migration summary:\n"
        "* Node lb1:\n"
        "   proxy: fail-count=1 last-failure='Tue Nov 14 22:13:20 2023'\n"
        "\n"
        "Runtime constraints:\n"
        "    cli-prefer-esup: esup on lb2 (INFINITY) until Tue Nov 14 23:13:20 2023\n")
    # offline, no DC: the header and the node lists say so
    d = doc(cib_with(*RUNNING, online=("lb1",)), dc=None, members=("lb1",))
    table = S.format_table(d)
    assert "Current DC: NONE\n" in table
    assert "Online: [ lb1 ]\nOFFLINE: [ lb2 ]\n" in table
    d = doc(C.set_quorum(cib_with(*RUNNING), False))
    assert "Current DC: lb1 - partition WITHOUT quorum\n" in S.format_table(d)


def test_failure_remembered_after_restart_and_timeout_status() -> None:
    failed = op("vip", "lb1", "monitor", rc=1, call=7, interval=2000, timed_out=True)
    cib = cib_with(*RUNNING, failed, op("vip", "lb1", "stop", call=8), op("vip", "lb1", "start", call=9),
                   op("vip", "lb1", "monitor", call=10, interval=2000))
    assert doc(cib)["failed_actions"] == []  # the CIB no longer holds it...
    d = doc(cib, failures=[failed])  # ...the DC remembered it
    assert [(f["resource"], f["status"], f["rc_text"]) for f in d["failed_actions"]] == \
        [("vip", "Timed Out", "unknown error")]
    assert d["fail_counts"][0]["fail_count"] == 1


def test_disabled_resource_and_multiple_active() -> None:
    cib = C.set_target_role(cib_with(*RUNNING[:2], op("mail", "lb1", "probe", rc=7, call=6),
                                     op("mail", "lb2", "probe", rc=7, call=3)), "mail", "Stopped")
    d = doc(cib)
    assert d["resources"][1]["state"] == "disabled"
    assert " mail\t(lsb:postfix):\tStopped (disabled)\n" in S.format_table(d)
    code, line = S.nagios(d)
    assert code == S.OK and "disabled: mail" in line
    cib = cib_with(*RUNNING[:3], op("mail", "lb1", "probe", rc=0, call=6))
    d = doc(cib)
    assert d["resources"][1]["members"][0]["state"] == "multiple"
    assert " mail\t(lsb:postfix):\tStarted [ lb1 lb2 ]\n" in S.format_table(d)


# --------------------------------------------------------------------------- Nagios


PERF_OK = "nodes_online=2;;;0;2 failed_actions=0;;1 failcount=0;;1 resources_started=2;;;0;2"


def test_nagios_ok_line() -> None:
    assert S.nagios(doc(cib_with(*RUNNING))) == (
        S.OK, f"CLUSTER OK: 2 nodes online, 1 resource group started on lb1, 1 resource started on lb2 | {PERF_OK}")


@pytest.mark.parametrize(("case", "code", "text"), [
    ("offline", S.WARNING, "CLUSTER WARNING: 1 node offline: lb2, 1 node online, 1 resource group started on lb1, "
                           "1 resource started on lb1 |"),
    ("offline_running_there", S.CRITICAL, "CLUSTER CRITICAL: mail stopped, 1 node offline: lb2, 1 node online, "),
    ("failed", S.CRITICAL, "CLUSTER CRITICAL: esup failed, 1 failed action, fail count 1, "),
    ("no_dc", S.CRITICAL, "CLUSTER CRITICAL: no DC, "),
    ("no_quorum", S.CRITICAL, "CLUSTER CRITICAL: partition WITHOUT quorum (2 of 2 nodes), "),
    ("stopped", S.CRITICAL, "CLUSTER CRITICAL: mail stopped, 2 nodes online, "),
    ("failcount", S.WARNING, "CLUSTER WARNING: 1 failed action, fail count 1, 2 nodes online, "),
])
def test_nagios_states(case: str, code: int, text: str) -> None:
    cib = cib_with(*RUNNING)
    kw: dict[str, Any] = {}
    if case == "offline":
        cib = cib_with(*ON_LB1)
        kw["members"] = ("lb1",)
    elif case == "no_dc":
        kw["dc"] = None
    elif case == "no_quorum":
        cib = C.set_quorum(cib, False)
    elif case == "stopped":
        cib = C.record_op(cib, op("mail", "lb2", "stop", call=9))
    elif case == "offline_running_there":
        kw["members"] = ("lb1",)
    elif case == "failed":
        cib = C.record_op(cib, op("vip", "lb1", "monitor", rc=7, call=9, interval=2000))
    elif case == "failcount":  # failed, then recovered: the failure and its count remain
        cib = C.record_op(cib, op("vip", "lb1", "monitor", rc=7, call=9, interval=2000))
        cib = C.record_op(cib, op("vip", "lb1", "monitor", rc=0, call=10, interval=2000))
        kw["failures"] = [op("vip", "lb1", "monitor", rc=7, call=9, interval=2000)]
    got = S.nagios(doc(cib, **kw))
    assert got[0] == code
    assert got[1].startswith(text), got[1]
    assert got[1].count("\n") == 0 and got[1].count(" | ") == 1


def test_nagios_thresholds_and_perfdata() -> None:
    d = doc(cib_with(*ON_LB1), members=("lb1",))
    code, line = S.nagios(d, expect_nodes=1)
    assert code == S.OK
    assert line.endswith("| nodes_online=1;;;0;2 failed_actions=0;;1 failcount=0;;1 resources_started=2;;;0;2")
    assert S.nagios(d, expect_nodes=2)[0] == S.WARNING
    cib = C.record_op(cib_with(*RUNNING), op("vip", "lb1", "monitor", rc=7, call=9, interval=2000))
    cib = C.record_op(cib, op("vip", "lb1", "monitor", rc=0, call=10, interval=2000))
    code, line = S.nagios(doc(cib), failcount_warn=False)
    assert code == S.OK and "failcount=1;;1" in line
    assert S.nagios(doc(cib))[0] == S.WARNING


def test_nagios_unknown() -> None:
    assert S.nagios(None, error="cannot reach the cluster daemon at /x: No such file or directory") == (
        S.UNKNOWN, "CLUSTER UNKNOWN: cannot reach the cluster daemon at /x: No such file or directory")


def test_document_is_json_serialisable_with_every_field() -> None:
    import json

    cib = dataclasses.replace(cib_with(*RUNNING))
    d = doc(cib)
    assert json.loads(json.dumps(d)) == d
