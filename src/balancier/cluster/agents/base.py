"""The resource-agent contract (OCF's, spec cluster.md §6) and how results are classified (§5).

Rules this file governs:
- Every agent, built in (Python) or external (a program), offers the OCF actions as coroutines:
  start, stop, monitor(probe), validate, meta_data. Each returns an AgentResult: the OCF exit code,
  the last lines of output and the exit reason (the agent's `ocf-exit-reason:` line, or a sentence
  of ours for built-in agents).
- Idempotency is the agent's duty: start on a started resource and stop on a stopped one return 0.
- An agent never raises for an operational problem: it answers with an rc. Exceptions are bugs; the
  executor still turns them into rc 1 with the exception text so the cluster sees a failed action.
- classify() states the scheduler's reading of an rc (§5) in one place: success, soft (restart,
  fail count +1), hard (ban from this node), fatal (ban everywhere), unsupported (rc 3 from a
  recurring monitor: no recovery). rc 7 from a probe is success: "not running here" is the answer
  a probe hopes for.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Final

from balancier.cluster.model import ResourceConfig

# OCF exit codes (spec §6). The same numbers live in model.OCF; these names are the OCF ones
# agent authors know.
OCF_SUCCESS: Final = 0
OCF_ERR_GENERIC: Final = 1
OCF_ERR_ARGS: Final = 2
OCF_ERR_UNIMPLEMENTED: Final = 3
OCF_ERR_PERM: Final = 4
OCF_ERR_INSTALLED: Final = 5
OCF_ERR_CONFIGURED: Final = 6
OCF_NOT_RUNNING: Final = 7
OCF_RUNNING_PROMOTED: Final = 8
OCF_FAILED_PROMOTED: Final = 9
OCF_DEGRADED: Final = 190
OCF_DEGRADED_PROMOTED: Final = 191

RC_NAMES: Final[dict[int, str]] = {
    0: "ok", 1: "error", 2: "invalid parameter", 3: "unimplemented feature", 4: "insufficient privileges",
    5: "not installed", 6: "not configured", 7: "not running", 8: "promoted", 9: "promoted but failed",
    190: "degraded", 191: "degraded and promoted",
}

SUCCESS: Final = "success"
SOFT: Final = "soft"
HARD: Final = "hard"
FATAL: Final = "fatal"
UNSUPPORTED: Final = "unsupported"

OPERATIONS: Final = ("start", "stop", "monitor", "probe", "reload", "validate", "meta-data")


def rc_name(rc: int) -> str:
    """'not running' for 7; 'unknown exit code 42' for codes OCF does not define."""
    return RC_NAMES.get(rc, f"unknown exit code {rc}")


def classify(op: str, rc: int, interval_ms: int = 0, timed_out: bool = False) -> str:
    """How the scheduler reads `rc` returned by operation `op` (spec §5).

    op is start | stop | monitor | probe (a probe is also a monitor with interval 0).
    """
    probe = op == "probe" or (op == "monitor" and interval_ms == 0)
    if timed_out:
        return SOFT
    if rc in (OCF_SUCCESS, OCF_DEGRADED):
        return SUCCESS
    if probe and rc == OCF_NOT_RUNNING:
        return SUCCESS
    if op == "stop" and rc == OCF_NOT_RUNNING:
        # Not OCF-compliant (stop must say 0) but the goal "not running" is reached.
        return SUCCESS
    if rc == OCF_ERR_UNIMPLEMENTED:
        return UNSUPPORTED if interval_ms > 0 else HARD
    if rc in (OCF_ERR_ARGS, OCF_ERR_PERM, OCF_ERR_INSTALLED):
        return HARD
    if rc == OCF_ERR_CONFIGURED:
        return FATAL
    # 1, 7 when running was expected, 8, 9, 191 without promotion, and any unknown code.
    return SOFT


@dataclass(frozen=True)
class AgentResult:
    """What one operation answered. output: the last lines the agent printed (stdout, then stderr)."""

    rc: int
    output: str = ""
    exit_reason: str | None = None
    timed_out: bool = False

    @property
    def summary(self) -> str:
        """One line for logs and status: 'not running (7): address 10.0.0.100 absent from eth0'."""
        what = "timed out" if self.timed_out else f"{rc_name(self.rc)} ({self.rc})"
        return f"{what}: {self.exit_reason}" if self.exit_reason else what


class AgentError(ValueError):
    """A resource that no agent can serve (unknown class or type, missing script): a configuration error."""


class ResourceAgent(abc.ABC):
    """One resource as seen by its agent. Subclasses implement the OCF actions.

    timeout_ms is the operation's timeout, given so that an agent can bound its own waits (start
    waiting for readiness, stop escalating to SIGKILL); the executor enforces it in any case.
    """

    #: "balancier:vip", "ocf:heartbeat:Dummy", ...
    standard: str = "balancier"
    #: True when the agent kills its own work at the operation's timeout (external programs).
    enforces_timeout: bool = False

    def __init__(self, resource: ResourceConfig) -> None:
        self.resource = resource

    @property
    def name(self) -> str:
        return self.resource.id

    def param(self, name: str, default: str | None = None) -> str | None:
        value = self.resource.param(name)
        return default if value is None else value

    @abc.abstractmethod
    async def start(self, timeout_ms: int = 20_000) -> AgentResult: ...

    @abc.abstractmethod
    async def stop(self, timeout_ms: int = 20_000) -> AgentResult: ...

    @abc.abstractmethod
    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult: ...

    async def validate(self, timeout_ms: int = 20_000) -> AgentResult:
        return AgentResult(OCF_SUCCESS)

    async def meta_data(self) -> AgentResult:
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason="this agent has no meta-data")

    async def reload(self, timeout_ms: int = 20_000) -> AgentResult:
        """Apply a changed configuration without a restart (agents that can)."""
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason=f"{self.standard} cannot reload")

    async def migrate_to(self, timeout_ms: int = 20_000) -> AgentResult:
        """Live migration, on the source: prepare to hand over (the instance keeps running until its stop)."""
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason=f"{self.standard} cannot migrate")

    async def migrate_from(self, timeout_ms: int = 20_000) -> AgentResult:
        """Live migration, on the target: take over from the source (which is stopped afterwards)."""
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason=f"{self.standard} cannot migrate")

    async def run(self, op: str, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        """Dispatch an operation by its name (start, stop, monitor, probe, validate, meta-data, migrate_*)."""
        if op == "start":
            return await self.start(timeout_ms)
        if op == "stop":
            return await self.stop(timeout_ms)
        if op == "monitor":
            return await self.monitor(probe=interval_ms == 0, timeout_ms=timeout_ms, interval_ms=interval_ms)
        if op == "probe":
            return await self.monitor(probe=True, timeout_ms=timeout_ms, interval_ms=0)
        if op in ("validate", "validate-all"):
            return await self.validate(timeout_ms)
        if op == "meta-data":
            return await self.meta_data()
        if op == "reload":
            return await self.reload(timeout_ms)
        if op == "migrate_to":
            return await self.migrate_to(timeout_ms)
        if op == "migrate_from":
            return await self.migrate_from(timeout_ms)
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason=f"unsupported operation {op!r}")


def tail(text: str, lines: int = 20, limit: int = 4096) -> str:
    """The last `lines` lines of text, at most `limit` characters (results travel in cluster messages)."""
    kept = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return kept[-limit:]
