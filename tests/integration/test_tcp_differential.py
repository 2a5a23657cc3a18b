"""Differential test of `mode tcp`: the same configuration through HAProxy 2.6 and through balancier.

Both proxies run one after the other against the same real peers (tests/integration/test_tcp_peers.py), get the
same client scenarios in the same order, and send their `option tcplog` lines to a real UDP syslog receiver. For
every scenario the test compares, field by field:
- syslog framing: facility and severity (`<PRI>`) exactly; the RFC 3164 layout by parsing it (the tag is the
  program name, `haproxy` vs `balancier`, so it is not compared);
- frontend, backend/server (`<NOSRV>`), bytes sent to the client, the 2-character termination state,
  actconn/feconn/beconn/srv_conn/retries (with the `+` of a redispatch), srv_queue/backend_queue: exactly;
- Tw, Tc, Tt: within a tolerance (both are wall-clock measures of the same events), and -1 exactly where one is -1;
- what the client received (bytes) and how the connection ended (EOF or reset): exactly.
Normalised: client port and accept date (they differ by nature between two runs).

Scenarios: a line service with the client half-closing; a client abort (RST); a server abort (RST); a refused
connect with retries; a redispatch; a connect timeout (a listener whose accept queue is full); no usable server;
queue timeouts under `maxconn`; a client abort while queued and the queue positions of those served after it;
`timeout client` while queued (`cQ`);
`timeout client` (an expiry is an EOF on that side, the stream ends at the other side's timeout); `timeout tunnel`
replacing `timeout client`; `timeout client-fin` after the server half-closed; `timeout server-fin` after the client
half-closed; `option dontlognull`. Both proxies run one process (`nbthread 1`).
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import test_tcp_peers
from test_tcp_peers import TcpPeer

from support.backends import free_port
from support.proxy import ProxyProcess
from support.syslog import SyslogReceiver, parse_syslog

peers = test_tcp_peers.peers  # the fixture: every peer closed at teardown
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy as the reference")

TCPLOG = re.compile(
    r"^(?P<ip>[\d.]+):(?P<port>\d+) \[(?P<date>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] (?P<fe>\S+) "
    r"(?P<be>[^/\s]+)/(?P<srv>\S+) (?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tt>\d+) (?P<bytes>\d+) (?P<ts>\S\S) "
    r"(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rc>\+?\d+) (?P<sq>\d+)/(?P<bq>\d+)$")

SCENARIOS = ("halfclose", "clientabort", "srvabort", "refused", "redisp", "ctimeout", "nosrv", "queue", "qabort",
             "qcto", "cto", "tunnel", "clifin", "srvfin", "nulllog")
TOLERANCE_MS = 250  # two runs of the same timed events on a shared 2-core machine; the balancier sweeps
# its timeouts every 100 ms. The timed scenarios differ by 300 ms or more, so a wrong rule still fails.


class Blackhole:
    """A listener whose accept queue is full: the kernel drops further SYNs, so connecting to it times out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(2):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(c)
        time.sleep(0.05)

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


def config(ports: dict[str, int], syslog: str, p: dict[str, TcpPeer], dead: int, hole: int) -> str:
    def listen(name: str, body: str) -> str:
        return f"listen {name}\n    bind 127.0.0.1:{ports[name]}\n{body}"

    return "\n".join([
        f"global\n    nbthread 1\n    log {syslog} local3\n",
        "defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 1s\n"
        "    timeout client 5s\n    timeout server 5s\n",
        listen("halfclose", f"    server l {p['lines'].address}\n"),
        listen("clientabort", f"    server l {p['lines'].address}\n"),
        listen("srvabort", f"    server r {p['reset'].address}\n"),
        listen("refused", f"    retries 2\n    timeout connect 300\n    server d 127.0.0.1:{dead}\n"),
        listen("redisp", f"    retries 3\n    option redispatch\n    server d 127.0.0.1:{dead}\n"
                         f"    server l {p['lines'].address}\n"),
        listen("ctimeout", f"    retries 1\n    timeout connect 200\n    server h 127.0.0.1:{hole}\n"),
        listen("nosrv", f"    server d 127.0.0.1:{dead} check inter 100 fall 1 rise 1\n"),
        listen("queue", f"    timeout queue 300\n    server s {p['silent'].address} maxconn 1\n"),
        listen("qabort", f"    timeout queue 2s\n    server s {p['silent'].address} maxconn 1\n"),
        listen("qcto", f"    timeout client 300\n    timeout tunnel 5s\n    timeout queue 2s\n"
                       f"    server s {p['silent'].address} maxconn 1\n"),
        listen("cto", f"    timeout client 300\n    timeout server 1s\n    server s {p['silent'].address}\n"),
        listen("tunnel", f"    timeout client 200\n    timeout server 200\n    timeout tunnel 2s\n"
                         f"    server l {p['lines'].address}\n"),
        listen("clifin", f"    timeout client-fin 300\n    server g {p['greet_close'].address}\n"),
        listen("srvfin", f"    timeout server-fin 300\n    server s {p['silent'].address}\n"),
        listen("nulllog", f"    option dontlognull\n    server l {p['lines'].address}\n"),
    ])


@dataclass
class Outcome:
    received: bytes
    reset: bool
    seconds: float


def _client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _finish(s: socket.socket, t0: float) -> Outcome:
    s.settimeout(5)
    out, reset = b"", False
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            reset = True
            break
        except TimeoutError:
            out += b"<still open after 5 s>"
            break
        if not data:
            break
        out += data
    s.close()
    return Outcome(out, reset, time.monotonic() - t0)


def _rst(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def run_scenario(name: str, port: int) -> Outcome:
    t0 = time.monotonic()
    s = _client(port)
    if name == "halfclose":
        s.sendall(b"alpha\nbeta\n")
        time.sleep(0.05)
        s.sendall(b"gam")
        s.shutdown(socket.SHUT_WR)
        return _finish(s, t0)
    if name == "clientabort":
        s.sendall(b"one\n")
        assert s.recv(100) == b"ONE\n"
        _rst(s)
        return Outcome(b"ONE\n", False, time.monotonic() - t0)
    if name == "redisp":
        s.sendall(b"r\n")
        s.shutdown(socket.SHUT_WR)
        return _finish(s, t0)
    if name == "qabort":
        # `s` holds the only slot; the 2nd connection waits and resets; the 3rd is served once `s` resets
        w, third = _client(port), _client(port)
        time.sleep(0.2)
        _rst(w)
        time.sleep(0.2)
        _rst(s)
        time.sleep(0.2)
        _rst(third)
        return Outcome(b"", False, 0.0)
    if name == "qcto":
        # `s` holds the only slot (under `timeout tunnel`); a silent client waiting in the queue meets
        # `timeout client`
        s.sendall(b"h")
        time.sleep(0.1)
        res = _finish(_client(port), t0)
        _rst(s)
        return res
    if name in ("srvabort", "refused", "ctimeout", "nosrv", "cto"):
        s.sendall(b"x\n")
        return _finish(s, t0)
    if name == "queue":
        # `s` (connected first, silent) owns the only slot; the two next connections wait and time out
        holder = _client(port)
        holder.sendall(b"hold\n")
        time.sleep(0.1)
        q = _client(port)
        q.sendall(b"q\n")
        res = _finish(q, t0)
        _rst(holder)
        _rst(s)
        return res
    if name == "tunnel":
        s.sendall(b"a\n")
        time.sleep(0.5)  # longer than timeout client/server, shorter than timeout tunnel
        s.sendall(b"b\n")
        s.shutdown(socket.SHUT_WR)
        return _finish(s, t0)
    if name == "clifin":
        # HELLO then the server's FIN; the client stays silent with its side open for a second
        s.settimeout(5)
        got = s.recv(100) + s.recv(100)
        time.sleep(1.0)
        s.close()
        return Outcome(got, False, 0.0)
    if name == "srvfin":
        s.sendall(b"data\n")
        s.shutdown(socket.SHUT_WR)
        return _finish(s, t0)
    if name == "nulllog":
        s.close()  # no byte from the client: not logged; the next connection is
        time.sleep(0.3)  # ... once the first one is gone on both proxies (its counters are on the next line)
        s = _client(port)
        s.sendall(b"z")
        s.shutdown(socket.SHUT_WR)
        return _finish(s, t0)
    raise AssertionError(name)


def run_impl(impl: str, p: dict[str, TcpPeer]) -> tuple[dict[str, Outcome], dict[str, list[str]]]:
    ports = {name: free_port() for name in SCENARIOS}
    dead = free_port()
    hole = Blackhole()
    outcomes: dict[str, Outcome] = {}
    logs: dict[str, list[str]] = {}
    with SyslogReceiver() as rx:
        proxy = ProxyProcess(config(ports, rx.address, p, dead, hole.port), impl)
        try:
            time.sleep(0.5)  # `nosrv`: the first check (inter 100, fall 1) has marked the server DOWN
            for name in SCENARIOS:
                rx.clear()
                outcomes[name] = run_scenario(name, ports[name])
                expected = {"queue": 3, "qabort": 3, "qcto": 2}.get(name, 1)
                rx.wait_count(lambda line, n=name: f"] {n} {n}/" in line, expected, timeout=5)
                time.sleep(0.05)  # anything else this scenario would log
                logs[name] = [ln for ln in rx.lines if f"] {name} {name}/" in ln]
        finally:
            proxy.stop()
            hole.close()
    return outcomes, logs


def _fields(raw: str) -> dict[str, str]:
    msg = parse_syslog(raw)
    m = TCPLOG.match(msg.message)
    assert m, f"not a tcplog line: {raw!r}"
    d = m.groupdict()
    d["pri"] = str(msg.pri)
    return d


EXACT = ("pri", "ip", "fe", "be", "srv", "bytes", "ts", "ac", "fc", "bc", "sc", "rc", "sq", "bq")


def compare(name: str, ref: list[str], got: list[str]) -> list[str]:
    problems: list[str] = []
    if len(ref) != len(got):
        return [f"{name}: haproxy logged {len(ref)} lines, balancier {len(got)}:\n  {ref}\n  {got}"]
    key: Callable[[dict[str, str]], tuple[str, str]] = lambda d: (d["ts"], d["bytes"])  # noqa: E731
    rf = sorted((_fields(r) for r in ref), key=key)
    gf = sorted((_fields(g) for g in got), key=key)
    for a, b in zip(rf, gf, strict=True):
        for f in EXACT:
            if a[f] != b[f]:
                problems.append(f"{name}: field {f}: haproxy {a[f]!r} balancier {b[f]!r}")
        for f in ("Tw", "Tc", "Tt"):
            x, y = int(a[f]), int(b[f])
            if (x < 0) != (y < 0) or abs(x - y) > TOLERANCE_MS:
                problems.append(f"{name}: timer {f}: haproxy {x} balancier {y}")
    if problems:
        problems.append(f"{name} lines:\n  haproxy:   {ref}\n  balancier: {got}")
    return problems


@pytest.fixture
def all_peers(peers: list[TcpPeer]) -> dict[str, TcpPeer]:
    out = {kind: TcpPeer(kind) for kind in ("lines", "greet_close", "silent", "reset")}
    peers.extend(out.values())
    return out


def test_tcplog_and_relay_match_haproxy(all_peers: dict[str, TcpPeer]) -> None:
    results: dict[str, tuple[dict[str, Outcome], dict[str, list[str]]]] = {}
    # one after the other: the same peers must see one proxy's traffic at a time
    for impl in ("haproxy", "balancier"):
        results[impl] = run_impl(impl, all_peers)
    ref_out, ref_logs = results["haproxy"]
    got_out, got_logs = results["balancier"]
    problems: list[str] = []
    for name in SCENARIOS:
        a, b = ref_out[name], got_out[name]
        if (a.received, a.reset) != (b.received, b.reset):
            problems.append(f"{name}: client got {a.received!r} reset={a.reset} from haproxy, "
                            f"{b.received!r} reset={b.reset} from balancier")
        if abs(a.seconds - b.seconds) > TOLERANCE_MS / 1000:
            problems.append(f"{name}: client saw the end after {a.seconds:.3f}s with haproxy, "
                            f"{b.seconds:.3f}s with balancier")
        problems += compare(name, ref_logs[name], got_logs[name])
    assert not problems, "\n".join(problems)

