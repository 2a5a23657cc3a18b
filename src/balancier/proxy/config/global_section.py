"""Keywords of the ``global`` section.

Rules:
- Supported: ``log`` (and ``no log``), ``log-tag``, ``maxconn``, ``chroot``, ``uid``, ``gid``, ``user``,
  ``group``, ``daemon``, ``pidfile``, ``nbthread`` (1..64), ``hard-stop-after`` (time), ``tune.bufsize`` (size),
  ``spread-checks`` (0..50 %), ``max-spread-checks`` (time), and the environment keywords ``setenv``,
  ``presetenv`` (only when unset), ``unsetenv`` and ``resetenv`` (keep only the names given), whose changes are
  seen by every later line's ``"$VAR"``.
- ``global`` may appear several times; later lines override earlier ones (``log`` lines add up).
- ``stats socket <path | [ipv4@]host:port> [mode <octal>] [level user|operator|admin]`` (may repeat),
  ``stats timeout <time>`` and ``stats maxconn <n>`` configure the runtime API; other socket options and other
  ``stats`` words are refused by name.
- Other HAProxy global keywords are refused by name; anything else is unknown, with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from balancier.proxy.config.context import Ctx
from balancier.proxy.config.keywords import GLOBAL_UNSUPPORTED
from balancier.proxy.config.model import StatsSocket, Where
from balancier.proxy.config.proxies import log_line
from balancier.proxy.config.units import parse_size, parse_time, parse_uint, time_message

GlobalHandler = Callable[[Ctx, Where, list[str]], None]


def _flag(field_name: str) -> GlobalHandler:
    def handler(ctx: Ctx, where: Where, args: list[str]) -> None:
        if ctx.max_args(where, args, 1):
            ctx.global_values[field_name] = True

    return handler


def _text(field_name: str) -> GlobalHandler:
    def handler(ctx: Ctx, where: Where, args: list[str]) -> None:
        if len(args) < 2 or args[1] == "":
            ctx.report.alert(where, f"'{args[0]}' expects an argument.")
            return
        if ctx.max_args(where, args, 2):
            ctx.global_values[field_name] = args[1]

    return handler


def _uint(field_name: str, low: int = 0, high: int | None = None, message: str = "") -> GlobalHandler:
    def handler(ctx: Ctx, where: Where, args: list[str]) -> None:
        text = args[1] if len(args) > 1 else ""
        value = parse_uint(text)
        if value is None or value < low or (high is not None and value > high):
            ctx.report.alert(where, (message or "'{kw}' expects an integer argument (got '{arg}').").format(
                kw=args[0], arg=text))
            return
        if ctx.max_args(where, args, 2):
            ctx.global_values[field_name] = value

    return handler


def _time(field_name: str) -> GlobalHandler:
    def handler(ctx: Ctx, where: Where, args: list[str]) -> None:
        text = args[1] if len(args) > 1 else ""
        value, err, char = parse_time(text)
        if err is not None:
            ctx.report.alert(where, time_message(err, char, text, args[0]))
            return
        if ctx.max_args(where, args, 2):
            ctx.global_values[field_name] = value

    return handler


def _bufsize(ctx: Ctx, where: Where, args: list[str]) -> None:
    text = args[1] if len(args) > 1 else ""
    value = parse_size(text)
    if value is None or value <= 0:
        ctx.report.alert(where, f"'{args[0]}' expects a positive size argument (got '{text}').")
        return
    if ctx.max_args(where, args, 2):
        ctx.global_values["bufsize"] = value


def _log(ctx: Ctx, where: Where, args: list[str]) -> None:
    logs = log_line(ctx, where, args, None, ctx.global_values["logs"], allow_global=False)
    if logs is not None:
        ctx.global_values["logs"] = logs


_LEVELS = ("user", "operator", "admin")


def _stats(ctx: Ctx, where: Where, args: list[str]) -> None:
    sub = args[1] if len(args) > 1 else ""
    if sub == "socket":
        _stats_socket(ctx, where, args)
    elif sub == "timeout":
        _time("stats_timeout")(ctx, where, args[1:])
    elif sub == "maxconn":
        _uint("stats_maxconn", 1)(ctx, where, args[1:])
    elif sub:
        ctx.report.alert(where, f"unsupported keyword 'stats {sub}' in section 'global' (not implemented by balancier)")
    else:
        ctx.report.alert(where, "'stats' expects 'socket', 'timeout' or 'maxconn'.")


def _stats_socket(ctx: Ctx, where: Where, args: list[str]) -> None:
    if len(args) < 3 or not args[2]:
        ctx.report.alert(where, "'stats socket' requires a path or an address:port.")
        return
    address = args[2]
    if address.startswith("ipv4@"):
        address = address[len("ipv4@"):]
    elif address.startswith("unix@"):
        address = address[len("unix@"):]
    elif "@" in address.split("/", 1)[0]:
        ctx.report.alert(where, f"unsupported address family in 'stats socket {args[2]}' (use a path or ipv4@host:port)")
        return
    mode: int | None = None
    level = "operator"
    rest = args[3:]
    i = 0
    while i < len(rest):
        word = rest[i]
        value = rest[i + 1] if i + 1 < len(rest) else None
        if word == "mode" and value is not None and re.fullmatch(r"[0-7]{1,4}", value):
            mode = int(value, 8)
        elif word == "level" and value in _LEVELS:
            level = value
        elif word in ("mode", "level"):
            expected = "an octal mode" if word == "mode" else "'user', 'operator' or 'admin'"
            ctx.report.alert(where, f"'stats socket' option '{word}' expects {expected} (got '{value or ''}').")
            return
        else:
            ctx.report.alert(where, f"unsupported option '{word}' on 'stats socket' (not implemented by balancier; "
                                    f"supported: mode, level)")
            return
        i += 2
    sockets: tuple[StatsSocket, ...] = ctx.global_values["stats_sockets"]
    ctx.global_values["stats_sockets"] = (*sockets, StatsSocket(address, mode, level, where))  # type: ignore[arg-type]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _environment(ctx: Ctx, where: Where, args: list[str]) -> None:
    """setenv/presetenv NAME VALUE, unsetenv NAME..., resetenv [NAME...]: later lines see the change."""
    kw, names = args[0], args[1:]
    if kw in ("setenv", "presetenv"):
        if len(args) != 3:
            ctx.report.alert(where, f"'{kw}' expects exactly 2 arguments (got {len(names)}).")
            return
        names = names[:1]
    elif kw == "unsetenv" and not names:
        ctx.report.alert(where, "'unsetenv' expects at least one variable name.")
        return
    bad = next((n for n in names if not _ENV_NAME.fullmatch(n)), None)
    if bad is not None:
        ctx.report.alert(where, f"'{kw}' : invalid environment variable name '{bad}'.")
        return
    env = ctx.env
    if kw == "setenv":
        env[args[1]] = args[2]
    elif kw == "presetenv":
        env.setdefault(args[1], args[2])
    elif kw == "unsetenv":
        for name in names:
            env.pop(name, None)
    else:  # resetenv: keep only the names listed
        for name in [n for n in env if n not in names]:
            del env[name]


GLOBAL_KEYWORDS: dict[str, GlobalHandler] = {
    "log": _log,
    "log-tag": _text("log_tag"),
    "maxconn": _uint("maxconn"),
    "chroot": _text("chroot"),
    "uid": _uint("uid"),
    "gid": _uint("gid"),
    "user": _text("user"),
    "group": _text("group"),
    "daemon": _flag("daemon"),
    "pidfile": _text("pidfile"),
    "nbthread": _uint("nbthread", 1, 64, "'{kw}' value must be between 1 and 64 (was {arg})"),
    "hard-stop-after": _time("hard_stop_after"),
    "tune.bufsize": _bufsize,
    "spread-checks": _uint("spread_checks", 0, 50, "'{kw}' needs a positive value in range 0..50."),
    "max-spread-checks": _time("max_spread_checks"),
    "stats": _stats,
    "setenv": _environment,
    "presetenv": _environment,
    "unsetenv": _environment,
    "resetenv": _environment,
}


def parse_global_line(ctx: Ctx, where: Where, words: list[str]) -> None:
    if words[0] in ("no", "default") and len(words) > 1:
        if words[1] == "log":
            logs = log_line(ctx, where, words[1:], words[0], ctx.global_values["logs"], allow_global=False)
            if logs is not None:
                ctx.global_values["logs"] = logs
            return
        ctx.report.alert(where, "negation/default currently supported only for options, log, busy-polling, "
                                "set-dumpable, strict-limits, insecure-fork-wanted and numa-cpu-mapping.")
        return
    kw = words[0]
    handler = GLOBAL_KEYWORDS.get(kw)
    if handler is not None:
        handler(ctx, where, words)
        return
    if kw in GLOBAL_UNSUPPORTED:
        label = f"{kw} {words[1]}" if kw == "stats" and len(words) > 1 else kw
        ctx.report.alert(where, f"unsupported keyword '{label}' in section 'global' (not implemented by balancier)")
        return
    hint = difflib.get_close_matches(kw, sorted(GLOBAL_KEYWORDS), n=1)
    suffix = f"; did you mean '{hint[0]}'?" if hint else ""
    ctx.report.alert(where, f"unknown keyword '{kw}' in 'global' section{suffix}")
