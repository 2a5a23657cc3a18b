"""Tiny HTTP/1.x clients for tests that must see exact bytes, plus a wrapper around the real curl.

Rules:
- `RawConnection` sends bytes as given (nothing is fixed up) and reads responses with HTTP/1.1 framing
  (Content-Length, chunked, read-until-close, no body for HEAD/1xx/204/304); interim 1xx responses are
  returned separately in `Response.interim`. Every read is bounded by a timeout.
- `Response.headers` keeps the raw pairs in order; `header(name)` looks up case-insensitively.
- `curl()` runs the curl binary (never a library) with a hard timeout and returns status, headers, body.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field


class ConnectionClosed(Exception):
    """The peer closed before a complete response arrived (`.partial` holds what did arrive)."""

    def __init__(self, msg: str, partial: bytes = b"") -> None:
        super().__init__(msg)
        self.partial = partial


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    interim: list[Response] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def wants_close(self) -> bool:
        tokens = {t.strip().lower() for v in self.header_values("Connection") for t in v.split(",")}
        return "close" in tokens or (self.version == "HTTP/1.0" and "keep-alive" not in tokens)


class RawConnection:
    """One TCP connection; send raw bytes, read framed responses."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, source: str | None = None) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.eof = False

    # ---- low level ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False at EOF. Raises TimeoutError at the deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response within {self.timeout}s; got {self.buf[:300]!r}")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no complete response within {self.timeout}s; got {self.buf[:300]!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until_close(self, timeout: float | None = None) -> bytes:
        """Everything until the peer closes (bounded by the timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        out, self.buf = self.buf, b""
        return out

    def is_closed(self, wait: float = 1.0) -> bool:
        """True if the peer closes (EOF/RST) within `wait` seconds with no further data pending."""
        deadline = time.monotonic() + wait
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed("closed inside a head", self.buf)
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(f"closed with {n - len(self.buf)} body bytes missing", self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    # ---- responses ---------------------------------------------------------------------------------
    def read_response(self, method: str = "GET", timeout: float | None = None) -> Response:
        """Read one final response (interim 1xx collected in `.interim`)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        interim: list[Response] = []
        while True:
            raw_head = b""
            while not self.buf and not self.eof:
                self._fill(deadline)
            if not self.buf and self.eof:
                raise ConnectionClosed("closed before a response")
            status_line = self._read_line(deadline)
            raw_head += status_line + b"\n"
            parts = status_line.rstrip(b"\r").decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"bad status line {status_line!r}")
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers: list[tuple[str, str]] = []
            while True:
                line = self._read_line(deadline)
                raw_head += line + b"\n"
                line = line.rstrip(b"\r")
                if not line:
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers.append((k, v.strip()))
            resp = Response(version, status, reason, headers, b"", raw_head)
            if 100 <= status < 200 and status != 101:
                interim.append(resp)
                continue
            resp.interim = interim
            resp.body = self._read_body(resp, method, deadline)
            resp.raw += resp.body
            return resp

    def _read_body(self, resp: Response, method: str, deadline: float) -> bytes:
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return b""
        te = ",".join(resp.header_values("Transfer-Encoding")).lower()
        if "chunked" in te:
            body = b""
            while True:
                size_line = self._read_line(deadline).rstrip(b"\r")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_line(deadline).rstrip(b"\r"):
                        pass
                    return body
                body += self._read_exact(size, deadline)
                self._read_exact(2, deadline)
        cl = resp.header("Content-Length")
        if cl is not None:
            return self._read_exact(int(cl), deadline)
        while self._fill(deadline):
            pass
        out, self.buf = self.buf, b""
        return out

    def request(self, data: bytes, method: str = "GET", timeout: float | None = None) -> Response:
        self.send(data)
        return self.read_response(method, timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_request(method: str = "GET", target: str = "/", host: str = "test", headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """A well-formed request (adds Content-Length when there is a body)."""
    lines = [f"{method} {target} {version}", f"Host: {host}"]
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(host: str, port: int, target: str = "/", headers: list[tuple[str, str]] | None = None,
        timeout: float = 5.0, source: str | None = None) -> Response:
    """One GET on a fresh connection (`Connection: close`)."""
    with RawConnection(host, port, timeout, source) as c:
        return c.request(build_request("GET", target, headers=[*(headers or []), ("Connection", "close")]))


@dataclass
class CurlResult:
    returncode: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: str

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def curl(url: str, *args: str, headers: list[str] | None = None, timeout: float = 10.0,
         data: bytes | None = None) -> CurlResult:
    """Run `curl -sS -i URL ARGS...`; the last response's status and headers are returned."""
    cmd = ["curl", "-sS", "-i", "--max-time", str(timeout), "--noproxy", "*"]
    for h in headers or []:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    cmd += [*args, url]
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout + 5)
    out = p.stdout
    status, hdrs, body = 0, [], out
    # With redirects/100-continue several heads may precede the body: take the last one.
    while out.startswith(b"HTTP/"):
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
        body = out = rest
        if not 100 <= status < 200:
            break
    return CurlResult(p.returncode, status, hdrs, body, p.stderr.decode(errors="replace"))


__all__ = ["ConnectionClosed", "CurlResult", "RawConnection", "Response", "build_request", "curl", "get"]
