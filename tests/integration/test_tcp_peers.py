"""Real TCP peers for the `mode tcp` tests, and tests of the peers themselves.

Rules:
- Every peer is a plain threaded socket server on 127.0.0.1:<free port> that behaves one documented way, so a
  test reads as "client does X, server does Y, the balancer must relay Z". Peers stop (listening socket and
  every accepted connection closed) in `close()`, which the fixtures call even when a test fails.
- Behaviours (`TcpPeer(kind)`):
  - `lines`: a line service. Each complete line `x` gets `x.upper()` back; on EOF from the client it still
    answers the partial last line and then a `BYE <n>` line with the number of lines read, and closes. So a
    client that shuts down its write side still receives the rest of the answer (half-close).
  - `ident`: sends `<name>\n` at once, then behaves as `lines` (which server got this connection?).
  - `greet_close`: sends `HELLO\\n` at once, then shuts down its write side and keeps reading (and counting)
    until the client closes: the server half-closes first.
  - `silent`: accepts, reads and discards, never writes and never closes by itself (timeouts).
  - `reset`: on the first bytes received, closes with an RST (SO_LINGER 0): a server abort.
- `RedisServer` runs Debian's `redis-server` on a free loopback port with no persistence, in its own session,
  and stops it by pid (SIGTERM then SIGKILL) — never anything it did not start.
- `resp(*args)` encodes a RESP command; `read_resp(sock)` reads exactly one RESP reply (bulk strings of any size,
  arrays, integers, errors), so tests check protocol-level answers, not byte luck.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backends import free_port

KINDS = ("lines", "ident", "greet_close", "silent", "reset")


class TcpPeer:
    """One of the behaviours above, on 127.0.0.1:`port`. `accepted` counts connections, `received` bytes."""

    def __init__(self, kind: str, host: str = "127.0.0.1", name: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown peer kind {kind!r}")
        self.kind = kind
        self.name = name or kind
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self.open_conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
                self.open_conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _count(self, n: int) -> None:
        with self._lock:
            self.received += n

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            getattr(self, "_" + self.kind)(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self.open_conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _lines(self, conn: socket.socket) -> None:
        buf = b""
        n = 0
        while True:
            data = conn.recv(65536)
            if not data:
                if buf:
                    n += 1
                    conn.sendall(buf.upper() + b"\n")
                conn.sendall(b"BYE %d\n" % n)
                return
            self._count(len(data))
            buf += data
            *done, buf = buf.split(b"\n")
            if done:
                n += len(done)
                conn.sendall(b"".join(line.upper() + b"\n" for line in done))

    def _ident(self, conn: socket.socket) -> None:
        conn.sendall(self.name.encode() + b"\n")
        self._lines(conn)

    def _greet_close(self, conn: socket.socket) -> None:
        conn.sendall(b"HELLO\n")
        conn.shutdown(socket.SHUT_WR)
        while data := conn.recv(65536):
            self._count(len(data))

    def _silent(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        while not self._stop:
            try:
                conn.settimeout(0.2)
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                # the client half-closed: stay open and silent (only close() ends it)
                while not self._stop:
                    time.sleep(0.05)
                return
            self._count(len(data))

    def _reset(self, conn: socket.socket) -> None:
        data = conn.recv(65536)
        self._count(len(data))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        with self._lock:
            conns = list(self.open_conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        self.thread.join(2)


@pytest.fixture
def peers() -> Iterator[list[TcpPeer]]:
    """A list to append started peers to; all closed at the end (`peers.append(TcpPeer("lines"))`)."""
    started: list[TcpPeer] = []
    try:
        yield started
    finally:
        for p in started:
            p.close()


def recv_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until EOF; a reset after some data returns what came before it."""
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


# --- Redis -----------------------------------------------------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="Debian's redis-server is not installed "
                                                               "(apt-get install redis-server)")


class RedisServer:
    """`redis-server` on 127.0.0.1:`port`, no persistence, in a temp dir; `stop()` by pid."""

    def __init__(self, port: int | None = None) -> None:
        assert REDIS_SERVER is not None
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.pid = self.proc.pid
        try:
            self._wait_ready(10.0)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(resp("PING"))
                    if read_resp(s) == "PONG":
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready on {self.port} after {timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL now (a crash), and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.proc.wait(5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_servers() -> Iterator[list[RedisServer]]:
    """A list to append started redis servers to; all stopped by pid at the end."""
    started: list[RedisServer] = []
    try:
        yield started
    finally:
        for r in started:
            r.stop()


def resp(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespError(Exception):
    pass


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("connection closed in the middle of a RESP reply")
        self.buf += data

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return out

    def reply(self) -> object:
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(f"not a RESP reply: {line!r}")


_readers: dict[int, _Reader] = {}


def read_resp(sock: socket.socket) -> object:
    """One RESP reply from `sock` (bytes left over stay buffered for the next call on the same socket)."""
    r = _readers.get(id(sock))
    if r is None or r.sock is not sock:
        r = _readers[id(sock)] = _Reader(sock)
    return r.reply()


# --- the peers' own tests: a peer that misbehaves would make every relay test meaningless -----------------------

def test_lines_peer_answers_the_rest_after_half_close(peers: list[TcpPeer]) -> None:
    p = TcpPeer("lines")
    peers.append(p)
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(b"one\ntwo\nthr")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"ONE\nTWO\nTHR\nBYE 3\n"


def test_greet_close_and_reset_peers(peers: list[TcpPeer]) -> None:
    g, r = TcpPeer("greet_close"), TcpPeer("reset")
    peers += [g, r]
    with socket.create_connection(("127.0.0.1", g.port)) as s:
        s.settimeout(5)
        assert s.recv(100) == b"HELLO\n"
        assert s.recv(100) == b""  # half-closed by the server, our side still open
        s.sendall(b"late")
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        s.sendall(b"x")
        s.settimeout(5)
        with pytest.raises(ConnectionResetError):
            s.recv(100)
            s.recv(100)


@needs_redis
def test_redis_server_starts_and_stops(redis_servers: list[RedisServer]) -> None:
    r = RedisServer()
    redis_servers.append(r)
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        s.sendall(resp("SET", "k", "v") + resp("GET", "k"))
        assert read_resp(s) == "OK"
        assert read_resp(s) == b"v"
    r.stop()
    assert r.proc.poll() is not None
