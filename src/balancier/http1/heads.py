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
- Fast paths, one regular expression each (see _REQ_FAST_RE, _RESP_FAST_RE): ``parse_request_head`` first tries
  the common request (HTTP/1.1, origin-form, not CONNECT, exactly one valid Host, at most one Connection, one
  plain Content-Length and one Expect, any Cookie, no other field the parser looks at); ``scan_response_head`` is
  the proxy's fast path for the common response (HTTP/1.1, a final status with a body other than 204/304, one
  plain Content-Length, at most one ``Connection: keep-alive`` or ``close``, any Set-Cookie, no other hop-by-hop
  field). Each accepts only heads the full parser accepts, with the same result; on anything else the full
  parser runs and gives the verdict and the error. A request head the fast path did not take has ``plain``
  False (the caller then looks at its fields); one it took keeps where its Connection field is (``conn_span``).
- Heads seen before are not matched again: the fast paths' reading of a head depends on its bytes alone, so it
  is remembered (HeadMemo: REQUEST_MEMO here, RESPONSE_MEMO in the proxy's response fast path), bounded, and
  switched off where heads do not come again.
- Values are stored with surrounding OWS removed, names as received. ``normalised`` tells the caller when the
  raw bytes must not be forwarded as received (see the field); serialising from the parsed form is what makes
  ``Transfer-Encoding:\\tchunked`` reach the server as plain ``chunked``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

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
    TOKENS_CACHE,
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


class RequestHead:
    """A parsed request head. A plain class with slots rather than a dataclass: the parser's fast path fills a
    bare instance field by field (no ``__init__`` frame, ~1/4 of the cost of building one per request) and the
    stream's reads of its slots stay specialised. A new field must be set in ``__init__`` and in that fast path
    (an unset slot raises AttributeError when read).

    A head is never changed once parsed (a rule that changes fields makes a new one): the memo of heads seen
    before (REQUEST_MEMO) hands the same object to every request whose head has the same bytes. Only the
    fields' split (`headers`, from the text) is filled in later, the same for all of them."""

    __slots__ = ("method", "target", "version", "_headers", "framing", "content_length", "keep_alive",
                 "expect_continue", "connection_tokens", "raw_len", "normalised", "has_cookie", "plain", "_text",
                 "conn_span")
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
    normalised: bool
    has_cookie: bool  # a Cookie field is present (persistence needs to look at the request)
    # True when the raw head can be forwarded as received once its Connection fields are dealt with: one field
    # per line, nothing normalised, no hop-by-hop field other than Connection (set by the fast path only;
    # False means "look at the fields").
    plain: bool
    _text: str  # the head as text, up to the CRLF of its last field line (fast path: fields split lazily)
    # The span of the value (OWS included) of the head's only Connection field, when the fast path took the head
    # (None otherwise): `fields_without_connection` cuts the field line out without a search.
    conn_span: tuple[int, int] | None

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]] | None,
                 framing: Framing, content_length: int, keep_alive: bool, expect_continue: bool,
                 connection_tokens: frozenset[str], raw_len: int, normalised: bool = False,
                 has_cookie: bool = False, plain: bool = False, text: str = "",
                 conn_span: tuple[int, int] | None = None) -> None:
        """``headers`` None means "split ``text`` when read"."""
        self.method = method
        self.target = target
        self.version = version
        self._headers = headers
        self.framing = framing
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.connection_tokens = connection_tokens
        self.raw_len = raw_len
        self.normalised = normalised
        self.has_cookie = has_cookie
        self.plain = plain
        self._text = text
        self.conn_span = conn_span

    def __repr__(self) -> str:
        return (f"RequestHead({self.method!r}, {self.target!r}, {self.version!r}, framing={self.framing!r}, "
                f"content_length={self.content_length}, keep_alive={self.keep_alive}, raw_len={self.raw_len}, "
                f"normalised={self.normalised}, plain={self.plain})")

    @property
    def _hpos(self) -> int:
        """Where the field lines start in ``_text`` (just after the request line's CRLF)."""
        return self._text.find("\r\n") + 2

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


_new_request_head = object.__new__  # the fast path's constructor: RequestHead without __init__ (slots filled)


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
    skips the fast path (for tests that hold both paths to the same results).

    The fast path is written out here rather than called: the common request (see _REQ_FAST_RE) is checked and
    read by one regular expression (once per distinct head: see REQUEST_MEMO), and the head is filled from what
    it read with no other Python call. Anything else goes to the full parser, which gives the verdict. Fields
    are split only if someone reads them."""
    if type(buf) is not bytes:
        buf = bytes(buf)  # memo keys are bytes (a bytearray is not hashable)
    memo = REQUEST_MEMO
    e: Any = None
    key: Any = None
    if buf[-4:] == b"\r\n\r\n" and memo.on and fast and max_headers >= MAX_HEADERS and len(buf) <= limit:
        # the usual read: one whole head and nothing after it. A memo key is a head up to the CRLF of its last
        # field, so it holds no CRLFCRLF: found, the head ends where the buffer does, without a search
        key = buf[:-2]
        e = memo.entries.get(key)
    if e is not None:
        end = len(buf) - 4
    else:
        end = buf.find(b"\r\n\r\n", 0, limit)
    # end == 0: the buffer starts with empty lines; a head with more fields than the fast grammar takes
    # (MAX_HEADERS) is the full parser's when the caller allows fewer
    if end > 0 and fast and max_headers >= MAX_HEADERS:
        if e is None and (key is None or end != len(buf) - 4):  # (else: that key, looked up already)
            key = buf[:end + 2]
            if memo.on:
                e = memo.entries.get(key)
            else:
                memo.skip()
        if e is None:
            text = key.decode("latin-1")
            try:
                m = _req_fast_match(text)
            except SystemError:  # see _REQ_FAST_RE (a try costs nothing in Python 3.11 until it catches)
                m = None
            if m is not None:
                h = _new_request_head(RequestHead)
                h.method, h.target, conn, cookie, length, expect, _ = m.groups()  # the last one: Host
                if length is None:
                    h.content_length = 0
                    h.framing = _NONE
                else:
                    n = h.content_length = int(length)
                    h.framing = _LENGTH if n else _NONE
                if conn is None:
                    h.connection_tokens = _NO_TOKENS
                    h.keep_alive = h.plain = True
                    h.conn_span = None
                else:
                    h.conn_span = m.span(3)
                    tokens = TOKENS_CACHE.get(conn)
                    if tokens is None:
                        tokens = connection_tokens([conn])
                    h.connection_tokens = tokens
                    h.keep_alive = "close" not in tokens
                    h.plain = bool(tokens)  # an empty Connection field is removed, not forwarded
                h.expect_continue = expect is not None and expect.rstrip(" \t").lower() == "100-continue"
                h.has_cookie = cookie is not None
                h.version = "HTTP/1.1"
                h._headers = None
                h.raw_len = end + 4
                h.normalised = False
                h._text = text
                if memo.on:  # the head itself: found again, it is returned as it is (heads are never changed)
                    memo.note(key, h)
                return h
            if memo.on:
                memo.note(key, False)
        elif e:
            memo.hits += 1
            return e  # type: ignore[no-any-return]
        else:
            memo.hits += 1
            text = key.decode("latin-1")
        if buf[0] != 13:  # no empty line before the request line: ``text`` is the whole head
            return _parse_request_text(text, 0, end, max_headers)
    return _parse_request_full(buf, limit, max_headers)


# Heads seen before, remembered. The fast paths' verdict on a head depends on its bytes alone, and the same
# heads often come again: a server answers a page or a file with the same head until its Date field moves (once a
# second), a client polls the same URL, a benchmark repeats one request. Matching a head costs ~20-30
# instructions per byte (~13 k for a 155-byte nginx response head); looking its bytes up in a dict ~1 k. An
# entry holds what the fast path made of the head (the request head itself, which is never changed; for a
# response, what the proxy reads from the match), or False when the head is not the fast path's (the full
# parser then decides, every time: nothing but "not common" is remembered of an unusual or invalid head).
# Where heads do not come again (every request its own URL and cookies, every response its own length), a
# miss costs the lookup and the store on top of the match: the memo judges itself over windows of MEMO_WINDOW
# new heads and stops (lookups included) when fewer than half of its lookups found their head, then tries
# again after MEMO_PAUSE heads read without it. Bounded: heads longer than MEMO_HEAD_MAX are not kept, and a
# memo that reaches MEMO_ENTRIES entries is emptied (evicting one by one would cost a frame per store; heads that
# come back refill it at once).
MEMO_ENTRIES = 512
MEMO_HEAD_MAX = 2048
MEMO_WINDOW = 512
MEMO_PAUSE = 16 * MEMO_WINDOW


class HeadMemo:
    """One memo (requests or responses). Its users, where the head is read (no frame on a hit), look up
    ``entries`` while ``on``, count ``hits``, call ``note`` for a head not found, and ``skip`` for a head read
    while off."""

    __slots__ = ("entries", "on", "hits", "misses", "paused", "last", "last_key", "last_entry")

    def __init__(self) -> None:
        self.entries: dict[Any, Any] = {}
        self.last = 0  # the response memo's user: where the last head looked up ended (a hint, see response.py)
        self.reset()

    def reset(self) -> None:
        """Empty and on, at the start of a window."""
        self.entries.clear()
        self.on = True
        self.hits = 0  # lookups that found their head, in this window
        self.misses = 0  # heads looked up and not found, in this window
        self.paused = 0  # heads still to read without the memo before it tries again
        self.last_key: Any = None  # the response memo's user: the last head found or noted, and its entry
        self.last_entry: Any = None

    def note(self, key: Any, entry: Any) -> None:
        """A head looked up and not found (the memo is on): ``entry`` is the fast path's reading of it."""
        self.misses += 1
        entries = self.entries
        if self.misses >= MEMO_WINDOW:
            if self.hits < self.misses:  # most heads were new: the lookups cost more than they saved
                self.on = False
                self.paused = MEMO_PAUSE  # counted down by `skip`
                entries.clear()
                return
            self.hits = self.misses = 0
        if len(key) <= MEMO_HEAD_MAX:
            if len(entries) >= MEMO_ENTRIES:
                entries.clear()
            entries[key] = entry

    def skip(self) -> None:
        """A head read without the memo (it is off); after MEMO_PAUSE of them, try it again for a window."""
        self.paused -= 1
        if not self.paused:
            self.on = True
            self.hits = self.misses = 0


# request head text up to the CRLF of its last field line ->
# (method, target, content_length, framing, connection_tokens, keep_alive, plain, conn_span, expect_continue,
#  has_cookie), the RequestHead fields the fast path fills from its match
REQUEST_MEMO = HeadMemo()
# response head bytes before its CRLFCRLF -> (status, raw_len, content_length, conn_start, conn_end, keep_alive,
# has Set-Cookie), what the proxy's response fast path reads from the match (proxy/response.py `_fast_response`;
# `conn_start:conn_end` is the Connection field line from the CRLF before it to the CR after it, -1 without one)
RESPONSE_MEMO = HeadMemo()


def _parse_request_full(buf: bytes | bytearray, limit: int, max_headers: int) -> RequestHead | None:
    start = _skip_empty_lines(buf) if buf and buf[0] == 13 else 0
    end = buf.find(b"\r\n\r\n", start, limit)
    if end < 0:
        if len(buf) >= limit:
            raise _over_limit_request(buf, start, limit)
        _check_incomplete_request(buf, start)
        return None
    return _parse_request_text(buf[start:end + 2].decode("latin-1"), start, end, max_headers)


def _parse_request_text(text: str, start: int, end: int, max_headers: int) -> RequestHead:
    """The full parser: ``text`` is the head from its request line to the CRLF of its last field line,
    ``start`` the number of bytes of empty lines before it, ``end`` where CRLFCRLF starts in the buffer."""
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


# The request fast path's grammar, one regular expression for the whole head (`text`, which ends with the CRLF of
# its last field line): the full parser's grammar (grammar.py) narrowed to the common request:
# - an HTTP/1.1 request line with an origin-form target and a method other than CONNECT (which needs
#   authority-form);
# - at most MAX_HEADERS field lines `token ":" OWS value OWS`, where a field whose name the parser looks at is
#   taken only in the form the fast path can read: at most one Connection (its value with its OWS, group 3, so
#   that the field line runs from `m.start(3) - 13` (CRLF, name, colon) to `m.end(3)`); Cookie, any
#   number (group 4); at most one Content-Length of 1 to CONTENT_LENGTH_MAX_DIGITS digits (group 5); at most
#   one Expect (group 6); exactly one Host, valid (HOST_RE) (group 7). Any other such field
#   (Transfer-Encoding, hop-by-hop names) has no branch of its own and is kept out of the generic one by the
#   lookahead, so the head does not match. A second Host, Connection, Content-Length or Expect fails its
#   branch by the conditional `(?(n)(?!))` (a list to collapse or a union of options: the full parser's job).
# Names are compared case-insensitively (ASCII); the value groups keep their trailing OWS, which `int` and the
# Connection options ignore. Possessive quantifiers: no class admits the character that ends its run, so
# nothing could be given back anyway; they spare the engine its backtracking bookkeeping (an atomic group
# around a greedy repeat of the field lines costs ~10 % more).
# Python 3.11's engine does not restore the groups of a failed alternative inside a possessive repeat (CPython
# issue 101955: a match that succeeds with such a group raises SystemError "The span of capturing group is
# wrong"). Hence the rule kept by both fast patterns: a group opens only after its branch's name and colon,
# where the branch can no longer lose to another one (names are exclusive, the generic branch is first), so a
# branch that fails after opening a group fails the whole match. The caller still treats a SystemError as
# "not the fast path's".
# One pass costs less than validating, lower-casing and then searching the special fields (a regular
# expression has a fixed cost of ~2000 instructions per call).
_REQ_SPECIAL_NAMES = (r"h(?:ost)|c(?:o(?:ntent-length|nnection|okie))|t(?:ransfer-encoding|e|railer)|expect"
                      r"|keep-alive|proxy-connection|upgrade")
_HOST_FAST = r"(?:\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9._~!$&'()*+,;=%\-]*+)(?::[0-9]*+)?"  # HOST_RE, possessive
_REQ_FAST_RE = re.compile(
    rf"(?!CONNECT )([{TCHAR}]++) (/[\x21\x22\x24-\x7e]*+) HTTP/1\.1\r\n"
    rf"(?:(?!(?i:{_REQ_SPECIAL_NAMES}):)[{TCHAR}]++:[{FIELD_CHARS}]*+\r\n"
    rf"|(?i:connection):(?(3)(?!))([{FIELD_CHARS}]*+)\r\n"
    rf"|(?i:cookie):()[{FIELD_CHARS}]*+\r\n"
    rf"|(?i:content-length):[ \t]*+(?(5)(?!))([0-9]{{1,{CONTENT_LENGTH_MAX_DIGITS}}}+)[ \t]*+\r\n"
    rf"|(?i:expect):[ \t]*+(?(6)(?!))([{FIELD_CHARS}]*+)\r\n"
    rf"|(?i:host):[ \t]*+(?(7)(?!))({_HOST_FAST})[ \t]*+\r\n"
    rf"){{0,{MAX_HEADERS}}}+(?(7)|(?!))", re.ASCII)
_req_fast_match = _REQ_FAST_RE.fullmatch


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


# The response fast path's grammar, as _REQ_FAST_RE: the full parser's (grammar.py) narrowed to the common
# response: HTTP/1.1, a final status that has a body (1xx by the class, 204 and 304 by the lookahead are left to
# the full parser) (group 1), at most MAX_HEADERS field lines, exactly one Content-Length of digits (group 2),
# at most one Connection that says keep-alive or close (group 3: the value with its OWS, so the field line is
# `m.start(3) - 13` (CRLF, name, colon) to `m.end(3)`; group 4 when close), Set-Cookie, any number
# (group 5); any other field the full parser looks at (Transfer-Encoding, hop-by-hop names) makes it fail.
# Matched at offset 0, so leading empty lines, bare CR/LF, obs-fold, a space before a colon or a control
# character all make it fail and go to the full parser.
_RESP_SPECIAL_NAMES = (rb"c(?:ontent-length|onnection)|set-cookie|t(?:ransfer-encoding|e|railer)|keep-alive"
                       rb"|proxy-connection|upgrade")
_FC, _TC = FIELD_CHARS.encode(), TCHAR.encode()
_RESP_FAST_RE = re.compile(
    rb"HTTP/1\.1 (?!204|304)([2-5][0-9][0-9])(?: [" + _FC + rb"]*+)?\r\n"
    rb"(?:(?!(?i:" + _RESP_SPECIAL_NAMES + rb"):)[" + _TC + rb"]++:[" + _FC + rb"]*+\r\n"
    rb"|(?i:content-length):[ \t]*+(?(2)(?!))([0-9]{1,%d}+)[ \t]*+\r\n" % CONTENT_LENGTH_MAX_DIGITS +
    rb"|(?i:connection):(?(3)(?!))([ \t]*+(?:(?i:keep-alive)|((?i:close)))[ \t]*+)\r\n"
    rb"|(?i:set-cookie):()[" + _FC + rb"]*+\r\n"
    rb"){0,%d}+(?(2)|(?!))\r\n" % MAX_HEADERS)
_resp_fast_match = _RESP_FAST_RE.match
# The same match under a public name, for the proxy's response fast path (proxy/response.py), which reads the
# groups as ``scan_response_head`` does: status, Content-Length, Connection value, close, Set-Cookie. Like every
# ``match`` of this pattern it may raise SystemError (see _REQ_FAST_RE): the caller then takes the full path.
match_common_response = _RESP_FAST_RE.match
# Its status group (three digits, 200-599) as an int by one dict lookup: `int()` of bytes costs ~4x more.
COMMON_STATUS = {str(n).encode(): n for n in range(200, 600)}


def scan_response_head(buf: bytes, limit: int) -> tuple[int, int, int, int, bool, bool] | None:
    """The common response head at the start of ``buf``, checked as ``parse_response_head`` would:
    ``(status, raw_len, content_length, Connection fields (0 or 1), keep_alive, has Set-Cookie)``, or ``None`` for
    anything else (incomplete, invalid, unusual): then the full parser decides. The only Connection values taken
    are ``keep-alive`` and ``close`` (``connection_field_span`` finds the field). Valid for a request method other
    than HEAD and CONNECT (the caller checks)."""
    # The head must end within ``limit`` bytes: the match cannot look further.
    try:
        m = _resp_fast_match(buf, 0, limit)
    except SystemError:  # see _REQ_FAST_RE
        return None
    if m is None:
        return None
    status, length, conn, close, cookie = m.groups()
    return int(status), m.end(), int(length), 0 if conn is None else 1, close is None, cookie is not None


_CONNECTION_FIELD_RE = re.compile(rb"\r\nconnection:[^\r]*", re.I)


def connection_field_span(buf: bytes, end: int) -> tuple[int, int]:
    """Span of the (single) Connection field of a head that `scan_response_head` took, from the CRLF before it to
    the CRLF that ends it: removing it removes the field line."""
    m = _CONNECTION_FIELD_RE.search(buf, 0, end)
    assert m is not None
    return m.span()


def fields_without_connection(raw: bytes, raw_len: int, conn_span: tuple[int, int] | None) -> bytes:
    """A validated request head's bytes up to the CRLF of its last field line (``raw[:raw_len - 2]``) without
    its Connection field lines. With the fast path's ``conn_span`` (its only Connection field's value) the line
    is cut from the CRLF 13 bytes before the value ("\\r\\nconnection:") to the CR after it, by two slices;
    otherwise every such line goes (a substitution: ~3 k instructions)."""
    if conn_span is not None:
        return raw[:conn_span[0] - 13] + raw[conn_span[1]:raw_len - 2]
    return _CONNECTION_FIELD_RE.sub(b"", raw[:raw_len - 2])
