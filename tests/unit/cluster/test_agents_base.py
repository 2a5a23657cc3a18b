"""Result classification (spec cluster.md §5), the agent contract's dispatch, and the registry."""

from __future__ import annotations

import asyncio

import pytest

from balancier.cluster.agents.base import (
    FATAL,
    HARD,
    SOFT,
    SUCCESS,
    UNSUPPORTED,
    AgentError,
    AgentResult,
    ResourceAgent,
    classify,
    rc_name,
    tail,
)
from balancier.cluster.agents.external import LSBAgent, OCFAgent, SystemdAgent
from balancier.cluster.agents.proxy import ProxyAgent
from balancier.cluster.agents.registry import agent_for
from balancier.cluster.agents.vip import VipAgent
from balancier.cluster.model import OpResult, ResourceConfig

CLASSIFY = [
    # op, rc, interval_ms, timed_out, expected
    ("start", 0, 0, False, SUCCESS),
    ("start", 190, 0, False, SUCCESS),  # degraded is still success
    ("start", 1, 0, False, SOFT),
    ("start", 7, 0, False, SOFT),  # running was expected
    ("start", 2, 0, False, HARD),
    ("start", 3, 0, False, HARD),  # unimplemented on a non-recurring op
    ("start", 4, 0, False, HARD),
    ("start", 5, 0, False, HARD),
    ("start", 6, 0, False, FATAL),
    ("start", 9, 0, False, SOFT),
    ("start", 42, 0, False, SOFT),  # unknown code
    ("start", 0, 0, True, SOFT),  # a timeout is a soft failure whatever the rc
    ("stop", 0, 0, False, SUCCESS),
    ("stop", 7, 0, False, SUCCESS),  # the goal "not running" is reached
    ("stop", 1, 0, False, SOFT),
    ("monitor", 0, 10_000, False, SUCCESS),
    ("monitor", 7, 10_000, False, SOFT),  # recurring: it was running
    ("monitor", 3, 10_000, False, UNSUPPORTED),  # recurring op the agent lacks: no recovery
    ("monitor", 5, 10_000, False, HARD),
    ("monitor", 7, 0, False, SUCCESS),  # a monitor with interval 0 is a probe
    ("probe", 7, 0, False, SUCCESS),
    ("probe", 0, 0, False, SUCCESS),
    ("probe", 1, 0, False, SOFT),
    ("probe", 6, 0, False, FATAL),
    ("probe", 0, 0, True, SOFT),
]


@pytest.mark.parametrize(("op", "rc", "interval", "timed_out", "expected"), CLASSIFY)
def test_classify(op: str, rc: int, interval: int, timed_out: bool, expected: str) -> None:
    assert classify(op, rc, interval, timed_out) == expected


@pytest.mark.parametrize(("op", "rc", "interval", "timed_out", "expected"), CLASSIFY)
def test_classify_agrees_with_the_model(op: str, rc: int, interval: int, timed_out: bool, expected: str) -> None:
    """The policy engine reads OpResult.ok/hard/fatal: both readings must say the same thing."""
    r = OpResult(resource="r", node="n", op=op, rc=rc, interval_ms=interval, timed_out=timed_out)
    if expected in (SUCCESS, UNSUPPORTED):
        assert r.ok
    else:
        assert not r.ok
    assert r.hard == (expected == HARD)
    assert r.fatal == (expected == FATAL)


def test_rc_names_and_summary() -> None:
    assert rc_name(7) == "not running"
    assert rc_name(42) == "unknown exit code 42"
    assert AgentResult(5, exit_reason="/x does not exist").summary == "not installed (5): /x does not exist"
    assert AgentResult(1, timed_out=True).summary == "timed out"


def test_tail_keeps_the_last_lines_and_bounds_size() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    assert tail(text, lines=3) == "line 97\nline 98\nline 99"
    assert len(tail("x" * 10_000, limit=100)) == 100


class Recorder(ResourceAgent):
    def __init__(self) -> None:
        super().__init__(ResourceConfig(id="r", agent="balancier:test"))
        self.calls: list[tuple[str, bool, int]] = []

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        self.calls.append(("start", False, timeout_ms))
        return AgentResult(0)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        self.calls.append(("stop", False, timeout_ms))
        return AgentResult(0)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        self.calls.append(("monitor", probe, interval_ms))
        return AgentResult(7)


def test_run_dispatches_probe_and_monitor() -> None:
    a = Recorder()

    async def go() -> list[int]:
        return [(await a.run(op, 5000, iv)).rc for op, iv in
                [("start", 0), ("monitor", 2000), ("monitor", 0), ("probe", 0), ("stop", 0), ("promote", 0),
                 ("reload", 0)]]
    rcs = asyncio.run(go())
    assert rcs == [0, 7, 7, 7, 0, 3, 3]
    assert a.calls == [("start", False, 5000), ("monitor", False, 2000), ("monitor", True, 0),
                       ("monitor", True, 0), ("stop", False, 5000)]


def _res(agent: str, **params: str) -> ResourceConfig:
    return ResourceConfig(id="r1", agent=agent, params=tuple(params.items()))


def test_registry_picks_the_agent_class(tmp_path) -> None:
    assert isinstance(agent_for(_res("balancier:vip", ip="10.0.0.1")), VipAgent)
    assert isinstance(agent_for(_res("balancier:proxy", config="/x")), ProxyAgent)
    ocf = agent_for(_res("ocf:heartbeat:Dummy"), "/opt/ocf")
    assert isinstance(ocf, OCFAgent) and ocf.path == "/opt/ocf/resource.d/heartbeat/Dummy"
    lsb = agent_for(_res("lsb:stunnel4"), init_dir=str(tmp_path))
    assert isinstance(lsb, LSBAgent) and lsb.path == str(tmp_path / "stunnel4")
    assert isinstance(agent_for(_res("systemd:nginx")), SystemdAgent)
    # service: lsb when a script exists, else systemd
    (tmp_path / "svc").write_text("#!/bin/sh\n")
    assert isinstance(agent_for(_res("service:svc"), init_dir=str(tmp_path)), LSBAgent)
    assert isinstance(agent_for(_res("service:other"), init_dir=str(tmp_path)), SystemdAgent)


@pytest.mark.parametrize(("agent", "message"), [
    ("balancier:nope", "unknown built-in agent 'balancier:nope'"),
    ("ocf:heartbeat", "an OCF agent is written ocf:<provider>:<type>"),
    ("stonith:x", "expected one of"),
    ("ocf:../..:x", "invalid OCF agent name"),
    ("lsb:../../bin/sh", "invalid agent name"),
])
def test_registry_rejects_unknown_agents(agent: str, message: str) -> None:
    with pytest.raises(AgentError) as exc:
        agent_for(_res(agent))
    assert message in str(exc.value) and "'r1'" in str(exc.value)


def test_lsb_resource_with_parameters_is_rejected() -> None:
    with pytest.raises(AgentError, match="LSB scripts take no parameters"):
        agent_for(_res("lsb:stunnel4", x="1"))
