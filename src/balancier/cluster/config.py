"""The cluster's TOML configuration -> a frozen :class:`ClusterConfig` (one file, the same on every node).

Rules this file governs (ha.cf + authkeys + the initial CIB of the reference deployment):

- Sections: ``[cluster]`` (timings, port, media, key file, ping nodes, auto_failback), ``[options]``
  (Pacemaker's cluster options), ``[[node]]``, ``[[resource]]``, ``[[group]]``, ``[[clone]]`` (``id``,
  ``resource`` = one primitive, ``meta``: clone-max, clone-node-max = 1, interleave), ``[[location]]``,
  ``[[colocation]]``, ``[[order]]``, ``[api]`` (the admin HTTP API: ``listen = "127.0.0.1:7080"`` and
  ``auth_file``, a mode-0600 file of ``user:role:token`` lines, required with ``listen``). Unknown keys
  are errors, with a "did you mean" when one is close.
- Media (``transport``): ``ucast`` sends to every node's address; ``mcast`` uses ``mcast_group``,
  ``mcast_ttl`` (default 1) and ``mcast_interface`` (a device name such as "eth0", so one file
  serves every node); ``bcast`` sends to ``bcast_address`` (default 255.255.255.255) on
  ``bcast_interface``. A node address is "ip" (port = ``cluster.port``) or "ip:port".
- Durations are strings with a unit ("200ms", "1s", "5min") or bare numbers of seconds (Heartbeat).
- Timing invariants (Heartbeat's, spec §1.1-1.2): keepalive < warntime < deadtime, deadtime > 2 x
  keepalive, initdead >= deadtime; every recurring monitor's timeout < its interval.
  Defaults: keepalive 1s, deadtime 10s, warntime deadtime/2, initdead as Heartbeat computes it from
  deadtime (deadtime if > 10s, 12s if < 6s, else 2 x deadtime).
- An operation's ``role`` may only be "Started" (the default): promotable roles and role=Stopped
  monitors are refused rather than accepted and never run.
- ``auto_failback = false`` means resources stay where they are when their preferred node returns:
  the default resource stickiness becomes INFINITY unless ``[options] stickiness`` is given.
- The key file follows Heartbeat's authkeys: one ``auth N`` line naming the key used to sign, and
  ``N method secret`` lines (N in 0..15; methods sha256, or sha1/md5 for old files; all HMAC). Several
  keys may be listed for rotation: we sign with ``auth N`` and accept any listed key. The file must
  exist and be readable by its owner only (mode 0600), or we refuse to start, as Heartbeat does.
- ``fence_command`` (a string or a list): run with the lost node's name appended before that node's
  resources are recovered elsewhere; configuring it enables fencing (``stonith_enabled``).
- ``[cluster] notify_command`` (a string split like a shell would, or a list; never run through a
  shell): run on role changes with the event's arguments appended (notify.py); relative paths are
  resolved against the configuration file's directory. ``notify_timeout`` bounds it (default 10s).
- Errors read ``FILE:LINE: key.path: message``; every error is reported, in file order.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancier.cluster.model import (
    INFINITY,
    OP_NAMES,
    ROLE_UNSUPPORTED,
    CibConfiguration,
    CloneConfig,
    ClusterOptions,
    ColocationConstraint,
    GroupConfig,
    LocationConstraint,
    OpConfig,
    OrderConstraint,
    ResourceConfig,
)
from balancier.cluster.ping import parse_target
from balancier.cluster.scores import ScoreError, parse_duration_ms, parse_score
from balancier.cluster.transport import Keyring, Medium

CLUSTER_KEYS = {"name", "keepalive", "warntime", "deadtime", "initdead", "port", "transport", "mcast_group",
                "mcast_ttl", "mcast_interface", "bcast_interface", "bcast_address", "authkey_file", "ping",
                "auto_failback", "notify_command", "notify_timeout"}
OPTION_KEYS = {"stickiness", "no_quorum_policy", "symmetric_cluster", "migration_threshold", "failure_timeout",
               "fence_command", "start_failure_is_fatal"}
TOP_KEYS = {"cluster", "options", "node", "resource", "group", "clone", "location", "colocation", "order", "api", "drill"}
API_KEYS = {"listen", "auth_file"}
NODE_KEYS = {"name", "address", "api"}
RESOURCE_KEYS = {"id", "agent", "params", "op", "meta"}
OP_KEYS = {"interval", "timeout", "on_fail", "role", "enabled"}
GROUP_KEYS = {"id", "resources", "meta"}
CLONE_KEYS = {"id", "resource", "meta"}
LOCATION_KEYS = {"id", "resource", "node", "score"}
COLOCATION_KEYS = {"id", "resource", "with", "score"}
ORDER_KEYS = {"id", "first", "then", "kind", "symmetrical"}
HASH_METHODS = {"sha256", "sha1", "md5"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ConfigError(Exception):
    """One or more configuration errors, each already formatted ``FILE:LINE: key: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class NodeConfig:
    name: str
    host: str
    port: int
    api: tuple[str, int] | None = None  # this node's admin HTTP API, overriding [api] listen (several nodes, one host)


@dataclass(frozen=True)
class ClusterConfig:
    path: str
    name: str
    keepalive_ms: int
    warntime_ms: int
    deadtime_ms: int
    initdead_ms: int
    port: int
    media: tuple[str, ...]
    mcast_group: str | None
    mcast_ttl: int
    mcast_interface: str | None
    bcast_interface: str | None
    bcast_address: str | None
    authkey_file: str
    keyring: Keyring
    ping: tuple[str, ...]
    auto_failback: bool
    fence_command: tuple[str, ...] | None
    nodes: tuple[NodeConfig, ...]
    configuration: CibConfiguration
    api_listen: tuple[str, int] | None = None  # [api] listen: host, port of the admin HTTP API
    api_auth_file: str | None = None  # [api] auth_file (absolute)
    notify_command: tuple[str, ...] | None = None  # [cluster] notify_command, split into argv
    notify_timeout_ms: int = 10_000

    def api_listen_for(self, me: str) -> tuple[str, int] | None:
        """Where node `me` serves the admin HTTP API: its own [[node]] api, else [api] listen."""
        for n in self.nodes:
            if n.name == me and n.api is not None:
                return n.api
        return self.api_listen

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> NodeConfig:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def media_for(self, me: str) -> tuple[Medium, ...]:
        """The sockets node ``me`` opens: ucast to every other node, mcast group, bcast address."""
        own = self.node(me)
        out: list[Medium] = []
        for kind in self.media:
            if kind == "ucast":
                dests = tuple((n.host, n.port) for n in self.nodes if n.name != me)
                out.append(Medium("ucast", (own.host, own.port), dests))
            elif kind == "mcast":
                assert self.mcast_group is not None
                out.append(Medium("mcast", ("", self.port), ((self.mcast_group, self.port),),
                                  group=self.mcast_group, ttl=self.mcast_ttl, interface=self.mcast_interface))
            else:
                address = self.bcast_address or "255.255.255.255"
                out.append(Medium("bcast", ("", self.port), ((address, self.port),),
                                  interface=self.bcast_interface))
        return tuple(out)


# ---- locating keys in the source, for FILE:LINE messages --------------------------------------------


class _Locator:
    """Finds the line of ``cluster.deadtime`` or ``resource[1].op`` in the TOML text (best effort)."""

    _HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.tables: dict[str, int] = {}
        self.keys: dict[str, int] = {}
        counts: dict[str, int] = {}
        current = ""
        for lineno, line in enumerate(text.splitlines(), 1):
            h = self._HEADER.match(line)
            if h:
                name = h.group(2).replace(" ", "")
                if h.group(1):
                    idx = counts.get(name, 0)
                    counts[name] = idx + 1
                    current = f"{name}[{idx}]"
                else:
                    current = name
                self.tables.setdefault(current, lineno)
                continue
            k = self._KEY.match(line)
            if k:
                parts = [p.strip() for p in k.group(1).split(".")]
                for n in range(1, len(parts) + 1):  # op.monitor = ... also locates "op"
                    dotted = ".".join(parts[:n])
                    self.keys.setdefault(f"{current}.{dotted}" if current else dotted, lineno)

    def line(self, key: str) -> int | None:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.tables:
                return self.tables[prefix]
        return None

    def format(self, key: str, message: str) -> str:
        line = self.line(key) if key else None
        where = f"{self.path}:{line}" if line else self.path
        return f"{where}: {key}: {message}" if key else f"{where}: {message}"


class _Errors:
    def __init__(self, locator: _Locator) -> None:
        self.locator = locator
        self.items: list[str] = []
        self.lines: list[int] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(self.locator.format(key, message))
        self.lines.append(self.locator.line(key) or 0 if key else 0)

    def sorted(self) -> list[str]:
        """In file order, so a reader can fix them top-down (errors without a line come first)."""
        return [text for _, text in sorted(zip(self.lines, self.items, strict=True), key=lambda p: p[0])]

    def unknown(self, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.add(f"{prefix}.{key}" if prefix else key, f"unknown key{hint}")


# ---- small typed getters ---------------------------------------------------------------------------


def _duration(err: _Errors, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        err.add(key, "expected a duration such as \"200ms\", \"1s\" or \"5min\"")
        return None
    try:
        ms = parse_duration_ms(value) if not isinstance(value, float) else int(round(value * 1000))
    except ScoreError as exc:
        err.add(key, str(exc))
        return None
    if ms <= 0:
        err.add(key, "must be greater than 0")
        return None
    return ms


def _typed(err: _Errors, key: str, value: Any, kind: type, what: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        err.add(key, f"expected {what}")
        return None
    return value


def _score(err: _Errors, key: str, value: Any) -> int | None:
    try:
        return parse_score(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    except ScoreError as exc:
        err.add(key, str(exc))
        return None


def _text_pairs(err: _Errors, key: str, value: Any, meta: bool = False) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        err.add(key, "expected a table")
        return ()
    out = []
    for k, v in value.items():
        if isinstance(v, dict | list):
            err.add(f"{key}.{k}", "expected a string, number or boolean")
            continue
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        out.append((k.replace("_", "-") if meta else k, text))
    return tuple(out)


# ---- the key file ---------------------------------------------------------------------------------


def load_keyring(path: Path) -> Keyring:
    """Read an authkeys-style file; raise ValueError with the reason (bad mode, bad lines)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read key file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ValueError(f"bad permissions on key file {path}: mode {stat.S_IMODE(st.st_mode):04o}, "
                         f"must be 0600 (readable by its owner only); refusing to use it")
    send_id: int | None = None
    keys: dict[int, tuple[str, bytes]] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split(None, 2)
        if words[0] == "auth":
            if send_id is not None:
                raise ValueError(f"{path}:{lineno}: a second 'auth' line")
            if len(words) != 2 or not words[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected 'auth N'")
            send_id = int(words[1])
            continue
        if not words[0].isdigit() or not 0 <= int(words[0]) <= 15:
            raise ValueError(f"{path}:{lineno}: expected 'auth N' or 'N method secret' with N in 0..15")
        if len(words) < 2:
            raise ValueError(f"{path}:{lineno}: missing method")
        method = words[1].lower()
        if method == "crc":
            raise ValueError(f"{path}:{lineno}: method crc authenticates nothing; use sha256")
        if method not in HASH_METHODS:
            raise ValueError(f"{path}:{lineno}: unknown method {words[1]!r} (expected sha256, sha1 or md5)")
        if len(words) < 3 or not words[2].strip():
            raise ValueError(f"{path}:{lineno}: key {words[0]} has no secret")
        keys[int(words[0])] = (method, words[2].strip().encode())
    if send_id is None:
        raise ValueError(f"{path}: no 'auth N' line: no authentication specified")
    if send_id not in keys:
        raise ValueError(f"{path}: 'auth {send_id}' names a key that is not listed")
    return Keyring(send_id=send_id, keys=keys)


# ---- the file -------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate the file; raise :class:`ConfigError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([f"{p}:{m.group(1)}: {msg}" if m else f"{p}: {msg}"]) from None
    err = _Errors(_Locator(str(p), text))
    config = _build(p, data, err)
    if err.items or config is None:
        raise ConfigError(err.sorted())
    return config


def _list_of_tables(err: _Errors, data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        err.add(name, f"expected [[{name}]] tables")
        return []
    return value


def _build(path: Path, data: dict[str, Any], err: _Errors) -> ClusterConfig | None:
    err.unknown("", data, TOP_KEYS)
    cl = data.get("cluster")
    if not isinstance(cl, dict):
        err.add("cluster", "missing [cluster] section")
        return None
    err.unknown("cluster", cl, CLUSTER_KEYS)
    name = _typed(err, "cluster.name", cl.get("name"), str, "a string")
    if name is None and "name" not in cl:
        err.add("cluster.name", "missing (the cluster's name)")

    keepalive = _duration(err, "cluster.keepalive", cl.get("keepalive", "1s"))
    deadtime = _duration(err, "cluster.deadtime", cl.get("deadtime", "10s"))
    warntime = _duration(err, "cluster.warntime", cl.get("warntime"))
    initdead = _duration(err, "cluster.initdead", cl.get("initdead"))
    if deadtime is not None:
        warntime = warntime if warntime is not None or "warntime" in cl else deadtime // 2
        if initdead is None and "initdead" not in cl:
            initdead = deadtime if deadtime > 10_000 else 12_000 if deadtime < 6_000 else 2 * deadtime
    if keepalive and warntime and keepalive >= warntime:
        err.add("cluster.warntime", f"must be greater than keepalive ({keepalive}ms)")
    if warntime and deadtime and warntime >= deadtime:
        err.add("cluster.deadtime", f"must be greater than warntime ({warntime}ms)")
    if keepalive and deadtime and deadtime <= 2 * keepalive:
        err.add("cluster.deadtime", f"must be greater than twice keepalive ({2 * keepalive}ms)")
    if initdead and deadtime and initdead < deadtime:
        err.add("cluster.initdead", f"must be at least deadtime ({deadtime}ms)")

    port = _typed(err, "cluster.port", cl.get("port", 694), int, "a port number")
    if port is not None and not 0 < port < 65536:
        err.add("cluster.port", "must be between 1 and 65535")
        port = None

    transport = cl.get("transport", "ucast")
    media = (transport,) if isinstance(transport, str) else transport
    if not isinstance(media, list | tuple) or not media or not all(isinstance(m, str) for m in media):
        err.add("cluster.transport", "expected \"ucast\", \"mcast\", \"bcast\" or a list of them")
        media = ()
    for m in media:
        if m not in ("ucast", "mcast", "bcast"):
            err.add("cluster.transport", f"unknown medium {m!r} (expected ucast, mcast or bcast)")
    if len(set(media)) != len(media):
        err.add("cluster.transport", "a medium is listed twice")
    mcast_group = _typed(err, "cluster.mcast_group", cl.get("mcast_group"), str, "an IPv4 multicast address")
    mcast_ttl = _typed(err, "cluster.mcast_ttl", cl.get("mcast_ttl", 1), int, "an integer")
    if "mcast" in media:
        if mcast_group is None:
            err.add("cluster.mcast_group", "required with transport mcast")
        else:
            try:
                if not ipaddress.IPv4Address(mcast_group).is_multicast:
                    err.add("cluster.mcast_group", f"{mcast_group} is not in 224.0.0.0/4")
            except ValueError:
                err.add("cluster.mcast_group", f"{mcast_group!r} is not an IPv4 address")
        if mcast_ttl is not None and not 1 <= mcast_ttl <= 255:
            err.add("cluster.mcast_ttl", "must be between 1 and 255")
    mcast_interface = _typed(err, "cluster.mcast_interface", cl.get("mcast_interface"), str, "a device name")
    bcast_interface = _typed(err, "cluster.bcast_interface", cl.get("bcast_interface"), str, "a device name")
    bcast_address = _typed(err, "cluster.bcast_address", cl.get("bcast_address"), str, "an IPv4 address")

    keyring: Keyring | None = None
    keyfile = _typed(err, "cluster.authkey_file", cl.get("authkey_file"), str, "a path")
    if keyfile is None:
        if "authkey_file" not in cl:
            err.add("cluster.authkey_file", "missing: messages must be signed (no authentication specified)")
    else:
        kp = Path(keyfile) if os.path.isabs(keyfile) else path.parent / keyfile
        keyfile = str(kp)
        try:
            keyring = load_keyring(kp)
        except ValueError as exc:
            err.add("cluster.authkey_file", str(exc))

    ping = cl.get("ping", [])
    if not isinstance(ping, list) or not all(isinstance(t, str) for t in ping):
        err.add("cluster.ping", "expected a list of \"host\" or \"host:port\"")
        ping = []
    for t in ping:
        try:
            host, _ = parse_target(t)
            ipaddress.IPv4Address(host)
        except ValueError:
            err.add("cluster.ping", f"bad target {t!r}: expected \"ip\" (ICMP) or \"ip:port\" (TCP)")
    auto_failback = _typed(err, "cluster.auto_failback", cl.get("auto_failback", True), bool, "true or false")

    notify_raw = cl.get("notify_command")
    notify: tuple[str, ...] | None = None
    if isinstance(notify_raw, str) and notify_raw.strip():
        notify = tuple(shlex.split(notify_raw))
    elif isinstance(notify_raw, list) and notify_raw and all(isinstance(a, str) and a for a in notify_raw):
        notify = tuple(notify_raw)
    elif notify_raw is not None:
        err.add("cluster.notify_command", "expected a command line string or a non-empty list of arguments")
    if notify is not None and "/" in notify[0] and not os.path.isabs(notify[0]):
        notify = (str(path.parent / notify[0]), *notify[1:])
    notify_timeout = _duration(err, "cluster.notify_timeout", cl.get("notify_timeout", "10s"))

    nodes = _nodes(err, data, port or 694)
    options, fence = _options(err, data, auto_failback, bool(ping))
    conf = _resources(err, data, nodes, options)
    api_listen, api_auth = _api(err, data, path)
    if err.items or keyring is None or conf is None:
        return None
    assert keepalive and warntime and deadtime and initdead and port is not None
    return ClusterConfig(
        path=str(path), name=name, keepalive_ms=keepalive, warntime_ms=warntime, deadtime_ms=deadtime,
        initdead_ms=initdead, port=port, media=tuple(media), mcast_group=mcast_group, mcast_ttl=mcast_ttl or 1,
        mcast_interface=mcast_interface, bcast_interface=bcast_interface, bcast_address=bcast_address,
        authkey_file=keyfile or "", keyring=keyring, ping=tuple(ping), auto_failback=bool(auto_failback),
        fence_command=fence, nodes=nodes, configuration=conf, api_listen=api_listen, api_auth_file=api_auth,
        notify_command=notify, notify_timeout_ms=notify_timeout or 10_000)


def _api(err: _Errors, data: dict[str, Any], path: Path) -> tuple[tuple[str, int] | None, str | None]:
    """[api] listen = "host:port", auth_file = "path" (relative to the configuration file)."""
    a = data.get("api", {})
    if not isinstance(a, dict):
        err.add("api", "expected an [api] table")
        return None, None
    err.unknown("api", a, API_KEYS)
    listen_raw = _typed(err, "api.listen", a.get("listen"), str, "\"host:port\"")
    auth = _typed(err, "api.auth_file", a.get("auth_file"), str, "a path")
    listen: tuple[str, int] | None = None
    if listen_raw is not None:
        listen = _host_port(listen_raw)
        if listen is None:
            err.add("api.listen", f"{listen_raw!r}: expected \"host:port\" (e.g. \"127.0.0.1:7080\")")
        if auth is None and "auth_file" not in a:
            err.add("api.auth_file", "required with api.listen: the HTTP API never runs unauthenticated")
    nodes = data.get("node")
    node_api = isinstance(nodes, list) and any(isinstance(n, dict) and "api" in n for n in nodes)
    if node_api and auth is None and "auth_file" not in a:
        err.add("api.auth_file", "required with a node's api: the HTTP API never runs unauthenticated")
    if auth is not None:
        auth = auth if os.path.isabs(auth) else str(path.parent / auth)
    return listen, auth


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def _nodes(err: _Errors, data: dict[str, Any], default_port: int) -> tuple[NodeConfig, ...]:
    out: list[NodeConfig] = []
    for i, t in enumerate(_list_of_tables(err, data, "node")):
        key = f"node[{i}]"
        err.unknown(key, t, NODE_KEYS)
        name = _typed(err, f"{key}.name", t.get("name"), str, "a string")
        addr = _typed(err, f"{key}.address", t.get("address"), str, "\"ip\" or \"ip:port\"")
        if name is None or addr is None:
            if "name" not in t or "address" not in t:
                err.add(key, "a node needs name and address")
            continue
        if not NAME_RE.fullmatch(name):
            err.add(f"{key}.name", f"invalid node name {name!r}")
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            host, port_text = addr, str(default_port)
        try:
            ipaddress.IPv4Address(host)
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            err.add(f"{key}.address", f"bad address {addr!r}: expected \"ip\" or \"ip:port\"")
            continue
        if any(n.name == name for n in out):
            err.add(f"{key}.name", f"node {name!r} is defined twice")
        if any((n.host, n.port) == (host, port) for n in out):
            err.add(f"{key}.address", f"{host}:{port} is already used by another node")
        api = None
        api_raw = _typed(err, f"{key}.api", t.get("api"), str, "\"host:port\"")
        if api_raw is not None:
            api = _host_port(api_raw)
            if api is None:
                err.add(f"{key}.api", f"{api_raw!r}: expected \"host:port\" (e.g. \"127.0.0.1:7081\")")
        out.append(NodeConfig(name, host, port, api))
    if not out:
        err.add("node", "no nodes defined")
    return tuple(out)


def _options(err: _Errors, data: dict[str, Any], auto_failback: bool | None, has_ping: bool
             ) -> tuple[ClusterOptions, tuple[str, ...] | None]:
    o = data.get("options", {})
    if not isinstance(o, dict):
        err.add("options", "expected an [options] table")
        o = {}
    err.unknown("options", o, OPTION_KEYS)
    stickiness = _score(err, "options.stickiness", o.get("stickiness")) if "stickiness" in o else None
    if auto_failback is False:
        if stickiness == 0:
            err.add("options.stickiness", "0 contradicts cluster.auto_failback = false")
        stickiness = INFINITY if stickiness is None else stickiness
    nqp = o.get("no_quorum_policy", "stop")
    if nqp not in ("stop", "ignore", "freeze"):
        err.add("options.no_quorum_policy", f"{nqp!r}: expected stop, ignore or freeze")
        nqp = "stop"
    symmetric = _typed(err, "options.symmetric_cluster", o.get("symmetric_cluster", True), bool, "true or false")
    threshold = _score(err, "options.migration_threshold", o.get("migration_threshold", "INFINITY"))
    if threshold is not None and threshold < 0:
        err.add("options.migration_threshold", "must not be negative")
    ft = o.get("failure_timeout", 0)
    failure_timeout = 0 if ft in (0, "0") else _duration(err, "options.failure_timeout", ft)
    sfif = _typed(err, "options.start_failure_is_fatal", o.get("start_failure_is_fatal", True), bool,
                  "true or false")
    fence_raw = o.get("fence_command")
    fence: tuple[str, ...] | None = None
    if isinstance(fence_raw, str) and fence_raw.strip():
        fence = tuple(shlex.split(fence_raw))
    elif isinstance(fence_raw, list) and fence_raw and all(isinstance(a, str) for a in fence_raw):
        fence = tuple(fence_raw)
    elif fence_raw is not None:
        err.add("options.fence_command", "expected a command line string or a list of arguments")
    options = ClusterOptions(
        stickiness=stickiness or 0, no_quorum_policy=nqp, symmetric_cluster=bool(symmetric),
        migration_threshold=threshold if threshold is not None else INFINITY,
        failure_timeout_ms=failure_timeout or 0, stonith_enabled=fence is not None,
        start_failure_is_fatal=bool(sfif), ping_score_attribute="pingd" if has_ping else None)
    return options, fence


def _ops(err: _Errors, key: str, value: Any) -> tuple[OpConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        err.add(key, "expected op.<name> = { interval = ..., timeout = ... }")
        return ()
    out: list[OpConfig] = []
    for op_name, spec in value.items():
        specs = spec if isinstance(spec, list) else [spec]
        for j, s in enumerate(specs):
            k = f"{key}.{op_name}" + (f"[{j}]" if isinstance(spec, list) else "")
            if op_name not in OP_NAMES:
                err.add(k, "unsupported operation (expected start, stop, monitor, reload, migrate_to or "
                           "migrate_from)")
                continue
            if not isinstance(s, dict):
                err.add(k, "expected a table")
                continue
            err.unknown(k, s, OP_KEYS)
            interval = _duration(err, f"{k}.interval", s["interval"]) if s.get("interval") not in (None, 0, "0") \
                else 0
            timeout = _duration(err, f"{k}.timeout", s.get("timeout", "20s"))
            if op_name == "monitor" and not interval:
                err.add(f"{k}.interval", "a monitor needs an interval")
            if interval and timeout and timeout >= interval:
                err.add(f"{k}.timeout", f"must be shorter than the interval ({interval}ms)")
            on_fail = s.get("on_fail")
            if on_fail is not None and on_fail not in ("ignore", "block", "stop", "restart", "fence", "standby"):
                err.add(f"{k}.on_fail", f"{on_fail!r}: expected ignore, block, stop, restart, fence or standby")
            role = _typed(err, f"{k}.role", s.get("role"), str, "a role name")
            if role not in (None, "Started"):
                err.add(f"{k}.role", f"{role!r}: {ROLE_UNSUPPORTED}")
                role = None
            enabled = _typed(err, f"{k}.enabled", s.get("enabled", True), bool, "true or false")
            out.append(OpConfig(name=op_name, interval_ms=interval or 0, timeout_ms=timeout or 20_000,
                                on_fail=on_fail, role=role, enabled=bool(enabled)))
    return tuple(out)


def _resources(err: _Errors, data: dict[str, Any], nodes: tuple[NodeConfig, ...], options: ClusterOptions
               ) -> CibConfiguration | None:
    resources: list[ResourceConfig] = []
    for i, t in enumerate(_list_of_tables(err, data, "resource")):
        key = f"resource[{i}]"
        err.unknown(key, t, RESOURCE_KEYS)
        rid = _typed(err, f"{key}.id", t.get("id"), str, "a string")
        agent = _typed(err, f"{key}.agent", t.get("agent"), str, "a string such as \"balancier:vip\"")
        if rid is None or agent is None:
            if "id" not in t or "agent" not in t:
                err.add(key, "a resource needs id and agent")
            continue
        resources.append(ResourceConfig(id=rid, agent=agent, params=_text_pairs(err, f"{key}.params", t.get("params")),
                                        ops=_ops(err, f"{key}.op", t.get("op")),
                                        meta=_text_pairs(err, f"{key}.meta", t.get("meta"), meta=True)))
    groups: list[GroupConfig] = []
    for i, t in enumerate(_list_of_tables(err, data, "group")):
        key = f"group[{i}]"
        err.unknown(key, t, GROUP_KEYS)
        gid = _typed(err, f"{key}.id", t.get("id"), str, "a string")
        members = t.get("resources")
        if gid is None or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            err.add(key, "a group needs id and resources (a list of resource ids)")
            continue
        groups.append(GroupConfig(id=gid, resources=tuple(members),
                                  meta=_text_pairs(err, f"{key}.meta", t.get("meta"), meta=True)))
    clones: list[CloneConfig] = []
    for i, t in enumerate(_list_of_tables(err, data, "clone")):
        key = f"clone[{i}]"
        err.unknown(key, t, CLONE_KEYS)
        cid = _typed(err, f"{key}.id", t.get("id"), str, "a string")
        wrapped = _typed(err, f"{key}.resource", t.get("resource"), str, "a resource id")
        if cid is None or wrapped is None:
            if "id" not in t or "resource" not in t:
                err.add(key, "a clone needs id and resource (the primitive to run on every node)")
            continue
        clones.append(CloneConfig(id=cid, resource=wrapped,
                                  meta=_text_pairs(err, f"{key}.meta", t.get("meta"), meta=True)))
    locations: list[LocationConstraint] = []
    for i, t in enumerate(_list_of_tables(err, data, "location")):
        key = f"location[{i}]"
        err.unknown(key, t, LOCATION_KEYS)
        res, node, score = t.get("resource"), t.get("node"), _score(err, f"{key}.score", t.get("score"))
        if not isinstance(res, str) or not isinstance(node, str) or score is None:
            err.add(key, "a location needs resource, node and score (an integer or \"INFINITY\")")
            continue
        locations.append(LocationConstraint(id=str(t.get("id", f"loc-{res}-{node}")), resource=res, node=node,
                                            score=score))
    colocations: list[ColocationConstraint] = []
    for i, t in enumerate(_list_of_tables(err, data, "colocation")):
        key = f"colocation[{i}]"
        err.unknown(key, t, COLOCATION_KEYS)
        res, with_, score = t.get("resource"), t.get("with"), _score(err, f"{key}.score", t.get("score", "INFINITY"))
        if not isinstance(res, str) or not isinstance(with_, str) or score is None:
            err.add(key, "a colocation needs resource, with and score")
            continue
        colocations.append(ColocationConstraint(id=str(t.get("id", f"col-{res}-{with_}")), resource=res,
                                                with_resource=with_, score=score))
    orders: list[OrderConstraint] = []
    for i, t in enumerate(_list_of_tables(err, data, "order")):
        key = f"order[{i}]"
        err.unknown(key, t, ORDER_KEYS)
        first, then = t.get("first"), t.get("then")
        kind = t.get("kind", "Mandatory")
        sym = _typed(err, f"{key}.symmetrical", t.get("symmetrical", True), bool, "true or false")
        if not isinstance(first, str) or not isinstance(then, str):
            err.add(key, "an order needs first and then")
            continue
        orders.append(OrderConstraint(id=str(t.get("id", f"order-{first}-{then}")), first=first, then=then,
                                      kind=str(kind), symmetrical=bool(sym)))
    conf = CibConfiguration(nodes=tuple(n.name for n in nodes), resources=tuple(resources), groups=tuple(groups),
                            locations=tuple(locations), colocations=tuple(colocations), orders=tuple(orders),
                            options=options, clones=tuple(clones))
    for problem in conf.problems():
        if "must be shorter than its interval" in problem:
            continue  # already reported above, with the key's line
        err.add(_problem_key(problem, data), problem)
    return conf


def _problem_key(problem: str, data: dict[str, Any]) -> str:
    """Map a model problem ("resource 'vip': ...") back to the table it came from, for the line number."""
    m = re.match(r"(resource|group|clone|location|colocation|order) '([^']+)'", problem)
    if m:
        for i, t in enumerate(data.get(m.group(1), []) or []):
            if isinstance(t, dict) and t.get("id") == m.group(2):
                return f"{m.group(1)}[{i}]"
        return m.group(1)
    return ""
