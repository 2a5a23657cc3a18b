"""CIB operations: pure functions that return a NEW Cib, plus atomic persistence with a digest.

Versioning rules (spec cluster.md §2.2):
- A change of the configuration bumps `epoch` and resets `num_updates` to 0.
- Any other change (status: nodes, operation results, fail counts, quorum, DC) bumps `num_updates`.
- `admin_epoch` changes only by an explicit administrator action (bump_admin_epoch).
- A function that changes nothing returns the very same object (no version bump), so callers can
  test `new is old` to know whether anything must be replicated.
- Copies compare on (admin_epoch, epoch, num_updates); merge() keeps the configuration of the highest.

Runtime constraints written by administrators (spec §4.6): migrate writes `cli-prefer-RES` (+INFINITY
on the target, after deleting any previous cli-prefer of RES and any cli-ban of RES on the target);
ban writes `cli-ban-RES-on-NODE` (-INFINITY); unmigrate deletes both kinds. A lifetime sets
`expires`; expire() drops them once past, schedule() already ignores them.

Fail counts (spec §5): a failed start sets the node's fail count to INFINITY when
start-failure-is-fatal (else +1); a failed stop sets INFINITY; a failed recurring monitor adds 1;
probes never count. A successful stop forgets that node's recurring monitor results (they are
cancelled with the stop).

Persistence: only the version and the configuration are written (status is rebuilt from the nodes).
The file is JSON with a sha256 `digest` of its canonical form; it is written to a temporary file,
fsynced and renamed over the old one. load() refuses a torn or hand-edited file with CibError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from balancier.cluster.model import (
    Cib,
    CibConfiguration,
    CibStatus,
    LocationConstraint,
    NodeStatus,
    OpResult,
    ResourceStatus,
)
from balancier.cluster.scores import INFINITY, add

FILE_FORMAT = "balancier-cib/1"


class CibError(Exception):
    """A request the CIB refuses (unknown resource, torn file, ...), with a message for a person."""


# --------------------------------------------------------------------------- versioning helpers


def _with_configuration(cib: Cib, conf: CibConfiguration) -> Cib:
    if conf == cib.configuration:
        return cib
    return dataclasses.replace(cib, configuration=conf, epoch=cib.epoch + 1, num_updates=0)


def _with_status(cib: Cib, **changes: Any) -> Cib:
    new = dataclasses.replace(cib, **changes)
    if new == cib:
        return cib
    return dataclasses.replace(new, num_updates=cib.num_updates + 1)


def _check_resource(cib: Cib, res: str) -> None:
    conf = cib.configuration
    if conf.resource(res) is None and conf.group(res) is None and conf.clone(res) is None:
        raise CibError(f"no such resource {res!r}")


def _check_node(cib: Cib, node: str) -> None:
    if node not in cib.configuration.nodes:
        raise CibError(f"no such node {node!r}")


def from_configuration(conf: CibConfiguration) -> Cib:
    """A first CIB from a configuration (version 0.1.0); refuses an inconsistent configuration."""
    problems = conf.problems()
    if problems:
        raise CibError("invalid configuration: " + "; ".join(problems))
    return Cib(admin_epoch=0, epoch=1, num_updates=0, configuration=conf,
               status=CibStatus(nodes=tuple(NodeStatus(name=n) for n in conf.nodes)),
               have_quorum=False, dc=None)


def replace_configuration(cib: Cib, conf: CibConfiguration) -> Cib:
    """Install an edited configuration (epoch + 1)."""
    problems = conf.problems()
    if problems:
        raise CibError("invalid configuration: " + "; ".join(problems))
    return _with_configuration(cib, conf)


def bump_admin_epoch(cib: Cib) -> Cib:
    """Make every other copy obsolete (administrator action)."""
    return dataclasses.replace(cib, admin_epoch=cib.admin_epoch + 1, num_updates=0)


# --------------------------------------------------------------------------- runtime constraints


def _set_locations(cib: Cib, keep: list[LocationConstraint], add_one: LocationConstraint | None) -> Cib:
    locs = tuple(keep) + ((add_one,) if add_one is not None else ())
    return _with_configuration(cib, dataclasses.replace(cib.configuration, locations=locs))


def _active_on(cib: Cib, res: str, node: str) -> bool:
    g = cib.configuration.group(res)
    first = g.resources[0] if g is not None else res
    return cib.resource_status(first, node).state == "started" and cib.node(node).online


def migrate(cib: Cib, res: str, node: str, lifetime_s: float | None = None, now: float = 0.0,
            force: bool = False) -> Cib:
    """crm resource migrate RES NODE [lifetime]: prefer NODE with +INFINITY."""
    _check_resource(cib, res)
    _check_node(cib, node)
    if cib.configuration.clone(res) is not None:
        raise CibError(f"{res} is a clone: it runs on every eligible node and cannot be migrated "
                       f"(ban it from a node instead)")
    if not force and _active_on(cib, res, node):
        raise CibError(f"{res} is already active on {node}")
    keep = [c for c in cib.configuration.locations
            if c.id != f"cli-prefer-{res}" and c.id != f"cli-ban-{res}-on-{node}"]
    expires = now + lifetime_s if lifetime_s is not None else None
    return _set_locations(cib, keep, LocationConstraint(f"cli-prefer-{res}", res, node, INFINITY, expires))


def ban(cib: Cib, res: str, node: str, lifetime_s: float | None = None, now: float = 0.0) -> Cib:
    """crm resource ban RES NODE [lifetime]: -INFINITY on NODE (holds even if NODE is the last one)."""
    _check_resource(cib, res)
    _check_node(cib, node)
    cid = f"cli-ban-{res}-on-{node}"
    keep = [c for c in cib.configuration.locations if c.id != cid]
    expires = now + lifetime_s if lifetime_s is not None else None
    return _set_locations(cib, keep, LocationConstraint(cid, res, node, -INFINITY, expires))


def unmigrate(cib: Cib, res: str) -> Cib:
    """crm resource unmigrate/clear RES: delete cli-prefer-RES and every cli-ban-RES-on-*."""
    _check_resource(cib, res)
    keep = [c for c in cib.configuration.locations
            if c.id != f"cli-prefer-{res}" and not c.id.startswith(f"cli-ban-{res}-on-")]
    return _set_locations(cib, keep, None)


def set_target_role(cib: Cib, res: str, role: str) -> Cib:
    """crm resource start|stop RES: meta target-role=Started|Stopped on the primitive or group."""
    _check_resource(cib, res)
    if role not in ("Started", "Stopped"):
        raise CibError(f"target-role must be Started or Stopped, not {role!r}")
    conf = cib.configuration

    def with_role(meta: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in meta if k != "target-role") + (("target-role", role),)

    if conf.group(res) is not None:
        groups = tuple(dataclasses.replace(g, meta=with_role(g.meta)) if g.id == res else g for g in conf.groups)
        return _with_configuration(cib, dataclasses.replace(conf, groups=groups))
    if conf.clone(res) is not None:
        clones = tuple(dataclasses.replace(c, meta=with_role(c.meta)) if c.id == res else c for c in conf.clones)
        return _with_configuration(cib, dataclasses.replace(conf, clones=clones))
    resources = tuple(dataclasses.replace(r, meta=with_role(r.meta)) if r.id == res else r
                      for r in conf.resources)
    return _with_configuration(cib, dataclasses.replace(conf, resources=resources))


# --------------------------------------------------------------------------- nodes


def set_standby(cib: Cib, node: str, on: bool, lifetime: str = "forever") -> Cib:
    """crm node standby NODE [reboot|forever] / crm node online NODE (which clears both kinds)."""
    _check_node(cib, node)
    if lifetime not in ("forever", "reboot"):
        raise CibError(f"standby lifetime must be forever or reboot, not {lifetime!r}")
    conf = cib.configuration
    persistent = tuple(n for n in conf.standby_nodes if n != node)
    if on and lifetime == "forever":
        persistent = persistent + (node,)
    new = _with_configuration(cib, dataclasses.replace(conf, standby_nodes=persistent))
    transient = on and lifetime == "reboot"
    current = new.node(node)
    if current.standby != transient:
        new = set_node_status(new, dataclasses.replace(current, standby=transient))
    return new


def set_node_status(cib: Cib, status: NodeStatus) -> Cib:
    """Replace (or add) one node's status as the membership layer sees it."""
    _check_node(cib, status.name)
    nodes = [n for n in cib.status.nodes if n.name != status.name] + [status]
    order = {n: i for i, n in enumerate(cib.configuration.nodes)}
    nodes.sort(key=lambda n: order.get(n.name, len(order)))
    return _with_status(cib, status=dataclasses.replace(cib.status, nodes=tuple(nodes)))


def set_node_online(cib: Cib, node: str, online: bool, *, unclean: bool | None = None,
                    seen_peer: bool | None = None) -> Cib:
    """Membership change. A node that goes offline loses its transient state (standby, attributes)."""
    _check_node(cib, node)
    cur = cib.node(node)
    new = dataclasses.replace(cur, online=online)
    if not online:
        new = dataclasses.replace(new, standby=False, attributes=(), is_dc=False)
    if unclean is not None:
        new = dataclasses.replace(new, unclean=unclean)
    if seen_peer is not None:
        new = dataclasses.replace(new, seen_peer=seen_peer)
    return set_node_status(cib, new)


def set_attribute(cib: Cib, node: str, name: str, value: str | None) -> Cib:
    """Set (or with None delete) a transient node attribute such as the ping score."""
    cur = cib.node(node)
    attrs = tuple((k, v) for k, v in cur.attributes if k != name)
    if value is not None:
        attrs = tuple(sorted(attrs + ((name, value),)))
    return set_node_status(cib, dataclasses.replace(cur, attributes=attrs))


def set_quorum(cib: Cib, have_quorum: bool) -> Cib:
    return _with_status(cib, have_quorum=have_quorum)


def set_dc(cib: Cib, dc: str | None) -> Cib:
    nodes = tuple(dataclasses.replace(n, is_dc=(n.name == dc)) for n in cib.status.nodes)
    return _with_status(cib, dc=dc, status=dataclasses.replace(cib.status, nodes=nodes))


# --------------------------------------------------------------------------- operation history


def _set_resource_status(cib: Cib, rs: ResourceStatus | None, res: str, node: str) -> Cib:
    others = [r for r in cib.status.resources if not (r.resource == res and r.node == node)]
    if rs is not None:
        others.append(rs)
    others.sort(key=lambda r: (r.resource, r.node))
    return _with_status(cib, status=dataclasses.replace(cib.status, resources=tuple(others)))


def _op_key(op: OpResult) -> tuple[str, int]:
    return ("probe", 0) if op.is_probe else (op.op, op.interval_ms)


def record_op(cib: Cib, op: OpResult) -> Cib:
    """Record one operation result and update the fail count. call_id <= 0 means 'the next one'."""
    _check_node(cib, op.node)
    if cib.configuration.resource(op.resource) is None:
        raise CibError(f"no such primitive resource {op.resource!r}")
    if op.op not in ("start", "stop", "monitor", "probe", "reload", "migrate_to", "migrate_from"):
        raise CibError(f"unknown operation {op.op!r}")
    if op.call_id <= 0:
        last = max((o.call_id for r in cib.status.resources if r.node == op.node for o in r.ops), default=0)
        op = dataclasses.replace(op, call_id=last + 1)
    rs = cib.resource_status(op.resource, op.node)
    ops = [o for o in rs.ops if _op_key(o) != _op_key(op)]
    if op.op == "stop" and op.ok:
        ops = [o for o in ops if not (o.op == "monitor" and o.interval_ms > 0)]
    ops.append(op)
    ops.sort(key=lambda o: o.call_id)
    fail_count, last_failure = rs.fail_count, rs.last_failure
    conf = cib.configuration
    rconf = conf.resource(op.resource)
    on_fail = None
    if rconf is not None:
        oc = rconf.op(op.op if not op.is_probe else "monitor", op.interval_ms)
        on_fail = oc.on_fail if oc is not None else None
    if not op.ok and not op.is_probe and on_fail != "ignore":
        if op.op == "start":
            fail_count = INFINITY if conf.options.start_failure_is_fatal else add(fail_count, 1)
        elif op.op == "stop":
            fail_count = INFINITY
        else:
            fail_count = add(fail_count, 1)
        last_failure = op.time
    new = dataclasses.replace(rs, ops=tuple(ops), fail_count=fail_count, last_failure=last_failure)
    return _set_resource_status(cib, new, op.resource, op.node)


def set_node_history(cib: Cib, node: str, history: tuple[ResourceStatus, ...]) -> Cib:
    """Install what a node's executor reports when it (re)joins: its history replaces ours for that node.

    After a reboot the report is empty, so every resource is probed there again.
    """
    _check_node(cib, node)
    for rs in history:
        if rs.node != node:
            raise CibError(f"history of {rs.resource} on {rs.node} reported by {node}")
        if cib.configuration.resource(rs.resource) is None:
            raise CibError(f"no such primitive resource {rs.resource!r}")
    keep = [r for r in cib.status.resources if r.node != node] + list(history)
    keep.sort(key=lambda r: (r.resource, r.node))
    return _with_status(cib, status=dataclasses.replace(cib.status, resources=tuple(keep)))


def forget_node(cib: Cib, node: str) -> Cib:
    """Drop a node's history: after it was fenced (it runs nothing) or when it left for good."""
    return set_node_history(cib, node, ())


def _members(cib: Cib, res: str) -> tuple[str, ...]:
    g = cib.configuration.group(res)
    c = cib.configuration.clone(res)
    return g.resources if g is not None else (c.resource,) if c is not None else (res,)


def cleanup(cib: Cib, res: str, node: str | None = None) -> Cib:
    """crm resource cleanup RES [NODE]: forget history and fail counts, so the resource is re-probed."""
    _check_resource(cib, res)
    if node is not None:
        _check_node(cib, node)
    members = set(_members(cib, res))
    keep = tuple(r for r in cib.status.resources
                 if not (r.resource in members and (node is None or r.node == node)))
    return _with_status(cib, status=dataclasses.replace(cib.status, resources=keep))


def clear_failcount(cib: Cib, res: str, node: str) -> Cib:
    """crm_failcount -D: reset the fail count; failed results that no longer decide the state go too."""
    rs = cib.resource_status(res, node)
    if rs.fail_count == 0 and rs.last_failure is None:
        return cib
    last = rs.last_call
    ops = tuple(o for o in rs.ops if o.ok or o is last)
    return _set_resource_status(cib, dataclasses.replace(rs, ops=ops, fail_count=0, last_failure=None),
                                res, node)


def failure_expiry(cib: Cib, rs: ResourceStatus) -> float | None:
    """When the failures of rs expire under failure-timeout (None: never, or no failure)."""
    if rs.last_failure is None:
        return None
    ft = cib.configuration.failure_timeout_ms(rs.resource)
    if ft <= 0:
        return None
    return rs.last_failure + ft / 1000.0


def expire(cib: Cib, now: float) -> Cib:
    """Drop cli-prefer/cli-ban constraints past their lifetime and failures past failure-timeout."""
    conf = cib.configuration
    locs = tuple(c for c in conf.locations if c.active(now))
    new = _with_configuration(cib, dataclasses.replace(conf, locations=locs))
    for rs in cib.status.resources:
        when = failure_expiry(new, rs)
        if when is not None and now >= when:
            new = clear_failcount(new, rs.resource, rs.node)
    return new


# --------------------------------------------------------------------------- replication


def merge(a: Cib, b: Cib) -> Cib:
    """Combine two copies: the configuration (and version) of the higher version wins (a on a tie).

    Status: node entries come from the winner, completed with the other copy's nodes; for each
    (resource, node) history the copy with the newer last call id wins (call ids are numbered by the
    node that ran the operations, so the newer history is the one that node reported last).
    """
    winner, other = (a, b) if a.version >= b.version else (b, a)
    names = {n.name for n in winner.status.nodes}
    nodes = list(winner.status.nodes) + [n for n in other.status.nodes
                                         if n.name not in names and n.name in winner.configuration.nodes]
    order = {n: i for i, n in enumerate(winner.configuration.nodes)}
    nodes.sort(key=lambda n: order.get(n.name, len(order)))
    hist: dict[tuple[str, str], ResourceStatus] = {}
    for rs in other.status.resources:
        hist[(rs.resource, rs.node)] = rs
    for rs in winner.status.resources:
        prev = hist.get((rs.resource, rs.node))
        if prev is None or _last_id(rs) >= _last_id(prev):
            hist[(rs.resource, rs.node)] = rs
    known = {r.id for r in winner.configuration.resources}
    resources = tuple(sorted((rs for rs in hist.values() if rs.resource in known),
                             key=lambda r: (r.resource, r.node)))
    return dataclasses.replace(winner, status=CibStatus(nodes=tuple(nodes), resources=resources))


def _last_id(rs: ResourceStatus) -> int:
    return max((o.call_id for o in rs.ops), default=-1)


def to_json(cib: Cib) -> str:
    """Canonical JSON: sorted keys, no spaces; equal CIBs give equal text."""
    return json.dumps(cib.to_dict(), sort_keys=True, separators=(",", ":"))


def from_json(text: str) -> Cib:
    try:
        return Cib.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise CibError(f"not a valid CIB: {exc}") from exc


def digest(cib: Cib, include_status: bool = True) -> str:
    """sha256 of the canonical JSON; with include_status=False only version + configuration count."""
    if include_status:
        text = to_json(cib)
    else:
        text = _canonical(_persisted(cib))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- persistence


def _persisted(cib: Cib) -> dict[str, Any]:
    return {"format": FILE_FORMAT, "admin_epoch": cib.admin_epoch, "epoch": cib.epoch,
            "num_updates": cib.num_updates, "configuration": cib.configuration.to_dict()}


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def save(path: str | os.PathLike[str], cib: Cib, durable: bool = True) -> None:
    """Write version + configuration atomically: temp file, fsync, rename, fsync the directory.

    durable=False skips both fsyncs (still atomic): for a change of num_updates only, which a crash
    may lose without harm (the status part is rebuilt from the nodes, and the highest copy wins).
    """
    target = Path(path)
    doc = _persisted(cib)
    doc["digest"] = hashlib.sha256(_canonical(doc).encode()).hexdigest()
    text = json.dumps(doc, sort_keys=True, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dfd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load(path: str | os.PathLike[str]) -> Cib:
    """Read a saved CIB (empty status, no quorum, no DC); refuse a torn or hand-edited file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CibError(f"{p}: not a CIB file (not UTF-8 text)") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CibError(f"{p}: torn or corrupt CIB file (invalid JSON at line {exc.lineno}: {exc.msg}); "
                       f"refusing it") from exc
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise CibError(f"{p}: not a {FILE_FORMAT} file")
    stored = doc.pop("digest", None)
    if not isinstance(stored, str):
        raise CibError(f"{p}: no digest; refusing an unsigned CIB file")
    actual = hashlib.sha256(_canonical(doc).encode()).hexdigest()
    if actual != stored:
        raise CibError(f"{p}: digest mismatch (file says {stored[:12]}…, content is {actual[:12]}…): "
                       f"the file was edited by hand or partly written; refusing it")
    try:
        conf = CibConfiguration.from_dict(doc["configuration"])
        version = (int(doc["admin_epoch"]), int(doc["epoch"]), int(doc["num_updates"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise CibError(f"{p}: malformed CIB content: {exc}") from exc
    return Cib(admin_epoch=version[0], epoch=version[1], num_updates=version[2], configuration=conf,
               status=CibStatus(nodes=tuple(NodeStatus(name=n) for n in conf.nodes)),
               have_quorum=False, dc=None)
