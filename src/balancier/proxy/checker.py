"""Health checks on the wire: the asyncio shell around ``health.HealthState``, and the server state log messages.

Rules (spec/haproxy.md §6):
- One task per server with ``check`` (paused while the server is in MAINT or its checks are disabled at run time,
  ``Server.check_enabled``). First checks are staggered
  (``health.first_check_delays``); each later check starts ``next_interval()`` after the previous one ended, with
  ``spread-checks`` noise.
- Target: ``addr``/``port`` when given, else the server's address; a server without any port cannot be checked.
- TLS (spec §6, §16): a server with ``ssl`` is checked over TLS unless ``addr``/``port`` redirect the check;
  ``check-ssl`` forces TLS, ``no-check-ssl`` forbids it. The TCP connect is judged first (L4*), then the handshake
  with the server's verification settings but no SNI and so no name check (HAProxy sends an SNI to checks only
  with ``check-sni``): its failure is L6RSP ``SSL handshake failure`` (a
  certificate that does not verify included), its timeout L6TOUT; a TLS check without ``option httpchk`` passes
  as L6OK; with it, the HTTP exchange runs inside TLS.
- TCP check: connect succeeds → L4OK; refused → L4CON ``info: "Connection refused"``; other socket errors → L4CON
  with the error text; connect timeout → L4TOUT. Once connected, a socket error (e.g. a reset) → SOCKERR with the
  error text.
- ``option httpchk``: the request is ``METH URI VER\\r\\n`` (default ``OPTIONS / HTTP/1.0``), then the ``http-check
  send`` headers (names lower-cased), ``connection: close`` unless the version is HTTP/1.0 or one was configured,
  ``content-length`` when there is a body or the method is not GET/HEAD/OPTIONS/DELETE, a blank line and the body.
  2xx/3xx → L7OK; other status → L7STS (code, ``info`` = reason phrase); a malformed or empty answer → L7RSP
  (no info); no answer in time → L7TOUT. ``http-check expect [!] status|rstatus|string|rstring`` replaces the
  default judgement: a status mismatch is L7STS with the reason phrase, a body mismatch L7RSP ``HTTP content check did not match``
  (``HTTP check matched unwanted content`` when negated). Only L7OK/L7OKC/L7STS print ``code: N`` in messages.
  ``disable-on-404``: a 404 while the server is UP or STOPPING → L7OKC (conditionally passed), server STOPPING;
  the next full pass brings it back UP.
- Timeouts: with ``timeout check`` (and ``timeout connect``) the connect is limited by ``min(timeout connect,
  inter)`` and the rest of the check by ``timeout check``; without it, ``inter`` bounds the whole check, connect
  included (``timeout connect`` is then ignored, as observed on HAProxy 2.6).
- Results go through ``HealthState.on_result``; transitions are applied with ``Backend.set_op``. Every server
  state change of the backends given (checks and admin commands alike) is logged with HAProxy's wording to the
  backend's logger (DOWN at alert, notice when the server was draining; UP and STOPPING at notice; ``<type> <name>
  has no server available!`` at emerg; MAINT / DRAIN entered and left as HAProxy words them) and on stderr as
  ``[WARNING]`` / ``[ALERT]``. ``option log-health-checks``
  also logs every change of check status or health at notice, and then leaves the reason out of the UP/DOWN line.

Public API:
    Checker(backends, loggers=None, clock=time.monotonic, *, global_cfg=None, stderr=True)
        .start() (inside a running loop) .stop() .wait_closed() .check_now(server) -> CheckResult
    CheckResult; check_request(httpchk) -> bytes; judge_http(httpchk, data, up) -> CheckResult
    transition_message(event) -> (level, text) | None
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from balancier.proxy.config.model import Global, HttpCheck
from balancier.proxy.health import first_check_delays, spread_interval
from balancier.proxy.logs import ALERT, EMERG, NOTICE, Logger, write_stderr
from balancier.proxy.servers import Backend, Server, ServerEvent

REASONS = {
    "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout",
    "L4CON": "Layer4 connection problem",
    "L6OK": "Layer6 check passed",
    "L6TOUT": "Layer6 timeout",
    "L6RSP": "Layer6 invalid response",
    "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response",
    "L7OK": "Layer7 check passed",
    "L7OKC": "Layer7 check conditionally passed",
    "L7STS": "Layer7 wrong status",
    "SOCKERR": "Socket error",
}
# Statuses that carry an HTTP code in messages (HAProxy's "L57DATA" and above).
_WITH_CODE = frozenset({"L7OK", "L7OKC", "L7STS"})
_STATUS_LINE = re.compile(r"HTTP/\d\.\d (\d{3})(?: (.*))?\Z")
_MAX_READ = 16384


@dataclass(slots=True)
class CheckResult:
    status: str  # L4OK, L4CON, L7STS, ...
    ok: bool
    code: int | None = None
    info: str = ""
    duration: int = 0  # ms
    conditional: bool = False  # L7OKC (disable-on-404)

    def describe(self) -> str:
        """`reason: ..., code: N, info: "...", check duration: Nms` as HAProxy appends it."""
        out = f"reason: {REASONS[self.status]}"
        if self.status in _WITH_CODE and self.code is not None:
            out += f", code: {self.code}"
        if self.info:
            out += f', info: "{self.info}"'
        return out + f", check duration: {self.duration}ms"


def check_request(hc: HttpCheck) -> bytes:
    """The bytes of one HTTP check request."""
    lines = [f"{hc.method} {hc.uri} {hc.version}"]
    names = set()
    for n, v in hc.headers:
        lines.append(f"{n.lower()}: {v}")
        names.add(n.lower())
    body = hc.body.encode()
    if hc.version.upper() != "HTTP/1.0" and "connection" not in names:
        lines.append("connection: close")
    if (body or hc.method.upper() not in ("GET", "HEAD", "OPTIONS", "DELETE")) and "content-length" not in names:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _match_status(pattern: str, code: int) -> bool:
    for part in pattern.replace(",", " ").split():
        if "-" in part:
            lo, _, hi = part.partition("-")
            if lo.isdigit() and hi.isdigit() and int(lo) <= code <= int(hi):
                return True
        elif part.isdigit() and int(part) == code:
            return True
    return False


def judge_http(hc: HttpCheck, data: bytes, up: bool) -> CheckResult:
    """Judge a complete (or truncated) HTTP check response. `up`: the server is UP or STOPPING (disable-on-404)."""
    if not data:
        return CheckResult("L7RSP", False)  # HAProxy gives no info for an empty or malformed answer
    head, sep, body = data.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    m = _STATUS_LINE.match(first)
    if m is None:
        return CheckResult("L7RSP", False)
    code = int(m.group(1))
    reason = (m.group(2) or "").strip()
    if hc.disable_on_404 and code == 404 and up:
        return CheckResult("L7OKC", True, code, "", conditional=True)
    exp = hc.expect
    if exp is None:
        if 200 <= code < 400:
            return CheckResult("L7OK", True, code)
        return CheckResult("L7STS", False, code, reason)
    if exp.kind in ("status", "rstatus"):
        if exp.kind == "status":
            hit = _match_status(exp.pattern, code)
        else:
            hit = re.search(exp.pattern, str(code)) is not None
        if hit != exp.negate:
            return CheckResult("L7OK", True, code)
        return CheckResult("L7STS", False, code, reason)
    if not body:
        return CheckResult("L7RSP", False, code, "HTTP content check could not find a response body")
    text = body.decode("latin-1")
    if exp.kind == "string":
        hit = exp.pattern in text
    else:
        hit = re.search(exp.pattern, text) is not None
    if hit != exp.negate:
        return CheckResult("L7OK", True, code)
    info = "HTTP check matched unwanted content" if exp.negate else "HTTP content check did not match"
    return CheckResult("L7RSP", False, code, info)


def _complete(data: bytes, hc: HttpCheck) -> bool:
    """Whether enough of the response is in to judge it without waiting for the close."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    if hc.expect is None or hc.expect.kind in ("status", "rstatus"):
        return True
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", data[:end], re.IGNORECASE)
    return m is not None and len(data) - end - 4 >= int(m.group(1))


# --- state messages --------------------------------------------------------------------------------------------

def _counts(be: Backend, s: Server, left: bool) -> str:
    act, bck = be.usable_counts()
    backup = " Running on backup." if bck and not act else ""
    if left:
        return (f". {act} active and {bck} backup servers left.{backup} {s.served} sessions active, 0 requeued, "
                f"{len(s.queue)} remaining in queue.")
    return (f". {act} active and {bck} backup servers online.{backup} 0 sessions requeued, {len(s.queue)} total in "
            "queue.")


def transition_message(ev: ServerEvent) -> tuple[int, str] | None:
    """The log line (level, text) HAProxy writes for a server state change, or None for silent changes."""
    s = ev.server
    be = s.backend
    who = f"{'Backup ' if s.is_backup else ''}Server {be.name}/{s.name}"
    reason = f", {ev.reason}" if ev.reason else ""
    if ev.what == "op":
        if ev.new == "down":
            level = NOTICE if s.admin == "drain" or ev.old == "stopping" else ALERT
            return level, f"{who} is DOWN{reason}{_counts(be, s, True)}"
        if ev.new == "up":
            return NOTICE, f"{who} is UP{reason}{_counts(be, s, False)}"
        return NOTICE, f"{who} is stopping{reason}{_counts(be, s, False)}"
    if ev.what == "admin":
        if ev.new == "maint":
            if s.op == "down":
                return NOTICE, f"{who} was DOWN and now enters maintenance{reason}."
            level = NOTICE if ev.old == "drain" or s.op == "stopping" else ALERT
            return level, f"{who} is going DOWN for maintenance{reason}{_counts(be, s, True)}"
        if ev.old == "maint":
            state = "DOWN" if s.op == "down" else "UP"
            ready = "DRAIN" if ev.new == "drain" else "READY"
            return NOTICE, f"{who} is {state}/{ready} (leaving forced maintenance)."
        if ev.new == "drain":
            return NOTICE, f"{who} enters drain state{reason}{_counts(be, s, False)}"
        return NOTICE, f"{who} is {'DOWN' if s.op == 'down' else 'UP'} (leaving forced drain)."
    return None


def _proxy_type(be: Backend) -> str:
    return "proxy" if be.cfg.kind == "listen" else "backend"


class Checker:
    """Runs every configured check and logs every server state change of the given backends."""

    def __init__(self, backends: Sequence[Backend], loggers: Mapping[str, Logger] | None = None,
                 clock: Callable[[], float] = time.monotonic, *, global_cfg: Global | None = None,
                 stderr: bool = True) -> None:
        self.backends = list(backends)
        self.loggers = dict(loggers or {})
        self.clock = clock
        self.global_cfg = global_cfg or Global()
        self.stderr = stderr
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self.servers: list[Server] = []
        for be in self.backends:
            be.subscribe(self._on_event)
            for s in be.servers:
                if s.cfg.check:
                    port = s.cfg.check_port or s.cfg.port
                    if not port:
                        raise ValueError(f"{s.cfg.where}: server '{be.name}/{s.name}' has neither a port nor a "
                                         "'port' parameter for its health check")
                    self.servers.append(s)

    # --- logging -----------------------------------------------------------------------------------------------
    def _emit(self, be: Backend, level: int, msg: str, label: str = "WARNING") -> None:
        lg = self.loggers.get(be.name)
        if lg is not None:
            lg.log(level, msg)
        if self.stderr:
            write_stderr(label, msg)

    def _on_event(self, ev: ServerEvent) -> None:
        be = ev.server.backend
        out = transition_message(ev)
        if out is not None:
            self._emit(be, out[0], out[1])
        if ev.had_usable and not ev.has_usable:
            lg = self.loggers.get(be.name)
            if lg is not None:
                lg.log(EMERG, f"{_proxy_type(be)} {be.name} has no server available!")
            if self.stderr:
                write_stderr("ALERT", f"{_proxy_type(be)} '{be.name}' has no server available!")

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        intervals = [s.hstate.next_interval() for s in self.servers if s.hstate is not None]
        delays = first_check_delays(intervals, self.global_cfg.max_spread_checks)
        for s, d in zip(self.servers, delays, strict=True):
            self._tasks.append(loop.create_task(self._run(s, d / 1000.0)))

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, s: Server, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        hs = s.hstate
        assert hs is not None
        while True:
            if s.admin != "maint" and s.check_enabled:
                res = await self.check_now(s)
                self.apply(s, res)
            iv = spread_interval(hs.next_interval(), self.global_cfg.spread_checks, self._rng.random())
            await asyncio.sleep(iv / 1000.0)

    # --- one check ---------------------------------------------------------------------------------------------
    async def check_now(self, s: Server) -> CheckResult:
        cfg = s.cfg
        to = s.backend.cfg.timeouts
        hc = s.backend.cfg.httpchk
        host = cfg.check_addr or cfg.host
        port = cfg.check_port or cfg.port
        inter = cfg.inter
        t_connect = min(inter, to.connect) if (to.check and to.connect) else inter
        start = self.clock()

        def elapsed_ms() -> int:
            return max(0, int((self.clock() - start) * 1000))

        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), t_connect / 1000.0)
        except TimeoutError:
            return CheckResult("L4TOUT", False, duration=elapsed_ms())
        except ConnectionRefusedError:
            return CheckResult("L4CON", False, info="Connection refused", duration=elapsed_ms())
        except OSError as e:
            return CheckResult("L4CON", False, info=e.strerror or str(e), duration=elapsed_ms())
        try:
            tls = cfg.check_tls_context if cfg.check_uses_ssl else None
            if tls is not None:  # no SNI: HAProxy sends one to checks only with check-sni (not implemented)
                budget = (to.check if to.check else max(1, inter - elapsed_ms())) / 1000.0
                failed = await self._handshake(writer, tls, None, budget)
                if failed is not None:
                    failed.duration = elapsed_ms()
                    return failed
                if hc is None:
                    return CheckResult("L6OK", True, duration=elapsed_ms())
            if hc is None:
                return CheckResult("L4OK", True, duration=elapsed_ms())
            budget = (to.check if to.check else max(1, inter - elapsed_ms())) / 1000.0
            try:
                data = await asyncio.wait_for(self._exchange(reader, writer, hc), budget)
            except TimeoutError:
                return CheckResult("L7TOUT", False, duration=elapsed_ms())
            except OSError as e:
                return CheckResult("SOCKERR", False, info=e.strerror or str(e), duration=elapsed_ms())
            res = judge_http(hc, data, s.op != "down")
            res.duration = elapsed_ms()
            return res
        finally:
            writer.close()

    @staticmethod
    async def _handshake(writer: asyncio.StreamWriter, ctx: ssl.SSLContext, sni: str | None,
                         budget: float) -> CheckResult | None:
        """TLS on an open check connection; None when it succeeded, else the failed result."""
        try:
            await asyncio.wait_for(writer.start_tls(ctx, server_hostname=sni or ""), budget)
        except TimeoutError:
            return CheckResult("L6TOUT", False)
        except (ssl.SSLError, ssl.CertificateError, ConnectionError, OSError, ValueError):
            return CheckResult("L6RSP", False, info="SSL handshake failure")
        return None

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hc: HttpCheck) -> bytes:
        writer.write(check_request(hc))
        await writer.drain()
        data = b""
        while len(data) < _MAX_READ:
            chunk = await reader.read(_MAX_READ - len(data))
            if not chunk:
                break
            data += chunk
            if _complete(data, hc):
                break
        return data

    # --- applying a result -------------------------------------------------------------------------------------
    def apply(self, s: Server, res: CheckResult) -> None:
        hs = s.hstate
        assert hs is not None
        be = s.backend
        prev_status = s.check_status
        prev_health = hs.health
        if not res.ok and hs.health > 0:
            s.chkfail += 1
        transition = hs.on_result(res.ok)
        s.check_status = res.status
        s.check_code = res.code
        s.check_info = res.info
        s.check_duration = res.duration
        log_checks = be.cfg.log_health_checks
        if log_checks and (res.status != prev_status or hs.health != prev_health):
            self._log_check(s, res)
        reason = "" if log_checks else res.describe()
        if transition == "down":
            be.set_op(s, "down", reason)
        elif transition == "up":
            be.set_op(s, "stopping" if res.conditional else "up", reason)
        elif res.conditional and s.op == "up":
            be.set_op(s, "stopping", reason)
        elif res.ok and not res.conditional and s.op == "stopping":
            be.set_op(s, "up", reason)

    def _log_check(self, s: Server, res: CheckResult) -> None:
        hs = s.hstate
        assert hs is not None
        if hs.health >= hs.rise:
            status = f"{hs.health - hs.rise + 1}/{hs.fall} {'UP' if s.uweight else 'DRAIN'}"
        else:
            status = f"{hs.health}/{hs.rise} DOWN"
        verdict = ("conditionally " if res.conditional else "") + ("succeeded" if res.ok else "failed")
        msg = (f"Health check for {'backup ' if s.is_backup else ''}server {s.backend.name}/{s.name} {verdict}, "
               f"{res.describe()}, status: {status}.")
        self._emit(s.backend, NOTICE, msg)
