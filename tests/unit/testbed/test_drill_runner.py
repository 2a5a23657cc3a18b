"""The drill's shell: its inputs (cluster file, [drill] table), the command injector, and the runner's
window and verdict driven with an in-memory cluster (the edge: admin API, injector and probe are fakes here;
tests/integration/test_drill*.py run them for real)."""

from __future__ import annotations

import io
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from balancier.cluster.config import ConfigError
from balancier.demo import Demo
from balancier.testbed import drill as dr
from balancier.testbed import drill_plan as dp
from balancier.testbed import drill_runner as rn
from balancier.testbed.probe import Probe, Sample, analyse, session_breaks, set_cookie


def cluster_file(tmp_path: Path, extra: str = "") -> Path:
    demo = Demo(18000, tmp_path)
    key = tmp_path / "authkey"
    key.write_text(f"auth 1\n1 sha256 {secrets.token_hex(16)}\n")
    key.chmod(0o600)
    (tmp_path / "api-users").write_text("admin:admin:t\n")
    (tmp_path / "api-users").chmod(0o600)
    path = tmp_path / "cluster.toml"
    path.write_text(demo.cluster_toml(key, tmp_path / "haproxy.cfg") + extra)
    return path


def test_cluster_file_with_a_drill_table_loads(tmp_path: Path) -> None:
    path = cluster_file(tmp_path, '\n[drill]\nurl = "http://127.0.0.100:18000/"\n'
                                  'crash_proxy = "kill -9 {node}"\n')
    cfg = dr.load_cluster(str(path))
    assert cfg.node_names == ("lb1", "lb2")
    table = dr.load_drill_table(str(path))
    assert table["url"] == "http://127.0.0.100:18000/"
    t = dr.timers_of(cfg)
    assert (t.keepalive_ms, t.deadtime_ms, t.monitor_interval_ms, t.monitor_timeout_ms) == (200, 1000, 2000, 1000)


def test_a_cluster_file_error_is_still_reported(tmp_path: Path) -> None:
    path = cluster_file(tmp_path, '\n[drill]\nurl = "x"\n')
    path.write_text(path.read_text().replace('deadtime = "1s"', 'deadtime = "1ss"'))
    with pytest.raises(ConfigError, match="deadtime"):
        dr.load_cluster(str(path))


def test_moving_resource_needs_one_vip(tmp_path: Path) -> None:
    cfg = dr.load_cluster(str(cluster_file(tmp_path)))
    with pytest.raises(dr.DrillError, match=r"0 virtual IP resources .*\[drill\] resource"):
        dr.moving_resource(cfg)


@pytest.mark.parametrize("text, message", [
    ('[drill]\nkil_node = "x"\n', r"x\.toml:2: drill\.kil_node: unknown key"),
    ('[drill]\nmigrations = "many"\n', r"x\.toml:2: drill\.migrations: expected a whole number"),
    ('[drill]\nadmin = "sock"\n', r"drill\.admin: expected a table"),
    ('[drill]\nkill_node = 3\n', r"drill\.kill_node: expected a string"),
])
def test_drill_table_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(dr.DrillError, match=message):
        dr.load_drill_table(str(path))


def test_command_injector_fills_templates_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "out"
    inj = rn.CommandInjector({"kill_node": f"sh -c 'echo $0 $1 >> {out}' {{node}} {{address}}",
                              "crash_proxy": "false", "migrate": "ignored"}, {"lb1": "10.0.0.1"})
    assert inj.can() == frozenset({"kill_node", "crash_proxy"})
    assert inj.argv("kill_node", "lb1")[-2:] == ["lb1", "10.0.0.1"]
    inj.do("kill_node", "lb1")
    inj.do("kill_node", "lb2")  # no address known: the node's name
    assert out.read_text() == "lb1 10.0.0.1\nlb2 lb2\n"
    with pytest.raises(dr.DrillError, match=r"crash_proxy on lb1: false exited 1"):
        inj.do("crash_proxy", "lb1")
    missing = rn.CommandInjector({"kill_node": "/nonexistent/cmd {node}"}, {})
    with pytest.raises(dr.DrillError, match="kill_node on lb1: /nonexistent/cmd lb1"):
        missing.do("kill_node", "lb1")


def test_selectable_defaults_to_what_the_commands_allow() -> None:
    chosen, left = rn.selectable(frozenset({"crash_proxy"}), None)
    assert chosen == [2, 4]
    assert "scenario 1 (node-dies) left out: no kill_node, restore_node command" in left
    assert rn.selectable(frozenset(), [1]) == ([1], [])


def test_no_confirmation_without_a_terminal() -> None:
    err = io.StringIO()
    assert dr.confirm("run?", False, io.StringIO("y\n"), err) is False
    assert "--yes" in err.getvalue()
    assert dr.confirm("run?", True) is True


def test_session_breaks_judges_only_users_of_other_servers() -> None:
    logins = [{"session": 0, "cookie": "J=s3~a", "server": "ents3"}, {"session": 1, "cookie": "J=s2~b", "server": "ents2"},
              {"session": 2, "cookie": "J=s1~c", "server": "ents1"}, {"session": 3, "cookie": None, "server": None}]
    samples = [Sample(0, 1.0, 1.01, True, 200, "ents3", session=0), Sample(0, 1.0, 1.01, False, error="timeout",
                                                                        session=1),
               Sample(0, 1.0, 1.01, True, 200, "ents3", session=2), Sample(1, 0.5, 0.51, False, session=0)]
    checked, broken = session_breaks(logins, samples, "ents2", since=0.9)
    assert checked == 2 and broken == ["user 2 of ents1: 1/1 requests, first answered by ents3"]
    assert set_cookie(b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=s3~x; Path=/\r\n\r\nbody") == "JSESSIONID=s3~x"
    assert set_cookie(b"HTTP/1.1 200 OK\r\n\r\nSet-Cookie: no") is None


# --------------------------------------------------------------------------- the runner, with an in-memory cluster


class FakeCluster:
    def __init__(self) -> None:
        self.where_ = "lb1"
        self.clients = {"lb1": None, "lb2": None}
        self.group = "esup_proxy"
        self.events: list[tuple[float, str]] = []

    def where(self) -> str | None:
        return self.where_

    def online(self) -> set[str]:
        return {"lb1", "lb2"}

    def migrate(self, node: str) -> None:
        self.events.append((time.monotonic(), f"migrate {node}"))
        self.where_ = node

    def unmigrate(self) -> None:
        self.events.append((time.monotonic(), "unmigrate"))


class FakeProbe:
    """Samples every 10 ms from start to stop; ``lose`` = seconds after each migration that fail."""

    def __init__(self, cluster: FakeCluster, lose: float) -> None:
        self.cluster = cluster
        self.lose = lose
        self.t0 = 0.0

    def start(self) -> FakeProbe:
        self.t0 = time.monotonic()
        return self

    def stop(self) -> tuple[list[Sample], list[dict[str, Any]]]:
        end = time.monotonic()
        moves = [t for t, what in self.cluster.events if what.startswith("migrate")]
        out, k, t = [], 0, self.t0
        while t < end:
            ok = not any(m <= t < m + self.lose for m in moves)
            out.append(Sample(k, t, t + 0.001, ok, 200 if ok else None, "ents3" if ok else None,
                              error=None if ok else "timeout"))
            k, t = k + 1, t + 0.010
        return out, []


@pytest.mark.parametrize("lose, passed", [(0.0, True), (0.03, False)])
def test_runner_measures_from_the_fault(lose: float, passed: bool) -> None:
    cluster = FakeCluster()
    (plan,) = dp.plan([4], dp.Context(("lb1", "lb2"), "esup_proxy", "lb1", dp.Timers(100, 300),
                                      frozenset(), migrations=2))
    out = io.StringIO()
    runner = rn.Runner(cluster, None, lambda name, sessions: FakeProbe(cluster, lose),  # type: ignore[arg-type]
                       lambda: True, 100, out)
    (r,) = runner.run([plan])
    assert [w for _, w in cluster.events] == ["migrate lb2", "migrate lb1", "unmigrate"]
    assert r.passed is passed
    if passed:
        assert r.failed == 0 and r.outage_ms == 0
    else:
        assert r.failed >= 3 and r.errors == {"timeout": r.failed} and r.outage_ms is not None
    assert "migration 2/2: move esup_proxy to lb1" in out.getvalue()


def test_runner_reports_a_cluster_not_in_its_starting_state() -> None:
    cluster = FakeCluster()
    cluster.where_ = "lb2"
    (plan,) = dp.plan([4], dp.Context(("lb1", "lb2"), "esup_proxy", "lb1", dp.Timers(100, 300), frozenset(),
                                      migrations=2))
    runner = rn.Runner(cluster, None, lambda name, sessions: FakeProbe(cluster, 0),  # type: ignore[arg-type]
                       lambda: True, 100, io.StringIO())
    r = runner.run_one(plan, ready_timeout=0.3)
    assert not r.passed and r.error is not None and r.error.startswith("not run: the cluster was not back")
    assert cluster.events == []  # nothing was done to a cluster in an unexpected state


# --------------------------------------------------------------------------- the probe's persistent users


class _Portal(BaseHTTPRequestHandler):
    """Logs users in on "ents3" (cookie JSESSIONID=s3~N); a request with that cookie is answered by ents3, any
    other by ents2, and a cookie of user 1 is refused (503) so that its failures show."""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        cookie = self.headers.get("Cookie", "")
        headers = []
        if self.path.startswith("/login?user="):
            headers.append(("Set-Cookie", f"JSESSIONID=s3~{self.path.rsplit('drill', 1)[-1]}; Path=/"))
            server, status = "ents3", 200
        elif cookie.startswith("JSESSIONID=s3~"):
            server, status = "ents3", 503 if cookie.endswith("~1") else 200
        else:
            server, status = "ents2", 200
        body = f"<h1>Portal served by {server}</h1>".encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_probe_persistent_users_are_recorded_apart() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        probe = Probe(f"http://127.0.0.1:{srv.server_address[1]}/", duration=0.4, sessions=3,
                      session_interval=0.05)
        samples = probe.run()
    finally:
        srv.shutdown()
        srv.server_close()
    assert [(x["session"], x["cookie"], x["server"]) for x in probe.logins] == [
        (i, f"JSESSIONID=s3~{i}", "ents3") for i in range(3)]
    grid = [s for s in samples if s.session is None]
    mine = {i: [s for s in samples if s.session == i] for i in range(3)}
    assert 30 <= len(grid) <= 41 and all(s.ok and s.server == "ents2" for s in grid)
    assert all(len(v) >= 5 for v in mine.values())
    assert all(s.ok and s.server == "ents3" for s in mine[0] + mine[2])
    assert all(not s.ok and s.status == 503 for s in mine[1])
    assert analyse(samples).failed == 0  # the grid's verdict ignores the persistent users
    checked, broken = session_breaks(probe.logins, samples, victim=None)
    assert checked == 3 and len(broken) == 1 and broken[0].startswith("user 1 of ents3:")
