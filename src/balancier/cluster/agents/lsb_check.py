"""The LSB compliance checker: does an init script behave as the cluster needs (spec cluster.md §7)?

Rules this file governs:
- The checklist is Pacemaker's, run in this order on a real script (it starts and stops the
  service, so run it where that is harmless): status on stopped -> 3; stop on stopped -> 0;
  start on stopped -> 0 and status -> 0; start on running -> 0 and status still 0; stop on
  running -> 0 and status -> 3; stop again -> 0.
- Every violation is one sentence in plain words saying what the script did and what LSB asks:
  "stop on a stopped service returned 1; LSB requires 0". A script whose `status` prints a usage
  text is told it has no status action. An empty list means compliant.
- The service is left stopped at the end (best effort), whatever happened in between.
- A script found running at the start is stopped first (and that is reported: a cluster-managed
  service must not be started by anything else, e.g. at boot).
"""

from __future__ import annotations

import asyncio
import os

from balancier.cluster.agents.external import LSBAgent
from balancier.cluster.agents.programs import Completed
from balancier.cluster.model import ResourceConfig

CHECK_TIMEOUT_MS = 20_000


def _says_usage(done: Completed) -> bool:
    text = (done.stdout + done.stderr).lower()
    return "usage" in text


async def check_script(path: str, timeout_ms: int = CHECK_TIMEOUT_MS) -> list[str]:
    """Run the §7 checklist against the init script at `path`; the violations found, in order."""
    name = os.path.basename(path)
    agent = LSBAgent(ResourceConfig(id=f"lsb-check-{name}", agent=f"lsb:{name}"), name,
                     init_dir=os.path.dirname(path) or ".")
    problems: list[str] = []

    async def call(action: str) -> Completed | None:
        done, early = await agent.raw(action, timeout_ms)
        if done is None:
            assert early is not None
            problems.append(f"{action} could not be run: {early.exit_reason}")
        return done

    async def status(when: str, expected: int) -> int | None:
        done = await call("status")
        if done is None:
            return None
        assert done.rc is not None
        if done.rc != expected:
            if _says_usage(done) and done.rc not in (0, 3):
                problems.append(f"status on {when} service returned {done.rc} and printed a usage text: "
                                f"the script has no status action; LSB requires one "
                                f"(0 running, 3 stopped)")
            else:
                problems.append(f"status on {when} service returned {done.rc}; LSB requires {expected}")
        return done.rc

    async def act(action: str, when: str) -> int | None:
        done = await call(action)
        if done is None:
            return None
        assert done.rc is not None
        if done.rc != 0:
            problems.append(f"{action} on {when} service returned {done.rc}; LSB requires 0")
        return done.rc

    if (m := _missing(path)) is not None:
        return [m]
    try:
        first = await call("status")
        if first is None:
            return problems
        if first.rc == 0:
            problems.append("the service was running before the check: a cluster-managed service must not "
                            "be started outside the cluster (for example at boot); stopped it first")
            await call("stop")
        await status("a stopped", 3)
        await act("stop", "a stopped")
        started = await act("start", "a stopped")
        after = await status("a running", 0)
        if started == 0 and after in (1, 2, 3):
            problems.append("start returned 0 before the service was running (status right after start said "
                            "it is not); LSB requires start to return once the service runs")
        await act("start", "a running")
        await status("a running", 0)
        await act("stop", "a running")
        await status("a stopped", 3)
        await act("stop", "a stopped")
    finally:
        await agent.raw("stop", timeout_ms)
    return _dedupe(problems)


def _missing(path: str) -> str | None:
    if not os.path.isfile(path):
        return f"{path} does not exist"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable"
    return None


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def lsb_compliance(name: str, init_dir: str = "/etc/init.d", timeout_ms: int = CHECK_TIMEOUT_MS) -> list[str]:
    """Check `/etc/init.d/NAME` (or NAME under init_dir; an absolute path is used as is). Starts and stops it."""
    path = name if os.path.isabs(name) else os.path.join(init_dir, name)
    return asyncio.run(check_script(path, timeout_ms))
