"""Addresses of ``bind``, ``server`` and ``log`` lines.

Rules (HAProxy's ``str2sa_range`` as far as balancier implements it):
- An optional family prefix: ``ipv4@``, ``ipv6@`` (and ``tcp@``/``tcp4@``/``tcp6@`` for bind and server,
  ``udp@``/``udp4@``/``udp6@`` for log). UNIX sockets, abstract sockets, inherited fds, port offsets and port ranges
  are HAProxy features balancier does not implement: they are refused by name.
- ``[v6]:port`` uses brackets; otherwise the port follows the LAST colon (``::1`` therefore reads as host ``::``,
  port 1, exactly as in HAProxy: write ``[::1]`` or ``ipv6@::1`` instead).
- bind: the port is mandatory; an empty host or ``*`` means every IPv4 address (``''``), ``::`` every IPv6 one.
- server: no port means "the port the client connected to" (``None``).
- log: the port defaults to 514.
- Host names are resolved once, at load time, through the resolver passed in (``getaddrinfo`` by default); the
  model only holds IP literals.
- Ports are checked with a digits-only pattern before conversion and must be within 1..65535.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from balancier.proxy.config.units import parse_uint

Resolver = Callable[[str], "str | None"]

_UNSUPPORTED_PREFIXES = ("unix@", "abns@", "abnsz@", "fd@", "sockpair@", "quic4@", "quic6@", "uxst@", "uxdg@",
                         "mptcp@", "mptcp4@", "mptcp6@", "rhttp@", "ring@")


class AddressError(Exception):
    pass


def system_resolver(host: str) -> str | None:
    """Resolve a host name with the C library (files, then DNS, per nsswitch). First answer wins, like HAProxy's
    ``init-addr libc``."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    if not infos:
        return None
    return str(infos[0][4][0])


def _split_prefix(text: str, allowed: tuple[str, ...]) -> tuple[str, str]:
    lowered = text.lower()
    for pfx in _UNSUPPORTED_PREFIXES:
        if lowered.startswith(pfx):
            raise AddressError(f"address family '{pfx}' in '{text}' is not supported (not implemented by balancier)")
    if text.startswith("/"):
        raise AddressError(f"UNIX socket path '{text}' is not supported (not implemented by balancier)")
    for pfx in allowed:
        if lowered.startswith(pfx):
            return pfx, text[len(pfx):]
    if "@" in text.split(":", 1)[0]:
        raise AddressError(f"unknown address family in '{text}'")
    return "", text


def _split_host_port(text: str) -> tuple[str, str | None]:
    """Host and port text; port None when there is no colon."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"missing closing ']' in '{text}'")
        host, rest = text[1:close], text[close + 1 :]
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise AddressError(f"unexpected '{rest}' after ']' in '{text}'")
        return host, rest[1:]
    if ":" not in text:
        return text, None
    host, port = text.rsplit(":", 1)
    return host, port


def _port(text: str, where: str) -> int:
    if "-" in text[1:] and parse_uint(text.replace("-", "", 1)) is not None:
        raise AddressError(f"port ranges are not supported in '{where}' (not implemented by balancier)")
    if text[:1] in ("+", "-"):
        raise AddressError(f"port offsets are not supported in '{where}' (not implemented by balancier)")
    value = parse_uint(text)
    if value is None or not 1 <= value <= 65535:
        raise AddressError(f"invalid port '{text}' in '{where}'")
    return value


def _host(host: str, family: str, original: str, resolve: Resolver) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if family == "4" and ip.version != 4 or family == "6" and ip.version != 6:
            raise AddressError(f"address '{host}' does not match the family of '{original}'")
        return str(ip)
    if host == "" or any(c in host for c in " /@[]"):
        raise AddressError(f"invalid address '{original}'")
    resolved = resolve(host)
    if resolved is None:
        raise AddressError(f"could not resolve address '{host}'")
    return resolved


def _family(prefix: str) -> str:
    return "6" if prefix.endswith("6@") else ("4" if prefix.endswith("4@") else "")


def parse_bind(text: str, resolve: Resolver) -> list[tuple[str, int]]:
    """``addr:port[,addr:port...]`` -> [(host, port)]; '' = every IPv4 address, '::' = every IPv6 address."""
    result: list[tuple[str, int]] = []
    for piece in text.split(","):
        prefix, rest = _split_prefix(piece, ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"))
        family = _family(prefix)
        host, port = _split_host_port(rest)
        if port is None or port == "":
            raise AddressError(f"missing port number: '{piece}'")
        number = _port(port, piece)
        if host in ("", "*"):
            result.append(("::" if family == "6" else "", number))
            continue
        result.append((_host(host, family, piece, resolve), number))
    return result


def parse_server(text: str, resolve: Resolver) -> tuple[str, int | None]:
    """``addr[:port]`` of a server line -> (ip, port or None)."""
    prefix, rest = _split_prefix(text, ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"))
    host, port = _split_host_port(rest)
    number = None if port is None or port == "" else _port(port, text)
    return _host(host, _family(prefix), text, resolve), number


def parse_log_address(text: str, resolve: Resolver) -> tuple[str, int]:
    """``addr[:port]`` of a log line -> (ip, port), UDP port 514 by default."""
    if text.lower().startswith(("tcp@", "tcp4@", "tcp6@")):
        raise AddressError(f"TCP log targets such as '{text}' are not supported (not implemented by balancier)")
    prefix, rest = _split_prefix(text, ("ipv4@", "ipv6@", "udp@", "udp4@", "udp6@"))
    host, port = _split_host_port(rest)
    number = 514 if port is None or port == "" else _port(port, text)
    return _host(host, _family(prefix), text, resolve), number
