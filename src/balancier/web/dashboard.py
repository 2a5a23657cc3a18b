"""The web dashboard: aiohttp routes on the cluster daemon's admin API app (same listener, same auth).

Rules this file governs:
- ``register(app, api, local=...)`` adds the routes below to the app api.py builds, after its auth
  middleware: every page and event stream needs the ``read`` role, every change the ``admin`` role (a
  ``read`` user gets 403 from that middleware before reaching a handler here).
- ``GET /dashboard`` is the whole page as plain HTML tables (it reads without JavaScript); ``GET /`` redirects
  to it. ``GET /dashboard/state.json`` is the same picture for programs. ``GET /events`` is a server-sent
  event stream: every second an ``update`` event with the HTML of each section and a chart point (requests/s
  and response time per backend); the first event also carries the last minute of chart points.
  Static assets come from the package (``/dashboard/static``); nothing is fetched from elsewhere.
- Changes: ``POST /dashboard/plan`` answers the planned transition as JSON (plan.py: the policy engine on a
  copy of the CIB with the change applied; for a proxy server, the runtime API command and the server's
  current state), ``POST /dashboard/confirm`` shows the same plan as a page (the no-JavaScript path) and
  ``POST /dashboard/do`` makes the change: cluster changes through the daemon (``Daemon.admin``: applied by
  the DC, forwarded to it from any node), server changes through the proxy's runtime API. Each is logged
  with who asked, as ``USER via dashboard``.
- Every POST here carries the CSRF token (csrf.py) or is refused with 403; a change to ``/api/...`` coming
  from another site is refused with 403 by the middleware this file adds.
- Event streams end when the daemon shuts down (``on_shutdown``), so stopping is never held up by a browser.
- A small task looks at the daemon's last transition every 0.1 s (snapshot.TransitionLog), so the timeline
  keeps why things moved after the next transition replaced it.
- The proxy's stats are sampled at most once a second whatever the number of viewers.

Public API:
    register(app, api, *, local) -> None
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from balancier.cluster.changes import describe
from balancier.web import csrf, render, snapshot
from balancier.web.plan import CLUSTER_OPS, plan_change
from balancier.web.proxystats import (
    SERVER_OPS,
    ProxyTarget,
    Sample,
    backend_rates,
    parse_stat_json,
    proxy_targets,
    query,
    server_changes,
    server_command,
)

if TYPE_CHECKING:
    from balancier.cluster.api import AdminApi

log = logging.getLogger("balancier.web")

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_EVERY = 0.9  # seconds: viewers share one sample of the proxy's stats
TICK = 1.0  # seconds between two server-sent events
HISTORY = 60  # chart points kept (one minute)
STATS_TIMEOUT = 1.5
WATCH_EVERY = 0.1  # seconds between two looks at the daemon's last transition (a transition lasts longer)


class Dashboard:
    """The routes' shared state: the CSRF secret, the proxy sampler, the chart history, open streams."""

    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.daemon = api.daemon
        self.secret = os.urandom(32)
        self.closing = asyncio.Event()
        self.samples: dict[str, Sample] = {}  # proxy resource -> last sample
        self.panel: list[dict[str, Any]] = []
        self.panel_at = -1e9
        self.points: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.web_events: deque[dict[str, Any]] = deque(maxlen=50)
        self.transitions = snapshot.TransitionLog()
        self._watcher: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    # ---- data --------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return snapshot.take(self.daemon, time.time(), time.monotonic())

    def targets(self, snap: dict[str, Any]) -> list[ProxyTarget]:
        return proxy_targets(self.daemon.cib.configuration.resources, snap)

    async def _sample(self, target: ProxyTarget) -> dict[str, Any]:
        base: dict[str, Any] = {"resource": target.resource, "node": target.node, "socket": target.socket,
                                "rows": []}
        if target.socket is None:
            return {**base, "error": f"The stats socket of {target.resource} is not configured: add "
                                     f"runtime_socket = \"/run/balancier/{target.resource}.sock\" to its params "
                                     "(and the matching stats socket line to its configuration)."}
        if target.node is None:
            self.samples.pop(target.resource, None)
            return {**base, "error": f"{target.resource} is not running ({target.state})."}
        try:
            rows = parse_stat_json(await query(target.socket, "show stat json", STATS_TIMEOUT))
        except (OSError, TimeoutError, ValueError) as exc:
            self.samples.pop(target.resource, None)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "no answer"
            hint = ""
            if target.node != self.daemon.me and "@" not in target.socket and ":" not in target.socket:
                hint = (f" It is a UNIX socket on {target.node}: open the dashboard of {target.node}, or give "
                        "the proxy a TCP stats socket (ipv4@host:port) reachable from every node.")
            return {**base, "error": f"The stats socket {target.socket} of {target.resource} (running on "
                                     f"{target.node}) does not answer from {self.daemon.me}: {why}.{hint}"}
        cur = Sample(time.monotonic(), rows)
        prev = self.samples.get(target.resource)
        self.samples[target.resource] = cur
        for sentence in server_changes(prev, cur):
            log.info("%s", sentence, extra={"component": "web"})
            self.web_events.append({"t": round(time.time(), 3), "kind": "server", "sentence": sentence})
        return {**base, "rows": rows, "rates": backend_rates(prev, cur)}

    async def proxy_panel(self, snap: dict[str, Any], fresh: bool = False) -> list[dict[str, Any]]:
        async with self.lock:
            if fresh or time.monotonic() - self.panel_at >= SAMPLE_EVERY:
                self.panel = [await self._sample(t) for t in self.targets(snap)]
                self.panel_at = time.monotonic()
                point: dict[str, Any] = {"t": round(time.time(), 3), "backends": {}}
                for p in self.panel:
                    for name, r in p.get("rates", {}).items():
                        point["backends"][f"{p['resource']}/{name}" if len(self.panel) > 1 else name] = r
                if point["backends"]:
                    self.points.append(point)
            return self.panel

    def timeline(self) -> list[dict[str, Any]]:
        return snapshot.timeline(self.daemon, self.web_events, self.transitions)

    async def _watch_transitions(self) -> None:
        """Look at the daemon's last transition often enough to see each one, viewers or not."""
        while not self.closing.is_set():
            self.transitions.observe(self.daemon.last_transition)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), WATCH_EVERY)

    # ---- who is asking -----------------------------------------------------------------------------

    def viewer(self, request: web.Request, session: str) -> render.Viewer:
        user = str(request.get("user", "?"))
        return render.Viewer(user, str(request.get("role", "read")), csrf.token_for(self.secret, session, user))

    @staticmethod
    def _session_of(request: web.Request) -> str | None:
        s = request.cookies.get(csrf.COOKIE)
        return s if s and 16 <= len(s) <= 64 and s.replace("-", "").replace("_", "").isalnum() else None

    def _set_cookie(self, resp: web.StreamResponse, session: str, request: web.Request) -> None:
        resp.set_cookie(csrf.COOKIE, session, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)

    # ---- pages -------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/dashboard")

    async def page(self, request: web.Request) -> web.StreamResponse:
        session = self._session_of(request) or csrf.new_session()
        snap = self.snapshot()
        panel = await self.proxy_panel(snap)
        html = render.page(snap, panel, self.timeline(), self.viewer(request, session))
        resp = web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self'; "
                                                                "img-src 'self' data:; frame-ancestors 'none'"})
        self._set_cookie(resp, session, request)
        return resp

    async def state(self, request: web.Request) -> web.Response:
        snap = self.snapshot()
        panel = await self.proxy_panel(snap)
        return web.json_response({"status": snap, "proxy": panel, "timeline": self.timeline(),
                                  "chart": list(self.points)})

    async def events(self, request: web.Request) -> web.StreamResponse:
        session = self._session_of(request) or ""
        viewer = self.viewer(request, session)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        first = True
        try:
            while not self.closing.is_set():
                snap = self.snapshot()
                panel = await self.proxy_panel(snap)
                data: dict[str, Any] = {"sections": render.sections(snap, panel, self.timeline(), viewer),
                                        "dc": snap.get("dc"), "updated": snap.get("updated"), "csrf": viewer.csrf}
                if first:
                    data["history"] = list(self.points)
                    first = False
                elif self.points:
                    data["point"] = self.points[-1]
                await resp.write(b"event: update\ndata: " + json.dumps(data).encode() + b"\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), TICK)
        except ConnectionResetError:  # the browser went away (aiohttp's ClientConnectionResetError included)
            pass
        return resp

    async def on_startup(self, app: web.Application) -> None:
        self._watcher = asyncio.create_task(self._watch_transitions())

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()
        if self._watcher is not None:
            await self._watcher

    # ---- changes -----------------------------------------------------------------------------------

    async def _form(self, request: web.Request) -> tuple[dict[str, str], web.Response | None]:
        """The posted fields, or the 403 answer when the CSRF token is missing or wrong."""
        post = await request.post()
        fields = {k: str(v) for k, v in post.items() if isinstance(v, str)}
        token = request.headers.get(csrf.HEADER) or fields.get(csrf.FIELD)
        if not csrf.check(self.secret, self._session_of(request), str(request.get("user")), token):
            log.warning("refused %s %s to %s: missing or wrong CSRF token", request.method, request.path,
                        request.get("user"), extra={"component": "web", "user": request.get("user")})
            return fields, web.json_response({"error": "missing or invalid CSRF token: reload the dashboard"},
                                             status=403)
        fields.pop(csrf.FIELD, None)
        return fields, None

    @staticmethod
    def _cluster_args(op: str, f: dict[str, str]) -> dict[str, Any]:
        keys = {"migrate": ("resource", "node", "lifetime"), "unmigrate": ("resource",),
                "cleanup": ("resource", "node"), "standby": ("node",), "online": ("node",)}[op]
        return {k: f[k].strip() for k in keys if f.get(k, "").strip()}

    def _server_target(self, f: dict[str, str]) -> tuple[ProxyTarget | None, str]:
        targets = [t for t in self.targets(self.snapshot()) if t.socket and t.node]
        if f.get("resource"):
            targets = [t for t in targets if t.resource == f["resource"]]
        if not targets:
            return None, "no running proxy with a stats socket"
        return targets[0], ""

    async def plan(self, f: dict[str, str]) -> dict[str, Any]:
        op = f.get("op", "")
        if op in CLUSTER_OPS:
            return plan_change(self.daemon.cib, op, self._cluster_args(op, f), time.time())
        if op in SERVER_OPS:
            try:
                command = server_command(op, f.get("backend", ""), f.get("server", ""), f.get("weight"))
            except ValueError as exc:
                return {"ok": False, "status": 400, "error": str(exc)}
            target, why = self._server_target(f)
            if target is None:
                return {"ok": False, "status": 409, "error": why}
            current = "unknown"
            sample = self.samples.get(target.resource)
            row = sample.servers().get((f["backend"], f["server"])) if sample is not None else None
            if row is not None:
                current = f"{row.get('status', '?')}, weight {row.get('weight', '?')}"
            change = (f"set the weight of server {f['backend']}/{f['server']} to {f.get('weight')}" if op == "weight"
                      else f"set server {f['backend']}/{f['server']} to {op.upper()}")
            return {"ok": True, "status": 200, "change": change, "command": command, "socket": target.socket,
                    "node": target.node, "current": current}
        return {"ok": False, "status": 400, "error": f"unknown action {op!r}"}

    async def post_plan(self, request: web.Request) -> web.Response:
        f, refused = await self._form(request)
        if refused is not None:
            return refused
        result = await self.plan(f)
        return web.json_response({**result, "html": render.plan_html(result)}, status=int(result["status"]))

    async def post_confirm(self, request: web.Request) -> web.Response:
        f, refused = await self._form(request)
        if refused is not None:
            return refused
        session = self._session_of(request) or ""
        result = await self.plan(f)
        return web.Response(text=render.confirm_page(result, f, self.viewer(request, session)),
                            content_type="text/html", status=int(result["status"]))

    async def do(self, f: dict[str, str], user: str) -> dict[str, Any]:
        op = f.get("op", "")
        who = f"{user} via dashboard"
        if op in CLUSTER_OPS:
            args = self._cluster_args(op, f)
            log.info("%s asks: %s", who, describe(op, args), extra={"component": "web", "user": user})
            answer: dict[str, Any] = await self.daemon.admin(op, args, who)
            # the DC records the change in its own events; another node's timeline shows it from here (once)
            if answer.get("ok") and answer.get("dc") != self.daemon.me:
                self.web_events.append({"t": round(time.time(), 3), "kind": "admin",
                                          "sentence": f"{describe(op, args)} by {who}: CIB {answer.get('cib_version')} "
                                                      f"(applied by the DC {answer.get('dc')})"})
            return answer
        planned = await self.plan(f)
        if not planned["ok"]:
            return planned
        log.info("%s asks: %s (%s)", who, planned["change"], planned["command"],
                 extra={"component": "web", "user": user})
        try:
            reply = (await query(planned["socket"], planned["command"], STATS_TIMEOUT)).strip()
        except (OSError, TimeoutError) as exc:
            return {"ok": False, "status": 503, "error": f"the stats socket {planned['socket']} does not answer: "
                                                       f"{exc}"}
        if reply:  # HAProxy answers a successful "set server" with an empty line
            log.warning("%s: the proxy refused %r: %s", who, planned["command"], reply,
                        extra={"component": "web", "user": user})
            return {"ok": False, "status": 409, "error": f"the proxy answered: {reply}"}
        sentence = f"{planned['change']} by {who}"
        self.web_events.append({"t": round(time.time(), 3), "kind": "admin", "sentence": sentence})
        self.panel_at = -1e9  # the next view shows the new state
        return {"ok": True, "status": 200, "change": planned["change"], "user": who}

    async def post_do(self, request: web.Request) -> web.Response:
        f, refused = await self._form(request)
        if refused is not None:
            return refused
        answer = await self.do(f, str(request.get("user")))
        status = int(answer.get("status", 200 if answer.get("ok") else 500))
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(answer, status=status)
        if answer.get("ok"):
            raise web.HTTPSeeOther("/dashboard")
        return web.Response(text=render.message_page("Not done", str(answer.get("error")), False),
                            content_type="text/html", status=status)


DASHBOARD_KEY = web.AppKey("balancier.dashboard", Dashboard)


def _same_site_middleware() -> Any:
    @web.middleware
    async def same_site(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            why = csrf.cross_site(request.headers, request.host)
            if why is not None:
                log.warning("refused %s %s to %s: %s", request.method, request.path, request.get("user"), why,
                            extra={"component": "web", "user": request.get("user")})
                return web.json_response({"error": why}, status=403)
        return await handler(request)
    return same_site


def register(app: web.Application, api: AdminApi, *, local: bool) -> None:
    """Add the dashboard's routes (and its cross-site guard) to the admin API's app."""
    d = Dashboard(api)
    app.middlewares.append(_same_site_middleware())
    app.on_startup.append(d.on_startup)
    app.on_shutdown.append(d.on_shutdown)
    app.router.add_get("/", d.index)
    app.router.add_get("/dashboard", d.page)
    app.router.add_get("/dashboard/state.json", d.state)
    app.router.add_get("/events", d.events)
    app.router.add_post("/dashboard/plan", d.post_plan)
    app.router.add_post("/dashboard/confirm", d.post_confirm)
    app.router.add_post("/dashboard/do", d.post_do)
    app.router.add_static("/dashboard/static", STATIC_DIR, follow_symlinks=False)
    app[DASHBOARD_KEY] = d
    if local:
        log.debug("dashboard routes on the admin socket too", extra={"component": "web"})
