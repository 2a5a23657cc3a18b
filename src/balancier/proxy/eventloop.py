"""The data plane's event loop: uvloop when importable (else asyncio's), with its transport registry made cheap.

Rules:
- uvloop keeps every transport in a `weakref.WeakValueDictionary` keyed by file descriptor, only to refuse
  `add_reader`/`sock_*` calls on a descriptor that a live transport owns. That dictionary's `__setitem__` is
  Python code building a `KeyedRef` with a removal callback, which runs again when the transport goes: ~6 k
  instructions per connection, twice per request with `option httpclose`. `new_loop` gives that registry a
  subclass whose `__setitem__` is its inner dict's own C `__setitem__`: the registry holds each transport by a
  plain reference (a Python `__setitem__` storing a plain weak reference still cost ~1.3 k instructions per
  transport). The loop's only question, "does a live transport own this descriptor?", gets the same answer: a
  closed transport reads as not alive, as a collected one read as absent. A closed transport (whose protocol the
  loop has already dropped, so no stream is kept) stays until its descriptor number is reused, so the
  dictionary stays bounded by the highest descriptor. The registry is found among the loop's referents
  (asyncio's own loop has the same one and asks the same question); when it is not there (another uvloop),
  nothing is changed.
- Without uvloop the data plane runs on asyncio's default loop, and says so once on stderr (`main.py`).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any


class LightRegistry(weakref.WeakValueDictionary):  # type: ignore[type-arg]
    """The loop's transport registry holding its transports by plain (strong) references in ``data``.

    Each registry gets its own subclass whose ``__setitem__`` is its ``data`` dict's own (C) ``__setitem__``
    (a static method: called without the registry), so a new transport costs one dict store and no Python
    frame, weak reference or removal callback. Reads answer with the transport last registered for a
    descriptor, live or closed: the loop only asks whether a live one owns it. A closed transport (its protocol
    already cleared by the loop) stays until its descriptor number is reused or the loop goes."""

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]  # type: ignore[attr-defined]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)  # type: ignore[attr-defined]

    def __contains__(self, key: Any) -> bool:
        return key in self.data  # type: ignore[attr-defined]


def lighten(loop: Any) -> bool:
    """Give the loop's transport registry the cheap `__setitem__`; True when it was found."""
    for obj in gc.get_referents(loop):
        if type(obj) is weakref.WeakValueDictionary and not obj:
            obj.__class__ = type("LightRegistry", (LightRegistry,),
                                 {"__setitem__": staticmethod(obj.data.__setitem__),  # type: ignore[attr-defined]
                                  "__slots__": (), "__module__": __name__})
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
