"""The glue between an HTTP request on a proxy and the stats page / Prometheus exporter (statspage.py).

Rules (spec/haproxy.md §14):
- A proxy serves the stats page when its frontend or its backend has ``stats`` settings (the backend's win, as
  HAProxy checks the backend's ``uri_auth`` after the frontend's); the page answers every request target that
  starts with ``stats uri``. ``http-request use-service prometheus-exporter if { path P }`` answers requests whose
  path (the target without its query string) is exactly P. Both are answered by the proxy itself: no server is
  chosen, no byte goes to a backend.
- The answer is a complete HTTP/1.1 response with ``Content-Length``; a HEAD request gets the same head and no
  body. ``Connection: close`` is added when the client's connection will not be kept (HTTP/1.0 without
  keep-alive, ``Connection: close``).
- An admin POST carries a form: the stream waits for ``body_needed`` bytes after the head before asking for the
  answer. A form larger than statspage.MAX_ADMIN_BODY is not read: the answer is ``303 ;st=EXCD``.
- The log names the pseudo-server ``<STATS>`` (page) or ``<PROMEX>`` (exporter), with termination state ``LR``
  (locally processed, as HAProxy's applets).

Public API:
    RouteStats (per route; built by ``route_stats``)
    route_stats(fe_cfg, be_cfg, view, api, info) -> RouteStats | None
    service(rs, head) -> "<STATS>" | "<PROMEX>" | None
    body_needed(rs, head) -> int
    serve(rs, head, client_addr, body) -> AppletAnswer | None
    answer(rs, head, client_addr, body) -> bytes | None   (serve(...).raw)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balancier.proxy.config.model import Proxy
from balancier.proxy.runtime_api import RuntimeApi
from balancier.proxy.stats import ProcessInfo, StatsView
from balancier.proxy.statspage import (
    MAX_ADMIN_BODY,
    StatsAnswer,
    StatsPage,
    handle_stats_request,
    prometheus_answer,
)

if TYPE_CHECKING:
    from balancier.http1 import RequestHead

STATS = "<STATS>"
PROMEX = "<PROMEX>"


@dataclass(frozen=True)
class RouteStats:
    """What a route needs to answer stats requests: the page settings, the shared view, an admin-level API."""

    page: StatsPage | None
    prometheus_path: str | None
    view: StatsView
    api: RuntimeApi
    info: Callable[[], ProcessInfo]


@dataclass(frozen=True)
class AppletAnswer:
    status: int
    raw: bytes  # the full response to write
    service: str  # "<STATS>" or "<PROMEX>", the log's server name
    keep_alive: bool  # the client connection may stay open after this answer


def page_for(cfg: Proxy) -> StatsPage | None:
    st = cfg.stats
    if st is None:
        return None
    refresh = max(1, (st.refresh + 999) // 1000) if st.refresh else None
    return StatsPage(uri=st.uri, realm=st.realm, auth=st.auth, refresh=refresh, admin=st.admin,
                     hide_version=st.hide_version)


def route_stats(fe_cfg: Proxy, be_cfg: Proxy, view: StatsView, api: RuntimeApi,
                info: Callable[[], ProcessInfo]) -> RouteStats | None:
    """The stats state of a frontend → backend route, or None when neither side serves stats (the usual case:
    the stream then pays one attribute test per request)."""
    if fe_cfg.mode != "http":
        return None
    page = page_for(be_cfg) or page_for(fe_cfg)
    prom = be_cfg.prometheus_path or fe_cfg.prometheus_path
    if page is None and prom is None:
        return None
    return RouteStats(page, prom, view, api, info)


def service(rs: RouteStats, head: RequestHead) -> str | None:
    """Which applet answers this request, if any."""
    target = head.target
    if rs.prometheus_path is not None and target.partition("?")[0] == rs.prometheus_path:
        return PROMEX
    if rs.page is not None and target.startswith(rs.page.uri):
        return STATS
    return None


def body_needed(rs: RouteStats, head: RequestHead) -> int:
    """How many body bytes to collect after the head before calling ``serve`` (only admin POSTs have one)."""
    if head.method != "POST" or service(rs, head) != STATS or head.content_length <= 0:
        return 0
    if head.content_length > MAX_ADMIN_BODY:
        return 0  # refused unread (EXCD)
    return head.content_length


def serve(rs: RouteStats, head: RequestHead, client_addr: tuple[str, int], body: bytes) -> AppletAnswer | None:
    """The answer to a stats/Prometheus request, or None when the request is for a server."""
    svc = service(rs, head)
    if svc is None:
        return None
    ans: StatsAnswer | None
    if svc == PROMEX:
        if head.method in ("GET", "HEAD"):
            ans = prometheus_answer(rs.view, rs.info())
        else:
            ans = StatsAnswer(405, "Method Not Allowed", (("Cache-Control", "no-cache"), ("Allow", "GET, HEAD"),
                                                           ("Content-Type", "text/plain")),
                              b"Method not allowed.\n")
    else:
        assert rs.page is not None
        if head.method == "POST" and head.content_length > MAX_ADMIN_BODY:
            body = b"x" * (MAX_ADMIN_BODY + 1)  # handle_stats_request answers EXCD for an oversized form
        ans = handle_stats_request(rs.page, rs.view, rs.api, rs.info(), head.method, head.target, head.headers,
                                   body)
        if ans is None:
            return None
    keep = head.keep_alive and not (head.method == "POST" and head.content_length > MAX_ADMIN_BODY)
    return AppletAnswer(ans.status, render(ans, head.method == "HEAD", keep), svc, keep)


def answer(rs: RouteStats, head: RequestHead, client_addr: tuple[str, int], body: bytes) -> bytes | None:
    """The full raw HTTP response to write, or None when the request is not for the stats page / exporter."""
    res = serve(rs, head, client_addr, body)
    return None if res is None else res.raw


def render(ans: StatsAnswer, head_only: bool, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {ans.status} {ans.reason}"]
    lines.extend(f"{n}: {v}" for n, v in ans.headers)
    lines.append(f"Content-Length: {len(ans.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + ans.body
