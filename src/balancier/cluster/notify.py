"""The notify hook: a command run on role changes (Patroni's callbacks, keepalived's notify scripts).

Rules this file governs:
- ``[cluster] notify_command`` is run as an argv, never through a shell, with four arguments
  appended: EVENT NODE RESOURCE SENTENCE (RESOURCE is "" for node and DC events). The same values
  are in the environment as BALANCIER_EVENT, BALANCIER_NODE, BALANCIER_RESOURCE, BALANCIER_MESSAGE,
  with BALANCIER_CLUSTER and BALANCIER_LOCAL_NODE (the node running the hook).
- Events: dc-elected (this node became DC), dc-lost (this node stopped being DC), node-up,
  node-dead (as this node sees its peers), resource-started, resource-stopped, resource-failed (an
  operation on this node; a failed probe or monitor included), resource-moved (the DC: a resource
  started on another node than the one it last ran on).
- The HA loop never waits for a hook: notify() queues the event and returns; one worker runs the
  hooks one after another, in order. The queue is bounded (QUEUE_MAX): when it is full the oldest
  event is dropped and a warning logged, so a stuck hook cannot grow memory.
- Each run is bounded by notify_timeout: at the deadline its whole process group is killed
  (agents/programs.py). A non-zero exit, a timeout or a command that cannot be run is logged as a
  warning with the last line of its output; nothing else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from dataclasses import dataclass

from balancier.cluster.agents.programs import run_program

log = logging.getLogger("balancier.cluster.notify")

EVENTS = ("dc-elected", "dc-lost", "node-up", "node-dead", "resource-started", "resource-stopped",
          "resource-failed", "resource-moved")
QUEUE_MAX = 100


@dataclass(frozen=True)
class Event:
    kind: str
    node: str
    resource: str
    sentence: str


class Notifier:
    """Runs ``command EVENT NODE RESOURCE SENTENCE`` for every event, in order, in the background."""

    def __init__(self, command: tuple[str, ...] | None, cluster: str, local_node: str,
                 timeout_ms: int = 10_000) -> None:
        self.command = command
        self.cluster = cluster
        self.local_node = local_node
        self.timeout = timeout_ms / 1000
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self.runs = 0
        self.failures = 0
        self.dropped = 0

    def notify(self, kind: str, node: str, resource: str | None, sentence: str) -> None:
        """Queue one event (no-op without a notify_command); never blocks."""
        if kind not in EVENTS:
            raise ValueError(f"unknown notify event {kind!r}")
        if not self.command:
            return
        if len(self._queue) >= QUEUE_MAX:
            lost = self._queue.popleft()
            self.dropped += 1
            log.warning("notify queue full: dropped %s %s (the hook is too slow)", lost.kind, lost.node,
                        extra={"component": "notify"})
        self._queue.append(Event(kind, node, resource or "", sentence))
        self._wake.set()
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the event waits for start()
                self._task = asyncio.get_running_loop().create_task(self._worker())

    def pending(self) -> int:
        """Events queued or running."""
        return len(self._queue) + (1 if self._running else 0)

    async def _worker(self) -> None:
        while True:
            while self._queue:
                self._running = True
                try:
                    await self._run(self._queue.popleft())
                finally:
                    self._running = False
            self._wake.clear()
            await self._wake.wait()

    async def _run(self, ev: Event) -> None:
        assert self.command is not None
        argv = [*self.command, ev.kind, ev.node, ev.resource, ev.sentence]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
               "BALANCIER_EVENT": ev.kind, "BALANCIER_NODE": ev.node, "BALANCIER_RESOURCE": ev.resource,
               "BALANCIER_MESSAGE": ev.sentence, "BALANCIER_CLUSTER": self.cluster,
               "BALANCIER_LOCAL_NODE": self.local_node}
        self.runs += 1
        try:
            done = await run_program(argv, env, self.timeout, grace=1.0)
        except OSError as exc:
            self.failures += 1
            log.warning("notify hook %s for %s could not run: %s", self.command[0], ev.kind, exc,
                        extra={"component": "notify", "event": ev.kind})
            return
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        if done.timed_out:
            self.failures += 1
            log.warning("notify hook %s for %s killed after %.1fs (timeout)", self.command[0], ev.kind, self.timeout,
                        extra={"component": "notify", "event": ev.kind})
        elif done.rc != 0:
            self.failures += 1
            log.warning("notify hook %s for %s exited with %d: %s", self.command[0], ev.kind, done.rc, last[0],
                        extra={"component": "notify", "event": ev.kind})
        else:
            log.info("notify hook ran for %s %s%s", ev.kind, ev.node, f" {ev.resource}" if ev.resource else "",
                     extra={"component": "notify", "event": ev.kind})

    async def close(self, grace: float = 2.0) -> None:
        """Give queued hooks up to `grace` seconds to finish (a clean leave notifies too), then stop the
        worker: a hook still running then is killed with its group (agents/programs.py)."""
        task = self._task
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.pending():
                    await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
