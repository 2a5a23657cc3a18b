"""What the worker processes share: traffic counters in shared memory, and server state as snapshots.

Rules:
- Counters. The master maps one anonymous shared memory area per generation of workers, *before* forking them:
  one slot per worker index, in each slot one row of ``FIELDS`` (signed 64-bit) per object, objects in
  configuration order (frontends, backends, then every backend's servers). Each worker keeps counting in its own
  plain attributes (the hot path is unchanged) and copies them into its slot (workers.py: within 10 ms of a
  change, at least every ``PUBLISH_INTERVAL`` seconds, and when it stops). A view (``show stat``, ``show info``, the
  stats page, Prometheus) adds the worker's live values to the other slots: figures of the other workers are a
  few milliseconds old after a change. Gauges (current sessions,
  queue lengths) add up the same way; the max columns are the sum of each worker's maximum (an upper bound).
  A worker replacing a dead one at the same index starts its counters from the slot, so nothing counted is lost.
  A reload starts a new area: counters restart at 0 after a reload, as HAProxy's do.
- Server state. ``snapshot(server)`` is everything that defines a server's state (operational state, health
  counter, admin state, user weight, check details, whether checks are enabled, the configured weight and
  ``disabled`` it was derived from, the maxconn in force). ``apply(backend, server, snap)`` makes a server look like
  the snapshot through ``Backend.set_op/set_admin/set_weight`` and ``queue.set_maxconn`` (so balancers, queues,
  logs and views follow); check details are copied as they are. ``carry_over(snap, server)`` is the reload rule:
  admin state and user weight survive only when they were changed at run time (they differ from what the old
  configuration said) and, for the weight, when the configured weight did not change; health survives when the
  server is checked in both configurations.
- Server limits. ``SharedServed`` holds, per worker slot, the ``served`` count of each server that has a
  ``maxconn``; a worker writes its own count on every acquire/release and reads the sum, so a server's maxconn
  holds across workers (two workers deciding in the same instant may both take the last slot: the limit can be
  passed by one for that instant). The same kind of array holds the server queue lengths (``maxqueue`` across
  workers) and each frontend's live connections (workers accept in turn: runtime.py); there a slot reads
  ``ABSENT`` while its worker is not running (before it starts, after it died), so the others never stop
  accepting for the sake of a worker that cannot take the connections.
- No I/O but the shared memory itself; the master and workers move the snapshots (workers.py, master.py).

Public API:
    FIELDS; PUBLISH_INTERVAL
    layout_size(config) -> int (objects); SharedCounters(nslots, nobjects) .mm .slot_view(i)
    CounterSlot(shared, index, frontends, backends) .publish() .restore() .totals(obj) -> Totals
    Totals (attributes of FIELDS, hrsp, feconn/beconn/served, qcur, qmax, smax)
    SharedServed(nslots, nservers); ServedHandle(shared, slot, pos) .set(n) .total()
    snapshot(server) -> dict; apply(backend, server, snap, *, check_details=True); carry_over(snap, server) -> dict
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from typing import Any

# Per object, in this order; "cur" is feconn / beconn / served, "qcur" the queue length.
FIELDS: tuple[str, ...] = (
    "stot", "bin", "bout", "econ", "eresp", "wretr", "wredis", "cli_abrt", "srv_abrt", "req_tot", "chkfail",
    "chkdown", "dreq", "dresp", "ereq", "lbtot", "connect", "reuse", "intercepted",
    "h0", "h1", "h2", "h3", "h4", "h5", "cur", "smax", "qcur", "qmax",
)
_NF = len(FIELDS)
_PLAIN = FIELDS[:19]  # counters read as attributes of the same name
_GAUGES = ("cur", "qcur")  # not restored into a replacing worker: they describe live connections
PUBLISH_INTERVAL = 0.2  # seconds


def layout_size(config: Any) -> int:
    """Number of counted objects of a configuration: frontends, backends, servers."""
    return (len(config.frontends) + len(config.backends)
            + sum(len(b.servers) for b in config.backends))


class SharedCounters:
    """The shared memory of one generation: ``nslots`` slots of ``nobjects`` rows."""

    def __init__(self, nslots: int, nobjects: int) -> None:
        self.nslots = max(1, nslots)
        self.nobjects = nobjects
        self.slot_bytes = max(1, nobjects) * _NF * 8
        # anonymous + MAP_SHARED (mmap's default for fd -1): the same pages in the master and every fork
        self.mm = mmap.mmap(-1, self.nslots * self.slot_bytes)

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass


class Totals:
    """The sum over the workers of one object's counters; attribute names as the data plane's objects."""

    __slots__ = (*_PLAIN, "hrsp", "cur", "smax", "qcur", "qmax", "feconn", "beconn", "served")

    def __init__(self, values: Sequence[int]) -> None:
        for i, name in enumerate(_PLAIN):
            setattr(self, name, values[i])
        self.hrsp = list(values[19:25])
        self.cur = self.feconn = self.beconn = self.served = values[25]
        self.smax = values[26]
        self.qcur = values[27]
        self.qmax = values[28]


def _row(obj: Any) -> list[int]:
    """The FIELDS values of a live object."""
    out = [getattr(obj, name, 0) or 0 for name in _PLAIN]
    h = getattr(obj, "hrsp", None) or [0] * 6
    out.extend(h[:6])
    if hasattr(obj, "feconn"):
        cur = obj.feconn
    elif hasattr(obj, "beconn"):
        cur = obj.beconn
    else:
        cur = getattr(obj, "served", 0)
    q = getattr(obj, "queue", None)
    qcur = len(q) if q is not None else 0
    out.extend((cur, getattr(obj, "smax", cur) or 0, qcur, getattr(obj, "qmax", qcur) or 0))
    return out


def live_totals(obj: Any) -> Totals:
    """Totals of one process (no other workers)."""
    return Totals(_row(obj))


class CounterSlot:
    """One worker's slot, and the sums a view reads."""

    def __init__(self, shared: SharedCounters, index: int, frontends: Sequence[Any], backends: Sequence[Any]) -> None:
        self.shared = shared
        self.index = index
        objs: list[Any] = list(frontends) + list(backends)
        for be in backends:
            objs.extend(be.servers)
        if len(objs) != shared.nobjects:
            raise ValueError(f"counter layout mismatch: {len(objs)} objects, shared memory has {shared.nobjects}")
        self.objects = objs
        self.pos = {id(o): i for i, o in enumerate(objs)}
        self._fmt = struct.Struct(f"={_NF * len(objs)}q")
        self._row_fmt = struct.Struct(f"={_NF}q")

    def _offset(self, slot: int) -> int:
        return slot * self.shared.slot_bytes

    def publish(self) -> None:
        flat: list[int] = []
        for o in self.objects:
            flat.extend(_row(o))
        if flat:
            self._fmt.pack_into(self.shared.mm, self._offset(self.index), *flat)

    def restore(self) -> None:
        """Start from what a previous worker at this index counted (it died and this one replaces it)."""
        if not self.objects:
            return
        flat = self._fmt.unpack_from(self.shared.mm, self._offset(self.index))
        for i, o in enumerate(self.objects):
            row = flat[i * _NF:(i + 1) * _NF]
            for j, name in enumerate(_PLAIN):
                if row[j] and hasattr(o, name):
                    try:
                        setattr(o, name, row[j])
                    except AttributeError:
                        pass
            h = getattr(o, "hrsp", None)
            if isinstance(h, list) and len(h) >= 6:
                for k in range(6):
                    h[k] = row[19 + k]

    def totals(self, obj: Any) -> Totals:
        """Live values of this worker + the published values of every other slot."""
        vals = _row(obj)
        p = self.pos.get(id(obj))
        if p is None:
            return Totals(vals)
        mm = self.shared.mm
        for slot in range(self.shared.nslots):
            if slot == self.index:
                continue
            other = self._row_fmt.unpack_from(mm, self._offset(slot) + p * _NF * 8)
            for k in range(_NF):
                vals[k] += other[k]
        return Totals(vals)


class SharedServed:
    """Per worker slot, one int64 per limited server (numbered in configuration order)."""

    def __init__(self, nslots: int, nservers: int) -> None:
        self.nslots = max(1, nslots)
        self.nservers = nservers
        self.mm = mmap.mmap(-1, max(8, self.nslots * nservers * 8))

    def handle(self, slot: int, pos: int) -> ServedHandle:
        return ServedHandle(self, slot, pos)

    def column(self, slot: int, pos: int) -> tuple[memoryview, int, slice]:
        """For the hot path: the whole array as int64 items, the index of ``slot``'s count at ``pos``, and the
        slice of every slot's count at ``pos`` (``sum(view[s])`` is the total), no Python frame per access."""
        return memoryview(self.mm).cast("q"), slot * self.nservers + pos, slice(pos, None, self.nservers)

    def mark_absent(self, slot: int) -> None:
        """Every count of ``slot`` reads ABSENT until its worker writes its own (the frontends' connection counts:
        a worker that has not started or has died must not make the others stop accepting)."""
        for pos in range(self.nservers):
            _Q.pack_into(self.mm, (slot * self.nservers + pos) * 8, ABSENT)


_Q = struct.Struct("=q")
ABSENT = 1 << 40  # a slot whose worker is not running (yet): reads as far above any share


class ServedHandle:
    """One server's count in one worker's slot, and the sum over the slots."""

    __slots__ = ("mm", "own", "offsets")

    def __init__(self, shared: SharedServed, slot: int, pos: int) -> None:
        self.mm = shared.mm
        self.own = (slot * shared.nservers + pos) * 8
        self.offsets = [(i * shared.nservers + pos) * 8 for i in range(shared.nslots)]

    def set(self, n: int) -> None:
        _Q.pack_into(self.mm, self.own, n)

    def total(self) -> int:
        mm = self.mm
        return sum(_Q.unpack_from(mm, off)[0] for off in self.offsets)


def queued_servers(config: Any) -> list[tuple[str, str]]:
    """(backend, server) of every server with a maxqueue, in configuration order: the queue lengths' numbering."""
    return [(b.name, s.name) for b in config.backends for s in b.servers if s.maxqueue]


def limited_servers(config: Any) -> list[tuple[str, str]]:
    """(backend, server) of every server with a maxconn, in configuration order: the SharedServed numbering."""
    return [(b.name, s.name) for b in config.backends for s in b.servers if s.maxconn]


# --- server state ----------------------------------------------------------------------------------------------------

def snapshot(s: Any) -> dict[str, Any]:
    """A server's state as plain data (JSON-able)."""
    hs = s.hstate
    return {
        "be": s.backend.name, "srv": s.name, "op": s.op, "admin": s.admin, "w": s.uweight,
        "health": hs.health if hs is not None else None, "hup": hs.up if hs is not None else None,
        "chk": bool(getattr(s, "check_enabled", False)), "cs": s.check_status, "cc": s.check_code,
        "ci": s.check_info, "cd": s.check_duration, "chkfail": s.chkfail, "chkdown": s.chkdown,
        "iw": s.cfg.weight, "dis": bool(s.cfg.disabled), "mx": s.cfg.maxconn,
    }


def apply(backend: Any, s: Any, snap: dict[str, Any], *, check_details: bool = True) -> None:
    """Make ``s`` look like ``snap``; state changes go through the backend so every subscriber follows."""
    admin = snap.get("admin", s.admin)
    if admin != s.admin:
        backend.set_admin(s, admin, "changed by the state owner")
    w = snap.get("w", s.uweight)
    if w != s.uweight:
        try:
            backend.set_weight(s, w)
        except ValueError:
            pass  # a static algorithm refuses it here exactly as in the owner
    hs = s.hstate
    if hs is not None and snap.get("health") is not None:
        hs.health = min(max(0, int(snap["health"])), hs.full)
        hs.up = bool(snap.get("hup", hs.up))
    if "chk" in snap and hs is not None:
        s.check_enabled = bool(snap["chk"])
    op = snap.get("op", s.op)
    if op != s.op:
        backend.set_op(s, op, "changed by the state owner")
    mx = snap.get("mx", s.cfg.maxconn)
    if mx != s.cfg.maxconn:  # `set maxconn server` on the owner: the same change here
        from balancier.proxy import queue as squeue

        squeue.set_maxconn(s, mx)
    if check_details:
        s.check_status = snap.get("cs", s.check_status)
        s.check_code = snap.get("cc", s.check_code)
        s.check_info = snap.get("ci", s.check_info)
        s.check_duration = snap.get("cd", s.check_duration)


def carry_over(snap: dict[str, Any], s: Any) -> dict[str, Any]:
    """The part of an old snapshot that applies to server ``s`` of a new configuration (see the module rules)."""
    out: dict[str, Any] = {}
    old_admin = "maint" if snap.get("dis") else "ready"
    if snap.get("admin") != old_admin:
        out["admin"] = snap["admin"]
    if snap.get("w") != snap.get("iw") and snap.get("iw") == s.cfg.weight:
        out["w"] = snap["w"]
    if s.hstate is not None and snap.get("health") is not None:
        out.update(op=snap["op"], health=snap["health"], hup=snap["hup"], chk=snap["chk"])
        out.update(cs=snap.get("cs", ""), cc=snap.get("cc"), ci=snap.get("ci", ""), cd=snap.get("cd"))
    elif s.hstate is None and snap.get("op") in ("down", "stopping") and snap.get("health") is None:
        out["op"] = snap["op"]  # `set server health down` on an unchecked server stays set
    return out
