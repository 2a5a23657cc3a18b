"""The probe's pure parts: reading a response, and the outage/failed definitions of spec testbed.md §1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from balancier.testbed.probe import Probe, Sample, analyse, grid, load, parse_node_map, parse_response

NODES = {"10.99.0.11": "lb1", "10.99.0.12": "lb2"}
PAGE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"
        b"<h1>Portal served by ents3</h1>\n<p id='session'>not logged in</p>\n"
        b"<p id='client'>client 10.99.0.12, X-Forwarded-For 10.99.0.100</p>\n")


def test_parse_response_names_server_and_balancer() -> None:
    assert parse_response(PAGE, NODES) == (200, "ents3", "lb2")
    assert parse_response(PAGE, {}) == (200, "ents3", "10.99.0.12")  # unmapped: the raw address
    assert parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n<h1>503</h1>", NODES) == (503, None, None)
    assert parse_response(b"garbage", NODES) == (None, None, None)


def S(t_ms: float, ok: bool, node: str | None = None, seq: int = 0) -> Sample:
    return Sample(seq, t_ms / 1000, t_ms / 1000 + 0.001, ok, 200 if ok else None, "ents3" if ok else None,
                  node if ok else None, None if ok else "timeout")


def timeline(spec: str, node_before: str = "lb1", node_after: str = "lb2", fault_slot: int = 0) -> list[Sample]:
    """One char per 10 ms slot: '1' ok through the first node, '2' ok through the second, 'x' failed."""
    out = []
    for i, c in enumerate(spec):
        if c == "x":
            out.append(S(i * 10, False, seq=i))
        else:
            out.append(S(i * 10, True, node_before if c == "1" else node_after, seq=i))
    return out


@pytest.mark.parametrize("spec,fault_ms,new_node,outage,failed", [
    ("1111xxxx2222", 40, "lb2", 40.0, 4),        # the plain failover
    ("1111xxxx2222", None, "lb2", 40.0, 4),      # no fault time: the first failure anywhere
    ("11111111", 40, "lb2", 0.0, 0),             # nothing failed
    ("111xx1xx2222", 30, "lb2", 50.0, 4),        # a late answer from the old node does not end the outage
    ("111xx1xx2222", 30, None, 20.0, 4),         # ...unless any node counts (restart in place)
    ("1x11xxx222", 40, "lb2", 30.0, 3),          # a failure before the fault is not counted
    ("1111xxxx", 40, "lb2", None, 4),            # never recovered
    ("1111x2x2", 40, "lb2", 10.0, 2),            # failed counts every failure in the window, after recovery too
])
def test_outage_definition(spec: str, fault_ms: float | None, new_node: str | None, outage: float | None,
                           failed: int) -> None:
    o = analyse(timeline(spec), None if fault_ms is None else fault_ms / 1000, new_node)
    assert o.outage_ms == outage
    assert o.failed == failed


def test_nodes_after_lists_changes_in_order() -> None:
    o = analyse(timeline("11xx2211"), 0.0, "lb2")
    assert o.nodes_after == ("lb1", "lb2", "lb1")
    assert o.first_failure == pytest.approx(0.02) and o.recovered_at == pytest.approx(0.04)


def test_unsorted_samples_are_ordered_by_start() -> None:
    samples = timeline("1111xxxx2222")
    o = analyse(list(reversed(samples)), 0.04, "lb2")
    assert o.outage_ms == 40.0


def test_grid_is_fixed() -> None:
    assert [round(grid(5.0, 0.01, k), 6) for k in (0, 1, 100)] == [5.0, 5.01, 6.0]


def test_node_map_parsing() -> None:
    assert parse_node_map(["10.99.0.11=lb1", "10.99.0.12=lb2"]) == NODES
    with pytest.raises(ValueError, match="IP=NAME"):
        parse_node_map(["10.99.0.11"])


# --- the probe loop against a real loopback server -------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    hang = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.hang.is_set():
            self.release.wait(1.0)  # longer than the probe's timeout
        body = PAGE.split(b"\r\n\r\n", 1)[1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the probe gave up on this one (its timeout): expected here

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        _Handler.release.set()
        srv.shutdown()
        _Handler.hang.clear()
        _Handler.release.clear()
        srv.server_close()


def test_probe_keeps_its_grid_while_requests_hang(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    port = server.server_address[1]
    probe = Probe(f"http://127.0.0.1:{port}/", interval=0.01, timeout=0.1, duration=0.6, node_map=NODES)
    timer = threading.Timer(0.2, _Handler.hang.set)
    timer.start()
    try:
        samples = probe.run()
    finally:
        timer.cancel()
    assert len(samples) == 60  # one every 10 ms for 0.6 s, even though requests hang after 0.2 s
    starts = [s.start for s in samples]
    # a hung request holds its thread for 1 s; the next request still starts about 10 ms later
    assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) < 0.15
    assert any(s.ok and s.node == "lb2" and s.server == "ents3" for s in samples[:10])
    late = [s for s in samples if s.start - probe.t0 > 0.3]
    assert late and all(not s.ok and s.error == "timeout" for s in late)
    assert all(s.end - s.start < 0.1 + 0.05 for s in late)  # the timeout is enforced
    out = tmp_path / "p.json"
    out.write_text(json.dumps(probe.to_json()))
    header, back = load(out)
    assert header["interval"] == 0.01 and back == samples


def test_probe_records_refused_connections() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    samples = Probe(f"http://127.0.0.1:{port}/", interval=0.01, timeout=0.1, duration=0.05).run()
    assert samples and all(not x.ok and x.error == "Connection refused" for x in samples)
    with pytest.raises(ValueError, match="http://"):
        Probe("https://10.0.0.1/")


# --- the VIP timeline of `ip -ts monitor address` ---------------------------------------------------

MONITOR = (
    "[2026-11-26T11:42:49.353929] 2: eth0    inet 10.99.0.10/24 scope global secondary eth0\\       valid_lft forever\n"
    "[2026-11-26T11:42:49.400000] 2: eth0    inet 10.99.0.77/24 scope global secondary eth0\\       valid_lft forever\n"
    "[2026-11-26T11:42:49.457130] Deleted 2: eth0    inet 10.99.0.10/24 scope global secondary eth0\\  valid_lft\n"
    "garbage line\n"
)


def test_parse_address_monitor_keeps_the_vip_only() -> None:
    from balancier.testbed.scenarios import parse_address_monitor

    ev = parse_address_monitor(MONITOR, "lb1")
    assert [(node, added) for _, node, added in ev] == [("lb1", True), ("lb1", False)]
    assert ev[1][0] - ev[0][0] == pytest.approx(0.103201, abs=1e-6)


@pytest.mark.parametrize("initial,events,end,expected", [
    ({"lb1": True, "lb2": False}, [(1.0, "lb1", False), (1.2, "lb2", True)], 5.0, 0.0),    # clean hand-over
    ({"lb1": True, "lb2": False}, [(1.0, "lb2", True), (1.25, "lb1", False)], 5.0, 250.0),  # overlap
    ({"lb1": True, "lb2": False}, [(1.0, "lb2", True)], 3.0, 2000.0),                      # never released
    ({"lb1": True, "lb2": False}, [], 3.0, 0.0),                                           # nothing happened
    ({"lb1": True, "lb2": False}, [(1.25, "lb1", False), (1.0, "lb2", True)], 5.0, 250.0),  # any order
])
def test_vip_overlap(initial: dict[str, bool], events: list[tuple[float, str, bool]], end: float,
                     expected: float) -> None:
    from balancier.testbed.scenarios import vip_overlap_ms

    assert vip_overlap_ms(initial, events, end) == expected


def test_vip_overlap_refuses_a_watch_without_a_start() -> None:
    from balancier.testbed.scenarios import vip_overlap_ms

    with pytest.raises(ValueError):
        vip_overlap_ms({"lb1": True, "lb2": True}, [], 3.0)
