#!/usr/bin/env python3
"""The control plane's figures: detection time vs deadtime, election time, CIB convergence, idle CPU.

Real `balancier cluster run` daemons on loopback (127.0.0.1, UDP ports picked by the kernel), each with its
own state directory in a temporary folder, read through their status.json (events carry wall-clock times).
The resource is a tiny OCF shell agent whose state is a file, so no root and no network change is needed.

    python3 bench/cluster_figures.py                    # 5 rounds of everything, ~3 min on an idle machine
    python3 bench/cluster_figures.py --rounds 2 --cpu-seconds 10   # quicker
    python3 bench/cluster_figures.py --only detection,cpu

What is measured (min / median / max over the rounds):
- detection: SIGKILL a node at a random phase of the heartbeat cycle; time until the survivor logs it dead,
  for several (keepalive, deadtime) pairs. Expected: within (deadtime - keepalive, deadtime + one check].
- election: three nodes; SIGKILL the DC; time from the kill, and from the survivors' detection, until the
  new DC is elected; plus the cold start of two nodes started together (until one DC and one CIB).
- convergence: the killed DC returns (new generation): time from its process start, and from its first
  heartbeat reaching a survivor, until the three nodes hold the same CIB (version + digest) and DC; an
  administrator's change sent to a follower (`node standby`, `node online`): time from the DC applying it
  until every node holds the new CIB.
- cpu: two idle nodes at keepalive 200 ms, CPU time from /proc over a window, in % of one core.

Everything is bounded (--max-minutes); every daemon is stopped by pid, even on error or Ctrl-C.
Results are printed and written as JSON to --results (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECRET = "bench-secret"
AGENT = r"""#!/bin/sh
STATE="$OCF_RESKEY_dir/${OCF_RESKEY_CRM_meta_on_node:-local}-$OCF_RESOURCE_INSTANCE"
case "$1" in
  start) touch "$STATE"; exit 0 ;;
  stop) rm -f "$STATE"; exit 0 ;;
  monitor|status) [ -f "$STATE" ] && exit 0; exit 7 ;;
  validate-all) exit 0 ;;
  meta-data) echo '<?xml version="1.0"?><resource-agent name="Flag"><actions><action name="start"/></actions></resource-agent>'; exit 0 ;;
  *) exit 3 ;;
esac
"""


class Deadline(Exception):
    pass


class Bench:
    """Daemons of one configuration in a temporary folder; stops them all at the end."""

    def __init__(self, root: Path, names: list[str], keepalive_ms: int, deadtime_ms: int, initdead_ms: int,
                 stop_at: float) -> None:
        self.root = root
        self.names = names
        self.stop_at = stop_at
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        root.mkdir(parents=True)
        key = root / "authkey"
        key.write_text(f"auth 1\n1 sha256 {SECRET}\n")
        key.chmod(0o600)
        agent = root / "ocf" / "resource.d" / "bench" / "Flag"
        agent.parent.mkdir(parents=True)
        agent.write_text(AGENT)
        agent.chmod(0o755)
        (root / "flags").mkdir()
        socks = []
        for _ in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        nodes = "".join(f'[[node]]\nname = "{n}"\naddress = "127.0.0.1:{p}"\n' for n, p in zip(names, ports, strict=True))
        self.config = root / "cluster.toml"
        self.config.write_text(
            f'[cluster]\nname = "bench"\nkeepalive = "{keepalive_ms}ms"\nwarntime = "{deadtime_ms // 2}ms"\n'
            f'deadtime = "{deadtime_ms}ms"\ninitdead = "{initdead_ms}ms"\nauthkey_file = "authkey"\n{nodes}'
            f'[[resource]]\nid = "vip"\nagent = "ocf:bench:Flag"\nparams = {{ dir = "{root / "flags"}" }}\n'
            f'[[location]]\nresource = "vip"\nnode = "{names[0]}"\nscore = 200\n')

    def state_dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(exist_ok=True)
        return d

    def start(self, name: str) -> None:
        cmd = [sys.executable, "-m", "balancier", "cluster", "run", "-c", str(self.config), "--node", name,
               "--state-dir", str(self.state_dir(name))]
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True,
                                                env=dict(os.environ, OCF_ROOT=str(self.root / "ocf")))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def status(self, name: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.root / name / "status.json").read_text())
            return doc
        except (FileNotFoundError, ValueError):
            return {}

    def event(self, name: str, kind: str, node: str, since: float) -> dict[str, Any] | None:
        for e in reversed(self.status(name).get("events", [])):
            if e["kind"] == kind and e["node"] == node and e["t"] >= since:
                return e  # type: ignore[no-any-return]
        return None

    def agreed(self, names: list[str], dc: str | None = None) -> bool:
        views = [self.status(n) for n in names]
        if not all(views):
            return False
        dcs = {v.get("dc") for v in views}
        cibs = {(tuple(v["cib"]["version"]), v["cib"]["digest"]) for v in views}
        members = {tuple(v.get("members", ())) for v in views}
        return (len(dcs) == 1 and None not in dcs and (dc is None or dcs == {dc}) and len(cibs) == 1
                and members == {tuple(sorted(names))})

    def wait(self, what: str, timeout: float, pred: Callable[..., Any], *args: Any) -> Any:
        """Poll pred(*args) every 5 ms until it is true (its value is returned) or the timeout."""
        deadline = min(time.monotonic() + timeout, self.stop_at)
        while time.monotonic() < deadline:
            value = pred(*args)
            if value:
                return value
            time.sleep(0.005)
        if time.monotonic() >= self.stop_at:
            raise Deadline(what)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what} (logs in {self.root})")


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values)), "median": round(statistics.median(values)),
            "max": round(max(values))}


def fmt(s: dict[str, Any]) -> str:
    return "n=0" if not s["n"] else f"{s['min']} / {s['median']} / {s['max']} ms (n={s['n']})"


def detection(tmp: Path, rounds: int, pairs: list[tuple[int, int]], stop_at: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keepalive, deadtime in pairs:
        b = Bench(tmp / f"detect-{keepalive}-{deadtime}", ["lb1", "lb2"], keepalive, deadtime, 2 * deadtime, stop_at)
        values: list[float] = []
        try:
            b.start("lb1")
            for _ in range(rounds):
                b.start("lb2")
                b.wait("agreement", 10 + 2 * deadtime / 1000, b.agreed, ["lb1", "lb2"])
                time.sleep(random.uniform(0, keepalive / 1000))
                t_kill = time.time()
                b.kill("lb2")
                dead = b.wait("lb1 to declare lb2 dead", deadtime / 1000 + 5, b.event, "lb1", "dead", "lb2", t_kill)
                values.append((dead["t"] - t_kill) * 1000)
        except Deadline:
            pass
        finally:
            b.stop_all()
        out[f"keepalive {keepalive} ms, deadtime {deadtime} ms"] = summary(values)
    return out


def _new_dc_elected(b: Bench, survivors: list[str], since: float) -> dict[str, Any] | None:
    """The election event of the new DC, once every survivor follows one of them."""
    if not all(b.status(n).get("dc") in survivors for n in survivors):
        return None
    return b.event(survivors[0], "election", b.status(survivors[0])["dc"], since)


def _changed_everywhere(b: Bench, names: list[str], follower: str, before: tuple[int, ...]) -> bool:
    return b.agreed(names) and tuple(b.status(follower)["cib"]["version"][:2]) > before


def election_and_convergence(tmp: Path, rounds: int, stop_at: float) -> dict[str, Any]:
    """Three nodes at keepalive 200 ms / deadtime 1 s: kill the DC, re-election, return, admin change."""
    names = ["lb1", "lb2", "lb3"]
    b = Bench(tmp / "election", names, 200, 1000, 3000, stop_at)
    after_kill: list[float] = []
    after_detection: list[float] = []
    back: list[float] = []
    back_join: list[float] = []
    command: list[float] = []
    admin: list[float] = []
    try:
        for n in names:
            b.start(n)
        b.wait("three nodes to agree", 20, b.agreed, names)
        for i in range(rounds):
            dc = b.status("lb1")["dc"]
            survivors = [n for n in names if n != dc]
            time.sleep(random.uniform(0, 0.2))
            t_kill = time.time()
            b.kill(dc)
            elected = b.wait("a new DC", 10, _new_dc_elected, b, survivors, t_kill)
            dead = b.event(survivors[0], "dead", dc, t_kill)
            after_kill.append((elected["t"] - t_kill) * 1000)
            if dead is not None:
                after_detection.append((elected["t"] - dead["t"]) * 1000)
            b.wait("survivors to agree", 10, b.agreed, survivors)
            t_start = time.time()
            b.start(dc)
            b.wait("the returning node to converge", 20, b.agreed, names)
            t_agree = time.time()
            back.append((t_agree - t_start) * 1000)
            joined = b.event(survivors[0], "up", dc, t_start)  # its first heartbeat reached a survivor
            if joined is not None:
                back_join.append((t_agree - joined["t"]) * 1000)
            # an administrator's change sent to a follower (standby, then online again): every node must
            # hold the new CIB
            follower = next(n for n in names if n != b.status(n).get("dc"))
            node = names[i % len(names)]
            for verb in ("standby", "online"):
                before = tuple(b.status(follower)["cib"]["version"][:2])
                dc_now = b.status(follower)["dc"]
                t_cmd = time.time()
                cmd = subprocess.Popen([sys.executable, "-m", "balancier", "node", verb, node, "--state-dir",
                                        str(b.state_dir(follower))], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
                try:
                    b.wait(f"the {verb} change everywhere", 15, _changed_everywhere, b, names, follower, before)
                    t_agree = time.time()
                    _, err = cmd.communicate(timeout=30)
                finally:
                    if cmd.poll() is None:
                        cmd.kill()
                        cmd.wait(5)
                if cmd.returncode != 0:
                    raise RuntimeError(f"balancier node {verb} {node}: {err.strip()}")
                command.append((time.time() - t_cmd) * 1000)
                applied = b.event(dc_now, "admin", dc_now, t_cmd)  # the DC's apply time
                if applied is not None:
                    admin.append((t_agree - applied["t"]) * 1000)
    except Deadline:
        pass
    finally:
        b.stop_all()
    cold: list[float] = []
    for i in range(rounds):
        c = Bench(tmp / f"cold-{i}", ["lb1", "lb2"], 200, 1000, 10_000, stop_at)
        try:
            t0 = time.time()
            c.start("lb1")
            c.start("lb2")
            c.wait("two nodes started together to agree", 20, c.agreed, ["lb1", "lb2"])
            cold.append((time.time() - t0) * 1000)
        except Deadline:
            break
        finally:
            c.stop_all()
    return {
        "election after the DC's SIGKILL (3 nodes, keepalive 200 ms, deadtime 1 s), from the kill":
            summary(after_kill),
        "election after the DC's SIGKILL, from the survivor's detection": summary(after_detection),
        "cold start of 2 nodes started together until one DC and one CIB (incl. process start-up)": summary(cold),
        "CIB convergence after the killed DC returns (from its process start)": summary(back),
        "CIB convergence after the returning node's first heartbeat reached a survivor": summary(back_join),
        "CIB convergence after `balancier node standby|online` sent to a follower (from the DC applying it "
        "until every node holds it)": summary(admin),
        "  (the command itself, a Python process start included)": summary(command),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(tmp: Path, seconds: float, stop_at: float) -> dict[str, Any]:
    b = Bench(tmp / "cpu", ["lb1", "lb2"], 200, 1000, 3000, stop_at)
    try:
        b.start("lb1")
        b.start("lb2")
        b.wait("agreement", 20, b.agreed, ["lb1", "lb2"])
        time.sleep(2)  # let the resource start and the first monitors settle
        pids = {n: b.procs[n].pid for n in ("lb1", "lb2")}
        before = {n: _cpu_seconds(p) for n, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        used = {n: round((_cpu_seconds(p) - before[n]) / elapsed * 100, 2) for n, p in pids.items()}
        return {"window_s": round(elapsed, 1), "percent_of_one_core": used,
                "still_agreed": b.agreed(["lb1", "lb2"])}
    finally:
        b.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="detection,election,cpu", help="comma list of detection,election,cpu")
    ap.add_argument("--pairs", default="100:500,200:1000,500:2000,1000:5000",
                    help="keepalive:deadtime pairs in ms for the detection figure")
    ap.add_argument("--cpu-seconds", type=float, default=30.0)
    ap.add_argument("--max-minutes", type=float, default=10.0, help="hard bound on the whole run")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the daemons' folders (logs, status.json)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    pairs = [(int(a), int(b)) for a, b in (p.split(":") for p in args.pairs.split(","))]
    stop_at = time.monotonic() + args.max_minutes * 60
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": args.rounds,
                               "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    tmp = tempfile.mkdtemp(prefix="balancier-cluster-figures-")
    try:
        if "detection" in only:
            results["detection"] = detection(Path(tmp), args.rounds, pairs, stop_at)
            for k, v in results["detection"].items():
                print(f"detection, {k}: {fmt(v)}", flush=True)
        if "election" in only:
            results["election"] = election_and_convergence(Path(tmp), args.rounds, stop_at)
            for k, v in results["election"].items():
                print(f"{k}: {fmt(v)}", flush=True)
        if "cpu" in only:
            results["cpu"] = idle_cpu(Path(tmp), args.cpu_seconds, stop_at)
            print(f"idle CPU of 2 nodes at keepalive 200 ms over {results['cpu']['window_s']} s: "
                  + ", ".join(f"{n} {u} %" for n, u in results["cpu"]["percent_of_one_core"].items())
                  + " of one core", flush=True)
    finally:
        if args.keep:
            print(f"daemons' folders kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_at_end"] = os.getloadavg()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cluster-figures-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
