"""Request heads: raw bytes in, RequestHead or the HAProxy status out."""

from __future__ import annotations

import pytest

from balancier.http1 import Framing, HttpError, parse_request_head

H = b"Host: example.test\r\n"


def req(*lines: bytes, start: bytes = b"GET / HTTP/1.1") -> bytes:
    return b"\r\n".join([start, *lines, b""]) + b"\r\n"


# (id, raw, expected status). Every case must be refused before anything is forwarded.
REJECTED: list[tuple[str, bytes, int]] = [
    # --- request smuggling shapes -----------------------------------------------------------------------------
    ("CL.TE", req(b"Host: a", b"Content-Length: 6", b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1"), 400),
    ("TE.CL", req(b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 6", start=b"POST / HTTP/1.1"), 400),
    ("CL.TE-zero", req(b"Host: a", b"Content-Length: 0", b"Transfer-Encoding: chunked"), 400),
    ("TE.TE xchunked", req(b"Host: a", b"Transfer-Encoding: xchunked"), 400),
    ("TE.TE space before colon", req(b"Host: a", b"Transfer-Encoding : chunked"), 400),
    ("TE.TE chunked, identity", req(b"Host: a", b"Transfer-Encoding: chunked, identity"), 400),
    ("TE.TE obs-fold value", req(b"Host: a", b"Transfer-Encoding:", b" chunked"), 400),
    ("TE.TE tab-led line", req(b"Host: a", b"\tTransfer-Encoding: chunked"), 400),
    ("TE.TE duplicate fields", req(b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
    ("TE.TE chunked twice", req(b"Host: a", b"Transfer-Encoding: chunked, chunked"), 400),
    ("TE.TE gzip then chunked field", req(b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"),
     400),
    ("TE final gzip", req(b"Host: a", b"Transfer-Encoding: gzip"), 400),
    ("TE identity", req(b"Host: a", b"Transfer-Encoding: identity"), 400),
    ("TE with parameter", req(b"Host: a", b"Transfer-Encoding: chunked;q=1"), 400),
    ("TE quoted", req(b"Host: a", b'Transfer-Encoding: "chunked"'), 400),
    ("TE vertical tab", req(b"Host: a", b"Transfer-Encoding: \x0bchunked"), 400),
    ("TE NUL", req(b"Host: a", b"Transfer-Encoding: chunked\x00"), 400),
    ("TE empty", req(b"Host: a", b"Transfer-Encoding: "), 400),
    ("TE empty list", req(b"Host: a", b"Transfer-Encoding: , ,"), 400),
    ("TE empty element before chunked", req(b"Host: a", b"Transfer-Encoding: , chunked"), 400),
    ("TE trailing comma", req(b"Host: a", b"Transfer-Encoding: chunked,"), 400),
    ("TE gzip, chunked", req(b"Host: a", b"Transfer-Encoding: gzip, chunked"), 422),
    ("TE gzip then chunked in two fields", req(b"Host: a", b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
     422),
    ("TE in HTTP/1.0", req(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.0"), 400),
    ("TE space in name", req(b"Host: a", b"Transfer Encoding: chunked"), 400),
    ("TE underscore-less lookalike", req(b"Host: a", b"Transfer-Encoding: chunk"), 400),
    # --- Content-Length grammar -------------------------------------------------------------------------------
    ("CL plus sign", req(b"Host: a", b"Content-Length: +5"), 400),
    ("CL minus", req(b"Host: a", b"Content-Length: -1"), 400),
    ("CL hex", req(b"Host: a", b"Content-Length: 0x5"), 400),
    ("CL space inside", req(b"Host: a", b"Content-Length: 5 5"), 400),
    ("CL underscore", req(b"Host: a", b"Content-Length: 1_0"), 400),
    ("CL float", req(b"Host: a", b"Content-Length: 5.0"), 400),
    ("CL empty", req(b"Host: a", b"Content-Length: "), 400),
    ("CL superscript digit", req(b"Host: a", b"Content-Length: \xb2"), 400),
    ("CL differing list", req(b"Host: a", b"Content-Length: 5, 6"), 400),
    ("CL empty list element", req(b"Host: a", b"Content-Length: 5,,5"), 400),
    ("CL differing fields", req(b"Host: a", b"Content-Length: 5", b"Content-Length: 6"), 400),
    ("CL 19 digits", req(b"Host: a", b"Content-Length: 1000000000000000000"), 400),
    ("CL 2^64", req(b"Host: a", b"Content-Length: 18446744073709551616"), 400),
    # --- line endings and field syntax ------------------------------------------------------------------------
    ("bare LF after request line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("bare LF everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare LF in field section", req(b"Host: a\nX: b"), 400),
    ("bare CR in value", req(b"Host: a", b"X: b\rc"), 400),
    ("bare CR line end", req(b"Host: a", b"X: b\r"), 400),
    ("obs-fold", req(b"Host: a", b"X-Long: first", b"  second"), 400),
    ("space before colon", req(b"Host : a"), 400),
    ("tab before colon", req(b"Host\t: a"), 400),
    ("space in name", req(b"Host: a", b"X Y: z"), 400),
    ("invalid char in name", req(b"Host: a", b"X(y): z"), 400),
    ("non-ASCII name", req(b"Host: a", b"X\xe9: z"), 400),
    ("empty name", req(b"Host: a", b": z"), 400),
    ("no colon", req(b"Host: a", b"Foo"), 400),
    ("NUL in value", req(b"Host: a", b"X: a\x00b"), 400),
    ("DEL in value", req(b"Host: a", b"X: a\x7fb"), 400),
    ("ESC in value", req(b"Host: a", b"X: \x1b[31m"), 400),
    ("101 fields", req(b"Host: a", *[b"X-%d: v" % i for i in range(100)]), 400),
    # --- request line -----------------------------------------------------------------------------------------
    ("double space", req(H.strip(), start=b"GET  / HTTP/1.1"), 400),
    ("trailing space", req(H.strip(), start=b"GET / HTTP/1.1 "), 400),
    ("leading space", req(H.strip(), start=b" GET / HTTP/1.1"), 400),
    ("tab separator", req(H.strip(), start=b"GET\t/ HTTP/1.1"), 400),
    ("missing version", req(H.strip(), start=b"GET /"), 400),
    ("lower-case http", req(H.strip(), start=b"GET / http/1.1"), 400),
    ("HTTP/2.0", req(H.strip(), start=b"GET / HTTP/2.0"), 400),
    ("HTTP/0.9", req(H.strip(), start=b"GET / HTTP/0.9"), 400),
    ("HTTP/1 without minor", req(H.strip(), start=b"GET / HTTP/1"), 400),
    ("HTTP/1.10", req(H.strip(), start=b"GET / HTTP/1.10"), 400),
    ("method with bad char", req(H.strip(), start=b"GE(T / HTTP/1.1"), 400),
    ("empty method", req(H.strip(), start=b" / HTTP/1.1"), 400),
    ("fragment in target", req(H.strip(), start=b"GET /a#b HTTP/1.1"), 400),
    ("DEL in target", req(H.strip(), start=b"GET /a\x7fb HTTP/1.1"), 400),
    ("non-ASCII target", req(H.strip(), start=b"GET /caf\xe9 HTTP/1.1"), 400),
    # --- target form versus method ----------------------------------------------------------------------------
    ("CONNECT origin-form", req(H.strip(), start=b"CONNECT / HTTP/1.1"), 400),
    ("CONNECT without port", req(H.strip(), start=b"CONNECT example.test HTTP/1.1"), 400),
    ("CONNECT absolute-form", req(H.strip(), start=b"CONNECT http://example.test:80/ HTTP/1.1"), 400),
    ("asterisk with GET", req(H.strip(), start=b"GET * HTTP/1.1"), 400),
    ("relative target", req(H.strip(), start=b"GET foo HTTP/1.1"), 400),
    ("absolute-form with userinfo", req(H.strip(), start=b"GET http://user@example.test/ HTTP/1.1"), 400),
    ("absolute-form without authority", req(H.strip(), start=b"GET http:///x HTTP/1.1"), 400),
    ("absolute-form Host differs", req(b"Host: evil.test", start=b"GET http://example.test/ HTTP/1.1"), 400),
    ("absolute-form Host port differs", req(b"Host: example.test", start=b"GET http://example.test:8080/ HTTP/1.1"),
     400),
    ("absolute-form without Host", req(start=b"GET http://example.test/ HTTP/1.1"), 400),
    # --- Host -------------------------------------------------------------------------------------------------
    ("HTTP/1.1 without Host", req(b"Accept: */*"), 400),
    ("two Host", req(b"Host: a", b"Host: b"), 400),
    ("two identical Host", req(b"Host: a", b"host: a"), 400),
    ("two Host in HTTP/1.0", req(b"Host: a", b"Host: b", start=b"GET / HTTP/1.0"), 400),
    ("Host with space", req(b"Host: a b"), 400),
    ("Host with slash", req(b"Host: a/b"), 400),
    ("Host with userinfo", req(b"Host: u@a"), 400),
    ("Host with bad port", req(b"Host: a:8x"), 400),
]


@pytest.mark.parametrize(("raw", "status"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as exc:
        parse_request_head(raw)
    assert exc.value.status == status
    assert exc.value.reason  # something to log


def test_enough_rejected_cases() -> None:
    assert len(REJECTED) >= 60
    assert len({c[0] for c in REJECTED}) == len(REJECTED)


# (id, raw, attributes expected on the RequestHead)
ACCEPTED: list[tuple[str, bytes, dict[str, object]]] = [
    ("simple GET", req(H.strip()),
     dict(method="GET", target="/", version="HTTP/1.1", framing=Framing.NONE, keep_alive=True,
          expect_continue=False, connection_tokens=frozenset(), headers=[("Host", "example.test")])),
    ("HTTP/1.0 without Host closes", req(start=b"GET /x HTTP/1.0"),
     dict(version="HTTP/1.0", keep_alive=False, headers=[])),
    ("HTTP/1.0 keep-alive", req(b"Connection: Keep-Alive", start=b"GET / HTTP/1.0"),
     dict(keep_alive=True, connection_tokens=frozenset({"keep-alive"}))),
    ("HTTP/1.0 keep-alive and close", req(b"Connection: keep-alive, close", start=b"GET / HTTP/1.0"),
     dict(keep_alive=False)),
    ("HTTP/1.1 close", req(H.strip(), b"Connection: close"), dict(keep_alive=False)),
    ("HTTP/1.1 close in second Connection field", req(H.strip(), b"Connection: foo", b"Connection: Close"),
     dict(keep_alive=False, connection_tokens=frozenset({"foo", "close"}))),
    ("Connection list lower-cased", req(H.strip(), b"Connection: Keep-Alive, Upgrade,,X-Foo"),
     dict(keep_alive=True, connection_tokens=frozenset({"keep-alive", "upgrade", "x-foo"}))),
    ("HTTP/1.2 read as 1.1", req(H.strip(), start=b"GET / HTTP/1.2"), dict(version="HTTP/1.1", keep_alive=True)),
    ("Content-Length", req(H.strip(), b"Content-Length: 5", start=b"POST /f HTTP/1.1"),
     dict(framing=Framing.LENGTH, content_length=5)),
    ("Content-Length 0 is no body", req(H.strip(), b"Content-Length: 0", start=b"POST /f HTTP/1.1"),
     dict(framing=Framing.NONE, content_length=0)),
    ("Content-Length leading zeros", req(H.strip(), b"Content-Length: 007"), dict(content_length=7)),
    ("Content-Length 18 digits", req(H.strip(), b"Content-Length: 999999999999999999"),
     dict(content_length=999999999999999999)),
    ("Content-Length list collapsed", req(H.strip(), b"Content-Length: 5, 5"),
     dict(framing=Framing.LENGTH, content_length=5, headers=[("Host", "example.test"), ("Content-Length", "5")])),
    ("Content-Length fields collapsed", req(H.strip(), b"Content-Length: 5", b"X: y", b"content-length: 5"),
     dict(content_length=5, headers=[("Host", "example.test"), ("Content-Length", "5"), ("X", "y")])),
    ("chunked", req(H.strip(), b"Transfer-Encoding: chunked"), dict(framing=Framing.CHUNKED)),
    ("Chunked any case", req(H.strip(), b"transfer-encoding: ChUnKeD"), dict(framing=Framing.CHUNKED)),
    ("chunked with OWS around", req(H.strip(), b"Transfer-Encoding:  chunked  "), dict(framing=Framing.CHUNKED)),
    ("HTAB as OWS before chunked", req(H.strip(), b"Transfer-Encoding:\tchunked"),
     dict(framing=Framing.CHUNKED, headers=[("Host", "example.test"), ("Transfer-Encoding", "chunked")])),
    ("Expect 100-continue", req(H.strip(), b"Expect: 100-continue", b"Content-Length: 3"),
     dict(expect_continue=True, framing=Framing.LENGTH)),
    ("Expect any case", req(H.strip(), b"expect: 100-Continue"), dict(expect_continue=True)),
    ("Expect ignored in HTTP/1.0", req(b"Expect: 100-continue", start=b"POST / HTTP/1.0"),
     dict(expect_continue=False)),
    ("other Expect", req(H.strip(), b"Expect: something"), dict(expect_continue=False)),
    ("OWS stripped, inner spaces kept", req(b"Host:example.test", b"X-A:   a  b \t ", b"X-B:", b"X-C: \t "),
     dict(headers=[("Host", "example.test"), ("X-A", "a  b"), ("X-B", ""), ("X-C", "")])),
    ("obs-text value as latin-1", req(H.strip(), b"X-Name: Ren\xe9"),
     dict(headers=[("Host", "example.test"), ("X-Name", "Ren\xe9")])),
    ("names as received", req(b"hOsT: example.test", b"X-MiXeD: v"),
     dict(headers=[("hOsT", "example.test"), ("X-MiXeD", "v")])),
    ("absolute-form", req(b"Host: Example.Test:8080", start=b"GET http://example.test:8080/a?b=c HTTP/1.1"),
     dict(target="http://example.test:8080/a?b=c")),
    ("absolute-form https without path", req(H.strip(), start=b"GET https://example.test HTTP/1.1"),
     dict(target="https://example.test")),
    ("absolute-form query without path", req(H.strip(), start=b"GET http://example.test?x=1 HTTP/1.1"),
     dict(target="http://example.test?x=1")),
    ("OPTIONS *", req(H.strip(), start=b"OPTIONS * HTTP/1.1"), dict(method="OPTIONS", target="*")),
    ("CONNECT authority-form", req(b"Host: example.test:443", start=b"CONNECT example.test:443 HTTP/1.1"),
     dict(method="CONNECT", target="example.test:443")),
    ("CONNECT IPv6", req(b"Host: [::1]:443", start=b"CONNECT [::1]:443 HTTP/1.1"), dict(target="[::1]:443")),
    ("extension method", req(H.strip(), start=b"PROPFIND /dav HTTP/1.1"), dict(method="PROPFIND")),
    ("query with odd but printable chars", req(H.strip(), start=b'GET /a?b="c"&d={e}|f HTTP/1.1'),
     dict(target='/a?b="c"&d={e}|f')),
    ("empty Host", req(b"Host:"), dict(headers=[("Host", "")])),
    ("Host with port and IPv6", req(b"Host: [2001:db8::1]:8080"), dict(keep_alive=True)),
    ("100 fields is the limit", req(H.strip(), *[b"X-%d: v" % i for i in range(99)]), dict(keep_alive=True)),
    ("Upgrade request", req(H.strip(), b"Connection: Upgrade", b"Upgrade: websocket"),
     dict(connection_tokens=frozenset({"upgrade"}), keep_alive=True)),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted(raw: bytes, expected: dict[str, object]) -> None:
    head = parse_request_head(raw)
    assert head is not None
    assert head.raw_len == len(raw)
    for name, value in expected.items():
        assert getattr(head, name) == value, name


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_every_proper_prefix_is_incomplete(raw: bytes, expected: dict[str, object]) -> None:
    for cut in range(len(raw)):
        assert parse_request_head(raw[:cut]) is None, cut


def test_bytearray_input() -> None:
    head = parse_request_head(bytearray(req(H.strip(), b"Content-Length: 2")))
    assert head is not None and head.content_length == 2


def test_get_and_get_all_are_case_insensitive() -> None:
    head = parse_request_head(req(H.strip(), b"Cookie: a=1", b"X: 1", b"cookie: b=2"))
    assert head is not None
    assert head.get("COOKIE") == "a=1"
    assert head.get_all("cookie") == ["a=1", "b=2"]
    assert head.get("missing") is None
    assert head.get_all("missing") == []


def test_pipelined_heads_are_cut_by_raw_len() -> None:
    first = req(H.strip(), start=b"GET /one HTTP/1.1")
    second = req(H.strip(), b"Content-Length: 3", start=b"POST /two HTTP/1.1")
    buf = first + second + b"abc" + b"GET /thr"
    head = parse_request_head(buf)
    assert head is not None and head.target == "/one" and head.raw_len == len(first)
    buf = buf[head.raw_len:]
    head = parse_request_head(buf)
    assert head is not None and head.target == "/two" and head.framing == Framing.LENGTH
    buf = buf[head.raw_len + head.content_length:]
    assert buf == b"GET /thr"
    assert parse_request_head(buf) is None


def test_empty_lines_before_request_line_are_skipped() -> None:
    raw = b"\r\n\r\n" + req(H.strip())
    head = parse_request_head(raw)
    assert head is not None and head.method == "GET" and head.raw_len == len(raw)
    assert parse_request_head(b"\r\n") is None
    assert parse_request_head(b"\r\n\r") is None


def test_empty_buffer_is_incomplete() -> None:
    assert parse_request_head(b"") is None


# --- size limits: 414 for the request line, 431 for the rest -------------------------------------------------

def test_head_exactly_at_limit_is_accepted() -> None:
    raw = req(H.strip(), b"X: ")
    raw = req(H.strip(), b"X: " + b"v" * (1024 - len(raw)))
    assert len(raw) == 1024
    assert parse_request_head(raw, limit=1024) is not None
    with pytest.raises(HttpError) as exc:
        parse_request_head(raw, limit=1023)
    assert exc.value.status == 431


def test_long_request_line_is_414() -> None:
    raw = req(H.strip(), start=b"GET /" + b"a" * 2000 + b" HTTP/1.1")
    with pytest.raises(HttpError) as exc:
        parse_request_head(raw, limit=1024)
    assert exc.value.status == 414


def test_incomplete_request_line_over_limit_is_414() -> None:
    with pytest.raises(HttpError) as exc:
        parse_request_head(b"GET /" + b"a" * 1100, limit=1024)
    assert exc.value.status == 414


def test_incomplete_fields_over_limit_are_431() -> None:
    with pytest.raises(HttpError) as exc:
        parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1100, limit=1024)
    assert exc.value.status == 431


def test_incomplete_under_limit_waits() -> None:
    assert parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 900, limit=1024) is None


def test_only_empty_lines_over_limit_is_400() -> None:
    with pytest.raises(HttpError) as exc:
        parse_request_head(b"\r\n" * 600, limit=1024)
    assert exc.value.status == 400


def test_max_headers_is_configurable() -> None:
    raw = req(H.strip(), b"A: 1", b"B: 2")
    assert parse_request_head(raw, max_headers=3) is not None
    with pytest.raises(HttpError) as exc:
        parse_request_head(raw, max_headers=2)
    assert exc.value.status == 400


def test_reasons_name_the_problem() -> None:
    cases = {
        req(b"Host: a", b"Content-Length: 1", b"Transfer-Encoding: chunked"): "Content-Length and Transfer-Encoding",
        req(b"Host : a"): "whitespace between header name and colon",
        req(b"Host: a", b" folded"): "obsolete line folding",
        req(b"Host: a", b"X: \x00"): "control character",
        req(start=b"GET / HTTP/1.1"): "without Host",
        req(b"Host: a", b"Content-Length: 1, 2"): "differing Content-Length",
        req(b"Host: a", start=b"GET / HTTP/2.0"): "version",
    }
    for raw, words in cases.items():
        with pytest.raises(HttpError) as exc:
            parse_request_head(raw)
        assert words in exc.value.reason, (raw, exc.value.reason)


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a clear-text port
    b"GET /abc HTTP/2",
    b"GET  /",
    b" GET",
    b"GET /a HTTP/1.1 x",
    b"GET / HTTP/1.1\nHost: a\n",
])
def test_garbage_is_refused_before_the_head_is_complete(garbage: bytes) -> None:
    with pytest.raises(HttpError) as exc:
        parse_request_head(garbage)
    assert exc.value.status == 400


def test_long_target_still_waits() -> None:
    assert parse_request_head(b"GET /" + b"a" * 500 + b" HTT") is None


def test_bare_lf_client_fed_bytewise_is_refused_by_the_end_of_its_first_line() -> None:
    raw = b"GET / HTTP/1.1\nHost: a\n\n"
    buf = b""
    with pytest.raises(HttpError) as exc:
        for i in range(len(raw)):
            buf += raw[i:i + 1]
            assert parse_request_head(buf) is None
    assert exc.value.status == 400
    assert buf == b"GET / HTTP/1.1\n"


def test_valid_head_fed_bytewise_completes_exactly_at_its_end() -> None:
    raw = req(H.strip(), b"X-A: 1", b"Content-Length: 2") + b"ok"
    buf = b""
    for i in range(len(raw)):
        buf += raw[i:i + 1]
        head = parse_request_head(buf)
        if head is not None:
            break
    assert head is not None and head.raw_len == len(raw) - 2 == len(buf)


@pytest.mark.parametrize(("raw", "normalised"), [
    (req(H.strip(), b"Content-Length: 5"), False),
    (req(H.strip(), b"X:  padded  "), False),  # OWS differs, meaning does not
    (req(H.strip(), b"Content-Length: 5, 5"), True),
    (req(H.strip(), b"Content-Length: 5", b"Content-Length: 5"), True),
    (req(H.strip(), start=b"GET / HTTP/1.2"), True),
    (b"\r\n" + req(H.strip()), True),
    (req(H.strip(), b"Transfer-Encoding:\tchunked"), True),
    (req(H.strip(), b"Transfer-Encoding: chunked"), True),
])
def test_normalised_says_when_raw_bytes_must_not_be_forwarded(raw: bytes, normalised: bool) -> None:
    head = parse_request_head(raw)
    assert head is not None and head.normalised is normalised
