"""Client side of the admin commands: status, resource, node, cib, check-cluster.

Rules this file governs:
- Where to talk: ``-s SOCKET`` (a daemon's admin.sock), ``--state-dir DIR`` (DIR/admin.sock), or
  ``--url http://host:port`` with ``--token`` / ``$BALANCIER_TOKEN`` (Bearer) and optionally
  ``--user`` (HTTP basic user:token). Default: /var/lib/balancier/admin.sock.
- Any node answers: changes sent to a node that is not the DC are forwarded by that node to the DC.
- Exit codes: 0 done; 1 refused (the answer's sentence on stderr), unreachable daemon or bad
  input. ``check-cluster`` follows the monitoring plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
  (daemon unreachable or unreadable answer), and prints exactly one line.
- ``cib edit``: the CIB's configuration as pretty JSON (sorted keys, 2 spaces) in a temporary file,
  opened with ``$VISUAL`` or ``$EDITOR`` (default ``vi``; split like a shell would, no shell); an
  unchanged file sends nothing; invalid JSON or a configuration the model or the DC refuses is
  reported (``FILE:LINE: message`` for JSON) and the edited file is kept for another try; accepted,
  the resulting transition is printed and the file removed.
- Plain blocking HTTP (http.client) with a timeout: a command-line tool needs no event loop.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Any

from balancier.cluster import statusfmt
from balancier.cluster.changes import parse_lifetime
from balancier.cluster.model import CibConfiguration

DEFAULT_SOCKET = "/var/lib/balancier/admin.sock"


class Unreachable(Exception):
    """The daemon could not be asked (no socket, refused, timed out, not JSON)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One daemon's admin API, over its UNIX socket or HTTP."""

    def __init__(self, *, socket_path: str | None = None, url: str | None = None, token: str | None = None,
                 user: str | None = None, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.url = urllib.parse.urlsplit(url) if url else None
        self.token = token
        self.user = user
        self.timeout = timeout

    @property
    def where(self) -> str:
        return self.url.geturl() if self.url is not None else str(self.socket_path)

    def _connection(self) -> http.client.HTTPConnection:
        if self.url is not None:
            if self.url.scheme == "https":
                return http.client.HTTPSConnection(self.url.netloc, timeout=self.timeout)
            return http.client.HTTPConnection(self.url.netloc, timeout=self.timeout)
        return _UnixConnection(str(self.socket_path), self.timeout)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json"}
        if self.url is not None and self.token:
            if self.user:
                raw = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
                headers["Authorization"] = f"Basic {raw}"
            else:
                headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        prefix = self.url.path.rstrip("/") if self.url is not None else ""
        conn = self._connection()
        try:
            conn.request(method, prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw_body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach the cluster daemon at {self.where}: {reason}") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw_body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise Unreachable(f"{self.where} answered {resp.status} with something that is not JSON") from None
        if not isinstance(doc, dict):
            raise Unreachable(f"{self.where} answered {resp.status} with a JSON {type(doc).__name__}")
        return resp.status, doc


def client_from_args(args: argparse.Namespace) -> Client:
    url = getattr(args, "url", None)
    timeout = float(getattr(args, "timeout", None) or 10.0)
    if url:
        token = getattr(args, "token", None) or os.environ.get("BALANCIER_TOKEN")
        return Client(url=url, token=token, user=getattr(args, "user", None), timeout=timeout)
    path = getattr(args, "socket", None)
    if not path and getattr(args, "state_dir", None):
        path = os.path.join(args.state_dir, "admin.sock")
    return Client(socket_path=path or DEFAULT_SOCKET, timeout=timeout)


def _fail(message: str) -> int:
    print(f"balancier: {message}", file=sys.stderr)
    return 1


def format_change(answer: dict[str, Any]) -> str:
    """'migrate web to lb2: done by the DC lb1 (CIB 0.2.0)' then the transition's sentences and actions."""
    lines = [f"{answer.get('change')}: done by the DC {answer.get('dc')} (CIB {answer.get('cib_version')})"
             + ("" if answer.get("changed", True) else "; nothing changed")]
    trans = answer.get("transition") or {}
    for reason in trans.get("reasons") or []:
        lines.append(f"  {reason}")
    actions = trans.get("actions") or []
    lines.append("  actions: " + ("; ".join(actions) if actions else "none"))
    return "\n".join(lines)


def _change(client: Client, path: str, body: dict[str, Any] | None) -> int:
    try:
        status, answer = client.request("POST", path, body or {})
    except Unreachable as exc:
        return _fail(str(exc))
    if status != 200 or not answer.get("ok"):
        return _fail(f"refused ({status}): {answer.get('error', answer)}")
    print(format_change(answer))
    return 0


# ---- commands ---------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    remaining = args.iterations
    while True:
        try:
            status, doc = client.request("GET", "/api/status")
        except Unreachable as exc:
            return _fail(str(exc))
        if status != 200:
            return _fail(f"status refused ({status}): {doc.get('error', doc)}")
        if args.json:
            text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        else:
            text = statusfmt.format_table(doc)
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J")  # home + clear, as crm_mon does
        sys.stdout.write(text)
        sys.stdout.flush()
        if not args.watch:
            return 0
        if remaining is not None:
            remaining -= 1
            if remaining <= 0:
                return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def cmd_resource(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    body: dict[str, Any] = {}
    if getattr(args, "node", None):
        body["node"] = args.node
    lifetime = getattr(args, "lifetime", None)
    if lifetime:
        try:
            parse_lifetime(lifetime)
        except ValueError as exc:
            return _fail(f"--lifetime: {exc}")
        body["lifetime"] = lifetime
    if getattr(args, "force", False):
        body["force"] = True
    res = urllib.parse.quote(args.resource, safe="")
    return _change(client, f"/api/resource/{res}/{args.resource_command}", body)


def cmd_node(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    body = {"lifetime": args.lifetime} if getattr(args, "lifetime", None) else {}
    return _change(client, f"/api/node/{urllib.parse.quote(args.node, safe='')}/{args.node_command}", body)


def _edit_text(path: str, editor: list[str]) -> int:
    try:
        return subprocess.run([*editor, path], check=False).returncode
    except OSError as exc:
        print(f"balancier: cannot run the editor {editor[0]}: {exc}", file=sys.stderr)
        return 127


def cmd_cib_edit(client: Client) -> int:
    """Fetch the configuration, let $EDITOR change it, validate and send it to the DC."""
    try:
        status, doc = client.request("GET", "/api/cib")
    except Unreachable as exc:
        return _fail(str(exc))
    if status != 200 or not isinstance(doc.get("configuration"), dict):
        return _fail(f"refused ({status}): {doc.get('error', 'no configuration in the answer')}")
    original = doc["configuration"]
    fd, path = tempfile.mkstemp(prefix="balancier-cib-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(original, indent=2, sort_keys=True) + "\n")
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi") or ["vi"]
    rc = _edit_text(path, editor)
    if rc != 0:
        return _fail(f"the editor {editor[0]} exited with {rc}; nothing sent (your edit is kept in {path})")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        edited = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fail(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno}); nothing sent, "
                     f"your edit is kept in {path}")
    if edited == original:
        os.unlink(path)
        print("cib edit: the configuration is unchanged; nothing sent")
        return 0
    if not isinstance(edited, dict):
        return _fail(f"{path}:1: expected a JSON object (the configuration); nothing sent, your edit is kept")
    try:
        CibConfiguration.from_dict(edited)
    except (ValueError, TypeError, KeyError) as exc:
        return _fail(f"{path}: not a valid configuration: {exc}; nothing sent, your edit is kept in {path}")
    try:
        status, answer = client.request("POST", "/api/cib", {"configuration": edited})
    except Unreachable as exc:
        return _fail(f"{exc}; your edit is kept in {path}")
    if status != 200 or not answer.get("ok"):
        return _fail(f"refused ({status}): {answer.get('error', answer)}; your edit is kept in {path}")
    os.unlink(path)
    print(format_change(answer))
    return 0


def cmd_cib(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    if args.cib_command == "set":
        return _change(client, "/api/cib", {"set": {args.key: args.value}})
    if args.cib_command == "edit":
        return cmd_cib_edit(client)
    try:
        status, doc = client.request("GET", "/api/cib")
    except Unreachable as exc:
        return _fail(str(exc))
    if status != 200:
        return _fail(f"refused ({status}): {doc.get('error', doc)}")
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    doc: dict[str, Any] | None = None
    error = None
    try:
        status, answer = client.request("GET", "/api/status")
        if status != 200:
            error = f"the daemon at {client.where} answered {status}: {answer.get('error', '')}"
        elif answer.get("format") != statusfmt.FORMAT:
            error = f"the daemon at {client.where} answered an unknown status format {answer.get('format')!r}"
        else:
            doc = answer
    except Unreachable as exc:
        error = str(exc)
    try:
        code, line = statusfmt.nagios(doc, expect_nodes=args.expect_nodes, error=error,
                                      failcount_warn=not args.ignore_failcount)
    except (KeyError, TypeError, ValueError) as exc:  # a document we do not understand is UNKNOWN, not a crash
        code, line = statusfmt.UNKNOWN, f"CLUSTER UNKNOWN: unreadable status: {exc!r}"
    print(line)
    return code


def run(args: argparse.Namespace) -> int:
    handlers = {"status": cmd_status, "resource": cmd_resource, "node": cmd_node, "cib": cmd_cib,
                "check-cluster": cmd_check}
    return handlers[args.command](args)
