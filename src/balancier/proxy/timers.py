"""A coarse periodic sweep instead of one timer per request.

Rules:
- Streams never arm `call_later` on the hot path. Each one keeps plain numbers (last activity, phase start) and
  registers itself once with the `Sweeper`; every `RESOLUTION` seconds the sweeper calls `check(now)` on each
  registered object, which compares its own deadlines and acts. A timeout therefore fires between its nominal time
  and `RESOLUTION` later (HAProxy's own timers are also coarse at the millisecond scale; 100 ms is the documented
  precision here).
- The sweeper checks the set it is given: the runtime's own set of live streams, so a stream is registered by
  being admitted (`Runtime.accept`) and unregistered by being released, with no call of its own per connection.
  The sweep is O(live streams), which is cheap next to the I/O those streams do.
- Objects that must fire with more precision (the retry turn-around delay) use `call_later` directly: they are rare.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

RESOLUTION = 0.1  # seconds between two sweeps


class Checkable(Protocol):
    def check(self, now: float) -> None: ...


class Sweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, items: set[Checkable], resolution: float = RESOLUTION) -> None:
        self.loop = loop
        self.resolution = resolution
        self.items = items  # owned (added to, discarded from) by the caller
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = self.loop.call_later(self.resolution, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.loop.time()
        # a copy: checks close streams, which unregister themselves
        for item in tuple(self.items):
            try:
                item.check(now)
            except Exception as e:  # a bug in one stream must not stop every timeout of the process
                self.loop.call_exception_handler({"message": "timeout check failed", "exception": e})
        self._handle = self.loop.call_later(self.resolution, self._tick)
