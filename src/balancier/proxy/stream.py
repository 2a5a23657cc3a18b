"""The HTTP stream: one asyncio Protocol per client connection, driving requests to servers in order.

Rules (HAProxy §7-§13):
- A request head is parsed and validated by `http1` before any byte goes to a server; an invalid head gets
  `error_response(status)`, the connection is closed and the log says `<BADREQ>` with `PR--`.
- Pipelined requests are handled one after the other: bytes after the current request wait in `buf` (reading the
  client pauses when they pass `bufsize`) and are parsed once the response is complete.
- `Expect: 100-continue` is forwarded: the server answers `100 Continue` (forwarded as is) or a final status. The
  proxy never answers 100 itself, so a server that refuses the body can do so before the client sends it.
- Headers: hop-by-hop ones are removed (`strip_hop_by_hop`); `option forwardfor` appends its header last; the
  connection mode (KAL/SCL/CLO, the stronger of frontend and backend) adds `Connection: close` towards the server
  (SCL, CLO) and towards the client whenever the client connection will close after the response. The client
  connection closes after each response only when the frontend says httpclose (HAProxy 2.6 observed: a backend's
  httpclose closes the server side only, as http-server-close does). HTTP/1.0
  clients keep the connection only when they asked for it. Header names are forwarded as received (1.4 style).
  When the head needs no other change (no persistence cookie to rewrite, nothing normalised by the parser, no
  hop-by-hop field other than `Connection: close|keep-alive`), the validated bytes go out as received with the
  `Connection` field cut out and our fields spliced in before the blank line.
- Hot path economy: one clock read per event (`c_last`/`s_last` serve the log timers too), per-connection and
  per-request state lives in slots (a slot is read and written by offset; an instance dict costs a hashed lookup
  per access) and is set by generated functions storing each default (the constructor, and the reset before each
  request), persistence runs only when the request carries a Cookie (else flag N/-, as `persistence.on_request`
  would say, with one shared read-only result), what follows the fields of an HTTP/1.1 request (X-Forwarded-For,
  Connection, blank line) is made once per connection, a fast-path head's Connection field is cut out at the
  span its parse recorded, and a request without body or pipelined bytes skips the body bookkeeping.
  Responses go to the client as HTTP/1.1.
- Server connections: `http-reuse never` keeps a connection private to its client connection; `safe` takes pooled
  connections except for the first request of a client connection; `aggressive` also for first requests but only
  connections that already carried a request; `always` any idle one. A request that dies on a *reused* connection
  before any response byte is replayed once on a fresh connection (for a non-idempotent method only with
  `aggressive`/`always`), without counting as a retry.
- Retries (§8): only connect failures. `retries N` extra attempts; turn-around delay `min(1 s, timeout connect)`
  before retrying the same server after a real error (none after a timeout, none on redispatch); redispatch per the
  `option redispatch [N]` rules; `+` in the log when redispatched; 503 `SC`/`sC` at the end.
- Timeouts (§10) through the sweeper (timers.py): http-request/client while reading a head → 408 `cR` (silent
  close when nothing arrived); keep-alive idle → silent close; queue → 503 `sQ`; connect → retry, then 503 `sC`;
  server before the head → 504 `sH`; inactivity during data → close `sD`/`cD`.
- Flow control: each transport's write buffer is bounded by HIGH_WATER/LOW_WATER (pool.py); when the server side
  is full the client stops being read, and vice versa. Body bytes are passed through as received (no copies,
  no re-chunking).
- One HttpLogRecord per request (streamlog.py); counters on frontend, backend and server are updated once per
  request at its end.
- Layout: this module is the client side (request head and body, request end, timeouts); serverside.py chooses
  and connects the server; response.py forwards the response. `HttpStream` combines the three.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from balancier.http1 import (
    BodyFramer,
    Framing,
    HttpError,
    build_request_head,
    error_response,
    parse_request_head,
    strip_hop_by_hop,
)
from balancier.http1.heads import fields_without_connection
from balancier.proxy import httprules
from balancier.proxy import queue as squeue
from balancier.proxy.persistence import RequestPersistence
from balancier.proxy.pool import HIGH_WATER, LOW_WATER
from balancier.proxy.rawio import RawTransport
from balancier.proxy.response import ResponseSide, raw_forwardable
from balancier.proxy.serverside import (
    ACTIVE,
    CLOSED,
    CONNECTING,
    IDLE,
    KAL,
    PAUSE_PARKED,
    PAUSE_PIPELINE,
    PAUSE_SRV_FULL,
    QUEUED,
    R_HEAD,
    TUNNEL,
    TURNAROUND,
    ServerSide,
)
from balancier.proxy.streamlog import finish_log

if TYPE_CHECKING:
    from balancier.http1 import RequestHead
    from balancier.proxy.runtime import Route, Runtime



# Per-request state, restored by `_finish` before each request (values are immutable). Times are loop
# times (t_first: first byte of the request; date_first: its epoch, only when set by _close_silently); out:
# request bytes not yet written to a server; q_left: request body bytes still expected (-1 = chunked);
# req_framer/rframer: chunked bodies; r_left: response body bytes still expected (Content-Length); direct:
# persistence chose the server; in_be: counted in the backend's beconn; resp_ka: the server keeps the connection
# after this response; fast_resp: the response may take ResponseSide._fast_response; ck_none: the response
# cookie flag when the server sent no Set-Cookie.
_REQUEST_DEFAULTS: dict[str, Any] = dict(
    head=None, t_first=0.0, date_first=0.0, t_head=0.0, t_conn=0.0, t_connected=-1.0, t_resp=-1.0,
    srv=None, prev_srv=None, direct=False, pers=None, ck_req="-", ck_resp="-", fails=0, redispatched=False,
    pending=None, q_srv=0, q_be=0, task=None, turn=None, sconn=None, reused=False, replayed=False, out=b"",
    replay=None, req_framer=None, q_left=0, req_done=True, rstate=R_HEAD, rbuf=b"", resp=None, rframer=None,
    r_left=0, status=-1, bytes_out=0, bytes_in=0, s_last=0.0, s_read_paused=False, client_ka=False,
    resp_started=False, flags_a="-", flags_b="-", in_be=False, resp_ka=False, fast_resp=False, ck_none="-",
    applet="<NOSRV>",  # the log's server name when no server was chosen (<STATS>, <PROMEX>)
    added=None,  # httprules.Plan whose set-header fields this request gets appended (see _on_head_bytes)
)
# Per-connection state of a new stream (dport: the port the client connected to, read only when a server has no
# port; req_tail: what follows an HTTP/1.1 request's fields (forwardfor line, Connection, blank line), made at
# the first request, with the set-header fields of tail_plan; rule_plan: httprules.plan_for's answer for this
# connection; private: http-reuse never, this client's own idle server connection; counted: in
# actconn/feconn; ssl_fc and http_rules: set by the listener of a TLS bind / a route with http-request rules),
# then the per-request defaults. HttpStream keeps them in slots, set by _init_conn.
_CONN_DEFAULTS: dict[str, Any] = dict(
    transport=None, phase=IDLE, buf=b"", nreq=0, cpause=0, c_write_paused=False, c_pause_since=0.0, c_last=0.0,
    cip="", cport=0, dport=0, xff=None, req_tail=None, tail_plan=None, rule_plan=None, private=None, t_phase=0.0,
    counted=False, ssl_fc=False, http_rules=None, **_REQUEST_DEFAULTS,
)


class HttpStream(ResponseSide, ServerSide, asyncio.Protocol):
    """Client side of one connection plus the request/response in flight on it."""

    # state set from _CONN_DEFAULTS and _REQUEST_DEFAULTS; declared for the type checker
    rt: Runtime
    route: Route
    transport: Any
    buf: bytes
    c_pause_since: float
    c_last: float
    cport: int
    xff: str | None
    req_tail: bytes | None
    tail_plan: Any
    rule_plan: Any
    added: Any
    counted: bool
    head: RequestHead | None
    t_first: float
    date_first: float
    t_head: float
    ck_resp: str
    req_framer: BodyFramer | None
    q_left: int
    bytes_in: int
    flags_a: str
    flags_b: str
    in_be: bool
    ssl_fc: bool  # the client connection is TLS (set by the listener of a `bind ... ssl` line)
    http_rules: tuple[Any, ...] | None  # the route's http-request rules (set by the listener when any)
    __slots__ = ("rt", "route", *_CONN_DEFAULTS)

    if TYPE_CHECKING:  # generated below the class: stores rt, route and each default of _CONN_DEFAULTS

        def __init__(self, rt: Runtime, route: Route) -> None:
            ...

    # ------------------------------------------------------------------ client transport events
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if type(transport) is RawTransport:  # its limits are HIGH_WATER/LOW_WATER from the start (no call)
            peer = transport.peer
        else:
            transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
            peer = transport.get_extra_info("peername")
        if peer:
            self.cip, self.cport = peer[0], peer[1]
        route = self.route
        xff: Any = route.xff_cache.get(self.cip, _UNKNOWN)  # Route.xff_value's cache, read here first
        self.xff = route.xff_value(self.cip) if xff is _UNKNOWN else xff
        now = self.rt.loop.time()
        self.t_phase = now
        self.c_last = now
        if not self.rt.accept(self):
            self._pause_client(PAUSE_PARKED)

    def unpark(self) -> None:
        """The connection limit let this parked connection in."""
        self.t_phase = self.c_last = self.rt.loop.time()
        self._resume_client(PAUSE_PARKED)

    def data_received(self, data: bytes) -> None:
        self.c_last = self.rt.loop.time()
        ph = self.phase
        if ph == IDLE:
            if self.buf:
                self.buf += data
            else:
                self.buf = data
            self._on_head_bytes()
        elif ph == TUNNEL:
            self.bytes_in += len(data)
            if self.sconn is not None and self.sconn.transport is not None:
                self.sconn.transport.write(data)
        elif not self.req_done and not self.buf:
            self._req_body(data)
        else:
            self.buf = self.buf + data if self.buf else data
            if len(self.buf) > self.rt.bufsize:
                self._pause_client(PAUSE_PIPELINE)

    def eof_received(self) -> bool:
        # A half-close from the client: with a request in flight we keep the connection until the response is sent
        # (HAProxy does the same for HTTP/1: the client may shut its write side after the request).
        if self.phase == IDLE and not self.buf:
            self._close_silently("C")
            return False
        if self.phase == IDLE:  # partial head and then EOF: the client aborted
            self._finish("C", "R", 400, close=True)
            return False
        self.client_ka = False
        if not self.req_done:  # body cut short
            self._abort("C", "D")
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase == CLOSED:
            return
        if self.phase == IDLE:
            self._close_silently("C")
            return
        b = {QUEUED: "Q", TURNAROUND: "C", CONNECTING: "C", TUNNEL: "D"}.get(self.phase)
        if b is None:
            b = "H" if self.rstate == R_HEAD else "D"
        self._abort("C", b)

    def pause_writing(self) -> None:
        self.c_write_paused = True
        self.c_pause_since = self.rt.loop.time()
        sc = self.sconn
        if sc is not None and sc.transport is not None and not self.s_read_paused:
            self.s_read_paused = True
            sc.transport.pause_reading()

    def resume_writing(self) -> None:
        self.c_write_paused = False
        self.c_last = self.rt.loop.time()
        sc = self.sconn
        if sc is not None and sc.transport is not None and self.s_read_paused:
            self.s_read_paused = False
            self.s_last = self.c_last
            sc.transport.resume_reading()

    def _pause_client(self, why: int) -> None:
        if not self.cpause and self.transport is not None:
            self.transport.pause_reading()
        self.cpause |= why

    def _resume_client(self, why: int) -> None:
        if not self.cpause & why:
            return
        self.cpause &= ~why
        if not self.cpause and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # ------------------------------------------------------------------ request head
    def _on_head_bytes(self) -> None:
        if self.t_first == 0.0:
            # c_last is the time of the read that brought these bytes (or of the end of the previous request for
            # pipelined ones); the log's date is derived from it only when a line is written (streamlog.py)
            self.t_first = self.c_last
        try:
            head = parse_request_head(self.buf, self.rt.bufsize)
        except HttpError as e:
            self._bad_request(e.status)
            return
        if head is None:
            if len(self.buf) > self.rt.bufsize:
                self._bad_request(400)
            return
        stats = self.route.stats
        if stats is not None and self._stats_applet(stats, head):
            return
        rules = self.http_rules
        if rules is not None:  # http-request redirect/set-header (httprules.py; set by the listener)
            plan = self.rule_plan  # what the rules do on this connection, worked out at its first request
            if plan is None:
                plan = self.rule_plan = httprules.plan_for(rules, self.ssl_fc, self.route.xff_header)
            if plan is httprules.EMPTY_PLAN:
                pass
            elif plan is not httprules.NO_PLAN and httprules.appends(plan, head, self.buf, self.rt.bufsize):
                self.added = plan  # their fields go out after the request's own (_request_head_bytes)
            else:
                head = httprules.run(self, rules, head)
                if head is None:
                    return
        self.head = head
        self.t_head = self.c_last
        self.nreq += 1
        raw = self.buf
        self.buf = b""
        self._start_request(head, raw)

    def _stats_applet(self, stats: Any, head: RequestHead) -> bool:
        """The stats page or the Prometheus exporter answers this request itself (statsapplet.py). True when it
        did, or when it waits for the rest of an admin form (data_received parses the head again then)."""
        from balancier.proxy import statsapplet

        if statsapplet.service(stats, head) is None:
            return False
        need = head.raw_len + statsapplet.body_needed(stats, head)
        if len(self.buf) < need:
            return True
        body = self.buf[head.raw_len:need]
        rest = self.buf[need:]
        self.head = head
        self.t_head = self.c_last
        self.nreq += 1
        res = statsapplet.serve(stats, head, (self.cip, self.cport), body)
        assert res is not None
        self.buf = rest
        self.bytes_in = len(body)
        self.applet = res.service
        self.client_ka = res.keep_alive and not self.route.client_close and not self.rt.stopping
        if self.transport is not None and not self.transport.is_closing():
            self.bytes_out = len(res.raw)
            self.transport.write(res.raw)
        self._finish("L", "R", res.status, close=not self.client_ka)
        return True

    def _bad_request(self, status: int) -> None:
        self.status = status
        self.flags_a, self.flags_b = "P", "R"
        self.route.fe.ereq += 1
        self._send_and_close(error_response(status))

    def _start_request(self, head: RequestHead, raw: bytes) -> None:
        """`raw` starts with the request head (head.raw_len bytes); what follows is body or pipelined bytes."""
        route = self.route
        rt = self.rt
        self.client_ka = head.keep_alive and not route.client_close and not rt.stopping
        be = route.be
        be.backend.beconn += 1  # this request is on the backend until _finish
        self.in_be = True
        rlen = head.raw_len
        framing = head.framing
        body = b""
        if framing != _NONE or len(raw) != rlen:  # a body, or pipelined bytes (the common GET skips all this)
            rest = raw[rlen:] if len(raw) > rlen else b""
            if framing == _NONE:
                pass
            elif framing == _LENGTH and head.content_length > 0:
                left = head.content_length
                self.req_done = False
                if rest:
                    body, rest = rest[:left], rest[left:]
                    left -= len(body)
                self.q_left = left
                self.req_done = left == 0
            elif framing == _CHUNKED:
                framer = self.req_framer = BodyFramer(framing, 0, False)
                self.q_left = -1
                self.req_done = False
                if rest:
                    try:
                        n = framer.feed(rest)
                    except HttpError as e:
                        self._bad_request(e.status)
                        return
                    body, rest = rest[:n], rest[n:]
                    self.req_done = framer.done
            elif framing != _LENGTH:  # read-until-close never frames a request
                self._bad_request(400)
                return
            if rest:
                self.buf = rest
                if len(rest) > rt.bufsize:
                    self._pause_client(PAUSE_PIPELINE)
        # persistence, then the bytes for the server
        cookie_headers = None
        server = None
        ck_none = route.ck_none
        if ck_none is not None:  # the backend has a cookie
            self.ck_none = ck_none
            if head.has_cookie:
                pers = self.pers = be.persist_request(head, self.c_last)
                if pers.changed:
                    cookie_headers = pers.cookie_headers
                server = pers.server
            else:  # no Cookie field: persistence has nothing to read (flag N, or - for a passive cookie)
                pers = self.pers = _NO_COOKIE if ck_none == "N" else _NO_COOKIE_PASSIVE
            self.ck_req = pers.flag
            self.ck_resp = "N"
        # the response fast path: an HTTP/1.1 client, a response with a body to count, no cookie to insert
        method = head.method
        self.fast_resp = (route.resp_fast and head.version == "HTTP/1.1" and method != "HEAD"
                          and method != "CONNECT")
        out = self._request_head_bytes(head, cookie_headers, raw)
        if body:
            out += body
            self.bytes_in += len(body)
        self.out = out
        self._assign(server)

    def _request_head_bytes(self, head: RequestHead, cookie_headers: list[str] | None, raw: bytes) -> bytes:
        route = self.route
        xff = self.xff
        if xff is not None and route.xff_if_none and head.get(route.xff_header) is not None:
            xff = None
        tokens = head.connection_tokens
        if cookie_headers is None and (not tokens or tokens <= _CONN_PLAIN) and (head.plain or (
                not head.normalised and raw[0] != 13 and raw_forwardable(head.headers, raw, head.raw_len, bool(tokens)))):
            # fast path: the validated head goes out as received, without its Connection field (close or
            # keep-alive only), with our lines spliced in before the blank line
            rlen = head.raw_len
            added = self.added
            if xff is self.xff and head.version == "HTTP/1.1":
                # the usual request: what follows its fields is the same for every HTTP/1.1 request of this
                # connection (set-header fields, the forwardfor line, `Connection: close` towards the server
                # unless keep-alive)
                tail = self.req_tail
                if tail is None or added is not self.tail_plan:
                    if added is None and xff is route.tail_xff:  # the route's last client address again
                        tail = route.tail
                    else:
                        tail = _request_tail(
                            route.xff_header, xff, b"" if route.conn_mode == KAL else b"Connection: close\r\n",
                            b"" if added is None else added.lines)
                        if added is None:
                            route.tail_xff = xff
                            route.tail = tail
                    self.req_tail = tail
                    self.tail_plan = added
                if tokens:
                    return fields_without_connection(raw, rlen, head.conn_span) + tail
                if len(tail) == 2:  # nothing to add: the head as received
                    return raw if len(raw) == rlen else raw[:rlen]
                return raw[:rlen - 2] + tail
            base = fields_without_connection(raw, rlen, head.conn_span) if tokens else raw[:rlen - 2]
            if head.version == "HTTP/1.1":
                conn = b"" if route.conn_mode == KAL else b"Connection: close\r\n"
            else:  # 1.0 closes by default
                conn = b"Connection: keep-alive\r\n" if route.conn_mode == KAL else b""
            return base + _request_tail(route.xff_header, xff, conn, b"" if added is None else added.lines)
        headers = strip_hop_by_hop(head.headers, head.connection_tokens)
        if cookie_headers is not None:
            headers = _replace_cookies(headers, cookie_headers)
        added = self.added
        if added is not None:
            headers.extend(added.fields)
        if xff is not None:
            headers.append((route.xff_header, xff))
        if route.conn_mode != KAL:
            if head.version != "HTTP/1.0":
                headers.append(("Connection", "close"))
        elif head.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        return build_request_head(head.method, head.target, head.version, headers)

    # ------------------------------------------------------------------ request body
    def _req_body(self, data: bytes) -> None:
        left = self.q_left
        if left >= 0:
            n = len(data)
            if n > left:
                self.buf = data[left:]
                data = data[:left]
                n = left
                if len(self.buf) > self.rt.bufsize:
                    self._pause_client(PAUSE_PIPELINE)
            self.q_left = left - n
            self.req_done = left == n
        else:
            framer = self.req_framer
            assert framer is not None
            try:
                n = framer.feed(data)
            except HttpError:
                self._abort("P", "D" if self.resp_started else "H")
                return
            if n < len(data):
                self.buf = data[n:]
                data = data[:n]
                if len(self.buf) > self.rt.bufsize:
                    self._pause_client(PAUSE_PIPELINE)
            self.req_done = framer.done
        self.bytes_in += n
        sc = self.sconn
        if self.phase == ACTIVE and sc is not None and sc.transport is not None:
            self.replay = None  # body went out past what we kept: no replay
            self.s_last = self.c_last  # writing to the server is server-side activity too
            sc.transport.write(data)
        else:
            self.out += data
            if len(self.out) > HIGH_WATER:
                self._pause_client(PAUSE_SRV_FULL)

    # ------------------------------------------------------------------ ends
    def _server_error(self, status: int, a: str, b: str) -> None:
        srv = self.srv
        if srv is not None:
            srv.eresp += 1
        self.route.be.backend.eresp += 1
        self._drop_sconn(abort=True)
        self.status = status
        self.flags_a, self.flags_b = a, b
        self.client_ka = False
        self._send_and_close(error_response(status))

    def _fail(self, status: int, a: str, b: str) -> None:
        """No server connection could be had (no server, retries exhausted, queue): send the error page."""
        self.status = status
        self.flags_a, self.flags_b = a, b
        self.client_ka = False
        self._send_and_close(error_response(status))

    def _send_and_close(self, page: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.bytes_out += len(page)
            self.transport.write(page)
        self._finish(self.flags_a, self.flags_b, self.status, close=True)

    def _abort(self, a: str, b: str) -> None:
        """Something broke mid-stream: close both sides now."""
        if a == "C":
            if self.srv is not None:
                self.srv.cli_abrt += 1
            self.route.be.backend.cli_abrt += 1
        elif a == "S":
            if self.srv is not None:
                self.srv.srv_abrt += 1
            self.route.be.backend.srv_abrt += 1
        self.client_ka = False
        self._drop_sconn(abort=True)
        if self.transport is not None:
            self.transport.abort()
        self._finish(a, b, self.status, close=True)

    def _drop_sconn(self, abort: bool) -> None:
        sc = self.sconn
        self.sconn = None
        self.s_read_paused = False
        if sc is not None:
            sc.owner = None
            if abort:
                sc.abort()
            else:
                sc.close()

    def _cancel_pending_work(self) -> None:
        if self.pending is not None:
            squeue.cancel(self.pending)
            self.pending = None
        if self.task is not None:
            task, self.task = self.task, None
            task.cancel()
        if self.turn is not None:
            self.turn.cancel()
            self.turn = None

    def _finish(self, a: str, b: str, status: int, close: bool = False) -> None:
        """End of one request, whatever happened: log, count, release, then next request or close."""
        if self.phase == CLOSED:
            return
        if self.pending is not None or self.task is not None or self.turn is not None:
            self._cancel_pending_work()
        self.flags_a = a
        self.flags_b = b
        self.status = status
        # HAProxy logs once the stream has left its server and backend: srv_conn/beconn exclude it
        backend = self.route.be.backend
        if self.in_be:
            self.in_be = False
            backend.beconn -= 1
        srv = self.srv
        if srv is not None:  # squeue.release(backend, srv), inline
            backend.release(srv)
            if srv.queue or backend.queue:
                squeue.on_release(backend, srv)
        finish_log(self)
        self.srv = None
        transport = self.transport
        if close or not self.client_ka or transport is None or transport.is_closing():
            self._close()
            return
        # keep-alive: next request (possibly already buffered), from the per-request defaults
        _reset_request(self)
        self.phase = IDLE
        self.t_phase = self.rt.loop.time()
        if self.cpause:
            self._resume_client(PAUSE_PIPELINE | PAUSE_SRV_FULL)
        if self.buf:  # a pipelined request: its time starts now
            self.t_first = self.t_phase
            self._on_head_bytes()

    def _close_silently(self, why: str) -> None:
        """Nothing in progress (idle keep-alive, empty connection): close without a response.

        An idle keep-alive connection is never logged. A connection that never sent a byte is logged as HAProxy
        does (`<BADREQ>`, 408 `cR` on a timeout, 400 `CR` when the client left, 0 bytes) unless
        `option dontlognull`."""
        if self.phase == IDLE and self.nreq == 0 and not self.buf and not self.route.fe.cfg.dontlognull:
            now = self.rt.loop.time()
            self.t_first = self.t_phase  # accept time: Ta counts from there
            self.date_first = time.time() - (now - self.t_phase)
            self.status = 408 if why == "c" else 400
            self.flags_a, self.flags_b = why, "R"
            finish_log(self)
        self._close()

    def _close(self) -> None:
        if self.phase == CLOSED:
            return
        if self.pending is not None or self.task is not None or self.turn is not None:
            self._cancel_pending_work()
        self.phase = CLOSED
        if self.sconn is not None:
            self._drop_sconn(abort=True)
        if self.private is not None:
            self.private.close()
            self.private = None
        if self.transport is not None:
            self.transport.close()
        self.rt.release(self)

    def hard_close(self) -> None:
        """SIGTERM: drop everything now."""
        self._cancel_pending_work()
        if self.transport is not None:
            self.transport.abort()
        self._close()

    def soft_stop(self) -> None:
        """SIGUSR1: idle connections close now, busy ones after their current response."""
        if self.phase == IDLE and not self.buf:
            self._close()

    # ------------------------------------------------------------------ timeouts (called by the sweeper)
    def check(self, now: float) -> None:
        ph = self.phase
        route = self.route
        if ph == IDLE:
            if self.cpause & PAUSE_PARKED:
                return
            if not self.buf:
                tmo = route.t_keepalive if self.nreq else route.t_request_first
                if tmo is not None and now - self.t_phase >= tmo:
                    self._close_silently("c")
                return
            tmo = route.t_http_request
            if tmo is not None:
                if now - self.t_first >= tmo:
                    self._timeout_request()
                return
            tmo = route.t_client
            if tmo is not None and now - self.c_last >= tmo:
                self._timeout_request()
            return
        if ph == QUEUED:
            tmo = route.t_queue
            if tmo is not None and now - self.t_phase >= tmo:
                self._cancel_pending_work()
                self._fail(503, "s", "Q")
            return
        if ph == CONNECTING:
            tmo = route.t_connect
            if tmo is not None and now - self.t_phase >= tmo:
                task, self.task = self.task, None
                if task is not None:
                    task.cancel()
                self._connect_failed(timeout=True)
            return
        if ph == ACTIVE or ph == TUNNEL:
            ts = route.t_tunnel if ph == TUNNEL and route.t_tunnel is not None else route.t_server
            tc = route.t_tunnel if ph == TUNNEL and route.t_tunnel is not None else route.t_client
            if ph == ACTIVE and self.rstate == R_HEAD:
                if ts is not None and now - self.s_last >= ts:
                    self._server_timeout_head()
                    return
                if not self.req_done and tc is not None and now - self.c_last >= tc \
                        and not self.cpause & PAUSE_SRV_FULL:
                    self._abort("c", "H")
                return
            if ts is not None and not self.s_read_paused and now - self.s_last >= ts:
                self._abort("s", "D")
                return
            if tc is not None:
                if self.c_write_paused and now - self.c_pause_since >= tc:
                    self._abort("c", "D")
                elif (ph == TUNNEL or not self.req_done) and not self.cpause and now - self.c_last >= tc \
                        and (ph != TUNNEL or now - self.s_last >= tc):
                    self._abort("c", "D")

    def _timeout_request(self) -> None:
        self.status = 408
        self.flags_a, self.flags_b = "c", "R"
        self.client_ka = False
        self._send_and_close(error_response(408))

    def _server_timeout_head(self) -> None:
        if self.resp_started:  # only an interim response went out: nothing valid can follow
            self._abort("s", "H")
            return
        self._drop_sconn(abort=True)
        self.status = 504
        self.flags_a, self.flags_b = "s", "H"
        self.client_ka = False
        self._send_and_close(error_response(504))


_NONE, _LENGTH, _CHUNKED = Framing.NONE, Framing.LENGTH, Framing.CHUNKED  # plain names: cheaper than Framing.X
_CONN_PLAIN = frozenset(("close", "keep-alive"))
_UNKNOWN = object()
_TAILS: dict[tuple[str, str | None, bytes, bytes], bytes] = {}


def _request_tail(name: str, value: str | None, conn: bytes, before: bytes = b"") -> bytes:
    """`before`, then `name: value CRLF` (when there is a value), then `conn`, then the blank line, as bytes;
    remembered for the few client addresses a proxy sees at a time."""
    key = (name, value, conn, before)
    tail = _TAILS.get(key)
    if tail is None:
        if len(_TAILS) >= 4096:
            _TAILS.clear()
        line = b"" if value is None else f"{name}: {value}\r\n".encode("latin-1")
        tail = _TAILS[key] = before + line + conn + b"\r\n"
    return tail


def _storer(name: str, fields: dict[str, Any], args: tuple[str, ...] = (), make: type | None = None) -> Any:
    """A function storing its arguments and each field's default with one attribute store each (slots have no
    dict to update; the defaults are immutable literals, so their repr is their value). With `make`, it takes no
    `self`: it makes an instance of that class with object.__new__, fills it and returns it."""
    body = "".join(f"    self.{k} = {k}\n" for k in args)
    body += "".join(f"    self.{k} = {v!r}\n" for k, v in fields.items())
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": make}
    if make is None:
        exec(f"def {name}(self{''.join(', ' + a for a in args)}):\n{body}", ns)
    else:
        exec(f"def {name}({', '.join(args)}):\n    self = _new(_cls)\n{body}    return self\n", ns)
    return ns[name]


# HttpStream's constructor is generated as well: a new connection costs one Python frame, not two
HttpStream.__init__ = _storer("__init__", _CONN_DEFAULTS, ("rt", "route"))  # type: ignore[method-assign]
HttpStream.__init__.__qualname__ = "HttpStream.__init__"
# ... and what the listeners call per accepted connection: the same stores on a new instance, without the type's
# generic call of __init__ (argument tuple, lookup, a second frame; ~120 ns a connection)
new_stream = _storer("new_stream", _CONN_DEFAULTS, ("rt", "route"), HttpStream)
_reset_request = _storer("_reset_request", _REQUEST_DEFAULTS)


# The persistence result of a request without a Cookie field (flag N, or - for a passive cookie without
# indirect): shared, read-only (RequestPersistence.redispatched changes only a `direct` result).
_NO_COOKIE = RequestPersistence(flag="N")
_NO_COOKIE_PASSIVE = RequestPersistence(flag="-")


def _replace_cookies(headers: list[tuple[str, str]], cookies: list[str]) -> list[tuple[str, str]]:
    """Replace every Cookie header by the rewritten list, at the place of the first one."""
    out: list[tuple[str, str]] = []
    placed = False
    for name, value in headers:
        if len(name) == 6 and name.lower() == "cookie":
            if not placed:
                placed = True
                out.extend((name, c) for c in cookies)
            continue
        out.append((name, value))
    return out
