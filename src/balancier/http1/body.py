"""Body framing: where a message body ends, checked byte by byte, without copying or re-chunking the body.

Rules:
- ``feed(data)`` returns how many leading bytes of ``data`` belong to this body; the proxy forwards exactly
  those bytes unchanged. Once ``done`` is true, the rest of ``data`` is the next message (pipelining).
- Every byte counted as consumed is part of a valid prefix of a body: a chunk-size line or a trailer line is
  checked as it arrives (a partial line against a prefix grammar), so an invalid byte raises before it could
  be forwarded. Feeding one byte at a time gives the same result as feeding everything at once.
- Chunked grammar (RFC 9112 §7.1): chunk-size is 1 to 16 HEXDIG (no sign, no ``0x``, no whitespace except BWS
  before a ``;`` chunk-ext), chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] ), the
  line ends with CRLF (a bare LF is refused), chunk data is followed by CRLF, trailers are field lines (no
  obs-fold, no space before the colon) ended by an empty line. A chunk-size line is at most 4096 bytes; the
  trailer section at most ``trailer_limit`` bytes.
- Errors raise ``HttpError`` with 400 for a request body, 502 for a response body. A connection closed before
  the end of a LENGTH or CHUNKED body is an error too (``feed_eof``); for UNTIL_CLOSE it is the end.
"""

from __future__ import annotations

import re

from .errors import HttpError
from .grammar import FIELD_CHARS, TCHAR
from .heads import Framing

CHUNK_LINE_MAX = 4096

_HEX = rb"[0-9A-Fa-f]"
_BWS = rb"[ \t]*"
_TOK = rb"[" + TCHAR.encode() + rb"]+"
_QS_BODY = rb'(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*'
_EXT = (_BWS + rb";" + _BWS + _TOK + rb"(?:" + _BWS + rb"=" + _BWS + rb'(?:' + _TOK + rb'|"' + _QS_BODY
        + rb'"))?')
# Any proper prefix of one chunk-ext (possibly empty).
_EXT_PREFIX = (_BWS + rb"(?:;" + _BWS + rb"(?:" + _TOK + rb"(?:" + _BWS + rb"(?:=" + _BWS + rb'(?:' + _TOK
               + rb'|"' + _QS_BODY + rb'(?:\\|")?)?)?)?)?)?')
_CHUNK_LINE_RE = re.compile(rb"(" + _HEX + rb"{1,16})(?:" + _EXT + rb")*\r\n")
_CHUNK_LINE_PREFIX_RE = re.compile(
    _HEX + rb"{0,16}|" + _HEX + rb"{1,16}(?:" + _EXT + rb")*(?:" + _EXT_PREFIX + rb"|\r)")

_FIELD = rb"[" + TCHAR.encode() + rb"]+:[" + FIELD_CHARS.encode() + rb"]*"
_TRAILER_LINE_RE = re.compile(_FIELD + rb"\r\n")
_TRAILER_PREFIX_RE = re.compile(rb"[" + TCHAR.encode() + rb"]*|" + _FIELD + rb"\r?|\r")

_NONE, _LENGTH, _UNTIL_CLOSE = Framing.NONE, Framing.LENGTH, Framing.UNTIL_CLOSE  # cheaper than Framing.X

# Chunked states
_SIZE_LINE, _DATA, _DATA_CR, _DATA_LF, _TRAILERS = range(5)


class BodyFramer:
    """Tracks one message body of a given framing; see the module rules."""

    __slots__ = ("framing", "done", "remaining", "_status", "_state", "_line", "_trailer_limit",
                 "_trailer_len")

    def __init__(self, framing: Framing, length: int = 0, is_response: bool = False,
                 trailer_limit: int = 16384) -> None:
        self.framing = framing
        self.remaining = length if framing == _LENGTH else 0  # LENGTH: bytes left; CHUNKED: of this chunk
        self.done = framing == _NONE or (framing == _LENGTH and length <= 0)
        self._status = 502 if is_response else 400
        self._state = _SIZE_LINE
        self._line = bytearray()  # partial chunk-size or trailer line
        self._trailer_limit = trailer_limit
        self._trailer_len = 0

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """How many leading bytes of ``data`` belong to this body (all of them until ``done``)."""
        if self.done:
            return 0
        framing = self.framing
        if framing == _LENGTH:
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                return n
            n = self.remaining
            self.remaining = 0
            self.done = True
            return n
        if framing == _UNTIL_CLOSE:
            return len(data)
        return self._feed_chunked(data)

    def feed_eof(self) -> None:
        """The peer closed: the end of an UNTIL_CLOSE body, an error for an unfinished LENGTH or CHUNKED
        body."""
        if self.done:
            return
        if self.framing == _UNTIL_CLOSE:
            self.done = True
            return
        raise HttpError(self._status, "connection closed before the end of the body")

    # -- chunked ---------------------------------------------------------------------------------------------

    def _feed_chunked(self, data: bytes | bytearray | memoryview) -> int:
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = n - pos
                if take < self.remaining:
                    self.remaining -= take
                    return n
                pos += self.remaining
                self.remaining = 0
                self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[pos] != 13:
                    raise HttpError(self._status, "chunk data not followed by CRLF")
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[pos] != 10:
                    raise HttpError(self._status, "chunk data not followed by CRLF")
                pos += 1
                self._state = _SIZE_LINE
            elif state == _SIZE_LINE:
                m = None
                if not self._line and not isinstance(data, memoryview):
                    # Common case: the whole line is here; match it in place, no copy.
                    i = data.find(b"\n", pos, pos + CHUNK_LINE_MAX)
                    if i >= 0:
                        m = _CHUNK_LINE_RE.fullmatch(data, pos, i + 1)
                        if m is None:
                            bad = bytes(data[pos:min(i + 1, pos + 40)])
                            raise HttpError(self._status, f"invalid chunk-size line {bad!r}")
                        pos = i + 1
                if m is None:
                    line, pos = self._take_line(data, pos, CHUNK_LINE_MAX, _CHUNK_LINE_PREFIX_RE,
                                                "chunk-size line")
                    if line is None:
                        return pos
                    m = _CHUNK_LINE_RE.fullmatch(line)
                    if m is None:
                        raise HttpError(self._status, f"invalid chunk-size line {bytes(line[:40])!r}")
                size = int(m.group(1), 16)  # the grammar admits hex digits only
                if size:
                    self.remaining = size
                    self._state = _DATA
                else:
                    self._state = _TRAILERS
            else:  # _TRAILERS
                room = self._trailer_limit - self._trailer_len + 2  # + the empty line
                line, pos = self._take_line(data, pos, room, _TRAILER_PREFIX_RE, "trailer section")
                if line is None:
                    return pos
                if len(line) == 2:  # the empty line: a line is only returned once it ends with LF
                    if line != b"\r\n":
                        raise HttpError(self._status, "bare LF in trailer section")
                    self.done = True
                    return pos
                if _TRAILER_LINE_RE.fullmatch(line) is None:
                    raise HttpError(self._status, f"invalid trailer line {bytes(line[:40])!r}")
                self._trailer_len += len(line)
        return pos

    def _take_line(self, data: bytes | bytearray | memoryview, pos: int, room: int,
                   prefix_re: re.Pattern[bytes], what: str) -> tuple[bytes | bytearray | None, int]:
        """One LF-terminated line of at most ``room`` bytes starting at ``pos`` (joined to the partial line
        kept from earlier feeds), or None when ``data`` ends first; a partial line is checked against the
        prefix grammar right away so that no invalid byte is ever reported as consumed."""
        room -= len(self._line)  # what this line may still take, its LF included
        if room <= 0:
            raise HttpError(self._status, f"{what} too long")
        if isinstance(data, memoryview):
            window: bytes | bytearray = data[pos:pos + room].tobytes()
            base = 0
        else:
            window = data
            base = pos
        i = window.find(b"\n", base, base + room)
        if i < 0:
            piece = window[base:base + room]
            if len(piece) == room:
                raise HttpError(self._status, f"{what} too long")
            partial = self._line
            partial += piece
            if prefix_re.fullmatch(partial) is None:
                raise HttpError(self._status, f"invalid {what}: {bytes(partial[:40])!r}")
            return None, pos + len(piece)
        piece = window[base:i + 1]
        if self._line:
            line: bytes | bytearray = self._line + piece
            self._line = bytearray()
        else:
            line = piece
        return line, pos + len(piece)
