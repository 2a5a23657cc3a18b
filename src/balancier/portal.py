"""The bundled portal application: the demo's application servers and the tests' backends.

`python -m balancier.portal --name ents3 --port 18001 [--host 127.0.0.1]` serves a tiny web portal over
HTTP/1.1 (keep-alive, asyncio, standard library only). It plays the part of the reference deployment's Java
portal: it keeps sessions in memory under a `JSESSIONID` cookie, so a user who lands on another server
loses their session, exactly the limit the reference deployment lived with.

Pages:
- `/`                 HTML "served by NAME" and the session state ("logged in as x", "session lost", none).
- `/login?user=x`     creates a session: `Set-Cookie: JSESSIONID=<random>; Path=/`.
- `/logout`           forgets the session.
- `/health`           200 "ok" (also any `OPTIONS` or `HEAD`, which is what HAProxy's httpchk sends).
- `/echo`             JSON of what was received: method, target, version, headers (raw pairs, in order),
                      client peer, body length, this server's name, the connection's request index.
- `/bytes/N`          streams N bytes (`a`), Content-Length framed, without holding them in memory.
- `/status/CODE`      answers CODE with a short body.
- `/delay/MS`         answers after MS milliseconds.
- `/__requests`       JSON list of every request recorded (itself excluded); `?clear=1` empties the list.

Rules this file keeps:
- Every response says who answered, in the body and in `X-Served-By`, so clients and tests can count.
- Every request is recorded as received (header names in their original case and order), because tests
  compare what a proxy forwards. Unparsable input is recorded too (kind "error"), never silently dropped:
  a smuggled request must show up if a proxy lets one through.
- Request bodies are counted, not kept, so a 1 GiB upload costs no memory; `/bytes/N` streams likewise.
- The server-wide knobs (`Knobs`) let a test make the server slow, failing, truncating or talking garbage;
  they apply to every request, health checks included, because that is how a sick server behaves.
- Framing follows RFC 9112 as an application server would: chunked wins over Content-Length.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024  # larger than any proxy's limit, so the proxy is the one that refuses
STREAM_CHUNK = 64 * 1024
REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


@dataclass
class Knobs:
    """How the server misbehaves; changed by tests at any time (plain attribute writes)."""

    delay: float = 0.0  # seconds before each response head
    status: int | None = None  # force this status on every response
    body_size: int | None = None  # force a body of this many bytes on every response
    close_after_head: bool = False  # send the head (announcing a body) then close
    garbage: bool = False  # answer bytes that are not HTTP, then close
    close_after_response: bool = False  # close every connection after one response


@dataclass
class RequestRecord:
    """One request as the server received it."""

    kind: str  # "request" or "error" (unparsable input)
    conn_id: int
    index: int  # 0-based position of this request on its connection
    peer: tuple[str, int]
    method: str = ""
    target: str = ""
    version: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body_length: int = 0
    time: float = 0.0
    error: str = ""
    raw_head: str = ""

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


class BadInput(Exception):
    """The peer sent something this server cannot frame."""


@dataclass
class Session:
    user: str
    created: float


class PortalServer:
    """The portal's HTTP/1.1 server; run with `serve()` inside an event loop."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.knobs = Knobs()
        self.record = record
        self.records: list[RequestRecord] = []
        self.sessions: dict[str, Session] = {}
        self.connections = 0
        self._lock = threading.Lock()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD,
                                                  reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self, drop_connections: bool = True) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if drop_connections:
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

    # ---- records ---------------------------------------------------------------------------------------
    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def _record(self, rec: RequestRecord) -> None:
        if self.record:
            with self._lock:
                self.records.append(rec)

    # ---- connection handling ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            conn_id = self.connections
        self._writers.add(writer)
        peer_info = writer.get_extra_info("peername") or ("", 0)
        peer = (str(peer_info[0]), int(peer_info[1]))
        index = 0
        buf = b""
        try:
            while True:
                head, buf = await _read_head(reader, buf)
                if head is None:
                    if buf:
                        self._record(RequestRecord("error", conn_id, index, peer, error="truncated head",
                                                   raw_head=buf[:2000].decode("latin-1"), time=time.time()))
                    return
                rec = RequestRecord("request", conn_id, index, peer, time=time.time(),
                                    raw_head=head.decode("latin-1"))
                try:
                    _parse_head(head, rec)
                    buf = await _read_body(reader, buf, rec)
                except BadInput as e:
                    rec.kind, rec.error = "error", str(e)
                    self._record(rec)
                    await self._send_simple(writer, 400, "bad request\n", close=True)
                    return
                index += 1
                if rec.target.split("?", 1)[0] == "/__requests":
                    await self._send_records(writer, rec)
                    continue
                self._record(rec)
                keep = await self._respond(writer, rec)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send_records(self, writer: asyncio.StreamWriter, rec: RequestRecord) -> None:
        qs = parse_qs(urlsplit(rec.target).query)
        data = [asdict(r) for r in self.snapshot()]
        if qs.get("clear"):
            self.clear()
        body = json.dumps(data).encode()
        writer.write(_head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                     + body)
        await writer.drain()

    async def _send_simple(self, writer: asyncio.StreamWriter, status: int, text: str, close: bool) -> None:
        body = text.encode()
        hdrs = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        if close:
            hdrs.append(("Connection", "close"))
        writer.write(_head(status, hdrs) + body)
        await writer.drain()

    async def _respond(self, writer: asyncio.StreamWriter, rec: RequestRecord) -> bool:
        """Answer one request; return whether the connection stays open."""
        k = self.knobs
        delay = k.delay
        if rec.target.startswith("/delay/"):
            delay += _int_or(urlsplit(rec.target).path[len("/delay/"):], 0) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        if k.garbage:
            writer.write(b"THIS IS NOT HTTP AT ALL\x00\x01\r\n\r\n")
            await writer.drain()
            return False
        status, headers, body, stream_len = self._page(rec)
        if k.status is not None:
            status = k.status
        if k.body_size is not None:
            body, stream_len = b"", k.body_size
        length = len(body) if stream_len is None else stream_len
        keep = _wants_keep_alive(rec) and not k.close_after_response
        all_headers = [("Date", formatdate(usegmt=True)), ("Server", "balancier-portal"),
                       ("X-Served-By", self.name), *headers, ("Content-Length", str(length))]
        if not keep:
            all_headers.append(("Connection", "close"))
        elif rec.version == "HTTP/1.0":
            all_headers.append(("Connection", "keep-alive"))
        writer.write(_head(status, all_headers))
        if k.close_after_head:
            await writer.drain()
            return False
        if rec.method != "HEAD" and status not in (204, 304):
            if stream_len is None:
                writer.write(body)
            else:
                await _stream(writer, stream_len)
        await writer.drain()
        return keep

    # ---- the application -------------------------------------------------------------------------------
    def _page(self, rec: RequestRecord) -> tuple[int, list[tuple[str, str]], bytes, int | None]:
        """(status, headers, body, streamed length or None) for one request."""
        parts = urlsplit(rec.target)
        path, qs = parts.path, parse_qs(parts.query)
        if rec.method == "OPTIONS" or path == "/health":
            return 200, [("Content-Type", "text/plain")], b"ok\n", None
        if path == "/echo":
            data = {"server": self.name, "method": rec.method, "target": rec.target, "version": rec.version,
                    "headers": rec.headers, "peer": list(rec.peer), "body_length": rec.body_length,
                    "conn_id": rec.conn_id, "index": rec.index}
            return 200, [("Content-Type", "application/json")], json.dumps(data).encode(), None
        if path.startswith("/bytes/"):
            n = _int_or(path[len("/bytes/"):], -1)
            if n < 0:
                return 400, [("Content-Type", "text/plain")], b"bad size\n", None
            return 200, [("Content-Type", "application/octet-stream")], b"", n
        if path.startswith("/status/"):
            code = _int_or(path[len("/status/"):], 0)
            if not 200 <= code <= 599:
                return 400, [("Content-Type", "text/plain")], b"bad status\n", None
            return code, [("Content-Type", "text/plain")], f"status {code} from {self.name}\n".encode(), None
        if path.startswith("/delay/"):  # the wait itself happens in _respond
            return 200, [("Content-Type", "text/plain"), ("X-Delay-Ms", path[len("/delay/"):])], \
                f"delayed answer from {self.name}\n".encode(), None
        sid = _cookie(rec, "JSESSIONID")
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache")]
        if path == "/login":
            user = (qs.get("user") or ["anonymous"])[0][:64]
            sid = secrets.token_hex(16).upper()
            self.sessions[sid] = Session(user, time.time())
            headers.append(("Set-Cookie", f"JSESSIONID={sid}; Path=/"))
            state = f"logged in as {user} (new session)"
        elif path == "/logout":
            if sid:
                self.sessions.pop(sid, None)
            headers.append(("Set-Cookie", "JSESSIONID=; Path=/; Max-Age=0"))
            state = "logged out"
        elif path == "/":
            if sid is None:
                state = "not logged in"
            elif sid in self.sessions:
                state = f"logged in as {self.sessions[sid].user}"
            else:
                state = "session lost"
        else:
            return 404, [("Content-Type", "text/plain")], f"not found on {self.name}\n".encode(), None
        return 200, headers, _html_page(self.name, state, rec).encode(), None


def _html_page(name: str, state: str, rec: RequestRecord) -> str:
    xff = rec.header("X-Forwarded-For") or "-"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Portal</title></head><body>\n"
        f"<h1>Portal served by {html.escape(name)}</h1>\n"
        f"<p id='session'>{html.escape(state)}</p>\n"
        f"<p id='client'>client {html.escape(rec.peer[0])}, X-Forwarded-For {html.escape(xff)}</p>\n"
        "<p><a href='/login?user=alice'>log in as alice</a> | <a href='/'>reload</a> | "
        "<a href='/logout'>log out</a></p>\n</body></html>\n"
    )


# ---- wire helpers --------------------------------------------------------------------------------------
def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _stream(writer: asyncio.StreamWriter, n: int) -> None:
    chunk = b"a" * STREAM_CHUNK
    while n > 0:
        part = chunk if n >= STREAM_CHUNK else chunk[:n]
        writer.write(part)
        n -= len(part)
        await writer.drain()


async def _read_head(reader: asyncio.StreamReader, buf: bytes) -> tuple[bytes | None, bytes]:
    """Return (head, rest) once a blank line ends the head; (None, leftover) at EOF."""
    while True:
        # Tolerate leading empty lines between requests (RFC 9112 §2.2). A bare-LF head is accepted
        # here on purpose: whatever a proxy lets through must be recorded, not lost.
        stripped = buf.lstrip(b"\r\n")
        ends = [(p, sep) for sep in (b"\r\n\r\n", b"\n\n", b"\n\r\n") if (p := stripped.find(sep)) >= 0]
        if ends:
            p, sep = min(ends)
            return stripped[:p], stripped[p + len(sep):]
        if len(stripped) > MAX_HEAD:
            raise BadInput("head too large")
        data = await reader.read(65536)
        if not data:
            return None, stripped
        buf = stripped + data


def _parse_head(head: bytes, rec: RequestRecord) -> None:
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadInput(f"bad request line {lines[0]!r}")
    rec.method, rec.target, rec.version = parts
    if not rec.version.startswith("HTTP/1."):
        raise BadInput(f"bad version {rec.version!r}")
    for line in lines[1:]:
        if ":" not in line:
            raise BadInput(f"bad header line {line!r}")
        name, value = line.split(":", 1)
        rec.headers.append((name, value.strip(" \t")))


async def _read_body(reader: asyncio.StreamReader, buf: bytes, rec: RequestRecord) -> bytes:
    """Consume the request body (counting it); return what follows it."""
    te = ",".join(rec.header_values("Transfer-Encoding")).lower()
    if te:
        if te.replace(" ", "").split(",")[-1] != "chunked":
            raise BadInput(f"unsupported transfer-encoding {te!r}")
        return await _read_chunked(reader, buf, rec)
    cls = rec.header_values("Content-Length")
    if not cls:
        return buf
    if len(set(cls)) != 1 or not cls[0].isdigit():
        raise BadInput(f"bad content-length {cls!r}")
    need = int(cls[0])
    rec.body_length = need
    while len(buf) < need:
        need -= len(buf)
        buf = await reader.read(min(need, 1 << 20))
        if not buf:
            raise asyncio.IncompleteReadError(b"", need)
    return buf[need:]


async def _read_line(reader: asyncio.StreamReader, buf: bytes) -> tuple[bytes, bytes]:
    while b"\n" not in buf:
        if len(buf) > 8192:
            raise BadInput("chunk line too long")
        data = await reader.read(65536)
        if not data:
            raise asyncio.IncompleteReadError(buf, None)
        buf += data
    line, rest = buf.split(b"\n", 1)
    return line.rstrip(b"\r"), rest


async def _read_chunked(reader: asyncio.StreamReader, buf: bytes, rec: RequestRecord) -> bytes:
    while True:
        line, buf = await _read_line(reader, buf)
        size_txt = line.split(b";", 1)[0].strip()
        if not size_txt or any(c not in b"0123456789abcdefABCDEF" for c in size_txt) or len(size_txt) > 16:
            raise BadInput(f"bad chunk size {line[:40]!r}")
        size = int(size_txt, 16)
        if size == 0:
            while True:  # trailers up to the empty line
                line, buf = await _read_line(reader, buf)
                if not line:
                    return buf
        rec.body_length += size
        need = size + 2  # data + CRLF
        while len(buf) < need:
            need -= len(buf)
            buf = await reader.read(min(need, 1 << 20))
            if not buf:
                raise asyncio.IncompleteReadError(b"", need)
        buf = buf[need:]


def _wants_keep_alive(rec: RequestRecord) -> bool:
    tokens = {t.strip().lower() for v in rec.header_values("Connection") for t in v.split(",")}
    if rec.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _cookie(rec: RequestRecord, name: str) -> str | None:
    for value in rec.header_values("Cookie"):
        for part in value.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
    return None


def _int_or(text: str, default: int) -> int:
    return int(text) if text.isdigit() and len(text) < 16 else default


async def serve(name: str, host: str, port: int) -> None:
    """Run one portal server until SIGTERM/SIGINT."""
    server = PortalServer(name, host, port, record=True)
    await server.start()
    print(f"portal {name} listening on http://{host}:{server.port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m balancier.portal", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="server name shown on every page (e.g. ents3)")
    p.add_argument("--port", type=int, required=True, help="TCP port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.name, args.host, args.port))
    except OSError as e:
        print(f"portal {args.name}: cannot listen on {args.host}:{args.port}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
