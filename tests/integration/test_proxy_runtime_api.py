"""The runtime API wired into a running `balancier proxy`: `stats socket` driven with the real socat binary.

What an administrator does during maintenance: drain a server (no new load-balanced users, persistent users and
established keep-alive connections continue), then put it in maintenance (nothing goes there), then back to ready.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.backends import free_port
from support.http import ConnectionClosed, RawConnection, build_request, get

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (.ci/setup installs it)")


def socat(sock: Path, line: str) -> str:
    out = subprocess.run(["socat", "stdio", f"UNIX-CONNECT:{sock}"], input=line + "\n", capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout


def served_by(port: int, cookie: str | None = None) -> str:
    resp = get("127.0.0.1", port, "/", headers=[("Cookie", cookie)] if cookie else None)
    assert resp.status == 200, resp.raw[:200]
    return resp.header("X-Served-By") or "?"


def test_drain_maint_ready_over_the_stats_socket(tmp_path: Path, backend_factory, proxy_factory) -> None:  # type: ignore[no-untyped-def]
    a = backend_factory("srv_a")
    b = backend_factory("srv_b")
    sock = tmp_path / "admin.sock"
    port = free_port()
    cfg = f"""
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
listen farm
    bind 127.0.0.1:{port}
    balance roundrobin
    cookie SRV insert indirect nocache
    server srv_a {a.address} cookie A
    server srv_b {b.address} cookie B
"""
    proxy_factory(cfg)
    assert {served_by(port) for _ in range(4)} == {"srv_a", "srv_b"}

    # a keep-alive connection established before the drain keeps being served by srv_a
    keep = RawConnection("127.0.0.1", port, 5.0)
    first = keep.request(build_request("GET", "/", headers=[("Cookie", "SRV=A")]))
    assert first.header("X-Served-By") == "srv_a"

    assert socat(sock, "set server farm/srv_a state drain") == "\n"
    stat = list(csv.reader(io.StringIO(socat(sock, "show stat").lstrip("# "))))
    header, rows = stat[0], {(r[0], r[1]): r for r in stat[1:] if r}
    assert rows[("farm", "srv_a")][header.index("status")] == "DRAIN"
    assert {served_by(port) for _ in range(6)} == {"srv_b"}  # new users go elsewhere
    assert served_by(port, "SRV=A") == "srv_a"  # persistent users stay
    again = keep.request(build_request("GET", "/", headers=[("Cookie", "SRV=A")]))
    assert again.status == 200 and again.header("X-Served-By") == "srv_a"
    keep.close()

    assert socat(sock, "set server farm/srv_a state maint") == "\n"
    assert served_by(port, "SRV=A") == "srv_b"  # maint: nothing goes there, not even persistent users

    assert socat(sock, "set server farm/srv_a state ready") == "\n"
    assert {served_by(port) for _ in range(4)} == {"srv_a", "srv_b"}
    assert socat(sock, "get weight farm/srv_a").strip() == "1 (initial 1)"


def test_user_level_socket_cannot_change_state(tmp_path: Path, backend_factory, proxy_factory) -> None:  # type: ignore[no-untyped-def]
    a = backend_factory("srv_a")
    sock = tmp_path / "ro.sock"
    port = free_port()
    proxy_factory(f"""
global
    stats socket {sock} level user
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
listen farm
    bind 127.0.0.1:{port}
    server srv_a {a.address}
""")
    assert "Permission denied" in socat(sock, "set server farm/srv_a state maint")
    assert "farm,srv_a," in socat(sock, "show stat")


def test_drain_lets_requests_in_flight_finish_and_keeps_client_connections(tmp_path: Path, backend_factory,  # type: ignore[no-untyped-def]
                                                                         proxy_factory) -> None:
    """Without any cookie: requests already on the drained server finish there, and a client's keep-alive
    connection opened before the drain stays open and served (its next requests are load balanced elsewhere)."""
    a = backend_factory("srv_a")
    b = backend_factory("srv_b")
    sock = tmp_path / "admin.sock"
    port = free_port()
    proxy_factory(f"""
global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
listen farm
    bind 127.0.0.1:{port}
    balance roundrobin
    server srv_a {a.address}
    server srv_b {b.address}
""")
    idle = RawConnection("127.0.0.1", port, 5.0)
    assert idle.request(build_request("GET", "/")).status == 200
    # four slow requests in flight at once: each worker alternates over the two equal servers, so with any split
    # of four connections over the workers both servers get some
    slow = [RawConnection("127.0.0.1", port, 5.0) for _ in range(4)]
    for c in slow:
        c.send(build_request("GET", "/delay/800"))
    deadline = time.monotonic() + 3
    while not (any(r.target == "/delay/800" for r in a.requests())
               and any(r.target == "/delay/800" for r in b.requests())):
        assert time.monotonic() < deadline, (a.requests(), b.requests())
        time.sleep(0.02)
    assert socat(sock, "set server farm/srv_a state drain") == "\n"
    answers = [c.read_response() for c in slow]
    assert {r.status for r in answers} == {200}
    assert {r.header("X-Served-By") for r in answers} == {"srv_a", "srv_b"}  # srv_a finished its requests
    # the connection opened before the drain is neither closed nor refused; its new requests avoid srv_a once the
    # drain has reached its worker (the state owner relays it to the other workers within milliseconds)
    deadline = time.monotonic() + 2
    while True:
        after = [idle.request(build_request("GET", "/")) for _ in range(4)]
        assert all(r.status == 200 and not r.wants_close() for r in after)
        if {r.header("X-Served-By") for r in after} == {"srv_b"}:
            break
        assert time.monotonic() < deadline, "the drain never reached this connection's worker"
    for c in [idle, *slow]:
        c.close()


def test_show_sess_and_shutdown_sessions_server(tmp_path: Path, backend_factory, proxy_factory,  # type: ignore[no-untyped-def]
                                               syslog_receiver) -> None:
    """`show sess` lists the streams of the running proxy with their server; `shutdown sessions server` ends the
    ones on that server only, at once, as HAProxy 2.6 does: a request waiting for its response head gets the 502
    page and the log says `KH--` (observed: `farm farm/a 0/0/0/-1/1001 502 209 - - KH-- ...`); the server stays
    in the rotation.

    One worker: the stats socket is served by worker 0, and both commands see only that worker's streams (the
    other workers' streams are not relayed yet)."""
    a = backend_factory("srv_a")
    b = backend_factory("srv_b")
    sock = tmp_path / "admin.sock"
    port = free_port()
    proxy_factory(f"""
global
    nbthread 1
    stats socket {sock} level admin
defaults
    log {syslog_receiver.address} local3
    option httplog
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
listen farm
    bind 127.0.0.1:{port}
    balance roundrobin
    cookie SRV insert indirect nocache
    server srv_a {a.address} cookie A
    server srv_b {b.address} cookie B
""")
    on_a = RawConnection("127.0.0.1", port, 10.0)
    on_b = RawConnection("127.0.0.1", port, 10.0)
    on_a.send(build_request("GET", "/delay/3000", headers=[("Cookie", "SRV=A")]))
    on_b.send(build_request("GET", "/delay/1000", headers=[("Cookie", "SRV=B")]))
    deadline = time.monotonic() + 3
    while not (a.requests() and b.requests()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sess = socat(sock, "show sess")
    lines = [ln for ln in sess.splitlines() if ln]
    assert any(" fe=farm be=farm srv=srv_a " in ln for ln in lines), sess
    assert any(" fe=farm be=farm srv=srv_b " in ln for ln in lines), sess
    assert all(ln.split(": ", 1)[0].startswith("0x") and " src=127.0.0.1:" in ln for ln in lines), sess
    t0 = time.monotonic()
    assert socat(sock, "shutdown sessions server farm/srv_a") == "\n"
    killed = on_a.read_response(timeout=2.5)
    assert time.monotonic() - t0 < 1.5  # ended now, not answered after the 3 s delay
    assert killed.status == 502  # HAProxy's page, then the connection closes
    with pytest.raises((ConnectionClosed, ConnectionError)):
        on_a.read_response(timeout=1)
    raw = syslog_receiver.wait_for(lambda x: '"GET /delay/3000 HTTP/1.1"' in x, timeout=3)
    assert re.search(r" farm farm/srv_a \d+/\d+/\d+/-1/\d+ 502 \d+ - - KHVN ", raw), raw  # K: killed by the admin
    assert on_b.read_response().header("X-Served-By") == "srv_b"  # the other server's stream is untouched
    remaining = socat(sock, "show sess")
    assert " srv=srv_a " not in remaining, remaining
    assert {served_by(port) for _ in range(4)} == {"srv_a", "srv_b"}
    for c in (on_a, on_b):
        c.close()
