"""Process behaviour of `balancier proxy`: stops, daemon and pidfile, -sf, connection limits, privilege drop,
mode tcp, and bounded memory while streaming 1 GiB each way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request


def _cfg(body: str, glob: str = "", defaults: str = "") -> str:
    return (
        f"global\n{glob}"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        f"{defaults}"
        f"{body}"
    )


def _balancier(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancier", "proxy", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_soft_stop_finishes_inflight_request(proxy_factory, backend_factory) -> None:
    slow = backend_factory("slow", delay=1.0)
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {slow.address}\n"))
    result: dict[str, object] = {}

    def inflight() -> None:
        with RawConnection("127.0.0.1", port) as c:
            r = c.request(build_request("GET", "/"))
            result["status"] = r.status
            result["close"] = r.wants_close()

    t = threading.Thread(target=inflight)
    t.start()
    time.sleep(0.3)
    p.soft_stop()
    time.sleep(0.2)
    assert _refused(port)  # listeners closed at once
    t.join(5)
    assert result == {"status": 200, "close": True}
    assert p.wait_exit(5) == 0
    assert "Proxy web stopped" in p.stderr


def test_soft_stop_closes_idle_keepalive_connections(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    with RawConnection("127.0.0.1", port) as c:
        assert c.request(build_request("GET", "/")).status == 200
        p.soft_stop()
        assert c.is_closed(wait=3.0)
    assert p.wait_exit(5) == 0


def test_hard_stop_exits_zero(proxy_factory, backend_factory) -> None:
    slow = backend_factory("slow", delay=3.0)
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {slow.address}\n"))
    c = RawConnection("127.0.0.1", port)
    try:
        c.send(build_request("GET", "/"))
        time.sleep(0.2)
        p.signal(signal.SIGTERM)
        assert p.wait_exit(3) == 0
        assert c.is_closed(wait=2.0)
    finally:
        c.close()


def test_hard_stop_after_bounds_soft_stop(proxy_factory, backend_factory) -> None:
    slow = backend_factory("slow", delay=5.0)
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {slow.address}\n",
                           glob="    hard-stop-after 500ms\n", defaults="    timeout server 10s\n"))
    c = RawConnection("127.0.0.1", port)
    try:
        c.send(build_request("GET", "/"))
        time.sleep(0.2)
        t0 = time.monotonic()
        p.soft_stop()
        assert p.wait_exit(4) == 0
        assert time.monotonic() - t0 < 2.0
    finally:
        c.close()


def test_daemon_writes_pidfile_and_detaches(tmp_path: Path, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    cfg = tmp_path / "d.cfg"
    pidfile = tmp_path / "proxy.pid"
    cfg.write_text(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n"))
    res = _balancier("-D", "-p", str(pidfile), "-f", str(cfg))
    pid = None
    try:
        assert res.returncode == 0, res.stderr
        pid = int(pidfile.read_text().split()[0])
        assert pid != os.getpid()
        ppid = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1])
        assert ppid != os.getpid()  # double fork: re-parented, not our child
        assert os.getsid(pid) != os.getsid(0)  # detached into a session of its own (setsid)
        assert os.getsid(pid) != pid  # and not its leader, so it can never get a controlling terminal
        with RawConnection("127.0.0.1", port) as c:
            assert c.request(build_request("GET", "/")).status == 200
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            assert _wait_gone(pid, 5)


def test_daemon_reports_bind_failure(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.listen(1)  # no SO_REUSEPORT: the proxy cannot share it
    try:
        cfg = tmp_path / "d.cfg"
        cfg.write_text(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s 127.0.0.1:1\n"))
        res = _balancier("-D", "-f", str(cfg))
        assert res.returncode == 1
        assert "cannot bind socket" in res.stderr and f":{port}" in res.stderr
    finally:
        holder.close()


def test_invalid_worker_count_refused(tmp_path: Path) -> None:
    # several workers are supported (tests/integration/test_workers.py); a count out of 1..64 is refused
    cfg = tmp_path / "w.cfg"
    cfg.write_text(_cfg(f"listen web\n    bind 127.0.0.1:{free_port()}\n    server s 127.0.0.1:1\n"))
    res = _balancier("-db", "-j", "0", "-f", str(cfg))
    assert res.returncode == 1
    assert "invalid number of workers" in res.stderr


def test_sf_reload_hands_over(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    port = free_port()
    text = _cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n")
    old = proxy_factory(text)
    new = proxy_factory(text, extra_args=["-sf", str(old.pid)])
    assert old.wait_exit(5) == 0
    assert new.alive()
    with RawConnection("127.0.0.1", port) as c:
        assert c.request(build_request("GET", "/")).status == 200


@pytest.mark.parametrize("where", ["frontend", "global"])
def test_maxconn_holds_extra_clients(proxy_factory, backend_factory, where: str) -> None:
    b = backend_factory("web")
    port = free_port()
    fe_limit = "    maxconn 1\n" if where == "frontend" else ""
    glob = "    maxconn 1\n" if where == "global" else ""
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n{fe_limit}    server s {b.address}\n", glob=glob))
    first = RawConnection("127.0.0.1", port)
    second = RawConnection("127.0.0.1", port, timeout=0.7)
    try:
        assert first.request(build_request("GET", "/")).status == 200
        second.send(build_request("GET", "/"))
        with pytest.raises(TimeoutError):
            second.read_response()  # waits in the backlog while the first connection is open
        first.close()
        r = second.read_response(timeout=3.0)
        assert r.status == 200
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("where", ["frontend", "global"])
def test_maxconn_holds_extra_clients_with_httpclose(proxy_factory, backend_factory, where: str) -> None:
    """The same limit when the frontend's listener is the rawio layer's (option httpclose): while the one slot is
    taken by a request in flight, the next client waits in the backlog; it is served once the first is done."""
    b = backend_factory("slow", delay=1.0)
    port = free_port()
    fe_limit = "    maxconn 1\n" if where == "frontend" else ""
    glob = "    maxconn 1\n" if where == "global" else ""
    proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    option httpclose\n{fe_limit}"
                       f"    server s {b.address}\n", glob=glob))
    first = RawConnection("127.0.0.1", port)
    second = RawConnection("127.0.0.1", port, timeout=0.5)
    try:
        first.send(build_request("GET", "/"))
        time.sleep(0.2)
        second.send(build_request("GET", "/"))
        with pytest.raises(TimeoutError):
            second.read_response()  # the first request holds the slot for a second
        assert first.read_response(timeout=3.0).status == 200
        assert first.is_closed(wait=1.0)
        r = second.read_response(timeout=3.0)
        assert r.status == 200
        assert len(b.requests()) == 2
    finally:
        first.close()
        second.close()


def test_sigttou_holds_listeners_until_sigttin(proxy_factory, backend_factory) -> None:
    """SIGTTOU stops accepting (a client waits in the backlog, as with HAProxy's pause) until SIGTTIN, even when
    a maxconn slot frees meanwhile; SIGTTIN accepts again and the waiting client is served."""
    b = backend_factory("web")
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    maxconn 1\n    server s {b.address}\n",
                           glob="    nbthread 1\n"))
    first = RawConnection("127.0.0.1", port)
    second: RawConnection | None = None
    try:
        assert first.request(build_request("GET", "/")).status == 200  # holds the one slot: listener paused
        p.signal(signal.SIGTTOU)
        time.sleep(0.2)
        first.close()  # the slot frees: admission alone would accept again
        time.sleep(0.3)
        second = RawConnection("127.0.0.1", port, timeout=0.7)
        second.send(build_request("GET", "/"))
        with pytest.raises(TimeoutError):
            second.read_response()  # held by SIGTTOU
        p.signal(signal.SIGTTIN)
        assert second.read_response(timeout=3.0).status == 200
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and setuid need root")
def test_chroot_and_privilege_drop(proxy_factory, backend_factory, tmp_path: Path) -> None:
    b = backend_factory("web")
    port = free_port()
    jail = tmp_path / "jail"
    jail.mkdir()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n    server s {b.address}\n",
                           glob=f"    chroot {jail}\n    uid 65534\n    gid 65534\n"))
    with RawConnection("127.0.0.1", port) as c:
        assert c.request(build_request("GET", "/")).status == 200
    status = Path(f"/proc/{p.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65534"] * 4
    assert os.readlink(f"/proc/{p.pid}/root") == str(jail)


def test_refuses_unknown_user(tmp_path: Path) -> None:
    cfg = tmp_path / "u.cfg"
    cfg.write_text(_cfg(f"listen web\n    bind 127.0.0.1:{free_port()}\n    server s 127.0.0.1:1\n",
                        glob="    user no-such-user-here\n"))
    res = _balancier("-db", "-f", str(cfg))
    assert res.returncode == 1
    assert "no-such-user-here" in res.stderr


def test_mode_tcp_relays_bytes(proxy_factory, backend_factory) -> None:
    b = backend_factory("web")
    bad = backend_factory("bad")
    bad.refuse()
    port = free_port()
    proxy_factory(_cfg(
        f"listen raw\n    mode tcp\n    bind 127.0.0.1:{port}\n    option redispatch\n    balance roundrobin\n"
        f"    server bad {bad.address}\n    server s {b.address}\n"))
    for _ in range(3):
        with RawConnection("127.0.0.1", port) as c:
            r = c.request(build_request("GET", "/echo", headers=[("Connection", "close")]))
            assert r.status == 200
    recs = b.requests()
    assert len(recs) == 3
    assert all(rec.header("X-Forwarded-For") is None for rec in recs)  # bytes relayed as they are


def _peak_rss_mb(pid: int) -> float:
    """The highest peak resident size among the proxy's processes: the master and its workers (the workers hold
    the connections)."""
    peaks = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
        peaks += [int(ln.split()[1]) / 1024 for ln in status.splitlines() if ln.startswith("VmHWM:")]
    assert len(peaks) >= 2, "no worker process found"
    return max(peaks)


GIB = 1 << 30


# keep-alive: the loop's transports; httpclose: both sides on the rawio layer (proxy/rawio.py)
CONN_MODES = ["", "    option httpclose\n"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", CONN_MODES, ids=["keep-alive", "httpclose"])
def test_one_gib_download_bounded_memory(proxy_factory, backend_factory, mode: str) -> None:
    b = backend_factory("big", body_size=GIB)
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n{mode}    server s {b.address}\n"))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(build_request("GET", "/", headers=[("Connection", "close")]))
        got = 0
        head = b""
        deadline = time.monotonic() + 60
        while b"\r\n\r\n" not in head:
            data = s.recv(65536)
            assert data, f"closed before the response head: {head!r}"
            head += data
        got = len(head.split(b"\r\n\r\n", 1)[1])
        assert head.startswith(b"HTTP/1.1 200")
        buf = bytearray(1 << 20)
        while time.monotonic() < deadline:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        assert got == GIB
    finally:
        s.close()
    assert _peak_rss_mb(p.pid) < 100


@pytest.mark.parametrize("mode", CONN_MODES, ids=["keep-alive", "httpclose"])
def test_a_client_that_stops_reading_stops_the_server_side(proxy_factory, backend_factory, mode: str) -> None:
    """Flow control: while the client reads nothing, the proxy stops reading the server once the client's write
    buffer passes its high-water mark, instead of buffering the whole 128 MiB body."""
    size = 128 << 20
    b = backend_factory("big", body_size=size)
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n{mode}    server s {b.address}\n"))
    before = _peak_rss_mb(p.pid)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        s.sendall(build_request("GET", "/", headers=[("Connection", "close")]))
        time.sleep(1.5)  # not reading: everything the proxy does not hold back piles up in its memory
        assert _peak_rss_mb(p.pid) - before < 32
        got = 0
        buf = bytearray(1 << 20)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        assert got > size  # head + the whole body, once the client reads again
    finally:
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", CONN_MODES, ids=["keep-alive", "httpclose"])
def test_one_gib_upload_bounded_memory(proxy_factory, backend_factory, mode: str) -> None:
    b = backend_factory("sink")
    port = free_port()
    p = proxy_factory(_cfg(f"listen web\n    bind 127.0.0.1:{port}\n{mode}    server s {b.address}\n",
                           defaults="    timeout server 60s\n    timeout client 60s\n"))
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n".encode())
        chunk = b"x" * (1 << 20)
        for _ in range(GIB // len(chunk)):
            s.sendall(chunk)
        resp = b""
        while b"\r\n\r\n" not in resp:
            data = s.recv(65536)
            assert data
            resp += data
        assert resp.startswith(b"HTTP/1.1 200")
    finally:
        s.close()
    recs = b.requests()
    assert recs and recs[-1].body_length == GIB
    assert _peak_rss_mb(p.pid) < 100
