"""Master-worker reloads under load: not one failed request, not one connection error, 50 reloads per run.

The load is wrk (one thread, 100 connections), once with keep-alive connections and once with
`Connection: close`, running from 1 s before the first reload to 1 s after the last one; meanwhile the configuration alternates between two versions (weights change, a third
server comes and goes) and the master reloads it: by SIGUSR2 in the first run, through its master socket and the
`balancier proxy reload` command in the second. An invalid configuration in the middle of the load must leave
the service untouched and the command must report the error with file:line.
"""

from __future__ import annotations

import re
import shutil
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
from support.workers import cli, master_command, wait_children, wait_for

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")

RELOADS = 50
WRK_SECONDS = 60  # an upper bound: wrk is stopped (SIGINT, it then prints its counts) 1 s after the last reload
RELOAD_BUDGET = 40  # seconds for the 50 reloads


def _cfg(port: int, sock: Path, servers: list[tuple[str, str, int]]) -> str:
    lines = "".join(f"    server {n} {addr} weight {w} check inter 1s\n" for n, addr, w in servers)
    return (
        "global\n"
        "    nbthread 2\n"
        f"    stats socket {sock} level admin\n"
        "    hard-stop-after 10s\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 10s\n"
        "    timeout server 10s\n"
        "    timeout http-keep-alive 10s\n"
        "listen web\n"
        f"    bind 127.0.0.1:{port}\n"
        "    balance roundrobin\n"
        f"{lines}"
    )


def _wrk(port: int, close: bool, seconds: int) -> subprocess.Popen[str]:
    args = ["wrk", "-t1", "-c100", f"-d{seconds}s", "--timeout", "5s", f"http://127.0.0.1:{port}/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wrk_result(out: str) -> dict[str, int]:
    res = {"requests": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res.update(connect=int(m.group(1)), read=int(m.group(2)), write=int(m.group(3)), timeout=int(m.group(4)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def _stop_wrk(wrk: subprocess.Popen[str]) -> str:
    time.sleep(1.0)  # the last reload's old workers finish under load too
    wrk.send_signal(signal.SIGINT)
    out, _ = wrk.communicate(timeout=20)
    return out


def _master_reload(path: Path) -> str:
    return master_command(str(path))


def _reload_command(msock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancier", "proxy", "reload", "-S", str(msock)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def setup(backend_factory, tmp_path: Path):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    port = free_port()
    sock = tmp_path / "stats.sock"
    versions = [
        _cfg(port, sock, [("a", a.address, 10), ("b", b.address, 20)]),
        _cfg(port, sock, [("a", a.address, 30), ("b", b.address, 10), ("c", c.address, 10)]),
    ]
    return port, sock, versions


def _start(proxy_factory, text: str, msock: Path):
    p = proxy_factory(text, extra_args=["-W", "-S", str(msock)])
    assert wait_for(lambda: msock.exists(), 5.0), p.explain()
    assert len(wait_children(p.pid, 2)) == 2, p.explain()
    return p


def _check_clean(res: dict[str, int], out: str, reloads: int) -> None:
    assert reloads == RELOADS
    assert res["requests"] > 0, out
    assert res["connect"] == res["read"] == res["write"] == res["timeout"] == 0, out
    assert res["non2xx"] == 0, out


def test_reload_under_keepalive_load_by_sigusr2(proxy_factory, setup, tmp_path: Path) -> None:
    port, sock, versions = setup
    msock = tmp_path / "master.sock"
    p = _start(proxy_factory, versions[0], msock)
    wrk = _wrk(port, close=False, seconds=WRK_SECONDS)
    done = 0
    try:
        time.sleep(1.0)
        deadline = time.monotonic() + RELOAD_BUDGET
        while done < RELOADS and time.monotonic() < deadline:
            p.cfg_path.write_text(versions[(done + 1) % 2])
            before = p.stderr.count("Loading success.")
            p.signal(signal.SIGUSR2)
            assert wait_for(lambda b=before: p.stderr.count("Loading success.") > b, 10.0, 0.02), p.explain()
            done += 1
            if done == 10:  # a runtime change, which must survive the 40 reloads that follow
                assert cli(str(sock), "set server web/a state drain") == "\n"
        out = _stop_wrk(wrk)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    _check_clean(_wrk_result(out), out, done)
    assert "Reload failed" not in p.stderr
    state = cli(str(sock), "show servers state web")
    rows = {ln.split()[3]: ln.split() for ln in state.splitlines()[2:] if ln.strip()}
    assert rows["a"][6] == "8", state  # still drained (admin state 0x8)
    # old workers are gone: only the current two remain once every soft stop has finished
    assert wait_for(lambda: len(wait_children(p.pid, 0, timeout=0)) == 2, 15.0), p.stderr[-2000:]


def test_reload_under_close_load_by_command(proxy_factory, setup, tmp_path: Path) -> None:
    port, sock, versions = setup
    msock = tmp_path / "master.sock"
    p = _start(proxy_factory, versions[0], msock)
    wrk = _wrk(port, close=True, seconds=WRK_SECONDS)
    done = 0
    bad_answer: subprocess.CompletedProcess[str] | None = None
    good_answer: subprocess.CompletedProcess[str] | None = None
    try:
        time.sleep(1.0)
        deadline = time.monotonic() + RELOAD_BUDGET
        while done < RELOADS and time.monotonic() < deadline:
            if done == 20:
                # an invalid configuration in the middle of the load: refused, the workers keep serving
                p.cfg_path.write_text(versions[0] + "    no-such-keyword here\n")
                bad_answer = _reload_command(msock)
            p.cfg_path.write_text(versions[(done + 1) % 2])
            if done == 30:
                good_answer = _reload_command(msock)
                assert good_answer.returncode == 0, good_answer.stderr
            else:
                answer = _master_reload(msock)
                assert answer.startswith("Success=1"), answer
            done += 1
        out = _stop_wrk(wrk)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    _check_clean(_wrk_result(out), out, done)
    assert bad_answer is not None and bad_answer.returncode == 1
    line = versions[0].count("\n") + 1
    assert f"{p.cfg_path}:{line}: " in bad_answer.stderr and "no-such-keyword" in bad_answer.stderr, \
        bad_answer.stderr
    assert good_answer is not None and "reload succeeded" in good_answer.stdout


def test_states_survive_reload_and_removed_bind_closes(proxy_factory, backend_factory, tmp_path: Path) -> None:
    a, b = backend_factory("a"), backend_factory("b")
    port, port2 = free_port(), free_port()
    sock = tmp_path / "stats.sock"
    msock = tmp_path / "master.sock"
    base = _cfg(port, sock, [("a", a.address, 10), ("b", b.address, 10)])
    extra = f"listen other\n    bind 127.0.0.1:{port2}\n    server a {a.address}\n"
    p = _start(proxy_factory, base + extra, msock)
    assert wait_for(lambda: "Pid:" in cli(str(sock), "show info"), 5.0)
    assert cli(str(sock), "set server web/a state maint") == "\n"
    assert cli(str(sock), "set server web/b weight 5") == "\n"
    p.cfg_path.write_text(base)  # the second listen section and its bind go away
    assert _master_reload(msock).startswith("Success=1")
    assert wait_for(lambda: _refused(port2), 5.0)
    state = cli(str(sock), "show servers state web")
    rows = {ln.split()[3]: ln.split() for ln in state.splitlines()[2:] if ln.strip()}
    assert rows["a"][6] == "1"  # admin state: forced maintenance, kept
    assert rows["b"][7] == "5"  # user weight kept (configured weight unchanged)
    with RawConnection("127.0.0.1", port) as conn:
        for _ in range(4):
            r = conn.request(build_request("GET", "/"))
            assert r.status == 200 and r.header("X-Served-By") == "b"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigusr1_and_sigterm_on_master(proxy_factory, backend_factory, tmp_path: Path) -> None:
    a = backend_factory("a")
    port = free_port()
    sock = tmp_path / "stats.sock"
    msock = tmp_path / "master.sock"
    p = _start(proxy_factory, _cfg(port, sock, [("a", a.address, 1)]), msock)
    a.set(delay=0.6)
    result: dict[str, object] = {}

    def inflight() -> None:
        with RawConnection("127.0.0.1", port) as c:
            r = c.request(build_request("GET", "/"))
            result.update(status=r.status, close=r.wants_close())

    t = threading.Thread(target=inflight)
    t.start()
    time.sleep(0.2)
    p.soft_stop()
    t.join(5)
    assert result == {"status": 200, "close": True}
    assert p.wait_exit(5) == 0
    assert not msock.exists()
