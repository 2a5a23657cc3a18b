"""`balancier:proxy`: the data plane as a cluster resource (`balancier proxy -D` driven like any daemon).

Parameters: config (required: the HAProxy-language file), pidfile (default
/run/balancier-RESOURCE.pid; `{node}` in it is replaced by this node's name, so several nodes sharing
one file system — the demo, tests — keep apart), runtime_socket (optional: the runtime API's UNIX socket), extra_args
(more arguments, split on spaces), binary (default: this Python running `-m balancier`).

Rules this file governs:
- start: already running -> 0 (idempotent). Otherwise the configuration is checked first with
  `-c`: invalid -> 6 (not configured: it would fail on every node) with the checker's first error as
  exit reason; a missing file -> 5 (this node lacks it). Then `balancier proxy -D -p PIDFILE -f
  CONFIG` and a wait, bounded by the op timeout, until every bind accepts a TCP connection. start
  never returns 0 before the proxy serves.
- monitor: no pidfile, or its pid dead (or not a balancier proxy any more: pid reuse) -> 7; alive and
  every listener accepts a connection (and the runtime API answers `show info`, when configured) ->
  0; alive but a listener refuses -> 1.
- stop: SIGUSR1 first (soft stop: listeners close, in-flight requests finish), SIGTERM when the op
  timeout is near, SIGKILL last. Not running -> 0.
- reload: when the configuration's SHA-256 differs from the one the running proxy started with, a new
  proxy starts with `-sf OLDPID`: it binds (SO_REUSEPORT) before the old one closes its listeners and
  drains, so no connection is refused. Same digest -> 0 without touching anything. The digest is kept
  next to the pidfile (PIDFILE.sha256), so a fresh agent (another process) knows it too.
- Listener addresses are read from the configuration's `bind` lines (and the legacy `listen NAME
  ADDR:PORT`) with a small scanner: the control plane drives the proxy as a process and does not
  import the data plane. Wildcard binds are probed on loopback; UNIX binds by connecting to the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass

from balancier.cluster.agents.base import (
    OCF_ERR_CONFIGURED,
    OCF_ERR_GENERIC,
    OCF_ERR_INSTALLED,
    OCF_NOT_RUNNING,
    OCF_SUCCESS,
    AgentResult,
    ResourceAgent,
    tail,
)
from balancier.cluster.agents.programs import run_program
from balancier.cluster.model import ResourceConfig

CONNECT_TIMEOUT = 1.0
SIGTERM_MARGIN = 3.0  # seconds before the op deadline when a soft stop turns into SIGTERM
PROXY_SECTIONS = ("frontend", "listen")
OTHER_SECTIONS = ("global", "defaults", "backend", "userlist", "peers", "resolvers", "mailers", "program",
                  "http-errors", "ring", "cache")


@dataclass(frozen=True)
class Endpoint:
    """Where to connect to check a listener: ("tcp", host, port) or ("unix", path, 0)."""

    kind: str
    host: str
    port: int = 0

    def __str__(self) -> str:
        return self.host if self.kind == "unix" else (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")


# --------------------------------------------------------------------------- configuration scanning


def config_files(path: str) -> list[str]:
    """The files `-f path` reads: the file, or a directory's *.cfg in name order."""
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "*.cfg")))
    return [path]


def config_digest(path: str) -> str:
    h = hashlib.sha256()
    for f in config_files(path):
        h.update(f.encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def parse_address(text: str) -> list[Endpoint]:
    """Endpoints of one bind address list ('127.0.0.1:80,:8080-8081', 'unix@/run/x.sock', ...)."""
    out: list[Endpoint] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        family = None
        if "@" in item:
            family, item = item.split("@", 1)
            if family in ("abns", "fd", "sockpair", "quic4", "quic6", "udp", "udp4", "udp6"):
                continue  # not a connectable TCP/UNIX listener
        if family == "unix" or item.startswith("/"):
            out.append(Endpoint("unix", item))
            continue
        host, sep, ports = item.rpartition(":")
        if not sep:
            continue
        host = host.strip("[]")
        if host in ("", "*", "0.0.0.0"):
            host = "::1" if family == "ipv6" else "127.0.0.1"
        elif host == "::":
            host = "::1"
        lo, _, hi = ports.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            continue
        first, last = int(lo), int(hi or lo)
        out.extend(Endpoint("tcp", host, p) for p in range(first, min(last, first + 63) + 1))
    return out


def scan_binds(path: str) -> list[Endpoint]:
    """Every listener of the configuration, as endpoints to connect to."""
    out: list[Endpoint] = []
    for f in config_files(path):
        section = None
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                words = line.split("#", 1)[0].split()
                if not words:
                    continue
                if words[0] in PROXY_SECTIONS or words[0] in OTHER_SECTIONS:
                    section = words[0]
                    if words[0] == "listen" and len(words) >= 3:
                        out.extend(parse_address(words[2]))  # legacy `listen NAME ADDR:PORT`
                    continue
                if section in PROXY_SECTIONS and words[0] == "bind" and len(words) >= 2:
                    out.extend(parse_address(words[1]))
    return list(dict.fromkeys(out))


async def accepts(ep: Endpoint, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Does the endpoint accept a connection right now? (connect, then close at once)"""
    try:
        if ep.kind == "unix":
            _, w = await asyncio.wait_for(asyncio.open_unix_connection(ep.host), timeout)
        else:
            _, w = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), timeout)
    except (OSError, TimeoutError):
        return False
    w.close()
    with contextlib.suppress(OSError, ConnectionError):
        await w.wait_closed()
    return True


# --------------------------------------------------------------------------- processes


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile, encoding="ascii") as f:
            first = f.read().split()
        return int(first[0]) if first else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def is_balancier_proxy(pid: int) -> bool:
    """Is pid a `balancier proxy` process? Guards against a stale pidfile naming a reused pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"proxy" in argv and any(b"balancier" in a for a in argv)


async def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def runtime_info(path: str, timeout: float = 2.0) -> str | None:
    """The runtime API's answer to `show info`, or None when it does not answer."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        w.write(b"show info\n")
        await w.drain()
        data = await asyncio.wait_for(r.read(65536), timeout)
        w.close()
        return data.decode("utf-8", "replace")
    except (OSError, TimeoutError):
        return None


# --------------------------------------------------------------------------- the agent


class ProxyAgent(ResourceAgent):
    standard = "balancier:proxy"

    def __init__(self, resource: ResourceConfig, node: str | None = None) -> None:
        super().__init__(resource)
        self.node = node

    # ---- parameters
    @property
    def config(self) -> str | None:
        return self.param("config")

    @property
    def pidfile(self) -> str:
        path = self.param("pidfile") or f"/run/balancier-{self.resource.id}.pid"
        return path.replace("{node}", self.node or "local")

    @property
    def digest_file(self) -> str:
        return f"{self.pidfile}.sha256"

    def command(self) -> list[str]:
        binary = self.param("binary")
        return shlex.split(binary) if binary else [sys.executable, "-m", "balancier"]

    def _check_params(self) -> AgentResult | None:
        cfg = self.config
        if not cfg:
            return AgentResult(OCF_ERR_CONFIGURED, exit_reason="parameter config is required")
        if not os.path.exists(cfg):
            return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"configuration {cfg} does not exist on this node")
        return None

    async def check_config(self, timeout_ms: int) -> AgentResult:
        """`balancier proxy -c -f CONFIG`: 0 valid (or valid without listener); 6 with the first error."""
        bad = self._check_params()
        if bad is not None:
            return bad
        assert self.config is not None
        done = await run_program([*self.command(), "proxy", "-c", "-f", self.config], _env(), timeout_ms / 1000)
        if done.timed_out:
            return AgentResult(OCF_ERR_GENERIC, exit_reason="the configuration check timed out", timed_out=True)
        if done.rc in (0, 2):
            return AgentResult(OCF_SUCCESS, tail(done.stdout + done.stderr))
        lines = [ln.strip() for ln in (done.stdout + "\n" + done.stderr).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "ALERT" in ln or "rror" in ln), lines[0] if lines else "")
        return AgentResult(OCF_ERR_CONFIGURED, tail(done.stdout + done.stderr),
                           exit_reason=f"invalid configuration {self.config}: {first}")

    def running_pid(self) -> int | None:
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid) or not is_balancier_proxy(pid):
            return None
        return pid

    async def validate(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.check_config(timeout_ms)

    async def _launch(self, timeout_ms: int, soft_finish: int | None = None) -> AgentResult:
        assert self.config is not None
        deadline = time.monotonic() + timeout_ms / 1000
        checked = await self.check_config(timeout_ms)
        if checked.rc != OCF_SUCCESS:
            return checked
        argv = [*self.command(), "proxy", "-D", "-p", self.pidfile, "-f", self.config]
        extra = self.param("extra_args")
        if extra:
            argv += shlex.split(extra)
        if soft_finish is not None:
            argv += ["-sf", str(soft_finish)]
        digest = config_digest(self.config)
        done = await run_program(argv, _env(), max(deadline - time.monotonic(), 0.5))
        out = tail(done.stdout + done.stderr)
        if done.timed_out:
            return AgentResult(OCF_ERR_GENERIC, out, "balancier proxy did not finish starting in time", True)
        if done.rc != 0:
            return AgentResult(OCF_ERR_GENERIC, out, f"balancier proxy exited with {done.rc}: "
                                                     f"{out.splitlines()[-1] if out else 'no output'}")
        with contextlib.suppress(OSError):
            with open(self.digest_file, "w", encoding="ascii") as f:
                f.write(digest + "\n")
        endpoints = scan_binds(self.config)
        waiting = list(endpoints)
        while waiting:
            waiting = [ep for ep in waiting if not await accepts(ep)]
            if not waiting:
                break
            if time.monotonic() >= deadline:
                return AgentResult(OCF_ERR_GENERIC, out, "started, but not accepting on "
                                                         f"{', '.join(map(str, waiting))} before the timeout")
            if self.running_pid() is None:
                return AgentResult(OCF_ERR_GENERIC, out, "the proxy exited right after starting")
            await asyncio.sleep(0.05)
        pid = read_pid(self.pidfile)
        return AgentResult(OCF_SUCCESS, f"balancier proxy running (pid {pid}); listening on "
                                        f"{', '.join(map(str, endpoints)) or 'nothing'}")

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        bad = self._check_params()
        if bad is not None:
            return bad
        pid = self.running_pid()
        if pid is not None:
            return AgentResult(OCF_SUCCESS, f"balancier proxy already running (pid {pid})")
        return await self._launch(timeout_ms)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        pid = read_pid(self.pidfile)
        if pid is None:
            return AgentResult(OCF_NOT_RUNNING, exit_reason=f"no pid in {self.pidfile}")
        if not pid_alive(pid) or not is_balancier_proxy(pid):
            return AgentResult(OCF_NOT_RUNNING, exit_reason=f"process {pid} from {self.pidfile} is not running")
        cfg = self.config
        if cfg and os.path.exists(cfg):
            refused = [ep for ep in scan_binds(cfg) if not await accepts(ep)]
            if refused:
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"process {pid} runs but "
                                                                f"{', '.join(map(str, refused))} refuses connections")
        sock = self.param("runtime_socket")
        if sock:
            info = await runtime_info(sock)
            if not info:
                return AgentResult(OCF_ERR_GENERIC, exit_reason=f"the runtime API at {sock} does not answer")
        return AgentResult(OCF_SUCCESS, f"balancier proxy running (pid {pid})")

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid) or not is_balancier_proxy(pid):
            self._forget()
            return AgentResult(OCF_SUCCESS, "balancier proxy not running")
        budget = timeout_ms / 1000
        soft = max(budget - SIGTERM_MARGIN, budget / 2)
        _signal(pid, signal.SIGUSR1)
        if await wait_gone(pid, soft):
            self._forget()
            return AgentResult(OCF_SUCCESS, f"balancier proxy (pid {pid}) stopped softly")
        _signal(pid, signal.SIGTERM)
        if await wait_gone(pid, min(2.0, budget / 4)):
            self._forget()
            return AgentResult(OCF_SUCCESS, f"balancier proxy (pid {pid}) terminated after the soft stop "
                                            f"did not finish in {soft:.1f}s")
        _signal(pid, signal.SIGKILL)
        if await wait_gone(pid, 1.0):
            self._forget()
            return AgentResult(OCF_SUCCESS, f"balancier proxy (pid {pid}) killed")
        return AgentResult(OCF_ERR_GENERIC, exit_reason=f"process {pid} survives SIGKILL")

    async def reload(self, timeout_ms: int = 20_000) -> AgentResult:
        bad = self._check_params()
        if bad is not None:
            return bad
        assert self.config is not None
        pid = self.running_pid()
        if pid is None:
            return AgentResult(OCF_NOT_RUNNING, exit_reason="balancier proxy is not running; nothing to reload")
        try:
            with open(self.digest_file, encoding="ascii") as f:
                old = f.read().strip()
        except OSError:
            old = ""
        if old == config_digest(self.config):
            return AgentResult(OCF_SUCCESS, f"configuration unchanged; proxy (pid {pid}) keeps running")
        result = await self._launch(timeout_ms, soft_finish=pid)
        if result.rc == OCF_SUCCESS:
            return AgentResult(OCF_SUCCESS, f"{result.output}; old process {pid} finishing softly")
        return result

    def _forget(self) -> None:
        for path in (self.pidfile, self.digest_file):
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def meta_data(self) -> AgentResult:
        from balancier.cluster.agents.metadata import PROXY_METADATA

        return AgentResult(OCF_SUCCESS, PROXY_METADATA)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    for name in ("PYTHONPATH", "HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env
