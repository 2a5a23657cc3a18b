"""HAProxy's fast weighted round robin (lb_fwrr.c) for one server group, with a cycle cache. Pure code: no I/O.

Rules (spec/haproxy.md §4.2; the group balancer protocol is balance.py's):
- ``roundrobin`` is HAProxy's FWRR (lb_fwrr.c): effective weight = uweight x 16; three trees ``init``/``curr``/``next``
  ordered by an integer key with ties in insertion order; the §4.2 pick, requeue, up-insertion, down-removal and
  weight-change rules, including setting aside saturated and avoided servers.
- Cycle cache (FWRR): between two events, with no server of the group having a maxconn (so none can be saturated)
  and no server to avoid, the next pick is a function of the state alone: the node fields, the scalars and the order
  of each tree (sequence numbers only break ties, and a new entry always goes after the equal ones). So once a state
  recurs, the picks since its first occurrence repeat forever. The state is compared at window boundaries (``curr``
  and ``init`` empty, the next pick switches the trees); when the state of an earlier boundary comes back, the picks
  between them are the cycle and ``pick`` serves them from a list, the real state left where it was. Any event
  (``update`` that changes a weight, a pick with a server to avoid, ``served_changed`` of a server with a maxconn)
  first brings the real state exactly to the cycle's position: restore the last checkpoint before it (states saved
  every ``max(512, 16 x servers)`` picks while recording) and replay the picks since, then drops the cache and looks
  for a cycle again. Bounds: a cycle is at most MAX_CYCLE picks (no cache when the window, ~ next_weight picks, is
  longer), at most 2 x MAX_CYCLE picks are recorded and 8 windows watched; past that, the plain algorithm until the
  next event. ``Fwrr(servers, cache=False)`` is the plain algorithm, and ``state()`` the canonical state either way.

Public API:
    Fwrr(servers, cache=True); .pick(client_ip, avoid), .update(s), .served_changed(s); .cached -> bool (picks
    served from a cycle); .state() -> canonical state tuple; MAX_CYCLE
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from itertools import count
from operator import length_hint
from typing import Any

# HAProxy's scales: user weights are 0..256, dynamic algorithms multiply them by 16.
BE_WEIGHT_SCALE = 16
SRV_UWGHT_RANGE = 256
SRV_EWGHT_MAX = SRV_UWGHT_RANGE * BE_WEIGHT_SCALE  # 4096


# Ties in a tree are served in insertion order, as in HAProxy's ebtrees; one counter for the module suffices.
_seq = count()


class _Tree:
    """A sorted list of (key, seq, node): first() is the smallest key, FIFO among equal keys."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[int, int, _Node]] = []

    def insert(self, node: _Node, key: int) -> None:
        entry = (key, next(_seq), node)
        insort(self.items, entry)
        node.entry = entry
        node.tree = self

    def first(self) -> _Node | None:
        return self.items[0][2] if self.items else None


class _Node:
    __slots__ = ("srv", "cur_eweight", "next_eweight", "npos", "lpos", "rweight", "tree", "entry")

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.cur_eweight = 0
        self.next_eweight = 0
        self.npos = 0
        self.lpos = 0
        self.rweight = 0
        self.tree: _Tree | None = None
        self.entry: tuple[int, int, _Node] | None = None

    def dequeue(self) -> None:
        if self.tree is not None and self.entry is not None:
            items = self.tree.items
            i = bisect_left(items, self.entry)
            if i < len(items) and items[i] is self.entry:
                del items[i]
        self.tree = None
        self.entry = None


def _dyn_eweight(s: Any) -> int:
    return s.uweight * BE_WEIGHT_SCALE if s.usable else 0


# The cycle cache's modes and bounds (module docstring, "Cycle cache").
_IDLE, _WATCHING, _SERVING = 0, 1, 2
MAX_CYCLE = 65536  # the longest cycle served from memory, in picks (one list entry each)
_RECORD_LIMIT = 2 * MAX_CYCLE  # picks recorded while looking for a cycle (the cycle may start a window late)
_SERVE_MIN = 1024  # a short cycle is repeated up to this length, so that the end of the list is rarely reached

# A canonical state: curr_pos, curr_weight, next_weight; per node (npos, lpos, rweight, cur_eweight,
# next_eweight); per tree (curr, init, next) its entries in order as (key, node index). Sequence numbers are left
# out: only the order they give matters, and a restored tree gets fresh ones in the same order.
_State = tuple[int, int, int, tuple[tuple[int, int, int, int, int], ...], tuple[tuple[tuple[int, int], ...], ...]]


class Fwrr:
    """HAProxy's fast weighted round robin for one group, with its periodic sequence replayed from memory."""

    # Bound per instance to the mode's path (_compute, _pick_watching or _pick_cached), so that a pick tests
    # nothing that belongs to another mode.
    pick: Callable[..., Any]

    def __init__(self, servers: Sequence[Any], cache: bool = True) -> None:
        self.nodes: dict[Any, _Node] = {}
        self.curr = _Tree()
        self.init = _Tree()
        self.next = _Tree()
        self.next_weight = 0
        for s in servers:
            n = _Node(s)
            self.nodes[s] = n
            w = _dyn_eweight(s)
            n.cur_eweight = n.next_eweight = w
            if w > 0:
                self._queue_by_weight(self.init, n)
                self.next_weight += w
        self.curr_pos = self.curr_weight = self.next_weight
        # The cycle cache: `cache=False` gives the plain algorithm (the reference the tests compare with).
        self.cache = cache
        self._order = list(self.nodes.values())
        self._index = {n: i for i, n in enumerate(self._order)}
        self._spacing = max(512, 16 * len(self._order))  # picks between two checkpoints, at most
        self._mode = _IDLE
        self._budget = 0  # picks still allowed to find a cycle
        self._rec: list[Any] | None = None  # picks since the first window boundary (None: none seen yet)
        self._marks: dict[_State, int] = {}  # state at each boundary -> index in _rec
        self._checkpoints: list[tuple[int, _State]] = []  # (index in _rec, or in the cycle while serving; state)
        self._next_cp = 0
        self._period = 0
        self._served: list[Any] = []  # the cycle, repeated up to _SERVE_MIN picks
        self._it = iter(self._served)
        self._next: Callable[[], Any] = self._it.__next__
        self.pick = self._compute
        self._watch()

    # --- tree helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _queue_by_weight(tree: _Tree, n: _Node) -> None:
        tree.insert(n, SRV_EWGHT_MAX - n.next_eweight)

    def _queue_srv(self, n: _Node) -> None:
        w = n.next_eweight
        if w <= 0:
            n.dequeue()
        elif n.npos >= 2 * self.curr_weight or n.npos >= self.curr_weight + self.next_weight:
            # Does not fit in this window: wait for the next one, where only its weight matters.
            n.npos -= self.curr_weight
            self._queue_by_weight(self.next, n)
        else:
            self.curr.insert(n, SRV_UWGHT_RANGE * n.npos + (SRV_EWGHT_MAX + n.rweight - w) // BE_WEIGHT_SCALE)

    def _get_srv(self, n: _Node) -> None:
        """Prepare a server being taken out of its tree for re-positioning."""
        if n.tree is self.init:
            n.npos = n.rweight = 0
        elif n.tree is self.next:
            n.npos += self.curr_weight
        elif n.tree is None:
            n.npos = self.curr_pos

    def _switch_trees(self) -> None:
        self.init, self.next = self.next, self.init
        self.curr_weight = self.next_weight
        self.curr_pos = self.curr_weight

    def _from_group(self) -> _Node | None:
        s1 = self.curr.first()
        if s1 is not None and s1.cur_eweight and s1.npos <= self.curr_pos:
            return s1
        # No server left in curr, or a hole: a server from init (fresh in this window) is a better proposal.
        s2 = self.init.first()
        if s2 is not None and s2.cur_eweight:
            s2.npos = 0
            s2.rweight = 0
            return s2
        return s1

    def _update_position(self, n: _Node) -> None:
        w = n.cur_eweight
        if not w:
            return
        if not n.npos:
            n.npos = self.curr_pos  # first time ever for this server
        n.lpos = n.npos
        n.npos += self.next_weight // w
        n.rweight += self.next_weight % w
        if n.rweight >= w:
            n.rweight -= w
            n.npos += 1

    # --- the algorithm ----------------------------------------------------------------------------------------
    def _compute(self, client_ip: str = "", avoid: Any = None, unlimited: bool = False) -> Any:
        """One pick (§4.2). `unlimited`: as if no server had a maxconn (replaying a cycle recorded so)."""
        if self.next_weight == 0:
            return None  # no usable server in this group
        cw = self.curr_weight
        if avoid is None and cw:
            # Fast path, the first turn of the loop below when it takes the head of `curr`: same steps, fewer calls.
            items = self.curr.items
            if items:
                h = items[0][2]
                s = h.srv
                w = h.cur_eweight
                npos = h.npos
                pos = self.curr_pos
                if w and npos <= pos and (unlimited or not s.cfg.maxconn or not s.saturated):
                    # _update_position(h), inline
                    if not npos:
                        npos = pos
                    h.lpos = npos
                    nw = self.next_weight
                    npos += nw // w
                    rw = h.rweight + nw % w
                    if rw >= w:
                        rw -= w
                        npos += 1
                    h.rweight = rw
                    h.npos = npos
                    del items[0]  # h.dequeue() for the head of its tree
                    self.curr_pos = pos + 1
                    # _queue_srv(h), inline for its usual outcome (back into curr); the other cases call it
                    w = h.next_eweight
                    if w > 0 and npos < 2 * cw and npos < cw + nw:
                        entry = (SRV_UWGHT_RANGE * npos + (SRV_EWGHT_MAX + rw - w) // BE_WEIGHT_SCALE, next(_seq), h)
                        insort(items, entry)
                        h.entry = entry
                    else:
                        h.tree = None
                        h.entry = None
                        self._queue_srv(h)
                    return s
        switched = False
        avoided: _Node | None = None
        full: list[_Node] = []
        n: _Node | None = None
        take = False
        while True:
            if not self.curr_weight:
                self.curr_pos = self.curr_weight = self.next_weight
            while True:
                n = self._from_group()
                if n is not None:
                    break
                if switched:
                    if avoided is not None:
                        n = avoided
                        take = True
                    break
                switched = True
                self._switch_trees()
            if n is None or take:
                break
            self._update_position(n)
            n.dequeue()
            self.curr_pos += 1
            s = n.srv
            if unlimited or not s.saturated:
                if s is not avoid or avoided is not None:
                    take = True
                    break
                avoided = n
            # Saturated or avoided: set aside, requeued below.
            full.append(n)
        if take and n is not None:
            self._queue_srv(n)
        # Requeue what was set aside, most recent first (HAProxy chains them LIFO).
        for f in reversed(full):
            if f is n and take:
                continue
            if switched:
                self._queue_by_weight(self.init, f)
            else:
                self._queue_srv(f)
        return n.srv if take and n is not None else None

    # --- events ------------------------------------------------------------------------------------------------
    def update(self, s: Any) -> None:
        n = self.nodes[s]
        new = _dyn_eweight(s)
        if n.cur_eweight == new and n.next_eweight == new:
            return  # nothing changes, and a cached cycle stays valid
        self._leave()
        self._update(n, n.cur_eweight, new)
        self._watch()

    def _update(self, n: _Node, old: int, new: int) -> None:
        n.next_eweight = new
        if old == new:
            return
        if old == 0:
            # Coming up: inserted at a position proportional to what remains of the window.
            self.next_weight += new
            self._get_srv(n)
            n.npos = self.curr_pos + (self.next_weight + self.curr_weight - self.curr_pos) // new
            n.cur_eweight = new
            self._queue_srv(n)
            return
        if new == 0:
            # Going down: removed, and the total drops at once.
            self.next_weight -= old
            n.dequeue()
            n.cur_eweight = 0
            return
        self.next_weight = self.next_weight - old + new
        if n.tree is self.init:
            n.dequeue()
            self._queue_by_weight(self.init, n)
        elif n.tree is None:
            self._get_srv(n)
            n.npos = self.curr_pos + (self.next_weight + self.curr_weight - self.curr_pos) // new
            self._queue_srv(n)
        else:
            self._get_srv(n)
            prev_next = n.npos
            step = self.next_weight // new
            n.npos = n.lpos + step
            n.rweight = 0
            if n.npos > prev_next:
                n.npos = prev_next
            if n.npos < self.curr_pos + 2:
                n.npos = self.curr_pos + step
            n.dequeue()
            self._queue_srv(n)
        n.cur_eweight = new

    def served_changed(self, s: Any) -> None:
        # Called after `set maxconn server` (and queue changes, which need a maxconn): a server with a maxconn can
        # be saturated, which the cache cannot foresee; without one any more, a cycle may be looked for again.
        if s.cfg.maxconn:
            if self._mode != _IDLE:
                self._leave()
        elif self._mode == _IDLE:
            self._watch()

    @property
    def cached(self) -> bool:
        """Whether picks are served from a recorded cycle."""
        return self._mode == _SERVING

    def state(self) -> _State:
        """The canonical state the next pick starts from, the same with or without the cache (changes nothing)."""
        if self._mode != _SERVING:
            return self._snapshot()
        real = self._snapshot()
        self._materialize()
        state = self._snapshot()
        self._restore(real)
        return state

    # --- the cycle cache -----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Start looking for a cycle (after construction or an event), unless no cycle can be cached."""
        self._drop()
        if self.cache and 0 < self.next_weight <= MAX_CYCLE and not self._limited():
            self._mode = _WATCHING
            # A window is about next_weight picks; the first boundary, a late start and a cycle of a few windows
            # fit in 8 of them.
            self._budget = 8 * self.next_weight + 64
            self.pick = self._pick_watching

    def _drop(self) -> None:
        """Forget the recording or the cycle; the real state must be current (see _leave)."""
        self._mode = _IDLE
        self.pick = self._compute
        self._rec = None
        self._marks = {}
        self._checkpoints = []
        self._served = []
        self._it = iter(self._served)
        self._next = self._it.__next__

    def _leave(self) -> None:
        """Before an event: bring the real state to where the cycle stands, then use the plain algorithm."""
        if self._mode == _SERVING:
            self._materialize()
        self._drop()

    def _limited(self) -> bool:
        return any(n.srv.cfg.maxconn for n in self._order)

    def _pick_watching(self, client_ip: str = "", avoid: Any = None) -> Any:
        s = self._compute(client_ip, avoid)
        if avoid is not None:
            # Not the plain sequence: what was recorded cannot be part of a cycle.
            self._rec = None
            self._marks = {}
            self._checkpoints = []
        elif s is not None:
            self._observe(s)
        self._budget -= 1
        if self._budget < 0 and self._mode == _WATCHING:
            self._drop()  # no cycle within bounds: the plain algorithm until the next event
        return s

    def _observe(self, s: Any) -> None:
        rec = self._rec
        if rec is not None:
            rec.append(s)
        if self.curr.items or self.init.items:
            if rec is not None:
                n = len(rec)
                if n >= self._next_cp:
                    self._checkpoints.append((n, self._snapshot()))
                    self._next_cp = n + self._spacing
                if n > _RECORD_LIMIT:
                    self._drop()
            return
        # A window boundary: every server waits in `next`, the next pick switches the trees.
        if self._limited():
            self._drop()  # a limit the owner did not announce: saturation may change the sequence
            return
        state = self._snapshot()
        if rec is None:
            self._rec = []
            self._marks = {state: 0}
            self._checkpoints = [(0, state)]
            self._next_cp = self._spacing
            return
        n = len(rec)
        j = self._marks.get(state)
        if j is None:
            self._marks[state] = n
            self._checkpoints.append((n, state))
            self._next_cp = n + self._spacing
        elif n - j > MAX_CYCLE:
            self._drop()
        else:
            self._serve(rec[j:], [(i - j, st) for i, st in self._checkpoints if i >= j])

    def _serve(self, cycle: list[Any], checkpoints: list[tuple[int, _State]]) -> None:
        """The state now is the state at the cycle's start: the picks repeat from here, served from the list."""
        self._mode = _SERVING
        self._rec = None
        self._marks = {}
        self._checkpoints = checkpoints
        self._period = len(cycle)
        self._served = cycle * -(-_SERVE_MIN // len(cycle))
        self._it = iter(self._served)
        self._next = self._it.__next__
        self.pick = self._pick_cached

    def _pick_cached(self, client_ip: str = "", avoid: Any = None) -> Any:
        if avoid is None:
            try:
                return self._next()
            except StopIteration:
                self._it = iter(self._served)
                self._next = self._it.__next__
                return self._next()
        self._leave()
        s = self._compute(client_ip, avoid)
        self._watch()
        return s

    def _materialize(self) -> None:
        """Set the real state to the cycle's position: the last checkpoint before it, then the picks since."""
        pos = (len(self._served) - length_hint(self._it)) % self._period
        k = bisect_right(self._checkpoints, pos, key=lambda c: c[0]) - 1
        at, state = self._checkpoints[k]
        self._restore(state)
        # The servers may have changed already (a maxconn set): replay the cycle's conditions, no limits.
        compute = self._compute
        served = self._served
        for i in range(at, pos):
            s = compute("", None, True)
            assert s is served[i], "the replay left the recorded cycle"

    def _snapshot(self) -> _State:
        index = self._index
        return (self.curr_pos, self.curr_weight, self.next_weight,
                tuple([(n.npos, n.lpos, n.rweight, n.cur_eweight, n.next_eweight) for n in self._order]),
                tuple([tuple([(e[0], index[e[2]]) for e in t.items]) for t in (self.curr, self.init, self.next)]))

    def _restore(self, state: _State) -> None:
        self.curr_pos, self.curr_weight, self.next_weight, fields, trees = state
        order = self._order
        for n, f in zip(order, fields, strict=True):
            n.npos, n.lpos, n.rweight, n.cur_eweight, n.next_eweight = f
            n.tree = None
            n.entry = None
        for tree, entries in zip((self.curr, self.init, self.next), trees, strict=True):
            items = []
            for key, i in entries:
                n = order[i]
                e = (key, next(_seq), n)
                items.append(e)
                n.entry = e
                n.tree = tree
            tree.items = items
