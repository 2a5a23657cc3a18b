"""The pure parts of TLS and of the ssl_fc rules: PEM splitting, SNI matching and selection, http-request rules."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from balancier.http1 import parse_request_head
from balancier.proxy import httprules
from balancier.proxy.config.model import HttpRule
from balancier.proxy.tls import (
    BindSettings,
    DirectSSLObject,
    ServerSettings,
    host_without_port,
    load_bind,
    name_matches,
    server_context,
    sni_for,
    split_pem,
)


@pytest.mark.parametrize("pattern,host,ok", [
    ("a.test", "a.test", True),
    ("a.test", "A.TEST", True),
    ("a.test", "a.test.", True),
    ("a.test", "b.test", False),
    ("*.w.test", "x.w.test", True),
    ("*.w.test", "X.W.Test", True),
    ("*.w.test", "w.test", False),  # the wildcard needs one label
    ("*.w.test", "y.x.w.test", False),  # ... and covers exactly one
    ("*.w.test", ".w.test", False),
])
def test_name_matches(pattern: str, host: str, ok: bool) -> None:
    assert name_matches(pattern, host) is ok


def test_split_pem_either_order_and_chain() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("a.test")
    key = leaf.private_key_pem.bytes()
    chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    for data in (key + chain, chain + key, chain[:0] + chain + b"junk\n" + key):
        parts = split_pem(data)
        assert parts.key is not None and parts.key.startswith(b"-----BEGIN")
        assert len(parts.certs) == len(leaf.cert_chain_pems)
        assert parts.certs[0] == leaf.cert_chain_pems[0].bytes().strip()
    assert split_pem(chain).key is None
    assert split_pem(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n-----END ENCRYPTED PRIVATE KEY-----\n").encrypted_key


def _write(ca: trustme.CA, tmp: Path, name: str, *hosts: str) -> str:
    path = tmp / name
    ca.issue_cert(*hosts).private_key_and_cert_chain_pem.write_to_path(str(path))
    return str(path)


def test_cert_store_selection(tmp_path: Path) -> None:
    ca = trustme.CA()
    first = _write(ca, tmp_path, "1.pem", "a.test", "www.a.test")
    wild = _write(ca, tmp_path, "2.pem", "*.w.test")
    exact = _write(ca, tmp_path, "3.pem", "x.w.test")
    tls = load_bind(BindSettings(crts=(first, wild, exact)))
    store = tls.store
    assert store.default.path == first
    assert store.lookup("www.a.test").path == first  # type: ignore[union-attr]
    assert store.lookup("x.w.test").path == exact  # type: ignore[union-attr]  # exact beats the wildcard
    assert store.lookup("y.w.test").path == wild  # type: ignore[union-attr]
    assert store.lookup("a.b.w.test") is None
    assert store.lookup("other.test") is None
    assert store.lookup(None) is None
    # default-crt takes the default role even when named last
    tls2 = load_bind(BindSettings(crts=(first, wild), default_crt=wild))
    assert tls2.store.default.path == wild
    assert [p for p, _ in tls2.names()] == [wild, first]


def test_sni_for_and_host() -> None:
    assert host_without_port("lb.test:8443") == "lb.test"
    assert host_without_port("lb.test") == "lb.test"
    assert host_without_port("[::1]:443") == "::1"
    assert sni_for(None, "x") is None
    assert sni_for(ServerSettings(verify="none", sni="fixed.test"), "other") == "fixed.test"
    assert sni_for(ServerSettings(verify="none", sni_from_host=True), "h.test:80") == "h.test"
    assert sni_for(ServerSettings(verify="none", sni_from_host=True), None) is None
    assert sni_for(ServerSettings(verify="none"), "h.test") is None


# ---------------------------------------------------------------- http-request rules (pure)
REDIRECT = HttpRule(action="redirect-scheme", value="https", code=301, cond="nossl")
XFP = HttpRule(action="set-header", name="X-Forwarded-Proto", value="https", cond="ssl")


def _head(raw: bytes):  # type: ignore[no-untyped-def]
    head = parse_request_head(raw)
    assert head is not None
    return head


def test_redirect_on_plain_connection() -> None:
    raw = b"GET /foo?x=1 HTTP/1.1\r\nHost: lb.test\r\n\r\n"
    out = httprules.evaluate([REDIRECT, XFP], False, _head(raw), raw, True, 16384)
    assert out is not None and out.status == 301 and not out.close
    assert out.response == (b"HTTP/1.1 301 Moved Permanently\r\ncontent-length: 0\r\n"
                            b"location: https://lb.test/foo?x=1\r\n\r\n")


@pytest.mark.parametrize("raw,keep,expect_loc,close", [
    (b"GET /a?b HTTP/1.1\r\nHost: h:8080\r\n\r\n", False, "https://h:8080/a?b", True),
    (b"GET http://h/p/q?z HTTP/1.1\r\nHost: h\r\n\r\n", True, "https://h/p/q?z", False),
    (b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", True, "https://h/up", True),
    (b"GET /x HTTP/1.0\r\n\r\n", False, "https:///x", True),
])
def test_redirect_location_and_connection(raw: bytes, keep: bool, expect_loc: str, close: bool) -> None:
    out = httprules.evaluate([REDIRECT], False, _head(raw), raw, keep, 16384)
    assert out is not None and out.response is not None
    assert f"location: {expect_loc}\r\n".encode() in out.response
    assert out.close is close
    assert (b"connection: close\r\n" in out.response) is close


def test_redirect_code_and_drop_query() -> None:
    raw = b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    rule = HttpRule(action="redirect-scheme", value="https", code=308, drop_query=True)
    out = httprules.evaluate([rule], True, _head(raw), raw, True, 16384)
    assert out is not None and out.response is not None
    assert out.response.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"location: https://h/a\r\n" in out.response


def test_no_rule_applies_on_tls_for_redirect_only() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert httprules.evaluate([REDIRECT], True, _head(raw), raw, True, 16384) is None


def test_set_header_replaces_every_field_and_keeps_the_rest() -> None:
    raw = (b"POST /p HTTP/1.1\r\nHost: h\r\nx-forwarded-proto: http\r\nContent-Length: 2\r\n"
           b"X-Forwarded-Proto: ftp\r\n\r\nokGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    out = httprules.evaluate([REDIRECT, XFP], True, _head(raw), raw, True, 16384)
    assert out is not None and out.response is None and out.head is not None
    head = out.head
    assert head.get_all("x-forwarded-proto") == ["https"]
    assert head.headers[-1] == ("X-Forwarded-Proto", "https")
    assert head.content_length == 2
    assert out.raw[head.raw_len:] == b"okGET / HTTP/1.1\r\nHost: h\r\n\r\n"  # body and pipelined bytes kept


def test_unless_and_unconditional_rules() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    plain_only = HttpRule(action="set-header", name="X-Plain", value="1", cond="nossl")
    always = HttpRule(action="set-header", name="X-All", value="yes")
    out = httprules.evaluate([plain_only, always], False, _head(raw), raw, True, 16384)
    assert out is not None and out.head is not None
    assert out.head.get("x-plain") == "1" and out.head.get("x-all") == "yes"
    out = httprules.evaluate([plain_only, always], True, _head(raw), raw, True, 16384)
    assert out is not None and out.head is not None
    assert out.head.get("x-plain") is None and out.head.get("x-all") == "yes"


def test_rules_for_route() -> None:
    assert httprules.rules_for((), (), True) is None
    assert httprules.rules_for((XFP,), (REDIRECT,), True) == (XFP,)
    assert httprules.rules_for((XFP,), (REDIRECT,), False) == (XFP, REDIRECT)


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


@pytest.mark.parametrize("sni", ["a.test", "x.w.test"])
def test_direct_ssl_objects_speak_tls_as_the_standard_ones(tmp_path: Path, sni: str) -> None:
    """The listener's and the servers' contexts make `DirectSSLObject`s (read/write/pending are the C object's
    methods, no ssl.py frame): a handshake with SNI (the callback swaps the context) and records both ways, read
    with and without a buffer, as uvloop's TLS layer calls them."""
    ca = trustme.CA()
    crts = (_write(ca, tmp_path, "1.pem", "a.test"), _write(ca, tmp_path, "2.pem", "*.w.test"))
    tls = load_bind(BindSettings(crts=crts))
    client_ctx = server_context(ServerSettings(verify="none"))
    ca.configure_trust(client_ctx)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = tls.context.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    for obj in (server, client):
        assert isinstance(obj, DirectSSLObject)
        assert obj.read.__self__ is obj._sslobj and obj.write.__self__ is obj._sslobj  # type: ignore[attr-defined]
        assert obj.pending.__self__ is obj._sslobj  # type: ignore[attr-defined]
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
    assert server.context is tls.store.lookup(sni).context  # type: ignore[union-attr]
    leaf = ssl.DER_cert_to_PEM_cert(client.getpeercert(binary_form=True))  # type: ignore[arg-type]
    assert leaf.strip() in Path(crts[1] if sni.endswith("w.test") else crts[0]).read_text()
    assert client.write(b"GET / HTTP/1.1\r\n\r\n") == 18
    _pump(c_out, s_in)
    assert server.read(5) == b"GET /"
    assert server.pending() == 13
    buf = bytearray(64)
    assert server.read(64, buf) == 13 and bytes(buf[:13]) == b" HTTP/1.1\r\n\r\n"
    with pytest.raises(ssl.SSLWantReadError):
        server.read(64)
    server.write(b"HTTP/1.1 200 OK\r\n\r\n")
    _pump(s_out, c_in)
    assert client.read(1024) == b"HTTP/1.1 200 OK\r\n\r\n"
