#!/usr/bin/env python3
"""Side-by-side benchmark: balancier against Debian's HAProxy, same configuration, same backends, same load.

Reproduces the setup of the project's benchmark reference (nginx backend farm, wrk -t1, c50 and c200) so that
figures compare. See bench/README.md for the method and how to read the table.

Rules this script keeps:
- It only touches loopback (127.0.0.1) and only processes it started, stopped by pid on every exit path.
- Every run is bounded: wrk has -d and a subprocess timeout; the whole benchmark stops at --max-minutes and
  reports what it measured so far.
- Both proxies get the same configuration text (one worker / nbthread 1 each) and run side by side; runs
  alternate A B A B within each round so that drift of the shared machine hits both alike.
- CPU per request = (utime+stime of the proxy's processes, children included, from /proc) / wrk's request count.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = "Hello from backend {n:02d}. This is a small static body used for load balancer benchmarking. 0123456789\n"
DEBIAN_PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "valgrind": "valgrind"}

# mode -> (listen section suffix, extra wrk arguments, description)
MODES = {
    "seed-httpclose": ("3", [], "seed configuration: option httpclose, keep-alive clients"),
    "ka-reuse": ("4", [], "keep-alive clients, http-reuse always"),
    "close-reuse": ("4", ["-H", "Connection: close"], "Connection: close clients, http-reuse always"),
}
# Port layout of the reference: nginx 9001-9004; HAProxy nbthread 1 on 810x. balancier gets 850x.
PORT_BASE = {"haproxy": 8100, "balancier": 8500, "balancier-plain": 8600}
# "balancier-plain": the same proxy without cookie persistence and health checks, to measure what they cost


# ---- tools ---------------------------------------------------------------------------------------------
def ensure_tools(needed: list[str]) -> None:
    """Install from Debian whatever is missing, and say so."""
    missing = [t for t in needed if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    pkgs = [DEBIAN_PACKAGES[t] for t in missing]
    print(f"bench: missing {', '.join(missing)}; installing Debian packages: {' '.join(pkgs)}", flush=True)
    if os.geteuid() != 0:
        sys.exit(f"bench: not root; run `sudo apt-get install -y {' '.join(pkgs)}` first")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], check=True, env=env, timeout=900)
    # nginx's Debian package starts a system-wide nginx on :80; stop it so it does not compete for the CPU.
    if "nginx" in missing and shutil.which("systemctl"):
        subprocess.run(["systemctl", "stop", "nginx"], check=False, timeout=60)


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout}s")


# ---- configurations ------------------------------------------------------------------------------------
def nginx_conf(workdir: Path, backend_ports: list[int]) -> str:
    servers = "\n".join(
        f'  server {{ listen 127.0.0.1:{p} backlog=4096 reuseport; '
        f'location / {{ return 200 "{BODY.format(n=i + 1).rstrip()}\\n"; }} }}'
        for i, p in enumerate(backend_ports))
    return f"""worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{ access_log off; default_type text/plain; keepalive_timeout 65s; keepalive_requests 1000000;
  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy; fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
{servers}
}}
"""


def proxy_conf(impl: str, workdir: Path, backend_ports: list[int], stats_socket: bool = True) -> str:
    """The reference's HAProxy configuration (listen _3 httpclose and _4 http-reuse always)."""
    base = PORT_BASE[impl]
    plain = impl.endswith("-plain")
    servers = "\n".join(
        f"    server web{c} 127.0.0.1:{p} " + ("" if plain else f"cookie {c} ")
        + ("backup " if c == "D" else f"weight {w} ") + ("" if plain else "check inter 5000 rise 1 fall 3")
        for c, p, w in zip("ABCD", backend_ports, (256, 128, 1, 0), strict=True))
    persistence = "" if plain else "    cookie JSESSIONID prefix\n    option httpchk HEAD / HTTP/1.0\n"
    sections = []
    for suffix, extra in (("3", "option httpclose"), ("4", "http-reuse always")):
        sections.append(f"""listen webfarm_{suffix}
    bind 127.0.0.1:{base + int(suffix)}
    {extra}
    balance roundrobin
{persistence}{servers}
""")
    stats = f"    stats socket {workdir}/{impl}.sock\n" if stats_socket else ""
    return f"""global
    nbthread 1
    maxconn 2000
    pidfile {workdir}/{impl}.pid
{stats}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    option forwardfor
    maxconn 2000

""" + "\n".join(sections)


def proxy_command(impl: str, cfg: Path, check_only: bool = False) -> list[str]:
    flag = "-c" if check_only else "-db"
    if impl.startswith("haproxy"):
        return [tool("haproxy"), flag, "-f", str(cfg)]
    return [sys.executable, "-m", "balancier", "proxy", flag, "-f", str(cfg)]


def write_configs(impls: list[str], workdir: Path, backend_ports: list[int]) -> tuple[dict[str, Path], str]:
    """Write and check (`-c`) one configuration per proxy; returns the files and a note on what was dropped.

    The reference has a `stats socket`; if a proxy does not support it yet, it is dropped for every proxy
    (an idle socket costs nothing, and the configurations must stay the same) and the note says so.
    """
    note = ""
    for stats in (True, False):
        files, failures = {}, {}
        for impl in impls:
            cfg = workdir / f"{impl}.cfg"
            cfg.write_text(proxy_conf(impl, workdir, backend_ports, stats_socket=stats))
            p = subprocess.run(proxy_command(impl, cfg, check_only=True), capture_output=True, text=True,
                               timeout=60)
            files[impl] = cfg
            if p.returncode != 0:
                failures[impl] = (p.stdout + p.stderr).strip()
        if not failures:
            return files, note
        if stats and all("stats socket" in out for out in failures.values()):
            note = f"'stats socket' dropped from every configuration: {', '.join(failures)} does not support it"
            print(f"bench: {note}", flush=True)
            continue
        break
    raise RuntimeError("configuration rejected:\n" + "\n".join(f"--- {k} ---\n{v}" for k, v in failures.items()))


# ---- CPU accounting ------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from #3 (state) on


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f:
                children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its live descendants, plus cutime+cstime (children already reaped)."""
    ticks = 0
    for p in descendants(pid):
        f = _stat_fields(p)
        if f:
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    return ticks / CLK_TCK


# ---- wrk -----------------------------------------------------------------------------------------------
@dataclass
class Run:
    round: int
    mode: str
    conns: int
    impl: str
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_req: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, object]:
    res: dict[str, object] = {}
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[key] = _ms(m.group(1)) if m else 0.0
    errors: dict[str, int] = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors["non2xx"] = int(m.group(1))
    res["errors"] = {k: v for k, v in errors.items() if v}
    return res


def run_wrk(port: int, conns: int, duration: int, extra: list[str], proxy_pid: int) -> tuple[dict[str, object],
                                                                                           float, str]:
    cmd = [tool("wrk"), "-t1", f"-c{conns}", f"-d{duration}s", "--latency", *extra, f"http://127.0.0.1:{port}/"]
    cpu0 = cpu_seconds(proxy_pid)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    cpu1 = cpu_seconds(proxy_pid)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr.strip()}")
    return parse_wrk(p.stdout), cpu1 - cpu0, p.stdout


# ---- processes -----------------------------------------------------------------------------------------
class Procs:
    """Processes this script started; stopped by pid on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
            try:  # workers the process forked live in the session it leads
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()


def check_target(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        body = r.read()
    if r.status != 200 or len(body) != 99:
        raise RuntimeError(f"127.0.0.1:{port} answered {r.status} with {len(body)} bytes (expected 200, 99)")
    return body.decode().split(".")[0]


# ---- report --------------------------------------------------------------------------------------------
def opcode_tracer(counts: collections.Counter[str], key_of: Callable[[Any], str],
                  on: Callable[[], bool] = lambda: True) -> Callable[[Any, str, Any], Any]:
    """A `sys.settrace` function counting the bytecodes each function executes into ``counts`` (key:
    ``key_of(code)``), while ``on()`` says so (bench/micro.py, bench/instructions.py --bytecodes)."""

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if not on():
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        key = key_of(frame.f_code)

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local
        return local

    return tracer


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def report(runs: list[Run], impls: list[str]) -> tuple[str, list[dict[str, object]]]:
    lines = []
    summary: list[dict[str, object]] = []
    a, b = (impls + [""])[:2]
    hdr = (f"{'mode':15} {'conns':>5} {'impl':10} {'req/s (per round)':>30} {'med':>9} {'p50 ms':>7} "
           f"{'p99 ms':>7} {'µs/req':>7}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    keys = sorted({(r.mode, r.conns) for r in runs}, key=lambda k: (list(MODES).index(k[0]), k[1]))
    for mode, conns in keys:
        row: dict[str, object] = {"mode": mode, "conns": conns}
        for impl in impls:
            rs = [r for r in runs if (r.mode, r.conns, r.impl) == (mode, conns, impl)]
            if not rs:
                continue
            per_round = " ".join(f"{r.rps / 1000:.1f}k" for r in rs)
            row[impl] = {"rps": med([r.rps for r in rs]), "p50_ms": med([r.p50_ms for r in rs]),
                         "p99_ms": med([r.p99_ms for r in rs]), "cpu_us_per_req": med([r.cpu_us_per_req for r in rs]),
                         "errors": sum(sum(r.errors.values()) for r in rs)}
            m = row[impl]
            assert isinstance(m, dict)
            lines.append(f"{mode:15} {conns:>5} {impl:10} {per_round:>30} {m['rps'] / 1000:>8.1f}k "
                         f"{m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f} {m['cpu_us_per_req']:>7.1f}"
                         + (f"  errors {m['errors']}" if m["errors"] else ""))
        if b:
            ra = {r.round: r for r in runs if (r.mode, r.conns, r.impl) == (mode, conns, a)}
            rb = {r.round: r for r in runs if (r.mode, r.conns, r.impl) == (mode, conns, b)}
            rounds = sorted(set(ra) & set(rb))
            rps_ratios = [rb[i].rps / ra[i].rps for i in rounds if ra[i].rps]
            cpu_ratios = [rb[i].cpu_us_per_req / ra[i].cpu_us_per_req for i in rounds if ra[i].cpu_us_per_req]
            if rps_ratios:
                row["ratio_rps"] = {"per_round": rps_ratios, "median": med(rps_ratios)}
                row["ratio_cpu"] = {"per_round": cpu_ratios, "median": med(cpu_ratios)}
                lines.append(f"{'':15} {'':>5} {b + '/' + a:>10} req/s " + " ".join(f"{x:.2f}" for x in rps_ratios)
                             + f"  median {med(rps_ratios):.2f}x;  CPU µs/req "
                             + " ".join(f"{x:.2f}" for x in cpu_ratios) + f"  median {med(cpu_ratios):.2f}x")
        summary.append(row)
    return "\n".join(lines), summary


# ---- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--conns", default="50,200", help="comma-separated wrk connection counts (default 50,200)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--targets", default="haproxy,balancier",
                    help="comma-separated proxies, first is the reference A (default haproxy,balancier)")
    ap.add_argument("--backend-port", type=int, default=9001, help="first of the 4 nginx ports (default 9001)")
    ap.add_argument("--max-minutes", type=float, default=30, help="stop after this long and report (default 30)")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="where the JSON goes")
    args = ap.parse_args(argv)

    impls = [t for t in args.targets.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    conns = [int(c) for c in args.conns.split(",") if c]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    for t in impls:
        if t not in PORT_BASE:
            ap.error(f"unknown target {t!r} (haproxy or balancier)")
    ensure_tools(["nginx", "wrk"] + (["haproxy"] if "haproxy" in impls else []))

    backend_ports = [args.backend_port + i for i in range(4)]
    proxy_ports = [PORT_BASE[i] + s for i in impls for s in (3, 4)]
    busy = [p for p in backend_ports + proxy_ports if not port_free(p)]
    if busy:
        sys.exit(f"bench: ports already in use on 127.0.0.1: {busy}")

    workdir = Path(tempfile.mkdtemp(prefix="balancier-bench-"))
    procs = Procs()
    runs: list[Run] = []
    started = time.monotonic()
    stopped_early = ""
    config_note = ""
    try:
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / d).mkdir()
        (workdir / "nginx.conf").write_text(nginx_conf(workdir, backend_ports))
        nginx = procs.start("nginx", [tool("nginx"), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                      "-g", "daemon off;"], workdir / "nginx.out")
        for p in backend_ports:
            wait_listening(p, nginx, "nginx")
        pids: dict[str, int] = {}
        cfgs, config_note = write_configs(impls, workdir, backend_ports)
        for impl in impls:
            proc = procs.start(impl, proxy_command(impl, cfgs[impl]), workdir / f"{impl}.out")
            try:
                for s in (3, 4):
                    wait_listening(PORT_BASE[impl] + s, proc, impl)
            except RuntimeError as e:
                out = (workdir / f"{impl}.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{e}\n--- {impl} output ---\n{out}") from None
            pids[impl] = proc.pid
            for s in (3, 4):
                check_target(PORT_BASE[impl] + s)
        print(f"bench: nginx farm on 127.0.0.1:{backend_ports[0]}-{backend_ports[-1]}; "
              + "; ".join(f"{i} pid {pids[i]} on :{PORT_BASE[i] + 3} (httpclose) :{PORT_BASE[i] + 4} (reuse)"
                          for i in impls), flush=True)
        time.sleep(1)  # let the first health checks pass before measuring
        total = args.rounds * len(modes) * len(conns) * len(impls)
        done = 0
        for rnd in range(1, args.rounds + 1):
            for mode in modes:
                suffix, extra, _ = MODES[mode]
                for c in conns:
                    for impl in impls:  # A B, A B ...
                        if time.monotonic() - started > args.max_minutes * 60:
                            stopped_early = f"stopped at --max-minutes {args.max_minutes} after {done}/{total} runs"
                            raise TimeoutError(stopped_early)
                        res, cpu, raw = run_wrk(PORT_BASE[impl] + int(suffix), c, args.duration, extra, pids[impl])
                        r = Run(rnd, mode, c, impl, raw=raw, **res)  # type: ignore[arg-type]
                        r.cpu_us_per_req = cpu * 1e6 / r.requests if r.requests else 0.0
                        runs.append(r)
                        done += 1
                        print(f"[{done}/{total}] round {rnd} {mode:14} c{c:<4} {impl:10} {r.rps:>10.0f} req/s  "
                              f"p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  {r.cpu_us_per_req:.1f} µs/req"
                              + (f"  errors {r.errors}" if r.errors else ""), flush=True)
    except TimeoutError:
        print(f"bench: {stopped_early}", flush=True)
    except RuntimeError as e:  # a proxy or nginx that does not start: say why, keep what was measured
        print(f"bench: {e}", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    if not runs:
        return 1
    table, summary = report(runs, impls)
    print()
    print(table)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.results / f"bench-{stamp}.json"
    out.write_text(json.dumps({
        "date": stamp, "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "versions": versions(impls), "settings": {k: str(v) for k, v in vars(args).items()},
        "stopped_early": stopped_early, "config_note": config_note, "summary": summary,
        "runs": [{k: v for k, v in asdict(r).items() if k != "raw"} for r in runs],
    }, indent=2))
    print(f"\nbench: results written to {out}")
    return 0


def versions(impls: list[str]) -> dict[str, str]:
    v: dict[str, str] = {}
    for name, cmd in (("nginx", [tool("nginx"), "-v"]), ("wrk", [tool("wrk"), "--version"]),
                      ("haproxy", [tool("haproxy"), "-v"])):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            v[name] = ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            v[name] = "?"
    if "balancier" in impls:
        p = subprocess.run([sys.executable, "-m", "balancier", "--version"], capture_output=True, text=True,
                           timeout=30)
        v["balancier"] = p.stdout.strip() or p.stderr.strip()[-200:]
    v["python"] = sys.version.split()[0]
    return v


if __name__ == "__main__":
    raise SystemExit(main())
