#!/usr/bin/env python3
"""Worker scaling: balancier with 1 and 2 worker processes next to HAProxy with nbthread 1 and 2, same run.

One nginx farm (bench/run.py's, 4 ports), one configuration per target (`listen` with `balance roundrobin`
over the 4 nginx servers, `http-reuse always`), wrk `-t1` in keep-alive and in `Connection: close` mode. The
targets are measured A B C D A B C D (rounds) so that they share a busy machine alike. Load generator and
backends are pinned with `taskset` to the last CPU (`--gen-cpus`), the proxies are not pinned: on a 2-CPU machine
the generator and nginx share CPU 1 with the proxy's second worker/thread, which is why the 2-worker figure
there is a lower bound. Reported per target: req/s (median of rounds), proxy CPU µs per request (all its
processes), and the 2/1 ratios for each implementation.

With `--cpu-budget Q` (root, cgroup v1 `cpu` controller or cgroup v2) nothing is pinned; instead every worker
process of balancier and every thread of HAProxy gets its own CPU cgroup capped at Q CPUs (CFS quota). One
worker then has Q CPUs, two workers 2xQ, and with Q small enough (0.35 on a 2-CPU machine) the load generator and
nginx keep the rest of the machine: they are no longer what saturates first, so the 2/1 ratio shows how the work
spreads over workers (the accept distribution, shared counters, server state relayed by the master) rather than
how many cores the box has left for the proxy. The master process is idle and left outside the budget.

    python3 bench/scaling.py                          # 3 rounds x 2 modes x 4 targets, 8 s each (~4 min)
    python3 bench/scaling.py --rounds 1 --duration 3  # a short run (~40 s)
    python3 bench/scaling.py --cpu-budget 0.35        # per worker/thread CPU caps instead of pinning
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: nginx farm, wrk parsing, CPU accounting)

TARGETS = {  # name -> (implementation, workers, port)
    "balancier-1w": ("balancier", 1, 8701),
    "balancier-2w": ("balancier", 2, 8702),
    "haproxy-nbt1": ("haproxy", 1, 8711),
    "haproxy-nbt2": ("haproxy", 2, 8712),
}
MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}


def conf(port: int, workers: int, backend_ports: list[int]) -> str:
    servers = "".join(f"    server web{i} 127.0.0.1:{p}\n" for i, p in enumerate(backend_ports))
    return (f"global\n    nbthread {workers}\n    maxconn 4000\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            "    http-reuse always\n"
            f"listen bench\n    bind 127.0.0.1:{port}\n    balance roundrobin\n{servers}")


def command(impl: str, cfg: Path) -> list[str]:
    if impl == "haproxy":
        return [base.tool("haproxy"), "-db", "-f", str(cfg)]
    return [sys.executable, "-m", "balancier", "proxy", "-db", "-f", str(cfg)]


def pinned(cpus: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


class CpuBudget:
    """One CPU cgroup per worker process / thread, each capped at `share` CPUs; removed on close()."""

    PERIOD_US = 20000  # a short CFS period: throttling comes in small slices rather than 100 ms stalls

    def __init__(self, share: float) -> None:
        self.share = share
        self.groups: list[Path] = []
        v1 = Path("/sys/fs/cgroup/cpu")
        if (v1 / "cpu.cfs_quota_us").exists():
            self.root, self.v2 = v1, False
        elif Path("/sys/fs/cgroup/cgroup.controllers").exists():
            self.root, self.v2 = Path("/sys/fs/cgroup"), True
            if "cpu" not in (self.root / "cgroup.subtree_control").read_text().split():
                (self.root / "cgroup.subtree_control").write_text("+cpu")
        else:
            raise SystemExit("--cpu-budget needs the cgroup cpu controller (v1 or v2)")
        if os.geteuid() != 0:
            raise SystemExit("--cpu-budget needs root (it creates CPU cgroups)")

    def cap(self, name: str, tids: list[int]) -> None:
        """Each of tids (a process or one thread) into its own group of `share` CPUs."""
        quota = int(self.share * self.PERIOD_US)
        for i, tid in enumerate(tids):
            g = self.root / f"balancier-bench-{os.getpid()}-{name}-{i}"
            g.mkdir()
            self.groups.append(g)
            if self.v2:  # a threaded group takes single threads of a process (HAProxy's nbthread)
                (g / "cgroup.type").write_text("threaded")
                (g / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
                (g / "cgroup.threads").write_text(str(tid))
            else:
                (g / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (g / "cpu.cfs_quota_us").write_text(str(quota))
                (g / "tasks").write_text(str(tid))

    def close(self) -> None:
        top = self.root / "cgroup.threads" if self.v2 else self.root / "tasks"
        for g in reversed(self.groups):
            try:
                members = (g / ("cgroup.threads" if self.v2 else "tasks")).read_text().split()
                for tid in members:  # back to the root before the group can go
                    top.write_text(tid)
                g.rmdir()
            except OSError as e:
                print(f"warning: could not remove {g}: {e}", file=sys.stderr)
        self.groups.clear()


def workers_of(impl: str, pid: int) -> list[int]:
    """The ids that carry traffic: HAProxy's threads; balancier's worker processes (the master's children, or
    the process itself when it runs alone)."""
    if impl == "haproxy":
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    kids = [p for p in base.descendants(pid) if p != pid]
    return kids or [pid]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--gen-cpus", default=str(os.cpu_count() - 1 if (os.cpu_count() or 1) > 1 else ""),
                    help="CPUs for wrk and nginx (taskset list; empty: no pinning)")
    ap.add_argument("--cpu-budget", type=float, default=0.0,
                    help="cap every worker process / HAProxy thread at this many CPUs (cgroups) instead of pinning")
    ap.add_argument("--backend-port", type=int, default=9101)
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if args.cpu_budget:
        args.gen_cpus = ""  # the budget separates proxy and generator; pinning would take a core from both
    budget = CpuBudget(args.cpu_budget) if args.cpu_budget else None
    targets = [t for t in args.targets.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    base.ensure_tools(["nginx", "wrk"] + (["haproxy"] if any(t.startswith("haproxy") for t in targets) else []))
    procs = base.Procs()
    rows: list[dict[str, object]] = []
    backend_ports = [args.backend_port + i for i in range(4)]
    try:
        with tempfile.TemporaryDirectory(prefix="balancier-scaling-") as tmp:
            work = Path(tmp)
            (work / "nginx.conf").write_text(base.nginx_conf(work, backend_ports))
            nginx = procs.start("nginx", pinned(args.gen_cpus, [base.tool("nginx"), "-p", str(work), "-c",
                                                                str(work / "nginx.conf"), "-g", "daemon off;"]),
                                work / "nginx.out")
            for p in backend_ports:
                base.wait_listening(p, nginx, "nginx")
            started = {}
            for name in targets:
                impl, workers, port = TARGETS[name]
                cfg = work / f"{name}.cfg"
                cfg.write_text(conf(port, workers, backend_ports))
                started[name] = procs.start(name, command(impl, cfg), work / f"{name}.out")
                base.wait_listening(port, started[name], name)
                time.sleep(0.5)
                base.check_target(port)
                if budget is not None:
                    ids = workers_of(impl, started[name].pid)
                    if len(ids) != workers:
                        raise SystemExit(f"{name}: expected {workers} workers/threads, found {ids}")
                    budget.cap(name, ids)
            wrk_prefix = ["taskset", "-c", args.gen_cpus] if args.gen_cpus else []
            for rnd in range(args.rounds):
                for mode in modes:
                    for name in targets:
                        impl, workers, port = TARGETS[name]
                        pid = started[name].pid
                        cmd = [*wrk_prefix, base.tool("wrk"), "-t1", f"-c{args.conns}", f"-d{args.duration}s",
                               *MODES[mode], f"http://127.0.0.1:{port}/"]
                        cpu0 = base.cpu_seconds(pid)
                        out = base.subprocess.run(cmd, capture_output=True, text=True,
                                                  timeout=args.duration + 30).stdout
                        cpu1 = base.cpu_seconds(pid)
                        res = base.parse_wrk(out)
                        req = int(res["requests"]) or 1  # type: ignore[call-overload]
                        rows.append({"round": rnd, "mode": mode, "target": name, "rps": res["rps"],
                                     "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / req, "errors": res["errors"]})
                        print(f"round {rnd + 1} {mode:<10} {name:<13} {res['rps']:>9} req/s "
                              f"{(cpu1 - cpu0) * 1e6 / req:7.1f} us/req {res['errors'] or ''}", flush=True)
    finally:
        procs.stop_all()
        if budget is not None:
            budget.close()
    print()
    print(f"{'mode':<11}{'target':<14}{'req/s (median)':>15}{'us/req':>9}")
    summary: dict[str, dict[str, float]] = {}
    for mode in modes:
        for name in targets:
            sel = [r for r in rows if r["mode"] == mode and r["target"] == name]
            rps = statistics.median(float(r["rps"]) for r in sel)  # type: ignore[arg-type]
            us = statistics.median(float(r["cpu_us_per_req"]) for r in sel)  # type: ignore[arg-type]
            summary.setdefault(mode, {})[name] = rps
            print(f"{mode:<11}{name:<14}{rps:>15.0f}{us:>9.1f}")
        s = summary[mode]
        for impl, one, two in (("balancier", "balancier-1w", "balancier-2w"),
                               ("haproxy", "haproxy-nbt1", "haproxy-nbt2")):
            if s.get(one) and s.get(two):
                print(f"{mode:<11}{impl + ' 2/1':<14}{s[two] / s[one]:>15.2f}x")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / f"scaling-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"settings": vars(args), "runs": rows, "median_rps": summary}, indent=1))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
