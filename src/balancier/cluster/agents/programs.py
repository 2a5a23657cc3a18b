"""Running one agent program: own process group, bounded in time, output captured.

Rules this file governs:
- Every program runs in a new session (start_new_session), so it and everything it forks share a
  process group we can signal as a whole: a hung agent's children die with it.
- At the deadline the group gets SIGTERM, then SIGKILL after a grace period (at most KILL_GRACE);
  the result is marked timed_out. Cancelling the coroutine kills the group the same way, so an
  outer timeout never leaves an agent behind.
- stdout and stderr are read concurrently with the wait. A daemon started by the agent may keep a
  copy of the pipes open after the agent exits (a bad daemon does not close its stdio): once the
  agent has exited we read for at most DRAIN_AFTER_EXIT more, then stop listening, instead of
  waiting for an EOF that would only come when the daemon dies.
- At most MAX_CAPTURE bytes per stream are kept (the tail): agents can be chatty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a timed-out group
DRAIN_AFTER_EXIT = 0.3  # seconds to keep reading pipes after the agent exited
MAX_CAPTURE = 64 * 1024


@dataclass(frozen=True)
class Completed:
    """A finished program. rc is the exit code (128+N when killed by signal N), or None when it timed out."""

    rc: int | None
    stdout: str
    stderr: str
    elapsed: float
    pid: int

    @property
    def timed_out(self) -> bool:
        return self.rc is None


async def _pump(stream: asyncio.StreamReader | None, sink: bytearray) -> None:
    if stream is None:
        return
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        sink += chunk
        if len(sink) > MAX_CAPTURE:
            del sink[: len(sink) - MAX_CAPTURE]


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


async def kill_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM the process group, wait up to `grace` for it to empty, then SIGKILL what is left."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if not _group_alive(pgid):
            return
    _signal_group(pgid, signal.SIGKILL)


async def run_program(argv: list[str], env: dict[str, str], timeout: float, cwd: str = "/",
                      grace: float = KILL_GRACE) -> Completed:
    """Run argv with env (replacing the environment), at most `timeout` seconds, in its own process group."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    pgid = proc.pid  # leader of its new session and process group
    out, err = bytearray(), bytearray()
    pumps = [asyncio.ensure_future(_pump(proc.stdout, out)), asyncio.ensure_future(_pump(proc.stderr, err))]
    rc: int | None
    try:
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            rc = None
            await kill_group(pgid, min(grace, max(timeout, 0.1)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace + 1.0)
        else:
            if rc < 0:
                rc = 128 - rc  # shell convention: killed by signal N -> 128+N
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps), DRAIN_AFTER_EXIT)
    except asyncio.CancelledError:
        # An outer deadline: leave nothing behind.
        _signal_group(pgid, signal.SIGKILL)
        raise
    finally:
        for p in pumps:
            p.cancel()
        for p in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await p
    return Completed(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                     time.monotonic() - started, proc.pid)
