"""Body framing: boundaries, strict chunked grammar, any split of the input gives the same answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancier.http1 import BodyFramer, Framing, HttpError


def feed_all(framer: BodyFramer, data: bytes) -> int:
    return framer.feed(data)


def feed_bytewise(framer: BodyFramer, data: bytes) -> int:
    """Feeds one byte at a time until done; returns how many bytes were taken."""
    taken = 0
    for i in range(len(data)):
        if framer.done:
            break
        taken += framer.feed(data[i:i + 1])
    return taken


# --- Content-Length, none, until close ------------------------------------------------------------------------

def test_length_body_then_next_message() -> None:
    f = BodyFramer(Framing.LENGTH, 5)
    assert f.feed(b"hel") == 3 and not f.done and f.remaining == 2
    assert f.feed(b"loGET / HTTP/1.1") == 2 and f.done
    assert f.feed(b"more") == 0


def test_length_zero_and_none_are_done_at_once() -> None:
    assert BodyFramer(Framing.LENGTH, 0).done
    f = BodyFramer(Framing.NONE)
    assert f.done and f.feed(b"GET /") == 0


def test_length_eof_before_end_is_400_or_502() -> None:
    f = BodyFramer(Framing.LENGTH, 10)
    f.feed(b"abc")
    with pytest.raises(HttpError) as exc:
        f.feed_eof()
    assert exc.value.status == 400
    f = BodyFramer(Framing.LENGTH, 10, is_response=True)
    with pytest.raises(HttpError) as exc:
        f.feed_eof()
    assert exc.value.status == 502


def test_until_close_takes_everything_until_eof() -> None:
    f = BodyFramer(Framing.UNTIL_CLOSE, is_response=True)
    assert f.feed(b"x" * 100000) == 100000 and not f.done
    f.feed_eof()
    assert f.done


def test_memoryview_input() -> None:
    f = BodyFramer(Framing.LENGTH, 4)
    assert f.feed(memoryview(b"abcdef")) == 4 and f.done
    body = b"3\r\nabc\r\n0\r\n\r\nNEXT"
    f = BodyFramer(Framing.CHUNKED)
    assert f.feed(memoryview(body)) == len(body) - 4 and f.done


# --- chunked: valid bodies ------------------------------------------------------------------------------------

VALID_CHUNKED: list[tuple[str, bytes]] = [
    ("one chunk", b"5\r\nhello\r\n0\r\n\r\n"),
    ("empty body", b"0\r\n\r\n"),
    ("upper-case hex", b"A\r\n0123456789\r\n0\r\n\r\n"),
    ("lower-case hex", b"a\r\n0123456789\r\n0\r\n\r\n"),
    ("leading zeros, 16 digits", b"0000000000000003\r\nabc\r\n0000000000000000\r\n\r\n"),
    ("extension", b"3;name\r\nabc\r\n0\r\n\r\n"),
    ("extension with value", b"3;name=value;other=1\r\nabc\r\n0;last=yes\r\n\r\n"),
    ("extension with BWS", b"3 ; name = value\r\nabc\r\n0\r\n\r\n"),
    ("quoted extension", b'3;q="a \\" b;c"\r\nabc\r\n0\r\n\r\n'),
    ("trailers", b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Checksum: 1234\r\n\r\n"),
    ("trailer with empty value", b"3\r\nabc\r\n0\r\nX-Empty:\r\n\r\n"),
    ("data containing CRLF", b"4\r\n\r\n\r\n\r\n0\r\n\r\n"),
    ("several chunks", b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n"),
    ("binary data", b"4\r\n\x00\xff\r\n\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in VALID_CHUNKED], ids=[c[0] for c in VALID_CHUNKED])
def test_valid_chunked_at_once_and_bytewise(body: bytes) -> None:
    nxt = b"GET /next HTTP/1.1\r\n\r\n"
    f = BodyFramer(Framing.CHUNKED)
    assert f.feed(body + nxt) == len(body) and f.done
    f = BodyFramer(Framing.CHUNKED)
    assert feed_bytewise(f, body + nxt) == len(body) and f.done


def test_chunked_not_done_before_last_byte() -> None:
    body = b"3\r\nabc\r\n0\r\nX: 1\r\n\r\n"
    for cut in range(len(body)):
        f = BodyFramer(Framing.CHUNKED)
        assert f.feed(body[:cut]) == cut
        assert not f.done, cut


def test_chunked_eof_before_end_is_an_error() -> None:
    f = BodyFramer(Framing.CHUNKED, is_response=True)
    f.feed(b"5\r\nab")
    with pytest.raises(HttpError) as exc:
        f.feed_eof()
    assert exc.value.status == 502


def test_large_chunk_counts_without_copying() -> None:
    f = BodyFramer(Framing.CHUNKED)
    assert f.feed(b"FFFFFFFF\r\n") == 10
    assert f.remaining == 0xFFFFFFFF
    assert f.feed(b"x" * 65536) == 65536
    assert f.remaining == 0xFFFFFFFF - 65536 and not f.done


def test_sixteen_hex_digits_is_the_maximum_size() -> None:
    f = BodyFramer(Framing.CHUNKED)
    f.feed(b"FFFFFFFFFFFFFFFF\r\n")
    assert f.remaining == 2**64 - 1


# --- chunked: invalid bodies ----------------------------------------------------------------------------------

# (id, body, offset of the first byte that makes it invalid)
INVALID_CHUNKED: list[tuple[str, bytes, int]] = [
    ("negative size", b"-5\r\nhello\r\n0\r\n\r\n", 0),
    ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n", 0),
    ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", 1),
    ("leading space", b" 5\r\nhello\r\n0\r\n\r\n", 0),
    ("space before CRLF", b"5 \r\nhello\r\n0\r\n\r\n", 2),
    ("tab before CRLF", b"5\t\r\nhello\r\n0\r\n\r\n", 2),
    ("not hex", b"g\r\n", 0),
    ("empty size", b"\r\nhello\r\n", 0),
    ("17 hex digits", b"00000000000000005\r\nhello\r\n0\r\n\r\n", 16),
    ("size overflow", b"10000000000000000\r\n", 16),
    ("underscore in size", b"1_0\r\n", 1),
    ("bare LF after size", b"5\nhello\r\n0\r\n\r\n", 1),
    ("bare CR after size", b"5\rhello\r\n", 2),
    ("empty extension", b"5;\r\nhello\r\n0\r\n\r\n", 2),
    ("extension without name", b"5;=x\r\nhello\r\n0\r\n\r\n", 2),
    ("extension value missing", b"5;a=\r\nhello\r\n0\r\n\r\n", 4),
    ("extension bad char", b"5;a@b\r\nhello\r\n", 3),
    ("unterminated quoted extension", b'5;a="x\r\nhello\r\n', 6),
    ("space after extension", b"5;a=b \r\nhello\r\n", 6),
    ("NUL in size line", b"5\x00\r\nhello\r\n", 1),
    ("data longer than size", b"5\r\nhello!\r\n0\r\n\r\n", 8),
    ("data shorter than size", b"5\r\nhell\r\n0\r\n\r\n", 8),
    ("bare LF after data", b"5\r\nhello\n0\r\n\r\n", 8),
    ("trailer obs-fold", b"0\r\nX: a\r\n b\r\n\r\n", 9),
    ("trailer space before colon", b"0\r\nX : a\r\n\r\n", 4),
    ("trailer without colon", b"0\r\nXa\r\n\r\n", 5),
    ("trailer NUL", b"0\r\nX: \x00\r\n\r\n", 6),
    ("trailer bare LF", b"0\r\nX: a\n\r\n", 7),
    ("bare LF ends trailers", b"0\r\n\n", 3),
]


@pytest.mark.parametrize(("body", "bad_at"), [c[1:] for c in INVALID_CHUNKED], ids=[c[0] for c in INVALID_CHUNKED])
def test_invalid_chunked_at_once(body: bytes, bad_at: int) -> None:
    f = BodyFramer(Framing.CHUNKED)
    with pytest.raises(HttpError) as exc:
        f.feed(body)
    assert exc.value.status == 400
    f = BodyFramer(Framing.CHUNKED, is_response=True)
    with pytest.raises(HttpError) as exc:
        f.feed(body)
    assert exc.value.status == 502


@pytest.mark.parametrize(("body", "bad_at"), [c[1:] for c in INVALID_CHUNKED], ids=[c[0] for c in INVALID_CHUNKED])
def test_invalid_chunked_bytewise_stops_at_the_first_bad_byte(body: bytes, bad_at: int) -> None:
    """Fed one byte at a time, every byte before the first invalid one is taken and that one raises:
    nothing invalid is ever reported as consumed (and so never forwarded)."""
    f = BodyFramer(Framing.CHUNKED)
    taken = 0
    with pytest.raises(HttpError):
        for i in range(len(body)):
            taken += f.feed(body[i:i + 1])
    assert taken == bad_at


def test_size_line_length_is_bounded() -> None:
    f = BodyFramer(Framing.CHUNKED)
    with pytest.raises(HttpError):
        f.feed(b"5;" + b"a" * 5000)


def test_trailer_section_is_bounded() -> None:
    f = BodyFramer(Framing.CHUNKED, trailer_limit=64)
    with pytest.raises(HttpError):
        f.feed(b"0\r\n" + b"X-A: " + b"v" * 100 + b"\r\n\r\n")
    f = BodyFramer(Framing.CHUNKED, trailer_limit=64)
    with pytest.raises(HttpError):
        feed_bytewise(f, b"0\r\n" + b"X-A: v\r\n" * 20 + b"\r\n")
    trailer = b"X-A: " + b"v" * 57 + b"\r\n"  # exactly 64 bytes
    f = BodyFramer(Framing.CHUNKED, trailer_limit=64)
    body = b"0\r\n" + trailer + b"\r\n"
    assert f.feed(body) == len(body) and f.done


# --- any split gives the same result as one feed ---------------------------------------------------------------

chunk_ext = st.sampled_from([b"", b";a", b";a=b", b' ; x = "q\\"v"', b";k=v;k2"])
trailers = st.lists(st.sampled_from([b"X-A: 1", b"Expires: never", b"X-Empty:"]), max_size=3)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6)):
        parts.append(b"%x" % len(data) + draw(chunk_ext) + b"\r\n" + data + b"\r\n")
    parts.append(b"0" + draw(chunk_ext) + b"\r\n")
    parts.extend(t + b"\r\n" for t in draw(trailers))
    parts.append(b"\r\n")
    return b"".join(parts)


def split_feed(body: bytes, cuts: list[int], is_response: bool = False) -> tuple[int, bool]:
    f = BodyFramer(Framing.CHUNKED, is_response=is_response)
    taken = 0
    prev = 0
    for cut in sorted(set(cuts)) + [len(body)]:
        if f.done:
            break
        taken += f.feed(memoryview(body)[prev:cut] if cut % 2 else body[prev:cut])
        prev = cut
    return taken, f.done


@settings(max_examples=300, deadline=None)
@given(body=chunked_bodies(), tail=st.binary(max_size=20), data=st.data())
def test_random_splits_of_a_valid_body_match_one_feed(body: bytes, tail: bytes, data: st.DataObject) -> None:
    whole = body + tail
    f = BodyFramer(Framing.CHUNKED)
    assert f.feed(whole) == len(body) and f.done
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=12))
    assert split_feed(whole, cuts) == (len(body), True)


@settings(max_examples=300, deadline=None)
@given(body=chunked_bodies(), pos=st.integers(0, 10**6), byte=st.integers(0, 255), data=st.data())
def test_random_splits_of_a_mutated_body_match_one_feed(body: bytes, pos: int, byte: int,
                                                          data: st.DataObject) -> None:
    mutated = bytearray(body)
    mutated[pos % len(body)] = byte
    whole = bytes(mutated)

    def outcome(cuts: list[int]) -> object:
        try:
            return split_feed(whole, cuts)
        except HttpError as e:
            return e.status

    once = outcome([])
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=12))
    assert outcome(cuts) == once
