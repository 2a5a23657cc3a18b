"""The dashboard's view of the proxy: which stats socket to ask, ``show stat json`` parsed into rows, rates.

Rules this file governs:
- The control plane drives the proxy as a process: this file never imports the data plane. It speaks
  HAProxy's CLI protocol (one line, the answer, the server closes) to the socket named by the
  ``balancier:proxy`` resource's ``runtime_socket`` parameter (``stats_socket`` is accepted as a synonym).
  A socket is a UNIX path or ``[ipv4@]host:port``.
- A proxy resource without such a parameter is reported as "not configured", never guessed.
- ``show stat json`` is HAProxy's list of rows, each a list of typed fields; a row becomes a dict
  {field name: value} (absent fields are empty in HAProxy's output and left out here as well).
- Requests per second are derived from the backend's cumulative request counter (``req_tot``, else
  ``stot``) between two samples; a counter that went down (proxy restarted) starts a new series.
- Server state changes between two samples become timeline events ("server be/s is DOWN (was UP)").
- Runtime commands sent for the administrator are built here from validated names only: a name holding
  anything but HAProxy's name characters is refused, so a command can never be smuggled in with ``;``.

Public API:
    ProxyTarget(resource, node, socket, state); proxy_targets(conf_resources, status_doc) -> list
    parse_stat_json(text) -> list[dict]; Sample(t, rows); backend_rates(prev, cur) -> {backend: {rate, rtime}}
    server_changes(prev, cur) -> list[str]; state_word(status) -> str; server_command(op, backend, server, weight=None) -> str
    async query(socket, line, timeout=2.0) -> str
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PROXY_AGENT = "balancier:proxy"
SOCKET_PARAMS = ("runtime_socket", "stats_socket")
SERVER_OPS = ("drain", "maint", "ready", "weight")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # HAProxy's proxy/server name characters
MAX_ANSWER = 4 << 20


@dataclass(frozen=True)
class ProxyTarget:
    """One ``balancier:proxy`` resource: where it runs now and the socket its stats come from."""

    resource: str
    node: str | None  # None: not running anywhere
    socket: str | None  # None: no runtime_socket parameter
    state: str


def proxy_targets(resources: Iterable[Any], status_doc: dict[str, Any]) -> list[ProxyTarget]:
    """The proxy resources of the configuration (ResourceConfig objects), placed by the status document."""
    where: dict[str, tuple[str | None, str]] = {}
    for top in status_doc.get("resources", []):
        for m in top.get("members", []):
            where[m["id"]] = (m.get("node"), m.get("state", "stopped"))
    out = []
    for r in resources:
        if r.agent != PROXY_AGENT:
            continue
        sock = next((r.param(p) for p in SOCKET_PARAMS if r.param(p)), None)
        node, state = where.get(r.id, (None, "stopped"))
        out.append(ProxyTarget(r.id, node, sock, state))
    return out


def parse_stat_json(text: str) -> list[dict[str, Any]]:
    """``show stat json`` -> one dict per row, plus ``_type`` (Frontend, Backend, Server)."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("show stat json: expected a list of rows")
    rows = []
    for fields in data:
        if not isinstance(fields, list) or not fields:
            continue
        row: dict[str, Any] = {"_type": fields[0].get("objType", "")}
        for f in fields:
            try:
                row[f["field"]["name"]] = f["value"]["value"]
            except (KeyError, TypeError):
                raise ValueError(f"show stat json: malformed field {f!r}") from None
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds
    rows: list[dict[str, Any]] = field(default_factory=list)

    def backends(self) -> dict[str, dict[str, Any]]:
        return {r["pxname"]: r for r in self.rows if r["_type"] == "Backend"}

    def servers(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["pxname"], r["svname"]): r for r in self.rows if r["_type"] == "Server"}


def _count(row: dict[str, Any]) -> int | None:
    for key in ("req_tot", "stot"):
        v = row.get(key)
        if isinstance(v, int):
            return v
    return None


def backend_rates(prev: Sample | None, cur: Sample) -> dict[str, dict[str, float | None]]:
    """{backend: {"rate": requests/s since prev (None on the first sample or after a reset), "rtime": ms}}."""
    out: dict[str, dict[str, float | None]] = {}
    before = prev.backends() if prev is not None else {}
    dt = cur.t - prev.t if prev is not None else 0.0
    for name, row in cur.backends().items():
        rate: float | None = None
        now_count, old = _count(row), before.get(name)
        old_count = _count(old) if old is not None else None
        if now_count is not None and old_count is not None and dt > 0 and now_count >= old_count:
            rate = round((now_count - old_count) / dt, 2)
        rtime = row.get("rtime")
        out[name] = {"rate": rate, "rtime": float(rtime) if isinstance(rtime, int) else None}
    return out


def state_word(status: str) -> str:
    """The state in a ``status`` column: "UP 1/3" -> UP, "no check" (up, unchecked) -> UP, "" -> "?"."""
    text = status.strip()
    if not text:
        return "?"
    return "UP" if text.startswith("no check") else text.split(" ", 1)[0]


def server_changes(prev: Sample | None, cur: Sample) -> list[str]:
    """Sentences for servers whose state word changed between two samples."""
    if prev is None:
        return []
    old = prev.servers()
    out = []
    for key, row in cur.servers().items():
        before = old.get(key)
        if before is None:
            continue
        a, b = state_word(str(before.get("status", ""))), state_word(str(row.get("status", "")))
        if a != b:
            out.append(f"server {key[0]}/{key[1]} is {b} (was {a})")
    return out


def server_command(op: str, backend: str, server: str, weight: Any = None) -> str:
    """The runtime API line for an administrator's server action; ValueError with a sentence if invalid."""
    if op not in SERVER_OPS:
        raise ValueError(f"unknown server operation {op!r} (known: {', '.join(SERVER_OPS)})")
    for what, name in (("backend", backend), ("server", server)):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"invalid {what} name {name!r}")
    if op == "weight":
        text = str(weight).strip() if weight is not None else ""
        if not text.isdigit() or not 0 <= int(text) <= 256:
            raise ValueError(f"weight must be a whole number from 0 to 256, not {weight!r}")
        return f"set server {backend}/{server} weight {int(text)}"
    return f"set server {backend}/{server} state {op}"


def _address(sock: str) -> tuple[str, Any]:
    if sock.startswith("unix@"):
        return "unix", sock[5:]
    text = sock[5:] if sock.startswith(("ipv4@", "ipv6@")) else sock
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and not text.startswith("/"):
        return "tcp", (host.strip("[]") or "127.0.0.1", int(port))
    return "unix", sock


async def query(sock: str, line: str, timeout: float = 2.0) -> str:
    """Send one command line to a stats socket and read the whole answer (the server closes after it)."""
    kind, addr = _address(sock)

    async def run() -> str:
        if kind == "unix":
            reader, writer = await asyncio.open_unix_connection(addr, limit=MAX_ANSWER)
        else:
            reader, writer = await asyncio.open_connection(addr[0], addr[1], limit=MAX_ANSWER)
        try:
            writer.write(line.rstrip("\n").encode() + b"\n")
            await writer.drain()
            chunks = []
            size = 0
            while chunk := await reader.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise OSError("the stats socket's answer is too large")
            return b"".join(chunks).decode("utf-8", "replace")
        finally:
            writer.close()

    return await asyncio.wait_for(run(), timeout)
