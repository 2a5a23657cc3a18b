"""``option ...`` lines of proxy sections (and their ``no``/``default`` forms).

Rules (HAProxy's cfgparse-listen.c):
- Boolean options (``dontlognull`` FE, ``allbackups``/``persist``/``log-health-checks`` BE) accept ``no`` (off)
  and ``default`` (built-in value).
- ``httplog [clf]`` / ``tcplog`` choose the log format and replace each other; they are ignored in backends.
- ``httpclose`` / ``http-server-close`` / ``http-keep-alive`` replace one another; ``no option X`` clears the mode
  (back to keep-alive) only when the current mode is X. ``forceclose`` (removed in HAProxy 2.0) is read as
  ``httpclose`` with a warning.
- ``forwardfor [except net] [header name] [if-none]``, ``redispatch [N]`` (N = 0 turns it off; plain = -1, the last
  retry), ``httpchk [meth] [uri] [ver] [host]`` (``host``, HAProxy >= 3.1, becomes a ``host`` header):
  ``no``/``default`` is refused for forwardfor and httpchk, as in HAProxy.
- An HTTP/1.1 ``httpchk`` version carrying ``\\r\\n``-separated headers (the 1.4-era trick) is split into proper
  headers, with a warning naming the modern ``http-check send hdr`` form.
- Known HAProxy options that balancier does not implement are refused by name; others get a "did you mean".
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable

from balancier.proxy.config.context import Ctx
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.keywords import OPTION_UNSUPPORTED
from balancier.proxy.config.model import ForwardFor, Where
from balancier.proxy.config.units import parse_int

OptionHandler = Callable[[Ctx, ProxyDraft, Where, list[str], "str | None"], None]

# option name -> (field, capability)
_BOOLEANS = {
    "dontlognull": ("dontlognull", "fe"),
    "allbackups": ("allbackups", "be"),
    "persist": ("persist", "be"),
    "log-health-checks": ("log_health_checks", "be"),
}
_CONN_MODES = {"httpclose": "clo", "http-server-close": "scl", "http-keep-alive": "kal"}


def _boolean(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    name = args[1]
    field_name, cap = _BOOLEANS[name]
    if not ctx.max_args(where, args, 2, f"option {name}"):
        return
    if not ctx.need_cap(px, where, cap, name):
        return
    px.values[field_name] = prefix is None


def _log_format(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    name = args[1]
    if px.kind == "backend":
        ctx.report.warning(where, f"backend '{px.name}' : 'option {name}' directive is ignored in backends.")
        return
    if prefix is not None:
        if ctx.max_args(where, args, 2, f"option {name}"):
            px.values["log_format"] = "default"
        return
    if name == "tcplog":
        if ctx.max_args(where, args, 2, "option tcplog"):
            px.values["log_format"] = "tcplog"
            px.log_format_where = where
        return
    if len(args) > 2 and args[2] != "clf":
        ctx.report.alert(where, f"'option httplog' only supports the 'clf' option, got '{args[2]}'.")
        return
    if ctx.max_args(where, args, 3, "option httplog"):
        px.values["log_format"] = "httplog-clf" if len(args) > 2 else "httplog"
        px.log_format_where = where


def _conn_mode(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    name = args[1]
    if not ctx.max_args(where, args, 2, f"option {name}"):
        return
    if name == "forceclose":
        ctx.report.warning(where, "'option forceclose' read as 'option httpclose' (legacy option, removed in "
                                  "HAProxy 2.0; write 'option httpclose')")
        name = "httpclose"
    mode = _CONN_MODES[name]
    if prefix is None:
        px.values["http_conn_mode"] = mode
    elif px.values["http_conn_mode"] == mode:
        px.values["http_conn_mode"] = "kal"


def _no_negation(ctx: Ctx, where: Where, name: str, prefix: str | None) -> bool:
    if prefix is not None:
        ctx.report.alert(where, f"negation/default is not supported for option '{name}'.")
        return False
    return True


def _forwardfor(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    if not _no_negation(ctx, where, "forwardfor", prefix):
        return
    header, except_net, if_none = "X-Forwarded-For", None, False
    i = 2
    while i < len(args):
        word = args[i]
        if word == "except":
            if i + 1 >= len(args):
                ctx.report.alert(where, "'option forwardfor except' expects <address>[/mask] as argument.")
                return
            try:
                net = ipaddress.ip_network(args[i + 1], strict=False)
            except ValueError:
                ctx.report.alert(where, f"'option forwardfor except' : invalid address or mask '{args[i + 1]}'.")
                return
            except_net = str(net)
            i += 2
        elif word == "header":
            if i + 1 >= len(args):
                ctx.report.alert(where, "'option forwardfor header' expects <header_name> as argument.")
                return
            header = args[i + 1]
            i += 2
        elif word == "if-none":
            if_none = True
            i += 1
        else:
            ctx.report.alert(
                where, "'option forwardfor' only supports optional values: 'except', 'header' and 'if-none'."
            )
            return
    px.values["forwardfor"] = ForwardFor(header=header, except_net=except_net, if_none=if_none)


def _redispatch(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    if not ctx.need_cap(px, where, "be", "redispatch"):
        return
    if prefix is not None:
        if ctx.max_args(where, args, 2, "option redispatch"):
            px.values["redispatch"] = None
        return
    if not ctx.max_args(where, args, 3, "option redispatch"):
        return
    if len(args) == 2:
        px.values["redispatch"] = -1
        return
    value = parse_int(args[2])
    if value is None:
        ctx.report.alert(where, f"'option redispatch' expects an integer argument, got '{args[2]}'.")
        return
    px.values["redispatch"] = None if value == 0 else value


def _httpchk(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    if not _no_negation(ctx, where, "httpchk", prefix):
        return
    if not ctx.need_cap(px, where, "be", "httpchk"):
        return
    if not ctx.max_args(where, args, 6, "option httpchk"):  # <host> is HAProxy >= 3.1
        return
    params = args[2:]
    method, uri, version = "OPTIONS", "/", "HTTP/1.0"
    headers: list[tuple[str, str]] = []
    if len(params) == 1:
        uri = params[0]
    elif len(params) >= 2:
        method, uri = params[0], params[1]
        if len(params) >= 3:
            version = params[2]
        if len(params) == 4:
            headers.append(("host", params[3]))
    if "\r\n" in version or "\n" in version:
        parts = version.replace("\r\n", "\n").split("\n")
        version = parts[0]
        for raw in parts[1:]:
            if not raw:
                continue
            name, sep, value = raw.partition(":")
            if not sep or not name.strip():
                ctx.report.alert(where, f"'option httpchk' : invalid header line '{raw}' in the version field.")
                return
            headers.append((name.strip(), value.strip()))
        hdrs = " ".join(f"hdr {n} {v}" for n, v in headers)
        ctx.report.warning(
            where, f"'option httpchk' headers glued to the version with CRLF read as 'http-check send {hdrs}' "
                   "(legacy form; write them on an 'http-check send' line)"
        )
    px.httpchk = {"method": method, "uri": uri, "version": version, "headers": tuple(headers)}


OPTIONS: dict[str, OptionHandler] = {
    **{name: _boolean for name in _BOOLEANS},
    "httplog": _log_format,
    "tcplog": _log_format,
    **{name: _conn_mode for name in _CONN_MODES},
    "forceclose": _conn_mode,
    "forwardfor": _forwardfor,
    "redispatch": _redispatch,
    "httpchk": _httpchk,
}


def parse_option(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str], prefix: str | None) -> None:
    """``args`` = ['option', name, ...] (the no/default prefix removed)."""
    if len(args) < 2:
        ctx.report.alert(where, "'option' expects an option name.")
        return
    name = args[1]
    handler = OPTIONS.get(name)
    if handler is not None:
        handler(ctx, px, where, args, prefix)
        return
    section = px.kind
    if name in OPTION_UNSUPPORTED:
        ctx.report.alert(where, f"unsupported keyword 'option {name}' in section '{section}' "
                                "(not implemented by balancier)")
        return
    hint = difflib.get_close_matches(name, sorted(n for n in OPTIONS if n != "forceclose"), n=1)
    suffix = f"; did you mean '{hint[0]}'?" if hint else ""
    ctx.report.alert(where, f"unknown option '{name}' in '{section}' section{suffix}")
