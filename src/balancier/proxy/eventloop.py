"""The data plane's event loop: uvloop when importable (else asyncio's), with its transport registry made cheap.

Rules:
- uvloop keeps every transport in a `weakref.WeakValueDictionary` keyed by file descriptor, only to refuse
  `add_reader`/`sock_*` calls on a descriptor that a live transport owns. That dictionary's `__setitem__` is
  Python code building a `KeyedRef` with a removal callback, which runs again when the transport goes: ~6 k
  instructions per connection, twice per request with `option httpclose`. `new_loop` gives that registry a
  subclass whose `__setitem__` stores a plain weak reference. Lookups answer as before (a dead reference reads
  as absent, as a removed entry did), and an entry is replaced when its descriptor number is reused, so the
  dictionary stays bounded by the highest descriptor. The registry is found among the loop's referents (asyncio's
  own loop has the same one); when it is not there (another uvloop), nothing is changed.
- Without uvloop the data plane runs on asyncio's default loop, and says so once on stderr (`main.py`).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

_ref = weakref.ref


class LightRegistry(weakref.WeakValueDictionary):  # type: ignore[type-arg]
    """A WeakValueDictionary whose entries are plain weak references (no removal callback)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = _ref(value)  # type: ignore[attr-defined]


def lighten(loop: Any) -> bool:
    """Give the loop's transport registry the cheap `__setitem__`; True when it was found."""
    for obj in gc.get_referents(loop):
        if type(obj) is weakref.WeakValueDictionary and not obj:
            obj.__class__ = LightRegistry
            return True
    return False


def new_loop() -> tuple[asyncio.AbstractEventLoop, bool]:
    """A new event loop for the data plane, and whether it is uvloop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), False
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    lighten(loop)
    return loop, True
