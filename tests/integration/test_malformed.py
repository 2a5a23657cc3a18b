"""Malformed and hostile HTTP/1.1 requests through the proxy: status, no smuggling, still serving.

Each case sends raw bytes on a fresh client connection to a proxy (`listen` with one real backend,
keep-alive both sides and `http-reuse always`, so a request left over on a server connection would reach the
next client's backend exchange). For each case the test checks:
1. the status of the first response (None = the proxy closed without answering), per implementation;
2. the backend received exactly the requests the table lists (targets), never one whose target contains
   "smuggled", and nothing it could not parse;
3. after an error status the proxy closed the connection;
4. a fresh connection still gets 200.

The `haproxy` column is what Debian's HAProxy 2.6.12 answered when this table was written (measured with
this very test). Where HAProxy is lax per RFC 9112, the case carries a `note` and a stricter expectation for
balancier (`balancier=` / `balancier_forwards=`). The suite runs against both implementations; balancier
is the one that must pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.backends import Backend, free_port
from support.http import ConnectionClosed, RawConnection, build_request, get
from support.proxy import IMPLS, ProxyProcess, start_proxy

H = b"Host: test\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
STATUS_TIMEOUT = 2.5  # the proxy's timeouts below are 1-2 s: every case ends well within this


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    haproxy: int | None  # observed status from HAProxy 2.6.12 (None: closed without a response)
    haproxy_forwards: tuple[str, ...] = ()  # targets the backend received through HAProxy
    balancier: tuple[int, ...] = ()  # accepted statuses for balancier; () = exactly HAProxy's
    note: str = ""

    def statuses(self, impl: str) -> tuple[int | None, ...]:
        if impl == "balancier" and self.balancier:
            return self.balancier
        return (self.haproxy,)

    def forwards(self, impl: str) -> tuple[str, ...]:
        if impl == "balancier" and self.balancier and 200 not in self.balancier:
            return ()  # a stricter rejection forwards nothing
        return self.haproxy_forwards


def post(headers: bytes, body: bytes = b"", target: bytes = b"/") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\n" + H + headers + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"
SMUGGLE_AFTER_ZERO = b"0\r\n\r\n" + SMUGGLED  # CL.TE: a TE reader stops at the 0 chunk
SMUGGLE_IN_CHUNK = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"  # TE.CL: a CL:4 reader stops early

# Notes for cases where balancier is stricter than HAProxy 2.6 (DESIGN principle 5, RFC 9112).
CLTE = ("HAProxy follows Transfer-Encoding and closes after the response (allowed by RFC 9112 §6.1); "
        "balancier rejects Content-Length together with Transfer-Encoding outright")
TE10 = ("RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing; HAProxy processes it "
        "and closes, balancier rejects it")
BARE_LF = "HAProxy accepts bare LF as a line end (RFC 9112 §2.2 MAY); balancier rejects it"
OBS_FOLD = "HAProxy unfolds obs-fold into spaces (RFC 9112 §5.2 MAY); balancier rejects it"
NUL = "HAProxy forwards a NUL inside a field value: RFC 9110 §5.5 says reject or replace with SP"
VERSION = "HAProxy serves HTTP/2.0 in an HTTP/1 request line as 1.1; balancier answers 400 (or 505)"
SPACES = "HAProxy parses on whitespace runs (RFC 9112 §3 MAY); balancier requires single SP"
NO_HOST = "RFC 9112 §3.2: an HTTP/1.1 request without Host MUST get 400; HAProxy forwards it"
ASTERISK = "RFC 9112 §3.2.4: asterisk-form is only for OPTIONS; HAProxy forwards `GET *`"
SIZE = "HAProxy answers 400 for an oversized head; balancier may answer the more precise 431/414"
CODING = "an unknown transfer coding may be answered 501 (RFC 9112 §6.1) instead of 400"
EMPTY_HOST = "RFC 9110 §4.2.1: an http URI with an empty host MUST be rejected; HAProxy forwards it"
USERINFO = "RFC 9110 §4.2.4: userinfo in an http URI SHOULD be treated as an error; HAProxy forwards it"
BAD_HOST = "RFC 9112 §3.2: a Host field with an invalid value MUST get 400; HAProxy forwards it"

CASES: list[Case] = [
    # --- positive controls: these must pass through untouched -----------------------------------------
    Case("control_get", b"GET /echo?ok HTTP/1.1\r\n" + H + b"\r\n", 200, ("/echo?ok",)),
    Case("control_pipelined_two", b"GET /echo?a HTTP/1.1\r\n" + H + b"\r\nGET /echo?b HTTP/1.1\r\n" + H
         + b"\r\n", 200, ("/echo?a", "/echo?b")),
    Case("control_chunked_post", post(CHUNKED, b"5\r\nhello\r\n0\r\n\r\n", b"/echo?c"), 200, ("/echo?c",)),
    Case("cl_duplicate_identical", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello", b"/echo?d"),
         200, ("/echo?d",)),
    Case("cl_leading_zeros", post(b"Content-Length: 005\r\n", b"hello", b"/echo?z"), 200, ("/echo?z",)),
    Case("options_asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 200, ("*",)),
    Case("http10_no_host", b"GET /echo?old HTTP/1.0\r\n\r\n", 200, ("/echo?old",)),
    # --- CL.TE / TE.CL and Transfer-Encoding obfuscations --------------------------------------------
    Case("cl_te_smuggle", post(b"Content-Length: %d\r\n" % len(SMUGGLE_AFTER_ZERO) + CHUNKED,
                               SMUGGLE_AFTER_ZERO), 200, ("/",), balancier=(400,), note=CLTE),
    Case("te_cl_smuggle", post(CHUNKED + b"Content-Length: 4\r\n", SMUGGLE_IN_CHUNK), 200, ("/",),
         balancier=(400,), note=CLTE),
    Case("te_space_before_colon", post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
         400),
    Case("te_xchunked", post(b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400,
         balancier=(400, 501), note=CODING),
    Case("te_chunked_twice", post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400),
    Case("te_two_headers_last_not_chunked",
         post(CHUNKED + b"Transfer-Encoding: identity\r\n", b"0\r\n\r\n"), 400),
    Case("te_quoted", post(b'Transfer-Encoding: "chunked"\r\nContent-Length: 5\r\n', b"0\r\n\r\n"), 400,
         balancier=(400, 501), note=CODING),
    Case("te_gzip_not_final_chunked", post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"), 400,
         balancier=(400, 501), note=CODING),
    Case("te_chunked_then_gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400),
    Case("te_vertical_tab", post(b"Transfer-Encoding:\x0bchunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
         400),
    Case("te_obs_fold", post(b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
         200, ("/",), balancier=(400,), note=OBS_FOLD),
    Case("te_in_http10", b"POST / HTTP/1.0\r\n" + H + CHUNKED + b"Content-Length: %d\r\n\r\n"
         % len(SMUGGLE_AFTER_ZERO) + SMUGGLE_AFTER_ZERO, 200, ("/",), balancier=(400,), note=TE10),
    # --- Content-Length grammar ---------------------------------------------------------------------
    Case("cl_duplicate_differing", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
    Case("cl_list_differing", post(b"Content-Length: 5, 6\r\n", b"hello!"), 400),
    Case("cl_plus_sign", post(b"Content-Length: +5\r\n", b"hello"), 400),
    Case("cl_minus_sign", post(b"Content-Length: -5\r\n", b"hello"), 400),
    Case("cl_space_inside", post(b"Content-Length: 1 0\r\n", b"0123456789"), 400),
    Case("cl_hex", post(b"Content-Length: 0x5\r\n", b"hello"), 400),
    Case("cl_trailing_garbage", post(b"Content-Length: 5abc\r\n", b"hello"), 400),
    Case("cl_empty", post(b"Content-Length: \r\n", b"hello"), 400),
    Case("cl_huge", post(b"Content-Length: 99999999999999999999999\r\n", b"hello"), 400),
    Case("cl_overflow_wraps_to_5", post(b"Content-Length: 18446744073709551621\r\n", b"hello" + SMUGGLED),
         400),
    # --- chunked body framing ------------------------------------------------------------------------
    Case("control_chunk_extension", post(CHUNKED, b"5;name=value\r\nhello\r\n0\r\n\r\n", b"/echo?ext"), 200,
         ("/echo?ext",)),
    Case("chunk_trailer_invalid", post(CHUNKED, b"5\r\nhello\r\n0\r\nnot a trailer\r\n\r\n"), 400),
    Case("te_chunked_in_two_headers", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), 400),
    Case("chunk_size_not_hex", post(CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    Case("chunk_size_overflow", post(CHUNKED, b"1ffffffffffffffff5\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400),
    Case("chunk_size_negative", post(CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    Case("chunk_size_0x_prefix", post(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    Case("chunk_data_longer_than_size", post(CHUNKED, b"3\r\nhello\r\n0\r\n\r\n"), 400),
    Case("chunk_missing_final_then_pipelined", post(CHUNKED, b"5\r\nhello\r\n" + SMUGGLED), 400),
    Case("chunk_bare_lf_lines", post(CHUNKED, b"5\nhello\n0\n\n"), 200, ("/",), balancier=(400,),
         note=BARE_LF),
    # --- head syntax ---------------------------------------------------------------------------------
    Case("bare_lf_head", b"GET /echo?lf HTTP/1.1\nHost: test\n\n", 200, ("/echo?lf",), balancier=(400,),
         note=BARE_LF),
    Case("bare_cr_in_head", b"GET / HTTP/1.1\rHost: test\r\n\r\n", 400),
    Case("obs_fold_continuation", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 200, ("/",),
         balancier=(400,), note=OBS_FOLD),
    Case("first_header_indented", b"GET / HTTP/1.1\r\n Host: test\r\n\r\n", 400),
    Case("space_before_colon", b"GET / HTTP/1.1\r\nHost : test\r\n\r\n", 400),
    Case("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 200, ("/",), balancier=(400,),
         note=NUL),
    Case("cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    Case("space_in_name", b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n", 400),
    Case("separator_in_name", b"GET / HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n", 400),
    Case("empty_name", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", 400),
    Case("line_without_colon", b"GET / HTTP/1.1\r\n" + H + b"this is not a header\r\n\r\n", 400),
    # --- request line --------------------------------------------------------------------------------
    Case("bad_method_chars", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("lowercase_protocol", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    Case("version_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 200, ("/",), balancier=(400, 505), note=VERSION),
    Case("version_garbage", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    Case("http09_simple_request", b"GET /\r\n\r\n", 400),
    Case("double_space_request_line", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 200, ("/",), balancier=(400,),
         note=SPACES),
    Case("trailing_space_request_line", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    Case("control_leading_empty_line", b"\r\nGET /echo?lead HTTP/1.1\r\n" + H + b"\r\n", 200, ("/echo?lead",)),
    Case("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("missing_target", b"GET HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("nul_in_target", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("high_byte_in_target", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400),
    # --- Host and target forms ------------------------------------------------------------------------
    Case("missing_host_http11", b"GET / HTTP/1.1\r\n\r\n", 200, ("/",), balancier=(400,), note=NO_HOST),
    Case("double_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    Case("absolute_form_host_mismatch", b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n", 400),
    Case("absolute_form_control", b"GET http://test/echo?abs HTTP/1.1\r\n" + H + b"\r\n", 200,
         ("http://test/echo?abs",)),
    Case("absolute_form_empty_authority", b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n", 404, ("http:///x",),
         balancier=(400,), note=EMPTY_HOST),
    Case("absolute_form_userinfo", b"GET http://user@test/x HTTP/1.1\r\n" + H + b"\r\n", 404,
         ("http://user@test/x",), balancier=(400,), note=USERINFO),
    Case("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 200, ("/",), balancier=(400,),
         note=BAD_HOST),
    Case("host_with_slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 200, ("/",), balancier=(400,),
         note=BAD_HOST),
    Case("authority_form_with_get", b"GET test:80 HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("connect_origin_form", b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n", 400),
    Case("asterisk_with_get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 404, ("*",), balancier=(400,),
         note=ASTERISK),
    # --- sizes ---------------------------------------------------------------------------------------
    Case("oversized_head_17k", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n", 400,
         balancier=(400, 431), note=SIZE),
    Case("oversized_request_line", b"GET /" + b"a" * (17 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n", 400,
         balancier=(400, 414), note=SIZE),
    Case("too_many_headers", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
         + b"\r\n", 400, balancier=(400, 431), note=SIZE),
]


def _cfg(port: int, backend: Backend) -> str:
    return f"""
defaults
    mode http
    timeout connect 2s
    timeout client 2s
    timeout server 3s
    timeout http-request 1s

listen malformed
    bind 127.0.0.1:{port}
    http-reuse always
    server app {backend.address}
"""


@pytest.fixture(scope="module")
def malformed_backend() -> Iterator[Backend]:
    b = Backend("app")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module", params=IMPLS)
def proxy(request: pytest.FixtureRequest, malformed_backend: Backend) -> Iterator[tuple[str, int]]:
    port = free_port()
    p: ProxyProcess = start_proxy(_cfg(port, malformed_backend), request.param)
    try:
        yield request.param, port
    finally:
        p.stop()


@dataclass
class Observation:
    status: int | None
    closed_after: bool
    forwarded: list[str]
    backend_errors: int


def observe(port: int, backend: Backend, raw: bytes) -> Observation:
    """Send `raw` on a fresh connection; see what the client and the backend got."""
    backend.clear()
    status: int | None = None
    closed = True
    with RawConnection("127.0.0.1", port, timeout=STATUS_TIMEOUT) as c:
        try:
            c.send(raw)
            status = c.read_response(timeout=STATUS_TIMEOUT).status
            closed = c.is_closed(wait=0.3 if status == 200 else 1.5)
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
            status, closed = None, True
        except TimeoutError:
            status, closed = None, False
    # Give the backend side a moment to record anything that was forwarded late.
    fresh = get("127.0.0.1", port, "/health?fresh", timeout=5)
    assert fresh.status == 200, f"fresh connection after the case got {fresh.status}"
    targets = [r.target for r in backend.records(include_checks=True) if r.target != "/health?fresh"]
    return Observation(status, closed, targets, len(backend.errors()))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed(proxy: tuple[str, int], malformed_backend: Backend, case: Case) -> None:
    impl, port = proxy
    obs = observe(port, malformed_backend, case.raw)
    assert obs.status in case.statuses(impl), f"{impl} answered {obs.status}; {case.note}"
    assert not any("smuggled" in t for t in obs.forwarded), f"smuggled request reached the backend: {obs.forwarded}"
    assert obs.forwarded == list(case.forwards(impl)), f"backend received {obs.forwarded}"
    assert obs.backend_errors == 0, "the proxy forwarded bytes the backend could not parse"
    if obs.status is not None and obs.status >= 400:
        assert obs.closed_after, f"{impl} kept the connection open after {obs.status}"


def test_case_count() -> None:
    """The issue asks for at least 40 hostile requests (controls not counted)."""
    hostile = [c for c in CASES if 200 not in c.statuses("balancier")]
    assert len(hostile) >= 40, len(hostile)


def test_connection_reused_after_good_request(proxy: tuple[str, int], malformed_backend: Backend) -> None:
    """Keep-alive control: three requests on one client connection all get 200 and reach the backend."""
    _, port = proxy
    malformed_backend.clear()
    with RawConnection("127.0.0.1", port) as c:
        for i in range(3):
            r = c.request(build_request("GET", f"/echo?ka{i}"))
            assert r.status == 200
    assert [r.target for r in malformed_backend.records()] == ["/echo?ka0", "/echo?ka1", "/echo?ka2"]
