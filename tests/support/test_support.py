"""Self-tests of the shared test support and of the bundled portal app (real sockets, no proxy)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from support.backends import BackendFactory, free_port
from support.http import ConnectionClosed, RawConnection, build_request, curl, get
from support.proxy import ProxyStartError, bind_addresses, start_proxy
from support.syslog import SyslogReceiver, parse_httplog, parse_syslog


def test_portal_pages_and_sessions(backend_factory: BackendFactory) -> None:
    b = backend_factory("ents3", host="127.0.0.2")
    base = f"http://{b.address}"
    r = curl(base + "/")
    assert r.status == 200 and "served by ents3" in r.text and "not logged in" in r.text
    assert r.header("X-Served-By") == "ents3"
    login = curl(base + "/login?user=alice")
    cookie = login.header("Set-Cookie") or ""
    assert cookie.startswith("JSESSIONID=") and cookie.endswith("; Path=/")
    sid = cookie.split(";")[0]
    assert "logged in as alice" in curl(base + "/", headers=[f"Cookie: {sid}"]).text
    assert "session lost" in curl(base + "/", headers=["Cookie: JSESSIONID=UNKNOWN"]).text
    assert curl(base + "/health").status == 200
    assert curl(base + "/nope").status == 404
    assert curl(base + "/status/503").status == 503


def test_portal_echo_and_records(backend_factory: BackendFactory) -> None:
    b = backend_factory("web")
    with RawConnection("127.0.0.1", b.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: A\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        data = json.loads(c.read_response().body)
        r2 = c.request(build_request("GET", "/echo?second"))
    assert data["headers"] == [["Host", "x"], ["X-Mixed-Case", "A"], ["Transfer-Encoding", "chunked"]]
    assert data["body_length"] == 8 and data["index"] == 0
    assert json.loads(r2.body)["index"] == 1
    recs = b.records()
    assert [r.target for r in recs] == ["/echo", "/echo?second"]
    assert b.per_connection() == {recs[0].conn_id: 2}
    # The JSON view used by the demo and by tests running the portal as a process.
    listed = json.loads(get("127.0.0.1", b.port, "/__requests?clear=1").body)
    assert [x["target"] for x in listed] == ["/echo", "/echo?second"]
    assert b.records() == []


def test_portal_knobs(backend_factory: BackendFactory) -> None:
    b = backend_factory("web")
    b.set(status=503)
    assert get("127.0.0.1", b.port).status == 503
    b.reset_knobs()
    b.set(delay=0.3)
    t0 = time.monotonic()
    assert get("127.0.0.1", b.port).status == 200
    assert time.monotonic() - t0 >= 0.3
    b.reset_knobs()
    b.set(close_after_head=True)
    with pytest.raises(ConnectionClosed):
        get("127.0.0.1", b.port)
    b.reset_knobs()
    b.set(garbage=True)
    with pytest.raises(ValueError):
        get("127.0.0.1", b.port)
    b.reset_knobs()
    b.set(body_size=100_000)
    assert len(get("127.0.0.1", b.port).body) == 100_000
    b.reset_knobs()
    assert len(get("127.0.0.1", b.port, "/bytes/3000000").body) == 3_000_000
    b.refuse()
    with pytest.raises(ConnectionRefusedError):
        get("127.0.0.1", b.port)
    b.accept()
    assert get("127.0.0.1", b.port).status == 200
    never = backend_factory("down", listen=False)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", never.port), timeout=2)


def test_portal_bare_lf_and_garbage_are_recorded(backend_factory: BackendFactory) -> None:
    """What a lax proxy would let through must show up in the records."""
    b = backend_factory("web")
    with RawConnection("127.0.0.1", b.port) as c:
        assert c.request(b"GET /health?lf HTTP/1.1\nHost: x\n\n").status == 200
    with RawConnection("127.0.0.1", b.port) as c:
        assert c.request(b"NOT-HTTP\r\n\r\n").status == 400
    assert [r.target for r in b.requests()] == ["/health?lf"]
    assert len(b.errors()) == 1


def test_portal_as_a_process() -> None:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "balancier.portal", "--name", "ents1", "--port", str(port)],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in (p.stdout.readline() if p.stdout else "")
        r = get("127.0.0.1", port, "/")
        assert r.status == 200 and "served by ents1" in r.text
    finally:
        p.terminate()
        p.wait(5)
    assert p.returncode == 0


def test_syslog_receiver_and_parsers() -> None:
    line = ('<158>Nov 26 08:58:37 haproxy[28870]: 127.0.0.1:54322 [26/Nov/2026:08:58:37.709] esup-proxy '
            'esup-proxy/ents2 0/0/0/0/0 200 159 - - --VN 1/1/0/0/0 0/0 "GET /x HTTP/1.1"\n')
    with SyslogReceiver() as r:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(line.encode(), (r.host, r.port))
        got = r.wait_for(lambda x: "GET /x" in x, timeout=2)
    m = parse_syslog(got)
    assert (m.facility, m.severity, m.tag, m.pid) == (19, 6, "haproxy", 28870)
    log = parse_httplog(m.message)
    assert (log.server, log.status, log.bytes_read, log.termination_state) == ("ents2", 200, 159, "--VN")
    retried = parse_httplog('127.0.0.1:1 [26/Nov/2026:08:58:37.709] f b/d 0/2003/-1/-1/2003 503 217 - - SC-- '
                            '1/1/0/0/+2 0/0 "GET / HTTP/1.1"')
    assert (retried.Tc, retried.retries, retried.redispatched) == (-1, 2, True)
    with pytest.raises(ValueError):
        parse_httplog("not a log line")


def test_bind_addresses_and_start_errors() -> None:
    cfg = "listen a 127.0.0.3:81\nfrontend f\n    bind 127.0.0.1:8080,127.0.0.2:8081 ssl crt x\n"
    assert bind_addresses(cfg) == [("127.0.0.1", 8080), ("127.0.0.2", 8081), ("127.0.0.3", 81)]
    with pytest.raises(ProxyStartError):
        start_proxy("this is not a configuration\n    bind 127.0.0.1:1\n", "haproxy", timeout=5)


def test_proxy_process_against_haproxy(backend_factory: BackendFactory) -> None:
    b = backend_factory("app")
    port = free_port()
    cfg = (f"defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
           f"listen p\n    bind 127.0.0.1:{port}\n    server app {b.address}\n")
    with start_proxy(cfg, "haproxy") as p:
        assert p.alive()
        assert get("127.0.0.1", port, "/").status == 200
        p.soft_stop()
        assert p.wait_exit(5) is not None
    assert not p.alive()
