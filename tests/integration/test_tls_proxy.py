"""TLS end to end: `balancier proxy` with `bind ... ssl crt`, trustme certificates, curl and Python TLS clients,
real portal backends, and a real TLS backend for `server ... ssl`.

What is proven here: SNI picks the certificate (exact, wildcard, default), strict-sni refuses, TLS 1.0/1.1 are
refused under `ssl-min-ver TLSv1.2`, plain HTTP is redirected with 301, X-Forwarded-Proto reaches the backend,
plaintext and garbage on the TLS port are dropped without disturbing a concurrent client, `mode tcp` terminates
TLS, and TLS to servers verifies (or refuses) the server's certificate, in traffic and in health checks.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from balancier.proxy.checker import Checker
from balancier.proxy.config import load
from balancier.proxy.servers import Backend

from support.backends import BackendFactory, free_port
from support.http import curl
from support.proxy import ProxyFactory

DEFAULTS = ("defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n")


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca_file = str(root / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def pem(self, name: str, *hosts: str, ca: trustme.CA | None = None) -> str:
        path = self.root / name
        (ca or self.ca).issue_cert(*hosts).private_key_and_cert_chain_pem.write_to_path(str(path))
        return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _client_ctx(pki: Pki, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS 1.0/1.1 only at security level 0
    return ctx


def _peer_names(port: int, sni: str | None, pki: Pki) -> list[str]:
    """The DNS names of the certificate the proxy presents for this SNI (None: no SNI sent)."""
    ctx = _client_ctx(pki)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            cert = s.getpeercert()
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def _https_get(port: int, host: str, pki: Pki, path: str = "/") -> bytes:
    ctx = _client_ctx(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return _read_all(s)


def _read_response(s: socket.socket) -> bytes:
    """One response with a Content-Length body (without waiting for the connection to close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ssl.SSLError, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def site(pki: Pki, backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> Iterator[dict[str, object]]:
    """A portal behind a frontend with a plain bind (redirects) and a TLS bind with three certificates."""
    web = backend_factory("web")
    a = pki.pem("a.pem", "a.test")
    w = pki.pem("w.pem", "*.w.test")
    x = pki.pem("x.pem", "x.w.test")
    http_port, https_port = free_port(), free_port()
    cfg = (DEFAULTS +
           "frontend fe\n"
           f"    bind 127.0.0.1:{http_port}\n"
           f"    bind 127.0.0.1:{https_port} ssl crt {a} crt {w} crt {x} alpn http/1.1 ssl-min-ver TLSv1.2\n"
           "    http-request redirect scheme https code 301 if !{ ssl_fc }\n"
           "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n"
           "    default_backend be\n"
           "backend be\n"
           f"    server web {web.address}\n")
    proxy_factory(cfg)
    yield {"web": web, "http": http_port, "https": https_port}


def test_sni_picks_the_certificate(site: dict[str, object], pki: Pki) -> None:
    port = int(site["https"])  # type: ignore[call-overload]
    assert _peer_names(port, "a.test", pki) == ["a.test"]
    assert _peer_names(port, "q.w.test", pki) == ["*.w.test"]  # wildcard
    assert _peer_names(port, "x.w.test", pki) == ["x.w.test"]  # an exact name beats the wildcard
    assert _peer_names(port, "other.test", pki) == ["a.test"]  # no match: the first certificate
    assert _peer_names(port, None, pki) == ["a.test"]  # no SNI: the same
    # curl with SNI verifies the chain and the name against the CA
    for host in ("a.test", "q.w.test", "x.w.test"):
        r = curl(f"https://{host}:{port}/", "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", pki.ca_file)
        assert r.status == 200, (host, r)


def test_old_tls_versions_are_refused(site: dict[str, object], pki: Pki) -> None:
    port = int(site["https"])  # type: ignore[call-overload]
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = _client_ctx(pki, max_version=version)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                ctx.wrap_socket(raw, server_hostname="a.test").close()
    ctx = _client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            assert s.version() == "TLSv1.2"


def test_plain_http_is_redirected_and_https_carries_the_proto(site: dict[str, object], pki: Pki) -> None:
    web = site["web"]
    r = curl(f"http://127.0.0.1:{site['http']}/shop/cart?id=7", headers=["Host: a.test"])
    assert r.status == 301
    assert r.header("location") == "https://a.test/shop/cart?id=7"
    assert r.header("content-length") == "0"
    assert web.requests() == []  # type: ignore[attr-defined]  # the redirect never reaches a server
    answer = _https_get(int(site["https"]), "a.test", pki, "/echo?x=1")  # type: ignore[call-overload]
    assert answer.startswith(b"HTTP/1.1 200")
    reqs = web.requests()  # type: ignore[attr-defined]
    assert len(reqs) == 1 and reqs[0].target == "/echo?x=1"
    assert [v for n, v in reqs[0].headers if n.lower() == "x-forwarded-proto"] == ["https"]


def _read_response(sock: ssl.SSLSocket) -> bytes:
    """One whole response (head + Content-Length body): TLS may hand the head and the body over in two records."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_plaintext_and_garbage_are_dropped_without_harm(site: dict[str, object], pki: Pki) -> None:
    port = int(site["https"])  # type: ignore[call-overload]
    ctx = _client_ctx(pki)
    good = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="a.test")
    try:
        req = b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n"
        good.sendall(req)
        assert _read_response(good).startswith(b"HTTP/1.1 200")
        bad_inputs = [
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",  # plaintext HTTP on the TLS port
            b"\x16\x03\x01\x00\x20" + b"\xff" * 32,  # a TLS record header with a garbage ClientHello
            b"\x00" * 64,
        ]
        for data in bad_inputs:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
                bad.sendall(data)
                try:
                    got = bad.recv(4096)
                    while got and not got.startswith(b"HTTP"):
                        more = bad.recv(4096)
                        if not more:
                            break
                        got += more
                except ConnectionError:
                    got = b""
                assert not got.startswith(b"HTTP"), data  # never served: at most a TLS alert, then closed
        # the concurrent keep-alive client is still served on its connection, and new clients too
        good.sendall(req)
        assert _read_response(good).startswith(b"HTTP/1.1 200")
        assert _https_get(port, "q.w.test", pki).startswith(b"HTTP/1.1 200")
    finally:
        good.close()


def test_strict_sni(pki: Pki, backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    web = backend_factory("web")
    a = pki.pem("a.pem", "a.test")
    port = free_port()
    proxy_factory(DEFAULTS + f"frontend fe\n    bind 127.0.0.1:{port} ssl crt {a} strict-sni\n"
                             f"    default_backend be\nbackend be\n    server web {web.address}\n")
    assert _https_get(port, "a.test", pki).startswith(b"HTTP/1.1 200")
    for sni in ("other.test", None):
        ctx = _client_ctx(pki)
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                ctx.wrap_socket(raw, server_hostname=sni).close()


def test_tcp_mode_terminates_tls(pki: Pki, backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    """stunnel's job: TLS in front, plaintext relayed to a TCP service."""
    web = backend_factory("web")
    a = pki.pem("a.pem", "a.test")
    port = free_port()
    proxy_factory("defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n"
                  f"listen tls\n    bind 127.0.0.1:{port} ssl crt {a}\n    server web {web.address}\n")
    ctx = _client_ctx(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.test") as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
            answer = _read_response(s)
    assert answer.startswith(b"HTTP/1.1 200")
    assert [r.target for r in web.requests()] == ["/echo"]


# ---------------------------------------------------------------- TLS to servers
class TlsBackend:
    """A threaded HTTPS server on 127.0.0.1 answering 200 `tls-ok` and recording the SNI it was asked for."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self.snis: list[str | None] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        ctx.sni_callback = lambda obj, name, c: self.snis.append(name)  # type: ignore[func-returns-value]

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                body = b"tls-ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def tls_backend(pki: Pki) -> Iterator[TlsBackend]:
    b = TlsBackend(pki.ca.issue_cert("backend.test"))
    try:
        yield b
    finally:
        b.close()


def _server_cfg(tmp: Path, server: str) -> str:
    path = tmp / "srv.cfg"
    path.write_text(DEFAULTS + "backend be\n" + f"    server s {server}\n")
    return str(path)


def _check_once(cfg_path: str) -> str:
    config, _ = load([cfg_path])
    be = Backend(config.proxy("be"))
    checker = Checker([be], stderr=False)
    res = asyncio.run(checker.check_now(be.servers[0]))
    return f"{res.status} {res.info}".strip()


def test_checks_over_tls(pki: Pki, tls_backend: TlsBackend, tmp_path: Path) -> None:
    addr = f"127.0.0.1:{tls_backend.port}"
    assert _check_once(_server_cfg(tmp_path, f"{addr} ssl verify required ca-file {pki.ca_file} check")) == "L6OK"
    other = trustme.CA()
    wrong = tmp_path / "wrong-ca.pem"
    other.cert_pem.write_to_path(str(wrong))
    assert _check_once(_server_cfg(tmp_path, f"{addr} ssl verify required ca-file {wrong} check")) == \
        "L6RSP SSL handshake failure"
    assert _check_once(_server_cfg(tmp_path, f"{addr} ssl verify none check")) == "L6OK"
    # without TLS the check is a plain connect (L4OK); a plain server refuses a TLS check's handshake
    assert _check_once(_server_cfg(tmp_path, f"{addr} check")) == "L4OK"
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen(8)
    try:
        got = _check_once(_server_cfg(tmp_path, f"127.0.0.1:{plain.getsockname()[1]} ssl verify none check "
                                                "inter 500"))
        assert got in ("L6TOUT", "L6RSP SSL handshake failure")
    finally:
        plain.close()


def test_server_side_tls(pki: Pki, tls_backend: TlsBackend, tmp_path: Path, proxy_factory: ProxyFactory) -> None:
    other = trustme.CA()
    wrong = tmp_path / "wrong-ca.pem"
    other.cert_pem.write_to_path(str(wrong))
    good_port, bad_port = free_port(), free_port()
    addr = f"127.0.0.1:{tls_backend.port}"
    proxy_factory(DEFAULTS +
                  f"frontend good\n    bind 127.0.0.1:{good_port}\n    default_backend ok\n"
                  f"frontend bad\n    bind 127.0.0.1:{bad_port}\n    default_backend ko\n"
                  f"backend ok\n    server s {addr} ssl verify required ca-file {pki.ca_file} sni str(backend.test)\n"
                  f"backend ko\n    retries 0\n    server s {addr} ssl verify required ca-file {wrong}\n")
    r = curl(f"http://127.0.0.1:{good_port}/")
    assert r.status == 200 and r.body == b"tls-ok"
    assert "backend.test" in tls_backend.snis
    r = curl(f"http://127.0.0.1:{bad_port}/")
    assert r.status == 503


# ---------------------------------------------------------------- the redirect, byte for byte against haproxy
_REDIRECT_INPUTS = [
    # keep-alive: the first answer leaves the connection open, the second (Connection: close) ends it
    b"GET /foo?x=1 HTTP/1.1\r\nHost: lb.test\r\n\r\nGET /b HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",  # no Host field: an empty authority, and the 1.0 connection closes
    # a request with a body: answered, then the connection closes (the pipelined request is not served)
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: lb.test\r\n\r\n",
]


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.skipif(not __import__("shutil").which("haproxy"), reason="Debian's haproxy is not installed")
def test_redirect_bytes_match_haproxy(backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    web = backend_factory("web")
    answers = {}
    for impl in ("haproxy", "balancier"):
        port = free_port()
        proxy_factory(DEFAULTS + f"frontend fe\n    bind 127.0.0.1:{port}\n"
                                 "    http-request redirect scheme https code 301 if !{ ssl_fc }\n"
                                 f"    default_backend be\nbackend be\n    server web {web.address}\n", impl=impl)
        answers[impl] = [_exchange(port, data) for data in _REDIRECT_INPUTS]
    assert answers["balancier"] == answers["haproxy"]
    assert answers["balancier"][0].count(b"HTTP/1.1 301 Moved Permanently\r\n") == 2
    assert web.requests() == []


def test_backend_rules_run_after_the_frontend_ones(pki: Pki, backend_factory: BackendFactory,
                                                   proxy_factory: ProxyFactory) -> None:
    web = backend_factory("web")
    a = pki.pem("a.pem", "a.test")
    plain, tls = free_port(), free_port()
    proxy_factory(DEFAULTS +
                  f"frontend fe\n    bind 127.0.0.1:{plain}\n    bind 127.0.0.1:{tls} ssl crt {a}\n"
                  "    http-request set-header X-Scheme https if { ssl_fc }\n"
                  "    http-request set-header X-Scheme http unless { ssl_fc }\n"
                  "    default_backend be\n"
                  "backend be\n    http-request set-header X-Order backend\n"
                  f"    server web {web.address}\n")
    assert curl(f"http://127.0.0.1:{plain}/echo", headers=["X-Scheme: forged", "X-Order: client"]).status == 200
    assert _https_get(tls, "a.test", pki, "/echo").startswith(b"HTTP/1.1 200")
    got = [({n.lower(): v for n, v in r.headers}["x-scheme"], {n.lower(): v for n, v in r.headers}["x-order"])
           for r in web.requests()]
    assert got == [("http", "backend"), ("https", "backend")]
    first = web.requests()[0].headers
    assert sum(1 for n, _ in first if n.lower() in ("x-scheme", "x-order")) == 2  # the client's copies are gone
