"""The cluster's model: immutable snapshots of the CIB (configuration + status).

Rules this file governs:
- Every object is a frozen dataclass; a change produces a new object (see cib.py). Collections are
  tuples (ordered, hashable), key/value lists are tuples of (name, value) string pairs.
- Every object is JSON-serialisable with to_dict() / from_dict(); from_dict(to_dict(x)) == x.
- The configuration part is what an administrator wrote (TOML at first boot, then runtime changes
  made by the DC: migrate, ban, standby, cleanup). The status part (nodes, operation history, fail
  counts, quorum, DC) is rebuilt from the nodes and never trusted from disk.
- Meta-attribute names and values follow Pacemaker (spec cluster.md §3.2): target-role,
  resource-stickiness, migration-threshold, failure-timeout, priority, is-managed, multiple-active.
  A group's meta is inherited by its members; a member's own meta overrides it.
- Resource state on a node is derived from its operation history (ResourceStatus.state), as
  Pacemaker's scheduler unpacks lrm_rsc_op entries: the result with the highest call id decides.
  A successful migrate_from means "started here"; a successful migrate_to means "still running here
  until the stop that follows" (live migration, allow-migrate=true).
- Clones (spec §3.5) are anonymous clones of one primitive: `CloneConfig(id, resource, meta)`. The
  primitive's history is recorded under its own id on every node (one instance per node, as
  Pacemaker records anonymous instances); constraints name the clone, never the cloned primitive.
  Supported clone meta: clone-max (0 or absent = one per node), clone-node-max (1 only),
  interleave, globally-unique (false only), notify (false only), ordered (false only); the other
  meta-attributes (target-role, stickiness, ...) are inherited by the primitive like a group's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from balancier.cluster.model_json import Serialisable as _Serialisable
from balancier.cluster.scores import INFINITY, ScoreError, parse_duration_ms, parse_score

__all__ = [
    "INFINITY", "OpConfig", "ResourceConfig", "GroupConfig", "CloneConfig", "LocationConstraint", "ColocationConstraint",
    "OrderConstraint", "ClusterOptions", "CibConfiguration", "NodeStatus", "OpResult", "ResourceStatus",
    "CibStatus", "Cib", "OCF", "META_DEFAULTS", "agent_parts",
]

class OCF:
    """OCF exit codes (spec §6) and how the scheduler classifies them (spec §5)."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9
    DEGRADED = 190
    DEGRADED_PROMOTED = 191
    OK_CODES = frozenset({0, 190})
    # rc that ban the node for the resource until cleanup/expiry ("hard"); 3 only for non-recurring ops.
    HARD = frozenset({2, 4, 5})
    # rc that ban the resource from every node ("fatal").
    FATAL = frozenset({6})


AGENT_CLASSES = ("balancier", "ocf", "lsb", "systemd", "service")
META_DEFAULTS: dict[str, str] = {
    "target-role": "Started",
    "is-managed": "true",
    "priority": "0",
    "multiple-active": "stop_start",
}
META_NAMES = frozenset({"target-role", "resource-stickiness", "migration-threshold", "failure-timeout",
                        "priority", "is-managed", "multiple-active", "allow-migrate"})
CLONE_META_NAMES = frozenset({"clone-max", "clone-node-max", "interleave", "globally-unique", "notify", "ordered"})
OP_NAMES = ("start", "stop", "monitor", "reload", "migrate_to", "migrate_from")
TRUE_WORDS = frozenset({"true", "on", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "off", "no", "n", "0"})


def agent_parts(agent: str) -> tuple[str, str | None, str]:
    """'ocf:heartbeat:IPaddr2' -> ('ocf', 'heartbeat', 'IPaddr2'); 'lsb:haproxy' -> ('lsb', None, 'haproxy')."""
    parts = agent.split(":")
    if parts[0] == "ocf":
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"agent {agent!r}: an OCF agent is written ocf:<provider>:<type>")
        return "ocf", parts[1], parts[2]
    if len(parts) != 2 or not all(parts) or parts[0] not in AGENT_CLASSES:
        raise ValueError(f"agent {agent!r}: expected one of balancier:<type>, ocf:<provider>:<type>, "
                         f"lsb:<script>, systemd:<unit>, service:<name>")
    return parts[0], None, parts[1]


def parse_bool(text: str) -> bool:
    s = text.strip().lower()
    if s in TRUE_WORDS:
        return True
    if s in FALSE_WORDS:
        return False
    raise ValueError(f"invalid boolean {text!r}")


def _lookup(pairs: tuple[tuple[str, str], ...], name: str) -> str | None:
    for k, v in pairs:
        if k == name:
            return v
    return None


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class OpConfig(_Serialisable):
    """One operation of a resource, identified by (name, interval_ms).

    on_fail None means Pacemaker's default: 'restart', except for stop: 'fence' when fencing is
    enabled, else 'block'. interval_ms 0 applies to start/stop; a monitor with interval > 0 is recurring.
    """

    name: str
    interval_ms: int = 0
    timeout_ms: int = 20_000
    on_fail: str | None = None
    role: str | None = None
    enabled: bool = True

    def effective_on_fail(self, stonith_enabled: bool) -> str:
        if self.on_fail is not None:
            return self.on_fail
        if self.name == "stop":
            return "fence" if stonith_enabled else "block"
        return "restart"


# Only the Started role is run: there are no promotable clones (Master/Slave), and a role=Stopped monitor
# (Pacemaker's watch for rogue starts) is not run, so accepting either would silently ignore it.
ROLE_UNSUPPORTED = ("only Started is supported (no promotable clones; rogue starts are found by the probes run "
                    "when a node joins, not by role=Stopped monitors)")


@dataclass(frozen=True)
class ResourceConfig(_Serialisable):
    """A primitive resource: an agent, its parameters, operations and meta-attributes."""

    id: str
    agent: str
    params: tuple[tuple[str, str], ...] = ()
    ops: tuple[OpConfig, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return _lookup(self.params, name)

    def meta_value(self, name: str) -> str | None:
        return _lookup(self.meta, name)

    def op(self, name: str, interval_ms: int | None = None) -> OpConfig | None:
        for op in self.ops:
            if op.name == name and (interval_ms is None or op.interval_ms == interval_ms):
                return op
        return None

    @property
    def params_digest(self) -> str:
        """A short digest of the agent and its parameters: a change means the running instance is stale."""
        text = json.dumps([self.agent, sorted(self.params)], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def recurring_monitors(self) -> tuple[OpConfig, ...]:
        """Monitors the cluster keeps running while the resource is started (other roles are refused at load)."""
        return tuple(op for op in self.ops
                     if op.name == "monitor" and op.interval_ms > 0 and op.enabled
                     and (op.role or "Started") == "Started")


@dataclass(frozen=True)
class GroupConfig(_Serialisable):
    """An ordered group: each member colocated (INFINITY) with and started after the previous one."""

    id: str
    resources: tuple[str, ...]
    meta: tuple[tuple[str, str], ...] = ()

    def meta_value(self, name: str) -> str | None:
        return _lookup(self.meta, name)


@dataclass(frozen=True)
class CloneConfig(_Serialisable):
    """An anonymous clone of one primitive: one instance on each of up to clone-max nodes.

    meta holds the clone's own options (clone-max, clone-node-max, interleave, ...) and meta-attributes
    its primitive inherits (target-role, resource-stickiness, migration-threshold, ...).
    """

    id: str
    resource: str
    meta: tuple[tuple[str, str], ...] = ()

    def meta_value(self, name: str) -> str | None:
        return _lookup(self.meta, name)

    def clone_max(self, node_count: int) -> int:
        """How many instances may run (clone-max; 0 or absent = as many as there are nodes)."""
        v = self.meta_value("clone-max")
        n = int(v) if v is not None and v.strip().lstrip("-").isdigit() else 0
        return node_count if n <= 0 else min(n, node_count)

    @property
    def interleave(self) -> bool:
        v = self.meta_value("interleave")
        return v is not None and v.strip().lower() in TRUE_WORDS


@dataclass(frozen=True)
class LocationConstraint(_Serialisable):
    """score for running `resource` (a primitive or a group) on `node`.

    Migrations write ids 'cli-prefer-RES' (+INFINITY) and 'cli-ban-RES-on-NODE' (-INFINITY); with a
    lifetime they carry `expires` (seconds since the epoch) and stop applying after it.
    """

    id: str
    resource: str
    node: str
    score: int
    expires: float | None = None

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True)
class ColocationConstraint(_Serialisable):
    """`resource` wants to run where `with_resource` runs (score > 0) or not (score < 0)."""

    id: str
    resource: str
    with_resource: str
    score: int


@dataclass(frozen=True)
class OrderConstraint(_Serialisable):
    """start `first` before `then` (kind Mandatory|Optional|Serialize); symmetrical = stop in reverse."""

    id: str
    first: str
    then: str
    kind: str = "Mandatory"
    symmetrical: bool = True


@dataclass(frozen=True)
class ClusterOptions(_Serialisable):
    """Cluster-wide options with Pacemaker's current defaults (spec §2.6, Appendix).

    ping_score_attribute: the node attribute that counts reachable ping nodes (set when ping nodes are
    configured; None = no connectivity rule). Rule: a node whose attribute is missing or <= 0 can run
    nothing; otherwise its value is added to every resource's score on that node.
    """

    stickiness: int = 0
    no_quorum_policy: str = "stop"
    symmetric_cluster: bool = True
    migration_threshold: int = INFINITY
    failure_timeout_ms: int = 0
    stonith_enabled: bool = False
    start_failure_is_fatal: bool = True
    ping_score_attribute: str | None = None


@dataclass(frozen=True)
class CibConfiguration(_Serialisable):
    nodes: tuple[str, ...] = ()
    resources: tuple[ResourceConfig, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    locations: tuple[LocationConstraint, ...] = ()
    colocations: tuple[ColocationConstraint, ...] = ()
    orders: tuple[OrderConstraint, ...] = ()
    options: ClusterOptions = field(default_factory=ClusterOptions)
    # nodes put in standby "forever" (crm node standby): persisted, unlike NodeStatus.standby.
    standby_nodes: tuple[str, ...] = ()
    clones: tuple[CloneConfig, ...] = ()

    def resource(self, rid: str) -> ResourceConfig | None:
        for r in self.resources:
            if r.id == rid:
                return r
        return None

    def group(self, gid: str) -> GroupConfig | None:
        for g in self.groups:
            if g.id == gid:
                return g
        return None

    def group_of(self, rid: str) -> GroupConfig | None:
        for g in self.groups:
            if rid in g.resources:
                return g
        return None

    def clone(self, cid: str) -> CloneConfig | None:
        for c in self.clones:
            if c.id == cid:
                return c
        return None

    def clone_of(self, rid: str) -> CloneConfig | None:
        """The clone that wraps primitive rid, if any."""
        for c in self.clones:
            if c.resource == rid:
                return c
        return None

    def allow_migrate(self, rid: str) -> bool:
        """allow-migrate=true on the primitive (or inherited): moves use migrate_to/migrate_from."""
        v = self.meta(rid, "allow-migrate")
        return v is not None and v.strip().lower() in TRUE_WORDS

    def meta(self, rid: str, name: str) -> str | None:
        """A primitive's meta-attribute, inherited from its group when it has none of its own."""
        r = self.resource(rid)
        value = r.meta_value(name) if r is not None else None
        if value is None:
            g = self.group_of(rid) if r is not None else self.group(rid)
            if g is not None:
                value = g.meta_value(name)
        if value is None and name not in CLONE_META_NAMES:
            c = self.clone_of(rid) if r is not None else self.clone(rid)
            if c is not None:
                value = c.meta_value(name)
        return value if value is not None else META_DEFAULTS.get(name)

    def stickiness(self, rid: str) -> int:
        v = self.meta(rid, "resource-stickiness")
        return parse_score(v) if v is not None else self.options.stickiness

    def migration_threshold(self, rid: str) -> int:
        v = self.meta(rid, "migration-threshold")
        return parse_score(v) if v is not None else self.options.migration_threshold

    def failure_timeout_ms(self, rid: str) -> int:
        v = self.meta(rid, "failure-timeout")
        return parse_duration_ms(v) if v is not None else self.options.failure_timeout_ms

    def priority(self, rid: str) -> int:
        return parse_score(self.meta(rid, "priority") or "0")

    def problems(self) -> tuple[str, ...]:
        """Every reason this configuration cannot be used; empty when it is consistent."""
        out: list[str] = []
        seen: set[str] = set()
        node_set = set(self.nodes)
        if len(node_set) != len(self.nodes):
            out.append("a node is listed twice")
        ids = ([r.id for r in self.resources] + [g.id for g in self.groups] + [c.id for c in self.clones]
               + [c.id for c in self.locations]
               + [c.id for c in self.colocations] + [c.id for c in self.orders])
        for i in ids:
            if i in seen:
                out.append(f"duplicate id {i!r}")
            seen.add(i)
        prims = {r.id for r in self.resources}
        tops = prims | {g.id for g in self.groups}
        for r in self.resources:
            try:
                agent_parts(r.agent)
            except ValueError as exc:
                out.append(f"resource {r.id!r}: {exc}")
            keys = set()
            for op in r.ops:
                if op.name not in OP_NAMES:
                    out.append(f"resource {r.id!r}: unsupported operation {op.name!r}")
                if (op.name, op.interval_ms) in keys:
                    out.append(f"resource {r.id!r}: operation {op.name} interval {op.interval_ms}ms twice")
                keys.add((op.name, op.interval_ms))
                if op.on_fail not in (None, "ignore", "block", "stop", "restart", "fence", "standby"):
                    out.append(f"resource {r.id!r}: unsupported on-fail {op.on_fail!r}")
                if op.role not in (None, "Started"):
                    out.append(f"resource {r.id!r}: operation {op.name} role {op.role!r}: {ROLE_UNSUPPORTED}")
                if op.interval_ms > 0 and op.timeout_ms >= op.interval_ms:
                    out.append(f"resource {r.id!r}: monitor timeout {op.timeout_ms}ms must be shorter "
                               f"than its interval {op.interval_ms}ms")
            out.extend(f"resource {r.id!r}: {p}" for p in _meta_problems(r.meta))
        members: dict[str, str] = {}
        for g in self.groups:
            if not g.resources:
                out.append(f"group {g.id!r} has no members")
            for m in g.resources:
                if m not in prims:
                    out.append(f"group {g.id!r}: unknown resource {m!r}")
                elif m in members:
                    out.append(f"resource {m!r} is in groups {members[m]!r} and {g.id!r}")
                members[m] = g.id
            out.extend(f"group {g.id!r}: {p}" for p in _meta_problems(g.meta))
        cloned: dict[str, str] = {}
        for c in self.clones:
            if c.resource not in prims:
                what = "a group" if self.group(c.resource) is not None else "unknown"
                out.append(f"clone {c.id!r}: {what} resource {c.resource!r} (a clone wraps one primitive)")
            elif c.resource in members:
                out.append(f"clone {c.id!r}: {c.resource!r} is a member of group {members[c.resource]!r}")
            elif c.resource in cloned:
                out.append(f"clone {c.id!r}: {c.resource!r} is already cloned by {cloned[c.resource]!r}")
            cloned[c.resource] = c.id
            out.extend(f"clone {c.id!r}: {p}" for p in _clone_meta_problems(c.meta))
        tops = (tops - set(cloned)) | {c.id for c in self.clones}
        inner = {**{m: (f"a member of group {g!r}", "the group") for m, g in members.items()},
                 **{r: (f"cloned by {c!r}", "the clone") for r, c in cloned.items()}}
        for loc in self.locations:
            if loc.resource in cloned:
                out.append(f"location {loc.id!r}: {loc.resource!r} is cloned by {cloned[loc.resource]!r}; "
                           f"constrain the clone")
            elif loc.resource not in tops:
                out.append(f"location {loc.id!r}: unknown resource {loc.resource!r}")
            if loc.node not in node_set:
                out.append(f"location {loc.id!r}: unknown node {loc.node!r}")
        for col in self.colocations:
            for ref in (col.resource, col.with_resource):
                if ref not in tops and ref not in inner:
                    out.append(f"colocation {col.id!r}: unknown resource {ref!r}")
                elif ref in inner:
                    out.append(f"colocation {col.id!r}: {ref!r} is {inner[ref][0]}; constrain {inner[ref][1]}")
            if col.resource == col.with_resource:
                out.append(f"colocation {col.id!r}: a resource cannot be colocated with itself")
            if self.clone(col.resource) is not None:
                out.append(f"colocation {col.id!r}: a clone ({col.resource!r}) as the dependent is not supported; "
                           f"colocate the other resource with the clone")
        for order in self.orders:
            for ref in (order.first, order.then):
                if ref not in tops and ref not in inner:
                    out.append(f"order {order.id!r}: unknown resource {ref!r}")
                elif ref in inner:
                    out.append(f"order {order.id!r}: {ref!r} is {inner[ref][0]}; order {inner[ref][1]}")
            if order.kind not in ("Mandatory", "Optional", "Serialize"):
                out.append(f"order {order.id!r}: kind must be Mandatory, Optional or Serialize")
        o = self.options
        if o.no_quorum_policy not in ("stop", "ignore", "freeze"):
            out.append(f"no-quorum-policy {o.no_quorum_policy!r}: expected stop, ignore or freeze")
        for n in self.standby_nodes:
            if n not in node_set:
                out.append(f"standby: unknown node {n!r}")
        return tuple(out)


def _clone_meta_problems(meta: tuple[tuple[str, str], ...]) -> list[str]:
    out: list[str] = []
    for name, value in meta:
        if name not in CLONE_META_NAMES:
            out.extend(_meta_problems(((name, value),)))
            continue
        v = value.strip().lower()
        if name == "clone-max" and not v.isdigit():
            out.append(f"meta-attribute clone-max={value!r}: expected a number of instances (0 = one per node)")
        elif name == "clone-node-max" and v != "1":
            out.append(f"meta-attribute clone-node-max={value!r}: only 1 instance per node is supported")
        elif name == "interleave" and v not in TRUE_WORDS | FALSE_WORDS:
            out.append(f"meta-attribute interleave={value!r}: expected true or false")
        elif name in ("globally-unique", "notify", "ordered") and v not in FALSE_WORDS:
            out.append(f"meta-attribute {name}={value!r}: only false is supported (anonymous, unordered clones "
                       f"without notifications)")
    return out


def _meta_problems(meta: tuple[tuple[str, str], ...]) -> list[str]:
    out: list[str] = []
    for name, value in meta:
        if name not in META_NAMES:
            out.append(f"unsupported meta-attribute {name!r}")
            continue
        try:
            if name == "target-role" and value not in ("Started", "Stopped"):
                raise ValueError("expected Started or Stopped")
            if name in ("is-managed", "allow-migrate"):
                parse_bool(value)
            if name in ("resource-stickiness", "migration-threshold", "priority"):
                parse_score(value)
            if name == "failure-timeout":
                parse_duration_ms(value)
            if name == "multiple-active" and value not in ("stop_start", "stop_only", "block"):
                raise ValueError("expected stop_start, stop_only or block")
        except (ValueError, ScoreError) as exc:
            out.append(f"meta-attribute {name}={value!r}: {exc}")
    return out


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class NodeStatus(_Serialisable):
    """What the membership layer knows of a node (set by the daemon, never read from disk).

    standby here is the transient kind (lost at reboot); CibConfiguration.standby_nodes is the
    persistent one. seen_peer False marks a node of a two-node cluster that has not yet heard its
    peer since a cold start and whose initdead has not elapsed (wait_for_all): nothing is started.
    unclean: lost while it may still run resources; with fencing enabled it is fenced before its
    resources are recovered, without fencing it is assumed to run nothing.
    """

    name: str
    online: bool = False
    standby: bool = False
    attributes: tuple[tuple[str, str], ...] = ()
    unclean: bool = False
    seen_peer: bool = True
    is_dc: bool = False

    def attribute(self, name: str) -> str | None:
        return _lookup(self.attributes, name)


@dataclass(frozen=True)
class OpResult(_Serialisable):
    """One executed operation. op 'probe' is a one-shot monitor (interval 0) run when a node joins.

    The node fills the definition fields: params_digest (ResourceConfig.params_digest of the
    definition the operation ran with), file_digest (the agent's digest of what it reads besides
    its parameters, e.g. balancier:proxy's configuration file, as seen when the operation ran; ""
    when the agent reads nothing else) and reloadable (the agent can apply a changed definition
    with a `reload`). A start or reload records what the running instance applied; a later
    monitor records what the node sees now, so the policy engine can tell that it is stale.
    """

    resource: str
    node: str
    op: str
    rc: int
    interval_ms: int = 0
    call_id: int = 0
    time: float = 0.0
    exec_ms: int = 0
    output: str = ""
    timed_out: bool = False
    params_digest: str = ""
    file_digest: str = ""
    reloadable: bool = False

    @property
    def is_probe(self) -> bool:
        return self.op == "probe" or (self.op == "monitor" and self.interval_ms == 0)

    @property
    def ok(self) -> bool:
        """Did the operation give the result its action expects?"""
        if self.timed_out:
            return False
        if self.is_probe:
            return self.rc in OCF.OK_CODES or self.rc in (OCF.NOT_RUNNING, OCF.ERR_INSTALLED)
        if self.op == "stop":
            # A stop that finds nothing running has reached its goal.
            return self.rc in OCF.OK_CODES or self.rc == OCF.NOT_RUNNING
        if self.op == "monitor" and self.rc == OCF.ERR_UNIMPLEMENTED:
            return True  # a recurring op the agent does not support: no recovery (spec §5)
        return self.rc in OCF.OK_CODES

    @property
    def hard(self) -> bool:
        """A failure that bans the node for this resource (rc 2/4/5, or 3 for a non-recurring op)."""
        if self.timed_out:
            return False
        if self.is_probe and self.rc == OCF.ERR_INSTALLED:
            return True  # "not installed here": stopped, and the node cannot run it
        if self.ok:
            return False
        return self.rc in OCF.HARD or (self.rc == OCF.ERR_UNIMPLEMENTED and self.interval_ms == 0)

    @property
    def fatal(self) -> bool:
        """rc 6: the configuration is invalid; the resource may run nowhere."""
        return not self.timed_out and self.rc in OCF.FATAL


@dataclass(frozen=True)
class ResourceStatus(_Serialisable):
    """The history of one resource on one node: last result per (op, interval), fail count."""

    resource: str
    node: str
    ops: tuple[OpResult, ...] = ()
    fail_count: int = 0
    last_failure: float | None = None

    @property
    def last_call(self) -> OpResult | None:
        return max(self.ops, key=lambda o: o.call_id, default=None)

    @property
    def state(self) -> str:
        """unknown | stopped | started | failed | blocked, from the latest result.

        failed: possibly running and unhealthy (failed start, failed monitor, odd probe): it must be
        stopped before being started anywhere. blocked: a stop failed, so it may still run here and
        nothing may be done with it until fencing or cleanup.
        """
        last = self.last_call
        if last is None:
            return "unknown"
        if last.op == "stop":
            return "stopped" if last.ok else "blocked"
        if last.is_probe:
            if last.rc in (OCF.NOT_RUNNING, OCF.ERR_INSTALLED) and not last.timed_out:
                return "stopped"
            return "started" if last.ok else "failed"
        if last.op in ("start", "reload", "migrate_from", "migrate_to"):
            return "started" if last.ok else "failed"
        # recurring monitor
        if last.ok:
            return "started"
        return "failed"

    def monitor_active(self, interval_ms: int) -> bool:
        """Is a recurring monitor of this interval running since the latest start (or probe)?"""
        since = max((o.call_id for o in self.ops if o.op in ("start", "migrate_from") or o.is_probe), default=-1)
        return any(o.op == "monitor" and o.interval_ms == interval_ms and o.call_id > since for o in self.ops)


@dataclass(frozen=True)
class CibStatus(_Serialisable):
    nodes: tuple[NodeStatus, ...] = ()
    resources: tuple[ResourceStatus, ...] = ()


@dataclass(frozen=True)
class Cib(_Serialisable):
    """One versioned snapshot of the cluster information base.

    version = (admin_epoch, epoch, num_updates), compared lexicographically: the highest wins.
    """

    admin_epoch: int = 0
    epoch: int = 0
    num_updates: int = 0
    configuration: CibConfiguration = field(default_factory=CibConfiguration)
    status: CibStatus = field(default_factory=CibStatus)
    have_quorum: bool = True
    dc: str | None = None

    @property
    def version(self) -> tuple[int, int, int]:
        return (self.admin_epoch, self.epoch, self.num_updates)

    def node(self, name: str) -> NodeStatus:
        """The status of a configured node; a node never heard of is offline."""
        for n in self.status.nodes:
            if n.name == name:
                return n
        return NodeStatus(name=name)

    def resource_status(self, resource: str, node: str) -> ResourceStatus:
        for rs in self.status.resources:
            if rs.resource == resource and rs.node == node:
                return rs
        return ResourceStatus(resource=resource, node=node)

    def standby(self, node: str) -> bool:
        return node in self.configuration.standby_nodes or self.node(node).standby
