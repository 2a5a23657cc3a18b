"""Health checks against real TCP/HTTP servers on loopback (haproxy.md §6), logs to a real syslog receiver."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from balancier.proxy.checker import Checker
from balancier.proxy.config.model import Balance, HttpCheck, LogTarget, Proxy, ServerConfig, Timeouts
from balancier.proxy.logs import Logger
from balancier.proxy.servers import Backend, Server

from support.syslog import SyslogReceiver


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend(servers: list[ServerConfig], httpchk: HttpCheck | None = None, name: str = "be", **kw) -> Backend:
    cfg = Proxy(name=name, kind=kw.pop("kind", "backend"), mode="http", balance=Balance(), servers=tuple(servers),
                httpchk=httpchk, **kw)
    return Backend(cfg)


class HttpStub:
    """A tiny HTTP/1.0 server on 127.0.0.1: answers every request with `response`, records what it received."""

    def __init__(self, response: bytes, port: int = 0, silent: bool = False) -> None:
        self.response = response
        self.port = port
        self.silent = silent
        self.requests: list[bytes] = []
        self.times: list[float] = []  # monotonic time of each connection
        self.server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.times.append(time.monotonic())
        try:
            data = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(data)
            if self.silent:
                await asyncio.sleep(30)
            writer.write(self.response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> HttpStub:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


async def wait_until(pred: Callable[[], bool], timeout: float) -> float:
    """Seconds until pred() holds; AssertionError after timeout."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    asyncio.run(main())


async def with_checker(be: Backend, logger: Logger | None, body: Callable[[Checker], Awaitable[None]]) -> None:
    ch = Checker([be], {be.name: logger} if logger else {}, stderr=False)
    ch.start()
    try:
        await body(ch)
    finally:
        ch.stop()
        await ch.wait_closed()


def test_refused_port_goes_down_with_the_l4con_line(syslog_receiver):
    port = free_port()
    be = backend([ServerConfig("ents2", "127.0.0.1", port, check=True, inter=200, rise=1, fall=3),
                  ServerConfig("ents3", "127.0.0.1", free_port(), weight=0),
                  ServerConfig("m", "127.0.0.1", 1, backup=True)], name="esup-proxy", kind="listen")
    lg = Logger([LogTarget("udp", facility=19, host=syslog_receiver.host, port=syslog_receiver.port)], "balancier")
    s = be.server("ents2")

    async def body(ch: Checker) -> None:
        await wait_until(lambda: s.op == "down", 3)

    run(lambda: with_checker(be, lg, body))
    raw = syslog_receiver.wait_for(lambda x: "is DOWN" in x, timeout=3)
    assert raw.startswith("<153>")  # local3, alert
    msg = raw.split("]: ", 1)[1]
    assert re.fullmatch(
        r'Server esup-proxy/ents2 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
        r"check duration: \d+ms\. 0 active and 1 backup servers left\. Running on backup\. 0 sessions active, "
        r"0 requeued, 0 remaining in queue\.\n", msg), msg
    assert s.check_status == "L4CON"


def test_http_500_gives_l7sts_and_the_default_request_is_sent():
    stub = HttpStub(b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")

    async def main() -> None:
        await stub.start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=200, rise=2, fall=3)],
                     httpchk=HttpCheck())
        s = be.server("a")
        try:
            await with_checker(be, None, lambda ch: wait_until(lambda: s.op == "down", 3))
        finally:
            await stub.stop()
        assert (s.check_status, s.check_code, s.check_info) == ("L7STS", 500, "Internal Server Error")
        assert stub.requests[0] == b"OPTIONS / HTTP/1.0\r\n\r\n"

    run(main)


def test_server_that_comes_back_rises_after_rise_successes():
    port = free_port()

    async def main() -> None:
        be = backend([ServerConfig("a", "127.0.0.1", port, check=True, inter=150, rise=2, fall=2)],
                     httpchk=HttpCheck("GET", "/health", "HTTP/1.1", headers=(("Host", "lb.test"),)))
        s = be.server("a")
        stub = HttpStub(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", port=port)

        async def body(ch: Checker) -> None:
            await wait_until(lambda: s.op == "down", 3)
            await stub.start()
            t = await wait_until(lambda: s.op == "up", 3)
            # two successes 150 ms apart (fastinter = inter here), the first at most one interval away.
            assert 0.1 <= t <= 1.2, t  # upper bound loose: the machine is shared
            assert s.health == 3 and s.check_status == "L7OK"

        try:
            await with_checker(be, None, body)
        finally:
            await stub.stop()
        assert stub.requests[0] == b"GET /health HTTP/1.1\r\nhost: lb.test\r\nconnection: close\r\n\r\n"

    run(main)


def test_detection_time_follows_inter_and_fall():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n").start()
        inter = 0.2
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=200, rise=1, fall=3)],
                     httpchk=HttpCheck())
        s = be.server("a")

        async def body(ch: Checker) -> None:
            await wait_until(lambda: s.health == 3, 3)
            await stub.stop()
            t = await wait_until(lambda: s.op == "down", 3)
            # 3 consecutive failures: the first within one inter, then two more inter apart.
            assert 2 * inter - 0.05 <= t <= 3 * inter + 0.5, t  # upper bound loose: shared machine

        try:
            await with_checker(be, None, body)
        finally:
            await stub.stop()

    run(main)


def test_fastinter_shortens_detection():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n").start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=600, fastinter=50, rise=2,
                                   fall=3)], httpchk=HttpCheck())
        s = be.server("a")

        async def body(ch: Checker) -> None:
            await wait_until(lambda: s.health == 4, 3)
            await asyncio.sleep(0.05)
            await stub.stop()
            t = await wait_until(lambda: s.op == "down", 3)
            # first failure after at most one inter (600 ms), then two fastinter (50 ms) steps.
            assert t <= 1.1, t  # without fastinter it would take at least 2 x inter = 1.2 s

        try:
            await with_checker(be, None, body)
        finally:
            await stub.stop()

    run(main)


def test_plain_tcp_check_l4ok():
    async def main() -> None:
        stub = await HttpStub(b"").start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=100, rise=1, fall=1)])
        s = be.server("a")
        try:
            await with_checker(be, None, lambda ch: wait_until(lambda: s.check_status == "L4OK", 3))
        finally:
            await stub.stop()
        assert s.op == "up"

    run(main)


def test_check_port_and_addr_redirect_the_check():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").start()
        # traffic port refuses, but the check goes to the stub through `addr` + `port`
        be = backend([ServerConfig("a", "127.0.0.9", free_port(), check=True, inter=100, rise=1, fall=1,
                                   check_addr="127.0.0.1", check_port=stub.port)], httpchk=HttpCheck())
        s = be.server("a")
        try:
            await with_checker(be, None, lambda ch: wait_until(lambda: s.check_status == "L7STS", 3))
        finally:
            await stub.stop()
        assert s.check_code == 503 and s.op == "down"

    run(main)


def test_timeout_check_gives_l7tout():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n", silent=True).start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=1000, rise=1, fall=1)],
                     httpchk=HttpCheck(), timeouts=Timeouts(connect=500, check=150))
        s = be.server("a")
        try:
            t0 = time.monotonic()
            await with_checker(be, None, lambda ch: wait_until(lambda: s.check_status == "L7TOUT", 3))
            assert time.monotonic() - t0 < 0.9  # bounded by timeout check (150 ms), not by inter (1 s)
        finally:
            await stub.stop()
        assert s.op == "down" and 140 <= (s.check_duration or 0) <= 600

    run(main)


def test_disable_on_404_puts_the_server_in_stopping():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 404 Not Found\r\n\r\n").start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=100, rise=1, fall=2),
                      ServerConfig("b", "127.0.0.1", 1)],
                     httpchk=HttpCheck(disable_on_404=True))
        s: Server = be.server("a")
        try:
            await with_checker(be, None, lambda ch: wait_until(lambda: s.op == "stopping", 3))
        finally:
            await stub.stop()
        assert s.check_status == "L7OKC" and not s.usable
        assert {be.pick("127.0.0.1").name for _ in range(4)} == {"b"}

    run(main)


def test_maint_pauses_checks():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n").start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=50, rise=1, fall=1,
                                   disabled=True)], httpchk=HttpCheck())

        async def body(ch: Checker) -> None:
            await asyncio.sleep(0.3)
            assert stub.requests == []
            be.set_admin(be.server("a"), "ready")
            await wait_until(lambda: len(stub.requests) >= 1, 2)

        try:
            await with_checker(be, None, body)
        finally:
            await stub.stop()

    run(main)


def test_connect_timeout_gives_l4tout():
    # A listener whose accept queue is full drops new SYNs: the connect neither succeeds nor is refused.
    ls = socket.socket()
    fill: list[socket.socket] = []
    try:
        ls.bind(("127.0.0.1", 0))
        ls.listen(0)
        port = ls.getsockname()[1]
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fill.append(c)
        time.sleep(0.1)

        async def main() -> None:
            be = backend([ServerConfig("a", "127.0.0.1", port, check=True, inter=1000, rise=1, fall=1)],
                         timeouts=Timeouts(connect=200, check=500))
            s = be.server("a")
            await with_checker(be, None, lambda ch: wait_until(lambda: s.check_status == "L4TOUT", 3))
            # connect bounded by min(timeout connect, inter) = 200 ms
            assert s.op == "down" and 190 <= (s.check_duration or 0) <= 700, s.check_duration

        run(main)
    finally:
        for c in fill:
            c.close()
        ls.close()



def test_first_checks_are_spread_over_the_smallest_interval():
    async def main() -> None:
        stubs = [await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n").start() for _ in range(4)]
        be = backend([ServerConfig(f"s{i}", "127.0.0.1", st.port, check=True, inter=1000, rise=1, fall=1)
                      for i, st in enumerate(stubs)], httpchk=HttpCheck())
        t0 = time.monotonic()
        try:
            await with_checker(be, None, lambda ch: wait_until(lambda: all(st.times for st in stubs), 3))
        finally:
            for st in stubs:
                await st.stop()
        offsets = [st.times[0] - t0 for st in stubs]
        # 1000 ms x pos / 4 checks: 0, 250, 500, 750 ms
        for pos, off in enumerate(offsets):
            assert pos * 0.25 - 0.02 <= off <= pos * 0.25 + 0.2, offsets

    run(main)



def test_disabled_health_checks_stop_checking():
    async def main() -> None:
        stub = await HttpStub(b"HTTP/1.0 200 OK\r\n\r\n").start()
        be = backend([ServerConfig("a", "127.0.0.1", stub.port, check=True, inter=50, rise=1, fall=1)],
                     httpchk=HttpCheck())
        s = be.server("a")

        async def body(ch: Checker) -> None:
            await wait_until(lambda: len(stub.requests) >= 2, 2)
            s.check_enabled = False
            await asyncio.sleep(0.1)  # a check in flight may still land
            n = len(stub.requests)
            await asyncio.sleep(0.3)
            assert len(stub.requests) == n
            s.check_enabled = True
            await wait_until(lambda: len(stub.requests) > n, 2)

        try:
            await with_checker(be, None, body)
        finally:
            await stub.stop()

    run(main)


# --- differential: the same scenario through Debian's haproxy and through balancier ---------------------------

class ThreadStub:
    """An HTTP/1.0 answering machine on 127.0.0.1 run by a thread, so proxies in other processes can check it.

    `listen()` / `refuse()` open and close the port (closed: connects are refused)."""

    def __init__(self, response: bytes, port: int | None = None, how: str = "answer") -> None:
        self.response = response
        self.how = how  # "answer", "reset" (RST after the request), "silent" (hold the connection, say nothing)
        self.port = port or free_port()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def listen(self) -> ThreadStub:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.1)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, args=(s,), daemon=True)
        self._thread.start()
        return self

    def _serve(self, s: socket.socket) -> None:
        while self._sock is s:
            try:
                c, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            with c:
                c.settimeout(1)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if self.how == "reset":
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    elif self.how == "silent":
                        c.settimeout(2)
                        c.recv(1)  # until the checker gives up and closes
                    else:
                        c.sendall(self.response)
                except OSError:
                    pass

    def refuse(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
        if self._thread is not None:
            self._thread.join(2)


def _normalise(raw: str) -> str:
    """The message part of a datagram, with what legitimately differs (duration, tag, pid) blanked."""
    msg = raw.split("]: ", 1)[1].rstrip("\n")
    return f"<{int(raw[1:raw.index('>')])}>" + re.sub(r"check duration: \d+ms", "check duration: Nms", msg)


def _servers_state(sock: str) -> list[list[str]]:
    """`show servers state` over the socket, split in fields, with srv_time_since_last_change blanked."""
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(5)
        c.connect(sock)
        c.sendall(b"show servers state\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    rows = [line.split(" ") for line in data.decode().splitlines() if line]
    for r in rows[2:]:
        r[9] = "T"
    return rows


@pytest.mark.parametrize("log_health_checks", [False, True], ids=["plain", "log-health-checks"])
def test_health_log_lines_match_haproxy(proxy_factory, tmp_path, log_health_checks):
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed: the differential needs the reference implementation")
    ok = ThreadStub(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").listen()
    bad = ThreadStub(b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").listen()
    later = ThreadStub(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")  # refused at first
    maint = ThreadStub(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").listen()
    receivers = {impl: SyslogReceiver() for impl in ("haproxy", "balancier")}
    sockets = {impl: str(tmp_path / f"{impl}.sock") for impl in receivers}
    try:
        for impl, rcv in receivers.items():
            cfg = f"""
global
    log {rcv.address} local3
    stats socket {sockets[impl]} level admin
defaults
    log global
    mode http
    timeout connect 1000
    timeout client 5000
    timeout server 5000
listen esup-proxy
    bind 127.0.0.1:{free_port()}
    option httpchk
{"    option log-health-checks" if log_health_checks else ""}
    balance roundrobin
    server ents3 127.0.0.1:{ok.port} weight 256 check inter 200 rise 1 fall 3
    server ents2 127.0.0.1:{bad.port} weight 128 check inter 200 rise 1 fall 3
    server ents1 127.0.0.1:{later.port} weight 1 check inter 200 rise 1 fall 3
    server ent-maintenance 127.0.0.1:{maint.port} check inter 200 backup
"""
            proxy_factory(cfg, impl=impl)

        def wait_all(text: str, timeout: float = 6) -> None:
            for rcv in receivers.values():
                rcv.wait_for(lambda x: text in x, timeout=timeout)

        # start-up: first checks are spread 50 ms apart; ents2 (500) and ents1 (refused) go down at once
        wait_all("ents1 is DOWN")
        later.listen()
        wait_all("ents1 is UP")
        ok.refuse()  # ents3 at full health: three failed checks 200 ms apart
        wait_all("ents3 is DOWN")
        time.sleep(0.3)
        # A check connection that the kernel had queued on the stub's listening socket when refuse() closed it is
        # reset rather than refused: which proxy's check lands in that window is timing, not behaviour (the same
        # layer-4 failure of a port being closed), so here the two wordings compare equal.
        got = {impl: [_normalise(x).replace('reason: Socket error, info: "Connection reset by peer"',
                                            'reason: Layer4 connection problem, info: "Connection refused"')
                      for x in rcv.lines] for impl, rcv in receivers.items()}
        assert got["balancier"] == got["haproxy"]
        if log_health_checks:
            # every change of check status or health is logged too, with the health as `status: X/Y`; the
            # `Server ... is DOWN/UP` lines then leave the reason out
            assert '<157>Health check for server esup-proxy/ents3 failed, reason: Layer4 connection problem, info: ' \
                   '"Connection refused", check duration: Nms, status: 2/3 UP.' in got["haproxy"]
            assert any(x.startswith("<153>Server esup-proxy/ents3 is DOWN. ") for x in got["haproxy"]), got
        else:
            assert got["haproxy"] == [
                '<153>Server esup-proxy/ents2 is DOWN, reason: Layer7 wrong status, code: 500, info: "Internal Server '
                'Error", check duration: Nms. 2 active and 1 backup servers left. 0 sessions active, 0 requeued, 0 '
                'remaining in queue.',
                '<153>Server esup-proxy/ents1 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
                'check duration: Nms. 1 active and 1 backup servers left. 0 sessions active, 0 requeued, 0 remaining in '
                'queue.',
                "<157>Server esup-proxy/ents1 is UP, reason: Layer7 check passed, code: 200, check duration: Nms. 2 "
                "active and 1 backup servers online. 0 sessions requeued, 0 total in queue.",
                '<153>Server esup-proxy/ents3 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
                'check duration: Nms. 1 active and 1 backup servers left. 0 sessions active, 0 requeued, 0 remaining in '
                'queue.',
            ]
        # the same scenario seen through `show servers state`: operational state, check result, health and check
        # state of every server, field for field (only the seconds since the last change depend on timing)
        # (a snapshot taken while a check runs shows it in progress: srv_check_state odd, result unknown; checks
        # every 200 ms take a millisecond, so take the pair again until neither shows one, bounded)
        for _ in range(50):
            states = {impl: _servers_state(sock) for impl, sock in sockets.items()}
            if not any(int(r[13]) & 1 for rows_ in states.values() for r in rows_[2:]):
                break
            time.sleep(0.02)
        assert states["balancier"] == states["haproxy"]
        rows = {r[3]: r for r in states["haproxy"][2:]}
        # srv_op_state, srv_check_status, srv_check_result, srv_check_health: ents3 and ents2 stopped after
        # failed checks (L4CON = 8, L7STS = 17), ents1 and the backup running at full health (L7OK = 15)
        assert [(rows[n][5], rows[n][10], rows[n][11], rows[n][12]) for n in ("ents3", "ents2", "ents1")] == [
            ("0", "8", "2", "0"), ("0", "17", "2", "0"), ("2", "15", "3", "3")]
    finally:
        for stub in (ok, bad, later, maint):
            stub.refuse()
        for rcv in receivers.values():
            rcv.close()


def test_failure_wording_matches_haproxy(proxy_factory):
    """Empty answer, garbage, reset and silence: the reason and info HAProxy 2.6 prints for each."""
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed: the differential needs the reference implementation")
    stubs = {
        "closes": ThreadStub(b"").listen(),
        "garbage": ThreadStub(b"SSH-2.0-OpenSSH_9.2\r\n").listen(),
        "reset": ThreadStub(b"", how="reset").listen(),
        "silent": ThreadStub(b"", how="silent").listen(),
    }
    receivers = {impl: SyslogReceiver() for impl in ("haproxy", "balancier")}
    try:
        for impl, rcv in receivers.items():
            servers = "".join(f"    server {name} 127.0.0.1:{st.port} check inter 2000 rise 1 fall 1\n"
                              for name, st in stubs.items())
            proxy_factory(f"""
global
    log {rcv.address} local3
defaults
    log global
    mode http
    timeout connect 1000
    timeout client 5000
    timeout server 5000
backend be
    option httpchk
    timeout check 300
{servers}
frontend fe
    bind 127.0.0.1:{free_port()}
    default_backend be
""", impl=impl)
        for rcv in receivers.values():
            rcv.wait_for(lambda x: "has no server available" in x, timeout=6)
        got = {impl: sorted(_normalise(x) for x in rcv.lines if "is DOWN" in x) for impl, rcv in receivers.items()}
        strip = [re.sub(r"\. \d active and .*", "", x) for x in got["haproxy"]]
        assert strip == [
            "<153>Server be/closes is DOWN, reason: Layer7 invalid response, check duration: Nms",
            "<153>Server be/garbage is DOWN, reason: Layer7 invalid response, check duration: Nms",
            '<153>Server be/reset is DOWN, reason: Socket error, info: "Connection reset by peer", '
            "check duration: Nms",
            "<153>Server be/silent is DOWN, reason: Layer7 timeout, check duration: Nms",
        ]
        # the server counts depend on the order the checks finished, which both spread the same way
        assert got["balancier"] == got["haproxy"]
    finally:
        for st in stubs.values():
            st.refuse()
        for rcv in receivers.values():
            rcv.close()
