"""The parsers' fast paths give exactly the full parsers' results, or step aside.

`parse_request_head` tries `_fast_request` first; `scan_response_head` is the proxy's shortcut for common
responses. Both must accept only heads the full parser accepts, with the same meaning. Heads are built from
pieces that are valid, borderline (OWS, case, lists, zero lengths) and invalid (control characters, obs-fold,
space before the colon, duplicates, smuggling shapes), and both paths are compared on each.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancier.http1 import Framing, HttpError, heads, parse_request_head, parse_response_head
from balancier.http1.heads import (
    COMMON_STATUS,
    MAX_HEADERS,
    connection_field_span,
    fields_without_connection,
    match_common_response,
    scan_response_head,
)

FIELDS = [
    b"Host: a.test", b"host: a.test:8080", b"HOST:a.test ", b"Host: ", b"Host: bad host", b"Host: [::1]:80",
    b"Content-Length: 5", b"content-length:0", b"Content-Length: 5, 5", b"Content-Length: +5", b"Content-Length: 05",
    b"Content-Length: 1234567890123456789", b"Content-Length:\t7\t",
    b"Transfer-Encoding: chunked", b"transfer-encoding: gzip, chunked",
    b"Connection: close", b"Connection: keep-alive", b"connection: Keep-Alive, close", b"Connection: X-Foo",
    b"Connection:", b"Connection: upgrade", b"Upgrade: websocket", b"Keep-Alive: timeout=5", b"TE: trailers",
    b"Trailer: X", b"Proxy-Connection: close", b"Expect: 100-continue", b"expect: 100-Continue ", b"Expect: nope",
    b"Cookie: a=b", b"cookie: JSESSIONID=A~x", b"Set-Cookie: a=b", b"set-cookie: JSESSIONID=1; path=/",
    b"X-Any: value", b"X-Tab:\tv\t", b"X-Empty:", b"X-Obs: \xe9t\xe9", b"X-Ctl: a\x01b", b"X-Del: a\x7fb",
    b" X-Fold: v", b"\tX-Fold: v", b"X-Space : v", b"X@Bad: v", b": novalue", b"NoColon", b"X-CR: a\rb",
    b"X-LF: a\nb",
    # case and OWS of the names and values the fast paths read; names that only start like a special one
    b"HOST: A.Test", b"Host: a.test \t", b"Host:[::1]", b"Host: a.test:", b"Host: [::1", b"Host: a.test, b.test",
    b"Host: a_b.test:80:80", b"CONNECTION: Close", b"Connection: close ", b"Connection: keep-alive, Upgrade",
    b"coNNection:\tKeep-Alive\t", b"Connection: closed", b"CONTENT-LENGTH: 12 ", b"Content-Length: 0",
    b"Content-Length: 123456789012345678", b"Content-Length: ", b"Content-Length: 1 2", b"Content-Length: \xb2",
    b"EXPECT: 100-CONTINUE\t", b"Expect:", b"COOKIE:", b"Set-Cookie:", b"Hostname: x", b"Connection-X: y",
    b"TEx: y", b"Content-Length2: 5", b"X-Te: y", b"Keep-Alive2: y", b"Upgrade-Insecure-Requests: 1",
]
REQUEST_LINES = [
    b"GET / HTTP/1.1", b"POST /a?b=c HTTP/1.1", b"HEAD /x HTTP/1.1", b"GET / HTTP/1.0", b"GET / HTTP/1.2",
    b"CONNECT a.test:443 HTTP/1.1", b"CONNECT / HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET http://a.test/ HTTP/1.1",
    b"GET /#frag HTTP/1.1", b"GET  / HTTP/1.1", b"get / http/1.1", b"GET / HTTP/2.0", b"G@T / HTTP/1.1",
]
STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 101 Switching", b"HTTP/1.1 100 Continue", b"HTTP/1.0 200 OK",
    b"HTTP/1.1 999 X", b"HTTP/1.1 20 X", b"HTTP/1.1 200 O\x01K", b"HTTP/1.2 200 OK",
]


def head(start: bytes, fields: list[bytes]) -> bytes:
    return b"\r\n".join([start, *fields]) + b"\r\n\r\n"


def outcome_request(buf: bytes, fast: bool, limit: int = 16384) -> object:
    try:
        h = parse_request_head(buf, limit, fast=fast)
    except HttpError as e:
        return ("error", e.status)
    if h is None:
        return None
    return (h.method, h.target, h.version, h.headers, h.framing, h.content_length, h.keep_alive,
            h.expect_continue, h.connection_tokens, h.raw_len, h.normalised, h.has_cookie, h.get("host"))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(REQUEST_LINES), st.lists(st.sampled_from(FIELDS), max_size=6), st.binary(max_size=8))
def test_request_fast_path_matches_full_parser(start: bytes, fields: list[bytes], rest: bytes) -> None:
    buf = head(start, fields) + rest
    assert outcome_request(buf, True) == outcome_request(buf, False)
    assert_engine_copes(buf)
    assert_connection_cut_agrees(buf)


_CONNECTION_LINE = re.compile(rb"\r\nconnection:[^\r]*", re.I)


def assert_connection_cut_agrees(buf: bytes) -> None:
    """What the proxy forwards without the Connection field: the fast path's `conn_span` cut equals removing
    every Connection line with a substitution, and `conn_span` is set exactly when the fast path read one field."""
    try:
        h = parse_request_head(buf)
    except HttpError:
        return
    if h is None:
        return
    n_conn = [name.lower() for name, _ in h.headers].count("connection")
    if h._text:  # the fast path took it: at most one Connection field, and conn_span says where
        assert (h.conn_span is not None) == (n_conn == 1)
    else:
        assert h.conn_span is None
    expected = _CONNECTION_LINE.sub(b"", buf[:h.raw_len - 2])
    assert fields_without_connection(buf, h.raw_len, h.conn_span) == expected


def assert_engine_copes(buf: bytes) -> None:
    """The fast patterns never make the regex engine raise (see heads._REQ_FAST_RE: the parser would fall back,
    but that would hide a pattern that breaks its rule)."""
    end = buf.find(b"\r\n\r\n")
    if end > 0:
        heads._REQ_FAST_RE.fullmatch(buf[:end + 2].decode("latin-1"))
    heads._RESP_FAST_RE.match(buf, 0, 16384)


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1", b"POST /a HTTP/1.1", b"GET / HTTP/1.0"])
def test_request_fast_path_matches_full_parser_on_every_pair_of_fields(start: bytes) -> None:
    """Every ordered pair: duplicates (a second Host, Connection, Content-Length, Expect) and each special field
    next to each other field, with and without Host."""
    for a in FIELDS:
        for b in FIELDS:
            for fields in ([b"Host: h", a, b], [a, b]):
                buf = head(start, fields)
                assert outcome_request(buf, True) == outcome_request(buf, False), buf
                assert_engine_copes(buf)
                assert_connection_cut_agrees(buf)


def test_request_fast_path_takes_the_common_shapes() -> None:
    """What the fast path must take (``_text`` is set only there; ``plain`` too), with the full parser's
    results."""
    cases = [
        [b"Host: a"],
        [b"HOST: A.Test:8080 ", b"User-Agent: x", b"Accept: */*"],
        [b"Host: [::1]:80", b"Connection: close"],
        [b"connection:\tKeep-Alive\t", b"Host: a", b"Cookie: a=b", b"cookie: c=d"],
        [b"Host: a", b"Content-Length: 12 ", b"Expect: 100-Continue"],
        [b"Host: a", b"Content-Length: 0"],
        [b"Host: ", b"Upgrade-Insecure-Requests: 1", b"Hostname: b", b"Connection-X: y", b"TEx: y"],
    ]
    for fields in cases:
        buf = head(b"POST /x?y HTTP/1.1", fields) + b"body"
        h = parse_request_head(buf)
        assert h is not None and h._text and h.plain, fields
        assert outcome_request(buf, True) == outcome_request(buf, False)
    h = parse_request_head(head(b"GET / HTTP/1.1", [b"Host: a", b"Connection:"]))
    assert h is not None and h._text and not h.plain  # an empty Connection field: removed, not forwarded as is


def test_request_fast_path_leaves_the_rest_to_the_full_parser() -> None:
    for fields in ([b"Host: a", b"Host: a"], [b"Host: a", b"Connection: close", b"Connection: close"],
                   [b"Host: a", b"Content-Length: 1", b"Content-Length: 1"], [b"Host: a", b"Keep-Alive: 5"],
                   [b"Host: a", b"Expect: 100-continue", b"Expect: x"], [b"Host: a", b"TE: trailers"],
                   [b"Host: a", b"Transfer-Encoding: chunked"], [b"Host: a", b"Content-Length: 1, 1"], []):
        buf = head(b"GET / HTTP/1.1", fields)
        h = outcome_request(buf, True)
        assert h == outcome_request(buf, False)
        if not isinstance(h, tuple) or h[0] != "error":
            parsed = parse_request_head(buf)
            assert parsed is not None and not parsed._text and not parsed.plain


def test_request_head_end_taken_from_the_buffer_end_only_when_it_is_the_first() -> None:
    """parse_request_head guesses the end of a head that ends the buffer; whatever follows or precedes, the
    result is the full parser's, and a head with another one (or empty lines) after it ends at its own end."""
    one = head(b"GET /a HTTP/1.1", [b"Host: a"])
    two = head(b"GET /b HTTP/1.1", [b"Host: b", b"Cookie: c=d"])
    cases = [one, one + two, one + b"\r\n", one + b"\r\n\r\n", one + two + b"\r\n\r\n", b"\r\n" + one,
             b"\r\n\r\n", b"\r\n\r\n\r\n", one + b"x\r\n\r\n", one[:-2] + b"X: y\r\n\r\n" + two,
             head(b"GET / HTTP/1.1", [b"Host: a", b"Transfer-Encoding: chunked"]) + b"0\r\n\r\n"]
    for buf in cases:
        for limit in (len(buf), len(buf) - 1, 16384):
            assert outcome_request(buf, True, limit) == outcome_request(buf, False, limit), (buf, limit)
    h = parse_request_head(one + two)
    assert h is not None and h.raw_len == len(one) and h.target == "/a" and h.plain


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(REQUEST_LINES[:5]), min_size=1, max_size=3),
       st.lists(st.sampled_from(FIELDS), max_size=3), st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))
def test_request_fast_path_on_pipelined_heads(starts: list[bytes], fields: list[bytes], tail: bytes) -> None:
    buf = b"".join(head(s, [b"Host: h", *fields]) for s in starts) + tail
    assert outcome_request(buf, True) == outcome_request(buf, False)


@pytest.mark.parametrize("fast", [True, False])
def test_request_size_limit_is_exact(fast: bool) -> None:
    buf = head(b"GET / HTTP/1.1", [b"Host: a"])
    assert outcome_request(buf, fast, len(buf)) == outcome_request(buf, False)
    assert outcome_request(buf, fast, len(buf) - 1) == ("error", 431)


def test_request_fast_path_is_taken_and_plain() -> None:
    h = parse_request_head(head(b"GET /x HTTP/1.1", [b"Host: a", b"Connection: close", b"Cookie: a=b"]))
    assert h is not None and h.plain and h.has_cookie and not h.keep_alive
    assert h.connection_tokens == frozenset({"close"})
    assert h.headers == [("Host", "a"), ("Connection", "close"), ("Cookie", "a=b")]
    # hop-by-hop fields other than Connection: the full parser, and the raw head is not "plain"
    h = parse_request_head(head(b"GET /x HTTP/1.1", [b"Host: a", b"Keep-Alive: 5"]))
    assert h is not None and not h.plain


def test_request_header_count_limit_on_both_paths() -> None:
    fields = [b"Host: a"] + [b"a:"] * MAX_HEADERS  # one field too many, each line as short as possible
    for fast in (True, False):
        with pytest.raises(HttpError) as exc:
            parse_request_head(head(b"GET / HTTP/1.1", fields), fast=fast)
        assert exc.value.status == 400
    ok = parse_request_head(head(b"GET / HTTP/1.1", fields[:-1]))
    assert ok is not None and len(ok.headers) == MAX_HEADERS


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(STATUS_LINES), st.lists(st.sampled_from(FIELDS), max_size=6), st.binary(max_size=8))
def test_response_scan_agrees_with_full_parser(start: bytes, fields: list[bytes], rest: bytes) -> None:
    buf = head(start, fields) + rest
    assert_engine_copes(buf)
    info = scan_response_head(buf, 16384)
    if info is None:
        return  # the full parser decides
    status, raw_len, length, conn, keep_alive, set_cookie = info
    full = parse_response_head(buf, 16384, "GET")  # must not raise: the fast path took a valid head only
    assert full is not None
    assert (status, raw_len, length, keep_alive) == (full.status, full.raw_len, full.content_length,
                                                      full.keep_alive)
    assert full.framing == (Framing.LENGTH if length else Framing.NONE)
    assert not full.normalised
    assert full.connection_tokens <= {"close", "keep-alive"}
    names = [n.lower() for n, _ in full.headers]
    assert conn == names.count("connection")
    assert set_cookie == ("set-cookie" in names)
    assert not {"keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding"} & set(names)
    # the proxy's fast path (proxy/response.py) reads the match itself: same groups, same Connection span
    m = match_common_response(buf, 0, 16384)
    assert m is not None and m.end() == raw_len
    m_status, m_length, m_conn, m_close, m_cookie = m.groups()
    assert (COMMON_STATUS[m_status], int(m_length), m_conn is not None, m_close is None, m_cookie is not None) == (
        status, length, bool(conn), keep_alive, set_cookie)
    if conn:
        c0, c1 = connection_field_span(buf, raw_len)
        assert (m.start(3) - 13, m.end(3)) == (c0, c1)  # what proxy/response.py cuts
        without = buf[:c0] + buf[c1:raw_len]
        rest_head = parse_response_head(without, 16384, "GET")
        assert rest_head is not None
        assert [h for h in full.headers if h[0].lower() != "connection"] == rest_head.headers


def test_response_scan_agrees_with_full_parser_on_every_pair_of_fields() -> None:
    for a in FIELDS:
        for b in FIELDS:
            for fields in ([b"Content-Length: 1", a, b], [a, b]):
                buf = head(b"HTTP/1.1 200 OK", fields)
                test_response_scan_agrees_with_full_parser.hypothesis.inner_test(  # type: ignore[attr-defined]
                    b"HTTP/1.1 200 OK", fields, b"")
                info = scan_response_head(buf, 16384)
                if a.lower().startswith(b"content-length:") or b.lower().startswith(b"content-length:"):
                    continue
                if fields[0] == b"Content-Length: 1" and _plain(a) and _plain(b):
                    assert info is not None, buf  # nothing unusual: the fast path must take it


def _plain(field: bytes) -> bool:
    """A valid field line that the response fast path takes whatever its value (not special, not broken)."""
    name, colon, value = field.partition(b":")
    special = {b"connection", b"transfer-encoding", b"te", b"trailer", b"keep-alive", b"proxy-connection",
               b"upgrade", b"content-length"}
    return (bool(colon) and name.lower() not in special and re.fullmatch(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+", name)
            is not None and re.fullmatch(rb"[\t\x20-\x7e\x80-\xff]*", value) is not None)


def test_response_size_limit_is_exact() -> None:
    buf = head(b"HTTP/1.1 200 OK", [b"Content-Length: 3"]) + b"abc"
    n = len(buf) - 3
    info = scan_response_head(buf, n)
    assert info is not None and info[1] == n
    assert scan_response_head(buf, n - 1) is None


def test_response_header_count_limit() -> None:
    fields = [b"Content-Length: 0"] + [b"a:"] * MAX_HEADERS
    assert scan_response_head(head(b"HTTP/1.1 200 OK", fields), 16384) is None
    with pytest.raises(HttpError):
        parse_response_head(head(b"HTTP/1.1 200 OK", fields), 16384, "GET")
    assert scan_response_head(head(b"HTTP/1.1 200 OK", fields[:-1]), 16384) is not None


def test_response_scan_refuses_what_it_must_leave_to_the_full_parser() -> None:
    base = [b"Content-Length: 3"]
    assert scan_response_head(head(b"HTTP/1.1 200 OK", base), 16384) is not None
    for extra in ([b"Transfer-Encoding: chunked"], [b"Content-Length: 3"], [b"Connection: upgrade"],
                  [b"Keep-Alive: 5"], [b"Connection: close", b"Connection: close"]):
        assert scan_response_head(head(b"HTTP/1.1 200 OK", base + extra), 16384) is None
    assert scan_response_head(head(b"HTTP/1.1 200 OK", [b"X: y"]), 16384) is None  # read until close
    assert scan_response_head(head(b"HTTP/1.1 200 OK", base), 20) is None  # over the size limit
    assert scan_response_head(b"\r\n" + head(b"HTTP/1.1 200 OK", base), 16384) is None  # leading empty line
    for status in (b"100", b"101", b"199", b"204", b"304"):  # no body, or interim: the full parser frames them
        assert scan_response_head(head(b"HTTP/1.1 " + status + b" X", base), 16384) is None
    for status in (b"201", b"2040", b"302", b"305", b"404", b"503"):
        info = scan_response_head(head(b"HTTP/1.1 " + status + b" X", base), 16384)
        if len(status) == 3:
            assert info is not None and info[0] == int(status)
        else:
            assert info is None  # a status is three digits


def test_every_status_the_response_match_takes_has_its_int() -> None:
    for n in range(100, 1000):
        buf = head(b"HTTP/1.1 %d X" % n, [b"Content-Length: 0"])
        m = match_common_response(buf, 0, 16384)
        if m is None:
            assert n < 200 or n >= 600 or n in (204, 304)
        else:
            assert COMMON_STATUS[m.group(1)] == n == scan_response_head(buf, 16384)[0]  # type: ignore[index]


# The memo of heads seen before (`heads.HeadMemo`): a remembered head reads exactly as it read the first time,
# the memo stays bounded, and it stops looking heads up where they do not come again (then tries again later).

@pytest.fixture(autouse=True)
def fresh_memo() -> Iterator[None]:
    heads.REQUEST_MEMO.reset()
    yield
    heads.REQUEST_MEMO.reset()


def request(i: int, extra: bytes = b"") -> bytes:
    return b"GET /%d HTTP/1.1\r\nHost: a.test\r\n%s\r\n" % (i, extra)


def test_a_remembered_request_reads_as_the_first_time() -> None:
    buf = b"POST /f?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\nCookie: a=b\r\nContent-Length: 3\r\n\r\nabc"
    memo = heads.REQUEST_MEMO
    first = outcome_request(buf, True)
    assert buf[:buf.index(b"\r\n\r\n") + 2] in memo.entries and memo.misses == 1 and memo.hits == 0
    again = outcome_request(buf, True)
    assert memo.hits == 1
    assert first == again == outcome_request(buf, False)
    h = parse_request_head(buf)  # from the memo: the Connection value's span too
    assert h is not None and h.conn_span is not None and buf[h.conn_span[0]:h.conn_span[1]] == b" close"
    assert parse_request_head(buf) is h  # the head itself is remembered (never changed once parsed)
    assert h.headers == parse_request_head(buf, fast=False).headers  # its fields, split once for everyone


def test_a_remembered_head_followed_by_another_is_still_found_at_its_own_end() -> None:
    """A buffer that ends with CRLFCRLF is looked up whole first (the usual single head, no search); two
    pipelined heads, or a head and a body ending in CRLFCRLF, must still end at the first head."""
    one = request(1)
    assert parse_request_head(one) is not None and parse_request_head(one) is not None  # remembered, then found
    for buf in (one + one, one + request(2), one + b"\r\n\r\n"):
        h = parse_request_head(buf)
        assert h is not None and h.raw_len == len(one) and h.target == "/1"
    post = b"POST /p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\n"
    parse_request_head(post)
    h = parse_request_head(post + b"\r\n\r\n")  # a body of CRLFCRLF
    assert h is not None and h.raw_len == len(post) and h.content_length == 4
    h = parse_request_head(bytearray(one))  # a bytearray reads as the same bytes
    assert h is not None and h.raw_len == len(one)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(REQUEST_LINES), st.lists(st.sampled_from(FIELDS), max_size=6), st.binary(max_size=8))
def test_every_head_reads_the_same_from_the_memo(start: bytes, fields: list[bytes], rest: bytes) -> None:
    heads.REQUEST_MEMO.reset()
    buf = head(start, fields) + rest
    first = outcome_request(buf, True)
    hits = heads.REQUEST_MEMO.hits
    again = outcome_request(buf, True)  # found in the memo (as common, or as "not common": the full parser)
    assert heads.REQUEST_MEMO.hits == hits + 1
    assert first == again == outcome_request(buf, False)


def test_an_invalid_head_is_refused_every_time() -> None:
    buf = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Ctl: a\x01b\r\n\r\n"
    for _ in range(3):
        with pytest.raises(HttpError) as e:
            parse_request_head(buf)
        assert e.value.status == 400
    assert heads.REQUEST_MEMO.hits == 2  # remembered as "not common", so the full parser refused it each time


def test_memo_stops_where_heads_do_not_come_again_and_tries_again_later() -> None:
    memo = heads.REQUEST_MEMO
    for i in range(heads.MEMO_WINDOW - 1):
        parse_request_head(request(i))
    assert memo.on and len(memo.entries) == heads.MEMO_WINDOW - 1
    parse_request_head(request(heads.MEMO_WINDOW))  # a whole window of new heads, none found
    assert not memo.on and not memo.entries
    for i in range(heads.MEMO_PAUSE - 1):
        h = parse_request_head(request(i))  # read by the fast path without the memo
        assert h is not None and h.target == f"/{i}"
    assert not memo.on and not memo.entries
    parse_request_head(request(0))
    assert memo.on and len(memo.entries) == 1  # the pause is over with this head: one more window
    parse_request_head(request(0))
    assert memo.hits == 1


def test_memo_stays_on_where_heads_come_again() -> None:
    memo = heads.REQUEST_MEMO
    for i in range(4 * heads.MEMO_WINDOW):  # every head comes twice: half of the lookups find theirs
        parse_request_head(request(i % 300))
        parse_request_head(request(i % 300))
    assert memo.on and memo.hits >= memo.misses


def test_memo_is_bounded() -> None:
    memo = heads.REQUEST_MEMO
    for i in range(heads.MEMO_ENTRIES + 10):
        for _ in range(3):  # found often enough to stay on
            parse_request_head(request(i))
        assert len(memo.entries) <= heads.MEMO_ENTRIES
    assert memo.on and len(memo.entries) == 10  # emptied when full, then refilled
    long = request(0, b"X-Long: " + b"a" * heads.MEMO_HEAD_MAX + b"\r\n")
    for _ in range(2):
        h = parse_request_head(long)
        assert h is not None and h.get("x-long") == "a" * heads.MEMO_HEAD_MAX
    assert len(memo.entries) == 10, "a head longer than MEMO_HEAD_MAX is not kept"
