"""Response heads: framing per RFC 9112 §6.3, keep-alive, and 502 for anything invalid."""

from __future__ import annotations

import pytest

from balancier.http1 import Framing, HttpError, parse_response_head


def resp(*lines: bytes, start: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join([start, *lines, b""]) + b"\r\n"


# (id, raw, request method, expected attributes)
ACCEPTED: list[tuple[str, bytes, str, dict[str, object]]] = [
    ("200 Content-Length", resp(b"Content-Length: 12"), "GET",
     dict(status=200, reason="OK", version="HTTP/1.1", framing=Framing.LENGTH, content_length=12, keep_alive=True)),
    ("200 chunked", resp(b"Transfer-Encoding: chunked"), "GET", dict(framing=Framing.CHUNKED, keep_alive=True)),
    ("200 gzip, chunked", resp(b"Transfer-Encoding: gzip, chunked"), "GET", dict(framing=Framing.CHUNKED)),
    ("200 no length reads until close", resp(b"Server: x"), "GET",
     dict(framing=Framing.UNTIL_CLOSE, keep_alive=False)),
    ("200 final coding gzip reads until close", resp(b"Transfer-Encoding: gzip"), "GET",
     dict(framing=Framing.UNTIL_CLOSE, keep_alive=False)),
    ("Content-Length 0 is no body", resp(b"Content-Length: 0"), "GET",
     dict(framing=Framing.NONE, keep_alive=True)),
    ("HEAD response has no body", resp(b"Content-Length: 1234"), "HEAD",
     dict(framing=Framing.NONE, content_length=1234, keep_alive=True)),
    ("HEAD chunked has no body", resp(b"Transfer-Encoding: chunked"), "HEAD", dict(framing=Framing.NONE)),
    ("HEAD without length keeps alive", resp(), "HEAD", dict(framing=Framing.NONE, keep_alive=True)),
    ("204 has no body", resp(start=b"HTTP/1.1 204 No Content"), "DELETE",
     dict(status=204, framing=Framing.NONE, keep_alive=True)),
    ("304 with Content-Length has no body", resp(b"Content-Length: 99", start=b"HTTP/1.1 304 Not Modified"), "GET",
     dict(framing=Framing.NONE)),
    ("100 Continue", resp(start=b"HTTP/1.1 100 Continue"), "POST", dict(status=100, framing=Framing.NONE)),
    ("103 Early Hints", resp(b"Link: </a.css>; rel=preload", start=b"HTTP/1.1 103 Early Hints"), "GET",
     dict(status=103, framing=Framing.NONE)),
    ("101 Switching Protocols", resp(b"Connection: Upgrade", b"Upgrade: websocket",
                                     start=b"HTTP/1.1 101 Switching Protocols"), "GET",
     dict(status=101, framing=Framing.NONE, connection_tokens=frozenset({"upgrade"}))),
    ("2xx to CONNECT is a tunnel", resp(start=b"HTTP/1.1 200 Connection established"), "CONNECT",
     dict(framing=Framing.NONE)),
    ("407 to CONNECT has a body", resp(b"Content-Length: 5", start=b"HTTP/1.1 407 Proxy Auth"), "CONNECT",
     dict(framing=Framing.LENGTH, content_length=5)),
    ("HTTP/1.1 close", resp(b"Content-Length: 1", b"Connection: close"), "GET", dict(keep_alive=False)),
    ("HTTP/1.0 closes by default", resp(b"Content-Length: 1", start=b"HTTP/1.0 200 OK"), "GET",
     dict(version="HTTP/1.0", keep_alive=False)),
    ("HTTP/1.0 keep-alive", resp(b"Content-Length: 1", b"Connection: keep-alive", start=b"HTTP/1.0 200 OK"), "GET",
     dict(keep_alive=True)),
    ("HTTP/1.0 keep-alive but until close", resp(b"Connection: keep-alive", start=b"HTTP/1.0 200 OK"), "GET",
     dict(framing=Framing.UNTIL_CLOSE, keep_alive=False)),
    ("no reason phrase, no space", resp(b"Content-Length: 0", start=b"HTTP/1.1 200"), "GET",
     dict(status=200, reason="")),
    ("empty reason phrase", resp(b"Content-Length: 0", start=b"HTTP/1.1 200 "), "GET", dict(reason="")),
    ("reason with spaces and obs-text", resp(b"Content-Length: 0", start=b"HTTP/1.1 404 Pas trouv\xe9 ici"), "GET",
     dict(status=404, reason="Pas trouv\xe9 ici")),
    ("100 fields is the limit", resp(*[b"X-%d: v" % i for i in range(100)]), "GET",
     dict(framing=Framing.UNTIL_CLOSE)),
    ("599 is a status", resp(b"Content-Length: 0", start=b"HTTP/1.1 599 Whatever"), "GET", dict(status=599)),
    ("identical Content-Length collapsed", resp(b"Content-Length: 3", b"Content-Length: 3"), "GET",
     dict(content_length=3, headers=[("Content-Length", "3")])),
    ("Set-Cookie kept in order", resp(b"Set-Cookie: a=1", b"Content-Length: 0", b"Set-Cookie: b=2"), "GET",
     dict(headers=[("Set-Cookie", "a=1"), ("Content-Length", "0"), ("Set-Cookie", "b=2")])),
    ("HTTP/1.2 read as 1.1", resp(b"Content-Length: 0", start=b"HTTP/1.2 200 OK"), "GET",
     dict(version="HTTP/1.1")),
]


@pytest.mark.parametrize(("raw", "method", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted(raw: bytes, method: str, expected: dict[str, object]) -> None:
    head = parse_response_head(raw, 16384, method)
    assert head is not None
    assert head.raw_len == len(raw)
    for name, value in expected.items():
        assert getattr(head, name) == value, name


@pytest.mark.parametrize(("raw", "method", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_every_proper_prefix_is_incomplete(raw: bytes, method: str, expected: dict[str, object]) -> None:
    for cut in range(len(raw)):
        assert parse_response_head(raw[:cut], 16384, method) is None, cut


REJECTED: list[tuple[str, bytes]] = [
    ("status 2 digits", resp(start=b"HTTP/1.1 20 OK")),
    ("status 4 digits", resp(start=b"HTTP/1.1 2000 OK")),
    ("status 099", resp(start=b"HTTP/1.1 099 Low")),
    ("status 600", resp(start=b"HTTP/1.1 600 High")),
    ("status not digits", resp(start=b"HTTP/1.1 abc OK")),
    ("status with sign", resp(start=b"HTTP/1.1 +20 OK")),
    ("HTTP/2 status line", resp(start=b"HTTP/2 200 OK")),
    ("HTTP/2.0", resp(start=b"HTTP/2.0 200 OK")),
    ("lower-case http", resp(start=b"http/1.1 200 OK")),
    ("double space", resp(start=b"HTTP/1.1  200 OK")),
    ("NUL in reason", resp(start=b"HTTP/1.1 200 O\x00K")),
    ("not HTTP at all", resp(start=b"<html>")),
    ("CL and TE", resp(b"Content-Length: 5", b"Transfer-Encoding: chunked")),
    ("differing CL", resp(b"Content-Length: 5", b"Content-Length: 6")),
    ("invalid CL", resp(b"Content-Length: 5a")),
    ("negative CL", resp(b"Content-Length: -5")),
    ("CL too many digits", resp(b"Content-Length: 1234567890123456789")),
    ("chunked not last", resp(b"Transfer-Encoding: chunked, gzip")),
    ("chunked twice", resp(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked")),
    ("TE in HTTP/1.0", resp(b"Transfer-Encoding: chunked", start=b"HTTP/1.0 200 OK")),
    ("TE with parameter", resp(b"Transfer-Encoding: chunked;x=y")),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
    ("bare LF only", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    ("obs-fold", resp(b"X-A: b", b" c")),
    ("space before colon", resp(b"Content-Length : 0")),
    ("invalid name", resp(b"X@Y: 1")),
    ("NUL in value", resp(b"X: \x00")),
    ("101 fields", resp(*[b"X-%d: v" % i for i in range(101)])),
    ("TE empty element", resp(b"Transfer-Encoding: , chunked")),
    ("CL and TE in a 304", resp(b"Content-Length: 5", b"Transfer-Encoding: chunked", start=b"HTTP/1.1 304 NM")),
]


@pytest.mark.parametrize("raw", [c[1] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_with_502(raw: bytes) -> None:
    with pytest.raises(HttpError) as exc:
        parse_response_head(raw, 16384, "GET")
    assert exc.value.status == 502
    assert exc.value.reason


def test_over_limit_is_502() -> None:
    raw = resp(b"X: " + b"v" * 2000)
    with pytest.raises(HttpError) as exc:
        parse_response_head(raw, 1024, "GET")
    assert exc.value.status == 502
    with pytest.raises(HttpError) as exc:
        parse_response_head(raw[:1500], 1024, "GET")  # incomplete, already too big
    assert exc.value.status == 502
    assert parse_response_head(raw, 4096, "GET") is not None


def test_interim_then_final_response_in_one_buffer() -> None:
    interim = resp(start=b"HTTP/1.1 100 Continue")
    final = resp(b"Content-Length: 2")
    buf = interim + final + b"ok"
    head = parse_response_head(buf, 16384, "POST")
    assert head is not None and head.status == 100 and head.framing == Framing.NONE
    buf = buf[head.raw_len:]
    head = parse_response_head(buf, 16384, "POST")
    assert head is not None and head.status == 200 and head.content_length == 2
    assert buf[head.raw_len:] == b"ok"


def test_get_is_case_insensitive() -> None:
    head = parse_response_head(resp(b"set-cookie: a=1", b"Content-Length: 0", b"Set-Cookie: b=2"), 16384, "GET")
    assert head is not None
    assert head.get("Set-Cookie") == "a=1"
    assert head.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert head.get("x") is None


def test_status_line_reasons() -> None:
    for raw, words in [(resp(start=b"HTTP/1.1 20 OK"), "3 digits"), (resp(start=b"HTTP/2.0 200 OK"), "version"),
                       (resp(start=b"HTTP/1.1 600 X"), "out of range")]:
        with pytest.raises(HttpError) as exc:
            parse_response_head(raw, 16384, "GET")
        assert words in exc.value.reason


@pytest.mark.parametrize(("raw", "normalised"), [
    (resp(b"Content-Length: 5"), False),
    (resp(b"Content-Length: 5,5"), True),
    (resp(b"Transfer-Encoding: chunked"), True),
    (resp(b"Content-Length: 0", start=b"HTTP/1.3 200 OK"), True),
])
def test_normalised(raw: bytes, normalised: bool) -> None:
    head = parse_response_head(raw, 16384, "GET")
    assert head is not None and head.normalised is normalised
