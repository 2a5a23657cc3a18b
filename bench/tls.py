#!/usr/bin/env python3
"""TLS side by side: balancier vs Debian's haproxy terminating TLS with the same certificate, same run.

Two measures, each with wrk over HTTPS to one nginx backend on loopback:
- handshakes/s: `wrk -H 'Connection: close'` (every request is a new TLS connection: one full handshake each,
  unless wrk resumes a session, which it does for both proxies alike);
- TLS keep-alive req/s: wrk's default keep-alive connections (one handshake per connection, then requests).
Both proxies read the same configuration text (HAProxy's language: `bind ... ssl crt site.pem`), with `nbthread 1`
(one worker each). Runs alternate A B A B for `--rounds` rounds; the table gives medians and the ratio
balancier/haproxy per measure, plus CPU µs per request of each proxy process. Results go to bench/results/ as JSON.

Usage: python3 bench/tls.py [--rounds 3] [--duration 5] [--conns 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Procs, cpu_seconds, ensure_tools, nginx_conf, parse_wrk, port_free, tool, wait_listening  # noqa: E402

HERE = Path(__file__).resolve().parent
PORTS = {"haproxy": 8743, "balancier": 8744}
MEASURES = {"handshake": ["-H", "Connection: close"], "keepalive": []}


def proxy_cfg(port: int, pem: Path, backend_port: int) -> str:
    return f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    default_backend be
backend be
    http-reuse always
    server nginx 127.0.0.1:{backend_port}
"""


def make_cert(workdir: Path) -> Path:
    import trustme

    ca = trustme.CA()
    pem = workdir / "site.pem"
    ca.issue_cert("bench.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return pem


def wrk(port: int, conns: int, duration: int, extra: list[str], pid: int) -> tuple[dict[str, object], float]:
    cmd = [tool("wrk"), "-t1", f"-c{conns}", f"-d{duration}s", "--latency", *extra, f"https://127.0.0.1:{port}/"]
    cpu0 = cpu_seconds(pid)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    cpu1 = cpu_seconds(pid)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stderr.strip()}")
    return parse_wrk(p.stdout), cpu1 - cpu0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--backend-port", type=int, default=9041)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    ensure_tools(["nginx", "wrk", "haproxy"])
    busy = [p for p in [args.backend_port, *PORTS.values()] if not port_free(p)]
    if busy:
        sys.exit(f"bench: ports already in use on 127.0.0.1: {busy}")
    workdir = Path(tempfile.mkdtemp(prefix="balancier-tls-bench-"))
    procs = Procs()
    runs: list[dict[str, object]] = []
    try:
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / d).mkdir()
        (workdir / "nginx.conf").write_text(nginx_conf(workdir, [args.backend_port]))
        nginx = procs.start("nginx", [tool("nginx"), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                      "-g", "daemon off;"], workdir / "nginx.out")
        wait_listening(args.backend_port, nginx, "nginx")
        pem = make_cert(workdir)
        pids: dict[str, int] = {}
        for impl, port in PORTS.items():
            cfg = workdir / f"{impl}.cfg"
            cfg.write_text(proxy_cfg(port, pem, args.backend_port))
            cmd = ([tool("haproxy"), "-db", "-f", str(cfg)] if impl == "haproxy"
                   else [sys.executable, "-m", "balancier", "proxy", "-db", "-f", str(cfg)])
            proc = procs.start(impl, cmd, workdir / f"{impl}.out")
            wait_listening(port, proc, impl)
            pids[impl] = proc.pid
        time.sleep(1)
        total = args.rounds * len(MEASURES) * len(PORTS)
        done = 0
        for rnd in range(1, args.rounds + 1):
            for measure, extra in MEASURES.items():
                for impl, port in PORTS.items():  # A B, A B ...
                    res, cpu = wrk(port, args.conns, args.duration, extra, pids[impl])
                    reqs = int(res["requests"])  # type: ignore[call-overload]
                    run = {"round": rnd, "measure": measure, "impl": impl, "rps": res["rps"],
                           "requests": reqs, "errors": res["errors"],
                           "cpu_us_per_req": cpu * 1e6 / reqs if reqs else 0.0}
                    runs.append(run)
                    done += 1
                    print(f"[{done}/{total}] round {rnd} {measure:9} {impl:9} {float(res['rps']):>9.0f} req/s  "  # type: ignore[arg-type]
                          f"{run['cpu_us_per_req']:.0f} µs/req" + (f"  errors {res['errors']}" if res["errors"] else ""),
                          flush=True)
    finally:
        procs.stop_all()
    lines = [f"TLS, wrk -t1 -c{args.conns} -d{args.duration}s, {args.rounds} rounds, medians",
             "| measure | haproxy req/s | balancier req/s | ratio | haproxy µs/req | balancier µs/req |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for measure in MEASURES:
        med = {i: statistics.median(float(r["rps"]) for r in runs  # type: ignore[arg-type]
                                    if r["measure"] == measure and r["impl"] == i) for i in PORTS}
        cpu = {i: statistics.median(float(r["cpu_us_per_req"]) for r in runs  # type: ignore[arg-type]
                                    if r["measure"] == measure and r["impl"] == i) for i in PORTS}
        ratio = med["balancier"] / med["haproxy"] if med["haproxy"] else 0.0
        summary[measure] = {"rps": med, "cpu_us_per_req": cpu, "ratio": ratio}
        label = "handshakes/s (Connection: close)" if measure == "handshake" else "TLS keep-alive req/s"
        lines.append(f"| {label} | {med['haproxy']:.0f} | {med['balancier']:.0f} | {ratio:.2f}× | "
                     f"{cpu['haproxy']:.0f} | {cpu['balancier']:.0f} |")
    print("\n".join(lines))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"tls-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"runs": runs, "summary": summary, "conns": args.conns, "duration": args.duration},
                              indent=1))
    print(f"bench: results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
