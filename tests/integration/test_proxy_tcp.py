"""`mode tcp`: byte relay with half-close, retries, timeouts and tcplog lines, against real loopback servers."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import test_tcp_peers
from test_tcp_peers import TcpPeer

from support.backends import free_port
from support.syslog import parse_syslog

peers = test_tcp_peers.peers  # the fixture: every peer closed at teardown

TCPLOG = re.compile(
    r"^(?P<ip>[\d.]+):(?P<port>\d+) \[[^\]]+\] (?P<fe>\S+) (?P<be>[^/\s]+)/(?P<srv>\S+) "
    r"(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tt>\d+) (?P<bytes>\d+) (?P<ts>\S\S) "
    r"(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rc>\+?\d+) (?P<sq>\d+)/(?P<bq>\d+)$")


class EchoServer:
    """Echoes what it reads, upper-cased; on EOF from the client it sends 'BYE' and closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        conn.sendall(b"BYE")
                        return
                    conn.sendall(data.upper())
            except OSError:
                return

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    s = EchoServer()
    try:
        yield s
    finally:
        s.close()


def _cfg(body: str, syslog: str | None = None) -> str:
    glob = f"global\n    nbthread 1\n    log {syslog} local0\n" if syslog else "global\n    nbthread 1\n"
    logs = "    log global\n    option tcplog\n" if syslog else ""
    return (f"{glob}defaults\n    mode tcp\n{logs}    timeout connect 1s\n    timeout client 5s\n"
            f"    timeout server 5s\n{body}")


def _recv_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    while True:
        data = s.recv(65536)
        if not data:
            return out
        out += data


def test_tcp_relay_with_half_close_and_tcplog(proxy_factory, echo, syslog_receiver) -> None:
    port = free_port()
    proxy_factory(_cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    server e 127.0.0.1:{echo.port}\n",
                       syslog_receiver.address))
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"hello ")
        s.sendall(b"world")
        time.sleep(0.1)
        s.shutdown(socket.SHUT_WR)  # the server sees EOF only through the relayed half-close
        assert _recv_all(s) == b"HELLO WORLDBYE"
    finally:
        s.close()
    raw = syslog_receiver.wait_for(lambda line: "raw raw/e" in line)
    m = TCPLOG.match(parse_syslog(raw).message)
    assert m, raw
    assert m["ts"] == "--" and m["bytes"] == "14" and m["rc"] == "0"
    assert int(m["Tw"]) >= 0 and int(m["Tc"]) >= 0 and int(m["Tt"]) >= 90  # the client held the connection ~100 ms


def test_tcp_connect_failure_closes_client_silently(proxy_factory, syslog_receiver) -> None:
    dead = free_port()
    port = free_port()
    proxy_factory(_cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    retries 1\n    server d 127.0.0.1:{dead}\n",
                       syslog_receiver.address))
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"ping")
        t0 = time.monotonic()
        assert _recv_all(s) == b""  # nothing is sent in TCP mode
        assert 0.9 <= time.monotonic() - t0 < 2.5  # one retry after the 1 s turn-around delay
    finally:
        s.close()
    raw = syslog_receiver.wait_for(lambda line: "raw raw/" in line)
    m = TCPLOG.match(parse_syslog(raw).message)
    assert m and m["ts"] == "SC" and m["rc"] == "1"


def test_tcp_client_timeout(proxy_factory, echo, syslog_receiver) -> None:
    port = free_port()
    text = _cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    timeout client 300\n    timeout server 300\n"
                f"    server e 127.0.0.1:{echo.port}\n", syslog_receiver.address)
    proxy_factory(text)
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"x")
        t0 = time.monotonic()
        assert _recv_all(s) == b"X"
        assert 0.25 <= time.monotonic() - t0 < 1.0
    finally:
        s.close()
    raw = syslog_receiver.wait_for(lambda line: "raw raw/e" in line)
    m = TCPLOG.match(parse_syslog(raw).message)
    assert m and m["ts"] in ("cD", "sD")


def test_half_close_with_megabytes_both_ways(proxy_factory, peers) -> None:
    """The client streams 4 MB of lines and shuts its write side; the answer (4 MB upper-cased, then the line
    count) keeps coming after the client's EOF, through the balancer's flow control in both directions."""
    lines = TcpPeer("lines")
    peers.append(lines)
    port = free_port()
    proxy_factory(_cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    server l {lines.address}\n"))
    line = b"abcdefghijklmnopqrstuvwxyz0123456789" * 3 + b"\n"
    count = 4 * 1024 * 1024 // len(line)
    s = socket.create_connection(("127.0.0.1", port))

    def send() -> None:
        for i in range(0, count, 1000):
            s.sendall(line * min(1000, count - i))
        s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        got = _recv_all(s, timeout=20)
    finally:
        sender.join(20)
        s.close()
    assert got == line.upper() * count + b"BYE %d\n" % count


def test_soft_stop_lets_established_tcp_connections_finish(proxy_factory, peers) -> None:
    """SIGUSR1: the listener closes at once, an established TCP connection keeps relaying until its client is
    done, then the process exits by itself."""
    lines = TcpPeer("lines")
    peers.append(lines)
    port = free_port()
    proxy = proxy_factory(_cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    server l {lines.address}\n"))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"before\n")
        assert s.recv(100) == b"BEFORE\n"
        proxy.soft_stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the listener goes away...
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("still accepting after SIGUSR1")
        assert proxy.alive(), "... but the process waits for its TCP connection"
        s.sendall(b"after\n")
        assert s.recv(100) == b"AFTER\n"
        s.shutdown(socket.SHUT_WR)
        assert _recv_all(s) == b"BYE 2\n"
    finally:
        s.close()
    assert proxy.wait_exit(5) == 0, proxy.explain()


def test_relay_with_two_workers(proxy_factory, peers) -> None:
    """`nbthread 2`: connections spread over two worker processes relay and half-close the same way."""
    lines = TcpPeer("lines")
    peers.append(lines)
    port = free_port()
    proxy_factory(_cfg(f"listen raw\n    bind 127.0.0.1:{port}\n    server l {lines.address}\n")
                  .replace("    nbthread 1\n", "    nbthread 2\n"))
    for i in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"n%d\n" % i)
            s.shutdown(socket.SHUT_WR)
            assert _recv_all(s) == b"N%d\nBYE 1\n" % i
    assert lines.accepted == 20
