#!/usr/bin/env python3
"""Side-by-side failover benchmark: keepalived against balancier's cluster, same bed, same proxy, same timers.

Both move the VIP 10.99.0.10 between lb1 and lb2 of the namespace test bed (balancier.testbed) in front of
the same `balancier proxy` configuration, while the client probe sends a new `GET /` every 10 ms (200 ms
timeout). See bench/README.md ("Failover") for the method and how to read the table.

Rules this script keeps:
- Equal timers: keepalived's advert_int = balancier's keepalive (default 100 ms); balancier's deadtime
  (default 300 ms = 3 x keepalive) is what VRRP derives for the backup (3 x advert + skew).
- keepalived: VRRPv3, unicast peers, gratuitous ARP on (5 + 5 after 5 s); lb1 priority 200, lb2 100; the
  proxy runs all the time on both nodes. balancier: by default the recommended layout (--layout clone: the
  proxy cloned on both nodes, the VIP alone moving, allow-migrate), preferring lb1; --layout group runs
  the seed's group (VIP, then proxy, moving stop-then-start) for comparison.
- Scenarios, each run on a freshly started deployment with lb1 serving:
  hard    - at a random phase of the cycle (uniform(0, advert)), SIGKILL every process of lb1 and take
            its link down 7 ms later; outage until the first answer through lb2.
  planned - keepalived: SIGTERM to lb1's keepalived (priority-0 advert, the "clean stop");
            balancier: `balancier resource migrate vip lb2` (`esup_proxy` with --layout group).
  failback - (optional) lb1 dies hard, then returns as a rebooted host (no VIP, link up, its processes
            started again) and takes the group back: keepalived by preemption, balancier by auto_failback;
            measured from the return.
- Only network namespaces of its own bed, and only processes it started (killed by pid / process group,
  or found inside its own namespaces); everything is removed on every exit path. The whole run is
  bounded by --max-minutes; it then stops and reports what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from balancier.testbed import scenarios as sc  # noqa: E402
from balancier.testbed.deployment import (  # noqa: E402
    ClusterDeployment,
    ClusterTimers,
    KeepalivedDeployment,
    reset_nodes,
    start_apps,
)
from balancier.testbed.topology import Testbed, TestbedError  # noqa: E402

# spec/testbed.md §2, keepalived at advert_int 0.1 s (min / median / max), for the sanity check
REFERENCE_100MS = {"hard": {"outage_ms": (288, 300, 360), "failed": (29, 30, 36)},
                   "planned": {"outage_ms": (60, 61, 70), "failed": (6, 6, 7)}}


def ensure_keepalived() -> None:
    if shutil.which("keepalived"):
        return
    print("failover: keepalived is missing; installing Debian's keepalived", flush=True)
    subprocess.run(["apt-get", "install", "-y", "keepalived"], check=True, timeout=600)


def quiet_run(tb: Testbed, target: str, name: str, index: int, seconds: float) -> dict[str, Any]:
    """No fault at all: any VIP move or failed probe is a false failover."""
    with sc.ProbeRun(tb, name, duration=seconds + 30) as pr:
        with sc.VipWatch(tb, name) as watch:
            time.sleep(seconds)
        samples = pr.stop()
    failed = sum(not s.ok for s in samples)
    moves = len(watch.events)
    return {"target": target, "scenario": "quiet", "run": index, "seconds": seconds, "outage_ms": 0.0 if not failed
            else None, "failed": failed, "vip_ms": None, "vip_changes": moves, "false_failover": moves > 0 or failed > 0,
            "samples": len(samples)}


def failback_run(tb: Testbed, target: str, name: str, index: int,
                 dep: KeepalivedDeployment | ClusterDeployment) -> dict[str, Any]:
    """lb1 dies hard, lb2 serves; then lb1 comes back as a rebooted host and takes the VIP back (preemption,
    auto_failback). Measured from lb1's return: what the client loses while the VIP moves back."""
    sc.hard_failure(tb, "lb1")
    dep.wait_serving("lb2", 20)
    time.sleep(1.0)
    with sc.ProbeRun(tb, name, duration=60) as pr:
        back = time.monotonic()
        sc.return_node(tb, "lb1")
        if isinstance(dep, KeepalivedDeployment):
            dep.start_proxy("lb1")
        dep.start("lb1")
        vip_ms = sc.wait_vip(tb, "lb1", back, timeout=30)
        dep.wait_serving("lb1", 20)
        time.sleep(1.0)
        m = pr.result(back, "lb1")
    return {"target": target, "scenario": "failback", "run": index, "outage_ms": m.outage_ms, "failed": m.failed,
            "vip_ms": vip_ms, "nodes_after": list(m.outage.nodes_after), "false_failover": False,
            "samples": m.outage.samples}


def one_run(tb: Testbed, target: str, scenario: str, advert_ms: int, deadtime_ms: int, index: int,
            rng: random.Random, quiet_s: float = 10.0, layout: str = "clone") -> dict[str, Any]:
    reset_nodes(tb)
    name = f"{target}-{scenario}-{index}"
    if target == "keepalived":
        kd = KeepalivedDeployment(tb, advert_ms=advert_ms, name=name)
        kd.start_all()
        kd.wait_serving("lb1", timeout=30)
        wait_lb2 = kd.wait_serving
    else:
        cd = ClusterDeployment(tb, ClusterTimers(keepalive_ms=advert_ms, deadtime_ms=deadtime_ms), name=name,
                               layout=layout)
        cd.start_all()
        cd.wait_serving("lb1", timeout=30)
        wait_lb2 = cd.wait_serving
    time.sleep(1.0)  # quiet period: steady state before the fault
    if scenario == "quiet":
        return quiet_run(tb, target, name, index, quiet_s)
    if scenario == "failback":
        return failback_run(tb, target, name, index, kd if target == "keepalived" else cd)
    with sc.ProbeRun(tb, name, duration=60) as pr:
        delay = sc.random_phase(advert_ms / 1000, rng)
        if scenario == "hard":
            fault = sc.hard_failure(tb, "lb1")
        elif target == "keepalived":
            pid = kd.parent_pid("lb1")
            if pid is None:
                raise TestbedError("keepalived on lb1 wrote no pid file")
            fault = time.monotonic()
            sc.kill_in(tb, "lb1", pid, signal.SIGTERM)
        else:
            fault = time.monotonic()
            cd.migrate("lb2")
        vip_ms = sc.wait_vip(tb, "lb2", fault, timeout=20)
        wait_lb2("lb2", 20)
        time.sleep(0.5)
        m = pr.result(fault, "lb2")
    false_failover = any(s.ok and s.node == "lb2" for s in m.samples if s.start < fault)
    return {"target": target, "scenario": scenario, "run": index, "phase_ms": round(delay * 1000, 1),
            "outage_ms": m.outage_ms, "failed": m.failed, "vip_ms": vip_ms, "nodes_after": list(m.outage.nodes_after),
            "false_failover": false_failover, "samples": m.outage.samples}


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['target']}/{row['scenario']}"
        out.setdefault(key, {"outage_ms": [], "failed": [], "vip_ms": [], "unrecovered": 0, "false_failovers": 0})
        cell = out[key]
        cell["false_failovers"] += bool(row.get("false_failover"))
        if row.get("error") or row["outage_ms"] is None:
            cell["unrecovered"] += 1
            continue
        cell["outage_ms"].append(row["outage_ms"])
        cell["failed"].append(row["failed"])
        if row["vip_ms"] is not None:
            cell["vip_ms"].append(row["vip_ms"])
    return out


def _mmm(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):g} / {statistics.median(values):g} / {max(values):g}"


def report(summary: dict[str, dict[str, Any]], advert_ms: int, deadtime_ms: int, layout: str = "clone") -> str:
    lines = [f"failover at equal timers: advert_int = keepalive = {advert_ms} ms, balancier deadtime {deadtime_ms} ms "
             f"(balancier layout: {layout})",
             "",
             "| target | scenario | n | outage ms (min / median / max) | failed probes | fault->VIP on the new node ms "
             "| not recovered | false failovers |",
             "|---|---|---|---|---|---|---|---|"]
    for key, cell in sorted(summary.items()):
        target, scenario = key.split("/")
        lines.append(f"| {target} | {scenario} | {len(cell['outage_ms'])} | {_mmm(cell['outage_ms'])} | "
                     f"{_mmm(cell['failed'])} | {_mmm(cell['vip_ms'])} | {cell['unrecovered']} | "
                     f"{cell['false_failovers']} |")
    lines.append("")
    for scenario in ("hard", "planned", "failback"):
        k, b = summary.get(f"keepalived/{scenario}"), summary.get(f"balancier/{scenario}")
        if k and b and k["outage_ms"] and b["outage_ms"]:
            km, bm = statistics.median(k["outage_ms"]), statistics.median(b["outage_ms"])
            kf, bf = statistics.median(k["failed"]), statistics.median(b["failed"])
            ratio = f"{bm / km:.2f}x" if km else ("1.00x" if bm == 0 else "inf (keepalived lost nothing)")
            lines.append(f"{scenario}: balancier/keepalived median outage {bm:g}/{km:g} ms = {ratio}; "
                         f"median failed probes {bf:g} vs {kf:g}; max outage {max(b['outage_ms']):g} vs "
                         f"{max(k['outage_ms']):g} ms")
    if advert_ms == 100:
        lines.append("")
        for scenario, ref in REFERENCE_100MS.items():
            k = summary.get(f"keepalived/{scenario}")
            if k and k["outage_ms"]:
                lines.append(f"reference (spec/testbed.md, keepalived 0.1 s) {scenario}: outage "
                             f"{' / '.join(map(str, ref['outage_ms']))} ms, failed {' / '.join(map(str, ref['failed']))}; "
                             f"here {_mmm(k['outage_ms'])} ms, failed {_mmm(k['failed'])}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per target and scenario (default 5)")
    ap.add_argument("--advert-ms", type=int, default=100, help="keepalived advert_int = balancier keepalive")
    ap.add_argument("--deadtime-ms", type=int, default=None, help="balancier deadtime (default 3 x advert)")
    ap.add_argument("--targets", default="keepalived,balancier")
    ap.add_argument("--scenarios", default="hard,planned", help="hard, planned, failback, quiet (no fault: false failovers)")
    ap.add_argument("--quiet-seconds", type=float, default=10.0, help="length of a quiet run")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="hard bound on the whole run")
    ap.add_argument("--seed", type=int, default=None, help="random seed of the fault phases")
    ap.add_argument("--results", default=str(HERE.parent / "results"))
    ap.add_argument("--layout", choices=("clone", "group"), default="clone",
                    help="balancier's deployment: clone (recommended: proxy cloned, VIP migrates) or group (the seed's)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("failover: needs root (network namespaces)")
    targets = [t for t in args.targets.split(",") if t]
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [t for t in targets if t not in ("keepalived", "balancier")] + \
          [s for s in scenarios if s not in ("hard", "planned", "failback", "quiet")]
    if bad or args.runs < 1:
        ap.error(f"unknown target or scenario: {bad}" if bad else "--runs must be >= 1")
    if "keepalived" in targets:
        ensure_keepalived()
    deadtime = args.deadtime_ms or 3 * args.advert_ms
    rng = random.Random(args.seed)
    stop_at = time.monotonic() + args.max_minutes * 60
    rows: list[dict[str, Any]] = []
    with Testbed() as tb:
        start_apps(tb)
        # interleave targets run by run, so drift of the shared machine hits both alike
        for i in range(args.runs):
            for scenario in scenarios:
                for target in targets:
                    if time.monotonic() > stop_at:
                        print(f"failover: --max-minutes {args.max_minutes:g} reached; reporting what was measured",
                              flush=True)
                        break
                    try:
                        row = one_run(tb, target, scenario, args.advert_ms, deadtime, i, rng, args.quiet_seconds,
                                      args.layout)
                    except (TestbedError, subprocess.SubprocessError, OSError) as exc:
                        row = {"target": target, "scenario": scenario, "run": i, "error": str(exc),
                               "outage_ms": None}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
        reset_nodes(tb)
    summary = summarise(rows)
    text = report(summary, args.advert_ms, deadtime, args.layout)
    print()
    print(text)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"failover-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"settings": vars(args) | {"deadtime_ms": deadtime}, "rows": rows,
                                "summary": summary, "report": text}, indent=1))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
