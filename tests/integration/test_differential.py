"""Differential test: the same seed-like configuration through HAProxy 2.6 and through balancier.

Both proxies run, one after the other, against the same real backends (the bundled portal app on
127.0.0.2-127.0.0.7) and get the same client traffic in the same order, so the weighted round robin is at the
same position for every request. The test compares:
- what the backends receive: method, target, version, header names (lower-cased) and values in order, body
  length, which server got it (including X-Forwarded-For, Connection and the de-prefixed JSESSIONID);
- what the clients get: status, body, response headers (lower-cased names) including the prefixed
  Set-Cookie and `connection: close`;
- the sequence of servers over 770 requests (two full 385-request cycles of 256/128/1);
- a server refusing connections (retry + redispatch) and the backup taking over when no active server is
  usable.

Normalisations (only what legitimately differs between two runs or two implementations):
- `Date` response header: removed (wall clock).
- `Server` response header: removed if present (the proxies never add one; the backends' own is kept otherwise,
  so this only matters if an implementation adds its own).
- JSESSIONID values created by the portal (`/login`): the random hex id is replaced by `<SID>`, the `sX~`
  prefix is kept (that is what is compared).
- The portal's health checks (`OPTIONS / HTTP/1.0`) are not part of the traffic compared; their timing depends on
  when each proxy started.
Nothing else is normalised: header order, case of values, body bytes and statuses must match.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.backends import Backend, free_port
from support.http import RawConnection, Response
from support.proxy import ProxyProcess, start_proxy

SERVERS = [("ents3", "127.0.0.2"), ("ents2", "127.0.0.3"), ("ents1", "127.0.0.4"), ("maint", "127.0.0.5"),
           ("r1", "127.0.0.6"), ("r2", "127.0.0.7")]
EXCEPT_ADDR = "127.0.0.9"  # clients from here get no X-Forwarded-For (option forwardfor except)
SEQUENCE_LEN = 770
SID_RE = re.compile(r"(JSESSIONID=(?:s\d~)?)[0-9A-F]{32}")


def config(ports: dict[str, int], b: dict[str, Backend]) -> str:
    return f"""
global
    maxconn 4096
    # one worker: the exact server sequence is compared with haproxy's, and each worker has its own FWRR cycle
    nbthread 1

defaults
    mode http
    retries 3
    option redispatch
    maxconn 2000
    timeout connect 5000
    timeout client 50000
    timeout server 50000

listen esup-proxy
    bind 127.0.0.1:{ports['main']}
    cookie JSESSIONID prefix
    option httpchk
    option forwardfor except {EXCEPT_ADDR}
    option httpclose
    balance roundrobin
    server ents3 {b['ents3'].address} cookie s3 weight 256 check inter 5000 rise 1 fall 3
    server ents2 {b['ents2'].address} cookie s2 weight 128 check inter 5000 rise 1 fall 3
    server ents1 {b['ents1'].address} cookie s1 weight 1 check inter 5000 rise 1 fall 3
    server ent-maintenance {b['maint'].address} check backup

listen retry
    bind 127.0.0.1:{ports['retry']}
    option httpclose
    balance roundrobin
    server r1 {b['r1'].address}
    server r2 {b['r2'].address}

listen backup-only
    bind 127.0.0.1:{ports['backup']}
    option httpclose
    balance roundrobin
    server ents3 {b['ents3'].address} weight 0
    server ent-maintenance {b['maint'].address} backup
"""


# ---- the traffic ---------------------------------------------------------------------------------------
def _req(first: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([first, *headers]) + "\r\n\r\n").encode("latin-1") + body


EXCHANGES: list[tuple[str, bytes, str | None]] = [  # (name, raw request, source address)
    ("plain_get", _req("GET / HTTP/1.1", "Host: portal.test", "User-Agent: diff/1", "Accept: */*"), None),
    ("mixed_case_and_existing_xff",
     _req("GET /?q=1 HTTP/1.1", "Host: portal.test", "x-Custom-HEADER: Some Value", "X-Forwarded-For: 9.9.9.9"),
     None),
    ("client_asks_keep_alive", _req("GET / HTTP/1.1", "Host: portal.test", "Connection: keep-alive"), None),
    ("http10_without_host", _req("GET / HTTP/1.0"), None),
    ("post_content_length", _req("POST / HTTP/1.1", "Host: portal.test", "Content-Type: text/plain",
                                 "Content-Length: 11", body=b"hello world"), None),
    ("post_chunked", _req("POST / HTTP/1.1", "Host: portal.test", "Transfer-Encoding: chunked",
                          body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), None),
    ("head", _req("HEAD / HTTP/1.1", "Host: portal.test"), None),
    ("login_sets_prefixed_cookie", _req("GET /login?user=alice HTTP/1.1", "Host: portal.test"), None),
    ("cookie_names_ents2", _req("GET / HTTP/1.1", "Host: portal.test", "Cookie: JSESSIONID=s2~ABC; other=1"),
     None),
    ("cookie_names_ents1", _req("GET / HTTP/1.1", "Host: portal.test", "Cookie: other=0; JSESSIONID=s1~XYZ"),
     None),
    ("cookie_unknown_prefix", _req("GET / HTTP/1.1", "Host: portal.test", "Cookie: JSESSIONID=zz~ABC"), None),
    ("cookie_without_tilde", _req("GET / HTTP/1.1", "Host: portal.test", "Cookie: JSESSIONID=nodelim"), None),
    ("not_found", _req("GET /nope HTTP/1.1", "Host: portal.test"), None),
    ("backend_says_503", _req("GET /status/503 HTTP/1.1", "Host: portal.test"), None),
    ("absolute_form", _req("GET http://portal.test/?abs=1 HTTP/1.1", "Host: portal.test"), None),
    ("download_2mb", _req("GET /bytes/2000000 HTTP/1.1", "Host: portal.test"), None),
    ("from_excepted_address", _req("GET / HTTP/1.1", "Host: portal.test", "X-Forwarded-For: 8.8.8.8"),
     EXCEPT_ADDR),
]


@dataclass
class Exchange:
    client: dict[str, Any]
    backend: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Transcript:
    sequence: list[str]
    exchanges: dict[str, Exchange]
    retry: list[tuple[int, str | None, float]]
    backup: list[tuple[int, str | None]]
    stderr: str = ""


def _norm_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for k, v in headers:
        low = k.lower()
        if low in ("date", "server"):
            continue
        out.append((low, SID_RE.sub(r"\1<SID>", v)))
    return out


def _client_view(r: Response) -> dict[str, Any]:
    return {"status": r.status, "reason": r.reason, "version": r.version, "headers": _norm_headers(r.headers),
            "body": SID_RE.sub(r"\1<SID>", r.body.decode("latin-1"))}


def _backend_view(server: str, rec: Any) -> dict[str, Any]:
    return {"server": server, "method": rec.method, "target": rec.target, "version": rec.version,
            "headers": [(k.lower(), SID_RE.sub(r"\1<SID>", v)) for k, v in rec.headers],
            "body_length": rec.body_length}


def _one(port: int, raw: bytes, source: str | None = None) -> Response:
    method = raw.split(b" ", 1)[0].decode()
    with RawConnection("127.0.0.1", port, timeout=10, source=source) as c:
        return c.request(raw, method=method)


def run_traffic(impl: str, backends: dict[str, Backend]) -> Transcript:
    for b in backends.values():
        b.clear()
        b.server.sessions.clear()
    ports = {"main": free_port(), "retry": free_port(), "backup": free_port()}
    with start_proxy(config(ports, backends), impl) as proxy:
        try:
            return _traffic(ports, backends, proxy)
        except (OSError, ValueError) as e:  # a dead or misbehaving proxy: say why
            raise AssertionError(f"traffic through {impl} failed: {e!r}\n{proxy.explain()}") from e


def _traffic(ports: dict[str, int], backends: dict[str, Backend], proxy: ProxyProcess) -> Transcript:
    sequence = []
    for i in range(SEQUENCE_LEN):
        r = _one(ports["main"], _req(f"GET /health?seq={i} HTTP/1.1", "Host: portal.test"))
        sequence.append(r.header("X-Served-By") or f"<status {r.status}>")
    exchanges: dict[str, Exchange] = {}
    for name, raw, source in EXCHANGES:
        for b in backends.values():
            b.clear()
        r = _one(ports["main"], raw, source)
        ex = Exchange(_client_view(r))
        for bname, b in backends.items():
            ex.backend += [_backend_view(bname, rec) for rec in b.requests()]
        exchanges[name] = ex
    # Login, then come back with the cookie the client was given: same server, session kept.
    login = _one(ports["main"], _req("GET /login?user=bob HTTP/1.1", "Host: portal.test"))
    cookie = (login.header("Set-Cookie") or "").split(";")[0]
    back = _one(ports["main"], _req("GET / HTTP/1.1", "Host: portal.test", f"Cookie: {cookie}"))
    exchanges["session_kept"] = Exchange({"login": _client_view(login), "back": _client_view(back)})
    retry = []
    for i in range(6):
        t0 = time.monotonic()
        r = _one(ports["retry"], _req(f"GET /health?retry={i} HTTP/1.1", "Host: portal.test"))
        retry.append((r.status, r.header("X-Served-By"), time.monotonic() - t0))
    backup = []
    for i in range(3):
        r = _one(ports["backup"], _req(f"GET /health?backup={i} HTTP/1.1", "Host: portal.test"))
        backup.append((r.status, r.header("X-Served-By")))
    return Transcript(sequence, exchanges, retry, backup, proxy.stderr)


# ---- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Backend]]:
    started: dict[str, Backend] = {}
    try:
        for name, host in SERVERS:
            started[name] = Backend(name, host, listen=(name != "r1"))  # r1: port closed, connects refused
        yield started
    finally:
        for b in started.values():
            b.stop()


@pytest.fixture(scope="module")
def reference(backends: dict[str, Backend]) -> Transcript:
    return run_traffic("haproxy", backends)


@pytest.fixture(scope="module")
def candidate(backends: dict[str, Backend], reference: Transcript) -> Transcript:
    return run_traffic("balancier", backends)


# ---- the reference itself must show the behaviour compared (else the comparison proves nothing) --------
def test_reference_behaves_as_the_spec_says(reference: Transcript) -> None:
    counts = Counter(reference.sequence)
    assert counts == {"ents3": 512, "ents2": 256, "ents1": 2}, counts
    assert reference.sequence[:3] == ["ents3", "ents3", "ents2"]
    assert reference.sequence[193] == "ents1" and reference.sequence[578] == "ents1"
    ex = reference.exchanges
    (rec,) = ex["plain_get"].backend
    assert ("x-forwarded-for", "127.0.0.1") in rec["headers"] and ("connection", "close") in rec["headers"]
    (rec,) = ex["from_excepted_address"].backend
    assert rec["headers"].count(("x-forwarded-for", "8.8.8.8")) == 1
    assert ("x-forwarded-for", "127.0.0.9") not in rec["headers"]
    (rec,) = ex["cookie_names_ents2"].backend
    assert rec["server"] == "ents2" and ("cookie", "JSESSIONID=ABC; other=1") in rec["headers"]
    (rec,) = ex["cookie_names_ents1"].backend
    assert rec["server"] == "ents1"
    assert ex["login_sets_prefixed_cookie"].client["headers"].count(
        ("set-cookie", "JSESSIONID=s3~<SID>; Path=/")) + ex["login_sets_prefixed_cookie"].client["headers"].count(
        ("set-cookie", "JSESSIONID=s2~<SID>; Path=/")) == 1
    assert ("connection", "close") in ex["client_asks_keep_alive"].client["headers"]
    assert "logged in as bob" in ex["session_kept"].client["back"]["body"]
    assert [(s, n) for s, n, _ in reference.retry] == [(200, "r2")] * 6
    assert all(t < 0.9 for _, _, t in reference.retry), "redispatch without the 1 s turn-around delay"
    assert reference.backup == [(200, "maint")] * 3


# ---- balancier against the reference ------------------------------------------------------------------
def test_server_sequence_matches(reference: Transcript, candidate: Transcript) -> None:
    assert Counter(candidate.sequence) == Counter(reference.sequence)
    first_diff = next((i for i, (a, b) in enumerate(zip(reference.sequence, candidate.sequence, strict=True))
                       if a != b), None)
    assert first_diff is None, (f"request #{first_diff}: haproxy -> {reference.sequence[first_diff]}, "
                                f"balancier -> {candidate.sequence[first_diff]}")


@pytest.mark.parametrize("name", [n for n, _, _ in EXCHANGES] + ["session_kept"])
def test_backend_receives_the_same(reference: Transcript, candidate: Transcript, name: str) -> None:
    assert candidate.exchanges[name].backend == reference.exchanges[name].backend


@pytest.mark.parametrize("name", [n for n, _, _ in EXCHANGES] + ["session_kept"])
def test_client_gets_the_same(reference: Transcript, candidate: Transcript, name: str) -> None:
    assert candidate.exchanges[name].client == reference.exchanges[name].client


def test_retry_and_redispatch_match(reference: Transcript, candidate: Transcript) -> None:
    assert [(s, n) for s, n, _ in candidate.retry] == [(s, n) for s, n, _ in reference.retry]
    assert all(t < 0.9 for _, _, t in candidate.retry), [round(t, 3) for _, _, t in candidate.retry]


def test_backup_matches(reference: Transcript, candidate: Transcript) -> None:
    assert candidate.backup == reference.backup
