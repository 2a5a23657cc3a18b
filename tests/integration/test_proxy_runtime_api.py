"""The runtime API wired into a running `balancier proxy`: `stats socket` driven with the real socat binary.

What an administrator does during maintenance: drain a server (no new load-balanced users, persistent users and
established keep-alive connections continue), then put it in maintenance (nothing goes there), then back to ready.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request, get

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
