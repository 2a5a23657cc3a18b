"""The cluster daemon of one node: heartbeats, membership, DC election, CIB replication, scheduling,
running the transitions (executor wiring) and the admin API.

Shape (Patroni's HA loop): one asyncio task sleeps until the next thing due (heartbeat to send,
peer deadline, retransmission, recheck, ping), then runs :meth:`Daemon.cycle`, a top-down list of
guard clauses; each returns one sentence, logged when it changes. The pure cores decide; this file
only moves messages, timers and files.

Rules:
- A heartbeat goes out every keepalive on every medium and carries: this node's DC (a DC names
  itself: that is its claim), its CIB version and digest, its ping score.
- Only the DC writes the CIB. It loads it from ``<state-dir>/cib.json`` (or builds it from the
  configuration at first boot), asks any member advertising a higher version for its copy and
  merges (the highest version wins, spec §2.2), keeps the status part from the membership (online,
  DC, quorum, ping scores, unclean), pushes the full CIB to every member whose advertised
  version/digest differs (reliable channel, after scheduling, with the DC's last transition and
  remembered failures so any node can show them), and runs the policy engine on every change and at
  the transition's ``next_recheck`` when no transition is running. Followers accept a pushed CIB
  only from their DC (or from any authenticated node while they have none yet, i.e. while joining)
  and persist it.
- Executor wiring (graph.py decides readiness and aborts): the DC sends each ready action (all its
  inputs done) to its node over the reliable channel as ``{"type": "op", action, resource}``; its
  own node's actions run locally. The node's Executor runs it and every result it reports (action
  results and recurring-monitor changes) goes back to the DC as ``op_result`` (kept while there is
  no DC). The DC records it (cib.record_op) and goes on with the transition; a failed result, a
  probe finding a resource active, an unsolicited failure or any other CIB change aborts it: the
  DC waits for the actions in flight, then schedules again. clear_failcount is done by the DC
  itself; a fence action completes when the fencing of that node succeeded. An action without a
  result within its timeout + 10 s (its node died) aborts the transition too.
- Recurring monitors run where the resource started (the policy engine asks for them after the
  start); a monitor failure is a result like any other, and the policy engine decides (restart in
  place while below migration-threshold, else move).
- Definition changes (definition.py, policy_actions.py): every result this node reports carries the
  digest of the parameters it ran with, of the file its agent reads (balancier:proxy's
  configuration) and whether the agent can reload. A file changed under a running resource makes
  the node run its recurring monitor at once, so the DC sees the new digest; the policy engine then
  schedules a reload (or a restart). After a reload the recurring monitors use the new definition.
- Notify hook (notify.py, ``[cluster] notify_command``): dc-elected/dc-lost when this node gains or
  loses the DC role, node-up/node-dead for peers, resource-started/stopped/failed for operations run
  here, resource-moved on the DC. Queued, run in the background, bounded; never waited for.
- Probing: when a node joins, restarts or returns (and for the DC's own node when it becomes DC
  at a cold start) the DC forgets that node's resource history, so the policy engine probes every
  resource there (a one-shot monitor) before placing anything on it: a resource already running is
  found. Call ids start at generation x 10^6, so a restarted node's results are always newer than
  its old ones.
- Takeover (the fast path of a hard failover): a node that followed a DC and becomes DC itself
  (the DC died) keeps its replicated copy of its own node's history and adds every result its own
  executor produced since that copy was made (as Pacemaker's controller rebuilds the status from
  its executor's history): nothing is probed, so the policy engine runs at once on the dead
  declaration and the recovery starts in the same pass. From the declaration to the VIP on the
  survivor: election (same pass), status refresh, schedule, the in-process vip agent (netlink add
  + the first gratuitous ARP), each logged with its duration ("takeover: ...").
- Ordering of a planned move (migrate, standby, clean leave, failback): Pacemaker's. A primitive
  with allow-migrate=true (the recommended ``vip``) migrates live: migrate_to on the old node,
  migrate_from on the new one (the address is added and announced there while the old node keeps
  it), then stop on the old node (after its drain): make-before-break, no client connection is
  refused. Everything else stops on the old node (a group in reverse order) before it starts on
  the new one (in order), then its monitors. With the proxy cloned on every node (``[[clone]]``),
  only the VIP moves, and it moves only to a node whose proxy instance already runs healthy.
- A node that loses the DC role keeps its resources and reports to the new DC; a partition without
  quorum is handled by its own DC's policy engine (no-quorum-policy: stop stops them, freeze keeps
  them, ignore carries on).
- Clean shutdown: the first SIGTERM/SIGINT asks the DC to move this node's resources away (the DC
  puts it in transient standby and answers ``shutdown_ok`` once nothing runs there and its
  transition is over; a DC does the same for itself). The node stops its resources only because
  the DC told it to; with no DC, or after 120 s without an answer, it leaves them running as they
  are. Then it sends a leave and exits 0. A second signal leaves at once.
- Admin API (api.py): changes are applied by the DC only (changes.apply_change, logged with who
  asked, answered with the resulting transition); another node forwards them to the DC over the
  reliable channel (``admin`` / ``admin_reply``, 10 s timeout -> 503) so a client may ask any node.
- The configuration file seeds the CIB at first boot; a file edited since the node's last start is
  applied then as a configuration change (epoch + 1) keeping runtime constraints (``cli-*``) and
  standby; an unchanged file never overrides the stored copy.
- Replication is by full copy, not diffs: the CIB is small (a few KB; the reliable layer accepts up
  to 1 MiB), and a full copy needs no "base version" bookkeeping to recover from a lost update.
- Quorum: with 3+ nodes a partition needs a strict majority of the configured nodes; with 2 a lone
  node keeps quorum, and a node that never saw its peer since a cold start waits initdead before a
  DC exists at all (wait_for_all; see election.py rule 2).
- Fencing (optional ``fence_command``): a peer lost without a clean leave is marked unclean; the DC
  runs ``fence_command <node>`` and only marks it clean (so its resources may be recovered) once the
  command exits 0; a failure is logged and retried.
- ``<state-dir>/status.json`` is rewritten (atomically) whenever the view changes. Fields: node,
  cluster, pid, generation, dc, is_dc, election (sentence), state (the HA loop's sentence), members,
  nodes (membership view per node), quorum, cib {version, digest}, cib_nodes (status part of the
  CIB), drops {reason: count}, unclean, reliable {retransmissions, delivered}, ping, last_transition
  {reasons, actions, placement, cib_version, at, next_recheck, graph}, graph (the running
  transition: done, in_flight, aborted), monitors (this node's recurring monitors) and events (the
  last 50 membership, election, fencing and admin sentences with their wall-clock time).
- Every start increments the boot generation kept in ``<state-dir>/generation`` (atomic write).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from balancier.cluster import cib as cibops
from balancier.cluster import watchdog
from balancier.cluster.config import ClusterConfig
from balancier.cluster.daemon_actions import SHUTDOWN_TIMEOUT, DaemonActions
from balancier.cluster.definition import Definitions
from balancier.cluster.election import elect, has_quorum
from balancier.cluster.executor import Executor
from balancier.cluster.graph import Graph
from balancier.cluster.membership import DEAD, MemberEvent, Membership
from balancier.cluster.model import Cib, OpResult, ResourceConfig
from balancier.cluster.notify import Notifier
from balancier.cluster.ping import PingScore, probe
from balancier.cluster.reliable import Reliable
from balancier.cluster.transport import Envelope, Receiver, Transport, encode

log = logging.getLogger("balancier.cluster")

CIB_REQUEST_TIMEOUT = 5.0  # give up waiting for a peer's newer CIB after this (then keep ours)
FENCE_TIMEOUT = 60.0  # Pacemaker's stonith-timeout
FENCE_RETRY = 5.0
PUSH_GRACE_KEEPALIVES = 3  # a peer still advertising an old CIB this long after its ack gets it again
CALL_IDS_PER_BOOT = 1_000_000  # call ids start at generation * this: a restarted node's results are newer


def atomic_write(path: Path, text: str, fsync: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def next_generation(state_dir: Path) -> int:
    """Read, increment and persist the boot generation (Heartbeat's hbgenmethod file)."""
    path = state_dir / "generation"
    try:
        current = int(path.read_text().strip() or "0")
    except FileNotFoundError:
        current = 0
    except ValueError as exc:
        raise ValueError(f"{path}: not a generation number: {exc}") from None
    atomic_write(path, f"{current + 1}\n")
    return current + 1


def _version_text(v: tuple[int, ...] | list[int]) -> str:
    return ".".join(str(x) for x in v)


class Daemon(DaemonActions):
    def __init__(self, cfg: ClusterConfig, me: str, state_dir: Path) -> None:
        self.cfg = cfg
        self.me = me
        self.state_dir = state_dir
        self.generation = next_generation(state_dir)
        self.boot = time.monotonic()
        self.keepalive = cfg.keepalive_ms / 1000.0
        peers_file = state_dir / "peers.json"
        known: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            known = {k: int(v) for k, v in json.loads(peers_file.read_text()).items()}
        self.receiver = Receiver(cfg.name, me, set(cfg.node_names), cfg.keyring, known)
        self.membership = Membership(me, cfg.node_names, warntime_ms=cfg.warntime_ms,
                                     initdead_ms=cfg.initdead_ms, boot=self.boot)
        self.reliable = Reliable(me, self.generation, rto=min(0.2, self.keepalive), rto_max=2.0)
        self.transport = Transport(cfg.media_for(me), self._on_datagram)
        self.seq = 0
        self.dc: str | None = None
        self.election_sentence = ""
        self.claims: dict[str, str | None] = {}
        self.peer_generation: dict[str, int] = {}
        self.peer_cib: dict[str, tuple[tuple[int, int, int], str]] = {}
        self.peer_ping: dict[str, int | None] = {}
        self.pushed: dict[str, tuple[tuple[int, int, int], str, float]] = {}
        self.cib_request: tuple[str, float] | None = None
        self.unclean: set[str] = set()
        self.fencing: dict[str, asyncio.Task[None]] = {}
        self.fence_retry_at: dict[str, float] = {}
        self.cib = self._load_cib()
        self.cib_digest = cibops.digest(self.cib)
        self.cib_unsaved = False
        self.scheduled_version: tuple[int, int, int] | None = None
        self.next_recheck: float | None = None
        self.last_transition: dict[str, Any] | None = None
        # a probe every keepalive/2 (clamped to 0.05..1 s); an answer counts for deadtime - keepalive - one probe
        # period, so a node that loses the ping node and its peer together gives its resources up before the peer
        # may declare it dead (ping.py), but never for less than three probe periods (one lost probe is no loss)
        self.ping_interval = min(max(cfg.keepalive_ms / 2000.0, 0.05), 1.0)
        self.ping = PingScore(cfg.ping, deadping=max(3 * self.ping_interval, (cfg.deadtime_ms - cfg.keepalive_ms)
                                                     / 1000.0 - self.ping_interval))
        self.ping_seq = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.state_sentence = ""
        self._wake = asyncio.Event()
        self._stopping = False
        self._status_text = ""
        # executor wiring: this node runs what the DC sends; the DC runs the transition graph
        self.executor = Executor(me, report=self._on_local_result,
                                 ocf_root=os.environ.get("OCF_ROOT", "/usr/lib/ocf"),
                                 first_call_id=self.generation * CALL_IDS_PER_BOOT + 1)
        self.executor.configure(self.cib.configuration.resources)
        self.definitions = Definitions(self.executor.agent)
        self.op_resources: dict[str, ResourceConfig] = {}  # the definition each resource last ran with here
        self.ops_running: dict[str, int] = {}  # actions in progress per resource (the watch leaves them be)
        self.notifier = Notifier(cfg.notify_command, cfg.name, me, cfg.notify_timeout_ms)
        self.last_home: dict[str, str] = {}  # DC: where each resource last started (resource-moved)
        self.graph: Graph | None = None
        self.graphs_run = 0
        self.unsent_results: list[OpResult] = []  # results waiting for a DC to exist
        # the last failed result per (resource, node, op, interval), kept while its fail count lasts
        # (a restart replaces the failed result in the CIB; crm_mon still lists the failure)
        self.failures: dict[tuple[str, str, str, int], OpResult] = {}
        self.rejoined: set[str] = set()  # peers (re)joined: the DC forgets their history, so they are probed
        self.takeover_since: float | None = None  # became DC after following another: timing the takeover
        self.dispatched = False  # an action was handed to this node's executor during this pass
        self.tasks: set[asyncio.Task[Any]] = set()
        # admin changes forwarded to the DC, and clean shutdown (the DC moves resources away first)
        self.admin_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.admin_seq = 0
        self.leaving: dict[str, bool] = {}  # DC side: node -> told it may go
        self.shutdown_since: float | None = None
        self.shutdown_asked: str | None = None  # the DC we asked
        self.shutdown_granted = False
        self.api: Any = None

    # ---- persistence ---------------------------------------------------------------------------

    def _load_cib(self) -> Cib:
        """The stored CIB, with the configuration file applied on top if it was edited since last time.

        The digest of the file's configuration is kept in ``config.sha256``: an unchanged file means
        the stored copy (with its runtime changes: migrations, bans, standby) is the truth; an edited
        file is a configuration change (epoch + 1) that keeps those runtime changes, and spreads to
        the other nodes by the usual rule (the highest version wins).
        """
        path = self.state_dir / "cib.json"
        seed = self.state_dir / "config.sha256"
        wanted = hashlib.sha256(json.dumps(self.cfg.configuration.to_dict(), sort_keys=True).encode()).hexdigest()
        previous = seed.read_text().strip() if seed.exists() else None
        cib: Cib | None = None
        if path.exists():
            try:
                cib = cibops.load(path)
                log.info("loaded CIB %s from %s", _version_text(cib.version), path, extra={"component": "cib"})
            except cibops.CibError as exc:
                log.error("%s; starting from the configuration file", exc, extra={"component": "cib"})
        if cib is None:
            cib = cibops.from_configuration(self.cfg.configuration)
        elif previous != wanted:
            runtime = tuple(loc for loc in cib.configuration.locations if loc.id.startswith("cli-"))
            conf = dataclasses.replace(self.cfg.configuration,
                                       locations=self.cfg.configuration.locations + runtime,
                                       standby_nodes=cib.configuration.standby_nodes)
            try:
                edited = cibops.replace_configuration(cib, conf)
            except cibops.CibError as exc:  # e.g. a kept migration names a resource that is gone
                log.error("%s; applying the configuration file without the runtime constraints", exc,
                          extra={"component": "cib"})
                edited = cibops.replace_configuration(cib, self.cfg.configuration)
            if edited is not cib:
                log.info("the configuration file changed since the last start: CIB %s -> %s",
                         _version_text(cib.version), _version_text(edited.version), extra={"component": "cib"})
            cib = edited
        cibops.save(path, cib)
        atomic_write(seed, wanted + "\n")
        return cib

    def _adopt(self, new: Cib, why: str) -> None:
        """Install a new CIB copy: persist it (configuration + version) and advertise it."""
        if new is self.cib:
            return
        old = self.cib
        self.cib = new
        self.cib_digest = cibops.digest(new)
        # a configuration change is saved (and synced) at once; a status change (num_updates only) is written,
        # unsynced, at the end of the HA loop's pass: not on the takeover's critical path
        if (new.admin_epoch, new.epoch) != (old.admin_epoch, old.epoch) or new.configuration != old.configuration:
            cibops.save(self.state_dir / "cib.json", new)
            self.cib_unsaved = False
        else:
            self.cib_unsaved = True
        if new.configuration.resources != old.configuration.resources:
            self.executor.configure(new.configuration.resources)
        log.debug("CIB %s -> %s: %s", _version_text(old.version), _version_text(new.version), why,
                  extra={"component": "cib"})

    def _remember_peers(self) -> None:
        known = self.receiver.guard.generations()
        atomic_write(self.state_dir / "peers.json", json.dumps(known, sort_keys=True) + "\n", fsync=False)

    # ---- sending -------------------------------------------------------------------------------

    def _envelope(self, typ: str, payload: Any) -> bytes:
        self.seq += 1
        return encode(Envelope(type=typ, cluster=self.cfg.name, node=self.me, generation=self.generation,
                               seq=self.seq, deadtime_ms=self.cfg.deadtime_ms, payload=payload),
                      self.cfg.keyring)

    def _send_heartbeat(self, now: float) -> None:
        payload = {"st": "active", "dc": self.dc, "v": list(self.cib.version), "dg": self.cib_digest[:16],
                   "ping": self.ping.score(now) if self.cfg.ping else None}
        self.transport.send(self._envelope("hb", payload))

    def _send_frames(self, frames: list[tuple[str, dict[str, Any]]]) -> None:
        for peer, frame in frames:
            node = self.cfg.node(peer)
            self.transport.send(self._envelope("rel", frame), only=(node.host, node.port))

    def _send_message(self, peer: str, message: dict[str, Any]) -> None:
        # the generation of the peer's last authenticated message: a request may arrive before the
        # sender's first heartbeat, and its reply must not wait for that heartbeat
        gen = self.peer_generation.get(peer)
        if gen is None:
            return
        self._send_frames(self.reliable.send(peer, gen, message, time.monotonic()))

    # ---- receiving -----------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        drops_before = sum(self.receiver.drops.values())
        env = self.receiver.accept(data)
        if env is None:
            if sum(self.receiver.drops.values()) != drops_before and self.receiver.last_drop:
                reason, detail = self.receiver.last_drop
                # a duplicate is the normal copy from a second medium; the others deserve attention
                log.log(logging.DEBUG if reason == "duplicate" else logging.WARNING,
                        "dropped a packet from %s:%d: %s (%s)", addr[0], addr[1], reason, detail,
                        extra={"component": "transport", "reason": reason})
                self._wake.set()
            return
        now = time.monotonic()
        self.peer_generation[env.node] = env.generation
        if env.type == "hb":
            self._events(self.membership.heartbeat(env.node, env.generation, env.deadtime_ms, now))
            p = env.payload if isinstance(env.payload, dict) else {}
            self.claims[env.node] = p.get("dc") if isinstance(p.get("dc"), str) else None
            v = p.get("v")
            if isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v):
                self.peer_cib[env.node] = ((v[0], v[1], v[2]), str(p.get("dg", "")))
            self.peer_ping[env.node] = p.get("ping") if type(p.get("ping")) is int else None
        elif env.type == "leave":
            self._events(self.membership.leave(env.node, env.generation, now))
        elif env.type == "rel" and isinstance(env.payload, dict):
            delivered, out = self.reliable.receive(env.node, env.generation, env.payload, now)
            self._send_frames(out)
            for message in delivered:
                self._on_message(env.node, message)
        self._wake.set()

    def _on_message(self, sender: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "cib_request":
            self._send_message(sender, {"type": "cib", "why": "reply", "cib": cibops.to_json(self.cib)})
            return
        if kind in self.handlers:
            self.handlers[kind](self, sender, message)
            return
        if kind != "cib":
            log.warning("ignored a message of unknown type %r from %s", kind, sender,
                        extra={"component": "cib"})
            return
        try:
            theirs = cibops.from_json(str(message.get("cib", "")))
        except cibops.CibError as exc:
            log.error("bad CIB from %s: %s", sender, exc, extra={"component": "cib"})
            return
        if message.get("why") == "reply" and self.dc == self.me:
            self.cib_request = None
            merged = cibops.merge(self.cib, theirs)
            log.info("merged the CIB of %s: %s + %s -> %s (the highest version wins)", sender,
                     _version_text(self.cib.version), _version_text(theirs.version),
                     _version_text(merged.version), extra={"component": "cib"})
            self._adopt(merged, f"merged with {sender}")
        elif message.get("why") == "push" and sender == (self.dc or sender) and self.dc != self.me:
            if theirs.version != self.cib.version:
                log.info("CIB %s from DC %s (ours was %s)", _version_text(theirs.version), sender,
                         _version_text(self.cib.version), extra={"component": "cib"})
            self._adopt(theirs, f"pushed by {sender}")
            if isinstance(message.get("transition"), dict):
                self.last_transition = message["transition"]  # so any node can show the DC's decisions
            failures = message.get("failures")
            if isinstance(failures, list):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    loaded = [OpResult.from_dict(f) for f in failures]
                    self.failures = {(f.resource, f.node, f.op, f.interval_ms): f for f in loaded}

    def _events(self, events: list[MemberEvent]) -> None:
        for e in events:
            level = logging.WARNING if e.kind in ("late", "dead", "return") else logging.INFO
            log.log(level, "%s", e.sentence, extra={"component": "membership", "event": e.kind, "peer": e.node})
            self.events.append({"t": round(time.time(), 3), "kind": e.kind, "node": e.node,
                                "sentence": e.sentence})
            if e.kind in ("dead", "left", "restart"):
                self.reliable.reset(e.node)
                self.pushed.pop(e.node, None)
                if e.kind != "restart":
                    self.claims.pop(e.node, None)
                    self.peer_cib.pop(e.node, None)
                if self.cib_request and self.cib_request[0] == e.node:
                    self.cib_request = None
            if e.kind in ("up", "return", "restart") and e.node != self.me:
                self.notifier.notify("node-up", e.node, None, e.sentence)
            elif e.kind in ("dead", "left") and e.node != self.me:
                self.notifier.notify("node-dead", e.node, None, e.sentence)
            if e.kind == "dead" and self.cfg.fence_command:
                self.unclean.add(e.node)
            if e.kind in ("up", "return", "left") and e.node in self.unclean and e.node not in self.fencing:
                self.unclean.discard(e.node)
            if e.kind in ("up", "restart"):
                self._remember_peers()
            if e.kind in ("up", "restart", "return") and e.node != self.me:
                self.rejoined.add(e.node)
            if e.kind in ("dead", "left", "restart") and self.graph is not None:
                self.graph.node_lost([e.node])
            if e.kind in ("dead", "left"):
                self.leaving.pop(e.node, None)

    # ---- the HA loop ---------------------------------------------------------------------------

    def cycle(self, now: float) -> str:
        """One pass of guard clauses; returns the sentence describing what this node is doing."""
        members = self.membership.members()
        claims = dict(self.claims)
        claims[self.me] = self.dc
        election = elect(members, claims, self.membership.pending())
        if election.dc != self.dc:
            log.info("%s", election.sentence, extra={"component": "election", "dc": election.dc or "-"})
            self.events.append({"t": round(time.time(), 3), "kind": "election", "node": election.dc,
                                "sentence": election.sentence})
            if self.dc == self.me:
                log.info("%s stepping down as DC", self.me, extra={"component": "election"})
                self.notifier.notify("dc-lost", self.me, None, f"{self.me} is no longer the DC: {election.sentence}")
                self.pushed.clear()
                self.cib_request = None
                if self.graph is not None:  # results still running are reported to the next DC
                    log.info("abandoning the running transition: no longer DC", extra={"component": "executor"})
                    self.graph = None
                self.leaving.clear()
            if election.dc == self.me:
                self.notifier.notify("dc-elected", self.me, None, f"{self.me} is the DC: {election.sentence}")
                if self.dc is not None and self.dc != self.me:
                    # we followed a DC: our copy of our own history is good, our executor adds what it lacks
                    self.takeover_since = now
                else:
                    self.rejoined.add(self.me)  # a cold start re-probes its own node: trust what runs, not history
                self.scheduled_version = None
            self.dc = election.dc
            self.shutdown_asked = None
            self._flush_results()
        self.election_sentence = election.sentence
        if self.dc is None:
            if len(self.cfg.nodes) == 2:
                return f"wait_for_all: {election.sentence}; nothing starts before the peer is seen or initdead"
            return election.sentence
        if self.dc != self.me:
            self.rejoined.clear()
            return self._follow()
        return self._lead(now)

    def _follow(self) -> str:
        assert self.dc is not None
        theirs = self.peer_cib.get(self.dc)
        if theirs is None or (theirs[0], theirs[1]) == (self.cib.version, self.cib_digest[:16]):
            return f"following DC {self.dc}: CIB {_version_text(self.cib.version)} in sync"
        return (f"following DC {self.dc}: waiting for its CIB {_version_text(theirs[0])} "
                f"(ours {_version_text(self.cib.version)})")

    def _quorum(self, now: float) -> tuple[bool, bool]:
        """(have quorum, this node has seen its peer or waited initdead) for the current partition."""
        n = len(self.cfg.nodes)
        members = len(self.membership.members())
        seen = all(self.membership.ever_seen(p) for p in self.cfg.node_names) or \
            (now - self.boot) * 1000 > self.cfg.initdead_ms
        return has_quorum(n, members), seen

    def _lead(self, now: float) -> str:
        wall = time.time()
        # 1. a member has a newer CIB: get it before deciding anything
        if self.cib_request is not None:
            peer, since = self.cib_request
            if now - since < CIB_REQUEST_TIMEOUT:
                return f"DC: waiting for the CIB of {peer}"
            log.warning("%s did not send its CIB within %.0f s; keeping ours", peer, CIB_REQUEST_TIMEOUT,
                        extra={"component": "cib"})
            self.peer_cib.pop(peer, None)
            self.cib_request = None
        newer = sorted(((v, m) for m, (v, _) in self.peer_cib.items()
                        if m in self.membership.members() and v > self.cib.version), reverse=True)
        if newer:
            version, peer = newer[0]
            self.cib_request = (peer, now)
            self._send_message(peer, {"type": "cib_request"})
            sentence = (f"DC: asking {peer} for its CIB {_version_text(version)} "
                        f"(newer than ours {_version_text(self.cib.version)})")
            log.info("%s", sentence, extra={"component": "cib"})
            return sentence
        # 2. the status part follows the membership
        new = self._refresh_status(self.cib, now)
        # 3. expired migrations and failures; (re)joined nodes are probed; leaving nodes are emptied
        new = cibops.expire(new, wall)
        for node in sorted(self.rejoined):
            if new.node(node).online:
                log.info("forgetting the resource history of %s: it (re)joined and is probed again", node,
                         extra={"component": "executor", "peer": node})
                new = cibops.forget_node(new, node)
        self.rejoined.clear()
        if self.takeover_since is not None:
            new = self._own_history(new)
        for node in self.leaving:
            cur = new.node(node)
            if cur.online and not new.standby(node):
                new = cibops.set_node_status(new, dataclasses.replace(cur, standby=True))
        t_status = time.monotonic()
        self._adopt(new, "status refresh")
        t_adopt = time.monotonic()
        # 4. fencing of lost nodes before their resources are recovered
        fencing = self._fence(now)
        # 5. the policy engine on every change and at next_recheck, when no transition runs (one
        # that just finished is closed first, so the next is decided in the same pass)
        self._run_graph(now)
        self._schedule(wall)
        t_schedule = time.monotonic()
        # 6. run the transition: send ready actions, notice its end
        running = self._run_graph(now)
        if self.takeover_since is not None:
            t_end = time.monotonic()
            log.info("takeover: DC for %.1f ms (status %.1f, persist %.1f, schedule %.1f, send %.1f), %s",
                     (t_end - self.takeover_since) * 1000, (t_status - self.takeover_since) * 1000,
                     (t_adopt - t_status) * 1000, (t_schedule - t_adopt) * 1000, (t_end - t_schedule) * 1000,
                     f"transition {self.graphs_run} running" if self.graph is not None else "nothing to recover",
                     extra={"component": "election"})
            self.takeover_since = None
        # 7. nodes leaving cleanly may go once nothing runs there any more
        self._release_leaving()
        # 8. replicate (with the transition just decided) to members whose copy differs
        pushed = self._replicate(now)
        parts = [f"DC: CIB {_version_text(self.cib.version)}", f"{len(self.membership.members())} members",
                 "quorum" if self.cib.have_quorum else "NO quorum"]
        if running:
            parts.append(running)
        if fencing:
            parts.append(fencing)
        if pushed:
            parts.append(f"sending the CIB to {', '.join(pushed)}")
        return ", ".join(parts)

    def _refresh_status(self, cib: Cib, now: float) -> Cib:
        quorum, seen = self._quorum(now)
        for node in self.cfg.node_names:
            online = self.membership.state(node) != DEAD and node in self.membership.members()
            cur = cib.node(node)
            unclean = node in self.unclean
            if cur.online != online or cur.unclean != unclean or (node == self.me and cur.seen_peer != seen):
                cib = cibops.set_node_online(cib, node, online, unclean=unclean,
                                             seen_peer=seen if node == self.me else None)
            if self.cfg.ping and online:
                score = self.ping.score(now) if node == self.me else self.peer_ping.get(node)
                if score is not None and cib.node(node).attribute("pingd") != str(score):
                    cib = cibops.set_attribute(cib, node, "pingd", str(score))
        if cib.have_quorum != quorum:
            log.warning("partition %s quorum (%d of %d nodes)", "has" if quorum else "lost",
                        len(self.membership.members()), len(self.cfg.nodes), extra={"component": "quorum"})
            cib = cibops.set_quorum(cib, quorum)
        if cib.dc != self.me:
            cib = cibops.set_dc(cib, self.me)
        return cib

    def _replicate(self, now: float) -> list[str]:
        mine = (self.cib.version, self.cib_digest[:16])
        sent: list[str] = []
        for peer in self.membership.members():
            if peer == self.me or self.peer_cib.get(peer) == mine:
                continue
            last = self.pushed.get(peer)
            if last is not None and (last[0], last[1]) == mine:
                acked = self.reliable.pending(peer) == 0
                if not acked or now - last[2] < PUSH_GRACE_KEEPALIVES * self.keepalive:
                    continue
            self.pushed[peer] = (mine[0], mine[1], now)
            self._send_message(peer, {"type": "cib", "why": "push", "cib": cibops.to_json(self.cib),
                                      "failures": [f.to_dict() for f in self._current_failures()],
                                      "transition": self.last_transition})
            sent.append(peer)
        return sent

    def _fence(self, now: float) -> str:
        command = self.cfg.fence_command
        if not command:
            return ""
        busy = []
        for node in sorted(self.unclean):
            if node in self.fencing:
                busy.append(node)
            elif now >= self.fence_retry_at.get(node, 0.0):
                self.fencing[node] = asyncio.get_running_loop().create_task(self._run_fence(node, command))
                busy.append(node)
        return f"fencing {', '.join(busy)} before recovering its resources" if busy else ""

    async def _run_fence(self, node: str, command: tuple[str, ...]) -> None:
        log.warning("fencing %s: running %s", node, " ".join([*command, node]),
                    extra={"component": "fencing", "peer": node})
        env = dict(os.environ, BALANCIER_FENCE_NODE=node, BALANCIER_CLUSTER=self.cfg.name)
        ok, why = False, ""
        try:
            proc = await asyncio.create_subprocess_exec(*command, node, env=env, stdin=asyncio.subprocess.DEVNULL)
            try:
                rc = await asyncio.wait_for(proc.wait(), FENCE_TIMEOUT)
                ok, why = rc == 0, f"exit code {rc}"
            except TimeoutError:
                proc.kill()
                await proc.wait()
                why = f"timed out after {FENCE_TIMEOUT:.0f} s"
        except OSError as exc:
            why = f"cannot run it: {exc.strerror}"
        finally:
            self.fencing.pop(node, None)
        if ok:
            self.unclean.discard(node)
            self.fence_retry_at.pop(node, None)
            sentence = f"fenced {node}: {why}; its resources may now be recovered"
            log.warning("%s", sentence, extra={"component": "fencing", "peer": node})
        else:
            self.fence_retry_at[node] = time.monotonic() + FENCE_RETRY
            sentence = f"fencing {node} failed: {why}; retrying in {FENCE_RETRY:.0f} s"
            log.error("%s", sentence, extra={"component": "fencing", "peer": node})
        self.events.append({"t": round(time.time(), 3), "kind": "fence", "node": node, "sentence": sentence})
        self._wake.set()

    def _schedule(self, wall: float) -> None:
        due = self.next_recheck is not None and wall >= self.next_recheck
        if self.graph is not None or (self.scheduled_version == self.cib.version and not due):
            return
        from balancier.cluster.policy import schedule

        self.scheduled_version = self.cib.version
        try:
            transition = schedule(self.cib, wall)
        except Exception as exc:  # a policy bug must not take membership and heartbeats down with it
            log.error("the policy engine failed on CIB %s: %s", _version_text(self.cib.version), exc,
                      exc_info=True, extra={"component": "policy"})
            self.last_transition = {"error": f"{type(exc).__name__}: {exc}", "cib_version": list(self.cib.version),
                                    "at": round(wall, 3)}
            return
        self.next_recheck = transition.next_recheck
        actions = [{"id": a.id, "kind": a.kind, "resource": a.resource, "node": a.node,
                    "inputs": list(a.inputs)} for a in transition.actions]
        summary = {"reasons": list(transition.reasons), "actions": actions,
                   "placement": dict(transition.placement)}
        if self.last_transition is None or {k: self.last_transition.get(k) for k in summary} != summary:
            for reason in transition.reasons:
                log.info("%s", reason, extra={"component": "policy"})
        self.last_transition = {**summary, "cib_version": list(self.cib.version), "at": round(wall, 3),
                                "next_recheck": transition.next_recheck}
        if transition.actions:
            self.graphs_run += 1
            log.info("transition %d for CIB %s: %s", self.graphs_run, _version_text(self.cib.version),
                     "; ".join(str(a) for a in transition.actions), extra={"component": "policy"})
            self.graph = Graph(transition, self.cib.version)

    # ---- status.json ---------------------------------------------------------------------------

    def _write_status(self, now: float) -> None:
        status = {
            "node": self.me, "cluster": self.cfg.name, "pid": os.getpid(), "generation": self.generation,
            "dc": self.dc, "is_dc": self.dc == self.me, "election": self.election_sentence,
            "state": self.state_sentence, "members": list(self.membership.members()),
            "nodes": self.membership.view(now), "quorum": self.cib.have_quorum if self.dc is not None else None,
            "cib": {"version": list(self.cib.version), "digest": self.cib_digest},
            "drops": dict(self.receiver.drops), "unclean": sorted(self.unclean),
            "reliable": {"retransmissions": self.reliable.retransmissions, "delivered": self.reliable.delivered},
            "ping": self.ping.score(now) if self.cfg.ping else None,
            "cib_nodes": {n.name: {"online": n.online, "standby": n.standby, "unclean": n.unclean,
                                   "attributes": dict(n.attributes)} for n in self.cib.status.nodes},
            "last_transition": self.last_transition, "events": list(self.events),
            "graph": self.graph.summary() if self.graph is not None else None,
            "monitors": [[r, i] for r, i in self.executor.monitors()],
        }
        text = json.dumps(status, indent=1, sort_keys=True)
        if text != self._status_text:
            self._status_text = text
            atomic_write(self.state_dir / "status.json", text + "\n", fsync=False)

    # ---- timers and the main loop --------------------------------------------------------------

    async def _ping_loop(self) -> None:
        interval = self.ping_interval
        while not self._stopping:
            self.ping_seq += 1
            results = await asyncio.gather(*(probe(t, interval, self.ping_seq) for t in self.cfg.ping))
            now = time.monotonic()
            for target, ok in zip(self.cfg.ping, results, strict=True):
                self.ping.record(target, ok, now)
            self._wake.set()
            await asyncio.sleep(interval)

    def stop(self) -> None:
        """SIGTERM/SIGINT: the first asks the DC to move our resources away, a second one leaves now."""
        if self.shutdown_since is None:
            self.shutdown_since = time.monotonic()
            log.info("shutdown requested", extra={"component": "shutdown"})
        else:
            self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        # Agents' blocking calls (netlink for the VIP) run in worker threads while this loop goes on with its pass
        # (logs, status.json, the CIB); with the default 5 ms GIL switch interval, each return of such a thread
        # waits up to 5 ms for the GIL, several times per start: tens of ms on the takeover's critical path.
        sys.setswitchinterval(0.0005)
        # A follower that becomes DC runs the policy engine for the first time on the takeover's critical path:
        # import it (and run it once, unused) now rather than then (~25 ms measured).
        from balancier.cluster.policy import schedule

        with contextlib.suppress(Exception):
            schedule(self.cib, time.time())
        # VIPs a previous run of this node held (it crashed): gone before we join; then the watchdog guards this run
        vip_state = str(self.state_dir / "vips.json")
        os.environ[watchdog.STATE_ENV] = vip_state
        # where a migration target hands back the source's connections (agents/vip.py, the migration guard)
        os.environ["BALANCIER_CLUSTER_PEERS"] = " ".join(n.host for n in self.cfg.nodes if n.name != self.me)
        removed = await asyncio.to_thread(watchdog.release_recorded, vip_state)
        if removed:
            log.warning("removed addresses held by a previous run that did not stop cleanly: %s", ", ".join(removed),
                        extra={"component": "daemon"})
        guard, guard_pipe = watchdog.start(vip_state)
        try:
            await self._run()
        finally:
            with contextlib.suppress(OSError):
                guard_pipe.write(b"keep")
                guard_pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(guard.wait, 5)

    async def _run(self) -> None:
        await self.transport.open()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        log.info("node %s starting: generation %d, %d nodes, media %s, keepalive %d ms, deadtime %d ms, "
                 "initdead %d ms", self.me, self.generation, len(self.cfg.nodes), "+".join(self.cfg.media),
                 self.cfg.keepalive_ms, self.cfg.deadtime_ms, self.cfg.initdead_ms, extra={"component": "daemon"})
        pinger = loop.create_task(self._ping_loop()) if self.cfg.ping else None
        watcher = loop.create_task(self._definition_watch())
        from balancier.cluster.api import AdminApi

        self.api = AdminApi(self)
        await self.api.start()
        # initdead counts from when our communications are up, as Heartbeat's does, not from the process start:
        # imports and the API's start can take seconds on a loaded machine, and two such nodes of a cold start
        # would otherwise give each other up at their first tick
        self.boot = time.monotonic()
        self.membership.boot = self.boot
        next_hb = time.monotonic()
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_hb:
                    self._send_heartbeat(now)
                    next_hb = max(next_hb + self.keepalive, now)
                self._events(self.membership.tick(now))
                self._send_frames(self.reliable.poll(now))
                sentence = self.cycle(now)
                if self.dispatched:
                    # let the actions just sent to this node's executor reach their agent (and its worker
                    # thread) before this pass goes on with the status file and the CIB copy
                    self.dispatched = False
                    for _ in range(3):
                        await asyncio.sleep(0)
                self._shutdown_step(now)
                if sentence != self.state_sentence:
                    log.info("%s", sentence, extra={"component": "ha"})
                    self.state_sentence = sentence
                self._write_status(now)
                if self.cib_unsaved:
                    cibops.save(self.state_dir / "cib.json", self.cib, durable=False)
                    self.cib_unsaved = False
                deadlines = [next_hb, self.membership.next_deadline(), self.reliable.next_timer()]
                if self.cfg.ping:
                    deadlines.append(self.ping.next_change(now))  # connectivity lost: act at that instant
                if self.next_recheck is not None:
                    deadlines.append(now + max(0.0, self.next_recheck - time.time()))
                if self.cib_request is not None:
                    deadlines.append(self.cib_request[1] + CIB_REQUEST_TIMEOUT)
                deadlines += list(self.fence_retry_at.values())
                if self.graph is not None:
                    deadlines.append(self.graph.next_timeout())
                if self.shutdown_since is not None:
                    deadlines.append(self.shutdown_since + SHUTDOWN_TIMEOUT)
                wait = max(0.0, min(d for d in deadlines if d is not None) - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            for _ in range(3):  # a leave lost on a lossy link would make peers wait deadtime
                self.transport.send(self._envelope("leave", None))
            log.info("node %s leaving the cluster (clean shutdown)", self.me, extra={"component": "daemon"})
            if pinger is not None:
                pinger.cancel()
            watcher.cancel()
            for task in list(self.fencing.values()):
                task.cancel()
            for task in list(self.tasks):
                task.cancel()
            await self.executor.close()
            await self.notifier.close()
            if self.api is not None:
                await self.api.close()
            self.state_sentence = "stopped"
            self._write_status(time.monotonic())
            if self.cib_unsaved:
                cibops.save(self.state_dir / "cib.json", self.cib, durable=False)
            self.transport.close()
