"""The ``log`` keyword: ``log <target> [len <n>] <facility> [<level> [<minlevel>]]``.

Rules:
- Targets: ``<ip|host>[:port]`` (UDP syslog, port 514 by default, family prefixes ``ipv4@``/``ipv6@``/``udp@``),
  ``stdout`` and ``stderr``. UNIX sockets (``/dev/log``), ``fd@``, ``ring@`` and TCP targets are refused by name.
- ``len`` is 80..65535 (default 1024). ``format`` and ``sample`` are HAProxy options balancier does not implement:
  refused by name (the datagrams use the default layout, ``<PRI>Mmm dd HH:MM:SS tag[pid]: msg``).
- Facilities and levels use syslog's names; ``level`` caps what is sent (default everything, i.e. debug) and
  ``minlevel`` raises the lowest severity of each message.
- Messages are HAProxy's: ``log : unknown log facility 'x'`` ...
"""

from __future__ import annotations

from balancier.proxy.config.addresses import AddressError, Resolver, parse_log_address
from balancier.proxy.config.model import LogTarget, Where
from balancier.proxy.config.units import parse_uint

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2", "ftp",
              "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4", "local5",
              "local6", "local7")
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


class LogError(Exception):
    pass


def parse_log(args: list[str], where: Where, resolve: Resolver) -> LogTarget:
    """``args`` are the words after ``log`` (not ``global``). Raises LogError with HAProxy's wording."""
    if not args:
        raise LogError("'log' expects either <address[:port]> and <facility> or 'global' as arguments.")
    target, rest = args[0], args[1:]
    maxlen = 1024
    while rest and rest[0] in ("len", "format", "sample", "profile"):
        opt = rest[0]
        if len(rest) < 2:
            raise LogError(f"log : '{opt}' expects a value")
        if opt != "len":
            raise LogError(f"unsupported keyword 'log ... {opt}' (not implemented by balancier)")
        value = parse_uint(rest[1])
        if value is None or not 80 <= value <= 65535:
            raise LogError(f"log : invalid log length '{rest[1]}', must be between 80 and 65535")
        maxlen = value
        rest = rest[2:]
    if not rest:
        raise LogError("log : missing facility")
    if rest[0] not in FACILITIES:
        raise LogError(f"log : unknown log facility '{rest[0]}'")
    facility = FACILITIES.index(rest[0])
    level, minlevel = 7, 0
    if len(rest) >= 2:
        if rest[1] not in LEVELS:
            raise LogError(f"log : unknown optional log level '{rest[1]}'")
        level = LEVELS.index(rest[1])
    if len(rest) >= 3:
        if rest[2] not in LEVELS:
            raise LogError(f"log : unknown optional minimum log level '{rest[2]}'")
        minlevel = LEVELS.index(rest[2])
    if len(rest) > 3:
        raise LogError(f"log : cannot handle unexpected argument '{rest[3]}'")
    if target == "stdout":
        return LogTarget(kind="stdout", facility=facility, level=level, minlevel=minlevel, maxlen=maxlen, where=where)
    if target == "stderr":
        return LogTarget(kind="stderr", facility=facility, level=level, minlevel=minlevel, maxlen=maxlen, where=where)
    try:
        host, port = parse_log_address(target, resolve)
    except AddressError as exc:
        raise LogError(f"log : {exc}") from None
    return LogTarget(kind="udp", facility=facility, host=host, port=port, level=level, minlevel=minlevel,
                     maxlen=maxlen, where=where)
