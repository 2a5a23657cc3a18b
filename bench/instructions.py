#!/usr/bin/env python3
"""User-space instructions per request of the whole proxy process, exact and independent of the machine's load.

Timings on a shared 2-CPU machine move by ±30 % from one minute to the next; instruction counts do not. This runs
`balancier proxy` (one worker) under valgrind's callgrind with instrumentation off, warms it up, switches
instrumentation on for N requests sent by a client in this process, switches it off again and reads the total:
Python, uvloop, OpenSSL and libc work of the proxy for those N requests (the kernel's part is not counted). The
per-library split shows where it goes.

    python3 bench/instructions.py                      # keep-alive client, plain HTTP, 400 requests
    python3 bench/instructions.py --mode close         # a new client connection per request (Connection: close)
    python3 bench/instructions.py --mode httpclose     # `option httpclose`: a client and a server connection each
    python3 bench/instructions.py --mode tls           # keep-alive over TLS
    python3 bench/instructions.py --mode tls --rule    # ... with `http-request set-header X-Forwarded-Proto https`
    python3 bench/instructions.py --src /path/to/src   # another tree (PYTHONPATH), to compare two versions
    python3 bench/instructions.py --vary               # every request and response head differs (a unique query
                                                       # string, nginx's $request_id in a field): the head memo's
                                                       # worst case, every lookup a miss
    python3 bench/instructions.py --mode close --bytecodes   # Python bytecodes per request, per function, instead

With `--bytecodes` the proxy runs in this process (no valgrind) with a `sys.settrace` opcode counter on its thread
while a client thread sends the requests: the bytecodes the real proxy executes per request, per function,
uvloop and the connection's life included (bench/micro.py --bytecodes drives the stream with fake transports).

The configuration is one frontend, one backend with `http-reuse always` and one nginx server (bench/run.py's).
Needs valgrind (Debian `valgrind`), nginx and trustme (for --mode tls). About a minute per run.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402

REQ = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
REQ_CLOSE = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
VARY = [False]  # --vary: a unique query string per request


def request(template: bytes, i: int) -> bytes:
    return template % (b"?n=%d" % i if VARY[0] else b"")


def config(port: int, backend: int, pem: Path | None, rule: bool, httpclose: bool = False) -> str:
    bind = f"bind 127.0.0.1:{port}" + (f" ssl crt {pem} alpn http/1.1" if pem else "")
    rule_line = "    http-request set-header X-Forwarded-Proto https\n" if rule else ""
    rule_line += "    option httpclose\n" if httpclose else ""
    return ("global\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n"
            f"    timeout server 30s\nfrontend fe\n    {bind}\n{rule_line}    default_backend be\n"
            f"backend be\n    http-reuse always\n    server nginx 127.0.0.1:{backend}\n")


def _read_response(sock: socket.socket, buf: bytes) -> bytes:
    """Read one response with a Content-Length body; returns what follows it."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:end + 2])
            if m is None:
                raise SystemExit("response without Content-Length")
            total = end + 4 + int(m.group(1))
            if len(buf) >= total:
                return buf[total:]
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed before the response ended")
        buf += data


def client(port: int, n: int, mode: str) -> None:
    ctx = None
    if mode == "tls":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if mode in ("close", "httpclose"):  # a connection per request (httpclose: the proxy closes it)
        for i in range(n):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request(REQ_CLOSE if mode == "close" else REQ, i))
                _read_response(s, b"")
        return
    raw = socket.create_connection(("127.0.0.1", port))
    s = ctx.wrap_socket(raw, server_hostname="bench.test") if ctx else raw
    buf = b""
    for i in range(n):
        s.sendall(request(REQ, i))
        buf = _read_response(s, buf)
    s.close()


def total(out_file: Path) -> int:
    """The instructions callgrind counted (its `totals:` line)."""
    m = re.search(r"^totals:\s*(\d+)", out_file.read_text(errors="replace"), re.M)
    if m is None:
        raise SystemExit(f"no totals in {out_file}")
    return int(m.group(1))


def by_object(out_file: Path, n: int) -> list[tuple[str, float]]:
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out_file)],
                          capture_output=True, text=True).stdout
    totals: collections.Counter[str] = collections.Counter()
    _, _, functions = text.partition("file:function")  # skip the summary lines above the per-function table
    for line in functions.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+(.*)", line)
        if not m:
            continue
        ob = re.search(r"\[(.*?)\]\s*$", m.group(2))
        name = ob.group(1).rsplit("/", 1)[-1] if ob else "libpython (inlined)"
        totals[name] += int(m.group(1).replace(",", ""))
    return [(k, v / n) for k, v in totals.most_common(8)]


def count_bytecodes(cfg: Path, port: int, n: int, mode: str, top: int = 40) -> str:
    """Run the proxy here, count the opcodes its thread executes while `n` requests are sent from another thread
    (after 50 of warm-up), per function."""
    import signal
    import threading

    from balancier.cli import main as cli_main

    counts: collections.Counter[str] = collections.Counter()
    on = [False]
    tracer = base.opcode_tracer(counts, lambda code: f"{Path(code.co_filename).name}:{code.co_firstlineno}:"
                                                     f"{code.co_name}", lambda: on[0])

    def drive() -> None:
        try:
            deadline = time.monotonic() + 30
            while True:  # the proxy starts in the main thread
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client(port, 50, mode)
            on[0] = True
            client(port, n, mode)
        finally:
            on[0] = False
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=drive, daemon=True).start()
    sys.settrace(tracer)
    try:
        cli_main(["proxy", "-db", "-f", str(cfg)])
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sys.settrace(None)
    lines = [f"{mode}: {sum(counts.values()) / n:.0f} bytecodes per request ({n} requests)"]
    lines += [f"{c / n:8.1f}  {k}" for k, c in counts.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("ka", "close", "httpclose", "tls"), default="ka")
    ap.add_argument("--rule", action="store_true", help="add http-request set-header X-Forwarded-Proto https")
    ap.add_argument("-n", type=int, default=400, help="requests counted (default 400)")
    ap.add_argument("--vary", action="store_true", help="every request and response head differs (memo misses)")
    ap.add_argument("--src", help="PYTHONPATH for the proxy (another source tree)")
    ap.add_argument("--keep", type=Path, help="also copy callgrind's output file here (callgrind_annotate it)")
    ap.add_argument("--bytecodes", action="store_true",
                    help="count the proxy's Python bytecodes per request, per function (in this process, no valgrind)")
    ap.add_argument("--port", type=int, default=8795)
    ap.add_argument("--backend-port", type=int, default=9095)
    args = ap.parse_args(argv)
    base.ensure_tools(["nginx"] if args.bytecodes else ["nginx", "valgrind"])
    procs = base.Procs()
    with tempfile.TemporaryDirectory(prefix="balancier-instr-") as tmp:
        work = Path(tmp)
        try:
            VARY[0] = args.vary
            conf = base.nginx_conf(work, [args.backend_port])
            if args.vary:  # a field that differs in every response
                conf = conf.replace("location / { return", "location / { add_header X-Request-Id $request_id; return")
            (work / "nginx.conf").write_text(conf)
            nginx = procs.start("nginx", [base.tool("nginx"), "-p", str(work), "-c", str(work / "nginx.conf"),
                                          "-g", "daemon off;"], work / "nginx.out")
            base.wait_listening(args.backend_port, nginx, "nginx")
            pem = None
            if args.mode == "tls":
                import trustme

                pem = work / "site.pem"
                trustme.CA().issue_cert("bench.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
            (work / "proxy.cfg").write_text(config(args.port, args.backend_port, pem, args.rule, args.mode == "httpclose"))
            if args.bytecodes:
                if args.src:  # the proxy runs in this process: import it from the other tree
                    sys.path.insert(0, args.src)
                print(count_bytecodes(work / "proxy.cfg", args.port, args.n, args.mode))
                return 0
            out = work / "callgrind.out"
            env = dict(os.environ, PYTHONPATH=args.src) if args.src else None
            with open(work / "proxy.log", "wb") as log:
                proxy = subprocess.Popen(
                    ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                     sys.executable, "-m", "balancier", "proxy", "-db", "-f", str(work / "proxy.cfg")],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            procs.procs.append(("proxy", proxy))
            base.wait_listening(args.port, proxy, "proxy under valgrind", timeout=180)
            client(args.port, 50, args.mode)  # warm-up: imports, pools, caches
            subprocess.run(["callgrind_control", "-i", "on", str(proxy.pid)], capture_output=True, check=True)
            t0 = time.monotonic()
            client(args.port, args.n, args.mode)
            subprocess.run(["callgrind_control", "-i", "off", str(proxy.pid)], capture_output=True, check=True)
            elapsed = time.monotonic() - t0
            proxy.send_signal(2)
            proxy.wait(60)
            per = total(out) / args.n
            label = args.mode + (" + set-header rule" if args.rule else "") + (", every head new" if args.vary else "")
            print(f"{label}: {per:,.0f} instructions per request ({args.n} requests, {elapsed:.0f} s under valgrind)")
            for name, v in by_object(out, args.n):
                print(f"  {v:10,.0f}  {name}")
            if args.keep:
                shutil.copyfile(out, args.keep)
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
