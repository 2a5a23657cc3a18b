"""The client probe of the failover measurements, and the outage it saw.

Rules this file governs (spec testbed.md §1 "Probe" and "Definitions"):

- A request starts every ``interval`` (10 ms) on a fixed grid: request k starts at t0 + k x interval,
  whatever happened to the previous ones. Each request runs in a thread of a pool, so a hung request
  does not delay the next; when the grid slips (the pool is full or the machine is busy) the late
  requests still start, late, and their real start time is recorded.
- Every request is a new TCP connection sending ``GET / HTTP/1.1`` with ``Connection: close``; it fails
  when connect + response take longer than ``timeout`` (200 ms), or the status is not 2xx/3xx.
- Each sample records: sequence number, start and end (CLOCK_MONOTONIC seconds, shared by every
  process on the machine, so a fault injected by another process can be placed on the same axis),
  ok, HTTP status, the application server that answered (the portal's "served by NAME"), the load
  balancer node it came through (the portal shows its client's address, which is the balancer's own
  address; ``--node IP=NAME`` maps it to a name) and the error.
- Persistent users (``sessions`` > 0, the drill's scenario 7): before the grid starts, each of them
  logs in once (``login_path``, e.g. ``/login?user=drill{i}``) and keeps the cookie it got; then each
  sends ``GET /`` with that cookie every ``session_interval`` on its own new connection, recorded as
  samples with ``session`` set. They are judged apart: the outage and failed counts of
  :func:`analyse` are the anonymous grid's only.
- The run lasts at most ``duration`` seconds; SIGTERM or SIGINT end it earlier. Either way the
  requests in flight finish (bounded by the timeout) and the JSON is written.
- Outage (pure, :func:`analyse`): start of the first successful probe from the new node minus start
  of the first failed probe, counting only probes started at or after the fault; failed = every
  failed probe from the fault on. Resolution is the grid interval.

Run inside the client's namespace::

    ip netns exec bt123-client python3 -m balancier.testbed.probe --url http://10.99.0.10/ \\
        --duration 20 --out /tmp/probe.json --node 10.99.0.11=lb1 --node 10.99.0.12=lb2
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SERVED_RE = re.compile(rb"served by ([A-Za-z0-9_.-]+)")
CLIENT_RE = re.compile(rb"<p id='client'>client ([0-9a-fA-F.:]+)")
STATUS_RE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
MAX_RESPONSE = 64 * 1024


@dataclass
class Sample:
    seq: int
    start: float
    end: float = 0.0
    ok: bool = False
    status: int | None = None
    server: str | None = None
    node: str | None = None
    error: str | None = None
    session: int | None = None  # the persistent user who sent it; None: the anonymous grid


@dataclass(frozen=True)
class Outage:
    """What the client saw of one event (see the module's rules)."""

    outage_ms: float | None  # None: never recovered within the run
    failed: int
    first_failure: float | None
    recovered_at: float | None
    samples: int
    nodes_after: tuple[str, ...] = field(default_factory=tuple)  # nodes that answered after the fault, in order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- pure parts


def parse_response(data: bytes, node_map: Mapping[str, str]) -> tuple[int | None, str | None, str | None]:
    """(status, application server, balancer node) from a raw response; unknown parts are None."""
    m = STATUS_RE.match(data)
    status = int(m.group(1)) if m else None
    s = SERVED_RE.search(data)
    c = CLIENT_RE.search(data)
    server = s.group(1).decode() if s else None
    via = c.group(1).decode() if c else None
    node = node_map.get(via, via) if via is not None else None
    return status, server, node


def analyse(samples: Sequence[Sample], fault_at: float | None = None, new_node: str | None = None) -> Outage:
    """The outage around a fault at ``fault_at`` (None: the first failure anywhere in the run).

    new_node: recovery counts only from a success through this node (None: any node).
    """
    window = sorted((s for s in samples if s.session is None and (fault_at is None or s.start >= fault_at)),
                    key=lambda s: s.start)
    failed = [s for s in window if not s.ok]
    nodes: list[str] = []
    for s in window:
        if s.ok and s.node and (not nodes or nodes[-1] != s.node):
            nodes.append(s.node)
    if not failed:
        return Outage(0.0, 0, None, None, len(window), tuple(nodes))
    first = failed[0]
    for s in window:
        if s.start > first.start and s.ok and (new_node is None or s.node == new_node):
            return Outage(round((s.start - first.start) * 1000, 1), len(failed), first.start, s.start,
                          len(window), tuple(nodes))
    return Outage(None, len(failed), first.start, None, len(window), tuple(nodes))


def grid(t0: float, interval: float, k: int) -> float:
    return t0 + k * interval


SET_COOKIE_RE = re.compile(rb"^set-cookie:\s*([^;\r\n]+)", re.IGNORECASE | re.MULTILINE)


def set_cookie(data: bytes) -> str | None:
    """The first ``name=value`` of the response's Set-Cookie headers (None: none)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    m = SET_COOKIE_RE.search(head)
    return m.group(1).decode("latin-1").strip() if m else None


def session_breaks(logins: Sequence[Mapping[str, Any]], samples: Sequence[Sample], victim: str | None,
                   since: float | None = None) -> tuple[int, list[str]]:
    """Persistent users judged (those whose server is not ``victim``) and how each was affected (pure).

    A user is affected when one of its requests (started at or after ``since``) failed or was answered
    by another server than the one it logged in on.
    """
    checked = 0
    broken: list[str] = []
    for login in logins:
        home = login.get("server")
        if not login.get("cookie") or home is None or home == victim:
            continue
        checked += 1
        mine = [s for s in samples if s.session == login["session"] and (since is None or s.start >= since)]
        bad = [s for s in mine if not s.ok or s.server != home]
        if bad:
            first = bad[0]
            what = first.error if not first.ok else f"answered by {first.server}"
            broken.append(f"user {login['session']} of {home}: {len(bad)}/{len(mine)} requests, first {what}")
    return checked, broken


# --------------------------------------------------------------------------- the probe


def one_request(host: str, port: int, path: str, timeout: float, node_map: Mapping[str, str],
                seq: int, start: float, cookie: str | None = None, session: int | None = None,
                raw: list[bytes] | None = None) -> Sample:
    """One request on a new connection; ``raw`` (if given) receives the response bytes."""
    sample = Sample(seq, start, session=session)
    deadline = start + timeout
    sock: socket.socket | None = None
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: balancier-probe\r\n{extra}"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while len(data) < MAX_RESPONSE:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("response timed out")
            sock.settimeout(left)
            chunk = sock.recv(16384)
            if not chunk:
                break
            data += chunk
        if raw is not None:
            raw.append(data)
        status, server, node = parse_response(data, node_map)
        sample.status, sample.server, sample.node = status, server, node
        sample.ok = status is not None and 200 <= status < 400
        if not sample.ok:
            sample.error = f"status {status}" if status is not None else "no HTTP response"
    except (OSError, TimeoutError) as exc:
        sample.error = "timeout" if isinstance(exc, TimeoutError | socket.timeout) else (
            exc.strerror or type(exc).__name__)
    finally:
        if sock is not None:
            sock.close()
        sample.end = time.monotonic()
    return sample


class Probe:
    """Runs the grid until ``duration`` or :meth:`stop`; :attr:`samples` holds the results in order."""

    def __init__(self, url: str, interval: float = 0.010, timeout: float = 0.200, duration: float = 30.0,
                 node_map: Mapping[str, str] | None = None, workers: int = 64, sessions: int = 0,
                 login_path: str = "/login?user=drill{i}", session_interval: float = 0.050) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"probe URL must be http://HOST[:PORT]/PATH, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.interval = interval
        self.timeout = timeout
        self.duration = duration
        self.node_map = dict(node_map or {})
        self.workers = workers
        self.samples: list[Sample] = []
        self.t0 = 0.0
        self._stop = threading.Event()
        # Set by a signal handler: a plain flag, since Event.set() from a handler can deadlock on the Event's
        # own lock when the signal lands while the main thread holds it (inside Event.wait).
        self.halt = False
        self.sessions = sessions
        self.login_path = login_path
        self.session_interval = session_interval
        self.logins: list[dict[str, Any]] = []
        self.started = threading.Event()  # set when the grid's first request is sent

    def login_all(self) -> None:
        """Each persistent user logs in once (a few tries: the service may be warming up)."""
        for i in range(self.sessions):
            entry: dict[str, Any] = {"session": i, "cookie": None, "server": None}
            for _ in range(5):
                raw: list[bytes] = []
                s = one_request(self.host, self.port, self.login_path.format(i=i), max(self.timeout, 1.0),
                                self.node_map, -1, time.monotonic(), raw=raw)
                cookie = set_cookie(raw[0]) if raw else None
                if s.ok and cookie:
                    entry.update(cookie=cookie, server=s.server)
                    break
                time.sleep(0.05)
            self.logins.append(entry)

    def _session_loop(self, pool: ThreadPoolExecutor, end: float, futures: list[Any]) -> None:
        k = 0
        while not self._stop.is_set() and time.monotonic() < end:
            for login in self.logins:
                if login["cookie"]:
                    futures.append(pool.submit(one_request, self.host, self.port, self.path, self.timeout,
                                               self.node_map, k, time.monotonic(), login["cookie"],
                                               login["session"]))
            k += 1
            if self._stop.wait(self.session_interval):
                break

    def stop(self) -> None:
        self._stop.set()

    def request_stop(self) -> None:
        """Safe in a signal handler: the grid loop sees it within one interval and stops the rest."""
        self.halt = True

    def run(self) -> list[Sample]:
        futures: list[Any] = []
        session_futures: list[Any] = []
        if self.sessions and not self.logins:
            self.login_all()
        self.t0 = time.monotonic()
        end = self.t0 + self.duration
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            sessions = None
            if self.sessions:
                sessions = threading.Thread(target=self._session_loop, args=(pool, end, session_futures),
                                            daemon=True)
                sessions.start()
            self.started.set()
            k = 0
            while not self._stop.is_set() and not self.halt:
                at = grid(self.t0, self.interval, k)
                if at >= end:
                    break
                wait = at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                futures.append(pool.submit(one_request, self.host, self.port, self.path, self.timeout,
                                           self.node_map, k, time.monotonic()))
                k += 1
            self._stop.set()
            if sessions is not None:
                sessions.join()
        self.samples = [f.result() for f in futures] + [f.result() for f in session_futures]
        return self.samples

    def to_json(self) -> dict[str, Any]:
        return {"url": f"http://{self.host}:{self.port}{self.path}", "interval": self.interval,
                "timeout": self.timeout, "t0": self.t0, "logins": self.logins,
                "samples": [asdict(s) for s in self.samples]}


def load(path: str | Path) -> tuple[dict[str, Any], list[Sample]]:
    """Read a probe's JSON file back: (header fields, samples)."""
    data = json.loads(Path(path).read_text())
    samples = [Sample(**s) for s in data.pop("samples")]
    return data, samples


def parse_node_map(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        ip, sep, name = item.partition("=")
        if not sep or not ip or not name:
            raise ValueError(f"--node wants IP=NAME, got {item!r}")
        out[ip] = name
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m balancier.testbed.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="http://HOST[:PORT]/PATH, e.g. http://10.99.0.10/")
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--timeout-ms", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds (bounded: at most 600)")
    ap.add_argument("--node", action="append", default=[], metavar="IP=NAME",
                    help="name the balancer whose address the application server reports")
    ap.add_argument("--out", required=True, help="where to write the JSON")
    ap.add_argument("--sessions", type=int, default=0, metavar="N",
                    help="also N persistent users: each logs in once, then sends its cookie every 50 ms")
    ap.add_argument("--login-path", default="/login?user=drill{i}", help="where a persistent user logs in")
    args = ap.parse_args(argv)
    if not 0 < args.duration <= 600:
        ap.error("--duration must be within (0, 600] seconds")
    try:
        probe = Probe(args.url, args.interval_ms / 1000, args.timeout_ms / 1000, args.duration,
                      parse_node_map(args.node), sessions=args.sessions, login_path=args.login_path)
    except ValueError as exc:
        ap.error(str(exc))
    signal.signal(signal.SIGTERM, lambda *_: probe.request_stop())
    signal.signal(signal.SIGINT, lambda *_: probe.request_stop())
    if probe.sessions:
        probe.login_all()  # before the "probing" line: whoever waits for it gets the users logged in
    print(f"probing {args.url} every {args.interval_ms:g} ms, started at {time.monotonic():.6f}", flush=True)
    probe.run()
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(probe.to_json()))
    tmp.replace(args.out)
    ok = sum(s.ok for s in probe.samples)
    print(f"{len(probe.samples)} probes, {ok} ok, {len(probe.samples) - ok} failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
