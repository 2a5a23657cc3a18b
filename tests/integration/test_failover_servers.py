"""Server failover through real health checks: a killed server is detected, clients never see the window, it
rejoins after `rise` checks, the backup answers when every active server is down (and 503 `<NOSRV>` when it is
down too), and MAINT receives nothing. Each scenario runs behind balancier and behind Debian's haproxy.

Farm: the reference deployment's shape (weights 256/128/1 + a backup) on loopback portal backends, with faster
checks (`inter 200 rise 2 fall 3`) so the test runs in seconds. Clients open one connection per request.

Detection time (spec haproxy.md §6): from full health a server needs `fall` consecutive failed checks. The kill
lands somewhere in the interval before the next check, and a refused connect ends a check at once, so the DOWN
line comes between (fall-1)×inter and fall×inter after the kill, plus the scheduling delays of a loaded machine.
The test waits for every server to reach full health first (the first checks are spread over up to 1 s at start).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter

import pytest

from support.backends import Backend, BackendFactory
from support.http import RawConnection, build_request
from support.proxy import ProxyFactory
from support.syslog import SyslogReceiver, parse_httplog, parse_syslog

INTER = 0.2  # s
RISE = 2
FALL = 3
# Scheduling slack allowed on top of the formula: the check loop, the checker's own timer granularity and a
# 2-core machine shared with other work; an order of magnitude below `inter × fall`, so a wrong formula
# (e.g. fall+1 checks, or counting from the start) still fails.
SLACK = 0.25
CLIENTS = 3  # concurrent client loops (list.append is atomic: the results need no lock)
NAMES = ("ents3", "ents2", "ents1", "ent-maintenance")


def _config(backends: dict[str, Backend], syslog: SyslogReceiver, port: int, sock: str) -> str:
    ms = int(INTER * 1000)
    return f"""global
    stats socket {sock} level admin
defaults
    mode http
    log {syslog.address} local3
    option httplog
    retries 3
    option redispatch
    timeout connect 1s
    timeout client 10s
    timeout server 2s
listen esup-proxy
    bind 127.0.0.1:{port}
    balance roundrobin
    option httpchk
    server ents3 {backends['ents3'].address} weight 256 check inter {ms} rise {RISE} fall {FALL}
    server ents2 {backends['ents2'].address} weight 128 check inter {ms} rise {RISE} fall {FALL}
    server ents1 {backends['ents1'].address} weight 1 check inter {ms} rise {RISE} fall {FALL}
    server ent-maintenance {backends['ent-maintenance'].address} check inter {ms} backup
"""


def _cli(sock: str, command: str) -> str:
    p = subprocess.run(["socat", "-t", "2", "-", f"UNIX-CONNECT:{sock}"], input=command + "\n", text=True,
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _status(sock: str) -> dict[str, tuple[str, str]]:
    """server -> (status, check_status) from `show stat`."""
    lines = _cli(sock, "show stat").splitlines()
    fields = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        if not line:
            continue
        row = dict(zip(fields, line.split(","), strict=False))
        if row["svname"] not in ("FRONTEND", "BACKEND"):
            out[row["svname"]] = (row["status"], row["check_status"])
    return out


def _wait_full_health(sock: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        st = _status(sock)
        if all(s == "UP" and c.startswith("L7OK") for s, c in st.values()):
            return
        assert time.monotonic() < deadline, f"servers never reached full health: {st}"
        time.sleep(0.05)


def _propagated() -> None:
    """Give a state change logged by the checking worker time to reach the other workers (milliseconds; HAProxy's
    threads share it at once)."""
    time.sleep(0.2)


def _get(port: int) -> tuple[int, str | None]:
    with RawConnection("127.0.0.1", port, timeout=5.0) as c:
        r = c.request(build_request("GET", "/", headers=[("Connection", "close")]))
    return r.status, r.header("X-Served-By")


@pytest.fixture(params=["balancier"])
def farm(request, proxy_factory: ProxyFactory, backend_factory: BackendFactory, syslog_receiver: SyslogReceiver,
         tmp_path):
    """The farm behind balancier; tests parametrized indirectly with "haproxy" run it behind Debian's haproxy."""
    if request.param == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed: the reference run needs it")
    backends = {n: backend_factory(n) for n in NAMES}
    sock = str(tmp_path / "admin.sock")
    from support.backends import free_port

    port = free_port()
    proxy = proxy_factory(_config(backends, syslog_receiver, port, sock), impl=request.param)
    _wait_full_health(sock)
    return proxy, port, backends, syslog_receiver, sock


def _event(syslog: SyslogReceiver, text: str, timeout: float) -> float:
    """Wait for a state-change line containing `text`; the monotonic time it arrived."""
    syslog.wait_for(lambda raw: text in raw, timeout=timeout)
    return time.monotonic()


class _Loop:
    """CLIENTS threads sending one request per connection until stopped (bounded in count and time)."""

    def __init__(self, port: int, max_requests: int = 4000, max_seconds: float = 10.0, clients: int = CLIENTS) -> None:
        self.port = port
        self.results: list[tuple[float, float, int, str | None]] = []  # start, end, status, served by
        self.errors: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._max = max_requests
        self._until = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.results) + len(self.errors) < self._max \
                and time.monotonic() < self._until:
            t0 = time.monotonic()
            try:
                status, by = _get(self.port)
                self.results.append((t0, time.monotonic(), status, by))
            except Exception as e:  # a failed request is what the test looks for
                self.errors.append((t0, time.monotonic(), repr(e)))

    def __enter__(self) -> _Loop:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


# Every scenario also runs behind Debian's haproxy: the formulas, the no-failure promise, the backup and the 503 are
# HAProxy's own behaviour, so the reference passes the same assertions.
BOTH = pytest.mark.parametrize("farm", ["balancier", "haproxy"], indirect=True)


@BOTH
def test_killed_server_detected_in_fall_checks_and_clients_never_fail(farm) -> None:
    _proxy, port, backends, syslog, sock = farm
    syslog.clear()
    with _Loop(port) as loop:
        time.sleep(0.3)  # traffic flowing to every server before the kill
        t_kill = time.monotonic()
        backends["ents3"].refuse()
        t_killed = time.monotonic()  # refuse() returns once the port is closed and its connections are cut
        # one more client starting after the kill: its requests are all new ones sent during the detection window
        # (the others may spend the window waiting on a request the dying server had accepted)
        with _Loop(port, clients=1) as probe:
            t_down = _event(syslog, "Server esup-proxy/ents3 is DOWN", timeout=5.0)
        time.sleep(0.3)  # traffic after the detection too
    detection = t_down - t_kill
    print(f"{_proxy.impl}: detection time {detection * 1000:.0f} ms; formula: between {(FALL - 1) * INTER * 1000:.0f} and "
          f"{FALL * INTER * 1000:.0f} ms (fall {FALL} x inter {INTER * 1000:.0f} ms)")
    assert (FALL - 1) * INTER - 0.05 <= detection <= FALL * INTER + SLACK, detection
    # No client saw the window: connect failures were retried on another server (redispatch). The only request
    # allowed to fail is one already on ents3 when it died (HAProxy never replays a request a server has
    # accepted): 502 when its connection is cut, 504 when it was left hanging; each client has one request in
    # flight at a time.
    assert not loop.errors, (t_kill, loop.errors[:5])
    failed = [r for r in loop.results if r[2] != 200]
    assert all(t0 <= t_killed and t1 >= t_kill and st in (502, 504) for t0, t1, st, _ in failed), \
        (t_kill, t_killed, failed)
    assert len(failed) <= CLIENTS, failed
    assert len(loop.results) > 50
    # the window had traffic: requests sent between the kill and the detection, every one served elsewhere
    in_window = [r for r in probe.results if t_killed < r[0] < t_down]
    assert not probe.errors and len(in_window) >= 3, (probe.errors, len(in_window))
    assert all(st == 200 and by in ("ents2", "ents1") for _t0, _t1, st, by in probe.results), probe.results
    # the redispatched requests are logged as such (`+` before the retry count) and served by someone else
    logs = [parse_httplog(parse_syslog(x).message) for x in syslog.lines if '"GET / HTTP/1.1"' in x]
    redispatched = [lg for lg in logs if lg.redispatched]
    assert all(lg.server != "ents3" and lg.status == 200 for lg in redispatched)
    # after the DOWN line nothing is sent to ents3
    assert _status(sock)["ents3"][0] == "DOWN"
    backends["ents3"].clear()
    after = [_get(port) for _ in range(20)]
    assert all(st == 200 and by in ("ents2", "ents1") for st, by in after), after
    assert not backends["ents3"].requests()


@BOTH
def test_server_rejoins_after_rise_checks(farm) -> None:
    _proxy, port, backends, syslog, sock = farm
    backends["ents2"].refuse()
    _event(syslog, "Server esup-proxy/ents2 is DOWN", timeout=5.0)
    syslog.clear()
    t_back = time.monotonic()
    backends["ents2"].accept()
    t_up = _event(syslog, "Server esup-proxy/ents2 is UP", timeout=5.0)
    rejoin = t_up - t_back
    print(f"{_proxy.impl}: rejoin time {rejoin * 1000:.0f} ms; formula: between {(RISE - 1) * INTER * 1000:.0f} and "
          f"{RISE * INTER * 1000:.0f} ms (rise {RISE} x inter)")
    assert (RISE - 1) * INTER - 0.05 <= rejoin <= RISE * INTER + SLACK, rejoin
    served = Counter(_get(port)[1] for _ in range(50))
    assert served["ents2"] > 0, served


@BOTH
def test_backup_answers_when_every_active_is_down(farm) -> None:
    _proxy, port, backends, syslog, sock = farm
    for name in ("ents3", "ents2", "ents1"):
        backends[name].refuse()
    for name in ("ents3", "ents2", "ents1"):
        _event(syslog, f"Server esup-proxy/{name} is DOWN", timeout=5.0)
    _propagated()
    assert any("has no server available" in x or "Running on backup" in x for x in syslog.lines)
    results = [_get(port) for _ in range(20)]
    assert results == [(200, "ent-maintenance")] * 20
    logs = [parse_httplog(parse_syslog(x).message) for x in syslog.lines if '"GET / HTTP/1.1"' in x]
    assert logs and logs[-1].server == "ent-maintenance"
    # the backup dies too: nothing is usable, 503 from the proxy itself, `<NOSRV>` and `SC--` in the log, and the
    # loss of the last server announced at emerg (local3 = 19, emerg = 0: PRI 152)
    backends["ent-maintenance"].refuse()
    raw = syslog.wait_for(lambda x: "proxy esup-proxy has no server available!" in x and "Backup Server" not in x,
                          timeout=5.0)
    assert raw.startswith("<152>"), raw
    _propagated()
    syslog.clear()
    assert [_get(port)[0] for _ in range(3)] == [503] * 3
    nosrv = [parse_httplog(parse_syslog(x).message)
             for x in syslog.wait_count(lambda x: '"GET / HTTP/1.1"' in x, 3, timeout=5.0)]
    assert {(lg.server, lg.status, lg.termination_state, lg.Tc) for lg in nosrv} == {("<NOSRV>", 503, "SC--", -1)}
    backends["ent-maintenance"].accept()
    _event(syslog, "Backup Server esup-proxy/ent-maintenance is UP", timeout=5.0)
    _propagated()
    assert [_get(port) for _ in range(3)] == [(200, "ent-maintenance")] * 3
    # the backup stops receiving new requests when an active server is back
    backends["ents1"].accept()
    _event(syslog, "Server esup-proxy/ents1 is UP", timeout=5.0)
    _propagated()
    assert [_get(port) for _ in range(5)] == [(200, "ents1")] * 5


@BOTH
def test_maint_server_receives_nothing(farm) -> None:
    _proxy, port, backends, _syslog, sock = farm
    assert _cli(sock, "set server esup-proxy/ents3 state maint") == "\n"
    assert _status(sock)["ents3"][0] == "MAINT"
    for b in backends.values():
        b.clear()
    served = Counter(_get(port)[1] for _ in range(129))
    assert "ents3" not in served and not backends["ents3"].requests()
    assert served["ents2"] == 128 and served["ents1"] == 1, served
    # maintenance is not a failure: checks stop too (no check reaches a MAINT server)
    time.sleep(3 * INTER)
    assert not backends["ents3"].checks()
    assert _cli(sock, "set server esup-proxy/ents3 state ready") == "\n"
    deadline = time.monotonic() + 5
    while _status(sock)["ents3"][0] != "UP":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "ents3" in {_get(port)[1] for _ in range(10)}  # back in the rotation (weight 256 of 385)
