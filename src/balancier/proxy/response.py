"""The response side of an HTTP stream: server bytes to the client, and what ends a response.

Rules (HAProxy §10, §11, §13):
- 1xx interim responses (100 Continue) are forwarded as they are, then the final head is awaited.
- The final head is validated by `http1` and rewritten only when needed: hop-by-hop fields removed, the
  persistence cookie processed, `Connection: close` when the client connection will close (or `keep-alive` for
  an HTTP/1.0 client that keeps it).
- Fast path (`_fast_response`, the common case): an HTTP/1.1 client, a response `scan_response_head` takes
  (validated as the full parser would), no `Set-Cookie` to look at and no cookie to insert: the validated bytes
  go out as received, head and body in one write; only the server's `Connection` field is replaced by
  `Connection: close` (client closing) or removed (server closing, client kept). Anything else takes the full
  path below, which gives the same result for what the fast path takes.
- Bodies: Content-Length is a plain countdown; chunked goes through `BodyFramer`; read-until-close ends with the
  server's close and closes the client. Bytes after a body make the server connection untrustworthy: it is
  closed, not pooled. `101 Switching Protocols` turns the stream into a tunnel.
- Server close before a complete head → 502 `SH`, invalid head → 502 `PH`; a request on a *reused* connection
  that died before any response byte is replayed once on a fresh connection (see serverside.py).
- A complete response recycles the server connection: into the pool (keep-alive both ways, request fully sent),
  kept private (`http-reuse never`), or closed.
- This is a mixin of `HttpStream` (stream.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from balancier.http1 import (
    BodyFramer,
    Framing,
    HttpError,
    build_response_head,
    parse_response_head,
    strip_hop_by_hop,
)
from balancier.http1.heads import COMMON_STATUS, RESPONSE_MEMO, match_common_response
from balancier.proxy.serverside import (
    ACTIVE,
    IDEMPOTENT,
    KAL,
    PAUSE_PIPELINE,
    PAUSE_SRV_FULL,
    R_BODY,
    R_HEAD,
    TUNNEL,
)

if TYPE_CHECKING:
    from balancier.http1 import RequestHead, ResponseHead
    from balancier.proxy.pool import ServerConn
    from balancier.proxy.runtime import Route, Runtime
    from balancier.proxy.servers import Server


class ResponseSide:
    """Server events and response forwarding for `HttpStream`."""

    if not TYPE_CHECKING:  # the state lives in HttpStream's slots (the type checker reads the declarations)
        __slots__ = ()

    # state owned by HttpStream (declared here for the type checker)
    rt: Runtime
    route: Route
    transport: Any
    phase: int
    buf: bytes
    head: RequestHead | None
    srv: Server | None
    pers: Any
    ck_resp: str
    sconn: ServerConn | None
    reused: bool
    replayed: bool
    out: bytes
    replay: bytes | None
    req_done: bool
    rstate: int
    rbuf: bytes
    resp: ResponseHead | None
    resp_ka: bool
    fast_resp: bool
    ck_none: str
    rframer: BodyFramer | None
    r_left: int
    status: int
    bytes_out: int
    s_last: float
    s_read_paused: bool
    t_resp: float
    client_ka: bool
    resp_started: bool
    private: ServerConn | None

    if TYPE_CHECKING:  # implemented by HttpStream or the other mixin; declared only for the type checker

        def data_received(self, data: bytes) -> None:
            ...

        def _pause_client(self, why: int) -> None:
            ...

        def _resume_client(self, why: int) -> None:
            ...

        def _server_error(self, status: int, a: str, b: str) -> None:
            ...

        def _abort(self, a: str, b: str) -> None:
            ...

        def _finish(self, a: str, b: str, status: int, close: bool = False) -> None:
            ...

        def _drop_sconn(self, abort: bool) -> None:
            ...

        def _connect(self) -> None:
            ...

    def srv_data(self, data: bytes) -> None:
        self.s_last = self.rt.loop.time()
        if self.phase == TUNNEL:
            self.bytes_out += len(data)
            self.transport.write(data)
            return
        if self.rstate == R_BODY:
            left = self.r_left
            if left > 0:  # Content-Length countdown
                n = len(data)
                junk = n > left
                if junk:
                    data = data[:left]  # bytes after the body: the server connection cannot be trusted any more
                    n = left
                self.r_left = left - n
                self.bytes_out += n
                self.transport.write(data)
                if left == n:
                    self._response_done(server_reusable=not junk)
                return
            framer = self.rframer
            if framer is None:  # read until close
                self.bytes_out += len(data)
                self.transport.write(data)
                return
            try:
                n = framer.feed(data)
            except HttpError:
                self._abort("S", "D")
                return
            junk = n < len(data)
            if junk:
                data = data[:n]
            self.bytes_out += n
            self.transport.write(data)
            if framer.done:
                self._response_done(server_reusable=not junk)
            return
        if self.rbuf:
            self.rbuf += data
        elif self.fast_resp and self.req_done and self._fast_response(data):
            return
        else:
            self.rbuf = data
        self._on_response_bytes()

    def _fast_response(self, data: bytes) -> bool:
        """The common final response (see `scan_response_head`) forwarded with the least work: the validated head
        goes out as received, with only `Connection` changed for a client that will close, head and body in one
        write. False when the full path must handle it (nothing was done then)."""
        # scan_response_head written out (the same match, its groups read the same way), with the memo of heads
        # seen before (see heads.HeadMemo: used the same way as in heads.parse_request_head)
        memo = RESPONSE_MEMO
        key = None
        if memo.on:
            # a server answers with heads of one length (nginx's Date field is fixed-width): look where the last
            # head ended first. A memo key is a head up to its first CRLFCRLF, so a key followed by CRLFCRLF
            # here is this response's head, without a search
            end = memo.last
            e = None
            if data[end:end + 4] == b"\r\n\r\n" and end + 4 <= self.rt.bufsize:
                key = data[:end]
                if key == memo.last_key:  # the last response's head again (same servers, same second): no hash
                    e = memo.last_entry
                else:
                    e = memo.entries.get(key)
            if e is None:
                hint = end if key is not None else -1  # where a key was looked up already
                end = data.find(b"\r\n\r\n", 0, self.rt.bufsize)
                if end < 0:
                    return False
                if end != hint:
                    key = data[:end]
                    e = memo.entries.get(key)
                    memo.last = end
            if e is not None and key is not memo.last_key:
                memo.last_key = key
                memo.last_entry = e
        else:
            e = None
            memo.skip()
        if e is None:
            try:
                m = match_common_response(data, 0, self.rt.bufsize)
            except SystemError:  # see heads._REQ_FAST_RE
                m = None
            if m is None:
                if key is not None:
                    memo.note(key, False)
                return False
            status, length, conn, close, set_cookie = m.groups()
            status = COMMON_STATUS[status]
            rlen = m.end()
            left = int(length)
            srv_ka = close is None
            set_cookie = set_cookie is not None
            # the Connection field line, from the CRLF before it to the CR after it: group 3 is its value with OWS,
            # after the 11 bytes "connection:" (see heads._RESP_FAST_RE)
            c0, c1 = (-1, -1) if conn is None else (m.start(3) - 13, m.end(3))
            if key is not None:
                memo.last_key = key
                memo.last_entry = (status, rlen, left, c0, c1, srv_ka, set_cookie)
                memo.note(key, memo.last_entry)
        elif e:
            memo.hits += 1
            status, rlen, left, c0, c1, srv_ka, set_cookie = e
        else:
            memo.hits += 1
            return False
        if self.pers is not None:  # (insert mode never comes here: stream.py clears fast_resp)
            if set_cookie:
                return False  # the server's cookie may have to be rewritten: full path
            self.ck_resp = self.ck_none
        self.t_resp = self.s_last
        self.status = status
        self.resp_started = True
        self.resp_ka = srv_ka
        n = len(data) - rlen
        junk = n > left
        if self.rt.stopping:
            self.client_ka = False
        if self.client_ka == srv_ka:
            # the server's Connection field (if any) already says what we do; HTTP/1.1 keeps alive without one
            out = data if not junk else data[:rlen + left]
        else:
            if c0 >= 0:  # the Connection field line, from the CRLF before it to the CR after it
                head = data[:c0] + data[c1:rlen - 2]
            else:
                head = data[:rlen - 2]
            tail = data[rlen:rlen + left]
            out = head + b"\r\n" + tail if self.client_ka else head + b"Connection: close\r\n\r\n" + tail
        self.bytes_out += len(out)
        self.transport.write(out)
        if n >= left:
            self._response_done(not junk)
        else:
            self.r_left = left - n
            self.rstate = R_BODY
        return True

    def _on_response_bytes(self) -> None:
        head_req = self.head
        assert head_req is not None
        while True:
            try:
                resp = parse_response_head(self.rbuf, self.rt.bufsize, head_req.method)
            except HttpError:
                self._server_error(502, "P", "H")
                return
            if resp is None:
                return
            if 100 <= resp.status < 200 and resp.status != 101:
                raw = self.rbuf[:resp.raw_len]
                self.rbuf = self.rbuf[resp.raw_len:]
                self.bytes_out += len(raw)
                self.resp_started = True
                self.transport.write(raw)
                if not self.rbuf:
                    return
                continue
            break
        self.t_resp = self.s_last
        self.resp = resp
        self.resp_ka = resp.keep_alive and resp.framing != Framing.UNTIL_CLOSE
        self.status = resp.status
        buf = self.rbuf
        self.rbuf = b""
        self._forward_response_head(resp, buf)

    def _forward_response_head(self, resp: ResponseHead, buf: bytes) -> None:
        """`buf` starts with the response head (resp.raw_len bytes), maybe followed by body bytes."""
        route = self.route
        head_req = self.head
        assert head_req is not None
        tunnel = resp.status == 101
        framing = resp.framing
        if framing == Framing.UNTIL_CLOSE or not self.req_done or self.rt.stopping:
            self.client_ka = False
        rlen = resp.raw_len
        self.resp_started = True
        if (self.client_ka and self.pers is None and not tunnel and head_req.version == "HTTP/1.1"
                and resp.version == "HTTP/1.1" and buf[0] != 13 and resp.connection_tokens <= _KEEP_ALIVE
                and raw_forwardable(resp.headers, buf, rlen, True)):
            # fast path: nothing to change in the head; head and the body bytes at hand go out in one write
            if framing == Framing.LENGTH:
                left = resp.content_length
                n = len(buf) - rlen
                if n <= left:
                    self.bytes_out += len(buf)
                    self.transport.write(buf)
                    if n == left:
                        self._response_done()
                        return
                    self.r_left = left - n
                    self.rstate = R_BODY
                    return
            if framing == Framing.NONE:
                self.bytes_out += rlen
                self.transport.write(buf if len(buf) == rlen else buf[:rlen])
                self._response_done(server_reusable=len(buf) == rlen)
                return
            out = buf[:rlen]
        else:
            headers = strip_hop_by_hop(resp.headers, resp.connection_tokens)
            if self.pers is not None and not tunnel:
                headers, self.ck_resp = route.be.persist_response(
                    self.pers, self.srv, headers, head_req.method, resp.status, self.rt.loop.time())
            if tunnel:
                headers.append(("Connection", "upgrade"))
                up = resp.get("Upgrade")
                if up is not None:
                    headers.append(("Upgrade", up))
            elif not self.client_ka:
                headers.append(("Connection", "close"))
            elif head_req.version == "HTTP/1.0":
                headers.append(("Connection", "keep-alive"))
            out = build_response_head("HTTP/1.1", resp.status, resp.reason, headers)
        rest = buf[rlen:] if len(buf) > rlen else b""
        if tunnel:
            self.phase = TUNNEL
            self.client_ka = False
            self.req_done = True
            self.bytes_out += len(out) + len(rest)
            self.transport.write(out + rest if rest else out)
            if self.buf:  # bytes the client sent after its request belong to the tunnel
                cbuf, self.buf = self.buf, b""
                self._resume_client(PAUSE_PIPELINE)
                self.data_received(cbuf)
            return
        if framing == Framing.NONE:
            self.bytes_out += len(out)
            self.transport.write(out)
            self._response_done(server_reusable=not rest)
            return
        self.rstate = R_BODY
        if framing == Framing.UNTIL_CLOSE:
            self.bytes_out += len(out) + len(rest)
            self.transport.write(out + rest if rest else out)
            return
        if framing == Framing.LENGTH:
            left = resp.content_length
            junk = len(rest) > left
            if junk:
                rest = rest[:left]
            self.r_left = left - len(rest)
            self.bytes_out += len(out) + len(rest)
            self.transport.write(out + rest if rest else out)
            if self.r_left == 0:
                self._response_done(server_reusable=not junk)
            return
        framer = self.rframer = BodyFramer(framing, 0, True)
        n = 0
        if rest:
            try:
                n = framer.feed(rest)
            except HttpError:
                self.bytes_out += len(out)
                self.transport.write(out)
                self._abort("S", "D")
                return
            if n < len(rest):
                rest = rest[:n]
        self.bytes_out += len(out) + n
        self.transport.write(out + rest if rest else out)
        if framer.done:
            self._response_done(server_reusable=n == len(buf) - rlen)

    def srv_eof(self) -> None:
        self._srv_closed()

    def srv_lost(self, exc: Exception | None) -> None:
        if self.sconn is not None:
            self._srv_closed()

    def _srv_closed(self) -> None:
        if self.phase == TUNNEL:
            self._response_done()
            return
        if self.phase != ACTIVE:
            return
        if self.rstate == R_HEAD:
            # a reused connection that died before answering: replay once on a fresh one, not a retry
            if (self.reused and not self.rbuf and not self.resp_started and self.replay is not None
                    and not self.replayed and self._may_replay()):
                self.replayed = True
                self.out = self.replay
                self.replay = None
                self._drop_sconn(abort=True)
                self._connect()
                return
            self._server_error(502, "S", "H")
            return
        if self.rframer is None and self.r_left == 0:  # read until close: this is the normal end
            self.client_ka = False
            self._response_done(server_reusable=False)
            return
        self._abort("S", "D")

    def _may_replay(self) -> bool:
        head = self.head
        assert head is not None
        return head.method in IDEMPOTENT or self.route.reuse in ("aggressive", "always")

    def srv_pause_writing(self) -> None:
        self._pause_client(PAUSE_SRV_FULL)

    def srv_resume_writing(self) -> None:
        self._resume_client(PAUSE_SRV_FULL)

    def _response_done(self, server_reusable: bool = True) -> None:
        """The response was forwarded completely: log, recycle the server connection, next request."""
        route = self.route
        sc = self.sconn
        self.sconn = None
        if sc is not None:
            keep = (server_reusable and self.resp_ka and route.conn_mode == KAL and self.req_done
                    and self.phase == ACTIVE)
            if self.s_read_paused and sc.transport is not None:
                sc.transport.resume_reading()
                self.s_read_paused = False
            sc.owner = None
            if keep and not self.rt.stopping:
                if route.reuse == "never" and self.client_ka:
                    self.private = sc
                elif route.reuse != "never":
                    self.rt.pool.put(sc, self.s_last)
                else:
                    sc.close()
            else:
                sc.close()
        self._finish("-", "-", self.status)

_KEEP_ALIVE = frozenset(("keep-alive",))
_HOP_NAMES = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"))
_HOP_LENGTHS = frozenset(len(n) for n in _HOP_NAMES)


def raw_forwardable(headers: list[tuple[str, str]], raw: bytes, raw_len: int, allow_connection: bool) -> bool:
    """Whether a validated head can be forwarded byte for byte: no hop-by-hop field to remove, and the parser
    normalised nothing (a collapsed Content-Length list shows as a field count that differs from the lines)."""
    if raw.count(b"\n", 0, raw_len) != len(headers) + 2:
        return False
    for name, _ in headers:
        if len(name) in _HOP_LENGTHS:
            ln = name.lower()
            if ln in _HOP_NAMES and not (allow_connection and ln == "connection"):
                return False
    return True
