"""`balancier proxy`: load the configuration, bind, daemonize, drop privileges, serve until a signal.

Rules (HAProxy §15):
- `-c` only checks the configuration (`config.run_check`). `reload` asks a running master to reload
  (master.reload_command). Otherwise: load (warnings to stderr as `[WARNING] file:line: msg`; an invalid file
  exits 1), then choose the process model: several workers (`-j N`, else `nbthread N`, else the number of
  available CPUs) or `-W` run under a master (master.py, workers.py); exactly one worker without `-W` is the
  single process below: bind every listener (errors exit 1), daemonize
  (`daemon`/`-D`, unless `-d`/`-db`), write the pidfile, build the runtime, `chroot`, drop to gid/uid, signal older
  processes (`-sf`/`-st`), then serve.
- The event loop is uvloop when importable, else asyncio's (logged once on stderr).
- Signals: SIGUSR1 soft stop, SIGTERM/SIGINT hard stop, SIGTTOU/SIGTTIN pause/resume listeners, SIGHUP dumps
  server states. Exit code 0 after a stop.
- Everything the process needs after the chroot is imported before it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from typing import Any

from balancier.proxy.eventloop import new_loop
from balancier.proxy.process import (
    Daemon,
    StartError,
    drop_privileges,
    resolve_ids,
    say,
    signal_old_processes,
    write_pidfile,
)


def _say(level: str, msg: str) -> None:
    say(level, msg)


def _new_loop(debug: bool) -> asyncio.AbstractEventLoop:
    loop, is_uvloop = new_loop()
    if not is_uvloop:
        _say("NOTICE", "uvloop is not installed: using asyncio's default event loop (slower)")
    return loop


def run(args: argparse.Namespace) -> int:
    from balancier.proxy.config import ConfigError, load, run_check

    if getattr(args, "action", None) == "reload":
        from balancier.proxy.master import reload_command

        return reload_command(args)
    if not args.files:
        _say("ALERT", "no configuration file: use -f FILE")
        return 2
    if args.check:
        return int(run_check(args.files, args.quiet, sys.stdout))
    try:
        config, diags = load(args.files)
    except ConfigError as e:
        for d in e.diagnostics:
            _say(d.level.upper(), _diag_text(d))
        _say("ALERT", "Fatal errors found in configuration.")
        return 1
    if not args.quiet:
        for d in diags:
            _say(d.level.upper(), _diag_text(d))
    try:
        return _serve(args, config)
    except StartError as e:
        _say("ALERT", str(e))
        return 1


def _diag_text(d: Any) -> str:
    return f"{d.where}: {d.message}" if d.where is not None else str(d.message)


def _serve(args: argparse.Namespace, config: Any) -> int:
    from balancier.proxy.listener import Listener

    g = config.global_
    from balancier.proxy.master import default_workers, serve_master

    workers = args.workers if args.workers is not None else (g.nbthread or default_workers())
    if workers < 1 or workers > 64:
        raise StartError(f"invalid number of workers: {workers} (1 to 64)")
    if workers > 1 or args.master_worker or getattr(args, "master_socket", None):
        return serve_master(args, config, workers)
    listeners: dict[str, list[Listener]] = {}
    all_listeners: list[Listener] = []
    maxconn_global = g.maxconn
    try:
        for p in config.frontends:
            backlog = p.maxconn or maxconn_global or 2000
            lst = [Listener(b, backlog) for b in p.binds]
            for one in lst:
                one.open()
                all_listeners.append(one)
            listeners[p.name] = lst
        if not all_listeners:
            raise StartError("no listener: the configuration has no 'bind' in any frontend or listen section")
        uid, gid = resolve_ids(g.user, g.group, g.uid, g.gid)
        if (uid is not None or gid is not None or g.chroot) and os.geteuid() != 0:
            what = "chroot" if g.chroot else "uid/gid"
            raise StartError(f"cannot drop privileges ({what} requested) when not started as root")
        daemon_mode = (g.daemon or args.daemon) and not (args.foreground or args.debug)
        return _run_process(args, config, listeners, all_listeners, uid, gid, daemon_mode)
    finally:
        for one in all_listeners:
            one.close()


def _tune_gc() -> None:
    """Everything alive after start-up (modules, configuration, runtime) lives as long as the process: freeze it
    out of the collector's reach, and collect the young generation less often. Streams make a few reference
    cycles each (protocol <-> transport); measured with wrk on loopback this cuts the proxy's user CPU per
    request by about a fifth with `Connection: close` clients, for a few MB of extra garbage at most."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)


def _start_stats_sockets(rt: Any, config: Any, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """The runtime API on each `stats socket`: created before chroot and the privilege drop, as HAProxy does.

    The stats view subscribes to server events, so it is built before the checks start. The sockets and the
    stats pages (`stats enable`, the Prometheus exporter) share one view, so they show the same downtimes.
    """
    g = config.global_
    if not g.stats_sockets and not rt.serves_stats():
        return []
    import time

    from balancier import __version__
    from balancier.proxy.runtime_api import RuntimeApi, hooks_for_runtime, info_for_runtime
    from balancier.proxy.stats import StatsView
    from balancier.proxy.statsock import StatsSocketServer

    backends = [b.backend for b in rt.backends.values()]
    view = StatsView(rt.frontends, backends, config.proxies, first_id=2)
    info = info_for_runtime(rt, time.time(), time.monotonic(), __version__)
    if rt.serves_stats():
        import balancier.proxy.statsapplet  # noqa: F401  (imported before a chroot)

        page_api = RuntimeApi(backends, rt.frontends, info, "admin", proxies=config.proxies,
                              hooks=hooks_for_runtime(rt), view=view)
        rt.attach_stats(view, info, page_api)
    servers = []
    for sock in g.stats_sockets:
        api = RuntimeApi(backends, rt.frontends, info, sock.level, proxies=config.proxies,
                         hooks=hooks_for_runtime(rt), view=view)
        server = StatsSocketServer(sock.address, sock.mode if sock.mode is not None else 0o600, sock.level, api,
                                   timeout=g.stats_timeout / 1000, maxconn=g.stats_maxconn)
        try:
            loop.run_until_complete(server.start())
        except OSError as e:
            raise StartError(f"{sock.where}: cannot create stats socket '{sock.address}': {e.strerror}") from None
        servers.append(server)
    return servers


async def _start_in_loop(rt: Any) -> None:
    """Start serving from inside the running loop (the checker and the listeners create tasks)."""
    rt.start()


def _run_process(args: argparse.Namespace, config: Any, listeners: dict[str, Any], all_listeners: list[Any],
                 uid: int | None, gid: int | None, daemon_mode: bool) -> int:
    # imported now: after a chroot nothing can be imported any more
    import balancier.proxy.pool  # noqa: F401
    import balancier.proxy.queue  # noqa: F401
    import balancier.proxy.stream  # noqa: F401
    import balancier.proxy.streamlog  # noqa: F401
    import balancier.proxy.tcp  # noqa: F401
    from balancier.proxy.runtime import Runtime

    g = config.global_
    d = Daemon() if daemon_mode else None
    if d is not None:
        d.start()
    loop: asyncio.AbstractEventLoop | None = None
    try:
        pidfile = args.pidfile or g.pidfile
        if pidfile:
            write_pidfile(pidfile, [os.getpid()])
        loop = _new_loop(args.debug)
        asyncio.set_event_loop(loop)
        rt = Runtime(config, loop, listeners, debug=args.debug)
        stats_servers = _start_stats_sockets(rt, config, loop)
        if any(be.cookie is not None for be in rt.backends.values()):
            import balancier.proxy.persistence  # noqa: F401
        try:
            import balancier.proxy.checker  # noqa: F401
        except ImportError:
            pass
        drop_privileges(g.chroot, uid, gid)
        for problem in signal_old_processes(args.soft_finish, args.hard_terminate):
            _say("WARNING", problem)
        loop.add_signal_handler(signal.SIGUSR1, rt.soft_stop)
        loop.add_signal_handler(signal.SIGTERM, rt.hard_stop)
        loop.add_signal_handler(signal.SIGINT, rt.hard_stop)
        loop.add_signal_handler(signal.SIGTTOU, rt.pause_listeners)
        loop.add_signal_handler(signal.SIGTTIN, rt.resume_listeners)
        loop.add_signal_handler(signal.SIGHUP, rt.dump_states)
        loop.run_until_complete(_start_in_loop(rt))
        _tune_gc()
        if d is not None:
            d.ready()
        if args.debug:
            ports = ", ".join(lst.label for lst in all_listeners)
            _say("NOTICE", f"balancier proxy ready on {ports} (pid {os.getpid()})")
        code = loop.run_until_complete(rt.done)
        for server in stats_servers:
            loop.run_until_complete(server.stop())
        loop.run_until_complete(rt.finish())  # late accepts are served, closing transports flush
        return int(code)
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
        if loop is not None:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:
                pass
            loop.close()
