"""`balancier demo`: the reference deployment on this one machine, on loopback, without root.

What runs (each a separate process, all stopped on exit):
- three portal application servers (ents3, ents2, ents1 with the seed's weights 256/128/1) and the maintenance server,
  all the bundled `balancier.portal` app, which sets JSESSIONID on login and says which server answered;
- two cluster daemons (`balancier cluster run`, nodes lb1 and lb2) exchanging signed heartbeats on loopback; they
  keep the seed's group on lb1 (location 200 vs 100) and run the proxy there as the `balancier:proxy` resource;
- the proxy, `balancier proxy`, started by the cluster, with the seed's configuration mapped to loopback: cookie
  prefix persistence, HTTP health checks, backup server, X-Forwarded-For, retries and redispatch.

`kill lb1` at the demo's prompt kills lb1 as a machine dies (its daemon and its proxy): lb2 declares it dead after
the dead time and starts the proxy. `--self-test` does that by itself and checks what a newcomer would.
`--drill` runs the failure drill (`balancier.testbed.drill`) on the demo, the demo's own processes being the
fault injectors (a node dies = its daemon and proxy are SIGKILLed; `start` brings it back), and exits with the
drill's code (0: every scenario passed).

The virtual IP is simulated: the proxy binds the service address 127.0.0.100 on loopback (any 127.0.0.0/8 address
is local on Linux, so no root is needed). Moving a real address between hosts needs network namespaces and root:
that is what the end-to-end tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

SERVICE_ADDR = "127.0.0.100"
APP_SERVERS = (("ents3", 256, "s3"), ("ents2", 128, "s2"), ("ents1", 1, "s1"))
NODES = ("lb1", "lb2")


@dataclass
class Demo:
    base_port: int
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    viewer_token: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def service_url(self) -> str:
        return f"http://{SERVICE_ADDR}:{self.base_port}/"

    def port(self, offset: int) -> int:
        return self.base_port + offset

    # -- configuration files -------------------------------------------------------------------------------------
    def haproxy_cfg(self) -> str:
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{self.port(1 + i)} cookie {cookie} weight {weight}"
            f" check inter 2000 rise 1 fall 3"
            for i, (name, weight, cookie) in enumerate(APP_SERVERS)
        )
        return f"""# The reference deployment's configuration (seed), mapped to loopback by `balancier demo`.
global
    log stderr local3
    maxconn 4096
    # one worker: the newcomer sees the seed's exact weighted cycle (256/128/1 over 385 requests); with N
    # workers each keeps its own shifted cycle and a split of 385 requests is exact only within one per server
    nbthread 1
    stats socket {self.workdir}/proxy.sock mode 600 level admin

defaults
    log global
    mode http
    option httplog
    option dontlognull
    retries 3
    option redispatch
    maxconn 2000
    timeout connect 5s
    timeout client 50s
    timeout server 50s

listen esup-proxy
    bind {SERVICE_ADDR}:{self.base_port}
    cookie JSESSIONID prefix
    option httpchk GET /health
    option forwardfor except {SERVICE_ADDR}
    option httpclose
    balance roundrobin
{servers}
    server ent-maintenance 127.0.0.1:{self.port(4)} check inter 2000 backup
"""

    def dashboard_url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.port(20 + NODES.index(node))}/"

    def cluster_toml(self, authkey: Path, haproxy_cfg: Path) -> str:
        return f"""# Two-node cluster of `balancier demo`, on loopback: the seed's group kept on lb1 (score 200 vs 100).
[cluster]
name = "esup"
keepalive = "200ms"
warntime = "600ms"
deadtime = "1s"
initdead = "3s"
transport = "ucast"
authkey_file = "{authkey}"

[options]
stickiness = 0
migration_threshold = 3

[api]
auth_file = "{self.workdir / 'api-users'}"

[[node]]
name = "lb1"
address = "127.0.0.1:{self.port(10)}"
api = "127.0.0.1:{self.port(20)}"

[[node]]
name = "lb2"
address = "127.0.0.1:{self.port(11)}"
api = "127.0.0.1:{self.port(21)}"

# The virtual IP is simulated: the proxy binds the service address {SERVICE_ADDR} itself.
[[resource]]
id = "esup_haproxy"
agent = "balancier:proxy"
params = {{ config = "{haproxy_cfg}", pidfile = "{self.workdir}/proxy-{{node}}.pid", runtime_socket = "{self.workdir}/proxy.sock" }}
op.monitor = {{ interval = "2s", timeout = "1s" }}

[[group]]
id = "esup_proxy"
resources = ["esup_haproxy"]

[[location]]
resource = "esup_proxy"
node = "lb1"
score = 200

[[location]]
resource = "esup_proxy"
node = "lb2"
score = 100
"""

    # -- processes ---------------------------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def start(self) -> None:
        py = sys.executable
        for i, (name, _weight, _cookie) in enumerate(APP_SERVERS):
            self.spawn(name, [py, "-m", "balancier.portal", "--name", name, "--port", str(self.port(1 + i))])
        self.spawn("ent-maintenance", [py, "-m", "balancier.portal", "--name", "ent-maintenance",
                                       "--port", str(self.port(4))])
        for i in range(4):
            wait_port("127.0.0.1", self.port(1 + i), 10.0)
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.haproxy_cfg())
        authkey = self.workdir / "authkey"
        authkey.write_text(f"auth 1\n1 sha256 {secrets.token_hex(32)}\n")
        authkey.chmod(0o600)
        users = self.workdir / "api-users"
        users.write_text(f"admin:admin:{self.admin_token}\nviewer:read:{self.viewer_token}\n")
        users.chmod(0o600)
        ctoml = self.workdir / "cluster.toml"
        ctoml.write_text(self.cluster_toml(authkey, cfg))
        for node in NODES:
            state = self.workdir / node
            state.mkdir(exist_ok=True)
            self.spawn(node, [py, "-m", "balancier", "cluster", "run", "-c", str(ctoml), "--node", node,
                              "--state-dir", str(state)])

    def proxy_pid(self, node: str) -> int | None:
        try:
            return int((self.workdir / f"proxy-{node}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self, name: str) -> str:
        """Kill a process hard. A cluster node dies as a machine would: its daemon and the proxy it runs."""
        said = []
        if name in NODES:
            pid = self.proxy_pid(name)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
                said.append(f"killed {name}'s proxy (pid {pid})")
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            said.append(f"killed {name} (pid {proc.pid})")
        return "; ".join(said) or f"{name} is not running"

    def start_app(self, name: str) -> str:
        """(Re)start one portal server on its port; returns once it accepts connections."""
        names = [a[0] for a in APP_SERVERS] + ["ent-maintenance"]
        if name not in names:
            return f"no application server {name!r} (servers: {', '.join(names)})"
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            return f"{name} is running"
        port = self.port(1 + names.index(name))
        self.spawn(name, [sys.executable, "-m", "balancier.portal", "--name", name, "--port", str(port)])
        wait_port("127.0.0.1", port, 10.0)
        return f"started {name}"

    def restart(self, name: str) -> str:
        if name not in NODES:
            return self.start_app(name)
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            return f"{name} is running"
        self.spawn(name, [sys.executable, "-m", "balancier", "cluster", "run", "-c", str(self.workdir / "cluster.toml"),
                          "--node", name, "--state-dir", str(self.workdir / name)])
        return f"started {name}"

    def stop(self) -> None:
        for node in NODES:
            pid = self.proxy_pid(node)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGTERM)
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for node in NODES:
            pid = self.proxy_pid(node)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def status(self) -> str:
        for node in NODES:
            proc = self.procs.get(node)
            if proc is None or proc.poll() is not None:
                continue
            out = subprocess.run([sys.executable, "-m", "balancier", "status", "--state-dir", str(self.workdir / node)],
                                 capture_output=True, text=True, timeout=15)
            return out.stdout or out.stderr
        return "no cluster node is running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}:{port} did not start listening within {timeout:.0f} s") from None
            time.sleep(0.05)


def fetch(url: str, cookie: str | None = None, timeout: float = 5.0) -> tuple[int, str, str | None]:
    """One request through the proxy: (status, the answering server's name, Set-Cookie)."""
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status, resp.headers.get("X-Served-By", "?"), resp.headers.get("Set-Cookie")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Served-By", "-"), None


def wait_service(url: str, timeout: float) -> float:
    """Seconds until the service answers 200 (polling every 10 ms); raises after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if fetch(url, timeout=0.5)[0] == 200:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def self_test(demo: Demo, out: TextIO = sys.stdout) -> int:
    """What a newcomer checks by hand: weighted spread, a session that sticks, failover when lb1 dies."""
    ok = True
    started = wait_service(demo.service_url, 30.0)
    print(f"service up through {demo.service_url} after {started:.1f} s (cluster started the proxy on lb1)", file=out)
    served = Counter(fetch(demo.service_url)[1] for _ in range(385))
    print("385 requests: " + ", ".join(f"{k} {v}" for k, v in served.most_common()), file=out)
    ok &= served.get("ents3") == 256 and served.get("ents2") == 128 and served.get("ents1") == 1
    _status, server, set_cookie = fetch(demo.service_url + "login?user=demo")
    cookie = (set_cookie or "").split(";", 1)[0]
    stuck = Counter(fetch(demo.service_url, cookie)[1] for _ in range(20))
    print(f"logged in on {server} (cookie {cookie or 'missing'}); the next 20 requests went to {dict(stuck)}",
          file=out)
    ok &= bool(cookie) and set(stuck) == {server}
    print(demo.kill("lb1"), file=out)
    outage = wait_service(demo.service_url, 30.0)
    print(f"service answered again after {outage * 1000:.0f} ms (now from lb2)", file=out)
    after = Counter(fetch(demo.service_url, cookie)[1] for _ in range(5))
    print(f"the logged-in user after failover: {dict(after)}", file=out)
    ok &= set(after) == {server}
    print("self-test " + ("passed" if ok else "FAILED"), file=out)
    return 0 if ok else 1


HELP = ("commands: status | kill NAME (lb1 lb2 ents1 ents2 ents3 ent-maintenance) | start NAME | "
        "logs NAME | quit")


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="balancier-demo-"))
    demo = Demo(args.base_port, workdir)
    try:
        demo.start()
        if args.self_test:
            return self_test(demo)
        if getattr(args, "drill", False):
            return run_drill_on_demo(demo, args)
        wait_service(demo.service_url, 30.0)
        print(f"portal (through the simulated VIP): {demo.service_url}")
        print(f"log in to get a session:            {demo.service_url}login?user=alice")
        print(f"dashboard (lb1, lb2):               {demo.dashboard_url('lb1')}  {demo.dashboard_url('lb2')}")
        print(f"  sign in as admin / {demo.admin_token}  (read-only: viewer / {demo.viewer_token})")
        print(f"cluster status:                     balancier status --state-dir {workdir / 'lb1'}")
        print(f"proxy runtime API:                  balancier proxy-cli {workdir / 'proxy.sock'} show stat")
        print(f"logs and configuration:             {workdir}")
        print(HELP)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        return _repl(demo, deadline)
    except KeyboardInterrupt:
        return 0
    finally:
        demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _repl(demo: Demo, deadline: float | None) -> int:
    stdin_open = True
    while deadline is None or time.monotonic() < deadline:
        if not stdin_open:
            time.sleep(0.5)
            continue
        ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            stdin_open = False  # no more input (e.g. started with </dev/null): keep serving until Ctrl-C
            continue
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return 0
        if words[0] == "status":
            print(demo.status())
        elif words[0] == "kill" and len(words) == 2:
            print(demo.kill(words[1]))
        elif words[0] == "start" and len(words) == 2:
            print(demo.restart(words[1]))
        elif words[0] == "logs" and len(words) == 2:
            path = demo.workdir / f"{words[1]}.log"
            print(path.read_text()[-4000:] if path.exists() else f"no log for {words[1]}")
        else:
            print(HELP)
    return 0


# --------------------------------------------------------------------------- the drill on the demo


class DemoInjector:
    """The drill's faults done to the demo's own processes (balancier.testbed.drill.Injector)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo

    def can(self) -> frozenset[str]:
        return frozenset({"kill_node", "restore_node", "crash_proxy", "kill_server", "start_server"})

    def do(self, action: str, node: str) -> None:
        from balancier.testbed.drill_plan import DrillError

        if action in ("kill_node", "kill_server"):
            said = self.demo.kill(node)
        elif action in ("restore_node", "start_server"):
            said = self.demo.restart(node)
        elif action == "crash_proxy":
            pid = self.demo.proxy_pid(node)
            if pid is None or not _alive(pid):
                raise DrillError(f"no proxy runs on {node}")
            os.kill(pid, signal.SIGKILL)
            said = f"killed {node}'s proxy (pid {pid})"
        else:
            raise DrillError(f"the demo cannot {action}")
        if "not running" in said or said.startswith("no "):
            raise DrillError(said)


def run_drill_on_demo(demo: Demo, args: argparse.Namespace) -> int:
    import random

    from balancier.cluster.admin import Client
    from balancier.testbed import drill_plan as dp
    from balancier.testbed import drill_runner as dr

    out = sys.stderr if args.json else sys.stdout
    wait_service(demo.service_url, 30.0)
    admin = dr.ClusterAdmin({n: Client(socket_path=str(demo.workdir / n / "admin.sock"), timeout=3.0)
                             for n in NODES}, "esup_proxy")
    injector = DemoInjector(demo)
    try:
        deadline = time.monotonic() + 30
        while (active := admin.where()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if active is None:
            raise dr.DrillError("esup_proxy did not start")
        # the demo's timers (cluster_toml): keepalive 200 ms, dead time 1 s, monitor 2 s / 1 s
        ctx = dp.Context(NODES, "esup_proxy", active, dp.Timers(200, 1000, 2000, 1000), injector.can(),
                         server="ents2", migrations=args.migrations)
        plans = dp.plan(dp.parse_selection(args.scenario), ctx,
                        dp.parse_limit(args.max_outage_ms, "--max-outage-ms") if args.max_outage_ms else None,
                        dp.parse_limit(args.max_failed, "--max-failed") if args.max_failed else None)
    except (dr.DrillError, dp.PlanError) as exc:
        print(f"balancier demo --drill: {exc}", file=sys.stderr)
        return 2
    print(dp.format_plan(plans, [f"drill of the demo: esup_proxy runs on {active}; probing {demo.service_url} "
                                 "every 10 ms (a new TCP connection each, 200 ms timeout)"]), file=out, flush=True)
    runner = dr.Runner(admin, injector, lambda name, sessions: dr.LocalProbe(demo.service_url, sessions),
                       lambda: dr.http_ok(demo.service_url), 200, out, random.Random(args.seed))
    results = runner.run(plans)
    return dr.report(results, {"cluster": "demo", "url": demo.service_url, "group": "esup_proxy"}, args.json)


def main(argv: list[str] | None = None) -> int:
    """``python -m balancier.demo``: the demo with the same options as ``balancier demo``."""
    ap = argparse.ArgumentParser(prog="python -m balancier.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-port", type=int, default=18000, help="first loopback port used by the demo")
    ap.add_argument("--duration", type=float, default=None, metavar="SECONDS")
    ap.add_argument("--self-test", action="store_true")
    from balancier.testbed.drill import add_demo_drill_arguments

    add_demo_drill_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
