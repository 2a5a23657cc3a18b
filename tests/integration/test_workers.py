"""Several worker processes under one master: all accept on the same sockets, state has one owner and reaches
every worker, counters add up, a dead worker is replaced, the pidfile names the master."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request
from support.workers import cli, connection_owners, stat_rows, wait_children, wait_for


def _cfg(port: int, sock: Path, servers: str, glob: str = "", extra: str = "") -> str:
    return (
        "global\n"
        "    nbthread 2\n"
        f"    stats socket {sock} level admin\n"
        f"{glob}"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "listen web\n"
        f"    bind 127.0.0.1:{port}\n"
        "    balance roundrobin\n"
        f"{extra}"
        f"{servers}"
    )


def _open(port: int, n: int, workers: list[int] | None = None) -> list[RawConnection]:
    """`n` connections; with `workers`, keep opening (a few ms apart, at most 300) until each worker accepted
    some: which worker wins an accept on the shared socket is up to the scheduler."""
    conns = [RawConnection("127.0.0.1", port) for _ in range(n)]
    time.sleep(0.2)  # let the workers accept them
    while workers is not None and len(conns) < 300:
        if all(k >= 3 for k in _spread(port, conns, workers).values()):
            break
        for _ in range(10):
            conns.append(RawConnection("127.0.0.1", port))
            time.sleep(0.005)
        time.sleep(0.1)
    return conns


def _spread(port: int, conns: list[RawConnection], workers: list[int]) -> dict[int, int]:
    return connection_owners(port, [c.sock for c in conns], workers)


def _served_by(conns: list[RawConnection]) -> list[str]:
    out = []
    for c in conns:
        r = c.request(build_request("GET", "/"))
        assert r.status == 200, r
        out.append(r.header("X-Served-By") or "?")
    return out


def _close(conns: list[RawConnection]) -> None:
    for c in conns:
        c.close()


@pytest.fixture
def two_servers(backend_factory):
    return backend_factory("a"), backend_factory("b")


def _two_workers(proxy_factory, two_servers, tmp_path: Path) -> tuple[Any, int, Path, list[int]]:
    """A proxy with two workers over servers a and b: (proxy, port, stats socket, worker pids)."""
    a, b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    p = proxy_factory(_cfg(port, sock, f"    server a {a.address}\n    server b {b.address}\n"))
    workers = wait_children(p.pid, 2)
    assert len(workers) == 2, p.explain()
    return p, port, sock, workers


def test_both_workers_accept_and_counters_add_up(proxy_factory, two_servers, tmp_path: Path) -> None:
    p, port, sock, workers = _two_workers(proxy_factory, two_servers, tmp_path)
    conns = _open(port, 40, workers)
    n = len(conns)
    try:
        spread = _spread(port, conns, workers)
        assert sum(spread.values()) == n
        assert all(k > 0 for k in spread.values()), f"one worker accepted everything: {spread}"
        served = _served_by(conns) + _served_by(conns)
    finally:
        _close(conns)
    assert len(served) == 2 * n
    # each worker runs its own FWRR cycle (1:1 here), shifted: a worker serving k requests gives each server
    # k/2 (+-1), so the totals differ by at most one per worker
    assert abs(served.count("a") - served.count("b")) <= 2, (served.count("a"), served.count("b"))

    def counted() -> bool:
        rows = stat_rows(str(sock))
        return (rows[("web", "FRONTEND")]["req_tot"] == str(2 * n) and rows[("web", "BACKEND")]["stot"] == str(2 * n)
                and rows[("web", "a")]["stot"] == str(served.count("a"))
                and rows[("web", "b")]["stot"] == str(served.count("b")))

    assert wait_for(counted, 3.0), stat_rows(str(sock))
    info = cli(str(sock), "show info")
    assert "Nbthread: 2\n" in info and f"CumReq: {2 * n}\n" in info, info


def test_a_burst_of_connects_is_shared_out(proxy_factory, two_servers, tmp_path: Path) -> None:
    """A client opening its keep-alive pool at once (wrk's start): without accepting in turn, the worker that
    wakes first takes the whole backlog. Each worker stops accepting past its share plus BALANCE_SLACK, so both
    end up with about half, and every connection is served."""
    from balancier.proxy.runtime import BALANCE_SLACK

    _p, port, _sock, workers = _two_workers(proxy_factory, two_servers, tmp_path)
    for _ in range(3):  # three bursts, each after the last one closed
        conns = [RawConnection("127.0.0.1", port) for _ in range(60)]
        try:
            assert wait_for(lambda c=conns: sum(_spread(port, c, workers).values()) == len(c), 3.0)
            spread = _spread(port, conns, workers)
            # a share of 30 each; the slack, and one look at the shares per BALANCE_POLL, allow a little more
            assert all(k <= 30 + BALANCE_SLACK + 3 for k in spread.values()), spread
            assert len(set(_served_by(conns))) == 2
        finally:
            _close(conns)
        time.sleep(0.3)  # the workers see the closes before the next burst


def test_show_sess_lists_the_streams_of_every_worker(proxy_factory, two_servers, tmp_path: Path) -> None:
    """The owner serves the stats socket; `show sess` gathers the other worker's streams through the master."""
    p, port, sock, workers = _two_workers(proxy_factory, two_servers, tmp_path)
    conns = _open(port, 30, workers)
    try:
        spread = _spread(port, conns, workers)
        assert all(k > 0 for k in spread.values()), spread
        out = cli(str(sock), "show sess")
        listed = [line for line in out.splitlines() if "proto=tcpv4" in line]
        for c in conns:
            assert f" src=127.0.0.1:{c.sock.getsockname()[1]} fe=web be=web " in out, out
        # every client connection once (the stats socket's own session is not a stream)
        assert len(listed) == len(conns), out
    finally:
        _close(conns)


def test_admin_state_reaches_every_worker(proxy_factory, two_servers, tmp_path: Path) -> None:
    a, b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    p = proxy_factory(_cfg(port, sock, f"    server a {a.address} check inter 300\n"
                                       f"    server b {b.address} check inter 300\n"))
    workers = wait_children(p.pid, 2)
    conns = _open(port, 30, workers)
    try:
        assert all(n > 0 for n in _spread(port, conns, workers).values())
        for state in ("drain", "maint"):
            assert cli(str(sock), f"set server web/a state {state}") == "\n"
            time.sleep(0.3)  # one check interval at most
            assert set(_served_by(conns)) == {"b"}, f"a worker still sends to a {state} server"
        assert cli(str(sock), "set server web/a state ready") == "\n"
        time.sleep(0.3)
        assert set(_served_by(conns)) == {"a", "b"}
        assert cli(str(sock), "set server web/b weight 0") == "\n"
        time.sleep(0.3)
        assert set(_served_by(conns)) == {"a"}
    finally:
        _close(conns)


def test_health_check_down_reaches_every_worker(proxy_factory, two_servers, tmp_path: Path) -> None:
    a, b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    p = proxy_factory(_cfg(port, sock, f"    server a {a.address} check inter 300 fall 1 rise 1\n"
                                       f"    server b {b.address} check inter 300 fall 1 rise 1\n"))
    workers = wait_children(p.pid, 2)
    conns = _open(port, 30, workers)
    try:
        assert all(n > 0 for n in _spread(port, conns, workers).values())
        a.refuse()
        assert wait_for(lambda: stat_rows(str(sock))[("web", "a")]["status"].startswith("DOWN"), 2.0)
        # the check runs in one worker; the other one must not send to a either
        served = _served_by(conns)
        assert set(served) == {"b"}, served
        a.accept()
        assert wait_for(lambda: stat_rows(str(sock))[("web", "a")]["status"] == "UP", 2.0)
        time.sleep(0.1)
        assert set(_served_by(conns)) == {"a", "b"}
    finally:
        _close(conns)
    # one DOWN line: only the owner of the state logs it
    assert p.stderr.count("Server web/a is DOWN") == 1, p.stderr


def test_dead_worker_is_replaced(proxy_factory, two_servers, tmp_path: Path) -> None:
    a, b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    pidfile = tmp_path / "proxy.pid"
    p = proxy_factory(_cfg(port, sock, f"    server a {a.address}\n    server b {b.address}\n",
                           glob=f"    pidfile {pidfile}\n"))
    assert pidfile.read_text().split() == [str(p.pid)]  # the master's pid
    workers = wait_children(p.pid, 2)
    assert wait_for(lambda: _answers(sock), 5.0)  # the workers are ready (worker 0 serves the stats socket)
    os.kill(workers[1], signal.SIGKILL)
    fresh = wait_children(p.pid, 2, exclude={workers[1]}, timeout=5.0)
    assert len(fresh) == 2 and workers[1] not in fresh, p.explain()
    assert wait_for(lambda: "exited with code -9" in p.stderr and "replacement" in p.stderr, 3.0), p.stderr
    conns = _open(port, 20)
    try:
        assert len(_served_by(conns)) == 20
    finally:
        _close(conns)
    # and stopping the master stops its workers
    p.signal(signal.SIGTERM)
    assert p.wait_exit(5) == 0
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{w}/status") and _alive(w) for w in fresh), 3.0)


def _answers(sock: Path) -> bool:
    try:
        return "Pid:" in cli(str(sock), "show info")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_maxconn_is_shared_out(proxy_factory, two_servers, tmp_path: Path) -> None:
    """global maxconn 1 with two workers: still one client connection at a time in total."""
    a, _b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    proxy_factory(_cfg(port, sock, f"    server a {a.address}\n", glob="    maxconn 1\n"))
    first = RawConnection("127.0.0.1", port)
    second = RawConnection("127.0.0.1", port, timeout=0.7)
    try:
        assert first.request(build_request("GET", "/")).status == 200
        second.send(build_request("GET", "/"))
        with pytest.raises(TimeoutError):
            second.read_response()
        first.close()
        assert second.read_response(timeout=3.0).status == 200
    finally:
        first.close()
        second.close()


def test_socket_commands_reach_every_worker(proxy_factory, two_servers, tmp_path: Path) -> None:
    """Commands typed on the owner's stats socket act on every worker: `clear counters all` (the summed counters
    go to 0), `set maxconn server` (no server event: each worker's own stats page shows the new limit) and
    `shutdown sessions server` (requests in flight on any worker get HAProxy's 502)."""
    a, _b = two_servers
    port = free_port()
    stats_port = free_port()
    sock = tmp_path / "stats.sock"
    stats = f"listen stats\n    bind 127.0.0.1:{stats_port}\n    stats enable\n    stats uri /stats\n"
    p = proxy_factory(_cfg(port, sock, f"    server a {a.address} maxconn 50\n") + stats)
    workers = wait_children(p.pid, 2)
    assert len(workers) == 2, p.explain()
    conns = _open(port, 30, workers)
    try:
        assert all(k > 0 for k in _spread(port, conns, workers).values())
        _served_by(conns)
        assert wait_for(lambda: stat_rows(str(sock))[("web", "FRONTEND")]["req_tot"] == str(len(conns)), 3.0)
        assert cli(str(sock), "clear counters all") == "\n"
        assert wait_for(lambda: stat_rows(str(sock))[("web", "FRONTEND")]["req_tot"] == "0", 2.0), \
            stat_rows(str(sock))[("web", "FRONTEND")]

        assert cli(str(sock), "set maxconn server web/a 7") == "\n"
        page_conns = _open(stats_port, 12, workers)
        try:
            assert all(k > 0 for k in _spread(stats_port, page_conns, workers).values())
            time.sleep(0.2)
            for c in page_conns:  # each worker answers from its own view of the server
                r = c.request(build_request("GET", "/stats;csv"))
                assert r.status == 200, r
                lines = r.body.decode().splitlines()
                cols = lines[0].lstrip("# ").split(",")
                row = next(dict(zip(cols, ln.split(","), strict=False)) for ln in lines[1:]
                           if ln.startswith("web,a,"))
                assert row["slim"] == "7", row
        finally:
            _close(page_conns)

        assert cli(str(sock), "set maxconn server web/a 0") == "\n"  # unlimited again: nothing waits in a queue
        time.sleep(0.2)
        for c in conns:
            c.send(build_request("GET", "/delay/4000"))
        time.sleep(0.3)  # every request is at the server
        t0 = time.monotonic()
        assert cli(str(sock), "shutdown sessions server web/a") == "\n"
        statuses = [c.read_response(timeout=3.0).status for c in conns]
        assert statuses == [502] * len(conns), statuses
        assert time.monotonic() - t0 < 2.0
    finally:
        _close(conns)


def test_prometheus_sums_workers(proxy_factory, two_servers, tmp_path: Path) -> None:
    a, b = two_servers
    port = free_port()
    sock = tmp_path / "stats.sock"
    extra = "    http-request use-service prometheus-exporter if { path /metrics }\n"
    proxy_factory(_cfg(port, sock, f"    server a {a.address}\n    server b {b.address}\n", extra=extra))
    conns = _open(port, 20)
    try:
        _served_by(conns)
    finally:
        _close(conns)
    time.sleep(0.5)

    def total() -> str:
        with RawConnection("127.0.0.1", port) as c:
            body = c.request(build_request("GET", "/metrics")).text
        line = [x for x in body.splitlines() if x.startswith('haproxy_backend_http_requests_total{proxy="web"}')]
        return line[0].split()[-1] if line else ""

    assert wait_for(lambda: total() == "20", 2.0), total()


def test_workers_option_and_bad_count(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "w.cfg"
    cfg.write_text(_cfg(free_port(), tmp_path / "s.sock", "    server a 127.0.0.1:1\n"))
    res = subprocess.run([sys.executable, "-m", "balancier", "proxy", "-db", "-j", "0", "-f", str(cfg)],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 1 and "invalid number of workers" in res.stderr


def test_connection_owner_helper() -> None:
    # connection_owners reads the server side of a loopback connection: check it on a plain socket pair
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        counts = connection_owners(srv.getsockname()[1], [c], [os.getpid()])
        assert counts == {os.getpid(): 1}
    finally:
        c.close()
        conn.close()
        srv.close()
