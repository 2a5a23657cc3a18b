#!/usr/bin/env python3
"""The floor of a uvloop proxy: what the event loop and the kernel alone cost, next to balancier and HAProxy.

balancier's speed is judged against HAProxy in CPU per request. Part of balancier's figure is not its own code:
uvloop's transports, callbacks and connect coroutine, and the syscalls it makes per connection. This script
measures that part with a proxy that does nothing else, so that a target can be read against what any Python
proxy on uvloop pays:

- `floor` in mode `httpclose`: accept, wait for the end of the request head, connect to the backend
  (`loop.create_connection`, its coroutine stepped without a Task, as balancier's serverside.Connect does), send the head with
  `Connection: close`, relay the response bytes and close the client when the server closes. No parsing, no
  validation, no balancing, no logs, no timeouts: it is not a proxy anyone should run, only the least a uvloop
  proxy does per request when every request costs a client and a server connection (`option httpclose`).
- `floor` in mode `ka`: keep-alive on both sides, one server connection per client connection made at accept,
  bytes relayed both ways untouched (one request in flight at a time, as wrk sends them).
- `raw` (mode `httpclose` only): the same work as `floor` in that mode without an event-loop library: raw
  sockets and `select.epoll` in a plain Python loop (accepted descriptors read and written with `os.read` and
  `os.write`, server sockets created non-blocking, closed descriptors leave the epoll set by themselves). It
  shows what leaving uvloop's transports would give a connection-per-request mode.

The same configuration (one `frontend`/`backend`, one nginx server, `option httpclose` in mode httpclose,
`http-reuse always` in mode ka) runs through HAProxy (`nbthread 1`) and `balancier proxy`; the three targets
are measured A B C A B C with wrk (`-t1 -c50`), CPU µs per request from /proc (bench/run.py's accounting).

    python3 bench/floor.py                        # both modes, 3 rounds, 8 s each (~3 min)
    python3 bench/floor.py --modes httpclose --rounds 5

The floor proxies themselves are this file run with `--serve PORT BACKEND_PORT MODE` and `--serve-raw PORT
BACKEND_PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402

BACKEND_PORT = 9411
PORTS = {"haproxy": 8901, "floor": 8902, "raw": 8904, "balancier": 8903}  # in mode httpclose; +10 in mode ka
MODES = ("httpclose", "ka")


def targets_of(mode: str) -> list[str]:
    return [t for t in PORTS if t != "raw" or mode == "httpclose"]


def port(target: str, mode: str) -> int:
    return PORTS[target] + 10 * MODES.index(mode)


# ---- the floor proxy -------------------------------------------------------------------------------------------
def serve(port: int, backend: int, mode: str) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    back = ("127.0.0.1", backend)

    class Upstream(asyncio.Protocol):
        __slots__ = ("client", "transport")

        def __init__(self, client: asyncio.Transport) -> None:
            self.client = client

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.client.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.close()

    def connect(client: asyncio.Transport, then: Any) -> None:
        """Step `create_connection`'s coroutine on its futures' callbacks (no Task), then call `then(transport)`."""
        coro = loop.create_connection(lambda: Upstream(client), *back)

        def step(_fut: Any) -> None:
            try:
                r = coro.send(None)
            except StopIteration as e:
                then(e.value[0])
                return
            except OSError:
                client.close()
                return
            if r is None:
                loop.call_soon(step, None)
            else:
                r._asyncio_future_blocking = False
                r.add_done_callback(step)

        step(None)

    class CloseClient(asyncio.Protocol):
        __slots__ = ("transport", "buf", "started")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""
            self.started = False

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if not self.started and self.buf.endswith(b"\r\n\r\n"):
                self.started = True
                connect(self.transport, self.connected)

        def connected(self, up: asyncio.Transport) -> None:
            up.write(self.buf[:-2] + b"Connection: close\r\n\r\n")

    class KaClient(asyncio.Protocol):
        __slots__ = ("transport", "up", "pending")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.up: asyncio.Transport | None = None
            self.pending = b""
            connect(self.transport, self.connected)  # type: ignore[arg-type]

        def connected(self, up: asyncio.Transport) -> None:
            self.up = up
            if self.pending:
                up.write(self.pending)

        def data_received(self, data: bytes) -> None:
            if self.up is None:
                self.pending += data
            else:
                self.up.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.up is not None:
                self.up.close()

    factory = CloseClient if mode == "httpclose" else KaClient
    loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port, backlog=4096))
    loop.run_forever()


def serve_raw(port: int, backend: int) -> None:
    """`floor`'s httpclose work on raw sockets and epoll, no event-loop library (see the module's docstring)."""
    import _socket
    import os
    import select
    import socket

    back = ("127.0.0.1", backend)
    ep = select.epoll()
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    listener.setblocking(False)
    lfd = listener.fileno()
    accept = listener._accept  # (fd, address): no socket object for the client
    handlers: dict[int, Any] = {}
    bufs: dict[int, bytes] = {}
    new_server = _socket.socket
    server_type = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT  # noqa: N806

    def on_accept(_fd: int) -> None:
        while True:
            try:
                fd, _ = accept()
            except BlockingIOError:
                return
            bufs[fd] = b""
            handlers[fd] = on_client
            ep.register(fd, EPOLLIN)

    def on_client(fd: int) -> None:
        data = os.read(fd, 65536)
        if not data:
            del handlers[fd], bufs[fd]
            os.close(fd)
            return
        buf = bufs[fd] + data
        if not buf.endswith(b"\r\n\r\n"):
            bufs[fd] = buf
            return
        del bufs[fd]
        handlers[fd] = ignore  # the client says nothing more until its response
        s = new_server(socket.AF_INET, server_type)
        s.connect_ex(back)
        sfd = s.fileno()
        request = buf[:-2] + b"Connection: close\r\n\r\n"

        def on_connected(_sfd: int) -> None:
            s.send(request)
            handlers[sfd] = on_response
            ep.modify(sfd, EPOLLIN)

        def on_response(_sfd: int) -> None:
            data = s.recv(65536)
            if data:
                os.write(fd, data)
                return
            del handlers[sfd], handlers[fd]
            s.close()
            os.close(fd)

        handlers[sfd] = on_connected
        ep.register(sfd, EPOLLOUT)

    def ignore(_fd: int) -> None:
        pass

    handlers[lfd] = on_accept
    ep.register(lfd, EPOLLIN)
    poll = ep.poll
    while True:
        for fd, _ in poll():
            h = handlers.get(fd)
            if h is not None:
                h(fd)


# ---- the comparison -----------------------------------------------------------------------------------------------
def config(port: int, mode: str) -> str:
    # httpclose goes in `defaults`: a backend's httpclose alone closes only the server side (haproxy 2.6 keeps the
    # client connection alive then), and this mode is about a client and a server connection per request
    extra = "    option httpclose\n" if mode == "httpclose" else "    http-reuse always\n"
    return ("global\n    nbthread 1\n    maxconn 2000\ndefaults\n    mode http\n    timeout connect 5s\n"
            f"    timeout client 30s\n    timeout server 30s\n{extra}"
            f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
            f"backend be\n    server nginx 127.0.0.1:{BACKEND_PORT}\n")


def command(target: str, mode: str, work: Path) -> list[str]:
    if target == "floor":
        return [sys.executable, __file__, "--serve", str(port(target, mode)), str(BACKEND_PORT), mode]
    if target == "raw":
        return [sys.executable, __file__, "--serve-raw", str(port(target, mode)), str(BACKEND_PORT)]
    cfg = work / f"{target}-{mode}.cfg"
    cfg.write_text(config(port(target, mode), mode))
    return base.proxy_command(target, cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "BACKEND_PORT", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-raw", nargs=2, metavar=("PORT", "BACKEND_PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), args.serve[2])
        return 0
    if args.serve_raw:
        serve_raw(int(args.serve_raw[0]), int(args.serve_raw[1]))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (known: {', '.join(MODES)})")
    base.ensure_tools(["nginx", "haproxy", "wrk"])
    rows: list[dict[str, object]] = []
    procs = base.Procs()
    with tempfile.TemporaryDirectory(prefix="balancier-floor-") as tmp:
        work = Path(tmp)
        try:
            (work / "nginx.conf").write_text(base.nginx_conf(work, [BACKEND_PORT]))
            ng = procs.start("nginx", [base.tool("nginx"), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                             work / "nginx.log")
            base.wait_listening(BACKEND_PORT, ng, "nginx")
            started = {}  # every target in every mode, started once (bench/run.py does the same)
            for mode in modes:
                for target in targets_of(mode):
                    p = procs.start(target, command(target, mode, work), work / f"{target}-{mode}.log")
                    base.wait_listening(port(target, mode), p, target)
                    base.check_target(port(target, mode))
                    started[target, mode] = p
            for rnd in range(args.rounds):
                for mode in modes:
                    for target in targets_of(mode):
                        p = started[target, mode]
                        res, cpu, _ = base.run_wrk(port(target, mode), args.conns, args.duration, [], p.pid)
                        n = int(res["requests"])  # type: ignore[call-overload]
                        row = {"round": rnd + 1, "mode": mode, "target": target, "rps": res["rps"],
                               "cpu_us_per_req": cpu / n * 1e6 if n else 0.0, "errors": res["errors"]}
                        rows.append(row)
                        print(f"round {rnd + 1} {mode:9} {target:9} {row['rps']:>10.0f} req/s "
                              f"{row['cpu_us_per_req']:6.1f} us/req {row['errors'] or ''}", flush=True)
        finally:
            procs.stop_all()
    print()
    print(f"{'mode':9} {'target':9} {'req/s':>8} {'us/req':>7}  {'req/s vs haproxy':>16}  {'CPU vs haproxy':>14}")
    summary = {}
    for mode in modes:
        med = {t: (statistics.median(float(r["rps"]) for r in rows if r["mode"] == mode and r["target"] == t),  # type: ignore[arg-type]
                   statistics.median(float(r["cpu_us_per_req"]) for r in rows if r["mode"] == mode and r["target"] == t))  # type: ignore[arg-type]
               for t in targets_of(mode)}
        ref_rps, ref_cpu = med["haproxy"]
        for t in targets_of(mode):
            rps, cpu = med[t]
            print(f"{mode:9} {t:9} {rps:8.0f} {cpu:7.1f}  {rps / ref_rps:15.2f}x  {cpu / ref_cpu:13.2f}x")
            summary[f"{mode}/{t}"] = {"rps": rps, "cpu_us_per_req": cpu,
                                      "rps_ratio": rps / ref_rps, "cpu_ratio": cpu / ref_cpu}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"floor-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"rounds": args.rounds, "duration": args.duration, "conns": args.conns,
                                "runs": rows, "medians": summary}, indent=1))
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
