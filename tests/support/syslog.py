"""A real UDP syslog receiver and parsers for the lines HAProxy-style loggers send.

Rules:
- The receiver binds 127.0.0.1:0 (or a given loopback address) and keeps every datagram, decoded as
  latin-1 so no byte is lost; `wait_for(predicate, timeout)` polls without busy-waiting.
- `parse_syslog` splits RFC 3164 framing `<PRI>Mmm dd HH:MM:SS TAG[PID]: MESSAGE`;
  `parse_httplog` splits HAProxy's `option httplog` message field by field (haproxy.md §12.2). Both raise
  ValueError on lines that don't fit, so a malformed log line fails the test that reads it.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SyslogMessage:
    pri: int
    facility: int
    severity: int
    timestamp: str  # "Nov 26 08:58:37" (day space-padded)
    hostname: str | None
    tag: str
    pid: int | None
    message: str
    raw: str


_SYSLOG = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?:(?P<host>[^\s\[:]+) (?=[^\s\[:]+(?:\[\d+\])?: ))?"
    r"(?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*?)\n?$",
    re.S,
)


def parse_syslog(raw: str) -> SyslogMessage:
    m = _SYSLOG.match(raw)
    if not m:
        raise ValueError(f"not an RFC 3164 syslog datagram: {raw!r}")
    pri = int(m["pri"])
    return SyslogMessage(pri, pri >> 3, pri & 7, m["ts"], m["host"], m["tag"],
                         int(m["pid"]) if m["pid"] else None, m["msg"], raw)


@dataclass(frozen=True)
class HttpLog:
    client_ip: str
    client_port: int
    date: str  # dd/Mmm/yyyy:HH:MM:SS.mmm
    frontend: str
    backend: str
    server: str
    TR: int
    Tw: int
    Tc: int
    Tr: int
    Ta: int
    status: int
    bytes_read: int
    captured_request_cookie: str
    captured_response_cookie: str
    termination_state: str
    actconn: int
    feconn: int
    beconn: int
    srv_conn: int
    retries: int
    redispatched: bool
    srv_queue: int
    backend_queue: int
    request_line: str


_HTTPLOG = re.compile(
    r"^(?P<ip>[0-9a-fA-F.:]+):(?P<port>\d+) \[(?P<date>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] "
    r"(?P<fe>\S+) (?P<be>[^\s/]+)/(?P<srv>\S+) "
    r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>\+?-?\d+) "
    r"(?P<status>-?\d+) (?P<bytes>\+?\d+) (?P<cc>\S+) (?P<cs>\S+) (?P<ts>[-A-Za-z]{4}) "
    r"(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rplus>\+?)(?P<rc>\d+) "
    r"(?P<sq>\d+)/(?P<bq>\d+) (?:\{[^}]*\} )*\"(?P<req>.*)\"$"
)


def parse_httplog(message: str) -> HttpLog:
    """Split the message part of an httplog line (after `haproxy[pid]: `)."""
    m = _HTTPLOG.match(message.rstrip("\n"))
    if not m:
        raise ValueError(f"not an httplog line: {message!r}")
    return HttpLog(
        m["ip"], int(m["port"]), m["date"], m["fe"], m["be"], m["srv"],
        int(m["TR"]), int(m["Tw"]), int(m["Tc"]), int(m["Tr"]), int(m["Ta"].lstrip("+")),
        int(m["status"]), int(m["bytes"].lstrip("+")), m["cc"], m["cs"], m["ts"],
        int(m["ac"]), int(m["fc"]), int(m["bc"]), int(m["sc"]), int(m["rc"]), m["rplus"] == "+",
        int(m["sq"]), int(m["bq"]), m["req"],
    )


class SyslogReceiver:
    """Collects UDP syslog datagrams on loopback in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="syslog-receiver", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """`host:port`, as written on a `log` line."""
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self._lines.append(data.decode("latin-1"))
                self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def messages(self) -> list[SyslogMessage]:
        return [parse_syslog(x) for x in self.lines]

    def clear(self) -> None:
        with self._cond:
            self._lines.clear()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        """The first datagram (raw text) matching `predicate`; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no syslog datagram matched within {timeout}s; got {len(self._lines)}: "
                        f"{self._lines[-5:]!r}")
                self._cond.wait(left)

    def wait_count(self, predicate: Callable[[str], bool], count: int, timeout: float = 5.0) -> list[str]:
        """Wait until `count` datagrams match; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [x for x in self._lines if predicate(x)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(hits)} of {count} syslog datagrams within {timeout}s")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(2)

    def __enter__(self) -> SyslogReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
