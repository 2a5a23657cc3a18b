"""RFC 9110/9112 grammar shared by the head parser and the body framer, plus the slow-path diagnostics.

Rules:
- Every pattern here is applied with ``fullmatch`` (or anchored with a look-behind on CRLF) so nothing outside
  the grammar can slip through between two matches.
- Numbers (Content-Length, chunk sizes) are checked against their grammar *before* conversion:
  ``str.isdigit()`` and bare ``int()`` accept far more than ``1*DIGIT`` (signs, ``_``, whitespace, Unicode
  digits such as ``²``).
- The diagnostics run only after the fast path refused a head; they explain *why* for the logs and never
  accept anything the fast path refused.
"""

from __future__ import annotations

import re

from .errors import HttpError

# token = 1*tchar (RFC 9110 §5.6.2)
TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
# field-vchar = VCHAR / obs-text; field values may also carry SP and HTAB between them (RFC 9110 §5.5).
VCHAR = r"\x21-\x7e\x80-\xff"
FIELD_CHARS = r"\t\x20-\x7e\x80-\xff"

TOKEN_RE = re.compile(rf"[{TCHAR}]+")

# One field line preceded by CRLF: the look-behind makes a match start only at a real line start (never after
# a bare LF, never in the middle of a line), and no class admits CR or LF, so "number of matches == number of
# LF" proves that every line matched in full and that there is no bare CR or LF. A value ending with OWS fails
# the final look-behind and is taken by FIELD_LINE_OWS_RE on a rare slow path, which strips it.
FIELD_LINE_RE = re.compile(rf"(?<=\r\n)([{TCHAR}]+):[ \t]*([{FIELD_CHARS}]*)(?<![ \t])\r\n")
FIELD_LINE_OWS_RE = re.compile(rf"(?<=\r\n)([{TCHAR}]+):[ \t]*([{FIELD_CHARS}]*?)[ \t]*\r\n")

# request-line = method SP request-target SP HTTP-version. The target is printable US-ASCII without '#'
# (a fragment is never sent in a request); anything else, extra spaces included, fails the match.
REQUEST_LINE_RE = re.compile(rf"([{TCHAR}]+) ([\x21\x22\x24-\x7e]+) HTTP/1\.([0-9])")
# Any prefix of a request line, for rejecting garbage (a TLS handshake on a clear port) before the head is
# whole.
REQUEST_LINE_PREFIX_RE = re.compile(
    rb"(?:[" + TCHAR.encode() + rb"]+(?: (?:[\x21\x22\x24-\x7e]+"
    rb"(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\.[0-9]?)?)?)?)?)?)?)?)?)?)?)?")
# status-line = HTTP-version SP status-code SP [ reason-phrase ]; the SP before an empty reason is optional
# here because many servers omit it.
STATUS_LINE_RE = re.compile(rf"HTTP/1\.([0-9]) ([1-5][0-9][0-9])(?: ([{FIELD_CHARS}]*))?")

# absolute-form: scheme "://" authority ...; userinfo is refused (RFC 9110 §4.2.4 deprecates it for http(s)).
ABSOLUTE_FORM_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?@]+(?:[/?].*)?", re.S)
# authority-form for CONNECT: host ":" port, port mandatory.
AUTHORITY_FORM_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%\-]+):[0-9]{1,5}")
# Host = uri-host [ ":" port ]; may be empty (RFC 9110 §7.2).
HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%\-]*)(?::[0-9]*)?")

# Content-Length = 1*DIGIT; 18 digits is an exabyte, longer is refused before conversion.
CONTENT_LENGTH_MAX_DIGITS = 18
CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,18}")


def parse_content_length(values: list[str], status: int) -> int:
    """The single length of one or more Content-Length fields. Identical values ("5, 5" or two fields "5") are
    one length; differing values, empty elements, signs, spaces inside, or more than 18 digits are refused."""
    if len(values) == 1:
        value = values[0]
        if value.isdigit() and value.isascii() and len(value) <= CONTENT_LENGTH_MAX_DIGITS:
            return int(value)  # the common case, checked against 1*DIGIT already
    length = -1
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if CONTENT_LENGTH_RE.fullmatch(item) is None:
                if item.isascii() and item.isdigit():
                    raise HttpError(status,
                                    f"Content-Length has more than {CONTENT_LENGTH_MAX_DIGITS} digits")
                raise HttpError(status, f"invalid Content-Length {value!r}")
            n = int(item)
            if length >= 0 and n != length:
                raise HttpError(status, f"differing Content-Length values {values!r}")
            length = n
    return length


def transfer_codings(values: list[str], status: int) -> list[str]:
    """The lower-cased transfer codings of every Transfer-Encoding field, in order. An empty list element
    is refused (as HAProxy does: ", chunked" is a known obfuscation), so is a coding with parameters or a
    non-token."""
    codings: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if not item:
                raise HttpError(status, f"empty element in Transfer-Encoding {value!r}")
            if TOKEN_RE.fullmatch(item) is None:
                raise HttpError(status, f"invalid transfer coding {item!r}")
            codings.append(item.lower())
    return codings


# Read directly by the request fast path (heads.py), which looks a value up before calling.
TOKENS_CACHE: dict[str, frozenset[str]] = {}
TOKENS_CACHE_MAX = 256


def connection_tokens(values: list[str]) -> frozenset[str]:
    """Lower-cased options of every Connection field (empty list elements skipped)."""
    if len(values) == 1:
        # The same few values ("keep-alive", "close", "Upgrade") come again and again: remember short ones,
        # a bounded number of them.
        tokens = TOKENS_CACHE.get(values[0])
        if tokens is not None:
            return tokens
    found = set()
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t").lower()
            if item:
                found.add(item)
    tokens = frozenset(found)
    if len(values) == 1 and len(values[0]) <= 64 and len(TOKENS_CACHE) < TOKENS_CACHE_MAX:
        TOKENS_CACHE[values[0]] = tokens
    return tokens


_VALID_HOSTS: set[str] = set()
_VALID_HOSTS_MAX = 1024


def valid_host(value: str) -> bool:
    """Host = uri-host [ ":" port ]; a portal sees few distinct hosts, so valid ones are remembered."""
    if value in _VALID_HOSTS:
        return True
    if HOST_RE.fullmatch(value) is None:
        return False
    if len(value) <= 255 and len(_VALID_HOSTS) < _VALID_HOSTS_MAX:  # bounded memory whatever clients send
        _VALID_HOSTS.add(value)
    return True


_LINE_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NAME_RE = re.compile(rf"[{TCHAR}]+")


def explain_field_lines(lines: list[str]) -> str:
    """Why a block of field lines (split on CRLF) was refused; for logs."""
    for line in lines:
        if "\n" in line:
            return "bare LF in header section"
        if "\r" in line:
            return "bare CR in header section"
        if line[:1] in (" ", "\t"):
            return "obsolete line folding"
        name, colon, value = line.partition(":")
        if not colon:
            return f"header line without colon: {line[:40]!r}"
        if not name:
            return "empty header name"
        if name != name.rstrip(" \t"):
            return f"whitespace between header name and colon: {name.strip()!r}"
        if _NAME_RE.fullmatch(name) is None:
            return f"invalid character in header name {name[:40]!r}"
        m = _LINE_CTL_RE.search(value)
        if m is not None:
            return f"control character {m.group()!r} in value of {name!r}"
    return "invalid header section"


def explain_request_line(line: str) -> str:
    """Why a request line was refused; for logs."""
    if "\n" in line or "\r" in line:
        return "bare LF or CR in request line"
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        return f"request line is not 'method SP target SP version': {line[:60]!r}"
    method, target, version = parts
    if _NAME_RE.fullmatch(method) is None:
        return f"invalid method {method[:20]!r}"
    if "#" in target:
        return "fragment in request target"
    if re.fullmatch(r"[\x21-\x7e]+", target) is None:
        return "invalid character in request target"
    if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version) is None:
        return f"invalid HTTP version {version[:20]!r}"
    return f"unsupported HTTP version {version!r}"


def explain_status_line(line: str) -> str:
    """Why a status line was refused; for logs."""
    if "\n" in line or "\r" in line:
        return "bare LF or CR in status line"
    version, _, rest = line.partition(" ")
    if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version) is None:
        return f"invalid HTTP version {version[:20]!r}"
    if not version.startswith("HTTP/1."):
        return f"unsupported HTTP version {version!r}"
    code = rest.partition(" ")[0]
    if re.fullmatch(r"[0-9]{3}", code) is None:
        return f"status code is not 3 digits: {code[:20]!r}"
    if not 100 <= int(code) <= 599:
        return f"status code {code} out of range"
    return "invalid character in reason phrase"
