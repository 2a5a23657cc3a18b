"""The master process of `balancier proxy`: owns the sockets, forks and supervises the workers, reloads.

Rules (HAProxy §15, adapted to processes instead of threads):
- Used when there is more than one worker (`nbthread N` / `-j N`, default: the CPUs this process may run on,
  `len(os.sched_getaffinity(0))`, as HAProxy 2.6's nbthread default) or with `-W`. One worker without `-W` keeps
  the single-process path of main.py (no master).
- The master binds every listening socket (the `bind` lines and the `stats socket`s) and maps the shared counter
  memory, then forks the workers: all of them accept on the same inherited sockets, so a connection waiting in a
  backlog is never lost when workers come and go. The pidfile holds the master's pid.
- Privileges: the master binds as root. Without `-W` it then chroots and drops to gid/uid itself, before forking,
  so every process runs unprivileged (nothing needs root any more: no reload without -W). With `-W` the master
  stays root and outside the chroot, as HAProxy's master does, because a reload re-reads the configuration and
  the certificates and may bind new privileged ports; each worker chroots and drops after building its runtime.
  TLS certificates and keys are read when the configuration is loaded, by the master, before any fork or drop.
- Server state: worker 0 of the current generation owns it (workers.py). The master keeps the owner's latest
  snapshot of every server, relays each one to the other workers, gives them to a worker it forks (a replacement
  of a dead worker, or the workers of a reload), and forwards changes asked on other workers to the owner.
- Signals to the master: SIGTERM/SIGINT stop everything now (forwarded as SIGTERM); SIGUSR1 soft-stops everything
  (forwarded; the master closes its copies of the listeners so new connects are refused); SIGTTOU/SIGTTIN are
  forwarded; SIGHUP is a reload with -W, else it asks worker 0 to dump the server states; SIGUSR2 is a reload
  with -W (ignored with a warning without it).
- Reload: parse the files again; invalid -> the workers keep running and the errors are logged (and answered to
  the master CLI). Valid -> keep every socket whose address is unchanged (the same socket object: its backlog is
  kept), bind the new ones, fork the new workers with the current server states, wait until every one is ready,
  then ask the old workers to soft-stop (workers.py) and close the master's copies of the removed sockets. A new
  worker that fails to start fails the reload: the new workers are stopped and the old ones keep serving.
- A worker of the current generation that exits unexpectedly is logged and replaced at the same index (HAProxy
  exits in that case by default; an HA load balancer keeps serving), at most once a second per index.
- Master CLI (`-S path`, which implies `-W` as in HAProxy): one command per connection: `reload` (synchronous;
  answers `Success=1` or `Success=0`, `--`, then the reload's messages, config errors as `file:line: message`),
  `show proc`, `help`.
- The master loop is plain `selectors` (no event loop: the workers' loops are created after the fork).

Public API:
    default_workers() -> int; serve_master(args, config, diags) -> int; reload_command(args) -> int
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any

from balancier.proxy import sharedstate
from balancier.proxy.process import (
    Daemon,
    StartError,
    drop_privileges,
    resolve_ids,
    say,
    signal_old_processes,
    write_pidfile,
)

READY_TIMEOUT = 15.0  # seconds a new worker has to say it is ready
_RESPAWN_DELAY = 1.0


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _say(level: str, msg: str) -> None:
    say(level, msg, with_pid=True)


def _diag_text(d: Any) -> str:
    return f"{d.where}: {d.message}" if d.where is not None else str(d.message)


class _WorkerProc:
    def __init__(self, gen: _Generation, index: int, pid: int, chan: socket.socket) -> None:
        self.gen = gen
        self.index = index
        self.pid = pid
        self.chan = chan
        self.ready = False
        self.failed: str | None = None
        self.started = time.monotonic()
        self.exited: int | None = None


class _Generation:
    """The workers started from one configuration, and what they share."""

    def __init__(self, number: int, config: Any, count: int, listeners: dict[str, list[Any]],
                 stats_socks: dict[str, socket.socket], counters: sharedstate.SharedCounters) -> None:
        self.number = number
        self.config = config
        self.count = count
        self.listeners = listeners
        self.stats_socks = stats_socks
        self.counters = counters
        self.served: sharedstate.SharedServed | None = None
        self.queued: sharedstate.SharedServed | None = None
        self.conns: sharedstate.SharedServed | None = None  # per worker, per frontend: live connections
        self.workers: dict[int, _WorkerProc] = {}  # index -> current process
        self.procs: list[_WorkerProc] = []  # every process of this generation still running
        self.stopping = False
        self.respawn_at: dict[int, float] = {}

    def socket_keys(self) -> set[Any]:
        keys: set[Any] = {_lkey(lst.bind) for lsts in self.listeners.values() for lst in lsts}
        keys |= {("stats", a) for a in self.stats_socks}
        return keys


def _lkey(bind: Any) -> tuple[str, str, int]:
    return ("bind", bind.host or "", bind.port)


class Master:
    def __init__(self, args: argparse.Namespace, config: Any, workers: int) -> None:
        self.args = args
        self.files = list(args.files)
        self.config = config
        self.nworkers = workers
        self.mw = bool(args.master_worker or args.master_socket)  # a master CLI means master-worker, as HAProxy
        self.socks: dict[Any, socket.socket] = {}  # every socket the master holds, by key
        self.paths: dict[Any, tuple[str, int]] = {}  # UNIX stats sockets: (path, inode) to remove at the end
        self.gen: _Generation | None = None
        self.old: list[_Generation] = []
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.sel = selectors.DefaultSelector()
        self.pending: list[int] = []
        self.stopping = False
        self.reloading = False
        self.generation = 0
        self.cli: socket.socket | None = None
        self.cli_path: str | None = None
        self.cli_conn: socket.socket | None = None
        self.drop_in_worker: tuple[str | None, int | None, int | None] | None = None
        self.daemon: Daemon | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # --- sockets ---------------------------------------------------------------------------------------------------
    def _open_sockets(self, config: Any) -> tuple[dict[str, list[Any]], dict[str, socket.socket], list[Any]]:
        """Listeners and stats sockets for a configuration, reusing the ones already bound; returns the new keys
        too (to close them if the generation does not start)."""
        from balancier.proxy.listener import Listener
        from balancier.proxy.statsock import bind_listening

        g = config.global_
        new_keys: list[Any] = []
        listeners: dict[str, list[Any]] = {}
        try:
            for p in config.frontends:
                backlog = p.maxconn or g.maxconn or 2000
                lst_list = []
                for b in p.binds:
                    key: Any = _lkey(b)
                    lst = Listener(b, backlog)
                    old = self.socks.get(key) if b.port else None
                    if old is not None:
                        lst.sock = old
                        with contextlib.suppress(OSError):
                            old.listen(lst.backlog)
                    else:
                        lst.open()
                        assert lst.sock is not None
                        if not b.port:
                            key = ("bind", b.host or "", lst.port)
                        self.socks[key] = lst.sock
                        new_keys.append(key)
                    lst_list.append(lst)
                listeners[p.name] = lst_list
            if not any(listeners.values()):
                raise StartError("no listener: the configuration has no 'bind' in any frontend or listen section")
            stats_socks: dict[str, socket.socket] = {}
            for sc in g.stats_sockets:
                key = ("stats", sc.address)
                sock = self.socks.get(key)
                if sock is None:
                    try:
                        sock = bind_listening(sc.address, sc.mode if sc.mode is not None else 0o600)
                    except (OSError, ValueError) as e:
                        msg = e.strerror if isinstance(e, OSError) else str(e)
                        raise StartError(f"{sc.where}: cannot create stats socket '{sc.address}': {msg}") from None
                    self.socks[key] = sock
                    new_keys.append(key)
                    if sock.family == socket.AF_UNIX:
                        from balancier.proxy.statsock import parse_address

                        path = str(parse_address(sc.address)[1])
                        with contextlib.suppress(OSError):
                            self.paths[key] = (path, os.stat(path).st_ino)
                stats_socks[sc.address] = sock
        except BaseException:
            for key in new_keys:
                self._close_key(key)
            raise
        return listeners, stats_socks, new_keys

    def _close_key(self, key: Any) -> None:
        sock = self.socks.pop(key, None)
        if sock is None:
            return
        sock.close()
        made = self.paths.pop(key, None)
        if made is not None:
            path, ino = made
            # remove the path only if it is still our socket (another process may have replaced it)
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == ino:
                    os.unlink(path)

    def _close_unused(self) -> None:
        keep: set[Any] = set()
        for gen in [self.gen, *self.old]:
            if gen is not None and not gen.stopping:
                keep |= gen.socket_keys()
        for key in list(self.socks):
            if key not in keep:
                self._close_key(key)

    # --- generations and workers ------------------------------------------------------------------------------------
    def _new_generation(self, config: Any) -> _Generation:
        listeners, stats_socks, _new = self._open_sockets(config)
        self.generation += 1
        counters = sharedstate.SharedCounters(self.nworkers, sharedstate.layout_size(config))
        gen = _Generation(self.generation, config, self.nworkers, listeners, stats_socks, counters)
        limited = sharedstate.limited_servers(config)
        gen.served = sharedstate.SharedServed(self.nworkers, len(limited)) if limited else None
        queued = sharedstate.queued_servers(config)
        gen.queued = sharedstate.SharedServed(self.nworkers, len(queued)) if queued else None
        if self.nworkers > 1:  # workers accept in turn (runtime.py): each sees the others' connection counts
            gen.conns = sharedstate.SharedServed(self.nworkers, len(config.frontends))
            for i in range(self.nworkers):
                gen.conns.mark_absent(i)  # until worker i has started
        return gen

    def _spawn(self, gen: _Generation, index: int, carry: bool, restore: bool = False) -> _WorkerProc:
        from balancier.proxy.workers import WorkerContext, run_worker

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stderr.flush()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                parent.close()
                self._child_cleanup(gen)
                ctx = WorkerContext(
                    config=gen.config, listeners=gen.listeners, stats_socks=gen.stats_socks, index=index,
                    count=gen.count, generation=gen.number, channel=child, counters=gen.counters, served=gen.served,
                    queued=gen.queued, conns=gen.conns,
                    states=dict(self.states), carry=carry, restore=restore, debug=bool(self.args.debug),
                    drop=self.drop_in_worker)
                code = run_worker(ctx)
            except SystemExit as e:
                code = int(e.code or 0) if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                    sys.stdout.flush()
                os._exit(code)
        child.close()
        parent.setblocking(False)
        w = _WorkerProc(gen, index, pid, parent)
        gen.workers[index] = w
        gen.procs.append(w)
        self.sel.register(parent, selectors.EVENT_READ, ("chan", w))
        if self.args.debug or gen.number > 1:
            _say("NOTICE", f"New worker ({pid}) forked")
        return w

    def _child_cleanup(self, gen: _Generation) -> None:
        """In a freshly forked worker: drop everything of the master that is not this worker's."""
        signal.set_wakeup_fd(-1)
        if self.daemon is not None:
            self.daemon.forget()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTTOU,
                    signal.SIGTTIN, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            self.sel.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.cli is not None:
            self.cli.close()
        if self.cli_conn is not None:
            self.cli_conn.close()
        for g in [self.gen, *self.old]:
            if g is None:
                continue
            for w in g.procs:
                with contextlib.suppress(OSError):
                    w.chan.close()
        mine = gen.socket_keys()
        for key, sock in self.socks.items():
            if key not in mine:
                sock.close()  # a removed bind must not stay open in a worker that never serves it

    def _send(self, w: _WorkerProc, msg: dict[str, Any]) -> None:
        try:
            w.chan.send(json.dumps(msg, separators=(",", ":")).encode())
        except (BlockingIOError, InterruptedError):
            _say("WARNING", f"worker {w.pid} does not read its channel: message dropped")
        except OSError:
            pass

    def _wait_ready(self, gen: _Generation, timeout: float) -> str | None:
        """None when every worker of ``gen`` is ready, else why not."""
        deadline = time.monotonic() + timeout
        while True:
            if self.stopping:
                return None  # a stop asked meanwhile: the main loop waits for the workers to end
            ws = list(gen.workers.values())
            for w in ws:
                if w.failed:
                    return w.failed
                if w.exited is not None:
                    return f"worker {w.pid} exited with code {w.exited} while starting"
            if all(w.ready for w in ws):
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return f"workers not ready after {timeout:.0f}s"
            self._pump(min(left, 0.2))

    # --- start ------------------------------------------------------------------------------------------------------
    def start(self) -> int:
        args = self.args
        g = self.config.global_
        gen = self._new_generation(self.config)
        uid, gid = resolve_ids(g.user, g.group, g.uid, g.gid)
        if (uid is not None or gid is not None or g.chroot) and os.geteuid() != 0:
            what = "chroot" if g.chroot else "uid/gid"
            raise StartError(f"cannot drop privileges ({what} requested) when not started as root")
        if args.master_socket:
            self._open_cli(args.master_socket)
        daemon_mode = (g.daemon or args.daemon) and not (args.foreground or args.debug)
        d = Daemon() if daemon_mode else None
        self.daemon = d
        if d is not None:
            d.start()
        self._install_signals()  # at once: a stop asked during the start-up is handled, not fatal
        try:
            pidfile = args.pidfile or g.pidfile
            if pidfile:
                write_pidfile(pidfile, [os.getpid()])
            self._preimport()
            import gc

            gc.collect()
            gc.freeze()  # the workers inherit a frozen heap: no collection copies these pages
            if self.mw:
                self.drop_in_worker = (g.chroot, uid, gid) if (g.chroot or uid is not None or gid is not None) \
                    else None
            else:
                drop_privileges(g.chroot, uid, gid)
            self.gen = gen
            for i in range(gen.count):
                self._spawn(gen, i, carry=False)
            why = self._wait_ready(gen, READY_TIMEOUT)
            if why is not None:
                self._terminate(gen, signal.SIGTERM)
                self._reap_all(3.0)
                raise StartError(why)
            for problem in signal_old_processes(args.soft_finish, args.hard_terminate):
                _say("WARNING", problem)
            if d is not None:
                d.ready()
            if args.debug:
                ports = ", ".join(lst.label for lsts in gen.listeners.values() for lst in lsts)
                _say("NOTICE", f"balancier proxy ready on {ports} (master {os.getpid()}, {gen.count} workers)")
            return self._main_loop()
        except StartError as e:
            if d is not None:
                d.failed(str(e))
                os._exit(1)
            raise
        except BaseException as e:
            if d is not None:
                d.failed(f"{type(e).__name__}: {e}")
            raise
        finally:
            self._final_cleanup()

    def _preimport(self) -> None:
        """Every module of the data plane, imported here: after a chroot nothing can be imported any more, and
        each worker then starts with them loaded (shared pages after the fork)."""
        import importlib
        import pkgutil
        import resource  # noqa: F401  (default_maxconn)

        import balancier.http1
        import balancier.proxy

        for pkg in (balancier.proxy, balancier.http1):
            for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                if mod.name.endswith(".__main__"):
                    continue
                try:
                    importlib.import_module(mod.name)
                except ImportError:
                    pass  # an optional part (its feature is refused when used)
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTTOU,
                    signal.SIGTTIN, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pending.append(signum)

    # --- loop -------------------------------------------------------------------------------------------------------
    def _main_loop(self) -> int:
        while True:
            self._pump(1.0)
            if self.stopping and not self._all_procs():
                return 0
            self._respawn_due()

    def _all_procs(self) -> list[_WorkerProc]:
        out: list[_WorkerProc] = []
        for gen in [self.gen, *self.old]:
            if gen is not None:
                out.extend(gen.procs)
        return out

    def _pump(self, timeout: float) -> None:
        for key, _mask in self.sel.select(timeout):
            kind, obj = key.data
            if kind == "wake":
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
            elif kind == "chan":
                self._on_chan(obj)
            elif kind == "cli":
                self._on_cli()
        self._reap()
        if self.pending and not self.reloading:
            sigs, self.pending = self.pending, []
            for sig in sigs:
                self._handle_signal(sig)

    def _handle_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self._close_listeners()
            for w in self._all_procs():
                with contextlib.suppress(OSError):
                    os.kill(w.pid, signal.SIGTERM)
        elif sig == signal.SIGUSR1:
            self.stopping = True
            self._close_listeners()
            for w in self._all_procs():
                with contextlib.suppress(OSError):
                    os.kill(w.pid, signal.SIGUSR1)
        elif sig in (signal.SIGTTOU, signal.SIGTTIN):
            if self.gen is not None:
                for w in self.gen.procs:
                    with contextlib.suppress(OSError):
                        os.kill(w.pid, sig)
        elif sig == signal.SIGUSR2 or (sig == signal.SIGHUP and self.mw):
            if not self.mw:
                _say("WARNING", "SIGUSR2 ignored: reloads need master-worker mode (-W)")
                return
            self.reload()
        elif sig == signal.SIGHUP and self.gen is not None:
            w0 = self.gen.workers.get(0)
            if w0 is not None:
                with contextlib.suppress(OSError):
                    os.kill(w0.pid, signal.SIGHUP)

    def _close_listeners(self) -> None:
        """A stop: the master lets go of every socket, so that they close once the workers close theirs."""
        for key in list(self.socks):
            if key[0] == "bind":
                self._close_key(key)

    def _on_chan(self, w: _WorkerProc) -> None:
        while True:
            try:
                data = w.chan.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(w.chan)
                w.chan.close()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            self._on_message(w, msg)

    def _on_message(self, w: _WorkerProc, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        gen = self.gen
        if t == "ready":
            w.ready = True
        elif t == "failed":
            w.failed = str(msg.get("msg"))
        elif t == "state":
            if w.gen is not gen or w.index != 0 or gen is None or gen.stopping:
                return  # only the current owner's word counts
            snap = msg["snap"]
            self.states[(snap["be"], snap["srv"])] = snap
            for other in gen.workers.values():
                if other is not w and other.exited is None:
                    self._send(other, msg)
        elif t in ("cmd", "sess") and gen is not None and w.gen is gen:  # a change, or streams for `show sess`
            owner = gen.workers.get(0)
            if owner is not None:
                self._send(owner, msg)
        elif t == "sess?" and gen is not None and w.gen is gen and w.index == 0:  # the owner's `show sess`
            asked = [o for o in gen.workers.values() if o is not w and o.exited is None and o.ready]
            self._send(w, {"t": "sess-n", "id": msg.get("id"), "n": len(asked)})
            for o in asked:
                self._send(o, msg)
        elif t in ("clear", "kill") and gen is not None and w.gen is gen:
            for other in gen.workers.values():
                if other is not w:
                    self._send(other, msg)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            self._on_exit(pid, code)

    def _on_exit(self, pid: int, code: int) -> None:
        for gen in [self.gen, *self.old]:
            if gen is None:
                continue
            for w in gen.procs:
                if w.pid != pid:
                    continue
                w.exited = code
                gen.procs.remove(w)
                if gen.conns is not None:
                    gen.conns.mark_absent(w.index)  # its connections are gone; the others accept meanwhile
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(w.chan)
                w.chan.close()
                how = "Exit" if code >= 0 else f"signal {-code}"
                if gen is self.gen and not self.stopping and not gen.stopping:
                    if w.ready:
                        _say("ALERT", f"Current worker ({pid}) exited with code {code} ({how}): "
                                      "starting a replacement")
                    else:
                        _say("ALERT", f"Worker ({pid}) failed to start ({w.failed or how}): trying again")
                    gen.respawn_at[w.index] = max(time.monotonic(), w.started + _RESPAWN_DELAY)
                elif gen is not self.gen or self.args.debug:
                    _say("NOTICE", f"Former worker ({pid}) exited with code {code} ({how})")
                if gen is not self.gen and not gen.procs:
                    self.old.remove(gen)
                    gen.counters.close()
                return

    def _respawn_due(self) -> None:
        gen = self.gen
        if gen is None or self.stopping:
            return
        now = time.monotonic()
        for index, at in list(gen.respawn_at.items()):
            if at <= now:
                del gen.respawn_at[index]
                self._spawn(gen, index, carry=False, restore=True)

    def _terminate(self, gen: _Generation, sig: int) -> None:
        for w in gen.procs:
            with contextlib.suppress(OSError):
                os.kill(w.pid, sig)

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._all_procs() and time.monotonic() < deadline:
            self._pump(0.05)
        for w in self._all_procs():
            with contextlib.suppress(OSError):
                os.kill(w.pid, signal.SIGKILL)

    def _final_cleanup(self) -> None:
        for key in list(self.socks):
            self._close_key(key)
        if self.cli is not None:
            self.cli.close()
            if self.cli_path:
                with contextlib.suppress(OSError):
                    os.unlink(self.cli_path)

    # --- reload -----------------------------------------------------------------------------------------------------
    def reload(self) -> tuple[bool, str]:
        """Load the files again and replace the workers; (success, messages)."""
        from balancier.proxy.config import ConfigError, load

        if self.reloading or self.stopping:
            return False, "a reload or a stop is already in progress"
        self.reloading = True
        lines: list[str] = []
        try:
            _say("NOTICE", "Reloading HAProxy")
            try:
                config, diags = load(self.files)
            except ConfigError as e:
                for d in e.diagnostics:
                    lines.append(f"[{d.level.upper()}] {_diag_text(d)}")
                lines.append("[ALERT] Fatal errors found in configuration.")
                return self._reload_failed(lines)
            except OSError as e:
                return self._reload_failed([f"[ALERT] cannot read the configuration: {e}"])
            lines.extend(f"[{d.level.upper()}] {_diag_text(d)}" for d in diags)
            try:
                gen = self._new_generation(config)
            except StartError as e:
                return self._reload_failed([*lines, f"[ALERT] {e}"])
            for i in range(gen.count):
                self._spawn(gen, i, carry=True)
            why = self._wait_ready(gen, READY_TIMEOUT)
            if why is not None:
                gen.stopping = True
                self._terminate(gen, signal.SIGTERM)
                self.old.append(gen)
                self._close_unused()
                return self._reload_failed([*lines, f"[ALERT] {why}"])
            old = self.gen
            self.gen = gen
            self.config = config
            if old is not None:
                old.stopping = True
                old.respawn_at.clear()
                for w in old.procs:
                    self._send(w, {"t": "stop"})
                self.old.append(old)
                # server states of the old owner are replaced by what the new owner reports
            self._close_unused()
            lines.append("[NOTICE] Loading success.")
            for line in lines:
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
            return True, "\n".join(lines)
        finally:
            self.reloading = False

    def _reload_failed(self, lines: list[str]) -> tuple[bool, str]:
        for line in lines:
            sys.stderr.write(line + "\n")
        _say("ALERT", "Reload failed: the previous workers keep running.")
        return False, "\n".join(lines)

    # --- master CLI -------------------------------------------------------------------------------------------------
    def _open_cli(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(16)
        except OSError as e:
            sock.close()
            raise StartError(f"cannot create master socket '{path}': {e.strerror}") from None
        sock.setblocking(False)
        self.cli = sock
        self.cli_path = path
        self.sel.register(sock, selectors.EVENT_READ, ("cli", None))

    def _on_cli(self) -> None:
        assert self.cli is not None
        try:
            conn, _ = self.cli.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.cli_conn = conn  # closed in workers forked while it is open (a reload): the client waits for its end
        with conn:
            conn.settimeout(2.0)
            buf = b""
            try:
                while b"\n" not in buf and len(buf) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
            except OSError:
                return
            answer = self._cli_command(buf.decode(errors="replace").strip())
            conn.settimeout(10.0)
            with contextlib.suppress(OSError):
                conn.sendall(answer.encode())
        self.cli_conn = None

    def _cli_command(self, line: str) -> str:
        if line == "reload":
            ok, text = self.reload()
            return f"Success={int(ok)}\n--\n{text}\n"
        if line == "show proc":
            out = ["#<PID>          <type>          <reloads>       <uptime>        <version>"]
            out.append(f"{os.getpid():<16}master          {self.generation - 1:<16}")
            for gen in [self.gen, *self.old]:
                if gen is None:
                    continue
                kind = "worker" if gen is self.gen else "old-worker"
                for w in gen.procs:
                    up = int(time.monotonic() - w.started)
                    out.append(f"{w.pid:<16}{kind:<16}{gen.number - 1:<16}{up}s")
            return "\n".join(out) + "\n"
        if line in ("help", ""):
            return ("  help           : this list\n  reload         : reload the configuration (synchronous)\n"
                    "  show proc      : the master and its workers\n")
        return f"Unknown command '{line}'. Try 'help'.\n"


def serve_master(args: argparse.Namespace, config: Any, workers: int) -> int:
    return Master(args, config, workers).start()


def reload_command(args: argparse.Namespace) -> int:
    """`balancier proxy reload -S SOCK | -p PIDFILE [-f FILE...]`: 0 when the reload succeeded, else 1."""
    if args.master_socket:
        from balancier.proxy.statsock import query

        try:
            text = query("unix@" + args.master_socket, "reload", timeout=60.0)
        except OSError as e:
            sys.stderr.write(f"cannot reach the master socket '{args.master_socket}': {e.strerror or e}\n")
            return 1
        head, _, body = text.partition("--\n")
        ok = head.strip() == "Success=1"
        out = sys.stdout if ok else sys.stderr
        if body.strip():
            out.write(body if body.endswith("\n") else body + "\n")
        out.write("reload succeeded\n" if ok else "reload failed: the previous configuration stays in service\n")
        return 0 if ok else 1
    if args.pidfile:
        if args.files:
            from balancier.proxy.config import run_check

            if run_check(args.files, True, sys.stderr) != 0:
                sys.stderr.write("reload not requested: the configuration is invalid\n")
                return 1
        try:
            pid = int(open(args.pidfile).read().split()[0])
        except (OSError, ValueError, IndexError) as e:
            sys.stderr.write(f"cannot read a pid from '{args.pidfile}': {e}\n")
            return 1
        try:
            os.kill(pid, signal.SIGUSR2)
        except OSError as e:
            sys.stderr.write(f"cannot signal master pid {pid}: {e.strerror}\n")
            return 1
        print(f"reload requested from master pid {pid} (SIGUSR2); use -S for the result")
        return 0
    sys.stderr.write("reload: give the master socket (-S PATH) or the pidfile (-p PIDFILE)\n")
    return 1
