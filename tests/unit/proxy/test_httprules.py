"""set-header on a fast-parsed head: the appended line and the extended head are exactly what editing the bytes
and parsing them again gives (httprules.py's rules), and the cases the shortcut must leave to the full path."""

from __future__ import annotations

import pytest

from balancier.http1 import HttpError, parse_request_head
from balancier.http1.heads import MAX_HEADERS
from balancier.proxy import httprules
from balancier.proxy.config.model import HttpRule

LIMIT = 16384


def rule(name: str, value: str, cond: str = "always") -> HttpRule:
    return HttpRule(action="set-header", name=name, value=value, cond=cond)  # type: ignore[arg-type]


def view(head):  # every field of the head as the stream reads it (headers split whatever the path)
    return (head.method, head.target, head.version, head.headers, head.framing, head.content_length,
            head.keep_alive, head.expect_continue, head.connection_tokens, head.raw_len, head.normalised,
            head.has_cookie, head.plain)


def full_path(rules, raw: bytes):
    """The reference: a head from the full parser (no fast path) takes the edit-and-parse-again path."""
    head = parse_request_head(raw, LIMIT, fast=False)
    assert head is not None
    return httprules.evaluate(rules, True, head, raw, True, LIMIT)


BASE = b"GET /a?b=c HTTP/1.1\r\nHost: portal.example\r\nUser-Agent: t\r\n"
HEADS = [
    BASE + b"\r\n",
    BASE + b"Cookie: JSESSIONID=s1~abc\r\n\r\n",
    BASE + b"Connection: keep-alive\r\n\r\n",
    BASE + b"Connection: close\r\n\r\n",
    BASE + b"Content-Length: 5\r\n\r\nhello",
    BASE + b"\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",  # pipelined bytes after the head stay after it
    BASE + b"X-Forwarded-Proto: http\r\n\r\n",  # present: removed, then set (full path)
    BASE + b"x-forwarded-proto:http\r\nX-Other: 1\r\n\r\n",
    BASE + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n",
]
RULES = [
    (rule("X-Forwarded-Proto", "https"),),
    (rule("X-Forwarded-Proto", "https"), rule("X-Site", "portal a")),
    (rule("X-A", "1"), rule("x-a", "2")),  # the same field twice: the last one wins
    (rule("Host", "other.example"),),  # derived by the parser: full path
    (rule("Connection", "close"),),
    (rule("Cookie", "a=b"),),
    (rule("X-Empty", ""),),
    (rule("X-Tab", "a\tb"),),
]


@pytest.mark.parametrize("raw", HEADS)
@pytest.mark.parametrize("rules", RULES)
def test_fast_edit_equals_edit_and_parse(raw: bytes, rules) -> None:
    head = parse_request_head(raw, LIMIT)
    assert head is not None and head._text, "the fast path takes these heads"
    got = httprules.evaluate(rules, True, head, raw, True, LIMIT)
    want = full_path(rules, raw)
    assert got is not None and want is not None
    assert got.raw == want.raw
    assert view(got.head) == view(want.head)
    again = parse_request_head(got.raw, LIMIT + httprules.MAX_REWRITE)
    assert view(got.head) == view(again)


def test_absent_plain_field_takes_the_shortcut_and_keeps_headers_in_sync() -> None:
    raw = HEADS[0]
    head = parse_request_head(raw, LIMIT)
    assert head is not None
    assert len(head.headers) == 2  # split before the edit: the extended head carries the new field too
    out = httprules.evaluate((rule("X-Forwarded-Proto", "https"),), True, head, raw, True, LIMIT)
    assert out is not None and out.head is not None
    assert out.raw == BASE + b"X-Forwarded-Proto: https\r\n\r\n"
    assert out.head.headers[-1] == ("X-Forwarded-Proto", "https")
    assert out.head.get("x-forwarded-proto") == "https"
    assert out.head.raw_len == len(out.raw)


def test_values_that_do_not_parse_back_to_themselves_are_left_to_the_full_path() -> None:
    assert httprules._appendable(rule("X-A", " padded ")) is None
    assert httprules._appendable(rule("X-A", "a b")) is not None
    assert httprules._appendable(rule("Transfer-Encoding", "chunked")) is None
    assert httprules._appendable(rule("X-A", "é")) is None


def test_field_count_limit_gives_the_parsers_verdict() -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"  # exactly MAX_HEADERS fields
    head = parse_request_head(raw, LIMIT)
    assert head is not None
    with pytest.raises(HttpError) as fast_err:
        httprules.evaluate((rule("X-New", "1"),), True, head, raw, True, LIMIT)
    with pytest.raises(HttpError) as full_err:
        full_path((rule("X-New", "1"),), raw)
    assert fast_err.value.status == full_err.value.status


def test_condition_not_met_changes_nothing() -> None:
    head = parse_request_head(HEADS[0], LIMIT)
    assert httprules.evaluate((rule("X-Forwarded-Proto", "https", "ssl"),), False, head, HEADS[0], True,
                              LIMIT) is None
