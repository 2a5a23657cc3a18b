"""The daemon's admin API: JSON over HTTP (aiohttp) on a local UNIX socket and, when configured, on TCP.

Rules this file governs:
- ``<state-dir>/admin.sock`` is created with mode 0600: whoever can open it is root-equivalent and
  acts with the ``admin`` role, named ``uid=N`` (from SO_PEERCRED) in the logs.
- ``[api] listen = "host:port"`` adds an HTTP listener that requires authentication: the auth file
  (mode 0600 or stricter, else the daemon refuses to start) holds ``user:role:token`` lines (role
  ``read`` or ``admin``; ``#`` comments). A request carries ``Authorization: Bearer TOKEN`` or HTTP
  basic ``user:token``. No or wrong credentials -> 401 (with ``WWW-Authenticate``); a ``read`` user
  asking for a change -> 403. Tokens are compared in constant time.
- Endpoints: ``GET /api/status``, ``GET /api/cib``, ``POST /api/cib`` ({"set": {key: value}} or
  {"configuration": {...}}), ``POST /api/resource/{id}/{migrate|unmigrate|ban|cleanup|start|stop}``
  (body: node, lifetime, force), ``POST /api/node/{name}/{standby|online}``.
- Changes are made by the DC only. A change sent to another node is forwarded to the DC over the
  cluster's reliable channel and the DC's answer is returned (the client never has to find the
  DC). Every change answers with the resulting transition (its sentences and actions) and is
  logged with who asked for it. Errors are JSON ``{"error": sentence}`` with 400/401/403/404/409/503.
- The web dashboard (``balancier.web.dashboard``) is served by the same app, behind the same authentication:
  ``GET /`` (redirect), ``/dashboard``, ``/dashboard/state.json``, ``/events``, ``/dashboard/static/...`` and its
  POST actions; it also adds a middleware refusing cross-site POSTs everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from balancier.cluster import cib as cibops

if TYPE_CHECKING:
    from balancier.cluster.daemon import Daemon

log = logging.getLogger("balancier.cluster.api")

ROLES = ("read", "admin")
RESOURCE_OPS = ("migrate", "unmigrate", "ban", "cleanup", "start", "stop")
NODE_OPS = ("standby", "online")
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Credential:
    user: str
    role: str
    token: str


class AuthFileError(OSError):
    """The auth file is missing, too open or malformed: the daemon does not start its HTTP API."""


def load_auth_file(path: str | os.PathLike[str]) -> list[Credential]:
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text()
    except OSError as exc:
        raise AuthFileError(f"{p}: cannot read: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise AuthFileError(f"{p}: mode {stat.S_IMODE(st.st_mode):04o} lets others read the tokens; "
                            f"chmod 600 it")
    creds: list[Credential] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise AuthFileError(f"{p}:{lineno}: expected user:role:token")
        user, role, token = parts
        if role not in ROLES:
            raise AuthFileError(f"{p}:{lineno}: unknown role {role!r} (expected read or admin)")
        if len(token) < 8:
            raise AuthFileError(f"{p}:{lineno}: token of {user} is shorter than 8 characters")
        creds.append(Credential(user, role, token))
    if not creds:
        raise AuthFileError(f"{p}: no user:role:token line")
    return creds


def authenticate(creds: list[Credential], header: str | None) -> Credential | None:
    """The credential matching an Authorization header (Bearer TOKEN or Basic user:token)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    user: str | None = None
    if scheme.lower() == "bearer":
        token = value
    elif scheme.lower() == "basic":
        try:
            user, _, token = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
    else:
        return None
    found = None
    for c in creds:  # compare against every entry: the time taken does not tell which one matched
        ok = hmac.compare_digest(c.token.encode(), token.encode())
        if ok and (user is None or hmac.compare_digest(c.user.encode(), user.encode())) and found is None:
            found = c
    return found


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _peer_uid(request: web.Request) -> str:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            return f"uid={uid}"
        except OSError:
            pass
    return "local"


class AdminApi:
    """Serves one daemon's admin API; start() opens the UNIX socket and the HTTP listener."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        cfg = daemon.cfg
        serves_http = cfg.api_listen_for(daemon.me) is not None
        self.creds: list[Credential] = load_auth_file(cfg.api_auth_file) if serves_http and cfg.api_auth_file else []
        self.socket_path = daemon.state_dir / "admin.sock"
        self._runners: list[web.AppRunner] = []

    def _app(self, local: bool) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth_middleware(local)])
        app.router.add_get("/api/status", self.get_status)
        app.router.add_get("/api/cib", self.get_cib)
        app.router.add_post("/api/cib", self.post_cib)
        app.router.add_post("/api/resource/{id}/{op}", self.post_resource)
        app.router.add_post("/api/node/{name}/{op}", self.post_node)
        from balancier.web.dashboard import register as register_dashboard

        register_dashboard(app, self, local=local)
        return app

    def _auth_middleware(self, local: bool) -> Any:
        @web.middleware
        async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
            if local:
                request["user"], request["role"] = _peer_uid(request), "admin"
            else:
                cred = authenticate(self.creds, request.headers.get("Authorization"))
                if cred is None:
                    return web.json_response({"error": "authentication required"}, status=401,
                                             headers={"WWW-Authenticate": 'Basic realm="balancier"'})
                request["user"], request["role"] = cred.user, cred.role
            if request.method not in ("GET", "HEAD") and request["role"] != "admin":
                log.warning("refused %s %s to %s (role %s)", request.method, request.path, request["user"],
                            request["role"], extra={"component": "admin", "user": request["user"]})
                return _error(403, f"{request['user']} has the read role: changes need the admin role")
            return await handler(request)
        return auth

    async def start(self) -> None:
        with_unix = self._app(local=True)
        runner = web.AppRunner(with_unix, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        old = os.umask(0o177)  # the socket is born 0600, not chmod-ed after a window
        try:
            await web.UnixSite(runner, str(self.socket_path)).start()
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        listen = self.daemon.cfg.api_listen_for(self.daemon.me)
        if listen is not None:
            tcp = web.AppRunner(self._app(local=False), access_log=None)
            await tcp.setup()
            self._runners.append(tcp)
            await web.TCPSite(tcp, listen[0], listen[1], reuse_address=True).start()
            log.info("admin API on http://%s:%d and %s", listen[0], listen[1], self.socket_path,
                     extra={"component": "admin"})

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    # ---- handlers --------------------------------------------------------------------------------

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.daemon.status_document())

    async def get_cib(self, request: web.Request) -> web.Response:
        return web.json_response(json.loads(cibops.to_json(self.daemon.cib)))

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"the body is not JSON: {exc}"}),
                                     content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                     content_type="application/json")
        return body

    async def _change(self, request: web.Request, op: str, args: dict[str, Any]) -> web.Response:
        answer = await self.daemon.admin(op, args, str(request["user"]))
        status = int(answer.get("status", 200 if answer.get("ok") else 500))
        return web.json_response(answer, status=status)

    async def post_resource(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in RESOURCE_OPS:
            return _error(404, f"unknown resource operation {op!r} (known: {', '.join(RESOURCE_OPS)})")
        body = await self._body(request)
        args: dict[str, Any] = {k: body[k] for k in ("node", "lifetime", "force") if k in body}
        args["resource"] = request.match_info["id"]
        return await self._change(request, op, args)

    async def post_node(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in NODE_OPS:
            return _error(404, f"unknown node operation {op!r} (known: {', '.join(NODE_OPS)})")
        body = await self._body(request)
        args = {"node": request.match_info["name"]}
        if "lifetime" in body:
            args["lifetime"] = body["lifetime"]
        return await self._change(request, op, args)

    async def post_cib(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if "set" in body and isinstance(body["set"], dict) and len(body["set"]) == 1:
            (key, value), = body["set"].items()
            return await self._change(request, "cib_set", {"key": str(key), "value": str(value)})
        if "configuration" in body:
            return await self._change(request, "cib_replace", {"configuration": body["configuration"]})
        return _error(400, 'expected {"set": {"KEY": "VALUE"}} or {"configuration": {...}}')
