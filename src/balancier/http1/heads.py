"""Request and response heads: parse strictly, decide the body framing and the connection's fate.

Rules (RFC 9112, RFC 9110; HAProxy's status codes):
- A head is parsed only when complete (CRLFCRLF found) at the start of the buffer; ``None`` means "need more".
  Empty lines (CRLF) before the start line are skipped and counted in ``raw_len``.
- Size: the head, CRLFCRLF included, must fit in ``limit`` bytes (``tune.bufsize``). A request over the limit
  is answered 414 when the request line alone does not fit, else 431 (HAProxy 2.6 answers 400 for both; the
  spec lists 414/431, which say more). A response over the limit is a 502.
- Refused with 400 (requests) or 502 (responses), before anything is forwarded: bare CR or LF, obs-fold, a
  space before the colon, a name that is not a token, a control character other than HTAB in a value, a
  malformed start line (extra spaces, lower-case ``http/``, a version other than HTTP/1.x: 400 rather than 505
  because HAProxy has no 505 page), more than ``max_headers`` fields (100, as HAProxy's default
  ``tune.http.maxhdr`` 101 lets through), a Content-Length that is not ``1*DIGIT`` (lists of identical values
  are one value and are collapsed into one field), Content-Length together with Transfer-Encoding, ``chunked``
  repeated, an empty element in Transfer-Encoding, or in a request: Transfer-Encoding in HTTP/1.0, a final
  coding other than ``chunked`` (400, not 501; other codings before a final ``chunked`` get HAProxy's 422), a
  target that does not fit the method (CONNECT needs authority-form, ``*`` only with OPTIONS, otherwise
  origin-form or absolute-form without userinfo or fragment), no Host or several Host in HTTP/1.1, an invalid
  Host, a Host that differs from an absolute-form target's authority. In a response, Transfer-Encoding in
  HTTP/1.0 or ``chunked`` not last is a 502; a final coding other than chunked means read-until-close (RFC
  9112 §6.3).
- An incomplete request is refused early when its first bytes cannot start a request line (e.g. a TLS
  handshake on a clear-text port) or when it uses bare LF; otherwise it waits (the caller's timeout gives the
  408).
- HTTP/1.x with x > 1 is read as HTTP/1.1 (RFC 9110 §2.5); ``version`` is then "HTTP/1.1".
- Framing of a request: chunked, else Content-Length > 0, else none (requests never read until close).
  Framing of a response (RFC 9112 §6.3): HEAD request, 1xx, 204, 304, 2xx to CONNECT -> none; chunked;
  Content-Length (0 -> none); else until close.
- keep_alive: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``; a response
  read until close never keeps the connection.
- ``scan_response_head`` is the proxy's fast path for the common response (HTTP/1.1, 2xx/3xx other than 204/304,
  one plain Content-Length, at most ``Connection: keep-alive`` as hop-by-hop field): it works on the bytes with
  two regular expressions and accepts only heads that ``parse_response_head`` accepts with the same result. On
  anything else it returns ``None`` and the caller runs the full parser, which gives the verdict and the error.
- Values are stored with surrounding OWS removed, names as received. ``normalised`` tells the caller when the
  raw bytes must not be forwarded as received (see the field); serialising from the parsed form is what makes
  ``Transfer-Encoding:\\tchunked`` reach the server as plain ``chunked``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import HttpError
from .grammar import (
    ABSOLUTE_FORM_RE,
    AUTHORITY_FORM_RE,
    CONTENT_LENGTH_MAX_DIGITS,
    FIELD_CHARS,
    FIELD_LINE_OWS_RE,
    FIELD_LINE_RE,
    REQUEST_LINE_PREFIX_RE,
    REQUEST_LINE_RE,
    STATUS_LINE_RE,
    TCHAR,
    connection_tokens,
    explain_field_lines,
    explain_request_line,
    explain_status_line,
    parse_content_length,
    transfer_codings,
    valid_host,
)

# HAProxy's tune.http.maxhdr (101) counts one slot for the end of its list: 100 fields pass, the 101st is a
# 400 (observed with HAProxy 2.6). ``max_headers`` is the number of fields.
MAX_HEADERS = 100


class Framing(enum.IntEnum):
    NONE = 0  # no body
    LENGTH = 1  # Content-Length bytes
    CHUNKED = 2  # chunked transfer coding, trailers included
    UNTIL_CLOSE = 3  # everything until the server closes (responses only)


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _get_all(headers: list[tuple[str, str]], name: str) -> list[str]:
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    _headers: list[tuple[str, str]] | None  # see `headers`; None until first read on the fast path
    framing: Framing
    content_length: int  # meaningful for LENGTH
    keep_alive: bool
    expect_continue: bool
    connection_tokens: frozenset[str]
    raw_len: int
    # True when the head must be re-serialised rather than forwarded as received: the parsed form says
    # something the raw bytes do not say the same way (a Content-Length list collapsed to one value, HTTP/1.x>1
    # read as 1.1, empty lines skipped), or it has a Transfer-Encoding field, whose raw form (":\tchunked",
    # odd case, spacing) is what TE.TE smuggling plays on; re-serialised, the server sees "name: value".
    normalised: bool = False
    has_cookie: bool = False  # a Cookie field is present (persistence needs to look at the request)
    # True when the raw head can be forwarded as received once its Connection fields are dealt with: one field
    # per line, nothing normalised, no hop-by-hop field other than Connection (set by the fast path only;
    # False means "look at the fields").
    plain: bool = False
    _text: str = ""  # the head as text, up to the CRLF of its last field line (fast path: fields split lazily)
    _hpos: int = 0  # where the field lines start in _text

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The fields as (name, value), values without surrounding OWS, names as received."""
        h = self._headers
        if h is None:  # validated already: splitting cannot fail
            h = self._headers = _split_fields(self._text, self._hpos, 400, 1 << 30)
        return h

    @headers.setter
    def headers(self, value: list[tuple[str, str]]) -> None:
        self._headers = value

    def get(self, name: str) -> str | None:
        """First value of a field, case-insensitive."""
        return _get(self.headers, name)

    def get_all(self, name: str) -> list[str]:
        return _get_all(self.headers, name)


@dataclass(slots=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    framing: Framing
    content_length: int
    keep_alive: bool
    connection_tokens: frozenset[str]
    raw_len: int
    normalised: bool = False  # as for RequestHead

    def get(self, name: str) -> str | None:
        return _get(self.headers, name)

    def get_all(self, name: str) -> list[str]:
        return _get_all(self.headers, name)


# Fields the parser must see; everything else goes straight through.
_CL, _TE, _CONN, _HOST, _EXPECT, _COOKIE = range(1, 7)
_SPECIAL = {"content-length": _CL, "transfer-encoding": _TE, "connection": _CONN, "host": _HOST,
            "expect": _EXPECT, "cookie": _COOKIE}
_NO_TOKENS: frozenset[str] = frozenset()
# Plain module names for the members: reading ``Framing.X`` goes through the enum machinery and costs ~0.1 µs.
_NONE, _LENGTH, _CHUNKED, _UNTIL_CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.UNTIL_CLOSE


def _skip_empty_lines(buf: bytes | bytearray) -> int:
    start = 0
    while buf.startswith(b"\r\n", start):
        start += 2
    return start


def _check_incomplete(buf: bytes | bytearray, start: int, status: int) -> None:
    """An incomplete head can already be hopeless: a client using bare LF would wait for CRLFCRLF forever.
    Only the tail is looked at (O(1) per call, so a client sending a byte at a time costs no more): such a
    client's lines, and at the latest its head, end at the tail of what it has sent."""
    if len(buf) - start >= 1 and buf[-1] == 10 and (len(buf) - start == 1 or buf[-2] != 13):
        raise HttpError(status, "bare LF in head")


def _check_incomplete_request(buf: bytes | bytearray, start: int) -> None:
    """Garbage is refused at once instead of after the timeout; only the first 64 bytes are looked at so
    that a client sending a byte at a time does not make each call cost the whole buffer again."""
    window = buf[start:start + 64]
    cr = window.find(b"\r")
    if REQUEST_LINE_PREFIX_RE.fullmatch(window if cr < 0 else window[:cr]) is None:
        raise HttpError(400, f"invalid request line {bytes(window[:40])!r}")
    _check_incomplete(buf, start, 400)


def _split_fields(text: str, pos: int, status: int, max_headers: int) -> list[tuple[str, str]]:
    """Field lines of ``text`` from ``pos`` (just after the start line's CRLF) to the end (the last field's
    CRLF)."""
    headers: list[tuple[str, str]] = FIELD_LINE_RE.findall(text, pos)
    if len(headers) != text.count("\n", pos):
        headers = FIELD_LINE_OWS_RE.findall(text, pos)  # rare: trailing OWS
        if len(headers) != text.count("\n", pos):
            raise HttpError(status, explain_field_lines(text[pos:-2].split("\r\n")))
    if len(headers) > max_headers:
        raise HttpError(status, f"more than {max_headers} header fields")
    return headers


def _over_limit_request(buf: bytes | bytearray, start: int, limit: int) -> HttpError:
    if buf.find(b"\r\n", start, limit) < 0:
        if start >= limit:
            return HttpError(400, "only empty lines before the request line")
        return HttpError(414, f"request line longer than {limit} bytes")
    return HttpError(431, f"request head larger than {limit} bytes")


def parse_request_head(buf: bytes | bytearray, limit: int = 16384, *,
                       max_headers: int = MAX_HEADERS, fast: bool = True) -> RequestHead | None:
    """The request head at the start of ``buf``, ``None`` when incomplete; raises ``HttpError``. ``fast=False``
    skips the fast path (for tests that hold both paths to the same results)."""
    start = _skip_empty_lines(buf) if buf and buf[0] == 13 else 0
    end = buf.find(b"\r\n\r\n", start, limit)
    if end < 0:
        if len(buf) >= limit:
            raise _over_limit_request(buf, start, limit)
        _check_incomplete_request(buf, start)
        return None
    text = buf[start:end + 2].decode("latin-1")
    if fast and not start and (end < 4 * max_headers or text.count("\n") <= max_headers + 1):
        head = _fast_request(text, end + 4)
        if head is not None:
            return head
    line_end = text.find("\r\n")
    m = REQUEST_LINE_RE.fullmatch(text, 0, line_end)
    if m is None:
        raise HttpError(400, explain_request_line(text[:line_end]))
    method, target, minor = m.groups()
    headers = _split_fields(text, line_end + 2, 400, max_headers)

    http11 = minor != "0"
    normalised = start > 0 or minor > "1"
    framing = _NONE
    length = 0
    tokens = _NO_TOKENS
    expect_continue = False
    cl_values: list[str] | None = None
    te_values: list[str] | None = None
    conn_values: list[str] | None = None
    hosts = 0
    host = ""
    has_cookie = False
    for name, value in headers:
        kind = _SPECIAL.get(name.lower())
        if kind is None:
            continue
        if kind == _HOST:
            hosts += 1
            host = value
            if not valid_host(value):
                raise HttpError(400, f"invalid Host {value[:60]!r}")
        elif kind == _CONN:
            if conn_values is None:
                conn_values = [value]
            else:
                conn_values.append(value)
        elif kind == _CL:
            if cl_values is None:
                cl_values = [value]
            else:
                cl_values.append(value)
        elif kind == _TE:
            if te_values is None:
                te_values = [value]
            else:
                te_values.append(value)
        elif kind == _COOKIE:
            has_cookie = True
        elif http11 and value.lower() == "100-continue":
            expect_continue = True

    if hosts != 1 and (hosts > 1 or http11):
        raise HttpError(400, "several Host fields" if hosts else "HTTP/1.1 request without Host")
    if te_values is not None:
        if cl_values is not None:
            raise HttpError(400, "Content-Length and Transfer-Encoding both present")
        if not http11:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = transfer_codings(te_values, 400)
        if codings[-1] != "chunked":
            raise HttpError(400, f"final transfer coding is not chunked: {', '.join(codings)!r}")
        if len(codings) > 1:
            if codings.count("chunked") > 1:
                raise HttpError(400, "chunked applied more than once")
            # We would forward a coding neither we nor most servers decode: HAProxy answers 422 too.
            raise HttpError(422, f"unsupported transfer coding before chunked: {', '.join(codings)!r}")
        framing = _CHUNKED
        normalised = True
    elif cl_values is not None:
        length = parse_content_length(cl_values, 400)
        if len(cl_values) > 1 or "," in cl_values[0]:
            headers = _collapse_content_length(headers, length)
            normalised = True
        if length:
            framing = _LENGTH
    if conn_values is not None:
        tokens = connection_tokens(conn_values)
        keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)
    else:
        keep_alive = http11

    if target[0] != "/":
        _check_target_form(method, target, host)
    elif method == "CONNECT":
        raise HttpError(400, "CONNECT needs an authority-form target")

    return RequestHead(method, target, "HTTP/1.1" if http11 else "HTTP/1.0", headers, framing, length,
                       keep_alive, expect_continue, tokens, end + 4, normalised, has_cookie)


# The fast path's grammar is the full parser's: an HTTP/1.1 request line with an origin-form target, then field
# lines `token ":" OWS value OWS`; `text` ends with the CRLF of the last field line.
_REQ_FAST_RE = re.compile(  # possessive: see _RESP_FAST_RE
    rf"([{TCHAR}]++) (/[\x21\x22\x24-\x7e]*+) HTTP/1\.1\r\n(?:[{TCHAR}]++:[{FIELD_CHARS}]*+\r\n)*+")
# Fields the fast path must look at, found in the lower-cased head (values lower-cased: enough to validate Host,
# read digits and Connection options, see Expect and Cookie).
# The alternation is factored by first letters: the engine tries one branch per letter instead of eleven
# (~20 % less for the whole findall).
_REQ_SPECIAL_RE = re.compile(
    r"\r\n(host|c(?:o(?:ntent-length|nnection|okie))|t(?:ransfer-encoding|e|railer)|expect|keep-alive|"
    r"proxy-connection|upgrade):[ \t]*+([^\r]*+)")


def _fast_request(text: str, raw_len: int) -> RequestHead | None:
    """The common request (HTTP/1.1, origin-form, at most Host, Connection, Cookie, Expect and one plain
    Content-Length among the special fields) with the full parser's result, or None: then the full parser runs
    and gives the verdict. Fields are split only if someone reads them."""
    m = _REQ_FAST_RE.fullmatch(text)
    if m is None:
        return None
    method, target = m.groups()
    if method == "CONNECT":
        return None
    line_end = m.end(2)  # the start line ends with " HTTP/1.1\r\n" after the target
    host = None
    length = -1
    framing = _NONE
    conn_values: list[str] | None = None
    cookie = expect = False
    for name, value in _REQ_SPECIAL_RE.findall(text[line_end:].lower()):
        value = value.rstrip(" \t")
        if name == "host":
            if host is not None or not valid_host(value):
                return None
            host = value
        elif name == "connection":
            if conn_values is None:
                conn_values = [value]
            else:
                conn_values.append(value)
        elif name == "cookie":
            cookie = True
        elif name == "content-length":
            if length >= 0 or not (value.isdigit() and value.isascii()) or len(value) > CONTENT_LENGTH_MAX_DIGITS:
                return None  # several (perhaps a list to collapse) or not 1*DIGIT: the full parser decides
            length = int(value)
            if length:
                framing = _LENGTH
        elif name == "expect":
            if value == "100-continue":
                expect = True
        else:  # Transfer-Encoding, hop-by-hop fields
            return None
    if host is None:
        return None
    plain = True
    if conn_values is not None:
        tokens = connection_tokens(conn_values)
        keep_alive = "close" not in tokens
        plain = bool(tokens)  # an empty Connection field is removed, not forwarded
    else:
        tokens = _NO_TOKENS
        keep_alive = True
    return RequestHead(method, target, "HTTP/1.1", None, framing, length if length > 0 else 0, keep_alive, expect,
                       tokens, raw_len, False, cookie, plain, text, line_end + 11)


def _check_target_form(method: str, target: str, host: str) -> None:
    if method == "CONNECT":
        if AUTHORITY_FORM_RE.fullmatch(target) is None:
            raise HttpError(400, f"CONNECT needs an authority-form target, got {target[:60]!r}")
    elif target == "*":
        if method != "OPTIONS":
            raise HttpError(400, f"asterisk-form target with {method}")
    elif ABSOLUTE_FORM_RE.fullmatch(target) is None:
        raise HttpError(400, f"target is neither origin-form nor absolute-form: {target[:60]!r}")
    else:
        # RFC 9112 §3.2.2: Host must be identical to the target's authority; two names for one request is how
        # caches get poisoned and routing rules bypassed.
        authority = target.partition("://")[2]
        for sep in "/?":
            authority = authority.partition(sep)[0]
        if host.lower() != authority.lower():
            raise HttpError(400, f"Host {host[:60]!r} differs from the target's authority {authority[:60]!r}")


def _collapse_content_length(headers: list[tuple[str, str]], length: int) -> list[tuple[str, str]]:
    """Several identical Content-Length values become one field, so the server sees one unambiguous length."""
    out: list[tuple[str, str]] = []
    seen = False
    for name, value in headers:
        if name.lower() == "content-length":
            if seen:
                continue
            seen = True
            value = str(length)
        out.append((name, value))
    return out


def parse_response_head(buf: bytes | bytearray, limit: int, request_method: str, *,
                        max_headers: int = MAX_HEADERS) -> ResponseHead | None:
    """The response head at the start of ``buf``, ``None`` when incomplete; every error is a 502."""
    start = _skip_empty_lines(buf) if buf and buf[0] == 13 else 0
    end = buf.find(b"\r\n\r\n", start, limit)
    if end < 0:
        if len(buf) >= limit:
            raise HttpError(502, f"response head larger than {limit} bytes")
        _check_incomplete(buf, start, 502)
        return None
    text = buf[start:end + 2].decode("latin-1")
    line_end = text.find("\r\n")
    m = STATUS_LINE_RE.fullmatch(text, 0, line_end)
    if m is None:
        raise HttpError(502, explain_status_line(text[:line_end]))
    minor, code, reason = m.groups()
    status = int(code)
    headers = _split_fields(text, line_end + 2, 502, max_headers)

    http11 = minor != "0"
    normalised = start > 0 or minor > "1"
    cl_values: list[str] | None = None
    te_values: list[str] | None = None
    conn_values: list[str] | None = None
    for name, value in headers:
        kind = _SPECIAL.get(name.lower())
        if kind == _CL:
            cl_values = [value] if cl_values is None else [*cl_values, value]
        elif kind == _TE:
            te_values = [value] if te_values is None else [*te_values, value]
        elif kind == _CONN:
            conn_values = [value] if conn_values is None else [*conn_values, value]

    framing = _UNTIL_CLOSE
    length = 0
    if te_values is not None:
        if cl_values is not None:
            raise HttpError(502, "Content-Length and Transfer-Encoding both present")
        if not http11:
            raise HttpError(502, "Transfer-Encoding in an HTTP/1.0 response")
        codings = transfer_codings(te_values, 502)
        n_chunked = codings.count("chunked")
        if n_chunked > 1:
            raise HttpError(502, "chunked applied more than once")
        if n_chunked and codings[-1] != "chunked":
            raise HttpError(502, "chunked is not the final transfer coding")
        if n_chunked:
            framing = _CHUNKED
        normalised = True
    elif cl_values is not None:
        length = parse_content_length(cl_values, 502)
        if len(cl_values) > 1 or "," in cl_values[0]:
            headers = _collapse_content_length(headers, length)
            normalised = True
        framing = _LENGTH if length else _NONE
    if (status < 200 or status == 204 or status == 304 or request_method == "HEAD"
            or (request_method == "CONNECT" and status < 300)):
        framing = _NONE

    tokens = connection_tokens(conn_values) if conn_values is not None else _NO_TOKENS
    keep_alive = (framing != _UNTIL_CLOSE and "close" not in tokens
                  and (http11 or "keep-alive" in tokens))
    return ResponseHead("HTTP/1.1" if http11 else "HTTP/1.0", status, reason or "", headers, framing, length,
                        keep_alive, tokens, end + 4, normalised)


# The fast path's grammar is the full parser's (grammar.py): status line, then field lines `token ":" OWS value
# OWS`, then the empty line. Matched at offset 0, so leading empty lines, bare CR/LF, obs-fold, a space before a
# colon or a control character all make it fail and go to the full parser.
# Possessive quantifiers: no class here admits the character that ends its run, so nothing could be given back
# anyway; they only spare the engine its backtracking bookkeeping (~25 % faster).
# The status is a final one that has a body: 1xx (by the class), 204 and 304 (by the lookahead) are left to the
# full parser.
_RESP_FAST_RE = re.compile(
    rb"HTTP/1\.1 (?!204|304)([2-5][0-9][0-9])(?: [" + FIELD_CHARS.encode() + rb"]*+)?\r\n"
    rb"(?:[" + TCHAR.encode() + rb"]++:[" + FIELD_CHARS.encode() + rb"]*+\r\n)*+\r\n")
# The fields the fast path must look at: framing, Connection, Set-Cookie and every other hop-by-hop name. A match
# starts at the CRLF that ends the previous line, so its span is exactly what removing the field takes out.
# Applied to the lower-cased head (one C pass, cheaper than a case-insensitive pattern): values come out
# lower-cased, which is all the fast path needs (digits, Connection options, presence).
_RESP_SPECIAL_RE = re.compile(  # factored as _REQ_SPECIAL_RE
    rb"\r\n(c(?:ontent-length|onnection)|set-cookie|t(?:ransfer-encoding|e|railer)|keep-alive|proxy-connection|"
    rb"upgrade):[ \t]*+([^\r]*+)")


def scan_response_head(buf: bytes, limit: int) -> tuple[int, int, int, int, bool, bool] | None:
    """The common response head at the start of ``buf``, checked as ``parse_response_head`` would:
    ``(status, raw_len, content_length, Connection fields (0 or 1), keep_alive, has Set-Cookie)``, or ``None`` for
    anything else (incomplete, invalid, unusual): then the full parser decides. The only Connection values taken
    are ``keep-alive`` and ``close`` (``connection_field_span`` finds the field). Valid for a request method other
    than HEAD and CONNECT (the caller checks)."""
    m = _RESP_FAST_RE.match(buf)
    if m is None:
        return None
    end = m.end()
    if end > limit:
        return None
    if end >= _MIN_LONG_HEAD and buf.count(b"\n", 0, end) > MAX_HEADERS + 2:  # a field line takes >= 4 bytes
        return None
    length = -1
    conn = 0
    keep_alive = True
    cookie = False
    for name, value in _RESP_SPECIAL_RE.findall(buf[:end - 2].lower()):
        if name == b"content-length":
            value = value.rstrip(b" \t")
            if length >= 0 or not value.isdigit() or len(value) > CONTENT_LENGTH_MAX_DIGITS:
                return None
            length = int(value)
        elif name == b"set-cookie":
            cookie = True
        elif name == b"connection" and not conn:
            value = value.rstrip(b" \t")
            if value == b"close":
                keep_alive = False
            elif value != b"keep-alive":
                return None
            conn = 1
        else:
            return None
    if length < 0:
        return None
    return int(m.group(1)), end, length, conn, keep_alive, cookie


_MIN_LONG_HEAD = 4 * MAX_HEADERS  # a shorter head cannot have more than MAX_HEADERS field lines
_CONNECTION_FIELD_RE = re.compile(rb"\r\nconnection:[^\r]*", re.I)


def connection_field_span(buf: bytes, end: int) -> tuple[int, int]:
    """Span of the (single) Connection field of a head that `scan_response_head` took, from the CRLF before it to
    the CRLF that ends it: removing it removes the field line."""
    m = _CONNECTION_FIELD_RE.search(buf, 0, end)
    assert m is not None
    return m.span()
