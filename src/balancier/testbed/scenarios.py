"""Measuring one failure scenario: a probe around a fault injected at a random phase.

Rules this file governs (spec testbed.md §1 "Fault injection", §5.1):

- The probe runs in the client's namespace as its own process (``python -m balancier.testbed.probe``);
  :class:`ProbeRun` starts it, waits until its first request answered, and stops it with SIGTERM (it
  then writes its JSON). Every run is bounded by the probe's ``--duration``.
- Fault times are CLOCK_MONOTONIC seconds, the probe's clock too, so :func:`probe.analyse` can cut the
  event window at the fault.
- A hard failure is injected at a random phase of the heartbeat (or advert) cycle: sleep
  uniform(0, cycle), then SIGKILL every process in the node's namespace (daemon, proxy, agents),
  then take its link down about 7 ms later, as the reference measurement did. A fixed schedule would
  hide the real spread.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancier.testbed.deployment import SERVICE_PORT
from balancier.testbed.probe import Outage, Sample, analyse, load
from balancier.testbed.topology import LB_NODES, VIP, Spawned, Testbed, TestbedError

LINK_DOWN_DELAY_S = 0.007


@dataclass
class Measured:
    """One event as the client saw it, plus when the VIP showed up on the new node (None: unknown)."""

    outage: Outage
    fault_at: float
    samples: list[Sample]
    vip_after_ms: float | None = None

    @property
    def outage_ms(self) -> float | None:
        return self.outage.outage_ms

    @property
    def failed(self) -> int:
        return self.outage.failed


class ProbeRun:
    """``with ProbeRun(tb, "name") as pr: ...; pr.result(fault_at, new_node)``."""

    def __init__(self, tb: Testbed, name: str, duration: float = 30.0, interval_ms: float = 10.0,
                 timeout_ms: float = 200.0, url: str | None = None, sessions: int = 0,
                 login_path: str = "/login?user=drill{i}") -> None:
        self.tb = tb
        self.name = name
        self.out = tb.workdir / f"{name}.json"
        self.duration = duration
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.url = url or f"http://{VIP}:{SERVICE_PORT}/"
        self.sessions = sessions
        self.login_path = login_path
        self.sp: Spawned | None = None
        self.samples: list[Sample] = []
        self.logins: list[dict[str, Any]] = []

    def start(self, ready_timeout: float = 15.0) -> ProbeRun:
        argv = [sys.executable, "-m", "balancier.testbed.probe", "--url", self.url,
                "--duration", str(self.duration), "--interval-ms", str(self.interval_ms),
                "--timeout-ms", str(self.timeout_ms), "--out", str(self.out)]
        if self.sessions:
            argv += ["--sessions", str(self.sessions), "--login-path", self.login_path]
        for node in LB_NODES:
            argv += ["--node", f"{self.tb.addr(node)}={node}"]
        self.sp = self.tb.spawn("client", f"probe-{self.name}", argv)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if "probing" in _read(self.sp.log):
                break
            if self.sp.popen.poll() is not None:
                raise TestbedError(f"probe exited early: {_read(self.sp.log)[-500:]}")
            time.sleep(0.05)
        else:
            raise TestbedError("probe did not start")
        time.sleep(0.3)  # some successful requests before anything happens: the baseline
        return self

    def stop(self) -> list[Sample]:
        if self.sp is None:
            return self.samples
        if self.sp.popen.poll() is None:
            self.tb.kill(self.sp, signal.SIGTERM, group=False)
        try:
            self.sp.popen.wait(self.timeout_ms / 1000 + 15)
        except Exception:
            self.tb.kill(self.sp, signal.SIGKILL)
            raise
        header, self.samples = load(self.out)
        self.logins = list(header.get("logins") or [])
        self.sp = None
        return self.samples

    def result(self, fault_at: float, new_node: str | None) -> Measured:
        samples = self.stop()
        return Measured(analyse(samples, fault_at, new_node), fault_at, samples)

    def __enter__(self) -> ProbeRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.sp is not None and self.sp.popen.poll() is None:
            self.tb.kill(self.sp, signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def random_phase(cycle_s: float, rng: random.Random | None = None) -> float:
    """Sleep uniform(0, cycle) so the fault lands anywhere in the heartbeat cycle; returns the delay."""
    delay = (rng or random).uniform(0.0, cycle_s)
    time.sleep(delay)
    return delay


def hard_failure(tb: Testbed, node: str) -> float:
    """SIGKILL everything in ``node``'s namespace, then its link down ~7 ms later; returns the fault time."""
    fault_at = time.monotonic()
    tb.kill_host(node)
    time.sleep(LINK_DOWN_DELAY_S)
    tb.link_down(node)
    return fault_at


def vip_overlap_ms(initial: dict[str, bool], events: list[tuple[float, str, bool]], end: float) -> float:
    """Milliseconds during which more than one node held the VIP (pure).

    initial: who held it when watching began; events: (time, node, holds) in any order; end: when watching
    stopped (same clock as the events).
    """
    held = dict(initial)
    total = 0.0
    last = None
    for t, node, holds in sorted(events):
        if last is not None and sum(held.values()) > 1:
            total += t - last
        held[node] = holds
        last = t
    if last is not None and sum(held.values()) > 1:
        total += max(0.0, end - last)
    elif last is None and sum(held.values()) > 1:
        raise ValueError("several nodes held the VIP during the whole watch: no start time to count from")
    return round(total * 1000, 1)


_MONITOR_RE = re.compile(r"^\[(\d{4}-\d\d-\d\dT[\d:.]+)\] (Deleted )?\d+: eth0\s+inet ([\d.]+)/")


def parse_address_monitor(text: str, node: str, vip: str = VIP) -> list[tuple[float, str, bool]]:
    """Events of ``ip -ts -o monitor address`` output for ``vip``: (wall time, node, added)."""
    out = []
    for line in text.splitlines():
        m = _MONITOR_RE.match(line)
        if m and m.group(3) == vip:
            when = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            out.append((when, node, m.group(2) is None))
    return out


class VipWatch:
    """Exact VIP timeline of lb1 and lb2 from ``ip -ts monitor address`` in their namespaces."""

    def __init__(self, tb: Testbed, name: str) -> None:
        self.tb = tb
        self.name = name
        self.monitors: dict[str, Spawned] = {}
        self.initial: dict[str, bool] = {}
        self.events: list[tuple[float, str, bool]] = []
        self.ended = 0.0

    def __enter__(self) -> VipWatch:
        for node in LB_NODES:
            self.monitors[node] = self.tb.spawn(node, f"vipwatch-{self.name}-{node}",
                                                ["ip", "-ts", "-o", "monitor", "address", "dev", "eth0"])
        time.sleep(0.2)  # the monitors subscribe before the state is read: no change falls in between
        self.initial = {node: self.tb.has_vip(node) for node in LB_NODES}
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.time()
        time.sleep(0.05)
        for node, sp in self.monitors.items():
            self.tb.kill(sp, signal.SIGTERM)
            sp.popen.wait(5)
            self.events += parse_address_monitor(_read(sp.log), node)

    def overlap_ms(self) -> float:
        return vip_overlap_ms(self.initial, self.events, self.ended)


def kill_in(tb: Testbed, host: str, pid: int, sig: int) -> None:
    """Signal ``pid`` only if it runs inside ``host``'s namespace (then it is one of ours)."""
    if pid not in tb.pids_in(host):
        raise TestbedError(f"pid {pid} is not a process of {host}")
    os.kill(pid, sig)


def wait_vip(tb: Testbed, node: str, since: float, timeout: float = 20.0, poll: float = 0.01) -> float | None:
    """Milliseconds from ``since`` until the VIP is on ``node`` (polled every ``poll`` s); None if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tb.has_vip(node):
            return round((time.monotonic() - since) * 1000, 1)
        time.sleep(poll)
    return None


def return_node(tb: Testbed, node: str) -> None:
    """A node that died hard comes back as a rebooted host would: no stale VIP, an empty /run, link up."""
    for leftover in tb.run_dir(node).iterdir():
        if leftover.is_file():
            leftover.unlink()
    if tb.has_vip(node):
        tb.ip(node, "addr", "del", f"{VIP}/24", "dev", "eth0")
    tb.clear_faults(node)
    tb.link_up(node)
