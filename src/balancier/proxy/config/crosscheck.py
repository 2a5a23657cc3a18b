"""Checks that need a whole proxy or the whole file set, run once every file is read (HAProxy's
``check_config_validity``).

Rules:
- tcp mode: ``cookie`` on a backend is dropped with ``cookie will be ignored for backend 'b' (needs 'mode
  http').``; ``option httplog`` on a frontend falls back to tcplog with HAProxy's warning; ``option forwardfor`` is
  dropped with ``'option forwardfor' ignored for frontend 'f' as it requires HTTP mode.``; ``http-request`` rules
  are dropped with ``'http-request' rules ignored for frontend 'f' as they require HTTP mode.``. ``option
  httpchk`` stays (HAProxy runs HTTP checks for tcp backends too).
- A frontend with a log format but no log target warns; a proxy missing the client (frontend side) or connect /
  server timeouts (backend side, with servers) warns ``missing timeouts for ...``.
- ``http-check`` rules without ``option httpchk`` warn and are ignored.
- A frontend without ``default_backend`` warns: balancier has no other rule that picks a backend, so every
  request would get a 503.
- ``default_backend`` must name a backend or listen section: ``Proxy 'f': unable to find required
  default_backend: 'b'.``. An http frontend cannot use a tcp backend (HAProxy's alert); a tcp frontend handing
  its connections to an http backend (HAProxy upgrades them) is not implemented and is refused.
- A listen section serves its own servers: an explicit ``default_backend`` there is refused, an inherited one is
  dropped with a warning. In a backend an inherited ``default_backend`` is meaningless and dropped silently.
"""

from __future__ import annotations

import dataclasses

from balancier.proxy.config.context import Ctx
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.model import Proxy

_TIMEOUT_ADVICE = ("While not properly invalid, you will certainly encounter various problems with such a "
                   "configuration. To fix this, please ensure that all following timeouts are set to a non-zero "
                   "value: 'client', 'connect', 'server'.")


def _tcp_mode(ctx: Ctx, px: ProxyDraft) -> None:
    v = px.values
    if v["cookie"] is not None:
        if px.has_be:
            ctx.report.warning(px.explicit.get("cookie", px.where),
                               f"cookie will be ignored for {px.type_str} '{px.name}' (needs 'mode http').")
        v["cookie"] = None
    if px.has_fe and v["log_format"] in ("httplog", "httplog-clf"):
        ctx.report.warning(px.log_format_where or px.where,
                           f"'option httplog' not usable with {px.type_str} '{px.name}' (needs 'mode http'). "
                           "Falling back to 'option tcplog'.")
        v["log_format"] = "tcplog"
    if v["forwardfor"] is not None:
        ctx.report.warning(px.where, f"'option forwardfor' ignored for {px.type_str} '{px.name}' as it requires "
                                     "HTTP mode.")
        v["forwardfor"] = None
    if v["http_rules"] or v["prometheus_path"] is not None:
        where = v["http_rules"][0].where if v["http_rules"] else px.where
        ctx.report.warning(where, f"'http-request' rules ignored for {px.type_str} '{px.name}' as they require "
                                  "HTTP mode.")
        v["http_rules"] = ()
        v["prometheus_path"] = None
    if v["stats"] is not None:
        ctx.report.warning(v["stats"].where, f"'stats' statement ignored for {px.type_str} '{px.name}' as it "
                                             "requires HTTP mode.")
        v["stats"] = None
    for i, srv in enumerate(px.servers):
        if srv.cookie is not None:
            ctx.report.warning(srv.where, f"{px.type_str} '{px.name}' : ignoring cookie for server '{srv.name}' as "
                                          "HTTP mode is disabled.")
            px.servers[i] = dataclasses.replace(srv, cookie=None)


def _one_proxy(ctx: Ctx, px: ProxyDraft) -> None:
    v, t = px.values, px.timeouts
    if v["mode"] == "tcp":
        _tcp_mode(ctx, px)
    if px.kind == "backend":
        v["log_format"] = "default"  # 'option httplog' is ignored in backends
        v["default_backend"] = None
    if px.has_fe and v["log_format"] != "default" and not v["logs"]:
        ctx.report.warning(px.where, f"log format ignored for {px.type_str} '{px.name}' since it has no log "
                                     "address.")
    missing_fe = px.has_fe and not t["client"]
    missing_be = px.has_be and bool(px.servers) and (
        not t["connect"] or (not t["server"] and (v["mode"] == "http" or not t["tunnel"]))
    )
    if missing_fe or missing_be:
        ctx.report.warning(px.where, f"missing timeouts for {px.type_str} '{px.name}'. {_TIMEOUT_ADVICE}")
    if px.http_check_where is not None and px.httpchk is None and px.has_be:
        ctx.report.warning(px.http_check_where, f"{px.type_str} '{px.name}' uses http-check rules without "
                                                "'option httpchk', so the rules are ignored.")
        px.check_send, px.check_expect, px.disable_on_404 = {}, None, False
    if px.kind == "listen" and v["default_backend"] is not None:
        if "default_backend" in px.explicit:
            ctx.report.alert(px.explicit["default_backend"],
                             f"unsupported keyword 'default_backend' in section 'listen' (not implemented by "
                             f"balancier: listen '{px.name}' serves its own servers)")
        else:
            ctx.report.warning(px.where, f"'default_backend {v['default_backend']}' inherited from defaults is "
                                         f"ignored by listen '{px.name}', which serves its own servers.")
        v["default_backend"] = None
    if px.kind == "frontend" and v["default_backend"] is None:
        ctx.report.warning(px.where, f"frontend '{px.name}' has no 'default_backend' and no other rule picks a "
                                     "backend: every request will get a 503 (tcp: connections are closed).")


def _routing(ctx: Ctx, px: ProxyDraft, by_name: dict[str, ProxyDraft]) -> None:
    target_name = px.values["default_backend"]
    if px.kind != "frontend" or target_name is None:
        return
    where = px.explicit.get("default_backend", px.where)
    target = by_name.get(target_name)
    if target is None or not target.has_be:
        ctx.report.alert(where, f"Proxy '{px.name}': unable to find required default_backend: '{target_name}'.")
        return
    fe_mode, be_mode = px.values["mode"], target.values["mode"]
    if fe_mode == "http" and be_mode == "tcp":
        ctx.report.alert(px.where, f"http {px.type_str} '{px.name}' ({px.where}) tries to use incompatible tcp "
                                   f"{target.type_str} '{target.name}' ({target.where}) as its default backend "
                                   "(see 'mode').")
    elif fe_mode == "tcp" and be_mode == "http":
        ctx.report.alert(px.where, f"tcp {px.type_str} '{px.name}' hands its connections to http "
                                   f"{target.type_str} '{target.name}': upgrading a tcp stream to HTTP is not "
                                   "implemented by balancier (use the same 'mode' on both).")


def finish(ctx: Ctx, drafts: list[ProxyDraft]) -> tuple[Proxy, ...]:
    for px in drafts:
        _one_proxy(ctx, px)
    by_name = {px.name: px for px in drafts}
    for px in drafts:
        _routing(ctx, px, by_name)
    return tuple(px.freeze() for px in drafts)
