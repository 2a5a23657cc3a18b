"""Server and backend queues under `maxconn` (HAProxy §9).

Rules:
- A request already assigned to a server (cookie persistence) that finds it saturated waits in that server's queue;
  a request still to be balanced waits in the backend queue when every usable server is saturated.
- `maxqueue` bounds a server queue (0 = unlimited); the stream decides what a full queue means (redispatch or 503).
- When a slot frees on a server (`release`), the oldest entry of the server's queue and of the backend queue
  (compared by enqueue time) gets that server directly, as HAProxy's `process_srv_queue` does: the waiter is
  `acquire`d on the server *before* it is woken, so nobody can steal the slot in between. Backend-queue entries
  only take a server that is usable for load balancing.
- Waiters are plain objects with a `dequeued(server)` callback (no futures: the stream is a callback protocol).
  A waiter that leaves (client abort, `timeout queue`) is removed with `cancel()`.
- The deques themselves live on the `Server`/`Backend` objects (their length is a stats column and feeds
  `saturated`); this module owns their entries.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from balancier.proxy.servers import Backend, Server


class Waiter(Protocol):
    def dequeued(self, server: Server) -> None: ...


class Pending:
    __slots__ = ("waiter", "since", "server", "backend")

    def __init__(self, waiter: Waiter, since: float, backend: Backend, server: Server | None) -> None:
        self.waiter = waiter
        self.since = since
        self.backend = backend
        self.server = server  # None: in the backend queue


def limit(server: Server) -> int:
    """The server's current concurrency limit, 0 = unlimited (the dynamic minconn/fullconn limit)."""
    return server.dyn_maxconn


def has_room(server: Server) -> bool:
    lim = limit(server)
    return lim == 0 or server.occupancy < lim  # occupancy: `served` summed over the worker processes


def enqueue(waiter: Waiter, now: float, backend: Backend, server: Server | None) -> Pending:
    p = Pending(waiter, now, backend, server)
    if server is not None:
        server.queue.append(p)
        if server.gqueued is not None:
            server.gqueued.set(len(server.queue))
        backend.requeue_changed(server)
    else:
        backend.queue.append(p)
    return p


def cancel(p: Pending) -> None:
    q = p.server.queue if p.server is not None else p.backend.queue
    try:
        q.remove(p)
    except ValueError:
        return
    if p.server is not None:
        published(p.server)
        p.backend.requeue_changed(p.server)


def server_queue_full(server: Server) -> bool:
    mq = server.cfg.maxqueue
    if mq <= 0:
        return False
    g = server.gqueued  # several workers: the queue is the sum of theirs
    return (g.total() if g is not None else len(server.queue)) >= mq


def published(server: Server) -> None:
    """This worker's queue length for `server`, after a change, where the other workers read it."""
    if server.gqueued is not None:
        server.gqueued.set(len(server.queue))


def release(backend: Backend, server: Server) -> None:
    """A stream is done with `server`: free its slot and hand it to a waiter, if any waits."""
    backend.release(server)
    if server.queue or backend.queue:
        on_release(backend, server)


def on_release(backend: Backend, server: Server) -> None:
    """Called right after `backend.release(server)`: hand the freed slot(s) to the oldest waiters."""
    sq = server.queue
    bq = backend.queue
    while (sq or bq) and has_room(server):
        take_backend = False
        if bq and server.usable:
            take_backend = not sq or bq[0].since < sq[0].since
        if take_backend:
            p = bq.popleft()
        elif sq:
            p = sq.popleft()
            published(server)
        else:
            return
        backend.acquire(server)
        if p.server is not None:
            backend.requeue_changed(server)
        p.waiter.dequeued(server)


def set_maxconn(server: Server, maxconn: int) -> None:
    """`set maxconn server`: the new limit (a minconn equal to the old maxconn follows it: the server had no
    dynamic range), then the slots a higher limit frees go to the server's and the backend's waiters."""
    cfg = server.cfg
    if cfg.minconn and cfg.minconn == cfg.maxconn:
        server.cfg = dataclasses.replace(cfg, maxconn=maxconn, minconn=maxconn)
    else:
        server.cfg = dataclasses.replace(cfg, maxconn=maxconn)
    backend = server.backend
    backend.requeue_changed(server)
    on_release(backend, server)


def wake_backend(backend: Backend) -> None:
    """A server became usable (or its weight/limit changed): let backend-queue waiters try every server."""
    for server in backend.servers:
        if not backend.queue:
            return
        if server.usable:
            on_release(backend, server)
