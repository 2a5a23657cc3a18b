"""Traffic and event logs: httplog / tcplog lines, syslog RFC 3164 over UDP, stdout / stderr.

Rules (spec/haproxy.md §12):
- ``option httplog`` line (HAProxy >= 1.7): ``%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
  %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r`` (no capture is supported, so ``%hr %hs`` never appear). The date is the local
  time of the request's first byte as ``dd/Mmm/yyyy:HH:MM:SS.mmm``; retries carry a ``+`` after a redispatch; the
  request line is quoted, ``"`` ``#`` and non-printable characters (< 0x20, >= 0x7f) escaped as ``#XX``;
  ``<BADREQ>`` when there is no valid request line.
- ``option httplog clf``: ``%{+Q}o %{-Q}ci - - [%trg] %r %ST %B "" "" %cp %ms %ft %b %s %TR %Tw %Tc %Tr %Ta %tsc %ac
  %fc %bc %sc %rc %sq %bq %CC %CS %hrl %hsl`` — text fields quoted, date in GMT with ``+0000``, the empty captures
  leaving one trailing space (checked against HAProxy 2.6's output).
- ``option tcplog``: ``%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`` (accept date, 2-char
  state). Without either option: ``Connect from ip:port to ip:port (frontend/MODE)``.
- Syslog datagram: ``<PRI>Mmm dd HH:MM:SS TAG[PID]: MESSAGE\\n``; PRI = facility x 8 + level; local time; the day
  space-padded; no hostname unless one is given; truncated to the target's ``len`` (default 1024) keeping the final
  ``\\n``. A target sends levels up to its ``level`` and raises more severe ones to its ``minlevel``. One non-blocking
  UDP socket per address family for the whole process; a datagram that cannot be sent is dropped and counted, never
  waited for. stdout / stderr targets write the same line without ``<PRI>``.
- Levels: traffic at info (6); server UP notice (5); server DOWN alert (1); no server available emerg (0).
- Formatting is on the hot path: one f-string per line, the date strings cached per second.

Public API:
    HttpLogRecord, TcpLogRecord (dataclasses, slots)
    format_httplog(r) -> str; format_httplog_clf(r) -> str; format_tcplog(r) -> str; format_connect(...) -> str
    escape_request_line(s) -> str
    Logger(targets, tag, hostname=None, http_format="httplog")  # http_format: "httplog" | "httplog-clf"
        .log_http(r, level=6) .log_tcp(r, level=6) .log(level, msg) .enabled .dropped
    stderr_message(label, msg) -> str  # "[WARNING]  (pid) : msg" as HAProxy prints on stderr
    LEVELS: syslog level names -> numbers
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from balancier.proxy.config.model import LogTarget

LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(slots=True)
class HttpLogRecord:
    client_ip: str
    client_port: int
    accept_date: float  # epoch seconds of the request's first byte
    frontend: str  # with a trailing '~' for SSL listeners
    backend: str
    server: str = "<NOSRV>"
    TR: int = -1
    Tw: int = -1
    Tc: int = -1
    Tr: int = -1
    Ta: int = 0
    status: int = -1
    bytes_out: int = 0
    req_cookie: str = "-"
    res_cookie: str = "-"
    termination: str = "----"
    actconn: int = 0
    feconn: int = 0
    beconn: int = 0
    srv_conn: int = 0
    retries: int = 0
    redispatched: bool = False
    srv_queue: int = 0
    backend_queue: int = 0
    request_line: str | None = None  # None -> <BADREQ>


@dataclass(slots=True)
class TcpLogRecord:
    client_ip: str
    client_port: int
    accept_date: float
    frontend: str
    backend: str
    server: str = "<NOSRV>"
    Tw: int = -1
    Tc: int = -1
    Tt: int = 0
    bytes_out: int = 0
    termination: str = "--"
    actconn: int = 0
    feconn: int = 0
    beconn: int = 0
    srv_conn: int = 0
    retries: int = 0
    redispatched: bool = False
    srv_queue: int = 0
    backend_queue: int = 0


# --- escaping ------------------------------------------------------------------------------------------------

def _build_escape_table() -> dict[int, str]:
    table = {i: f"#{i:02X}" for i in range(32)}
    table.update({i: f"#{i:02X}" for i in range(127, 256)})
    table[ord('"')] = "#22"
    table[ord("#")] = "#23"
    return table


_ESCAPE = _build_escape_table()


def escape_request_line(line: str) -> str:
    """HAProxy's log escaping of the request line (url_encode_map): '"', '#' and non-printables as #XX."""
    if line.isascii() and line.isprintable() and '"' not in line and "#" not in line:
        return line
    out = line.translate(_ESCAPE)
    if not out.isascii():
        # Characters beyond latin-1 come from a UTF-8 decode upstream: escape their bytes one by one.
        out = "".join(c if ord(c) < 128 else "".join(f"#{b:02X}" for b in c.encode()) for c in out)
    return out


# --- dates (cached per second) ---------------------------------------------------------------------------------

_date_cache: dict[int, str] = {}
_gmt_cache: dict[int, str] = {}
_syslog_cache: dict[int, str] = {}


def _log_date(t: float) -> str:
    """dd/Mmm/yyyy:HH:MM:SS.mmm in local time."""
    ms_total = int(t * 1000)
    sec, ms = divmod(ms_total, 1000)
    s = _date_cache.get(sec)
    if s is None:
        tm = time.localtime(sec)
        s = (f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
             f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
        if len(_date_cache) > 64:
            _date_cache.clear()
        _date_cache[sec] = s
    return f"{s}.{ms:03d}"


def _gmt_date(t: float) -> str:
    sec = int(t)
    s = _gmt_cache.get(sec)
    if s is None:
        tm = time.gmtime(sec)
        s = (f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
             f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000")
        if len(_gmt_cache) > 64:
            _gmt_cache.clear()
        _gmt_cache[sec] = s
    return s


def syslog_date(t: float) -> str:
    """Mmm dd HH:MM:SS, local time, day space-padded (RFC 3164)."""
    sec = int(t)
    s = _syslog_cache.get(sec)
    if s is None:
        tm = time.localtime(sec)
        s = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        if len(_syslog_cache) > 64:
            _syslog_cache.clear()
        _syslog_cache[sec] = s
    return s


# --- line formats ----------------------------------------------------------------------------------------------

def format_httplog(r: HttpLogRecord) -> str:
    rl = r.request_line
    req = "<BADREQ>" if rl is None else escape_request_line(rl)
    return (
        f"{r.client_ip}:{r.client_port} [{_log_date(r.accept_date)}] {r.frontend} {r.backend}/{r.server} "
        f"{r.TR}/{r.Tw}/{r.Tc}/{r.Tr}/{r.Ta} {r.status} {r.bytes_out} {r.req_cookie} {r.res_cookie} "
        f"{r.termination} {r.actconn}/{r.feconn}/{r.beconn}/{r.srv_conn}/{'+' if r.redispatched else ''}{r.retries} "
        f'{r.srv_queue}/{r.backend_queue} "{req}"'
    )


def _q(s: str) -> str:
    return f'"{s}"' if s and s != "-" else '""'


def format_httplog_clf(r: HttpLogRecord) -> str:
    rl = r.request_line
    req = "<BADREQ>" if rl is None else escape_request_line(rl)
    ms = int(r.accept_date * 1000) % 1000
    return (
        f'{r.client_ip} - - [{_gmt_date(r.accept_date)}] "{req}" {r.status} {r.bytes_out} "" "" {r.client_port} '
        f'{ms:03d} "{r.frontend}" "{r.backend}" "{r.server}" {r.TR} {r.Tw} {r.Tc} {r.Tr} {r.Ta} {r.termination} '
        f"{r.actconn} {r.feconn} {r.beconn} {r.srv_conn} {'+' if r.redispatched else ''}{r.retries} "
        # The empty header captures (%hrl %hsl) leave one trailing separator, as HAProxy 2.6 writes it.
        f"{r.srv_queue} {r.backend_queue} {_q(r.req_cookie)} {_q(r.res_cookie)} "
    )


def format_tcplog(r: TcpLogRecord) -> str:
    return (
        f"{r.client_ip}:{r.client_port} [{_log_date(r.accept_date)}] {r.frontend} {r.backend}/{r.server} "
        f"{r.Tw}/{r.Tc}/{r.Tt} {r.bytes_out} {r.termination} "
        f"{r.actconn}/{r.feconn}/{r.beconn}/{r.srv_conn}/{'+' if r.redispatched else ''}{r.retries} "
        f"{r.srv_queue}/{r.backend_queue}"
    )


def format_connect(client_ip: str, client_port: int, dst_ip: str, dst_port: int, frontend: str, mode: str) -> str:
    """The line logged at accept time when neither httplog nor tcplog is set."""
    return f"Connect from {client_ip}:{client_port} to {dst_ip}:{dst_port} ({frontend}/{mode.upper()})"


def stderr_message(label: str, msg: str) -> str:
    """HAProxy's stderr layout: the bracketed label padded to 10 columns, then ' (pid) : '."""
    return f"{('[' + label + ']'):<10} ({os.getpid()}) : {msg}\n"


# --- transport ---------------------------------------------------------------------------------------------------

_sockets: dict[int, socket.socket] = {}


def _udp_socket(family: int) -> socket.socket:
    s = _sockets.get(family)
    if s is None:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setblocking(False)
        _sockets[family] = s
    return s


class _Target:
    __slots__ = ("kind", "facility", "level", "minlevel", "maxlen", "sockaddr", "sock", "fd")

    def __init__(self, t: LogTarget) -> None:
        self.kind = t.kind
        self.facility = t.facility
        self.level = t.level
        self.minlevel = t.minlevel
        self.maxlen = max(t.maxlen, 16)
        self.sockaddr: tuple[object, ...] | None = None
        self.sock: socket.socket | None = None
        self.fd = 1 if t.kind == "stdout" else 2
        if t.kind == "udp":
            infos = socket.getaddrinfo(t.host or "127.0.0.1", t.port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            self.sockaddr = sockaddr
            self.sock = _udp_socket(family)


class Logger:
    """The loggers of one proxy: formats each line once and sends it to every target that wants its level."""

    def __init__(self, targets: Sequence[LogTarget], tag: str, hostname: str | None = None,
                 http_format: str = "httplog") -> None:
        self.targets = [_Target(t) for t in targets]
        self.tag = tag
        self.hostname = hostname
        self.pid = os.getpid()
        self.dropped = 0
        self.http_format = http_format
        # Accepts the model's log_format names: "httplog-clf" (or "clf") selects the Common Log Format variant.
        self._fmt_http = format_httplog_clf if http_format in ("clf", "httplog-clf") else format_httplog
        self._hdr_sec = -1
        self._hdr = ""

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    def _header(self, now: float) -> str:
        sec = int(now)
        if sec != self._hdr_sec:
            host = f"{self.hostname} " if self.hostname else ""
            self._hdr = f"{syslog_date(now)} {host}{self.tag}[{self.pid}]: "
            self._hdr_sec = sec
        return self._hdr

    def log_http(self, r: HttpLogRecord, level: int = INFO) -> None:
        if self.targets:
            self.log(level, self._fmt_http(r))

    def log_tcp(self, r: TcpLogRecord, level: int = INFO) -> None:
        if self.targets:
            self.log(level, format_tcplog(r))

    def log(self, level: int, msg: str, now: float | None = None) -> None:
        if not self.targets:
            return
        line = self._header(time.time() if now is None else now) + msg
        for t in self.targets:
            if level > t.level:
                continue
            lvl = level if level >= t.minlevel else t.minlevel
            if t.kind == "udp":
                data = f"<{t.facility * 8 + lvl}>{line}".encode("utf-8", "backslashreplace")
                if len(data) >= t.maxlen:
                    data = data[: t.maxlen - 1]
                try:
                    t.sock.sendto(data + b"\n", t.sockaddr)  # type: ignore[union-attr,arg-type]
                except OSError:
                    self.dropped += 1  # full socket buffer or unreachable: logs never block traffic
            else:
                data = line.encode("utf-8", "backslashreplace")
                if len(data) >= t.maxlen:
                    data = data[: t.maxlen - 1]
                try:
                    os.write(t.fd, data + b"\n")
                except OSError:
                    self.dropped += 1


def write_stderr(label: str, msg: str) -> None:
    """Event messages on stderr ([WARNING], [ALERT], [NOTICE]), never raising."""
    try:
        sys.stderr.write(stderr_message(label, msg))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
