"""Micro-benchmark of the head parsers and serialisers (not collected by pytest).

Run: python3 tests/unit/http1/bench_heads.py
Prints the best-of-N µs per call for a typical browser request head (8 fields) and a typical response head.
"""

from __future__ import annotations

import time
import timeit

from balancier.http1 import (
    BodyFramer,
    Framing,
    build_request_head,
    build_response_head,
    parse_request_head,
    parse_response_head,
    strip_hop_by_hop,
)

REQUEST = (
    b"GET /esup-portail/index.html?x=1 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: JSESSIONID=ents3~ABCDEF0123456789\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: 612\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 09:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b"ETag: \"6560a1b0-264\"\r\n"
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
)
CHUNKED = b"1000\r\n" + b"x" * 4096 + b"\r\n" + b"10;ext=1\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n"


def best_us(fn: object, number: int = 20000, repeat: int = 7) -> float:
    # CPU time of this process, so that other load on the machine inflates the figures less.
    times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)  # type: ignore[arg-type]
    return min(times) / number * 1e6


def main() -> None:
    req = parse_request_head(REQUEST)
    resp = parse_response_head(RESPONSE, 16384, "GET")
    assert req is not None and resp is not None
    rows = [
        ("parse_request_head (8 fields)", lambda: parse_request_head(REQUEST)),
        ("parse_response_head (8 fields)", lambda: parse_response_head(RESPONSE, 16384, "GET")),
        ("strip_hop_by_hop (request)", lambda: strip_hop_by_hop(req.headers, req.connection_tokens)),
        ("build_request_head", lambda: build_request_head(req.method, req.target, req.version, req.headers)),
        ("build_response_head", lambda: build_response_head(resp.version, resp.status, resp.reason,
                                                            resp.headers)),
        ("BodyFramer LENGTH 612 B", lambda: BodyFramer(Framing.LENGTH, 612).feed(b"z" * 612)),
        ("BodyFramer CHUNKED 2 chunks", lambda: BodyFramer(Framing.CHUNKED).feed(CHUNKED)),
    ]
    for name, fn in rows:
        print(f"{name:34s} {best_us(fn):6.2f} µs")


if __name__ == "__main__":
    main()
