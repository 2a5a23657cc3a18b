"""The executor with scripted in-process agents: serialisation per resource, timeouts, recurring monitors,
faithful reports. (Real agents are exercised in tests/integration/test_agents_external.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from balancier.cluster.agents.base import AgentError, AgentResult, ResourceAgent
from balancier.cluster.executor import Executor
from balancier.cluster.model import OpConfig, OpResult, ResourceConfig


@dataclass
class Act:
    kind: str
    resource: str | None
    interval_ms: int = 0
    timeout_ms: int = 20_000


class Scripted(ResourceAgent):
    """An agent whose answers a test sets; records overlapping calls."""

    def __init__(self, resource: ResourceConfig, log: list[str]) -> None:
        super().__init__(resource)
        self.log = log
        self.delay = 0.0
        self.monitor_rc = 7
        self.running = False
        self.raise_on: str | None = None
        self.active = 0
        self.max_active = 0

    async def _op(self, name: str, body: Callable[[], AgentResult]) -> AgentResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append(f"{self.name}:{name}:begin")
        try:
            await asyncio.sleep(self.delay)
            if self.raise_on == name:
                raise RuntimeError("boom")
            return body()
        finally:
            self.active -= 1
            self.log.append(f"{self.name}:{name}:end")

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        def body() -> AgentResult:
            self.running = True
            return AgentResult(0, "started\n")
        return await self._op("start", body)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        def body() -> AgentResult:
            self.running = False
            return AgentResult(0)
        return await self._op("stop", body)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        return await self._op("probe" if probe else "monitor",
                              lambda: AgentResult(self.monitor_rc, "", "not there" if self.monitor_rc else None))


class Harness:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.reports: list[OpResult] = []
        self.agents: dict[str, Scripted] = {}
        self.now = 1000.0
        self.ex = Executor("lb1", clock=lambda: self.now, report=self.reports.append, agent_factory=self.make)
        self.ex.configure([ResourceConfig(id=i, agent="balancier:test",
                                          ops=(OpConfig("monitor", 0, timeout_ms=3000),)) for i in ("a", "b")])

    def make(self, r: ResourceConfig) -> ResourceAgent:
        if r.agent == "balancier:bad":
            raise AgentError(f"resource {r.id!r}: unknown built-in agent 'balancier:bad'")
        a = self.agents.setdefault(r.id, Scripted(r, self.log))
        return a


def run(coro_fn: Callable[[Harness], Awaitable[None]]) -> Harness:
    h = Harness()

    async def main() -> None:
        try:
            await coro_fn(h)
        finally:
            await h.ex.close()
    asyncio.run(main())
    return h


def test_result_fields_and_report() -> None:
    async def go(h: Harness) -> None:
        r = await h.ex.execute(Act("start", "a"))
        assert (r.resource, r.node, r.op, r.rc, r.time, r.output) == ("a", "lb1", "start", 0, 1000.0, "started")
        assert r.call_id == 1 and r.exec_ms >= 0 and not r.timed_out
        r2 = await h.ex.execute(Act("probe", "b"))
        assert r2.rc == 7 and r2.call_id == 2 and r2.output == "ocf-exit-reason:not there"
    h = run(go)
    assert [(r.op, r.resource) for r in h.reports] == [("start", "a"), ("probe", "b")]


def test_one_operation_at_a_time_per_resource_but_resources_in_parallel() -> None:
    async def go(h: Harness) -> None:
        h.agents["a"] = Scripted(h.ex.resource("a"), h.log)  # type: ignore[arg-type]
        h.agents["b"] = Scripted(h.ex.resource("b"), h.log)  # type: ignore[arg-type]
        for a in h.agents.values():
            a.delay = 0.05
        await asyncio.gather(h.ex.execute(Act("start", "a")), h.ex.execute(Act("probe", "a")),
                             h.ex.execute(Act("stop", "a")), h.ex.execute(Act("start", "b")))
        assert h.agents["a"].max_active == 1
    h = run(go)
    a_events = [e for e in h.log if e.startswith("a:")]
    assert a_events == ["a:start:begin", "a:start:end", "a:probe:begin", "a:probe:end",
                        "a:stop:begin", "a:stop:end"]
    # b ran while a was busy
    assert h.log.index("b:start:begin") < h.log.index("a:start:end")


def test_timeout_is_reported_as_timed_out() -> None:
    async def go(h: Harness) -> None:
        h.agents["a"] = Scripted(h.ex.resource("a"), h.log)  # type: ignore[arg-type]
        h.agents["a"].delay = 5
        r = await h.ex.execute(Act("start", "a", timeout_ms=100))
        assert r.timed_out and r.rc == 1 and "start timed out after 100ms" in r.output
        assert 90 <= r.exec_ms < 2000
        assert not r.ok
    run(go)


def test_agent_exception_and_unknown_resource_become_failed_actions() -> None:
    async def go(h: Harness) -> None:
        h.agents["a"] = Scripted(h.ex.resource("a"), h.log)  # type: ignore[arg-type]
        h.agents["a"].raise_on = "start"
        r = await h.ex.execute(Act("start", "a"))
        assert r.rc == 1 and "raised RuntimeError: boom" in r.output
        r = await h.ex.execute(Act("start", "zz"))
        assert r.rc == 6 and "unknown resource 'zz'" in r.output
        bad = ResourceConfig(id="c", agent="balancier:bad")
        r = await h.ex.execute(Act("start", "c"), bad)
        assert r.rc == 6 and "unknown built-in agent" in r.output
        r = await h.ex.execute(Act("promote", "a"))
        assert r.rc == 6 and "unsupported operation 'promote'" in r.output
        with pytest.raises(ValueError):
            await h.ex.execute(Act("fence", None))
    h = run(go)
    assert len(h.reports) == 4


def test_recurring_monitor_reports_first_result_and_changes_only() -> None:
    async def go(h: Harness) -> None:
        await h.ex.execute(Act("start", "a"))
        h.agents["a"].monitor_rc = 0
        first = await h.ex.execute(Act("monitor", "a", interval_ms=20, timeout_ms=10))
        assert first.rc == 0 and first.interval_ms == 20
        assert h.ex.monitors() == [("a", 20)]
        await asyncio.sleep(0.15)  # several unchanged results: not reported
        h.agents["a"].monitor_rc = 7  # the resource died
        await asyncio.sleep(0.1)
        assert h.ex.cancel_monitors("a") == 1
        assert h.ex.monitors() == []
    h = run(go)
    monitors = [r for r in h.reports if r.op == "monitor"]
    assert [r.rc for r in monitors] == [0, 7]
    assert monitors[1].interval_ms == 20 and not monitors[1].ok
    ran = sum(1 for e in h.log if e == "a:monitor:begin")
    assert ran >= 4  # it kept running between the two reports


def test_stop_cancels_recurring_monitors() -> None:
    async def go(h: Harness) -> None:
        await h.ex.execute(Act("start", "a"))
        h.agents["a"].monitor_rc = 0
        await h.ex.execute(Act("monitor", "a", interval_ms=20))
        await h.ex.execute(Act("stop", "a"))
        assert h.ex.monitors() == []
        count = sum(1 for e in h.log if e == "a:monitor:begin")
        await asyncio.sleep(0.1)
        assert sum(1 for e in h.log if e == "a:monitor:begin") == count
    run(go)


def test_probe_all_uses_the_probe_timeout_and_runs_every_resource() -> None:
    async def go(h: Harness) -> None:
        results = await h.ex.probe_all()
        assert sorted((r.resource, r.op, r.rc) for r in results) == [("a", "probe", 7), ("b", "probe", 7)]
        assert all(r.ok and r.is_probe for r in results)
    h = run(go)
    assert len(h.reports) == 2


def test_report_callback_failure_does_not_break_the_executor() -> None:
    def broken(_: OpResult) -> None:
        raise RuntimeError("listener bug")

    async def go(h: Harness) -> None:
        h.ex.report = broken
        r = await h.ex.execute(Act("start", "a"))
        assert r.rc == 0 and h.ex.history[-1] == r
    run(go)


def test_executes_the_policy_engines_actions() -> None:
    from balancier.cluster.policy import Action

    async def go(h: Harness) -> None:
        r = await h.ex.execute(Action(id=7, kind="start", resource="a", node="lb1", timeout_ms=5000))
        assert (r.op, r.rc, r.node) == ("start", 0, "lb1")
        with pytest.raises(ValueError, match="is for node lb2, this executor runs on lb1"):
            await h.ex.execute(Action(id=8, kind="stop", resource="a", node="lb2"))
    run(go)
