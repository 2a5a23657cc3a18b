"""The end of one HTTP request: counters, then one httplog record.

Rules (HAProxy §12.2, §12.4):
- Timers in ms, -1 for a step that did not happen: TR = first byte → end of the head; Tw = end of the head → start
  of the last connection attempt (queue + turn-around delays), or → now when no connection was ever made after a
  queue or an attempt; Tc = that attempt → connected (0 on a reused connection); Tr = connected → response head;
  Ta = first byte → now.
- Termination state: A and B from the stream; C and D are the cookie flags when the backend has a `cookie`,
  else `-`.
- Counters are written once per request here, not on every packet: req_tot/hrsp/bin/bout on frontend, backend and
  server, stot on backend and server for requests that got a server.
- `option dontlognull` concerns connections that carried no data at all; the stream decides (stream.py
  `_close_silently`), every call here logs.
- Called once the request has left its server and backend (stream.py `_finish`), so srv_conn and beconn
  exclude it, as in HAProxy's lines (`1/1/0/0/0` for a lone client).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from balancier.proxy.logs import HttpLogRecord

if TYPE_CHECKING:
    from balancier.proxy.stream import HttpStream


_hrsp_index = {status: status // 100 for status in range(100, 600)}.get


def _ms(d: float) -> int:
    return int(d * 1000.0) if d > 0 else 0


def finish_log(s: HttpStream) -> None:
    route = s.route
    fe = route.fe
    be = route.be
    backend = be.backend
    status = s.status
    srv = s.srv
    head = s.head
    idx = _hrsp_index(status, 0)  # 1..5 for 1xx..5xx, 0 for anything else
    bytes_in = s.bytes_in  # request body bytes: 0 for most requests, so their sums are skipped
    bytes_out = s.bytes_out
    if head is not None:
        fe.req_tot += 1
        fe.hrsp[idx] += 1
        backend.req_tot += 1
        backend.hrsp[idx] += 1
        fe.bin += bytes_in + head.raw_len
    elif bytes_out:  # an error page sent for a bad request
        fe.req_tot += 1
        fe.hrsp[idx] += 1
        backend.req_tot += 1
        backend.hrsp[idx] += 1
        fe.bin += bytes_in
    elif bytes_in:
        fe.bin += bytes_in
    if bytes_out:
        fe.bout += bytes_out
        backend.bout += bytes_out
    if bytes_in:
        backend.bin += bytes_in
    if srv is not None:
        srv.req_tot += 1
        srv.stot += 1
        backend.stot += 1
        srv.hrsp[idx] += 1
        if bytes_in:
            srv.bin += bytes_in
        if bytes_out:
            srv.bout += bytes_out
    logger = fe.logger
    if logger is None:
        return
    now = s.rt.loop.time()
    t0 = s.t_first or now
    if head is not None:
        th = s.t_head
        TR = _ms(th - t0)
        if s.t_connected >= 0:
            Tw = _ms(s.t_conn - th)
            Tc = _ms(s.t_connected - s.t_conn)
            Tr = _ms(s.t_resp - s.t_connected) if s.t_resp >= 0 else -1
        else:
            Tw = _ms(now - th) if (s.t_conn or s.q_srv or s.q_be or s.flags_b == "Q" or s.fails) else -1
            Tc = Tr = -1
        line: str | None = f"{head.method} {head.target} {head.version}"
    else:
        TR = Tw = Tc = Tr = -1
        line = None
    ck_req = s.ck_req if be.cookie is not None else "-"
    ck_resp = s.ck_resp if be.cookie is not None else "-"
    rec = HttpLogRecord(
        s.cip, s.cport, s.date_first or time.time() - (now - t0), fe.log_name, backend.name,
        srv.name if srv is not None else s.applet,
        TR, Tw, Tc, Tr, _ms(now - t0), status, s.bytes_out, "-", "-",
        f"{s.flags_a}{s.flags_b}{ck_req}{ck_resp}",
        s.rt.actconn, fe.feconn, backend.beconn, srv.served if srv is not None else 0,
        s.fails, s.redispatched, s.q_srv, s.q_be, line,
    )
    logger.log_http(rec)

