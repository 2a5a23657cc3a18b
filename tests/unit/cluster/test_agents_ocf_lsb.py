"""External agents: the OCF environment, LSB code mapping, systemd refusal, and the LSB compliance checker.

The compliance checker runs small init scripts written here into a temp dir (one compliant, several
broken the way 2010-era scripts were); each keeps its "daemon" as a state file, so nothing real starts.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from balancier.cluster.agents.external import (
    LSBAgent,
    OCFAgent,
    SystemdAgent,
    exit_reason,
    lsb_action_rc,
    lsb_status_rc,
    ocf_environment,
)
from balancier.cluster.agents.lsb_check import check_script, lsb_compliance
from balancier.cluster.model import ResourceConfig


def test_ocf_environment_carries_params_meta_and_op() -> None:
    r = ResourceConfig(id="vip", agent="ocf:heartbeat:IPaddr2",
                       params=(("ip", "10.0.0.100"), ("cidr_netmask", "24")),
                       meta=(("resource-stickiness", "100"),))
    env = ocf_environment(r, "heartbeat", "IPaddr2", "monitor", ocf_root="/usr/lib/ocf", timeout_ms=5000,
                          interval_ms=2000, node="lb1")
    expected = {
        "OCF_ROOT": "/usr/lib/ocf", "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "1",
        "OCF_RESOURCE_INSTANCE": "vip", "OCF_RESOURCE_TYPE": "IPaddr2", "OCF_RESOURCE_PROVIDER": "heartbeat",
        "OCF_RESKEY_ip": "10.0.0.100", "OCF_RESKEY_cidr_netmask": "24",
        "OCF_RESKEY_CRM_meta_timeout": "5000", "OCF_RESKEY_CRM_meta_interval": "2000",
        "OCF_RESKEY_CRM_meta_name": "monitor", "OCF_RESKEY_CRM_meta_on_node": "lb1",
        "OCF_RESKEY_CRM_meta_resource_stickiness": "100", "OCF_EXIT_REASON_PREFIX": "ocf-exit-reason:",
    }
    for k, v in expected.items():
        assert env[k] == v, k
    # the daemon's own environment does not leak into agents
    assert "HOME" not in env and env["PATH"].startswith("/usr/local/sbin")


def test_exit_reason_takes_the_last_prefixed_line() -> None:
    err = "noise\nocf-exit-reason:first\nmore\nocf-exit-reason: Unable to find nic eth9\n"
    assert exit_reason(err) == "Unable to find nic eth9"
    assert exit_reason("nothing here\n") is None


@pytest.mark.parametrize(("status", "ocf"), [(0, 0), (1, 7), (2, 7), (3, 7), (4, 1), (5, 1), (150, 5),
                                              (151, 4), (127, 1), (255, 1)])
def test_lsb_status_mapping(status: int, ocf: int) -> None:
    assert lsb_status_rc(status) == ocf


@pytest.mark.parametrize(("rc", "ocf"), [(0, 0), (1, 1), (5, 5), (6, 6), (7, 7), (8, 1), (150, 1), (255, 1)])
def test_lsb_start_stop_mapping(rc: int, ocf: int) -> None:
    assert lsb_action_rc(rc) == ocf


def test_systemd_without_systemd_is_not_installed(tmp_path: Path) -> None:
    a = SystemdAgent(ResourceConfig(id="web", agent="systemd:nginx"), "nginx", runtime_dir=str(tmp_path / "none"))
    for op in ("start", "stop", "monitor", "probe"):
        r = asyncio.run(a.run(op, 2000))
        assert r.rc == 5
        assert r.exit_reason is not None and "systemd not running" in r.exit_reason and "nginx.service" in r.exit_reason


def test_missing_programs_are_not_installed(tmp_path: Path) -> None:
    ocf = OCFAgent(ResourceConfig(id="x", agent="ocf:acme:Nope"), "acme", "Nope", ocf_root=str(tmp_path))
    r = asyncio.run(ocf.start(2000))
    assert r.rc == 5 and r.exit_reason == f"{tmp_path}/resource.d/acme/Nope does not exist"
    script = tmp_path / "svc"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    lsb = LSBAgent(ResourceConfig(id="s", agent="lsb:svc"), "svc", init_dir=str(tmp_path))
    r = asyncio.run(lsb.monitor(probe=True))
    assert r.rc == 5 and "is not executable" in (r.exit_reason or "")


# --------------------------------------------------------------------------- LSB scripts for the checker

PREAMBLE = """#!/bin/sh
STATE="$(dirname "$0")/$(basename "$0").running"
"""

COMPLIANT = PREAMBLE + """
case "$1" in
  start) touch "$STATE"; exit 0;;
  stop) rm -f "$STATE"; exit 0;;
  status) [ -f "$STATE" ] && { echo running; exit 0; }; echo stopped; exit 3;;
  *) echo "Usage: $0 {start|stop|status}"; exit 2;;
esac
"""

# The 2010-era stunnel4 script: no status action at all.
NO_STATUS = PREAMBLE + """
case "$1" in
  start) touch "$STATE"; exit 0;;
  stop) rm -f "$STATE"; exit 0;;
  *) echo "Usage: $0 {start|stop|restart}" >&2; exit 1;;
esac
"""

# stop on a stopped service fails, start on a running one fails, status 1 when stopped.
STRICT = PREAMBLE + """
case "$1" in
  start) [ -f "$STATE" ] && { echo "already running"; exit 1; }; touch "$STATE"; exit 0;;
  stop) [ -f "$STATE" ] || { echo "not running"; exit 1; }; rm -f "$STATE"; exit 0;;
  status) [ -f "$STATE" ] && exit 0; exit 1;;
esac
"""

# start returns before the service is up (the daemon comes up "later").
EARLY = PREAMBLE + """
case "$1" in
  start) exit 0;;
  stop) rm -f "$STATE"; exit 0;;
  status) [ -f "$STATE" ] && exit 0; exit 3;;
esac
"""


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_compliant_script_has_no_violations(tmp_path: Path) -> None:
    _script(tmp_path, "good", COMPLIANT)
    assert lsb_compliance("good", init_dir=str(tmp_path)) == []
    assert not (tmp_path / "good.running").exists()  # left stopped


def test_script_without_status_is_told_so(tmp_path: Path) -> None:
    problems = asyncio.run(check_script(_script(tmp_path, "stunnel", NO_STATUS)))
    assert ("status on a stopped service returned 1 and printed a usage text: the script has no status "
            "action; LSB requires one (0 running, 3 stopped)") in problems
    assert any(p.startswith("status on a running service returned 1 and printed a usage text") for p in problems)


def test_strict_script_violations_in_plain_words(tmp_path: Path) -> None:
    problems = asyncio.run(check_script(_script(tmp_path, "haproxy", STRICT)))
    assert problems == [
        "status on a stopped service returned 1; LSB requires 3",
        "stop on a stopped service returned 1; LSB requires 0",
        "start on a running service returned 1; LSB requires 0",
    ]
    assert not (tmp_path / "haproxy.running").exists()


def test_start_returning_before_running(tmp_path: Path) -> None:
    problems = asyncio.run(check_script(_script(tmp_path, "early", EARLY)))
    assert "status on a running service returned 3; LSB requires 0" in problems
    assert any("start returned 0 before the service was running" in p for p in problems)


def test_running_service_is_reported_and_stopped_first(tmp_path: Path) -> None:
    path = _script(tmp_path, "svc", COMPLIANT)
    (tmp_path / "svc.running").touch()
    problems = asyncio.run(check_script(path))
    assert len(problems) == 1 and problems[0].startswith("the service was running before the check")


def test_missing_script(tmp_path: Path) -> None:
    assert lsb_compliance(str(tmp_path / "absent")) == [f"{tmp_path}/absent does not exist"]


def test_lsb_agent_maps_status_through_a_real_script(tmp_path: Path) -> None:
    _script(tmp_path, "svc", STRICT)
    a = LSBAgent(ResourceConfig(id="s", agent="lsb:svc"), "svc", init_dir=str(tmp_path))

    async def go() -> list[int]:
        return [(await a.run(op, 5000)).rc for op in ("probe", "start", "monitor", "start", "stop", "stop")]
    assert asyncio.run(go()) == [7, 0, 0, 1, 0, 1]
    assert os.path.exists(tmp_path / "svc") and not (tmp_path / "svc.running").exists()


def test_cluster_lsb_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`balancier cluster lsb-check NAME` prints one violation per line and exits 1, or says compliant, exit 0."""
    from balancier.cli import main

    _script(tmp_path, "good", COMPLIANT)
    _script(tmp_path, "haproxy", STRICT)
    assert main(["cluster", "lsb-check", "good", "--init-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "good: LSB compliant\n"
    assert main(["cluster", "lsb-check", "haproxy", "--init-dir", str(tmp_path), "--timeout", "5000"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "status on a stopped service returned 1; LSB requires 3",
        "stop on a stopped service returned 1; LSB requires 0",
        "start on a running service returned 1; LSB requires 0",
    ]
