"""The stats socket: HAProxy's CLI protocol on a UNIX or TCP socket, the thin asyncio shell of ``RuntimeApi``.

Rules (spec/haproxy.md §14):
- Address: a path (UNIX stream socket, created with ``mode`` permissions, e.g. 0o600), or ``ipv4@host:port`` /
  ``ipv6@[host]:port`` / ``host:port`` (TCP). A UNIX socket is bound under a temporary name, given its mode, then
  renamed over the path, so a client never finds a half-made socket and a reload replaces the old one atomically.
  ``stop()`` removes the path only if it is still ours (same inode).
- One connection = one session at the socket's ``level``. Without ``prompt``, the server reads one line (a line
  may hold several ``;``-separated commands), writes the answers and closes; a client that half-closes without a
  newline gets its last partial line executed. ``prompt`` switches to interactive mode: ``> `` is written after
  each answer and lines are read until ``quit``, end of input or the idle timeout. ``quit`` closes at once.
- ``timeout`` (``stats timeout``, default 10 s) closes an idle connection; ``maxconn`` (``stats maxconn``, default
  10) connections at most: extra ones are closed at once. A line longer than ``MAX_LINE`` closes the connection.

- With several workers the master binds the socket (``bind_listening``) before forking, and the state owner
  serves it (``StatsSocketServer(..., sock=s)``): the socket outlives a worker and a reload that keeps its
  address, and only the master removes the path, when it stops.

Public API:
    bind_listening(path_or_addr, mode=0o600) -> socket.socket (bound, listening, non-blocking)
    query(address, line, timeout=10.0) -> str (the client side: one line, the whole answer)
    StatsSocketServer(path_or_addr, mode=0o600, level="admin", api, *, timeout=10.0, maxconn=10, sock=None)
        async start(); async stop(); .address (path, or (host, port) once bound); .connections
    parse_address(text) -> ("unix", path) | ("tcp", (host, port))
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat as stat_mod
from typing import Any, cast

from balancier.proxy.runtime_api import LEVELS, RuntimeApi, Session

MAX_LINE = 65536


def parse_address(text: str) -> tuple[str, Any]:
    """``/run/x.sock`` | ``unix@/run/x.sock`` -> ("unix", path); ``ipv4@127.0.0.1:9999`` -> ("tcp", (host, port))."""
    if text.startswith("unix@"):
        return "unix", text[5:]
    family = ""
    if text.startswith(("ipv4@", "ipv6@")):
        family, text = text[:4], text[5:]
    elif text.startswith("/") or text.startswith("."):
        return "unix", text
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        if family:
            raise ValueError(f"stats socket: invalid address '{text}' (expected host:port)")
        return "unix", text
    host = host.strip("[]")
    if not host:
        host = "::" if family == "ipv6" else "0.0.0.0"
    return "tcp", (host, int(port_s))


class _CliProtocol(asyncio.Protocol):
    def __init__(self, server: StatsSocketServer) -> None:
        self.server = server
        self.api = server.api
        self.session: Session = Session(level=server.level)
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.closed = False

    # --- transport events -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: rely on the protocol, not the class
        self.transport = cast(asyncio.Transport, transport)
        if len(self.server.connections) >= self.server.maxconn:
            self.closed = True
            transport.close()
            return
        self.server.connections.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        self._arm()
        while not self.closed:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > MAX_LINE:
                    self._close()
                return
            line, self.buf = self.buf[:nl], self.buf[nl + 1:]
            self._line(line)

    def eof_received(self) -> bool | None:
        if not self.closed and self.buf.strip():
            line, self.buf = self.buf, b""
            self._line(line)
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.server.connections.discard(self)

    # --- work -----------------------------------------------------------------------------------------------------
    def _line(self, raw: bytes) -> None:
        assert self.transport is not None
        line = raw.decode("utf-8", "replace").rstrip("\r")
        sess = self.session
        answer = self.api.execute(line, sess)
        if sess.quit:
            self._close()
            return
        data = answer.encode("utf-8", "replace")
        if sess.prompt:
            data += b"> "  # one write: the answer and the prompt arrive together
        if data:
            self.transport.write(data)
        if not sess.prompt:
            # Non-interactive: one line, one answer, then the connection ends (also right after leaving prompt).
            self._close()

    def _arm(self) -> None:
        self._disarm()
        if self.server.timeout and self.server.timeout > 0:
            self.idle = asyncio.get_running_loop().call_later(self.server.timeout, self._close)

    def _disarm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()


def query(address: str, line: str, timeout: float = 10.0) -> str:
    """Send one command line, return the whole answer."""
    kind, target = parse_address(address)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(line.rstrip("\n").encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def bind_listening(path_or_addr: str, mode: int | None = 0o600) -> socket.socket:
    """A listening stats socket made outside any event loop (by the master, before the workers exist)."""
    kind, target = parse_address(path_or_addr)
    if kind == "unix":
        path = str(target)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(tmp)
            if mode is not None:
                os.chmod(tmp, mode)
            os.rename(tmp, path)
            sock.listen(128)
        except OSError:
            sock.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    else:
        host, port = target
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


class StatsSocketServer:
    def __init__(self, path_or_addr: str, mode: int | None = 0o600, level: str = "operator",
                 api: RuntimeApi | None = None, *, timeout: float = 10.0, maxconn: int = 10,
                 sock: socket.socket | None = None) -> None:
        if api is None:
            raise ValueError("StatsSocketServer needs a RuntimeApi")
        if level not in LEVELS:
            raise ValueError(f"stats socket: unknown level '{level}' (user, operator or admin)")
        self.kind, self.target = parse_address(path_or_addr)
        self.mode = mode
        self.level = level
        self.api = api
        self.timeout = timeout
        self.maxconn = maxconn
        self.connections: set[_CliProtocol] = set()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self.address: Any = self.target
        self._sock = sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is not None:  # bound by the master: serve a duplicate, the original stays with the master
            dup = socket.socket(fileno=os.dup(self._sock.fileno()))
            dup.setblocking(False)
            if self.kind == "unix":
                self._server = await loop.create_unix_server(lambda: _CliProtocol(self), sock=dup)
            else:
                self._server = await loop.create_server(lambda: _CliProtocol(self), sock=dup)
                self.address = dup.getsockname()[:2]
            return
        if self.kind == "unix":
            path = str(self.target)
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            self._server = await loop.create_unix_server(lambda: _CliProtocol(self), tmp)
            try:
                if self.mode is not None:
                    os.chmod(tmp, self.mode)
                os.rename(tmp, path)
            except OSError:
                self._server.close()
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)
            self.address = path
        else:
            host, port = self.target
            self._server = await loop.create_server(lambda: _CliProtocol(self), host, port)
            sock = self._server.sockets[0]
            self.address = sock.getsockname()[:2]

    async def stop(self) -> None:
        srv = self._server
        self._server = None
        if srv is not None:
            srv.close()
        for conn in list(self.connections):
            conn._close()
        if srv is not None:
            await srv.wait_closed()
        if self.kind == "unix" and self._inode is not None:
            path = str(self.target)
            try:
                st = os.stat(path)
                if stat_mod.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            self._inode = None
