#!/usr/bin/env python3
"""Profile balancier's data plane under wrk load: CPU µs per request, and where the user-space time goes.

Starts the benchmark's nginx farm and balancier with the benchmark's configuration (bench/run.py), runs wrk
against one mode, and reports the proxy's CPU per request split into user and system time. With `--pyspy` it
samples the proxy with py-spy during the run and prints the functions with the most own time (`--svg FILE`
also writes a flame graph).

Rules this script keeps (as bench/run.py): loopback only, only processes it started (stopped by pid), every run
bounded by wrk's -d and a subprocess timeout.

    python3 bench/profile_load.py --mode ka-reuse --duration 5
    python3 bench/profile_load.py --mode close-reuse --pyspy --top 40
    python3 bench/profile_load.py --mode seed-httpclose --callgrind --keep /tmp/cg.out

With `--callgrind` the proxy runs under valgrind's callgrind, instrumentation switched on for the last wrk run
only: user-space instructions per request *under load* (many events per loop turn, as in bench/run.py), where
bench/instructions.py counts them one client at a time. The timings of that run mean nothing (valgrind).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py, next to this file)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def times(pid: int) -> tuple[float, float]:
    f = bench._stat_fields(pid)
    if not f:
        return 0.0, 0.0
    return int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK


def top_own(raw: str, n: int) -> str:
    """Own-time ranking from py-spy's collapsed stacks ('frame;frame;frame count' per line)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        own[stack.rsplit(";", 1)[-1]] += c
    lines = [f"{total} samples"]
    for frame, c in own.most_common(n):
        lines.append(f"{100.0 * c / max(total, 1):6.2f}%  {frame}")
    return "\n".join(lines)


def syscalls_per_request(table: str, requests: int) -> str:
    """strace -c's table reduced to calls per request, most frequent first."""
    rows = []
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",) and parts[3].isdigit():
            rows.append((int(parts[3]), parts[-1]))
    rows.sort(reverse=True)
    total = sum(c for c, _ in rows)
    out = [f"{c / requests:7.2f}  {name}" for c, name in rows]
    out.append(f"{total / requests:7.2f}  total")
    return "\n".join(out)


def instructions_per_request(out_file: Path, requests: int) -> str:
    """callgrind's total over the requests wrk completed, and the split by library (bench/instructions.py)."""
    import instructions  # bench/instructions.py, next to this file

    lines = [f"{instructions.total(out_file) / requests:,.0f} instructions per request ({requests} requests under "
             "callgrind)"]
    lines += [f"  {v:10,.0f}  {name}" for name, v in instructions.by_object(out_file, requests)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="ka-reuse", choices=list(bench.MODES))
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="wrk runs in a row (each reported)")
    ap.add_argument("--backend-port", type=int, default=9101)
    ap.add_argument("--proxy-port-base", type=int, default=8600)
    ap.add_argument("--pyspy", action="store_true", help="sample the proxy with py-spy during the last run")
    ap.add_argument("--svg", type=Path, help="also write a py-spy flame graph here")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    ap.add_argument("--strace", action="store_true", help="count the proxy's syscalls during the last run (strace -c)")
    ap.add_argument("--callgrind", action="store_true",
                    help="run the proxy under callgrind, count instructions per request during the last run")
    ap.add_argument("--keep", type=Path, help="with --callgrind: copy callgrind's output file here")
    args = ap.parse_args(argv)
    if args.callgrind:
        bench.ensure_tools(["valgrind"])

    backend_ports = [args.backend_port + i for i in range(4)]
    bench.PORT_BASE["balancier"] = args.proxy_port_base
    suffix, extra, _ = bench.MODES[args.mode]
    port = args.proxy_port_base + int(suffix)
    busy = [p for p in backend_ports + [args.proxy_port_base + 3, args.proxy_port_base + 4] if not bench.port_free(p)]
    if busy:
        sys.exit(f"profile: ports already in use: {busy}")
    workdir = Path(tempfile.mkdtemp(prefix="balancier-prof-"))
    procs = bench.Procs()
    try:
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / d).mkdir()
        (workdir / "nginx.conf").write_text(bench.nginx_conf(workdir, backend_ports))
        nginx = procs.start("nginx", [bench.tool("nginx"), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                      "-g", "daemon off;"], workdir / "nginx.out")
        for p in backend_ports:
            bench.wait_listening(p, nginx, "nginx")
        cfg = workdir / "balancier.cfg"
        cfg.write_text(bench.proxy_conf("balancier", workdir, backend_ports, stats_socket=False))
        command = bench.proxy_command("balancier", cfg)
        cg_out = workdir / "callgrind.out"
        if args.callgrind:
            command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg_out}",
                       *command]
        proc = procs.start("balancier", command, workdir / "balancier.out")
        bench.wait_listening(port, proc, "balancier", timeout=180 if args.callgrind else 15)
        bench.check_target(port)
        time.sleep(0.5)
        for i in range(args.repeat):
            spy = None
            last = i == args.repeat - 1
            if args.pyspy and last:
                raw_out = workdir / "spy.txt"
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "500",
                                        "-d", str(args.duration), "-o", str(raw_out), ] + (["--native"] if args.native else ["--nonblocking"]),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tracer = None
            if args.strace and last:
                trace_out = workdir / "strace.txt"
                tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(trace_out), "-p", str(proc.pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)
            if args.callgrind and last:
                subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True,
                               timeout=60)
            u0, s0 = times(proc.pid)
            res, _cpu, _ = bench.run_wrk(port, args.conns, args.duration, extra, proc.pid)
            u1, s1 = times(proc.pid)
            n = int(res["requests"]) or 1  # type: ignore[call-overload]
            if args.callgrind and last:
                subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True,
                               timeout=60)
                proc.send_signal(2)
                proc.wait(60)
                print(instructions_per_request(cg_out, n), flush=True)
                if args.keep:
                    shutil.copyfile(cg_out, args.keep)
            print(f"{args.mode} c{args.conns}: {float(res['rps']):.0f} req/s  "  # type: ignore[arg-type]
                  f"user {1e6 * (u1 - u0) / n:.1f} + sys {1e6 * (s1 - s0) / n:.1f} = "
                  f"{1e6 * (u1 - u0 + s1 - s0) / n:.1f} µs/req  errors {res['errors']}", flush=True)
            if tracer is not None:
                tracer.send_signal(2)  # strace prints its table on SIGINT
                tracer.wait(30)
                print(f"syscalls per request ({n} requests; strace slows the proxy, counts only):")
                print(syscalls_per_request(trace_out.read_text(), n))
            if spy is not None:
                spy.wait(args.duration + 30)
                print(top_own(raw_out.read_text(), args.top))
                if args.svg:
                    subprocess.run(["py-spy", "record", "--pid", str(proc.pid), "-d", "3", "--rate", "500",
                                    "-o", str(args.svg), "--nonblocking"], check=False, timeout=60,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
