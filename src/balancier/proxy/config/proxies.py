"""Keywords of ``defaults``, ``frontend``, ``backend`` and ``listen`` sections (``option`` lines: options.py).

Rules (HAProxy's cfgparse-listen.c and proxy.c, as documented in the specification):
- A keyword that does not apply to the section's capabilities is ignored with HAProxy's warning (``'timeout
  client' will be ignored because backend 'b' has no frontend capability``); ``bind``, ``server`` and
  ``default-server`` where they cannot exist are alerts, as in HAProxy 2.6.
- ``timeout X 0`` means "not set"; setting a timeout twice in one section warns ``overwriting 'timeout X' which
  was already specified``.
- Legacy keywords of the 1.3/1.4 era are accepted with a warning naming the modern form: ``clitimeout``,
  ``srvtimeout``, ``contimeout``, ``redispatch``/``redisp``, ``timeout <number>`` (read as ``timeout connect``).
- ``no``/``default`` prefixes work only for ``option ...`` and ``log``.
- ``stats enable|uri|auth|realm|refresh|admin|hide-version`` build the stats page settings; as in HAProxy every
  one of them enables the page. ``stats admin`` accepts only ``if TRUE`` (no ACL engine); other ``stats`` words
  (``show-legends``, ``show-node``, ``show-desc``, ``scope``, ``http-request``, ``bind-process``) are refused.
- ``bind <addr> [TLS words]``: the TLS words are parsed and their certificates loaded by tlsopts.py (one load per
  line, shared by every address of a comma list); any other bind option is refused by name.
- ``server``: TLS settings of ``default-server`` and of the line are merged word by word; a server using TLS
  (``ssl`` or ``check-ssl``) with ``verify required`` (the default) and no ``ca-file`` is refused with HAProxy's
  message; its client context is built here, when the configuration is loaded.
- ``http-request`` accepts ``use-service prometheus-exporter if { path <P> }``, ``redirect scheme <s> [code
  301|302|303|307|308] [drop-query] [if|unless [!]{ ssl_fc }]`` and ``set-header <name> <plain string> [if|unless
  [!]{ ssl_fc }]`` in frontend, backend and listen sections (as HAProxy 2.6: not in an anonymous defaults section;
  named defaults carrying rules are not implemented); every other rule is refused naming its action.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from balancier.proxy.config.addresses import AddressError, parse_bind, parse_server
from balancier.proxy.config.context import Ctx
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.keywords import HTTP_CHECK_UNSUPPORTED, PROXY_UNSUPPORTED
from balancier.proxy.config.logtargets import LogError, parse_log
from balancier.proxy.config.model import (
    Balance,
    Bind,
    CookieConfig,
    HttpCheckExpect,
    LogTarget,
    ServerConfig,
    StatsConfig,
    Where,
)
from balancier.proxy.config.options import parse_option
from balancier.proxy.config.servers import ServerError, parse_params
from balancier.proxy.config.tlsopts import NO_CA_MESSAGE, bind_tls, http_rule, server_settings
from balancier.proxy.config.units import parse_time, parse_uint, time_message
from balancier.proxy.tls import BindSettings, BindTls, TlsError, server_context

Handler = Callable[[Ctx, ProxyDraft, Where, list[str]], None]

# timeout name -> (Timeouts field, capability)
TIMEOUTS = {
    "client": ("client", "fe"),
    "client-fin": ("client_fin", "fe"),
    "http-request": ("http_request", "both"),
    "http-keep-alive": ("http_keep_alive", "both"),
    "tarpit": ("tarpit", "both"),
    "connect": ("connect", "be"),
    "server": ("server", "be"),
    "queue": ("queue", "be"),
    "tunnel": ("tunnel", "be"),
    "check": ("check", "be"),
    "server-fin": ("server_fin", "be"),
}
_TIMEOUT_LIST = ("'timeout' supports 'client', 'server', 'connect', 'check', 'queue', 'http-keep-alive', "
                 "'http-request', 'tunnel', 'tarpit', 'client-fin' and 'server-fin'")
_ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "first", "source")
_HAPROXY_ALGORITHMS = ("uri", "url_param", "random", "hash")
_LEGACY_TIMEOUTS = {"clitimeout": "client", "srvtimeout": "server", "contimeout": "connect"}


def set_timeout(ctx: Ctx, px: ProxyDraft, where: Where, name: str, text: str) -> None:
    field_name, cap = TIMEOUTS[name]
    label = f"timeout {name}"
    value, err, char = parse_time(text)
    if err is not None:
        ctx.report.alert(where, time_message(err, char, text, label))
        return
    if cap != "both" and not (px.has_fe if cap == "fe" else px.has_be):
        missing = "frontend" if cap == "fe" else "backend"
        ctx.report.warning(
            where, f"'{label}' will be ignored because {px.type_str} '{px.name}' has no {missing} capability"
        )
        return
    if field_name in px.set_here:
        ctx.report.warning(where, f"overwriting '{label}' which was already specified")
    px.set_here.add(field_name)
    px.timeouts[field_name] = value or None


def _timeout(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    name = args[1] if len(args) > 1 else ""
    if name not in TIMEOUTS:
        if parse_uint(name) is not None or (name and parse_time(name)[1] is None):
            # 'timeout 5000' is invalid in every HAProxy version; the seed meant the connect timeout.
            if not ctx.max_args(where, args, 2, "timeout"):
                return
            ctx.report.warning(where, f"'timeout {name}' read as 'timeout connect {name}' "
                                      f"(legacy form; write 'timeout connect {name}')")
            set_timeout(ctx, px, where, "connect", name)
            return
        if name in ("handshake", "client-hs"):
            ctx.report.alert(where, f"unsupported keyword 'timeout {name}' in section '{px.kind}' "
                                    "(not implemented by balancier)")
            return
        ctx.report.alert(where, f"{_TIMEOUT_LIST} (got '{name}')")
        return
    if not ctx.max_args(where, args, 3, f"timeout {name}"):
        return
    set_timeout(ctx, px, where, name, args[2] if len(args) > 2 else "")


def _legacy_timeout(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    modern = _LEGACY_TIMEOUTS[args[0]]
    if not ctx.max_args(where, args, 2):
        return
    value = args[1] if len(args) > 1 else ""
    ctx.report.warning(where, f"'{args[0]} {value}' read as 'timeout {modern} {value}' (legacy keyword, removed "
                              f"in HAProxy 2.1; write 'timeout {modern} {value}')")
    set_timeout(ctx, px, where, modern, value)


def _legacy_redispatch(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.max_args(where, args, 1):
        return
    ctx.report.warning(where, f"'{args[0]}' read as 'option redispatch' (legacy keyword, removed in HAProxy 2.1; "
                              "write 'option redispatch')")
    if ctx.need_cap(px, where, "be", "redispatch"):
        px.values["redispatch"] = -1


def _mode(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if len(args) < 2:
        ctx.report.alert(where, "'mode' expects one of 'http' or 'tcp'.")
        return
    if not ctx.max_args(where, args, 2):
        return
    if args[1] == "health":
        ctx.report.alert(where, "'mode health' doesn't exist anymore. Please use 'http-request return status 200' "
                                "instead.")
    elif args[1] in ("http", "tcp"):
        px.values["mode"] = args[1]
    else:
        ctx.report.alert(where, f"unknown proxy mode '{args[1]}'.")


def add_binds(ctx: Ctx, px: ProxyDraft, where: Where, text: str, tls: BindSettings | None = None,
              loaded: BindTls | None = None) -> None:
    try:
        for host, port in parse_bind(text, ctx.resolve):
            px.binds.append(Bind(host=host, port=port, where=where, ssl=tls, tls=loaded))
    except AddressError as exc:
        ctx.report.alert(where, f"'bind {text}' : {exc}")


def _bind(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if px.kind == "defaults":
        ctx.report.alert(where, "'bind' not allowed in 'defaults' section.")
        return
    if not ctx.need_cap(px, where, "fe", "bind"):
        return
    if len(args) < 2:
        ctx.report.alert(where, "'bind' expects {<path>|[addr1]:port1[-end1]}{,...} [param*] as arguments.")
        return
    settings = loaded = None
    if len(args) > 2:
        ok, settings, loaded = bind_tls(ctx, px, where, args)
        if not ok:
            return
    add_binds(ctx, px, where, args[1], settings, loaded)


def _default_backend(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.need_cap(px, where, "fe", "default_backend"):
        return
    if len(args) < 2:
        ctx.report.alert(where, "'default_backend' expects a backend name.")
        return
    if not ctx.max_args(where, args, 2):
        return
    px.values["default_backend"] = args[1]
    px.explicit["default_backend"] = where


def log_line(ctx: Ctx, where: Where, args: list[str], prefix: str | None,
             current: tuple[LogTarget, ...], allow_global: bool) -> tuple[LogTarget, ...] | None:
    """The new list of log targets after a ``log`` line, or None when the line is invalid."""
    if prefix is not None:
        if not ctx.max_args(where, args, 1, f"{prefix} log"):
            return None
        return ()
    if len(args) >= 2 and args[1] == "global":
        if not allow_global:
            ctx.report.alert(where, "'log global' is only valid in a 'defaults', 'frontend', 'backend' or 'listen' "
                                    "section.")
            return None
        if not ctx.max_args(where, args, 2, "log global"):
            return None
        return current + ctx.global_logs
    try:
        target = parse_log(args[1:], where, ctx.resolve)
    except LogError as exc:
        ctx.report.alert(where, str(exc))
        return None
    return current + (target,)


def _http_check(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.need_cap(px, where, "be", "http-check"):
        return
    sub = args[1] if len(args) > 1 else ""
    alerts = len(ctx.report.items)
    _http_check_rule(ctx, px, where, args, sub)
    if len(ctx.report.items) == alerts and "http-check" not in px.explicit:
        px.explicit["http-check"] = where  # the first valid rule, for the "without option httpchk" warning
        px.http_check_where = where


def _http_check_rule(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], sub: str) -> None:
    if sub == "disable-on-404":
        if ctx.max_args(where, args, 2, "http-check disable-on-404"):
            px.disable_on_404 = True
    elif sub == "send":
        _http_check_send(ctx, px, where, args[2:])
    elif sub == "expect":
        _http_check_expect(ctx, px, where, args[2:])
    elif sub in HTTP_CHECK_UNSUPPORTED or sub.startswith(("set-var", "unset-var")):
        ctx.report.alert(where, f"unsupported keyword 'http-check {sub}' in section '{px.kind}' "
                                "(not implemented by balancier)")
    else:
        ctx.report.alert(where, "'http-check' only supports 'disable-on-404', 'send' and 'expect' in balancier "
                                f"(got '{sub}')")


def _http_check_send(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    send: dict[str, Any] = {}
    headers: list[tuple[str, str]] = []
    names = {"meth": "method", "uri": "uri", "ver": "version", "body": "body"}
    i = 0
    while i < len(args):
        word = args[i]
        if word in ("uri-lf", "body-lf", "comment"):
            ctx.report.alert(where, f"unsupported keyword 'http-check send {word}' in section '{px.kind}' "
                                    "(not implemented by balancier)")
            return
        if word == "hdr":
            if i + 2 >= len(args):
                ctx.report.alert(where, "'http-check send' : 'hdr' expects <name> and <value> as arguments.")
                return
            headers.append((args[i + 1], args[i + 2]))
            i += 3
            continue
        if word not in names:
            ctx.report.alert(where, "'http-check send' : expects 'meth', 'uri', 'ver', 'hdr' or 'body' but got "
                                    f"'{word}' as argument.")
            return
        if i + 1 >= len(args):
            ctx.report.alert(where, f"'http-check send' : '{word}' expects a value as argument.")
            return
        send[names[word]] = args[i + 1]
        i += 2
    if headers:
        send["headers"] = tuple(headers)
    px.check_send = send


def _http_check_expect(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    negate = bool(args) and args[0] == "!"
    if negate:
        args = args[1:]
    kind = args[0] if args else ""
    if kind in ("hdr", "fhdr", "string-lf", "min-recv", "comment", "ok-status", "error-status", "tout-status",
                "on-success", "on-error", "status-code"):
        ctx.report.alert(where, f"unsupported keyword 'http-check expect {kind}' in section '{px.kind}' "
                                "(not implemented by balancier)")
        return
    if kind not in ("status", "rstatus", "string", "rstring"):
        ctx.report.alert(where, "'http-check expect' : only supports '[!]status', '[!]rstatus', '[!]string' and "
                                f"'[!]rstring' but got '{kind}' as argument.")
        return
    if len(args) < 2:
        ctx.report.alert(where, f"'http-check expect' : '{kind}' expects a <pattern> as argument.")
        return
    if len(args) > 2:
        ctx.report.alert(where, f"'http-check expect {kind}' cannot handle unexpected argument '{args[2]}'.")
        return
    if "expect" in px.set_here:
        ctx.report.alert(where, "several 'http-check expect' rules in one section are not implemented by balancier")
        return
    px.set_here.add("expect")
    px.check_expect = HttpCheckExpect(kind=kind, pattern=args[1], negate=negate)  # type: ignore[arg-type]


def _http_reuse(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.need_cap(px, where, "be", "http-reuse"):
        return
    if len(args) < 2 or args[1] not in ("never", "safe", "aggressive", "always"):
        ctx.report.alert(where, "'http-reuse' only supports 'never', 'safe', 'aggressive', 'always'.")
        return
    if ctx.max_args(where, args, 2):
        px.values["http_reuse"] = args[1]


def _counter(field_name: str, cap: str, hint: str = "", message: str = "") -> Handler:
    def handler(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
        if not ctx.need_cap(px, where, cap, args[0], hint):
            return
        value = parse_uint(args[1]) if len(args) > 1 else None
        if value is None:
            ctx.report.alert(where, message or f"'{args[0]}' expects an integer argument.")
            return
        if ctx.max_args(where, args, 2):
            px.values[field_name] = value

    return handler


def _balance(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.need_cap(px, where, "be", "balance"):
        return
    algo = args[1] if len(args) > 1 else ""
    if algo in _ALGORITHMS:
        if ctx.max_args(where, args, 2):
            px.values["balance"] = Balance(algorithm=algo)  # type: ignore[arg-type]
        return
    if algo in _HAPROXY_ALGORITHMS or algo.startswith(("hdr(", "rdp-cookie", "random(", "url_param")):
        ctx.report.alert(where, f"unsupported keyword 'balance {algo}' in section '{px.kind}' "
                                "(not implemented by balancier)")
        return
    ctx.report.alert(where, "balance only supports 'roundrobin', 'static-rr', 'leastconn', 'source', 'uri', "
                            "'url_param', 'hdr(name)' and 'rdp-cookie(name)' options.")


_COOKIE_FLAGS = ("indirect", "nocache", "postonly", "preserve", "httponly", "secure")
_COOKIE_OPTIONS = ("'cookie' supports 'rewrite', 'insert', 'prefix', 'indirect', 'nocache', 'postonly', 'domain', "
                   "'maxidle', 'dynamic', 'maxlife' and 'attr' options.")


def _cookie(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not ctx.need_cap(px, where, "be", "cookie"):
        return
    if len(args) < 2:
        ctx.report.alert(where, "'cookie' expects <cookie_name> as argument.")
        return
    mode = "passive"
    flags: dict[str, bool] = {}
    domains: list[str] = []
    attrs: list[str] = []
    times: dict[str, int | None] = {"maxidle": None, "maxlife": None}
    i = 2
    while i < len(args):
        word = args[i]
        if word in ("rewrite", "insert", "prefix"):
            if mode != "passive" and mode != word:
                ctx.report.alert(where, "cookie 'rewrite', 'insert' and 'prefix' modes are incompatible.")
                return
            mode = word
            i += 1
        elif word in _COOKIE_FLAGS:
            flags[word] = True
            i += 1
        elif word in ("domain", "attr", "maxidle", "maxlife"):
            if i + 1 >= len(args):
                ctx.report.alert(where, f"'cookie' : '{word}' expects a value as argument.")
                return
            value = args[i + 1]
            if word == "domain":
                domains.append(value)
            elif word == "attr":
                if any(c in value for c in ";\r\n") or not value:
                    ctx.report.alert(where, f"'cookie' : 'attr' value '{value}' contains a forbidden character.")
                    return
                attrs.append(value)
            else:
                seconds, err, char = parse_time(value, unit="s")
                if err is not None:
                    ctx.report.alert(where, f"'cookie {word}' : invalid time value '{value}' ({err.value}"
                                            f"{f' {char!r}' if char else ''}).")
                    return
                times[word] = seconds
            i += 2
        elif word == "dynamic":
            ctx.report.alert(where, f"unsupported keyword 'cookie ... dynamic' in section '{px.kind}' "
                                    "(not implemented by balancier)")
            return
        else:
            ctx.report.alert(where, _COOKIE_OPTIONS)
            return
    px.values["cookie"] = CookieConfig(
        name=args[1], mode=mode, domains=tuple(domains), attrs=tuple(attrs),  # type: ignore[arg-type]
        maxidle=times["maxidle"], maxlife=times["maxlife"], where=where, **flags,
    )
    px.explicit["cookie"] = where


def _server_section_ok(ctx: Ctx, px: ProxyDraft, where: Where, kw: str) -> bool:
    if px.kind == "defaults" and kw == "server":
        ctx.report.alert(where, "'server' not allowed in 'defaults' section.")
        return False
    if not px.has_be:
        ctx.report.alert(where, f"'{kw}' not allowed because {px.type_str} '{px.name}' has no backend capability.")
        return False
    return True


def _server(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not _server_section_ok(ctx, px, where, "server"):
        return
    if len(args) < 3:
        ctx.report.alert(where, f"'server' expects <name> and <addr>[:<port>] as arguments (got {len(args) - 1}).")
        return
    name = args[1]
    bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c in "-_.:"))), None)
    if bad is not None:
        ctx.report.alert(where, f"character '{bad}' is not permitted in server name '{name}'.")
        return
    for other in px.servers:
        if other.name == name:
            ctx.report.alert(where, f"{px.type_str} '{px.name}', another server named '{name}' was already defined "
                                    f"at line {other.where.line}, please use distinct names.")
            return
    label = f"'server {px.name}/{name}'"
    try:
        host, port = parse_server(args[2], ctx.resolve)
    except AddressError as exc:
        ctx.report.alert(where, f"{label} : {exc}")
        return
    try:
        params = parse_params(args[3:], name, ctx.resolve)
    except ServerError as exc:
        ctx.report.alert(where, f"{label} : {exc}")
        return
    fields = {**px.default_server, **params}
    fields["_tls"] = {**px.default_server.get("_tls", {}), **params.get("_tls", {})}
    tls = server_settings(fields)
    server = ServerConfig(name=name, host=host, port=port, where=where, tls=tls, **fields)
    if tls is not None and (server.ssl or server.check_ssl):
        if tls.verify == "required" and tls.ca_file is None:
            ctx.report.alert(where, f"{label} : {NO_CA_MESSAGE}")
            return
        try:
            ctx_traffic = server_context(tls)
            ctx_check = ctx_traffic if not ctx_traffic.check_hostname else server_context(
                dataclasses.replace(tls, sni=None, sni_from_host=False))
            server = dataclasses.replace(server, tls_context=ctx_traffic, check_tls_context=ctx_check)
        except TlsError as exc:
            ctx.report.alert(where, f"{label} : {exc}")
            return
    if server.check and server.port is None and server.check_port is None:
        ctx.report.alert(where, f"{px.type_str} '{px.name}': server '{name}' has neither service port nor check "
                                "port.")
        return
    px.servers.append(server)


def _default_server(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    if not _server_section_ok(ctx, px, where, "default-server"):
        return
    try:
        params = parse_params(args[1:], "default-server", ctx.resolve, allow_cookie=False)
    except ServerError as exc:
        ctx.report.alert(where, f"'default-server' : {exc}")
        return
    tls = {**px.default_server.get("_tls", {}), **params.get("_tls", {})}
    px.default_server.update(params)
    px.default_server["_tls"] = tls


_STATS_REFUSED = ("show-legends", "show-node", "show-desc", "scope", "http-request", "bind-process", "show-modules")
_STATS_WORDS = ("'stats' expects 'enable', 'uri', 'auth', 'realm', 'refresh', 'admin' or 'hide-version'")


def _stats(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    sub = args[1] if len(args) > 1 else ""
    if sub == "socket":
        ctx.report.alert(where, "'stats socket' is only valid in the 'global' section.")
        return
    if sub in _STATS_REFUSED:
        ctx.report.alert(where, f"unsupported keyword 'stats {sub}' in section '{px.kind}' "
                                "(not implemented by balancier)")
        return
    cur: StatsConfig = px.values["stats"] or StatsConfig(where=where)
    new = _stats_rule(ctx, where, args, sub, cur)
    if new is not None:
        px.values["stats"] = new


def _stats_rule(ctx: Ctx, where: Where, args: list[str], sub: str, cur: StatsConfig) -> StatsConfig | None:
    label = f"stats {sub}"
    if sub in ("enable", "hide-version"):
        if not ctx.max_args(where, args, 2, label):
            return None
        return dataclasses.replace(cur, hide_version=True) if sub == "hide-version" else cur
    if sub in ("uri", "realm", "auth", "refresh"):
        if len(args) < 3 or not args[2]:
            ctx.report.alert(where, f"'{label}' needs an argument.")
            return None
        if not ctx.max_args(where, args, 3, label):
            return None
        value = args[2]
        if sub == "uri":
            if not value.startswith("/"):
                ctx.report.alert(where, f"'stats uri' expects a path starting with '/' (got '{value}').")
                return None
            return dataclasses.replace(cur, uri=value)
        if sub == "realm":
            return dataclasses.replace(cur, realm=value)
        if sub == "auth":
            user, sep, password = value.partition(":")
            if not sep or not user:
                ctx.report.alert(where, "'stats auth' expects <user>:<password> as argument.")
                return None
            return dataclasses.replace(cur, auth=(*cur.auth, (user, password)))
        # a bare number is in seconds here (HAProxy reads this delay with TIME_UNIT_S)
        ms, err, char = parse_time(value + "s" if value.isdigit() else value)
        if err is not None:
            ctx.report.alert(where, time_message(err, char, value, label))
            return None
        return dataclasses.replace(cur, refresh=ms or None)
    if sub == "admin":
        cond = args[2:]
        if cond != ["if", "TRUE"]:
            ctx.report.alert(where, "'stats admin' only supports 'if TRUE' in balancier (ACL conditions are not "
                                    f"implemented; got '{' '.join(cond)}').")
            return None
        return dataclasses.replace(cur, admin=True)
    ctx.report.alert(where, f"{_STATS_WORDS} (got '{sub}').")
    return None


_HTTP_REQUEST_FORMS = ("only 'http-request use-service prometheus-exporter if { path <path> }', 'http-request "
                       "redirect scheme <scheme> [code <code>] [drop-query] [if|unless [!]{ ssl_fc }]' and "
                       "'http-request set-header <name> <string> [if|unless [!]{ ssl_fc }]' are")


def _http_request(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> None:
    action = args[1] if len(args) > 1 else ""
    if action in ("redirect", "set-header"):
        if px.kind == "defaults":
            if not px.name:
                ctx.report.alert(where, "'http-request' not allowed in anonymous 'defaults' section.")
            else:
                ctx.report.alert(where, f"unsupported keyword 'http-request {action}' in section 'defaults' (not "
                                        "implemented by balancier: write the rule in the frontend, backend or "
                                        "listen section)")
            return
        rule = http_rule(ctx, px, where, args)
        if rule is not None:
            px.values["http_rules"] = (*px.values["http_rules"], rule)
        return
    if action != "use-service":
        ctx.report.alert(where, f"unsupported keyword 'http-request {action}' in section '{px.kind}' (not "
                                f"implemented by balancier; {_HTTP_REQUEST_FORMS})")
        return
    rest = args[2:]
    if (len(rest) == 6 and rest[0] == "prometheus-exporter" and rest[1:4] == ["if", "{", "path"]
            and rest[5] == "}" and rest[4].startswith("/")):
        px.values["prometheus_path"] = rest[4]
        return
    ctx.report.alert(where, "'http-request use-service' only supports 'prometheus-exporter if { path <path> }' in "
                            f"balancier (got '{' '.join(rest)}').")


KEYWORDS: dict[str, Handler] = {
    "mode": _mode,
    "bind": _bind,
    "default_backend": _default_backend,
    "timeout": _timeout,
    "clitimeout": _legacy_timeout,
    "srvtimeout": _legacy_timeout,
    "contimeout": _legacy_timeout,
    "redispatch": _legacy_redispatch,
    "redisp": _legacy_redispatch,
    "http-check": _http_check,
    "http-reuse": _http_reuse,
    "retries": _counter("retries", "be", message="'retries' expects an integer argument (dispatch counts for one)."),
    "maxconn": _counter("maxconn", "fe", hint=" Maybe you want 'fullconn' instead ?"),
    "fullconn": _counter("fullconn", "be", hint=" Maybe you want 'maxconn' instead ?"),
    "balance": _balance,
    "cookie": _cookie,
    "server": _server,
    "default-server": _default_server,
    "stats": _stats,
    "http-request": _http_request,
}
# Words offered by the "did you mean" hint (the legacy ones are not advertised).
SUGGESTIONS = sorted([*(k for k in KEYWORDS if k not in ("clitimeout", "srvtimeout", "contimeout", "redispatch",
                                                          "redisp")), "log", "option", "no"])


def parse_proxy_line(ctx: Ctx, px: ProxyDraft, where: Where, words: list[str]) -> None:
    prefix: str | None = None
    args = words
    if words[0] in ("no", "default") and len(words) > 1:
        prefix, args = words[0], words[1:]
    kw = args[0]
    if kw == "option":
        parse_option(ctx, px, where, args, prefix)
        return
    if kw == "log":
        logs = log_line(ctx, where, args, prefix, px.values["logs"], allow_global=True)
        if logs is not None:
            px.values["logs"] = logs
        return
    if prefix is not None:
        ctx.report.alert(where, "negation/default currently supported only for options, log, busy-polling, "
                                "set-dumpable, strict-limits, insecure-fork-wanted and numa-cpu-mapping.")
        return
    handler = KEYWORDS.get(kw)
    if handler is not None:
        handler(ctx, px, where, args)
        return
    if kw in PROXY_UNSUPPORTED:
        ctx.report.alert(where, f"unsupported keyword '{kw}' in section '{px.kind}' (not implemented by balancier)")
        return
    hint = difflib.get_close_matches(kw, SUGGESTIONS, n=1)
    suffix = f"; did you mean '{hint[0]}'?" if hint else ""
    ctx.report.alert(where, f"unknown keyword '{kw}' in '{px.kind}' section{suffix}")
