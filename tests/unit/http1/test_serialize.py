"""Writing heads, the hop-by-hop rule, and HAProxy's error pages byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancier.http1 import (
    ERROR_STATUSES,
    HttpError,
    build_request_head,
    build_response_head,
    error_response,
    parse_request_head,
    parse_response_head,
    strip_hop_by_hop,
)


def test_build_request_head_bytes() -> None:
    raw = build_request_head("GET", "/a?b", "HTTP/1.1", [("host", "x"), ("x-forwarded-for", "127.0.0.1")])
    assert raw == b"GET /a?b HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 127.0.0.1\r\n\r\n"


def test_build_response_head_bytes() -> None:
    assert build_response_head("HTTP/1.1", 204, "No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_parse_build_parse_round_trip() -> None:
    raw = (b"POST /f HTTP/1.1\r\nHost: a\r\nX:  padded  \r\nTransfer-Encoding:\tchunked\r\n"
           b"X-Latin: caf\xe9\r\n\r\n")
    head = parse_request_head(raw)
    assert head is not None
    out = build_request_head(head.method, head.target, head.version, head.headers)
    assert out == (b"POST /f HTTP/1.1\r\nHost: a\r\nX: padded\r\nTransfer-Encoding: chunked\r\n"
                   b"X-Latin: caf\xe9\r\n\r\n")
    again = parse_request_head(out)
    assert again is not None and again.headers == head.headers and again.framing == head.framing
    resp = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 16384, "GET")
    assert resp is not None
    assert build_response_head(resp.version, resp.status, resp.reason, resp.headers) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_line_breaks_in_values_are_refused(value: str) -> None:
    with pytest.raises(HttpError) as exc:
        build_request_head("GET", "/", "HTTP/1.1", [("X", value)])
    assert exc.value.status == 500
    with pytest.raises(HttpError):
        build_response_head("HTTP/1.1", 200, "OK", [("Set-Cookie", value)])
    with pytest.raises(HttpError):
        build_response_head("HTTP/1.1", 200, "OK\r\nX: 1", [])


HOP: list[tuple[str, list[tuple[str, str]], frozenset[str], bool, list[str]]] = [
    ("fixed hop-by-hop set",
     [("Host", "a"), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"),
      ("TE", "trailers"), ("Trailer", "Expires"), ("Upgrade", "h2c"), ("Transfer-Encoding", "chunked"),
      ("Accept", "*/*")],
     frozenset({"keep-alive"}), False, ["Host", "Transfer-Encoding", "Accept"]),
    ("names listed in Connection, any case",
     [("Host", "a"), ("X-Secret", "1"), ("x-other", "2"), ("Accept", "*/*")],
     frozenset({"x-secret", "x-other"}), False, ["Host", "Accept"]),
    ("Connection cannot remove framing or Host",
     [("Host", "a"), ("Content-Length", "5"), ("Transfer-Encoding", "chunked"), ("X", "1")],
     frozenset({"content-length", "transfer-encoding", "host", "x"}), False,
     ["Host", "Content-Length", "Transfer-Encoding"]),
    ("upgrade keeps Upgrade", [("Host", "a"), ("Connection", "Upgrade"), ("Upgrade", "websocket")],
     frozenset({"upgrade"}), True, ["Host", "Upgrade"]),
    ("nothing to strip", [("Host", "a"), ("Cookie", "c=1")], frozenset(), False, ["Host", "Cookie"]),
]


@pytest.mark.parametrize(("headers", "tokens", "upgrading", "kept"), [c[1:] for c in HOP], ids=[c[0] for c in HOP])
def test_strip_hop_by_hop(headers: list[tuple[str, str]], tokens: frozenset[str], upgrading: bool,
                          kept: list[str]) -> None:
    before = list(headers)
    assert [n for n, _ in strip_hop_by_hop(headers, tokens, upgrading)] == kept
    assert headers == before  # input untouched


# --- error pages ------------------------------------------------------------------------------------------------

SPEC_400 = (b"HTTP/1.1 400 Bad request\r\nContent-length: 90\r\nCache-Control: no-cache\r\nConnection: close\r\n"
            b"Content-Type: text/html\r\n\r\n<html><body><h1>400 Bad request</h1>\n"
            b"Your browser sent an invalid request.\n</body></html>\n")
SPEC_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 107\r\ncache-control: no-cache\r\n"
            b"content-type: text/html\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\n"
            b"No server is available to handle this request.\n</body></html>\n")


def test_400_and_503_byte_exact() -> None:
    assert error_response(400) == SPEC_400
    assert error_response(503) == SPEC_503


@pytest.mark.parametrize(("status", "body_len"), [(400, 90), (408, 110), (502, 107), (503, 107), (504, 92),
                                                  (403, 93), (500, 97), (413, 106), (414, 110), (431, 106),
                                                  (501, 136), (422, 116)])
def test_body_lengths(status: int, body_len: int) -> None:
    page = error_response(status)
    head, _, body = page.partition(b"\r\n\r\n")
    assert len(body) == body_len
    assert b"\r\ncontent-length: %d\r\n" % body_len in head.lower() + b"\r\n"
    assert body.startswith(b"<html><body><h1>%d " % status) and body.endswith(b"</body></html>\n")


@pytest.mark.parametrize("status", [400, 408, 413, 414, 422, 431, 501])
def test_request_side_pages_are_raw_capitalised(status: int) -> None:
    page = error_response(status)
    assert b"\r\nContent-length: " in page and b"\r\nCache-Control: no-cache\r\n" in page
    assert (b"\r\nConnection: close\r\n" in page) == (status in (400, 408))


@pytest.mark.parametrize("status", [403, 500, 502, 503, 504])
def test_stream_side_pages_are_lower_case(status: int) -> None:
    head = error_response(status).partition(b"\r\n\r\n")[0]
    names = [line.split(b":")[0] for line in head.split(b"\r\n")[1:]]
    assert names == [b"content-length", b"cache-control", b"content-type"]


def test_every_page_parses_as_a_valid_response() -> None:
    for status in ERROR_STATUSES:
        page = error_response(status)
        head = parse_response_head(page, 16384, "GET")
        assert head is not None and head.status == status
        assert head.content_length == len(page) - head.raw_len


def test_unknown_status_is_an_error() -> None:
    with pytest.raises(ValueError):
        error_response(418)


# --- property: what we build, we parse back unchanged ----------------------------------------------------------

_tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_names = st.text(alphabet=_tchar, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in {"host", "content-length", "transfer-encoding", "connection", "expect"})
_vchars = "".join(chr(c) for c in [*range(0x21, 0x7f), *range(0x80, 0x100)])
_values = st.builds(lambda a, b: (a + b).strip(" \t") if b else a,
                    st.text(alphabet=_vchars, max_size=20), st.text(alphabet=_vchars + " \t", max_size=20))


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(st.tuples(_names, _values), max_size=20),
       target=st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7f) if chr(c) != "#"), min_size=1,
                      max_size=30))
def test_build_then_parse_round_trip(fields: list[tuple[str, str]], target: str) -> None:
    headers = [("Host", "example.test"), *fields]
    raw = build_request_head("GET", "/" + target, "HTTP/1.1", headers)
    head = parse_request_head(raw)
    assert head is not None
    assert head.headers == headers and head.target == "/" + target and head.raw_len == len(raw)
