"""Proxy processes for tests: balancier or Debian's haproxy, started from a configuration text.

Rules:
- `start_proxy(cfg_text, impl)` writes the config to a fresh temp dir, starts `balancier proxy -db -f cfg`
  (as `python -m balancier`, so the tested tree is the one imported) or `haproxy -db -f cfg` in its own
  session, and returns once every `bind` address (and a legacy `listen name addr:port`) is in LISTEN state.
  Readiness is read from /proc/net/tcp rather than by connecting, so no probe connection ever reaches the
  proxy's logs or counters.
- Start-up is bounded (`timeout`, default 10 s); a proxy that exits early or never listens raises
  `ProxyStartError` with its stderr.
- Stopping is by pid: SIGTERM, then SIGKILL after a grace period, then SIGKILL to the process group the
  proxy leads (its own workers, never anything else). The temp dir is removed. Context manager and
  `ProxyFactory` make sure this happens even when a test fails.
- Addresses are 127.0.0.1 / 127.0.0.x only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from support.backends import free_port

IMPLS = ("balancier", "haproxy")

_BIND_RE = re.compile(r"^\s*bind\s+(\S+)", re.M)
_LEGACY_LISTEN_RE = re.compile(r"^\s*listen\s+\S+\s+(\S+:\d+)", re.M)


class ProxyStartError(RuntimeError):
    pass


def bind_addresses(cfg_text: str) -> list[tuple[str, int]]:
    """Every (host, port) the config listens on: `bind` lines (comma lists too) and legacy listen addresses."""
    out: list[tuple[str, int]] = []
    specs = _BIND_RE.findall(cfg_text) + _LEGACY_LISTEN_RE.findall(cfg_text)
    for spec in specs:
        for part in spec.split(","):
            host, _, port = part.rpartition(":")
            if not port.isdigit():
                continue
            out.append((host.strip("[]") or "0.0.0.0", int(port)))
    return out


def _listening() -> set[tuple[str, int]]:
    """(ip, port) of every IPv4 TCP socket in LISTEN state, from /proc/net/tcp."""
    found: set[tuple[str, int]] = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hexip, hexport = fields[1].split(":")
            ip = ".".join(str(int(hexip[i:i + 2], 16)) for i in (6, 4, 2, 0))
            found.add((ip, int(hexport, 16)))
    return found


def _is_listening(addr: tuple[str, int], listening: set[tuple[str, int]]) -> bool:
    host, port = addr
    return (host, port) in listening or ("0.0.0.0", port) in listening


def proxy_command(impl: str, cfg_path: Path, extra: list[str] | None = None) -> list[str]:
    extra = extra or []
    if impl == "balancier":
        return [sys.executable, "-m", "balancier", "proxy", "-db", "-f", str(cfg_path), *extra]
    if impl == "haproxy":
        return [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(cfg_path), *extra]
    raise ValueError(f"unknown proxy implementation {impl!r} (expected one of {IMPLS})")


class ProxyProcess:
    """A running proxy. `.pid`, `.stderr` (text so far), `.stop()`, `.soft_stop()`, `.cfg_path`."""

    def __init__(self, cfg_text: str, impl: str = "balancier", timeout: float = 10.0,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 wait_listen: bool = True) -> None:
        self.impl = impl
        self.cfg_text = cfg_text
        self.dir = Path(tempfile.mkdtemp(prefix=f"{impl}-test-"))
        self.cfg_path = self.dir / "proxy.cfg"
        self.cfg_path.write_text(cfg_text)
        self._stderr_path = self.dir / "stderr.txt"
        self._stdout_path = self.dir / "stdout.txt"
        self.binds = bind_addresses(cfg_text)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self._stderr_path, "wb") as err, open(self._stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                proxy_command(impl, self.cfg_path, extra_args), stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, cwd=self.dir, env=full_env, start_new_session=True,
            )
        self.pid = self.proc.pid
        if wait_listen:
            try:
                self.wait_listening(timeout)
            except BaseException:
                self.stop()
                raise

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def stderr(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:  # after stop(): what it said last
            return getattr(self, "_last_stderr", "")

    @property
    def stdout(self) -> str:
        try:
            return self._stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def explain(self, tail: int = 3000) -> str:
        """One paragraph for a failing assertion: is it alive, how did it exit, what did it say."""
        state = "running" if self.alive() else f"exited with {self.returncode}"
        return f"{self.impl} pid {self.pid} {state}; stderr tail:\n{self.stderr[-tail:]}"

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ProxyStartError(
                    f"{self.impl} exited with {self.proc.returncode} before listening on {self.binds}; "
                    f"stderr:\n{self.stderr}")
            listening = _listening()
            if all(_is_listening(a, listening) for a in self.binds):
                # A proxy that binds and then dies while starting its other parts must not pass as started.
                time.sleep(0.1)
                if self.proc.poll() is not None:
                    continue
                return
            if time.monotonic() > deadline:
                raise ProxyStartError(f"{self.impl} not listening on {self.binds} after {timeout}s; "
                                      f"stderr:\n{self.stderr}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # ---- signals ---------------------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def soft_stop(self) -> None:
        """SIGUSR1: close the listeners, finish what is in flight, then exit."""
        self.signal(signal.SIGUSR1)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, SIGKILL after `grace` seconds, then clean the process group and the temp dir."""
        try:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.proc.wait(5)
            # Workers the proxy forked live in the session it leads (pgid == its pid): ours to clean.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            return self.proc.returncode
        finally:
            self._last_stderr = self.stderr
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ProxyProcess({self.impl}, pid={self.pid}, binds={self.binds})"


def start_proxy(cfg_text: str, impl: str = "balancier", timeout: float = 10.0,
                extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> ProxyProcess:
    """Start a proxy and wait until it listens; use as a context manager (`with start_proxy(...) as p:`)."""
    return ProxyProcess(cfg_text, impl, timeout, extra_args, env)


class ProxyFactory:
    """Starts proxies for one test and stops all of them at the end (the `proxy_factory` fixture)."""

    def __init__(self) -> None:
        self.started: list[ProxyProcess] = []

    def __call__(self, cfg_text: str, impl: str = "balancier", timeout: float = 10.0,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> ProxyProcess:
        p = ProxyProcess(cfg_text, impl, timeout, extra_args, env)
        self.started.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.started:
            with contextlib.suppress(Exception):
                p.stop()
        self.started.clear()


@contextlib.contextmanager
def proxy_factory_cm() -> Iterator[ProxyFactory]:
    f = ProxyFactory()
    try:
        yield f
    finally:
        f.stop_all()


__all__ = ["IMPLS", "ProxyProcess", "ProxyFactory", "ProxyStartError", "bind_addresses", "free_port",
           "proxy_command", "proxy_factory_cm", "start_proxy"]
