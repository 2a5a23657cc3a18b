"""``server`` and ``default-server`` parameters.

Rules:
- ``default-server`` parameters become the starting point of every later ``server`` line of the same proxy (and
  of proxies inheriting from a defaults section that has them); a server's own parameters override them.
- Supported: ``weight`` 0..256, ``cookie``, ``check``/``no-check``, ``inter``/``fastinter``/``downinter`` (times,
  > 0), ``rise``/``fall`` (> 0), ``port`` (check port), ``addr`` (check address), ``backup``/``no-backup``,
  ``maxconn``/``minconn``/``maxqueue``, ``disabled``/``enabled``.
- TLS to the server: ``ssl``/``no-ssl``, ``verify none|required``, ``ca-file``, ``sni str(..)|req.hdr(host)``,
  ``check-ssl``/``no-check-ssl`` (parsed by tlsopts.py; their settings travel under the ``_tls`` key until the
  server line is complete, see proxies.py).
- HAProxy's other server parameters are refused by name (``track``, ``slowstart``, ``alpn`` ...); anything else is
  an unknown keyword with a "did you mean" hint.
- Messages follow HAProxy's (``weight of server s1 is not within 0 and 256 (300).``, ``'rise' has to be > 0.``).
"""

from __future__ import annotations

import difflib
from typing import Any

from balancier.proxy.config.addresses import AddressError, Resolver, parse_server
from balancier.proxy.config.keywords import SERVER_UNSUPPORTED
from balancier.proxy.config.tlsopts import SERVER_TLS_WORDS, TlsOptionError, server_word
from balancier.proxy.config.units import TimeError, parse_time, parse_uint

_FLAGS = {
    "check": ("check", True),
    "no-check": ("check", False),
    "backup": ("backup", True),
    "no-backup": ("backup", False),
    "disabled": ("disabled", True),
    "enabled": ("disabled", False),
}
_TIMES = {"inter": "inter", "fastinter": "fastinter", "downinter": "downinter"}
_COUNTS = {"maxconn": "maxconn", "minconn": "minconn", "maxqueue": "maxqueue"}
SERVER_PARAMS = sorted([*_FLAGS, *_TIMES, *_COUNTS, *SERVER_TLS_WORDS, "weight", "cookie", "rise", "fall", "port",
                        "addr"])


class ServerError(Exception):
    pass


def parse_params(words: list[str], server: str, resolve: Resolver, allow_cookie: bool = True) -> dict[str, Any]:
    """Parse ``words`` (the parameters) of server ``server``; return the ServerConfig fields they set."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        kw = words[i]
        if kw in _FLAGS:
            field_name, value = _FLAGS[kw]
            out[field_name] = value
            i += 1
            continue
        if kw in SERVER_TLS_WORDS:
            try:
                i = server_word(words, i, out)
            except TlsOptionError as exc:
                raise ServerError(str(exc)) from None
            continue
        if kw in SERVER_UNSUPPORTED:
            raise ServerError(f"unsupported server parameter '{kw}' (not implemented by balancier)")
        if kw not in SERVER_PARAMS:
            hint = difflib.get_close_matches(kw, SERVER_PARAMS, n=1)
            suffix = f"; did you mean '{hint[0]}'?" if hint else ""
            raise ServerError(f"unknown keyword '{kw}'{suffix}")
        if i + 1 >= len(words):
            raise ServerError(f"'{kw}' expects an argument.")
        arg = words[i + 1]
        i += 2
        if kw == "weight":
            w = parse_uint(arg)
            if w is None or w > 256:
                raise ServerError(f"weight of server {server} is not within 0 and 256 ({arg}).")
            out["weight"] = w
        elif kw == "cookie":
            if not allow_cookie:
                raise ServerError("'cookie' is not permitted on 'default-server' lines.")
            out["cookie"] = arg
        elif kw in _TIMES:
            out[_TIMES[kw]] = _server_time(kw, arg, server)
        elif kw in ("rise", "fall"):
            n = parse_uint(arg)
            if n is None:
                raise ServerError(f"'{kw}' expects an integer argument (got '{arg}').")
            if n <= 0:
                raise ServerError(f"'{kw}' has to be > 0.")
            out[kw] = n
        elif kw in _COUNTS:
            n = parse_uint(arg)
            if n is None:
                raise ServerError(f"'{kw}' expects a positive integer argument (got '{arg}').")
            out[_COUNTS[kw]] = n
        elif kw == "port":
            n = parse_uint(arg)
            if n is None or not 1 <= n <= 65535:
                raise ServerError(f"invalid port '{arg}' for 'port' (expects 1 to 65535).")
            out["check_port"] = n
        elif kw == "addr":
            try:
                host, port = parse_server(arg, resolve)
            except AddressError as exc:
                raise ServerError(f"'addr' : {exc}") from None
            out["check_addr"] = host
            if port is not None:
                out["check_port"] = port
    return out


def _server_time(kw: str, arg: str, server: str) -> int:
    value, err, char = parse_time(arg)
    if err is TimeError.OVERFLOW:
        raise ServerError(f"timer overflow in argument <{arg}> to <{kw}> of server {server}, maximum value is "
                          "2147483647 ms (~24.8 days).")
    if err is TimeError.UNDERFLOW:
        raise ServerError(f"timer underflow in argument <{arg}> to <{kw}> of server {server}, minimum non-null "
                          "value is 1 ms.")
    if err is not None:
        raise ServerError(f"unexpected character '{char}' in '{kw}' argument of server {server}.")
    if value <= 0:
        raise ServerError(f"invalid value {value} for argument '{kw}' of server {server}.")
    return value
