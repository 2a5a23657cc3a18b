"""The stats socket driven by real clients: Debian's socat (one-shot and prompt mode) and `balancier proxy-cli`,
and differential checks against Debian's haproxy on the same configuration.

The server runs in an event loop on a background thread (the proxy's own shell); the objects it serves are real
Backend objects from a parsed configuration, so a command's effect is checked on the object itself. The
differential tests send the same commands to a real haproxy's stats socket and compare the answers byte for byte,
`show servers state`, the `show stat` columns, `show stat typed` tags, `show info` fields, the state-change log
lines, and the Prometheus families (names, types, help, labels) of haproxy's exporter.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.checker import transition_message
from balancier.proxy.config import load
from balancier.proxy.runtime import FrontendRt
from balancier.proxy.runtime_api import RuntimeApi
from balancier.proxy.servers import Backend
from balancier.proxy.stats import ProcessInfo
from balancier.proxy.statsock import StatsSocketServer, parse_address
from balancier.proxy_cli import query

from support.backends import free_port

CFG = """\
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:18080
    default_backend esup-proxy

backend esup-proxy
    balance roundrobin
    server ents3 127.0.0.1:17101 weight 256 check rise 1 fall 3
    server ents2 127.0.0.1:17102 weight 128
    server maint 127.0.0.1:17104 backup
"""

SOCAT = shutil.which("socat")
needs_socat = pytest.mark.skipif(SOCAT is None, reason="Debian's socat is not installed")


class LoopThread:
    """An event loop on a thread; `call(coro)` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 5.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Harness:
    def __init__(self, tmp: Path, loop: LoopThread) -> None:
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(CFG)
        config, _ = load([str(cfg)], env={})
        self.backends = [Backend(p) for p in config.backends]
        self.frontends = [FrontendRt(p, 1000, None) for p in config.frontends]
        info = ProcessInfo(pid=os.getpid(), start_time=time.time(), uptime=1.0, version="0.1.0")
        self.api = RuntimeApi(self.backends, self.frontends, lambda: info, proxies=config.proxies)
        self.loop = loop
        self.tmp = tmp
        self.servers: list[StatsSocketServer] = []

    def serve(self, address: str, level: str = "admin", **kw: Any) -> StatsSocketServer:
        srv = StatsSocketServer(address, kw.pop("mode", 0o600), level, self.api, **kw)
        self.loop.call(srv.start())
        self.servers.append(srv)
        return srv

    def stop(self) -> None:
        for srv in self.servers:
            self.loop.call(srv.stop())


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    loop = LoopThread()
    h = Harness(tmp_path, loop)
    try:
        yield h
    finally:
        try:
            h.stop()
        finally:
            loop.close()


def socat(path: str, text: str, timeout: float = 10.0) -> str:
    assert SOCAT is not None
    res = subprocess.run([SOCAT, "stdio", f"UNIX-CONNECT:{path}"], input=text.encode(), capture_output=True,
                         timeout=timeout, check=True)
    return res.stdout.decode()


@needs_socat
def test_show_stat_through_socat_is_csv(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    out = socat(path, "show stat\n")
    assert out.startswith("# pxname,svname,") and out.endswith("\n\n")
    rows = list(csv.DictReader(io.StringIO(out[2:])))
    assert [(r["pxname"], r["svname"]) for r in rows if r["pxname"]] == [
        ("fe", "FRONTEND"), ("esup-proxy", "ents3"), ("esup-proxy", "ents2"), ("esup-proxy", "maint"),
        ("esup-proxy", "BACKEND")]


@needs_socat
def test_drain_over_socat_changes_the_server(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    be = harness.backends[0]
    assert socat(path, "set server esup-proxy/ents2 state drain\n") == "\n"
    assert be.server("ents2").admin == "drain"
    assert socat(path, "get weight esup-proxy/ents2;set weight esup-proxy/ents2 300\n") == (
        "128 (initial 128)\n\nAbsolute weight can only be between 0 and 256 inclusive.\n\n")
    rows = {r["svname"]: r for r in csv.DictReader(io.StringIO(socat(path, "show stat\n")[2:]))}
    assert rows["ents2"]["status"] == "DRAIN"


@needs_socat
def test_user_socket_refuses_changes(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "user.sock")
    harness.serve(path, level="user", mode=0o660)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert socat(path, "set server esup-proxy/ents2 state maint\n") == "Permission denied\n\n"
    assert harness.backends[0].server("ents2").admin == "ready"
    assert socat(path, "get weight esup-proxy/ents2\n") == "128 (initial 128)\n\n"


@needs_socat
def test_prompt_mode(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    out = socat(path, "prompt\nget weight esup-proxy/ents3\nset server esup-proxy/ents3 state maint\n"
                      "get weight esup-proxy/nope\n\nquit\n")
    head = "\n> 256 (initial 256)\n\n> \n> No such server.\n\n> Unknown command. Please enter one of the following"
    assert out.startswith(head)
    assert out.endswith("  quit                                    : disconnect\n\n> ")
    assert harness.backends[0].server("ents3").admin == "maint"


@needs_socat
def test_one_line_per_connection_without_prompt(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    out = socat(path, "get weight esup-proxy/ents3\nset server esup-proxy/ents3 state maint\n")
    assert out == "256 (initial 256)\n\n"
    assert harness.backends[0].server("ents3").admin == "ready"  # the second line was never run


def test_last_line_without_newline_runs_on_half_close(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"get weight esup-proxy/ents2")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1000) == b"128 (initial 128)\n\n"


def test_tcp_address_and_proxy_cli(harness: Harness) -> None:
    srv = harness.serve("ipv4@127.0.0.1:0")
    host, port = srv.address
    assert host == "127.0.0.1" and port > 0
    assert query(f"{host}:{port}", "get weight esup-proxy/ents3") == "256 (initial 256)\n\n"


def test_proxy_cli_command_line(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path)
    code = ("import sys, argparse\nfrom balancier.proxy_cli import add_arguments, run\n"
            "p = argparse.ArgumentParser()\nadd_arguments(p)\nsys.exit(run(p.parse_args(sys.argv[1:])))\n")
    res = subprocess.run([sys.executable, "-c", code, path, "show", "servers", "state"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().startswith("1\n# be_id be_name ")
    res = subprocess.run([sys.executable, "-c", code, path, "frobnicate"], capture_output=True, timeout=30)
    assert res.returncode == 1 and res.stdout.startswith(b"Unknown command")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "absent.sock"), "help"], capture_output=True,
                         timeout=30)
    assert res.returncode == 1 and b"cannot talk to" in res.stderr


def test_maxconn_and_idle_timeout(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    harness.serve(path, maxconn=1, timeout=0.3)
    with socket.socket(socket.AF_UNIX) as first:
        first.settimeout(5)
        first.connect(path)
        first.sendall(b"prompt\n")
        assert first.recv(100) == b"\n> "
        with socket.socket(socket.AF_UNIX) as second:
            second.settimeout(5)
            second.connect(path)
            assert second.recv(100) == b""  # over `stats maxconn`: closed at once
        t0 = time.monotonic()
        assert first.recv(100) == b""  # idle past `stats timeout`
        assert time.monotonic() - t0 < 3


def test_stop_removes_the_socket_and_restart_replaces_it(harness: Harness, tmp_path: Path) -> None:
    path = str(tmp_path / "admin.sock")
    srv = harness.serve(path)
    harness.loop.call(srv.stop())
    harness.servers.remove(srv)
    assert not os.path.exists(path)
    Path(path).write_text("stale")  # a leftover file is replaced atomically, never bound next to
    harness.serve(path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert query(path, "get weight esup-proxy/ents2") == "128 (initial 128)\n\n"


@pytest.mark.parametrize("text, expected", [
    ("/run/haproxy/admin.sock", ("unix", "/run/haproxy/admin.sock")),
    ("unix@/tmp/x.sock", ("unix", "/tmp/x.sock")),
    ("ipv4@127.0.0.1:9999", ("tcp", ("127.0.0.1", 9999))),
    ("127.0.0.1:9999", ("tcp", ("127.0.0.1", 9999))),
    ("ipv6@[::1]:9999", ("tcp", ("::1", 9999))),
    ("ipv4@:9999", ("tcp", ("0.0.0.0", 9999))),
])
def test_parse_address(text: str, expected: tuple[str, Any]) -> None:
    assert parse_address(text) == expected


def test_parse_address_rejects_bad_tcp() -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address("ipv4@127.0.0.1:port")


# --- differential check against Debian's haproxy -------------------------------------------------------------------

DIFF_COMMANDS = [
    "get weight esup-proxy/ents3",
    "set server esup-proxy/ents2 state drain",
    "set server esup-proxy/ents1 state maint",
    "set server esup-proxy/ents3 weight 50%",
    "set server esup-proxy/ents3 weight 300",
    "set server esup-proxy/ents3 weight 12x",
    "set weight esup-proxy/ents3 abc",
    "get weight esup-proxy/ents3",
    "get weight esup-proxy/nope",
    "get weight nope/ents3",
    "get weight esup-proxy",
    "set server st/a weight 5",
    "set server st/a weight 0",
    "set server esup-proxy/ents3 state foo",
    "set server esup-proxy/ents3 health foo",
    "set server esup-proxy/maint health down",
    "set server esup-proxy/ents3 weight",
    "set maxconn server esup-proxy/ents1 x",
    "set maxconn server esup-proxy/ents1 7",
    "enable health esup-proxy/ents1",
    "disable server esup-proxy/#4",
    "enable server esup-proxy/maint",
    "show servers state nope",
    "clear counters all",
]

DIFF_CFG = """\
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:{fe_port}
    default_backend esup-proxy

backend esup-proxy
    balance roundrobin
    cookie JSESSIONID prefix
    server ents3 127.0.0.1:17101 weight 256 cookie s3
    server ents2 127.0.0.1:17102 weight 128 cookie s2
    server ents1 127.0.0.1:17103 weight 1 cookie s1
    server maint 127.0.0.1:17104 backup

listen st
    bind 127.0.0.1:{st_port}
    mode tcp
    balance static-rr
    server a 127.0.0.1:17105 weight 10
"""


def inside_a_second() -> None:
    """Both proxies count downtime in whole seconds of the wall clock (HAProxy: `now.tv_sec - last_change`). A
    command sent to both, or a pair of reads, that straddles a second boundary gives them counts 1 apart (seen
    once: ours 0, haproxy's 1): wait until the clock is well inside a second before each pair."""
    frac = time.time() % 1.0
    if frac > 0.8:
        time.sleep(1.02 - frac)


@needs_socat
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed")
def test_same_answers_as_haproxy(proxy_factory: Any, tmp_path: Path) -> None:
    body = DIFF_CFG.format(fe_port=free_port(), st_port=free_port())
    hsock = str(tmp_path / "haproxy.sock")
    ref_proc = proxy_factory(f"global\n    stats socket {hsock} mode 600 level admin\n\n" + body, impl="haproxy")
    (tmp_path / "ours.cfg").write_text(body)
    config, _ = load([str(tmp_path / "ours.cfg")], env={})
    backends = [Backend(p) for p in config.backends]
    frontends = [FrontendRt(p, 1000, None) for p in config.frontends]
    info = ProcessInfo(pid=os.getpid(), start_time=time.time(), uptime=1.0, version="0.1.0")
    api = RuntimeApi(backends, frontends, lambda: info, proxies=config.proxies)
    messages: list[str] = []
    for be in backends:
        be.subscribe(lambda ev: messages.append(msg[1]) if (msg := transition_message(ev)) else None)

    for cmd in DIFF_COMMANDS:
        inside_a_second()
        assert api.execute(cmd) == socat(hsock, cmd + "\n"), cmd

    # the state changes are announced with the same words (haproxy writes them on stderr)
    deadline = time.monotonic() + 3
    while True:
        ref_msgs = [ln.split(" : ", 1)[1] for ln in ref_proc.stderr.splitlines() if " : " in ln and "Server " in ln]
        if len(ref_msgs) >= len(messages) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(messages) == 5 and messages == ref_msgs

    def state_lines(text: str) -> list[list[str]]:
        rows = [ln.split(" ") for ln in text.splitlines()]
        for r in rows[2:]:
            if len(r) > 9:
                r[9] = "T"  # seconds since the last change depend on timing
        return rows

    assert state_lines(api.execute("show servers state")) == state_lines(socat(hsock, "show servers state\n"))

    def stat_rows(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
        rows = list(csv.reader(io.StringIO(text[2:])))
        return rows[0][:104], {(r[0], r[1]): r[:104] for r in rows[1:] if r}

    inside_a_second()
    ours_h, ours = stat_rows(api.execute("show stat"))
    ref_h, ref = stat_rows(socat(hsock, "show stat\n"))
    assert ours_h == ref_h
    assert list(ours) == list(ref)
    # slim depends on the process maxconn (given here, computed from limits by haproxy): not compared
    compared = ("status", "weight", "act", "bck", "iid", "sid", "type", "addr", "cookie", "mode", "algo", "uweight",
                "pxname", "svname", "chkdown", "downtime", "lastsess")
    for key, row in ours.items():
        other = ref[key]
        for i, name in enumerate(ref_h):
            assert (row[i] == "") == (other[i] == ""), (key, name, row[i], other[i])
            if name in compared:
                assert row[i] == other[i], (key, name, row[i], other[i])

    def typed(text: str) -> dict[str, tuple[str, str]]:
        out = {}
        for line in text.splitlines():
            if line:
                key, tags, typ, _value = line.split(":", 3)
                if int(key.split(".")[3]) <= 102:  # the static fields; later ones vary by version
                    out[key] = (tags, typ)
        return out

    assert typed(api.execute("show stat typed")) == typed(socat(hsock, "show stat typed\n"))

    def info_keys(text: str) -> list[str]:
        return [line.rsplit(":", 1)[0] for line in text.splitlines() if line]

    ours_info = info_keys(api.execute("show info typed"))
    ref_info = info_keys(socat(hsock, "show info typed\n"))
    assert ours_info == ref_info


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed")
def test_prometheus_families_match_haproxy_exporter(proxy_factory: Any, tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is a test dependency")
    import urllib.request

    from balancier.proxy.statspage import render_prometheus

    body = DIFF_CFG.format(fe_port=free_port(), st_port=free_port())
    prom_port = free_port()
    proxy_factory(body + f"\nfrontend prom\n    bind 127.0.0.1:{prom_port}\n"
                         "    http-request use-service prometheus-exporter if { path /metrics }\n", impl="haproxy")
    with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/metrics", timeout=10) as resp:
        ref_text = resp.read().decode()
    (tmp_path / "ours.cfg").write_text(body)
    config, _ = load([str(tmp_path / "ours.cfg")], env={})
    backends = [Backend(p) for p in config.backends]
    frontends = [FrontendRt(p, 1000, None) for p in config.frontends]
    info = ProcessInfo(pid=os.getpid(), start_time=time.time(), uptime=1.0, version="0.1.0")
    api = RuntimeApi(backends, frontends, lambda: info, proxies=config.proxies)
    ours = {f.name: f for f in parser.text_string_to_metric_families(render_prometheus(api.view, info))}
    ref = {f.name: f for f in parser.text_string_to_metric_families(ref_text)}
    assert len(ours) > 60
    for name, fam in ours.items():
        assert name in ref, name
        assert (fam.type, fam.documentation) == (ref[name].type, ref[name].documentation), name
        ours_labels = {tuple(sorted(s.labels)) for s in fam.samples}
        ref_labels = {tuple(sorted(s.labels)) for s in ref[name].samples}
        assert ours_labels == ref_labels, name
    ref_status = {(s.labels["server"], s.labels["state"]): s.value for s in ref["haproxy_server_status"].samples
                  if s.labels["proxy"] == "esup-proxy"}
    ours_status = {(s.labels["server"], s.labels["state"]): s.value for s in ours["haproxy_server_status"].samples
                   if s.labels["proxy"] == "esup-proxy"}
    assert ours_status == ref_status
