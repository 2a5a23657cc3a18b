"""The daemon's work as DC and as executor node: transitions, results, admin changes, clean shutdown.

:class:`DaemonActions` is a part of :class:`balancier.cluster.daemon.Daemon` (its base class), kept
in its own file so that each stays readable; the rules it follows are stated in daemon.py's
docstring (executor wiring, probing, the ordering of a planned move, admin changes, clean
shutdown). What decides is elsewhere: graph.py (which action is ready, when a transition ends),
changes.py (what an administrator's change does to the CIB), policy.py (what to do next).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from balancier.cluster import cib as cibops
from balancier.cluster import statusfmt
from balancier.cluster.changes import ChangeError, apply_change, describe
from balancier.cluster.config import ClusterConfig
from balancier.cluster.definition import Definitions
from balancier.cluster.executor import Executor
from balancier.cluster.graph import Graph
from balancier.cluster.membership import Membership
from balancier.cluster.model import Cib, OpResult, ResourceConfig
from balancier.cluster.notify import Notifier

log = logging.getLogger("balancier.cluster")

ADMIN_FORWARD_TIMEOUT = 10.0  # a change forwarded to the DC gets its answer within this, or 503
SHUTDOWN_TIMEOUT = 120.0  # a SIGTERMed node waits this long for the DC to move its resources away


def _version_text(v: tuple[int, ...] | list[int]) -> str:
    return ".".join(str(x) for x in v)


@dataclasses.dataclass
class _Op:
    """An action as the executor reads it (ActionLike), rebuilt from a cluster message."""

    kind: str
    resource: str | None
    interval_ms: int
    timeout_ms: int


class DaemonActions:
    """The Daemon's state this part reads and writes (set by Daemon.__init__)."""

    cfg: ClusterConfig
    keepalive: float
    me: str
    generation: int
    dc: str | None
    cib: Cib
    claims: dict[str, str | None]
    peer_generation: dict[str, int]
    membership: Membership
    unclean: set[str]
    events: Any
    state_sentence: str
    last_transition: dict[str, Any] | None
    scheduled_version: tuple[int, int, int] | None
    executor: Executor
    graph: Graph | None
    graphs_run: int
    unsent_results: list[OpResult]
    failures: dict[tuple[str, str, str, int], OpResult]
    tasks: set[asyncio.Task[Any]]
    admin_waiters: dict[str, asyncio.Future[dict[str, Any]]]
    admin_seq: int
    leaving: dict[str, bool]
    shutdown_since: float | None
    shutdown_asked: str | None
    shutdown_granted: bool
    definitions: Definitions
    op_resources: dict[str, ResourceConfig]
    ops_running: dict[str, int]
    notifier: Notifier
    last_home: dict[str, str]
    _wake: asyncio.Event
    _stopping: bool
    dispatched: bool
    _adopt: Callable[[Cib, str], None]
    _send_message: Callable[[str, dict[str, Any]], None]

    # ---- executor messages: the DC sends actions, nodes send results back ---------------------

    def _msg_op(self, sender: str, message: dict[str, Any], attempt: int = 0) -> None:
        if sender != self.dc and self.claims.get(sender) != sender:
            # A new DC's first actions can overtake its first heartbeat (the one that carries its claim): look
            # again every keepalive for up to a deadtime before refusing, instead of making the DC wait out the
            # action's timeout.
            if attempt * self.keepalive < self.cfg.deadtime_ms / 1000.0:
                asyncio.get_running_loop().call_later(self.keepalive, self._msg_op, sender, message, attempt + 1)
                return
            log.warning("ignored an action from %s, which is not the DC", sender, extra={"component": "executor"})
            return
        try:
            a = message["action"]
            op = _Op(str(a["kind"]), str(a["resource"]), int(a["interval_ms"]), int(a["timeout_ms"]))
            res = ResourceConfig.from_dict(message["resource"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("bad action from %s: %s", sender, exc, extra={"component": "executor"})
            return
        self._run_local(op, res)

    def _msg_op_result(self, sender: str, message: dict[str, Any]) -> None:
        try:
            result = OpResult.from_dict(message["result"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("bad result from %s: %s", sender, exc, extra={"component": "executor"})
            return
        if result.node != sender:
            log.warning("ignored a result for %s sent by %s", result.node, sender, extra={"component": "executor"})
            return
        if self.dc != self.me:
            log.info("result of %s %s from %s arrived after this node stopped being DC; dropped", result.op,
                     result.resource, sender, extra={"component": "executor"})
            return
        self._record(result)

    def _msg_admin(self, sender: str, message: dict[str, Any]) -> None:
        if self.dc != self.me:
            answer = {"ok": False, "status": 503, "error": f"{self.me} is not the DC (the DC is {self.dc or 'NONE'})"}
        else:
            answer = self.admin_change(str(message.get("op")), dict(message.get("args") or {}),
                                       f"{message.get('user')}@{sender}")
        self._send_message(sender, {"type": "admin_reply", "id": message.get("id"), "answer": answer})

    def _msg_admin_reply(self, sender: str, message: dict[str, Any]) -> None:
        fut = self.admin_waiters.pop(str(message.get("id")), None)
        if fut is not None and not fut.done():
            fut.set_result(dict(message.get("answer") or {}))

    def _msg_shutdown_request(self, sender: str, message: dict[str, Any]) -> None:
        if self.dc == self.me and sender not in self.leaving:
            log.info("%s asks to leave: moving its resources away first", sender, extra={"component": "shutdown"})
            self.leaving[sender] = False

    def _msg_shutdown_ok(self, sender: str, message: dict[str, Any]) -> None:
        if sender == self.dc and self.shutdown_since is not None:
            self.shutdown_granted = True

    handlers = {"op": _msg_op, "op_result": _msg_op_result, "admin": _msg_admin, "admin_reply": _msg_admin_reply,
                 "shutdown_request": _msg_shutdown_request, "shutdown_ok": _msg_shutdown_ok}

    def _run_local(self, op: _Op, res: ResourceConfig) -> None:
        """Run an action on this node's executor; its result comes back through the report callback."""
        task = asyncio.get_running_loop().create_task(self._execute(op, res))
        self.dispatched = True
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _execute(self, op: _Op, res: ResourceConfig) -> None:
        self.op_resources[res.id] = res
        self.ops_running[res.id] = self.ops_running.get(res.id, 0) + 1
        try:
            await self.definitions.learn(res)  # before the result is stamped: can its agent reload?
            result = await self.executor.execute(op, res)
        finally:
            self.ops_running[res.id] -= 1
        if op.kind == "reload" and result.ok:
            # the recurring monitors still check the old definition (e.g. the old file's listeners)
            for rid, interval in self.executor.monitors():
                if rid == res.id:
                    mon = res.op("monitor", interval)
                    self.executor.start_monitor(res, interval, mon.timeout_ms if mon is not None else 20_000)

    async def _definition_watch(self, period: float = 1.0) -> None:
        """Run a resource's recurring monitor at once when the file its agent reads changed (definition.py)."""
        busy: set[str] = set()

        async def refresh(res: ResourceConfig, interval: int) -> None:
            try:
                mon = res.op("monitor", interval)
                await self.executor.run(res, "monitor", mon.timeout_ms if mon is not None else 20_000, interval)
            finally:
                busy.discard(res.id)
        while True:
            await asyncio.sleep(period)
            for rid, interval in self.executor.monitors():
                res = self.op_resources.get(rid)
                if res is None or rid in busy or self.ops_running.get(rid) or not self.definitions.changed(res):
                    continue
                log.info("the definition of %s changed on disk: monitoring it now", rid,
                         extra={"component": "executor"})
                busy.add(rid)
                task = asyncio.get_running_loop().create_task(refresh(res, interval))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def _notify_result(self, result: OpResult) -> None:
        """Hook events for an operation on this node (notify.py)."""
        if result.op == "start" and result.ok:
            self.notifier.notify("resource-started", result.node, result.resource,
                                 f"{result.resource} started on {result.node}")
        elif result.op == "stop" and result.ok:
            self.notifier.notify("resource-stopped", result.node, result.resource,
                                 f"{result.resource} stopped on {result.node}")
        elif not result.ok:
            how = "timed out" if result.timed_out else f"failed (rc={result.rc})"
            what = "probe" if result.is_probe else result.op
            self.notifier.notify("resource-failed", result.node, result.resource,
                                 f"{what} of {result.resource} on {result.node} {how}")

    def _on_local_result(self, result: OpResult) -> None:
        """The executor's report callback: a result goes to the DC (recorded at once when we are it)."""
        result = self.definitions.stamp(result, self.op_resources.get(result.resource)
                                        or self.executor.resource(result.resource))
        self._notify_result(result)
        if self.dc == self.me:
            self._record(result)
        else:
            self.unsent_results.append(result)
            del self.unsent_results[:-200]
            self._flush_results()
        self._wake.set()

    def _flush_results(self) -> None:
        if self.dc is None or self.dc == self.me or self.dc not in self.peer_generation:
            return
        for result in self.unsent_results:
            self._send_message(self.dc, {"type": "op_result", "result": result.to_dict()})
        self.unsent_results.clear()

    def _record(self, result: OpResult) -> None:
        """DC: write a result into the CIB and account for it in the running transition."""
        try:
            new = cibops.record_op(self.cib, result)
        except cibops.CibError as exc:
            log.warning("result of %s %s on %s not recorded: %s", result.op, result.resource, result.node, exc,
                        extra={"component": "executor"})
            return
        self._adopt(new, f"{result.op} {result.resource} on {result.node}")
        if result.op == "start" and result.ok:
            home = self.last_home.get(result.resource)
            if home is not None and home != result.node:
                self.notifier.notify("resource-moved", result.node, result.resource,
                                     f"{result.resource} moved from {home} to {result.node}")
            self.last_home[result.resource] = result.node
        if not result.ok:
            self.failures[(result.resource, result.node, result.op, result.interval_ms)] = result
        self.failures = {k: f for k, f in self.failures.items() if f in self._current_failures()}
        g = self.graph
        if g is not None:
            g.result(result)
            if g.aborted is None:
                g.base = self.cib.version  # an expected result: the transition goes on
        elif not result.ok:
            log.warning("%s %s on %s failed (rc=%d): scheduling again", result.op, result.resource, result.node,
                        result.rc, extra={"component": "executor"})
        self._wake.set()

    def _own_history(self, cib: Cib) -> Cib:
        """A new DC's own node: the replicated history plus every newer result of this node's executor."""
        mine = [o.call_id for rs in cib.status.resources if rs.node == self.me for o in rs.ops]
        known = max(mine, default=0)
        added = 0
        for result in sorted(self.executor.history, key=lambda r: r.call_id):
            if result.call_id <= known or cib.configuration.resource(result.resource) is None:
                continue
            try:  # (unstamped: a result without digests never makes a definition look stale)
                cib = cibops.record_op(cib, result)
            except cibops.CibError:
                continue
            added += 1
        self.unsent_results.clear()  # recorded here now: there is no other DC to send them to
        if added:
            log.info("added %d result(s) of this node's executor to its history as the new DC", added,
                     extra={"component": "executor"})
        return cib

    def _active_on(self, node: str) -> list[str]:
        return [rs.resource for rs in self.cib.status.resources
                if rs.node == node and rs.state in ("started", "failed", "blocked")]

    def _release_leaving(self) -> None:
        idle = self.graph is None and self.scheduled_version == self.cib.version
        for node, told in list(self.leaving.items()):
            if told or not idle or self._active_on(node):
                continue
            self.leaving[node] = True
            log.info("%s may leave: nothing runs there any more", node, extra={"component": "shutdown"})
            if node == self.me:
                self.shutdown_granted = True
            else:
                self._send_message(node, {"type": "shutdown_ok"})

    def _run_graph(self, now: float) -> str:
        """Send every ready action of the running transition; returns a sentence while one runs."""
        g = self.graph
        if g is None:
            return ""
        if self.cib.version != g.base:
            g.abort(f"the CIB changed to {_version_text(self.cib.version)} during the transition")
        g.lost(now)
        for a in [a for a in g.actions if a.id in g.in_flight and a.kind == "fence"]:
            if a.node not in self.unclean:
                g.complete(a.id)
        for a in g.ready():
            g.sent(a, now)
            if a.kind == "clear_failcount":
                assert a.resource is not None
                self._adopt(cibops.clear_failcount(self.cib, a.resource, a.node), f"{a}")
                g.base = self.cib.version
                g.complete(a.id)
                continue
            if a.kind == "fence":
                continue  # done when the fencing of the node succeeds (see _fence)
            res = self.cib.configuration.resource(a.resource or "")
            if res is None:
                g.abort(f"{a}: no such resource")
                g.in_flight.pop(a.id, None)
                continue
            log.info("action %d: %s", a.id, a, extra={"component": "executor", "peer": a.node})
            op = _Op(a.kind, a.resource, a.interval_ms, a.timeout_ms)
            if a.node == self.me:
                self._run_local(op, res)
            else:
                self._send_message(a.node, {"type": "op", "action": dataclasses.asdict(op),
                                            "resource": res.to_dict()})
        if not g.finished:
            return f"transition {self.graphs_run}: {len(g.done)}/{len(g.actions)} actions done"
        self.graph = None
        if self.last_transition is not None:
            self.last_transition["graph"] = g.summary()
        if g.aborted is not None:
            log.info("transition %d aborted: %s; scheduling again", self.graphs_run, g.aborted,
                     extra={"component": "executor"})
            self.scheduled_version = None
            self._wake.set()
        elif g.actions:
            log.info("transition %d complete: %d action(s)", self.graphs_run, len(g.actions),
                     extra={"component": "executor"})
            self._wake.set()
        return ""

    # ---- admin interface (api.py calls these) ---------------------------------------------------

    def _current_failures(self) -> list[OpResult]:
        """Remembered failures whose resource still has a fail count, or whose result is still the latest."""
        keep = []
        for f in self.failures.values():
            rs = self.cib.resource_status(f.resource, f.node)
            if rs.fail_count > 0 or f in rs.ops:
                keep.append(f)
        return keep

    def status_document(self) -> dict[str, Any]:
        """What GET /api/status answers: this node's view (statusfmt.status_document)."""
        doc = statusfmt.status_document(
            self.cib, cluster=self.cfg.name, node=self.me, dc=self.dc,
            quorum=self.cib.have_quorum if self.dc is not None else None,
            members=list(self.membership.members()), transition=self.last_transition, now=time.time(),
            failures=self._current_failures())
        doc["monitors"] = [{"resource": r, "interval_ms": i} for r, i in self.executor.monitors()]
        doc["state"] = self.state_sentence
        return doc

    def admin_change(self, op: str, args: dict[str, Any], user: str) -> dict[str, Any]:
        """DC: apply an administrator's change; answer with the transition it leads to."""
        what = describe(op, args)
        wall = time.time()
        try:
            new = apply_change(self.cib, op, args, wall)
        except ChangeError as exc:
            log.warning("refused %s (by %s): %s", what, user, exc.message, extra={"component": "admin", "user": user})
            return {"ok": False, "status": exc.status, "error": exc.message}
        before = self.cib.version
        self._adopt(new, what)
        from balancier.cluster.policy import schedule

        transition = schedule(self.cib, wall)
        sentence = f"{what} by {user}: CIB {_version_text(before)} -> {_version_text(self.cib.version)}"
        log.info("%s", sentence, extra={"component": "admin", "user": user})
        self.events.append({"t": round(wall, 3), "kind": "admin", "node": self.me, "sentence": sentence})
        self._wake.set()
        return {"ok": True, "status": 200, "change": what, "user": user, "dc": self.me,
                "cib_version": _version_text(self.cib.version), "changed": before != self.cib.version,
                "transition": {"reasons": list(transition.reasons), "placement": dict(transition.placement),
                               "actions": [str(a) for a in transition.actions]}}

    async def admin(self, op: str, args: dict[str, Any], user: str) -> dict[str, Any]:
        """Any node: apply a change on the DC (here, or forwarded over the reliable channel)."""
        if self.dc == self.me:
            return self.admin_change(op, args, user)
        if self.dc is None or self.dc not in self.peer_generation:
            return {"ok": False, "status": 503, "error": "no DC: changes need a DC (is the cluster quorate?)"}
        self.admin_seq += 1
        rid = f"{self.me}-{self.generation}-{self.admin_seq}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.admin_waiters[rid] = fut
        self._send_message(self.dc, {"type": "admin", "id": rid, "op": op, "args": args, "user": user})
        log.info("forwarded %s (by %s) to the DC %s", describe(op, args), user, self.dc,
                 extra={"component": "admin", "user": user})
        try:
            return await asyncio.wait_for(fut, ADMIN_FORWARD_TIMEOUT)
        except TimeoutError:
            return {"ok": False, "status": 503, "error": f"the DC {self.dc} did not answer within "
                                                        f"{ADMIN_FORWARD_TIMEOUT:.0f} s"}
        finally:
            self.admin_waiters.pop(rid, None)

    # ---- clean shutdown --------------------------------------------------------------------------

    def _shutdown_step(self, now: float) -> None:
        """SIGTERM: resources are stopped only when the DC says so (it moves them away first)."""
        if self.shutdown_since is None or self._stopping:
            return
        mine = self._active_on(self.me)
        why = ""
        if self.shutdown_granted:
            why = "the DC moved its resources away"
        elif not mine and self.dc != self.me:
            why = "nothing runs here"  # (a DC waits for its transition: it may still be moving resources)
        elif self.dc is None:
            why = f"no DC to move {', '.join(mine)} away: leaving them as they are"
        elif now - self.shutdown_since > SHUTDOWN_TIMEOUT:
            why = f"the DC did not move {', '.join(mine)} within {SHUTDOWN_TIMEOUT:.0f} s: leaving them as they are"
        if why:
            log.info("leaving: %s", why, extra={"component": "shutdown"})
            self._stopping = True
            self._wake.set()
            return
        if self.dc == self.me:
            self.leaving.setdefault(self.me, False)
        elif self.shutdown_asked != self.dc:
            self.shutdown_asked = self.dc
            assert self.dc is not None
            self._send_message(self.dc, {"type": "shutdown_request"})

