"""HAProxy's built-in error pages, byte for byte.

Rules:
- The texts are HAProxy's (``http_err_msgs``): status line, ``Content-length``, ``Cache-Control: no-cache``,
  ``Connection: close`` for 400 and 408 only, ``Content-Type: text/html``, then
  ``<html><body><h1>CODE REASON</h1>\\nMESSAGE\\n</body></html>\\n``, quirks included (the '.' opening the 501
  message, the '>' opening the 431 one).
- Two forms, as HAProxy 2.6 emits them: the pages for errors found while reading the request, before any
  server is involved (400, 408 and 422 as observed; 413, 414, 431 and 501 likewise), are sent raw with
  capitalised names; every other page goes through the HTTP layer and leaves with lower-cased names
  (``content-length: 107``).
- A status without a page is a programming or configuration error (``ValueError``), never a silent 500.
"""

from __future__ import annotations

_PAGES: dict[int, tuple[str, str]] = {
    200: ("OK", "Service ready."),
    400: ("Bad request", "Your browser sent an invalid request."),
    401: ("Unauthorized", "You need a valid user and password to access this content."),
    403: ("Forbidden", "Request forbidden by administrative rules."),
    404: ("Not Found", "The resource could not be found."),
    405: ("Method Not Allowed",
          "A request was made of a resource using a request method not supported by that resource"),
    407: ("Unauthorized", "You need a valid user and password to access this content."),
    408: ("Request Time-out", "Your browser didn't send a complete request in time."),
    410: ("Gone", "The resource is no longer available and will not be available again."),
    413: ("Payload Too Large", "The request entity exceeds the maximum allowed."),
    414: ("URI Too Long", "The URI provided was too long for the server to process."),
    421: ("Misdirected Request", "Request sent to a non-authoritative server."),
    422: ("Unprocessable Content", "The server cannot process the contained instructions."),
    425: ("Too Early", "Your browser sent early data."),
    429: ("Too Many Requests", "You have sent too many requests in a given amount of time."),
    431: ("Request Header Fields Too Large", ">Request Header Fields Too Large."),
    500: ("Internal Server Error", "An internal server error occurred."),
    501: ("Not Implemented",
          ".The server does not support the functionality required to fulfill the request."),
    502: ("Bad Gateway", "The server returned an invalid or incomplete response."),
    503: ("Service Unavailable", "No server is available to handle this request."),
    504: ("Gateway Time-out", "The server didn't respond in time."),
}
_RAW = frozenset({400, 408, 413, 414, 422, 431, 501})  # sent before any stream exists: capitalised names
_CLOSE = frozenset({400, 408})


def _render(status: int) -> bytes:
    reason, message = _PAGES[status]
    body = f"<html><body><h1>{status} {reason}</h1>\n{message}\n</body></html>\n"
    if status in _RAW:
        names = ("Content-length", "Cache-Control", "Connection", "Content-Type")
    else:
        names = ("content-length", "cache-control", "connection", "content-type")
    lines = [f"HTTP/1.1 {status} {reason}", f"{names[0]}: {len(body)}", f"{names[1]}: no-cache"]
    if status in _CLOSE:
        lines.append(f"{names[2]}: close")
    lines.append(f"{names[3]}: text/html")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("ascii")


_RENDERED = {status: _render(status) for status in _PAGES}
ERROR_STATUSES: frozenset[int] = frozenset(_RENDERED)


def error_response(status: int) -> bytes:
    """The complete response (head and body) HAProxy sends for ``status``."""
    try:
        return _RENDERED[status]
    except KeyError:
        raise ValueError(f"no built-in error page for status {status}") from None
