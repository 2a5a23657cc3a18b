"""Administrator changes to the CIB (crm resource / crm node / crm configure), as one pure function.

Rules this file governs (spec cluster.md §8.2):
- ``apply_change(cib, op, args, now)`` returns the new CIB or raises :class:`ChangeError` with the
  HTTP status to answer (400 bad request, 404 unknown resource/node, 409 refused by the CIB) and a
  sentence for a person. It never does I/O: the DC calls it, then replicates and schedules.
- Operations: migrate {resource, node, lifetime?} writes cli-prefer (+INFINITY); unmigrate
  {resource} deletes cli-prefer and cli-ban; ban {resource, node?} writes cli-ban (-INFINITY; without
  a node, on the node where the resource runs now); cleanup {resource, node?} forgets history and
  fail counts (a re-probe follows); start/stop {resource} set target-role; standby/online {node}
  (standby is the persistent kind, "forever", unless lifetime "reboot"); cib_set {key, value} sets a
  cluster option (Pacemaker's names or ours, dashes or underscores); cib_replace {configuration}
  installs a whole configuration (epoch + 1).
- Lifetimes are ISO-8601 durations (PT1H, P1DT30M, PT90S) or our durations (90s, 5min).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from balancier.cluster import cib as cibops
from balancier.cluster.model import Cib, CibConfiguration, parse_bool
from balancier.cluster.scores import ScoreError, parse_duration_ms, parse_score

OPERATIONS = ("migrate", "unmigrate", "ban", "cleanup", "start", "stop", "standby", "online", "cib_set",
              "cib_replace")
_ISO = re.compile(r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?")

# option name (dashes) -> (ClusterOptions field, parser)
_OPTIONS: dict[str, str] = {
    "stickiness": "stickiness", "resource-stickiness": "stickiness", "default-resource-stickiness": "stickiness",
    "no-quorum-policy": "no_quorum_policy", "symmetric-cluster": "symmetric_cluster",
    "migration-threshold": "migration_threshold", "failure-timeout": "failure_timeout_ms",
    "start-failure-is-fatal": "start_failure_is_fatal",
}


class ChangeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_lifetime(text: str) -> float:
    """Seconds of an ISO-8601 duration (PT1H, P1D, P1DT2H30M, PT0.5S) or of "90s"/"5min"/"2h"."""
    t = text.strip()
    if t.upper().startswith("P"):
        m = _ISO.fullmatch(t.upper())
        if m is None or t.upper() in ("P", "PT") or t.upper().endswith("T"):
            raise ValueError(f"{text!r} is not an ISO-8601 duration (e.g. PT1H, P1D, PT30M)")
        parts = {k: float(v) for k, v in m.groupdict().items() if v is not None}
        seconds = (parts.get("w", 0) * 7 * 86400 + parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600
                   + parts.get("m", 0) * 60 + parts.get("s", 0))
    else:
        try:
            seconds = parse_duration_ms(t) / 1000.0
        except ScoreError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: a lifetime must be positive")
    return seconds


def _text(args: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        if required:
            raise ChangeError(400, f"missing {key!r}")
        return None
    if not isinstance(value, str):
        raise ChangeError(400, f"{key!r} must be a string")
    return value


def _running_on(cib: Cib, res: str) -> list[str]:
    g = cib.configuration.group(res)
    c = cib.configuration.clone(res)
    first = g.resources[0] if g is not None else c.resource if c is not None else res
    return [n for n in cib.configuration.nodes
            if cib.node(n).online and cib.resource_status(first, n).state in ("started", "failed")]


def set_option(conf: CibConfiguration, key: str, value: str) -> CibConfiguration:
    name = key.strip().lower().replace("_", "-")
    field = _OPTIONS.get(name)
    if field is None:
        raise ChangeError(400, f"unknown cluster option {key!r} (known: {', '.join(sorted(_OPTIONS))})")
    try:
        parsed: Any
        if field in ("stickiness", "migration_threshold"):
            parsed = parse_score(value)
        elif field == "failure_timeout_ms":
            parsed = 0 if value.strip() == "0" else parse_duration_ms(value)
        elif field in ("symmetric_cluster", "start_failure_is_fatal"):
            parsed = parse_bool(value)
        else:
            if value not in ("stop", "ignore", "freeze"):
                raise ValueError(f"{value!r}: expected stop, ignore or freeze")
            parsed = value
    except (ValueError, ScoreError) as exc:
        raise ChangeError(400, f"{key}: {exc}") from None
    return dataclasses.replace(conf, options=dataclasses.replace(conf.options, **{field: parsed}))


def apply_change(cib: Cib, op: str, args: dict[str, Any], now: float) -> Cib:
    """The CIB after an administrator's change (see the module rules)."""
    conf = cib.configuration
    try:
        if op in ("migrate", "unmigrate", "ban", "cleanup", "start", "stop"):
            res = _text(args, "resource")
            assert res is not None
            if conf.resource(res) is None and conf.group(res) is None and conf.clone(res) is None:
                raise ChangeError(404, f"no such resource {res!r}")
            node = _text(args, "node", required=op == "migrate")
            if node is not None and node not in conf.nodes:
                raise ChangeError(404, f"no such node {node!r}")
            lifetime = _text(args, "lifetime", required=False)
            seconds = None
            if lifetime is not None:
                try:
                    seconds = parse_lifetime(lifetime)
                except ValueError as exc:
                    raise ChangeError(400, f"lifetime: {exc}") from None
            if op == "migrate":
                assert node is not None
                return cibops.migrate(cib, res, node, seconds, now, force=bool(args.get("force")))
            if op == "unmigrate":
                return cibops.unmigrate(cib, res)
            if op == "ban":
                if node is None:
                    where = _running_on(cib, res)
                    if len(where) != 1:
                        raise ChangeError(409, f"{res} is not running on exactly one node: name the node to ban")
                    node = where[0]
                return cibops.ban(cib, res, node, seconds, now)
            if op == "cleanup":
                return cibops.cleanup(cib, res, node)
            return cibops.set_target_role(cib, res, "Started" if op == "start" else "Stopped")
        if op in ("standby", "online"):
            node = _text(args, "node")
            assert node is not None
            if node not in conf.nodes:
                raise ChangeError(404, f"no such node {node!r}")
            return cibops.set_standby(cib, node, op == "standby", str(args.get("lifetime") or "forever"))
        if op == "cib_set":
            key, value = _text(args, "key"), _text(args, "value")
            assert key is not None and value is not None
            return cibops.replace_configuration(cib, set_option(conf, key, value))
        if op == "cib_replace":
            raw = args.get("configuration")
            if not isinstance(raw, dict):
                raise ChangeError(400, "expected {\"configuration\": {...}}")
            try:
                new_conf = CibConfiguration.from_dict(raw)
            except (ValueError, TypeError, KeyError) as exc:
                raise ChangeError(400, f"not a valid configuration: {exc}") from None
            if set(new_conf.nodes) != set(conf.nodes):
                raise ChangeError(400, "the nodes are set by the cluster configuration file, not by a CIB edit")
            return cibops.replace_configuration(cib, new_conf)
    except cibops.CibError as exc:
        raise ChangeError(409, str(exc)) from None
    raise ChangeError(400, f"unknown operation {op!r} (known: {', '.join(OPERATIONS)})")


def describe(op: str, args: dict[str, Any]) -> str:
    """'migrate web to lb2 (lifetime PT1H)' for logs."""
    res, node = args.get("resource"), args.get("node")
    if op == "migrate":
        life = f" (lifetime {args['lifetime']})" if args.get("lifetime") else ""
        return f"migrate {res} to {node}{life}"
    if op in ("standby", "online"):
        return f"{op} {node}"
    if op == "cib_set":
        return f"set {args.get('key')}={args.get('value')}"
    if op == "cib_replace":
        return "replace the configuration"
    return f"{op} {res}" + (f" on {node}" if node else "")
