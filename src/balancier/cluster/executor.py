"""The executor: runs resource-agent operations on this node and reports every result faithfully.

Rules this file governs (spec cluster.md §3.3, §5; Pacemaker's local executor):
- One operation at a time per resource: an asyncio.Lock per resource; a recurring monitor waits its
  turn like any operation, so a monitor never runs in the middle of a start or stop.
- Every operation is bounded by its timeout. External agents kill their own process group at the
  deadline (agents/programs.py); the executor's own deadline is a little later for them, and exact
  for built-in agents. A timeout is reported as timed_out with rc 1.
- `execute(action)`: start | stop | monitor | probe | reload. A monitor action with an interval runs once
  (that result is the action's result) and then keeps running at its interval until cancelled; a
  stop (and a start) cancels the resource's recurring monitors first, as Pacemaker does.
- Recurring monitors are reported when their result changes (the first one, then each change of
  rc or timeout), not every interval: the cluster needs news, not a heartbeat per resource.
- The executor decides nothing: on-fail, fail counts and retries are the policy engine's. It only
  reports what happened: rc, timed_out, duration (exec_ms), the last lines of output and the
  agent's exit reason (appended to output as an `ocf-exit-reason:` line).
- An agent that raises is a bug in the agent, reported as rc 1 with the exception's text; an
  unknown agent or resource is rc 5/6 with a sentence, never an exception out of execute().
- Every result is one structured log line, its sentence plus fields a log shipper can filter on:
  msg="start vip on lb1: rc 0 in 112ms" resource=vip op=start interval_ms=0 rc=0 exec_ms=112 call_id=7.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from balancier.cluster.agents.base import (
    OCF_ERR_CONFIGURED,
    OCF_ERR_GENERIC,
    AgentError,
    AgentResult,
    ResourceAgent,
    tail,
)
from balancier.cluster.agents.programs import KILL_GRACE
from balancier.cluster.model import OpResult, ResourceConfig

log = logging.getLogger("balancier.cluster.executor")

EXTERNAL_GRACE_S = KILL_GRACE + 1.5  # an external agent kills its group first; we only back it up
DEFAULT_TIMEOUT_MS = 20_000


class ActionLike(Protocol):
    """What execute() reads of a policy Action (cluster/policy.py); read-only, as Action is frozen."""

    @property
    def kind(self) -> str: ...

    @property
    def resource(self) -> str | None: ...

    @property
    def interval_ms(self) -> int: ...

    @property
    def timeout_ms(self) -> int: ...


AgentFactory = Callable[[ResourceConfig], ResourceAgent]


def _default_factory(node: str, ocf_root: str) -> AgentFactory:
    def make(resource: ResourceConfig) -> ResourceAgent:
        from balancier.cluster.agents.registry import agent_for

        return agent_for(resource, ocf_root, node=node)
    return make


class Executor:
    """Runs operations of this node's resources; `report` receives every OpResult worth telling."""

    def __init__(self, node_name: str, clock: Callable[[], float] = time.time,
                 report: Callable[[OpResult], None] = lambda r: None, *,
                 agent_factory: AgentFactory | None = None, ocf_root: str = "/usr/lib/ocf",
                 first_call_id: int = 1) -> None:
        self.node = node_name
        self.clock = clock
        self.report = report
        self._factory = agent_factory or _default_factory(node_name, ocf_root)
        self._resources: dict[str, ResourceConfig] = {}
        self._agents: dict[str, tuple[ResourceConfig, ResourceAgent]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._monitors: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._call_id = first_call_id - 1
        self.history: list[OpResult] = []  # every result, reported or not (bounded)

    # ------------------------------------------------------------------ configuration

    def configure(self, resources: Iterable[ResourceConfig]) -> None:
        """The resources this executor may be asked about (from the CIB's configuration)."""
        self._resources = {r.id: r for r in resources}

    def resource(self, rid: str) -> ResourceConfig | None:
        return self._resources.get(rid)

    def agent(self, resource: ResourceConfig) -> ResourceAgent:
        """The agent of a resource, kept between operations (built-in agents hold state, e.g. a pid)."""
        known = self._agents.get(resource.id)
        if known is not None and known[0] == resource:
            return known[1]
        agent = self._factory(resource)
        self._agents[resource.id] = (resource, agent)
        return agent

    def _lock(self, rid: str) -> asyncio.Lock:
        lock = self._locks.get(rid)
        if lock is None:
            lock = self._locks[rid] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ operations

    async def execute(self, action: ActionLike, resource: ResourceConfig | None = None) -> OpResult:
        """Run one start/stop/monitor/probe action and report its result."""
        rid = action.resource
        if rid is None:
            raise ValueError(f"{action.kind}: the executor runs resource operations only")
        target = getattr(action, "node", self.node)
        if target != self.node:
            raise ValueError(f"{action.kind} {rid} is for node {target}, this executor runs on {self.node}")
        res = resource or self._resources.get(rid)
        timeout_ms = action.timeout_ms or DEFAULT_TIMEOUT_MS
        if res is None:
            result = self._result(rid, action.kind, action.interval_ms,
                                  AgentResult(OCF_ERR_CONFIGURED, exit_reason=f"unknown resource {rid!r}"), 0)
            self._publish(result)
            return result
        if action.kind == "monitor" and action.interval_ms > 0:
            result = await self.run(res, "monitor", timeout_ms, action.interval_ms)
            self.start_monitor(res, action.interval_ms, timeout_ms, first=result)
            return result
        if action.kind in ("start", "stop", "migrate_from"):
            self.cancel_monitors(rid)
        if action.kind not in ("start", "stop", "monitor", "probe", "reload", "migrate_to", "migrate_from"):
            result = self._result(rid, action.kind, action.interval_ms,
                                  AgentResult(OCF_ERR_CONFIGURED,
                                              exit_reason=f"unsupported operation {action.kind!r}"), 0)
            self._publish(result)
            return result
        return await self.run(res, action.kind, timeout_ms, 0)

    async def run(self, resource: ResourceConfig, op: str, timeout_ms: int, interval_ms: int = 0,
                  publish: bool = True) -> OpResult:
        """One operation under the resource's lock, bounded by timeout_ms; reported unless publish=False."""
        async with self._lock(resource.id):
            started = time.monotonic()
            answer = await self._call_agent(resource, op, timeout_ms, interval_ms)
            exec_ms = int((time.monotonic() - started) * 1000)
        result = self._result(resource.id, op, interval_ms, answer, exec_ms)
        if publish:
            self._publish(result)
        else:
            self._remember(result)
        return result

    async def _call_agent(self, resource: ResourceConfig, op: str, timeout_ms: int,
                          interval_ms: int) -> AgentResult:
        try:
            agent = self.agent(resource)
        except AgentError as exc:
            return AgentResult(OCF_ERR_CONFIGURED, exit_reason=str(exc))
        deadline = timeout_ms / 1000 + (EXTERNAL_GRACE_S if agent.enforces_timeout else 0.0)
        try:
            return await asyncio.wait_for(agent.run(op, timeout_ms, interval_ms), deadline)
        except TimeoutError:
            return AgentResult(OCF_ERR_GENERIC, exit_reason=f"{op} timed out after {timeout_ms}ms",
                               timed_out=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in an agent must still reach the cluster as a failed action
            log.exception("agent %s raised during %s of %s", resource.agent, op, resource.id)
            return AgentResult(OCF_ERR_GENERIC, exit_reason=f"agent {resource.agent} raised "
                                                            f"{type(exc).__name__}: {exc}")

    def _result(self, rid: str, op: str, interval_ms: int, answer: AgentResult, exec_ms: int) -> OpResult:
        self._call_id += 1
        output = tail(answer.output)
        if answer.exit_reason and answer.exit_reason not in output:
            output = f"{output}\nocf-exit-reason:{answer.exit_reason}" if output else \
                f"ocf-exit-reason:{answer.exit_reason}"
        return OpResult(resource=rid, node=self.node, op=op, rc=answer.rc, interval_ms=interval_ms,
                        call_id=self._call_id, time=self.clock(), exec_ms=exec_ms, output=output,
                        timed_out=answer.timed_out)

    def _remember(self, result: OpResult) -> None:
        self.history.append(result)
        del self.history[:-1000]

    def _publish(self, result: OpResult) -> None:
        self._remember(result)
        every = f" every {result.interval_ms}ms" if result.interval_ms else ""
        what = "timed out" if result.timed_out else f"rc {result.rc}"
        reason = result.output.rsplit("ocf-exit-reason:", 1)[1].strip() if "ocf-exit-reason:" in result.output \
            else ""
        fields = {"component": "executor", "resource": result.resource, "op": result.op,
                  "interval_ms": result.interval_ms, "rc": result.rc, "exec_ms": result.exec_ms,
                  "call_id": result.call_id}
        if result.timed_out:
            fields["timed_out"] = "yes"
        log.info("%s %s on %s%s: %s in %dms%s", result.op, result.resource, result.node, every, what,
                 result.exec_ms, f" ({reason})" if reason else "", extra=fields)
        try:
            self.report(result)
        except Exception:
            log.exception("the report callback failed for %s %s", result.op, result.resource)

    # ------------------------------------------------------------------ recurring monitors

    def start_monitor(self, resource: ResourceConfig, interval_ms: int, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                      first: OpResult | None = None) -> None:
        """Run `monitor` every interval_ms until cancel_monitors(); replaces one of the same interval."""
        if interval_ms <= 0:
            raise ValueError("a recurring monitor needs an interval > 0")
        key = (resource.id, interval_ms)
        old = self._monitors.pop(key, None)
        if old is not None:
            old.cancel()
        self._monitors[key] = asyncio.ensure_future(self._monitor_loop(resource, interval_ms, timeout_ms, first))

    async def _monitor_loop(self, resource: ResourceConfig, interval_ms: int, timeout_ms: int,
                            last: OpResult | None) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            result = await self.run(resource, "monitor", timeout_ms, interval_ms, publish=False)
            if last is None or (result.rc, result.timed_out) != (last.rc, last.timed_out):
                self._publish(result)
            last = result

    def cancel_monitors(self, rid: str) -> int:
        """Stop every recurring monitor of a resource; how many were running."""
        keys = [k for k in self._monitors if k[0] == rid]
        for k in keys:
            self._monitors.pop(k).cancel()
        return len(keys)

    def monitors(self) -> list[tuple[str, int]]:
        """(resource, interval_ms) of every recurring monitor running."""
        return sorted(k for k, t in self._monitors.items() if not t.done())

    async def probe_all(self, resources: Iterable[ResourceConfig] | None = None,
                        timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[OpResult]:
        """A one-shot monitor of every resource (a node joining: what already runs here?)."""
        todo = list(resources) if resources is not None else list(self._resources.values())

        async def probe(r: ResourceConfig) -> OpResult:
            op = r.op("monitor", 0)
            t = op.timeout_ms if op is not None else timeout_ms
            return await self.run(r, "probe", t, 0)
        return list(await asyncio.gather(*(probe(r) for r in todo)))

    async def close(self) -> None:
        """Cancel every recurring monitor and wait for them (shutdown)."""
        tasks = list(self._monitors.values())
        self._monitors.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
