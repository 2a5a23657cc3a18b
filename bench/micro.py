#!/usr/bin/env python3
"""User-space cost of one proxied request, without the kernel: the stream driven in-process with fake transports.

The benchmark's configuration (bench/run.py: cookie prefix, forwardfor, roundrobin 256/128/1 + backup) is loaded
and a `Runtime` built on an idle event loop; each request goes through `HttpStream` exactly as in the proxy
(parse, persistence, balancing, pooled server connection, response forwarding, counters), with wrk's request and
nginx's response as bytes. Nothing touches a socket, so the figure is the Python work per request that the real
proxy adds on top of its syscalls.

    python3 bench/micro.py                 # µs/request for ka (keep-alive client) and close (one connection each)
    python3 bench/micro.py --profile ka    # cProfile of the keep-alive path
    python3 bench/micro.py --bytecodes ka  # bytecodes per request, per function (exact, load-independent)
    python3 bench/micro.py --connect       # CPU per server connect (loopback, uvloop): Task vs serverside.Connect

Instructions per request, for the C work too (regex, dicts, allocation), exact as well (valgrind, a few minutes):
the difference of two runs over their difference in requests (300 here); run the command once before, so that
no run pays for compiling changed modules, and give valgrind the interpreter itself, not a wrapper script:

    PY=$(python3 -c 'import sys; print(sys.executable)')
    for n in 100 400; do MICRO_REQUESTS=$n valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        $PY bench/micro.py --loop ka 2>&1 | grep Collected; done
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

from balancier.proxy.config import load  # noqa: E402
from balancier.proxy.pool import ServerConn  # noqa: E402
from balancier.proxy.runtime import Runtime  # noqa: E402
from balancier.proxy.stream import HttpStream  # noqa: E402

REQ_KA = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8504\r\n\r\n"
REQ_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8504\r\nConnection: close\r\n\r\n"
BODY = bench.BODY.format(n=1).encode()
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 11:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 99\r\nConnection: keep-alive\r\n\r\n" + BODY)


class FakeTransport:
    """Just enough of an asyncio transport: writes are counted, nothing else happens."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.written += len(p)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def build(listen: str) -> tuple[Runtime, Any, dict[str, ServerConn]]:
    d = Path(tempfile.mkdtemp(prefix="balancier-micro-"))
    cfg = d / "b.cfg"
    cfg.write_text(bench.proxy_conf(os.environ.get("MICRO_IMPL", "balancier"), d, [9001, 9002, 9003, 9004],
                                    stats_socket=False))
    config, _ = load([str(cfg)])
    loop = asyncio.new_event_loop()
    rt = Runtime(config, loop, {})
    route = next(r for r in rt.routes if r.fe.name == listen)
    conns = {}
    for s in route.be.backend.servers:  # one idle pooled connection per server
        c = ServerConn(s)
        c.connection_made(FakeTransport())
        c.uses = 1
        rt.pool.put(c, 0.0)
        conns[s.name] = c
    # Steady state: FWRR serves picks from its recorded cycle once two windows have gone by
    # (2 x 16 x (256+128+1) = 12,320 picks with the bench's weights; fwrr.py, "Cycle cache").
    for be in rt.backends.values():
        for _ in range(13000):
            be.backend.pick("127.0.0.1")
    return rt, route, conns


def run_ka(n: int) -> float:
    rt, route, _ = build("webfarm_4")
    s = HttpStream(rt, route)
    ct = FakeTransport()
    s.connection_made(ct)
    t0 = time.process_time()
    for _ in range(n):
        s.data_received(REQ_KA)
        sc = s.sconn
        assert sc is not None
        sc.data_received(RESP)
    dt = time.process_time() - t0
    assert ct.written % n == 0 and ct.written // n > len(BODY), ct.written  # one whole response each
    return dt * 1e6 / n


def run_close(n: int) -> float:
    rt, route, _ = build("webfarm_4")
    t0 = time.process_time()
    for _ in range(n):
        s = HttpStream(rt, route)
        ct = FakeTransport()
        s.connection_made(ct)
        s.data_received(REQ_CLOSE)
        sc = s.sconn
        assert sc is not None
        sc.data_received(RESP)
        s.connection_lost(None)
        assert ct.closing
    dt = time.process_time() - t0
    return dt * 1e6 / n


def reference(n: int) -> float:
    """A fixed pure-Python workload (attribute and dict traffic, a few calls), timed next to each measurement:
    on a shared machine the ratio to it is steadier than the raw time."""

    class Obj:
        def __init__(self) -> None:
            self.a = 0
            self.d: dict[int, int] = {}

        def f(self, i: int) -> None:
            self.a += i
            self.d[i & 63] = self.a

    o = Obj()
    t0 = time.process_time()
    for i in range(n * 40):
        o.f(i)
    return (time.process_time() - t0) * 1e6 / n


def count_bytecodes(kind: str, n: int = 50, top: int = 25) -> str:
    """Python bytecodes executed per request, per function (sys.settrace opcode events): exact and repeatable,
    whatever else the machine is doing, so it shows a change of a few percent that timings on a shared machine
    cannot. It counts the interpreter's work only (not the time of C calls such as regex matching)."""
    counts: collections.Counter[str] = collections.Counter()
    tracer = bench.opcode_tracer(counts, lambda code: f"{Path(code.co_filename).name}:{code.co_name}")

    rt, route, _ = build("webfarm_4")
    if kind == "ka":
        s = HttpStream(rt, route)
        s.connection_made(FakeTransport())

        def one() -> None:
            s.data_received(REQ_KA)
            assert s.sconn is not None
            s.sconn.data_received(RESP)
    else:
        def one() -> None:
            c = HttpStream(rt, route)
            c.connection_made(FakeTransport())
            c.data_received(REQ_CLOSE)
            assert c.sconn is not None
            c.sconn.data_received(RESP)
            c.connection_lost(None)
    for _ in range(5):  # warm caches (Host, Connection tokens, X-Forwarded-For line)
        one()
    sys.settrace(tracer)
    try:
        for _ in range(n):
            one()
    finally:
        sys.settrace(None)
    counts.pop(f"{Path(__file__).name}:one", None)
    lines = [f"{kind}: {sum(counts.values()) / n:.0f} bytecodes/request"]
    lines += [f"{c / n:8.1f}  {k}" for k, c in counts.most_common(top)]
    return "\n".join(lines)


def connect_cost(n: int = 2000, rounds: int = 3) -> str:
    """CPU per server connect on loopback under uvloop (both ends in this process): `loop.create_task` around
    `create_connection`, as the stream once did, against `serverside.Connect` stepping the coroutine itself."""
    import uvloop

    from balancier.proxy.serverside import Connect

    loop = uvloop.new_event_loop()

    class Closer(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.close()

    async def measure(mode: str) -> float:
        srv = await loop.create_server(Closer, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        done = loop.create_future()
        count = 0

        def finished(transport: Any) -> None:
            nonlocal count
            transport.close()
            count += 1
            if count == n:
                done.set_result(None)
            else:
                start()

        def start() -> None:
            coro = loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            if mode == "task":
                loop.create_task(coro).add_done_callback(lambda t: finished(t.result()[0]))
            else:
                Connect(loop, coro, lambda c: finished(c.result()[0])).start()

        t0 = time.process_time()
        start()
        await done
        dt = time.process_time() - t0
        srv.close()
        return dt * 1e6 / n

    best = {"task": float("inf"), "Connect": float("inf")}
    try:
        for _ in range(rounds):
            for mode in best:
                best[mode] = min(best[mode], loop.run_until_complete(measure(mode)))
    finally:
        loop.close()
    return "; ".join(f"{mode} {t:.1f} µs/connect" for mode, t in best.items()) + f" (best of {rounds} x {n})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", choices=["ka", "close"])
    ap.add_argument("--bytecodes", choices=["ka", "close"], help="count bytecodes per request instead of timing")
    ap.add_argument("--connect", action="store_true", help="CPU per server connect: Task against serverside.Connect")
    ap.add_argument("--loop", choices=["ka", "close"], help="run $MICRO_REQUESTS requests and exit (for valgrind)")
    args = ap.parse_args(argv)
    if args.connect:
        print(connect_cost())
        return 0
    if args.bytecodes:
        print(count_bytecodes(args.bytecodes))
        return 0
    if args.loop:  # just the requests (for valgrind's counts), no timing
        n = int(os.environ.get("MICRO_REQUESTS", "100"))
        # start-up garbage out of the way: a full collection landing in one of the two runs only would add
        # millions of instructions to it
        gc.collect()
        gc.freeze()
        run_ka(n) if args.loop == "ka" else run_close(n)
        return 0
    fns = {"ka": run_ka, "close": run_close}
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        fns[args.profile](args.n)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(30)
        return 0
    for name, fn in fns.items():
        ratios = []
        best = float("inf")
        for _ in range(args.repeat):
            ref = reference(args.n)
            t = fn(args.n)
            best = min(best, t)
            ratios.append(t / ref)
        print(f"{name:6} {best:6.2f} µs/request (best of {args.repeat} x {args.n}); "
              f"{min(ratios):.3f} x the reference workload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
