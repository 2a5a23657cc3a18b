"""Writing heads, and the hop-by-hop rule applied between the two sides.

Rules:
- Heads are always serialised from the parsed form, never forwarded as received: values go out with OWS
  removed and one field per line. Names are written as given; whether to lower-case them (as HAProxy 2.x does)
  is the caller's choice.
- A CR or LF inside anything given to the builders would split the head (response splitting): it raises
  ``HttpError(500)`` (HAProxy answers 500 when a header rewrite fails).
- Hop-by-hop fields (RFC 9110 §7.6.1) are removed before forwarding: Connection, Keep-Alive, Proxy-Connection,
  TE, Trailer, Upgrade (kept when the caller is relaying an upgrade) and every field named in Connection.
  Transfer-Encoding is kept because the body is forwarded with its framing unchanged. Content-Length,
  Transfer-Encoding and Host are never removed because Connection names them: dropping the framing field of a
  body that is forwarded anyway is a request-smuggling primitive.
"""

from __future__ import annotations

from .errors import HttpError

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"})
_NEVER_DROPPED = frozenset({"content-length", "transfer-encoding", "host"})


def _check(text: str, lines: int) -> bytes:
    # Exactly one LF per line means no value carried a line break; one count instead of a scan per field.
    if text.count("\n") != lines or text.count("\r") != lines:
        raise HttpError(500, "CR or LF in a header to send")
    return text.encode("latin-1")


def build_request_head(method: str, target: str, version: str, headers: list[tuple[str, str]]) -> bytes:
    """``method SP target SP version CRLF *(name: value CRLF) CRLF``."""
    text = "".join([f"{method} {target} {version}\r\n", *[f"{n}: {v}\r\n" for n, v in headers], "\r\n"])
    return _check(text, len(headers) + 2)


def build_response_head(version: str, status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    """``version SP status SP reason CRLF *(name: value CRLF) CRLF``."""
    text = "".join([f"{version} {status} {reason}\r\n", *[f"{n}: {v}\r\n" for n, v in headers], "\r\n"])
    return _check(text, len(headers) + 2)


def strip_hop_by_hop(headers: list[tuple[str, str]], connection_tokens: frozenset[str] | set[str],
                     upgrading: bool = False) -> list[tuple[str, str]]:
    """``headers`` without the hop-by-hop fields (see the module rules); a new list, the input is
    untouched."""
    drop = _HOP_BY_HOP | (connection_tokens - _NEVER_DROPPED) if connection_tokens else _HOP_BY_HOP
    if upgrading:
        drop = drop - {"upgrade"}
    return [h for h in headers if h[0].lower() not in drop]
