"""Retries, redispatch, queues and timeouts of the HTTP data plane, with HAProxy's statuses, timings and log flags.

Timings are asserted with margins: the proxy's timeouts have a 100 ms resolution (timers.py) and the machine is
shared, so a bound is "at least the configured time" and "well below the next step".
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request
from support.syslog import parse_httplog, parse_syslog


def _cfg(body: str, syslog: str | None = None, defaults: str = "") -> str:
    glob = f"global\n    log {syslog} local0\n" if syslog else "global\n"
    logs = "    log global\n    option httplog\n" if syslog else ""
    return (
        f"{glob}"
        "defaults\n"
        "    mode http\n"
        f"{logs}"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        f"{defaults}"
        f"{body}"
    )


def _timed_get(port: int, headers: list[tuple[str, str]] | None = None, timeout: float = 10.0):
    t0 = time.monotonic()
    with RawConnection("127.0.0.1", port, timeout=timeout) as c:
        r = c.request(build_request("GET", "/", headers=headers))
    return r, time.monotonic() - t0


def _log_for(syslog_receiver, predicate, timeout: float = 5.0):
    line = syslog_receiver.wait_for(lambda raw: predicate(parse_httplog(parse_syslog(raw).message)), timeout)
    return parse_httplog(parse_syslog(line).message)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: SYNs are dropped, so connects hang until they time out."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        s.close()


def test_refused_server_is_redispatched_immediately(proxy_factory, backend_factory, syslog_receiver) -> None:
    good, bad = backend_factory("good"), backend_factory("bad")
    bad.refuse()
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    retries 3\n    option redispatch\n    balance roundrobin\n"
        f"    server bad {bad.address}\n    server good {good.address}\n", syslog_receiver.address))
    for _ in range(4):
        r, took = _timed_get(port)
        assert r.status == 200 and r.header("X-Served-By") == "good"
        assert took < 0.5  # redispatch with more than one active server: no turn-around delay
    log = _log_for(syslog_receiver, lambda h: h.redispatched)
    assert log.retries == 1 and log.server == "good" and log.status == 200
    assert log.termination_state == "----"


def test_refused_without_redispatch_gives_503_after_retries(proxy_factory, backend_factory,
                                                            syslog_receiver) -> None:
    bad = backend_factory("bad")
    bad.refuse()
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    retries 2\n    server bad {bad.address}\n",
        syslog_receiver.address))
    r, took = _timed_get(port)
    assert r.status == 503
    assert 1.9 <= took < 3.0  # two turn-around delays of min(1 s, timeout connect)
    log = _log_for(syslog_receiver, lambda h: h.status == 503)
    assert log.termination_state == "SC--"
    assert log.retries == 2 and not log.redispatched
    assert log.Tc == -1 and log.Tw >= 1900


def test_cookie_on_refusing_server_redispatched_on_last_retry(proxy_factory, backend_factory,
                                                              syslog_receiver) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    a.refuse()
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    retries 3\n    option redispatch\n    cookie SRV insert\n"
        f"    server a {a.address} cookie a\n    server b {b.address} cookie b\n", syslog_receiver.address))
    r, took = _timed_get(port, headers=[("Cookie", "SRV=a")])
    assert r.status == 200 and r.header("X-Served-By") == "b"
    assert 1.9 <= took < 3.0  # 2 retries on the persistent server (1 s each), then redispatched at once
    assert any(v.startswith("SRV=b") for v in r.header_values("Set-Cookie"))
    log = _log_for(syslog_receiver, lambda h: h.status == 200)
    assert log.redispatched and log.retries == 3
    assert log.termination_state == "--DI"


def test_queue_timeout_gives_503(proxy_factory, backend_factory, syslog_receiver) -> None:
    slow = backend_factory("slow", delay=1.0)
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    timeout queue 300\n    server s {slow.address} maxconn 1\n",
        syslog_receiver.address))
    results: dict[str, tuple[int, float]] = {}

    def first() -> None:
        r, took = _timed_get(port)
        results["first"] = (r.status, took)

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.2)
    r, took = _timed_get(port)
    t.join(10)
    assert r.status == 503
    assert 0.3 <= took < 0.8
    assert results["first"][0] == 200
    log = _log_for(syslog_receiver, lambda h: h.status == 503)
    assert log.termination_state == "sQ--" and log.server == "<NOSRV>"
    assert log.Tw >= 300 and log.Tc == -1
    assert (log.srv_queue, log.backend_queue) == (0, 1)  # as HAProxy: the backend queue it entered, itself included


def test_queued_requests_are_served_one_at_a_time(proxy_factory, backend_factory) -> None:
    slow = backend_factory("slow", delay=0.3)
    port = free_port()
    proxy_factory(_cfg(
        f"listen web\n    bind 127.0.0.1:{port}\n    timeout queue 10s\n    server s {slow.address} maxconn 1\n"))
    statuses: list[int] = []

    def one() -> None:
        r, _ = _timed_get(port)
        statuses.append(r.status)

    threads = [threading.Thread(target=one) for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert statuses == [200, 200, 200]
    assert time.monotonic() - t0 >= 0.85  # serialized by maxconn 1
    times = sorted(rec.time for rec in slow.requests())
    assert all(b - a >= 0.25 for a, b in zip(times, times[1:], strict=False))


def test_http_request_timeout_gives_408(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout http-request 500\n"
                       f"    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        t0 = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response()
        took = time.monotonic() - t0
    assert r.status == 408
    assert 0.45 <= took < 1.0
    assert b.requests() == []


def test_client_timeout_while_reading_head_gives_408(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n",
                       defaults="    timeout client 400\n"))
    with RawConnection("127.0.0.1", port) as c:
        c.send(b"GET / HTTP/1.1\r\n")
        r = c.read_response()
    assert r.status == 408


def test_server_timeout_gives_504(proxy_factory, backend_factory, syslog_receiver) -> None:
    slow = backend_factory("slow", delay=2.0)
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout server 300\n"
                       f"    server s {slow.address}\n", syslog_receiver.address))
    r, took = _timed_get(port)
    assert r.status == 504
    assert 0.3 <= took < 1.0
    log = _log_for(syslog_receiver, lambda h: h.status == 504)
    assert log.termination_state == "sH--" and log.Tr == -1


def test_connect_timeout_retries_then_503(proxy_factory, blackhole, syslog_receiver) -> None:
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout connect 300\n    retries 1\n"
                       f"    server s 127.0.0.1:{blackhole}\n", syslog_receiver.address))
    r, took = _timed_get(port)
    assert r.status == 503
    assert 0.55 <= took < 1.3  # two attempts of 300 ms, no turn-around delay after a timeout
    log = _log_for(syslog_receiver, lambda h: h.status == 503)
    assert log.termination_state == "sC--" and log.retries == 1


def test_keepalive_timeout_closes_silently(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout http-keep-alive 300\n"
                       f"    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        assert c.request(build_request("GET", "/")).status == 200
        t0 = time.monotonic()
        assert c.is_closed(wait=2.0)
        assert 0.25 <= time.monotonic() - t0 < 1.0
        assert c.buf == b""  # no error page on an idle keep-alive connection


def test_invalid_response_gives_502(proxy_factory, backend_factory, syslog_receiver) -> None:
    b = backend_factory("junk", garbage=True)
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n",
                       syslog_receiver.address))
    r, _ = _timed_get(port)
    assert r.status == 502
    log = _log_for(syslog_receiver, lambda h: h.status == 502)
    assert log.termination_state == "PH--"


def test_server_closing_before_head_gives_502_SH(proxy_factory, syslog_receiver) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    sport = s.getsockname()[1]
    stop = threading.Event()

    def run() -> None:
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        port = free_port()
        proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s 127.0.0.1:{sport}\n",
                           syslog_receiver.address))
        r, _ = _timed_get(port)
        assert r.status == 502
        log = _log_for(syslog_receiver, lambda h: h.status == 502)
        assert log.termination_state == "SH--"
    finally:
        stop.set()
        t.join(2)
        s.close()


def test_no_usable_server_gives_503_nosrv(proxy_factory, backend_factory, syslog_receiver) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address} disabled\n",
                       syslog_receiver.address))
    r, _ = _timed_get(port)
    assert r.status == 503
    log = _log_for(syslog_receiver, lambda h: h.status == 503)
    assert log.server == "<NOSRV>" and log.termination_state == "SC--"
    assert (log.Tw, log.Tc, log.Tr) == (-1, -1, -1)


def test_httplog_line_fields(proxy_factory, backend_factory, syslog_receiver) -> None:
    b = backend_factory("ents3")
    port = free_port()
    proxy_factory(_cfg(f"listen esup\n    bind 127.0.0.1:{port}\n    server ents3 {b.address}\n",
                       syslog_receiver.address))
    r, _ = _timed_get(port)
    assert r.status == 200
    raw = syslog_receiver.wait_for(lambda line: "esup/ents3" in line)
    msg = parse_syslog(raw)
    assert msg.facility == 16 and msg.severity == 6  # local0.info
    log = parse_httplog(msg.message)
    assert log.client_ip == "127.0.0.1"
    assert (log.frontend, log.backend, log.server) == ("esup", "esup", "ents3")
    assert log.status == 200 and log.bytes_read == len(r.raw)
    assert log.termination_state == "----"
    assert log.request_line == "GET / HTTP/1.1"
    assert min(log.TR, log.Tw, log.Tc, log.Tr) >= 0 and log.Ta >= log.Tr
    assert (log.actconn, log.feconn, log.beconn, log.srv_conn) == (1, 1, 0, 0)  # logged once off the server
    assert (log.srv_queue, log.backend_queue) == (0, 0)


def test_bad_request_logged_as_badreq(proxy_factory, backend_factory, syslog_receiver) -> None:
    b = backend_factory("web")
    port = free_port()
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n",
                       syslog_receiver.address))
    with RawConnection("127.0.0.1", port) as c:
        r = c.request(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert r.status == 400
    log = _log_for(syslog_receiver, lambda h: h.status == 400)
    assert log.request_line == "<BADREQ>" and log.termination_state == "PR--"
    assert log.server == "<NOSRV>" and log.TR == -1


@pytest.mark.parametrize("dontlognull", [False, True])
def test_empty_connection_logging(proxy_factory, backend_factory, syslog_receiver, dontlognull: bool) -> None:
    b = backend_factory("web")
    port = free_port()
    extra = "    option dontlognull\n" if dontlognull else ""
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    timeout http-request 300\n{extra}"
                       f"    server s {b.address}\n", syslog_receiver.address))
    with RawConnection("127.0.0.1", port) as c:
        assert c.is_closed(wait=2.0)
        assert c.buf == b""  # nothing received: no error page
    r, _ = _timed_get(port)  # a real request afterwards is always logged
    assert r.status == 200
    _log_for(syslog_receiver, lambda h: h.status == 200)
    lines = [parse_httplog(parse_syslog(raw).message) for raw in syslog_receiver.lines]
    empties = [h for h in lines if h.request_line == "<BADREQ>"]
    if dontlognull:
        assert empties == []
    else:
        assert len(empties) == 1
        e = empties[0]
        assert e.status == 408 and e.termination_state == "cR--" and e.bytes_read == 0 and e.Ta >= 300
