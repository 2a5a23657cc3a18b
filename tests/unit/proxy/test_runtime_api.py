"""The runtime API's commands over real Backend objects built from a parsed configuration (fake clock, no I/O)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from balancier.proxy.checker import transition_message
from balancier.proxy.config import load
from balancier.proxy.runtime import FrontendRt
from balancier.proxy.runtime_api import RuntimeApi, RuntimeHooks, Session, SessionInfo, split_commands
from balancier.proxy.servers import Backend, Server, ServerEvent
from balancier.proxy.stats import ProcessInfo, StatsView

from proxy_builders import FakeClock

SEED_CFG = """\
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend fe
    bind 127.0.0.1:18080
    default_backend esup-proxy

backend esup-proxy
    balance roundrobin
    cookie JSESSIONID prefix
    server ents3 127.0.0.1:17101 weight 256 check inter 2s rise 1 fall 3 cookie s3
    server ents2 127.0.0.1:17102 weight 128 check cookie s2
    server ents1 127.0.0.1:17103 weight 1 maxconn 5 cookie s1
    server maint 127.0.0.1:17104 backup

listen st
    bind 127.0.0.1:18081
    mode tcp
    balance static-rr
    server a 127.0.0.1:17105 weight 10
"""


@dataclass
class World:
    api: RuntimeApi
    view: StatsView
    backends: dict[str, Backend]
    frontends: dict[str, FrontendRt]
    clock: FakeClock
    events: list[ServerEvent]

    def srv(self, path: str) -> Server:
        b, _, s = path.partition("/")
        return self.backends[b].server(s)

    def run(self, line: str, level: str = "admin") -> str:
        return self.api.execute(line, Session(level=level))

    def csv_rows(self, level: str = "admin") -> dict[tuple[str, str], dict[str, str]]:
        text = self.run("show stat", level)
        assert text.startswith("# ")
        reader = csv.DictReader(io.StringIO(text[2:]))
        return {(r["pxname"], r["svname"]): r for r in reader}


def build(tmp_path: Path, cfg_text: str = SEED_CFG, *, hooks: RuntimeHooks | None = None,
          info: ProcessInfo | None = None) -> World:
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg_text)
    config, _warnings = load([str(path)], env={})
    clock = FakeClock()
    backends = {p.name: Backend(p, clock) for p in config.backends}
    frontends = {p.name: FrontendRt(p, 1000, None) for p in config.frontends}
    view = StatsView(list(frontends.values()), list(backends.values()), config.proxies, clock=clock,
                     wall=lambda: 1_700_000_000.0)
    events: list[ServerEvent] = []
    for be in backends.values():
        be.subscribe(events.append)
    pinfo = info or ProcessInfo(pid=4242, start_time=1_700_000_000.0, uptime=3661.0, version="0.1.0")
    api = RuntimeApi(list(backends.values()), list(frontends.values()), lambda: pinfo, "admin",
                     proxies=config.proxies, hooks=hooks, view=view)
    return World(api, view, backends, frontends, clock, events)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build(tmp_path)


# --- tokenizer --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("show stat", [["show", "stat"]]),
    ("  show   stat  \n", [["show", "stat"]]),
    ("get weight b/s;get weight b/t", [["get", "weight", "b/s"], ["get", "weight", "b/t"]]),
    ("a;;b;", [["a"], ["b"]]),
    (r"set x a\;b", [["set", "x", "a;b"]]),
    (r"set x a\ b", [["set", "x", "a b"]]),
    ("a\tb", [["a", "b"]]),
    ("", []),
])
def test_split_commands(line: str, expected: list[list[str]]) -> None:
    assert split_commands(line) == expected


# --- weights ----------------------------------------------------------------------------------------------------

def test_get_weight_reports_current_and_initial(world: World) -> None:
    assert world.run("get weight esup-proxy/ents2") == "128 (initial 128)\n\n"
    assert world.run("get weight esup-proxy/ents2", "user") == "128 (initial 128)\n\n"


@pytest.mark.parametrize("arg, answer, weight", [
    ("64", "\n", 64),
    ("0", "\n", 0),
    ("256", "\n", 256),
    ("50%", "\n", 64),
    ("500%", "\n", 256),
    ("0%", "\n", 0),
    ("300", "Absolute weight can only be between 0 and 256 inclusive.\n\n", 128),
    ("-1", "Absolute weight can only be between 0 and 256 inclusive.\n\n", 128),
    ("-5%", "Relative weight must be positive.\n\n", 128),
    ("abc", "Empty weight string empty or preceded by garbage\n", 128),
    ("12x", "Trailing garbage in weight string\n", 128),
    ("1\u00b2", "Trailing garbage in weight string\n", 128),
    ("+7", "\n", 7),
])
def test_set_weight(world: World, arg: str, answer: str, weight: int) -> None:
    assert world.run(f"set server esup-proxy/ents2 weight {arg}") == answer
    assert world.srv("esup-proxy/ents2").uweight == weight
    assert world.run("get weight esup-proxy/ents2") == f"{weight} (initial 128)\n\n"


def test_set_weight_deprecated_form_and_missing_value(world: World) -> None:
    assert world.run("set weight esup-proxy/ents3 10") == "\n"
    assert world.srv("esup-proxy/ents3").uweight == 10
    assert world.run("set server esup-proxy/ents3 weight") == "Require <weight> or <weight%>.\n\n"


def test_weight_zero_takes_server_out_of_balancing(world: World) -> None:
    s = world.srv("esup-proxy/ents1")
    assert s.usable
    world.run("set server esup-proxy/ents1 weight 0")
    assert not s.usable
    picks = {world.backends["esup-proxy"].pick("10.0.0.1").name for _ in range(50)}  # type: ignore[union-attr]
    assert "ents1" not in picks


def test_static_algorithm_accepts_only_0_and_100_percent(world: World) -> None:
    msg = "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n\n"
    assert world.run("set server st/a weight 5") == msg
    assert world.run("set server st/a weight 0") == "\n"
    assert world.srv("st/a").uweight == 0
    assert world.run("set server st/a weight 100%") == "\n"
    assert world.srv("st/a").uweight == 10


# --- admin state ----------------------------------------------------------------------------------------------

def test_drain_maint_ready(world: World) -> None:
    s = world.srv("esup-proxy/ents2")
    assert world.run("set server esup-proxy/ents2 state drain") == "\n"
    assert s.admin == "drain" and not s.usable
    assert world.csv_rows()[("esup-proxy", "ents2")]["status"].startswith("DRAIN")
    assert world.run("set server esup-proxy/ents2 state maint") == "\n"
    assert s.admin == "maint"
    assert world.csv_rows()[("esup-proxy", "ents2")]["status"] == "MAINT"
    assert world.run("set server esup-proxy/ents2 state ready") == "\n"
    assert s.admin == "ready" and s.usable
    kinds = [(e.what, e.old, e.new) for e in world.events]
    assert kinds == [("admin", "ready", "drain"), ("admin", "drain", "maint"), ("admin", "maint", "ready")]


def test_set_server_state_rejects_unknown_state(world: World) -> None:
    assert world.run("set server esup-proxy/ents2 state up") == (
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n")
    assert world.srv("esup-proxy/ents2").admin == "ready"


def test_enable_disable_server(world: World) -> None:
    s = world.srv("esup-proxy/ents1")
    assert world.run("disable server esup-proxy/ents1") == "\n"
    assert s.admin == "maint"
    msg = transition_message(world.events[-1])
    assert msg is not None and msg[1].startswith("Server esup-proxy/ents1 is going DOWN for maintenance.")
    assert world.run("enable server esup-proxy/ents1") == "\n"
    assert s.admin == "ready"
    # `enable server` lifts maintenance only: a drained server stays drained
    world.run("set server esup-proxy/ents1 state drain")
    world.run("enable server esup-proxy/ents1")
    assert s.admin == "drain"


def test_lookup_errors_and_ids(world: World) -> None:
    assert world.run("set server esup-proxy/nope state maint") == "No such server.\n\n"
    assert world.run("set server nope/ents1 state maint") == "No such backend.\n\n"
    assert world.run("set server esup-proxy state maint") == "Require 'backend/server'.\n\n"
    assert world.run("get weight") == "Require 'backend/server'.\n\n"
    assert world.run("disable server esup-proxy/#2") == "\n"
    assert world.srv("esup-proxy/ents2").admin == "maint"
    assert world.run("get weight #3/#1") == "256 (initial 256)\n\n"
    assert world.run("set server esup-proxy/ents1") == "usage: set server <backend>/<server> health | state | weight\n\n"
    assert "not supported" in world.run("set server esup-proxy/ents1 addr 10.0.0.1")


# --- health ---------------------------------------------------------------------------------------------------

def test_set_server_health_forces_counter_and_logs_from_cli(world: World) -> None:
    s = world.srv("esup-proxy/ents2")
    assert s.hstate is not None
    assert world.run("set server esup-proxy/ents2 health down") == "\n"
    assert s.op == "down" and s.hstate.health == 0 and not s.hstate.up
    lvl_msg = transition_message(world.events[-1])
    assert lvl_msg is not None
    assert lvl_msg[1].startswith("Server esup-proxy/ents2 is DOWN, changed from CLI. 2 active and 1 backup")
    assert world.csv_rows()[("esup-proxy", "ents2")]["status"] == "DOWN"
    world.run("set server esup-proxy/ents2 health up")
    assert s.op == "up" and s.hstate.health == s.hstate.full
    assert world.csv_rows()[("esup-proxy", "ents2")]["status"] == "UP"
    world.run("set server esup-proxy/ents2 health stopping")
    assert s.op == "stopping" and not s.usable
    assert world.csv_rows()[("esup-proxy", "ents2")]["status"] == "NOLB"
    assert world.run("set server esup-proxy/ents2 health sideways") == (
        "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n")


def test_set_health_on_unchecked_server(world: World) -> None:
    s = world.srv("esup-proxy/ents1")
    world.run("set server esup-proxy/ents1 health down")
    assert s.op == "down"
    assert world.csv_rows()[("esup-proxy", "ents1")]["status"] == "DOWN"


def test_enable_disable_health(world: World) -> None:
    assert world.run("enable health esup-proxy/ents1") == (
        "Health check was not configured on this server, cannot enable.\n\n")
    assert world.run("disable health esup-proxy/ents1") == "\n"
    s = world.srv("esup-proxy/ents2")
    answer = world.run("disable health esup-proxy/ents2")
    if "check_enabled" in Server.__slots__:
        assert answer == "\n"
        assert world.csv_rows()[("esup-proxy", "ents2")]["status"] == "no check"
        assert world.run("enable health esup-proxy/ents2") == "\n"
        assert world.csv_rows()[("esup-proxy", "ents2")]["check_status"] != ""
    else:
        # the data plane cannot pause one server's checks yet: the command says so instead of pretending
        assert answer == "Health checks of this server cannot be switched at run time in this build.\n\n"
        assert s.hstate is not None


# --- maxconn ----------------------------------------------------------------------------------------------------

def test_set_maxconn_server(world: World) -> None:
    s = world.srv("esup-proxy/ents1")
    assert world.run("set maxconn server esup-proxy/ents1 12") == "\n"
    assert s.cfg.maxconn == 12
    assert world.csv_rows()[("esup-proxy", "ents1")]["slim"] == "12"
    assert world.run("set maxconn server esup-proxy/ents1 0") == "\n"
    assert world.csv_rows()[("esup-proxy", "ents1")]["slim"] == ""
    assert world.run("set maxconn server esup-proxy/ents1 x") == "maxconn string empty or preceded by garbage\n"
    assert world.run("set maxconn server esup-proxy/ents1 3z") == "Trailing garbage in maxconn string\n"
    assert world.run("set maxconn server esup-proxy/ents1") == "Require <maxconn>.\n\n"
    assert s.cfg.maxconn == 0


def test_raising_maxconn_serves_the_server_queue(world: World) -> None:
    from balancier.proxy import queue as squeue

    be = world.backends["esup-proxy"]
    s = be.server("ents1")
    for _ in range(5):
        be.acquire(s)
    assert s.saturated

    class Waiter:
        got: list[Server] = []

        def dequeued(self, server: Server) -> None:
            self.got.append(server)

    w = Waiter()
    squeue.enqueue(w, world.clock(), be, s)
    world.run("set maxconn server esup-proxy/ents1 6")
    assert w.got == [s] and not s.queue and s.served == 6


# --- sessions ---------------------------------------------------------------------------------------------------

def test_show_sess_and_shutdown_sessions_use_the_runtime_hooks(tmp_path: Path) -> None:
    closed: list[Server] = []
    sessions = [SessionInfo(0x55AA, "tcpv4", "127.0.0.1:54426", "fe", "esup-proxy", "ents3", 4),
                SessionInfo(0x66BB, "tcpv4", "127.0.0.1:54427", "fe", "esup-proxy", None, 0)]

    def shutdown(s: Server) -> int:
        closed.append(s)
        return 1

    w = build(tmp_path, hooks=RuntimeHooks(sessions=lambda: sessions, shutdown_sessions=shutdown))
    out = w.run("show sess", "operator")
    assert out == ("0x55aa: proto=tcpv4 src=127.0.0.1:54426 fe=fe be=esup-proxy srv=ents3 ts=00 epoch=0 age=4s\n"
                   "0x66bb: proto=tcpv4 src=127.0.0.1:54427 fe=fe be=esup-proxy srv=<none> ts=00 epoch=0 age=0s\n"
                   "\n")
    assert w.run("shutdown sessions server esup-proxy/ents3") == "\n"
    assert closed == [w.srv("esup-proxy/ents3")]
    assert w.run("shutdown sessions server esup-proxy/nope") == "No such server.\n\n"


def test_shutdown_sessions_without_runtime_is_an_error(world: World) -> None:
    assert "no running data plane" in world.run("shutdown sessions server esup-proxy/ents3")


# --- counters -------------------------------------------------------------------------------------------------

def test_clear_counters_all(world: World) -> None:
    s = world.srv("esup-proxy/ents3")
    be = world.backends["esup-proxy"]
    fe = world.frontends["fe"]
    s.stot, s.bin, s.hrsp[2] = 7, 1000, 7
    be.stot, be.req_tot = 7, 7
    fe.stot, fe.bout = 9, 4000
    rows = world.csv_rows()
    assert rows[("esup-proxy", "ents3")]["stot"] == "7" and rows[("esup-proxy", "ents3")]["hrsp_2xx"] == "7"
    assert world.run("clear counters all", "operator") == "Permission denied\n\n"
    assert s.stot == 7
    assert world.run("clear counters", "operator") == "\n"
    assert s.stot == 7  # plain `clear counters` keeps the cumulated counters
    assert world.run("clear counters all") == "\n"
    rows = world.csv_rows()
    assert rows[("esup-proxy", "ents3")]["stot"] == "0" and rows[("esup-proxy", "ents3")]["hrsp_2xx"] == "0"
    assert rows[("esup-proxy", "BACKEND")]["req_tot"] == "0"
    assert rows[("fe", "FRONTEND")]["bout"] == "0"


# --- levels -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "set server esup-proxy/ents2 state maint",
    "set server esup-proxy/ents2 weight 1",
    "set weight esup-proxy/ents2 1",
    "set server esup-proxy/ents2 health down",
    "disable server esup-proxy/ents2",
    "enable server esup-proxy/ents2",
    "disable health esup-proxy/ents2",
    "set maxconn server esup-proxy/ents2 1",
    "shutdown sessions server esup-proxy/ents2",
    "clear counters",
    "show sess",
])
def test_user_level_cannot_change_anything(world: World, line: str) -> None:
    before = world.run("show servers state")
    assert world.run(line, "user") == "Permission denied\n\n"
    assert world.run("show servers state") == before
    assert world.events == []


def test_operator_level_reads_but_cannot_change_state(world: World) -> None:
    assert world.run("set server esup-proxy/ents2 state drain", "operator") == "Permission denied\n\n"
    assert world.srv("esup-proxy/ents2").admin == "ready"
    assert world.run("show sess", "operator") == "\n"
    assert world.run("show info", "operator").startswith("Name: HAProxy\n")


def test_lowering_the_session_level(world: World) -> None:
    sess = Session(level="admin")
    assert world.api.execute("user;set server esup-proxy/ents2 state maint", sess) == "\nPermission denied\n\n"
    assert sess.level == "user"
    assert world.api.execute("operator", sess) == "Permission denied\n\n"  # no way back up


def test_user_level_reads(world: World) -> None:
    assert world.run("show stat", "user").startswith("# pxname,svname,")
    assert world.run("show servers state", "user").startswith("1\n# be_id ")
    assert world.run("show info", "user").startswith("Name: HAProxy\n")


# --- help and unknown commands ---------------------------------------------------------------------------------

def test_help_lists_supported_commands_in_haproxy_layout(world: World) -> None:
    out = world.run("help", "user")
    lines = out.splitlines()
    assert lines[0] == "The following commands are valid at this level:"
    assert "  get weight <bk>/<srv>                   : report a server's current weight" in lines
    assert lines[-4:] == ["  help [<command>]                        : list matching or all commands",
                          "  prompt                                  : toggle interactive mode with prompt",
                          "  quit                                    : disconnect",
                          ""]
    for line in lines[1:-1]:
        assert line.startswith("  ") and line[42:44] == ": ", line
    sub = world.run("help get")
    assert "get weight" in sub and "set server" not in sub


def test_unknown_command(world: World) -> None:
    out = world.run("show foo")
    assert out.startswith("Unknown command, but maybe one of the following ones is a better match:\n")
    assert "  show stat " in out and "set server" not in out
    assert world.run("frobnicate").startswith("Unknown command")


def test_empty_line_lists_every_command(world: World) -> None:
    out = world.run("   ", "user")
    assert out.startswith("Unknown command. Please enter one of the following commands only:\n")
    assert "  show stat " in out and "  set server " in out and out.endswith(": disconnect\n\n")


def test_quit_stops_the_line(world: World) -> None:
    sess = Session()
    assert world.api.execute("quit;set server esup-proxy/ents2 state maint", sess) == "\n"
    assert sess.quit
    assert world.srv("esup-proxy/ents2").admin == "ready"


def test_prompt_toggles(world: World) -> None:
    sess = Session()
    assert world.api.execute("prompt", sess) == "\n"
    assert sess.prompt
    world.api.execute("prompt", sess)
    assert not sess.prompt


# --- glue to the running data plane ---------------------------------------------------------------------------

def test_hooks_for_runtime_list_and_close_streams(world: World) -> None:
    from types import SimpleNamespace

    from balancier.proxy.runtime_api import hooks_for_runtime, info_for_runtime

    s3 = world.srv("esup-proxy/ents3")
    route = SimpleNamespace(fe=world.frontends["fe"], be=SimpleNamespace(cfg=world.backends["esup-proxy"].cfg))
    closed: list[object] = []

    class Stream:
        def __init__(self, srv: Server | None, cip: str) -> None:
            self.srv, self.cip, self.cport, self.t_accept, self.route = srv, cip, 40000, 90.0, route

        def hard_close(self) -> None:
            closed.append(self)

    a, b = Stream(s3, "127.0.0.1"), Stream(None, "::1")
    rt = SimpleNamespace(loop=SimpleNamespace(time=lambda: 100.0), streams={a, b}, frontends=[world.frontends["fe"]],
                         maxconn=500, actconn=2, stopping=False)
    hooks = hooks_for_runtime(rt)
    assert hooks.sessions is not None and hooks.shutdown_sessions is not None
    lines = sorted(si.line() for si in hooks.sessions())
    assert any(" proto=tcpv4 src=127.0.0.1:40000 fe=fe be=esup-proxy srv=ents3 " in ln and "age=10s" in ln
               for ln in lines)
    assert any(" proto=tcpv6 src=::1:40000 " in ln and "srv=<none>" in ln for ln in lines)
    assert hooks.shutdown_sessions(s3) == 1 and closed == [a]
    world.frontends["fe"].stot, world.frontends["fe"].req_tot = 5, 8
    info = info_for_runtime(rt, 1_700_000_000.0, 0.0, "0.1.0")()
    assert (info.maxconn, info.curr_conns, info.cum_conns, info.cum_req, info.jobs) == (500, 2, 5, 8, 2)


@pytest.mark.parametrize(
    ("phase", "rstate", "resp_started", "calls"),
    [
        ("CONNECTING", "R_HEAD", False, [("drop", True), ("fail", 502, "K", "C")]),
        ("TURNAROUND", "R_HEAD", False, [("drop", True), ("fail", 502, "K", "C")]),
        ("ACTIVE", "R_HEAD", False, [("drop", True), ("fail", 502, "K", "H")]),
        ("ACTIVE", "R_HEAD", True, [("abort", "K", "D")]),  # only an interim response went out
        ("ACTIVE", "R_BODY", True, [("abort", "K", "D")]),
        ("TUNNEL", "R_HEAD", False, [("abort", "K", "D")]),
    ],
)
def test_kill_stream_ends_http_streams_like_haproxy(phase: str, rstate: str, resp_started: bool,
                                                    calls: list[tuple[object, ...]]) -> None:
    """`shutdown sessions`: 502 + `KC`/`KH` before any response byte went out, else the connection is cut (`KD`)."""
    from balancier.proxy import serverside
    from balancier.proxy.runtime_api import kill_stream

    seen: list[tuple[object, ...]] = []

    class Http:
        def __init__(self) -> None:
            self.phase, self.rstate = getattr(serverside, phase), getattr(serverside, rstate)
            self.resp_started = resp_started

        def _drop_sconn(self, abort: bool) -> None:
            seen.append(("drop", abort))

        def _fail(self, status: int, a: str, b: str) -> None:
            seen.append(("fail", status, a, b))

        def _abort(self, a: str, b: str) -> None:
            seen.append(("abort", a, b))

    kill_stream(Http())
    assert seen == calls


def test_kill_stream_tcp_uses_its_hard_close() -> None:
    from balancier.proxy.runtime_api import kill_stream

    seen: list[str] = []

    class Tcp:
        def hard_close(self) -> None:
            seen.append("hard_close")

    kill_stream(Tcp())
    assert seen == ["hard_close"]
