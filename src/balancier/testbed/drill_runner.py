"""The failure drill's runner: steps in order, the probe around them, the verdict; and its pluggable parts.

Rules this file governs (the pure plan and verdict are in ``drill_plan``, the command in ``drill``):

- One :class:`Runner` runs every caller's plan: ``balancier drill`` (command-template injector,
  :class:`CommandInjector`), the end-to-end suite (namespace injector, ``drill_netns``) and ``balancier
  demo --drill`` (the demo's own processes). Injectors and the probe are pluggable; the steps, the
  waits and the verdict are not.
- Admin actions (migrate, unmigrate, standby, online) go through the cluster's own admin API
  (``balancier.cluster.admin.Client``) of any node that answers (it forwards changes to the DC); the
  state is read from the DC's view when the DC answers.
- A command template is split like a shell would (no shell runs it), then ``{node}``, ``{address}``
  and ``{server}`` are replaced in each word; a non-zero exit is a failed step, with its stderr.
- The probe is the failover probe (``probe.Probe``): a new TCP connection and ``GET`` every 10 ms, a
  200 ms timeout. The window of a scenario runs from just before its fault step to the first step
  that only restores the cluster; failures after that are not judged, but a restore that fails is.
- "The service answers" means: every check answered for ``STABLE_S`` (a fault's effect can lag its
  injection by milliseconds, so one answer right after it proves nothing).
- Before each scenario the cluster must be as the plan assumed (the group on its node, every node a
  member, the service answering), waited for up to the wait time; otherwise the scenario is reported
  as not run (failed), and nothing is done to the cluster.
"""

from __future__ import annotations

import json
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TextIO

from balancier.cluster.admin import Client, Unreachable
from balancier.testbed import drill_plan as dp
from balancier.testbed.drill_plan import DrillError
from balancier.testbed.probe import Probe, Sample, analyse, one_request, session_breaks

STABLE_S = 1.0  # "the service answers again": every check for this long


class Injector(Protocol):
    def can(self) -> frozenset[str]: ...

    def do(self, action: str, node: str) -> None: ...


class ProbeHandle(Protocol):
    def start(self) -> object: ...

    def stop(self) -> tuple[list[Sample], list[dict[str, Any]]]: ...


# --------------------------------------------------------------------------- injectors and probes


class CommandInjector:
    """The administrator's commands, one template per action (see the module's rules)."""

    def __init__(self, templates: Mapping[str, str], addresses: Mapping[str, str], timeout: float = 120.0) -> None:
        self.templates = {k: v for k, v in templates.items() if k in dp.INJECTOR_ACTIONS and v}
        self.addresses = dict(addresses)
        self.timeout = timeout

    def can(self) -> frozenset[str]:
        return frozenset(self.templates)

    def argv(self, action: str, node: str) -> list[str]:
        words = shlex.split(self.templates[action])
        values = {"node": node, "address": self.addresses.get(node, node), "server": node}
        return [w.format(**values) for w in words]

    def do(self, action: str, node: str) -> None:
        argv = self.argv(action, node)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DrillError(f"{action} on {node}: {shlex.join(argv)}: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-300:]
            raise DrillError(f"{action} on {node}: {shlex.join(argv)} exited {proc.returncode}: {tail}")


class LocalProbe:
    """The probe in a thread of this process (the service is reachable from here)."""

    def __init__(self, url: str, sessions: int = 0, login_path: str = "/login?user=drill{i}",
                 max_duration: float = 600.0) -> None:
        self.probe = Probe(url, duration=max_duration, sessions=sessions, login_path=login_path)
        self.thread: threading.Thread | None = None

    def start(self) -> LocalProbe:
        self.thread = threading.Thread(target=self.probe.run, name="drill-probe", daemon=True)
        self.thread.start()
        self.probe.started.wait(30)
        time.sleep(0.3)  # a baseline of successful requests before anything happens
        return self

    def stop(self) -> tuple[list[Sample], list[dict[str, Any]]]:
        self.probe.stop()
        if self.thread is not None:
            self.thread.join(30)
        return self.probe.samples, self.probe.logins


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Does ``url`` answer 2xx/3xx on a new connection (the probe's request)?"""
    parts = urllib.parse.urlsplit(url)
    s = one_request(parts.hostname or "", parts.port or 80, parts.path or "/", timeout, {}, 0, time.monotonic())
    return s.ok


# --------------------------------------------------------------------------- the cluster's admin API


class ClusterAdmin:
    """The admin API of every node; asks the DC's view first, and any live node for changes."""

    def __init__(self, clients: Mapping[str, Client], group: str) -> None:
        self.clients = dict(clients)
        self.group = group
        self._last: str | None = None

    def _order(self) -> list[tuple[str, Client]]:
        """The node that answered last first: a dead node's HTTP API costs a timeout on every poll."""
        return sorted(self.clients.items(), key=lambda kv: kv[0] != self._last)

    def status(self) -> dict[str, Any]:
        docs = []
        errors = []
        for node, client in self._order():
            try:
                code, doc = client.request("GET", "/api/status")
            except Unreachable as exc:
                errors.append(str(exc))
                continue
            if code == 200:
                self._last = node
                if doc.get("dc") == doc.get("node"):
                    return doc
                docs.append(doc)
            else:
                errors.append(f"{node} answered {code}: {doc.get('error')}")
        if docs:
            return docs[0]
        raise DrillError("no cluster node answered: " + "; ".join(errors))

    def where(self) -> str | None:
        for r in self.status().get("resources", []):
            if r.get("id") == self.group:
                return str(r["node"]) if r.get("state") == "started" and r.get("node") else None
        raise DrillError(f"the cluster has no resource {self.group!r}")

    def online(self) -> set[str]:
        return {str(n["name"]) for n in self.status().get("nodes", []) if n.get("state") == "online"}

    def change(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for _node, client in self._order():
            try:
                code, answer = client.request("POST", path, body)
            except Unreachable as exc:
                errors.append(str(exc))
                continue
            if code != 200 or not answer.get("ok"):
                raise DrillError(f"the cluster refused {path} ({code}): {answer.get('error', answer)}")
            return answer
        raise DrillError("no cluster node answered: " + "; ".join(errors))

    def migrate(self, node: str) -> None:
        self.change(f"/api/resource/{urllib.parse.quote(self.group, safe='')}/migrate", {"node": node})

    def unmigrate(self) -> None:
        self.change(f"/api/resource/{urllib.parse.quote(self.group, safe='')}/unmigrate", {})

    def standby(self, node: str) -> None:
        self.change(f"/api/node/{urllib.parse.quote(node, safe='')}/standby", {})

    def online_node(self, node: str) -> None:
        self.change(f"/api/node/{urllib.parse.quote(node, safe='')}/online", {})


# --------------------------------------------------------------------------- the runner


class Runner:
    """Runs plans: the steps in order, the probe around them, the verdict (see the module's rules)."""

    def __init__(self, admin: ClusterAdmin, injector: Injector, probe_factory: Callable[[str, int], ProbeHandle],
                 service_ok: Callable[[], bool], keepalive_ms: int, out: TextIO | None = None,
                 rng: random.Random | None = None, poll_s: float = 0.05, sessions: int = 8) -> None:
        self.admin = admin
        self.injector = injector
        self.probe_factory = probe_factory
        self.service_ok = service_ok
        self.keepalive_ms = keepalive_ms
        self.out = out or sys.stdout
        self.rng = rng or random.Random()
        self.poll_s = poll_s
        self.sessions = sessions  # persistent users of a scenario that checks them (7)
        self._skipped_migrate = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _wait(self, what: str, cond: Callable[[], bool], timeout: float, poll: float | None = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
                last = None
            except DrillError as exc:  # a node restarting does not answer for a moment
                last = exc
            time.sleep(poll or self.poll_s)
        raise DrillError(f"{what} within {timeout:g} s" + (f" ({last})" if last else ""))

    def wait_stable(self, timeout: float, stable_s: float = STABLE_S) -> None:
        """Wait until the service has answered every check for ``stable_s`` (a fault's effect may lag its
        injection by a few milliseconds: one answer right after it proves nothing)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.service_ok():
                since = since if since is not None else time.monotonic()
                if time.monotonic() - since >= stable_s:
                    return
            else:
                since = None
            time.sleep(0.02)
        raise DrillError(f"the service did not answer steadily for {stable_s:g} s within {timeout:g} s")

    def where_text(self) -> str:
        try:
            return f"it runs on {self.admin.where() or 'no node'}"
        except DrillError as exc:
            return str(exc)

    def execute(self, step: dp.Step) -> None:
        a, node = step.action, step.node
        if a in dp.INJECTOR_ACTIONS:
            assert node is not None
            self.injector.do(a, node)
        elif a == "migrate":
            assert node is not None
            self._skipped_migrate = bool(step.arg("if_elsewhere")) and self.admin.where() == node
            if not self._skipped_migrate:
                self.admin.migrate(node)
        elif a == "unmigrate":
            if not (step.arg("if_elsewhere") and self._skipped_migrate):
                self.admin.unmigrate()
        elif a == "standby":
            assert node is not None
            self.admin.standby(node)
        elif a == "online":
            assert node is not None
            self.admin.online_node(node)
        elif a == "wait_group":
            try:
                self._wait(f"{self.admin.group} did not run on {node}", lambda: self.admin.where() == node,
                           step.timeout_s)
            except DrillError as exc:
                raise DrillError(f"{exc}; {self.where_text()}") from None
        elif a == "wait_members":
            self._wait("not every node became a member",
                       lambda: set(self.admin.clients) <= self.admin.online(), step.timeout_s)
        elif a == "wait_service":
            self.wait_stable(step.timeout_s)
        elif a == "settle":
            time.sleep(float(step.arg("seconds", "1")))
        else:
            raise DrillError(f"unknown step {a!r}")

    def ready(self, p: dp.ScenarioPlan, timeout: float) -> None:
        """The state every plan starts from: the group on its node, every node a member."""
        self._wait(f"the cluster was not back in its starting state ({self.admin.group} on {p.active}, every "
                   "node a member)", lambda: set(self.admin.clients) <= self.admin.online()
                   and self.admin.where() == p.active, timeout, poll=0.1)
        self.wait_stable(timeout, stable_s=0.5)

    def run_one(self, p: dp.ScenarioPlan, ready_timeout: float = 30.0) -> dp.Result:
        r = dp.Result(p.spec.number, p.spec.name, p.spec.title, max_outage_ms=p.limits.max_outage_ms,
                      max_failed=p.limits.max_failed)
        self.say(f"scenario {p.spec.number} ({p.spec.name}): {p.spec.title}")
        try:
            self.ready(p, ready_timeout)
        except DrillError as exc:
            r.error = f"not run: {exc}"
            r.recovered = True
            return dp.judge(r)
        probe = self.probe_factory(f"s{p.spec.number}-{p.spec.name}", self.sessions if p.sessions else 0)
        probe.start()
        fault_at: float | None = None
        window_end: float | None = None
        t0 = time.monotonic()
        try:
            for i, step in enumerate(p.steps, 1):
                if fault_at is not None and window_end is None and not step.measured:
                    window_end = time.monotonic()
                if step.jitter:
                    time.sleep(self.rng.uniform(0.0, self.keepalive_ms / 1000))
                if step.fault:
                    fault_at = time.monotonic()
                started = time.monotonic()
                try:
                    self.execute(step)
                except DrillError as exc:
                    if step.arg("expect") == "failure":
                        r.extra[f"step {i}"] = f"failed as expected: {exc}"
                        self.say(f"  {time.monotonic() - t0:7.2f} s  {step.text}: failed as expected")
                        continue
                    r.error = f"step {i} ({step.text}): {exc}"
                    break
                if step.arg("expect") == "failure":
                    r.error = f"step {i} ({step.text}): it succeeded, it should have failed"
                    break
                self.say(f"  {time.monotonic() - t0:7.2f} s  {step.text}"
                         + (f" ({(time.monotonic() - started) * 1000:.0f} ms)" if step.action.startswith("wait")
                            else ""))
        finally:
            window_end = window_end or time.monotonic()
            samples, logins = probe.stop()
        inside = [s for s in samples if s.start < window_end]
        outage = analyse(inside, fault_at if fault_at is not None else t0)
        r.outage_ms, r.failed, r.probes = outage.outage_ms, outage.failed, outage.samples
        r.recovered = outage.failed == 0 or outage.outage_ms is not None
        r.nodes_after = list(outage.nodes_after)
        start = fault_at if fault_at is not None else t0
        for s in inside:
            if s.session is None and not s.ok and s.start >= start:
                r.errors[s.error or "failed"] = r.errors.get(s.error or "failed", 0) + 1
        if p.sessions:
            r.sessions_checked, r.sessions_broken = session_breaks(logins, inside, p.victim, fault_at)
            if r.sessions_checked == 0:
                r.error = r.error or ("no persistent user landed on a server other than "
                                      f"{p.victim}: the session check saw nothing")
        return dp.judge(r)

    def run(self, plans: Sequence[dp.ScenarioPlan], ready_timeout: float = 30.0) -> list[dp.Result]:
        results = []
        for p in plans:
            results.append(self.run_one(p, ready_timeout))
            res = results[-1]
            self.say(f"  -> {'PASS' if res.passed else 'FAIL'}: outage {res.outage_ms} ms, {res.failed} failed"
                     + ("" if res.passed else "; " + "; ".join(res.why)))
        return results


def selectable(ctx_can: frozenset[str], wanted: Sequence[int] | None) -> tuple[list[int], list[str]]:
    """The scenarios to run (asked for, or every one the injector can do) and why others are left out."""
    if wanted is not None:
        return list(wanted), []
    chosen, left = [], []
    for n, spec in sorted(dp.SCENARIOS.items()):
        missing = [a for a in spec.needs if a not in ctx_can]
        if missing:
            left.append(f"scenario {n} ({spec.name}) left out: no {', '.join(missing)} command")
        else:
            chosen.append(n)
    return chosen, left


def report(results: Sequence[dp.Result], meta: Mapping[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(dp.report_json(results, meta), indent=2))
    else:
        print(dp.format_report(results))
    return 0 if results and all(r.passed for r in results) else 1
