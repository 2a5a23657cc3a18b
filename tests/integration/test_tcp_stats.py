"""`show stat` counters for TCP streams, compared with HAProxy 2.6 after the same traffic.

Both proxies get the same `mode tcp` configuration (a line service and a server that refuses connections, with
`option redispatch`) and the same client traffic, one after the other: completed half-closed exchanges, a
redispatched connect, a client abort, and one connection still open while the stats are read. The counters a
TCP stream feeds (sessions current/max/total, bytes in/out, connection errors, retries, redispatches, client and
server aborts) and the row identities (mode, status) must be equal, row by row.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest
import test_tcp_peers
from test_tcp_peers import TcpPeer, recv_all

from support.backends import free_port
from support.proxy import ProxyProcess

peers = test_tcp_peers.peers  # the fixture: every peer closed at teardown
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy as the reference")

# Not compared: smax (depends on how fast each proxy notices a closed connection) and lbtot (not counted by the
# balancer core yet).
COLUMNS = ("scur", "stot", "bin", "bout", "econ", "wretr", "wredis", "cli_abrt", "srv_abrt", "status", "mode")


def show_stat(path: str) -> dict[tuple[str, str], dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"show stat\n")
        text = recv_all(s).decode()
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    return {(r["pxname"], r["svname"]): r for r in rows if r.get("pxname")}


def run(impl: str, lines: TcpPeer, sock_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    port, dead = free_port(), free_port()
    cfg = (f"global\n    nbthread 1\n    stats socket {sock_path} mode 600 level admin\n\n"
           "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\n"
           f"listen st\n    bind 127.0.0.1:{port}\n    retries 1\n    option redispatch\n"
           f"    server l {lines.address}\n    server d 127.0.0.1:{dead}\n")
    proxy = ProxyProcess(cfg, impl)
    try:
        for i in range(4):  # l, d (refused -> redispatched to l), l, d -> l
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"hello %d\n" % i)
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b"HELLO %d\nBYE 1\n" % i
        abort = socket.create_connection(("127.0.0.1", port), timeout=5)
        abort.sendall(b"abort\n")
        assert abort.recv(100) == b"ABORT\n"
        abort.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        abort.close()
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.sendall(b"held\n")
        assert held.recv(100) == b"HELD\n"
        time.sleep(0.3)
        rows = show_stat(str(sock_path))
        held.close()
        return rows
    finally:
        proxy.stop()


def test_tcp_counters_match_haproxy(peers: list[TcpPeer], tmp_path: Path) -> None:
    lines = TcpPeer("lines")
    peers.append(lines)
    ref = run("haproxy", lines, tmp_path / "h.sock")
    ours = run("balancier", lines, tmp_path / "b.sock")
    keys = [("st", "FRONTEND"), ("st", "l"), ("st", "d"), ("st", "BACKEND")]
    problems = []
    for key in keys:
        assert key in ref and key in ours, (key, list(ref), list(ours))
        for col in COLUMNS:
            if ref[key][col] != ours[key][col]:
                problems.append(f"{key[1]} {col}: haproxy {ref[key][col]!r} balancier {ours[key][col]!r}")
    assert not problems, "\n".join(problems)
