"""`show stat` (CSV, typed, JSON), `show info` and `show servers state` over real Backend objects (fake clock)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from test_runtime_api import World, build

from balancier.proxy import stats
from balancier.proxy.stats import ProcessInfo

# Columns 0..76 as HAProxy documents them (spec §14); the order is the contract scripts rely on.
SPEC_COLUMNS = (
    "pxname svname qcur qmax scur smax slim stot bin bout dreq dresp ereq econ eresp wretr wredis status weight "
    "act bck chkfail chkdown lastchg downtime qlimit pid iid sid throttle lbtot tracked type rate rate_lim "
    "rate_max check_status check_code check_duration hrsp_1xx hrsp_2xx hrsp_3xx hrsp_4xx hrsp_5xx hrsp_other "
    "hanafail req_rate req_rate_max req_tot cli_abrt srv_abrt comp_in comp_out comp_byp comp_rsp lastsess "
    "last_chk last_agt qtime ctime rtime ttime agent_status agent_code agent_duration check_desc agent_desc "
    "check_rise check_fall check_health agent_rise agent_fall agent_health addr cookie mode algo"
).split()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build(tmp_path)


def parse_csv(text: str) -> tuple[list[str], list[list[str]]]:
    assert text.startswith("# ")
    rows = list(csv.reader(io.StringIO(text[2:])))
    return rows[0], rows[1:]


# --- CSV ------------------------------------------------------------------------------------------------------

def test_csv_header_and_shape(world: World) -> None:
    header, rows = parse_csv(stats.render_csv(world.view))
    assert header[:77] == SPEC_COLUMNS
    assert header[103] == "-" and header[-1] == ""  # every line ends with a comma, as HAProxy's
    assert all(len(r) == len(header) for r in rows)
    assert [(r[0], r[1], r[32]) for r in rows] == [
        ("fe", "FRONTEND", "0"),
        ("esup-proxy", "ents3", "2"), ("esup-proxy", "ents2", "2"), ("esup-proxy", "ents1", "2"),
        ("esup-proxy", "maint", "2"), ("esup-proxy", "BACKEND", "1"),
        ("st", "FRONTEND", "0"), ("st", "a", "2"), ("st", "BACKEND", "1"),
    ]
    # proxy ids in configuration order starting at 2, server ids by position
    assert [(r[27], r[28]) for r in rows] == [("2", "0"), ("3", "1"), ("3", "2"), ("3", "3"), ("3", "4"),
                                             ("3", "0"), ("4", "0"), ("4", "1"), ("4", "0")]


def test_csv_server_and_backend_fields(world: World) -> None:
    rows = world.csv_rows()
    ents3 = rows[("esup-proxy", "ents3")]
    # a checked server starts UP one step from the edge (health = rise): `UP 1/3` with rise 1, fall 3
    assert ents3["status"] == "UP 1/3"
    assert (ents3["check_rise"], ents3["check_fall"], ents3["check_health"]) == ("1", "3", "1")
    assert ents3["weight"] == "256" and ents3["act"] == "1" and ents3["bck"] == "0"
    assert ents3["addr"] == "127.0.0.1:17101" and ents3["cookie"] == "s3" and ents3["mode"] == "http"
    ents1 = rows[("esup-proxy", "ents1")]
    assert ents1["status"] == "no check" and ents1["check_status"] == "" and ents1["chkfail"] == ""
    assert ents1["slim"] == "5"
    maint = rows[("esup-proxy", "maint")]
    assert (maint["act"], maint["bck"]) == ("0", "1")
    be = rows[("esup-proxy", "BACKEND")]
    assert be["status"] == "UP" and be["algo"] == "roundrobin" and be["cookie"] == "JSESSIONID"
    assert (be["act"], be["bck"]) == ("3", "1")
    assert be["weight"] == str(256 + 128 + 1)
    fe = rows[("fe", "FRONTEND")]
    assert fe["status"] == "OPEN" and fe["slim"] == "1000" and fe["qcur"] == "" and fe["weight"] == ""
    st = rows[("st", "BACKEND")]
    assert st["mode"] == "tcp" and st["algo"] == "static-rr" and st["hrsp_2xx"] == ""


def test_backend_weight_falls_to_backup_group(world: World) -> None:
    for s in ("ents3", "ents2", "ents1"):
        world.run(f"set server esup-proxy/{s} state maint")
    be = world.csv_rows()[("esup-proxy", "BACKEND")]
    assert (be["status"], be["act"], be["bck"], be["weight"]) == ("UP", "0", "1", "1")
    world.run("set server esup-proxy/maint state maint")
    be = world.csv_rows()[("esup-proxy", "BACKEND")]
    assert (be["status"], be["weight"]) == ("DOWN", "0")


def test_counters_flow_into_rows(world: World) -> None:
    s = world.srv("esup-proxy/ents2")
    s.stot, s.bin, s.bout, s.econ, s.served = 11, 1234, 56789, 2, 3
    s.hrsp[2], s.hrsp[5], s.hrsp[0] = 9, 1, 1
    s.check_status, s.check_code, s.check_info, s.check_duration = "L7STS", 503, "Service Unavailable", 4
    row = world.csv_rows()[("esup-proxy", "ents2")]
    assert (row["stot"], row["bin"], row["bout"], row["econ"], row["scur"]) == ("11", "1234", "56789", "2", "3")
    assert (row["hrsp_2xx"], row["hrsp_5xx"], row["hrsp_other"]) == ("9", "1", "1")
    assert (row["check_status"], row["check_code"], row["check_duration"]) == ("L7STS", "503", "4")
    assert (row["last_chk"], row["check_desc"]) == ("Service Unavailable", "Layer7 wrong status")


def test_text_fields_are_quoted_only_when_needed(world: World) -> None:
    s = world.srv("esup-proxy/ents2")
    s.check_status, s.check_info = "L4CON", 'refused, "really"'
    text = stats.render_csv(world.view)
    assert '"refused, ""really"""' in text
    assert ",Layer4 connection problem," in text
    assert world.csv_rows()[("esup-proxy", "ents2")]["last_chk"] == 'refused, "really"'


def test_user_level_hides_addresses_and_cookies(world: World) -> None:
    rows = world.csv_rows("user")
    assert rows[("esup-proxy", "ents3")]["addr"] == "" and rows[("esup-proxy", "ents3")]["cookie"] == ""
    assert rows[("esup-proxy", "BACKEND")]["cookie"] == ""
    assert world.csv_rows("operator")[("esup-proxy", "ents3")]["addr"] == "127.0.0.1:17101"


@pytest.mark.parametrize("args, expected", [
    ("-1 2 -1", [("esup-proxy", "BACKEND"), ("st", "BACKEND")]),
    ("-1 1 -1", [("fe", "FRONTEND"), ("st", "FRONTEND")]),
    ("3 4 -1", [("esup-proxy", "ents3"), ("esup-proxy", "ents2"), ("esup-proxy", "ents1"),
                ("esup-proxy", "maint")]),
    ("3 4 2", [("esup-proxy", "ents2")]),
    ("st -1 -1", [("st", "FRONTEND"), ("st", "a"), ("st", "BACKEND")]),
])
def test_show_stat_filters(world: World, args: str, expected: list[tuple[str, str]]) -> None:
    _h, rows = parse_csv(world.run(f"show stat {args}"))
    assert [(r[0], r[1]) for r in rows if r] == expected


def test_show_stat_up_and_no_maint(world: World) -> None:
    world.run("set server esup-proxy/ents1 state maint")
    world.run("set server esup-proxy/ents2 health down")
    _h, rows = parse_csv(world.run("show stat no-maint"))
    names = [r[1] for r in rows if r and r[0] == "esup-proxy"]
    assert names == ["ents3", "ents2", "maint", "BACKEND"]
    _h, rows = parse_csv(world.run("show stat up"))
    names = [r[1] for r in rows if r and r[0] == "esup-proxy"]
    assert names == ["ents3", "maint", "BACKEND"]


# --- server status text -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("admin, op, health, expected", [
    ("ready", "up", 3, "UP"),          # rise 1 fall 3: full health = 3
    ("ready", "up", 2, "UP 2/3"),      # going down: health-rise+1 / fall
    ("ready", "up", 1, "UP 1/3"),
    ("drain", "up", 3, "DRAIN"),
    ("drain", "up", 2, "DRAIN 2/3"),
    ("ready", "stopping", 3, "NOLB"),
    ("ready", "stopping", 2, "NOLB 2/3"),
    ("ready", "down", 0, "DOWN"),
    ("maint", "up", 3, "MAINT"),
    ("maint", "down", 0, "MAINT"),
    ("drain", "down", 0, "DOWN"),
])
def test_server_status_text(world: World, admin: str, op: str, health: int, expected: str) -> None:
    s = world.srv("esup-proxy/ents3")
    assert s.hstate is not None
    s.admin, s.op, s.hstate.health = admin, op, health  # type: ignore[assignment]
    assert stats.server_status(s) == expected


def test_rising_server_shows_health_over_rise(tmp_path: Path) -> None:
    w = build(tmp_path)
    s = w.srv("esup-proxy/ents2")  # rise 2 fall 3
    assert s.hstate is not None
    s.op, s.hstate.health, s.hstate.up = "down", 1, False
    assert stats.server_status(s) == "DOWN 1/2"


# --- downtime -------------------------------------------------------------------------------------------------

def test_downtime_counts_whole_seconds_as_haproxy(world: World) -> None:
    # HAProxy: down_time += now.tv_sec - last_change, both whole seconds of a clock that starts at the date. The
    # world's wall clock is on a second boundary at clock 1000.0.
    world.clock.advance(0.9)
    world.run("set server esup-proxy/ents2 health down")  # at 1000.9
    world.clock.advance(0.2)
    world.run("set server esup-proxy/ents2 health up")  # at 1001.1: 0.2 s, across a second boundary
    assert world.csv_rows()[("esup-proxy", "ents2")]["downtime"] == "1"
    world.clock.advance(0.1)
    world.run("set server esup-proxy/ents2 health down")  # at 1001.2
    world.clock.advance(0.7)
    world.run("set server esup-proxy/ents2 health up")  # at 1001.9: 0.7 s within one second
    assert world.csv_rows()[("esup-proxy", "ents2")]["downtime"] == "1"
    assert world.csv_rows()[("esup-proxy", "ents2")]["lastchg"] == "0"
    world.clock.advance(0.2)  # 1002.1: lastchg counts the same whole seconds
    assert world.csv_rows()[("esup-proxy", "ents2")]["lastchg"] == "1"


def test_downtime_and_backend_down_count_follow_events(world: World) -> None:
    world.run("set server esup-proxy/ents2 health down")
    world.clock.advance(7)
    assert world.csv_rows()[("esup-proxy", "ents2")]["downtime"] == "7"
    assert world.csv_rows()[("esup-proxy", "ents2")]["lastchg"] == "7"
    world.run("set server esup-proxy/ents2 health up")
    world.clock.advance(5)
    assert world.csv_rows()[("esup-proxy", "ents2")]["downtime"] == "7"
    for s in ("ents3", "ents2", "ents1", "maint"):
        world.run(f"set server esup-proxy/{s} state maint")
    world.clock.advance(3)
    be = world.csv_rows()[("esup-proxy", "BACKEND")]
    assert (be["status"], be["chkdown"], be["downtime"], be["lastchg"]) == ("DOWN", "1", "3", "3")
    world.run("set server esup-proxy/maint state ready")
    world.clock.advance(10)
    be = world.csv_rows()[("esup-proxy", "BACKEND")]
    assert (be["status"], be["chkdown"], be["downtime"]) == ("UP", "1", "3")


# --- typed and JSON -----------------------------------------------------------------------------------------------

_TYPED = re.compile(r"^([FBS])\.(\d+)\.(\d+)\.(\d+)\.([a-z0-9_]+)\.1:([KCMS][NGMLCRaAOD][PS]):(str|u32|u64|s32):(.*)$")


def test_typed_output(world: World) -> None:
    lines = world.run("show stat typed").splitlines()
    assert lines[-1] == ""
    parsed = [_TYPED.match(line) for line in lines[:-1]]
    assert all(parsed), [ln for ln, m in zip(lines, parsed, strict=False) if not m][:3]
    by_key = {(m[1], m[2], m[3], m[5]): (m[6], m[7], m[8]) for m in parsed if m}
    assert by_key[("F", "2", "0", "pxname")] == ("KNS", "str", "fe")
    assert by_key[("S", "3", "1", "status")] == ("SGP", "str", "UP 1/3")
    assert by_key[("S", "3", "1", "act")] == ("SGP", "u32", "1")
    assert by_key[("B", "3", "0", "act")] == ("MGP", "u32", "3")
    assert by_key[("B", "3", "0", "weight")] == ("MaP", "u32", "385")
    assert ("S", "3", "3", "check_status") not in by_key  # empty fields are left out
    for m in parsed:
        assert m is not None and stats.FIELD_NAMES[int(m[4])] == m[5]


def test_json_output(world: World) -> None:
    data = json.loads(world.run("show stat json"))
    assert isinstance(data, list) and len(data) == 9
    fe = data[0]
    assert {f["objType"] for f in fe} == {"Frontend"}
    first = fe[0]
    assert first == {"objType": "Frontend", "proxyId": 2, "id": 0, "field": {"pos": 0, "name": "pxname"},
                     "processNum": 1, "tags": {"origin": "Key", "nature": "Name", "scope": "Service"},
                     "value": {"type": "str", "value": "fe"}}
    srv = {f["field"]["name"]: f for f in data[1]}
    assert srv["svname"]["value"]["value"] == "ents3"
    assert srv["weight"]["value"] == {"type": "u32", "value": 256}
    assert srv["lastsess"]["value"] == {"type": "s32", "value": -1}
    assert srv["weight"]["tags"] == {"origin": "Metric", "nature": "Avg", "scope": "Process"}


# --- show info ------------------------------------------------------------------------------------------------

def test_show_info(tmp_path: Path) -> None:
    info = ProcessInfo(pid=4242, start_time=1_700_000_000.0, uptime=90061.9, version="0.1.0", maxconn=2000,
                       curr_conns=3, cum_conns=40, cum_req=77, extra={"node": "lb1"})
    w = build(tmp_path, info=info)
    text = w.run("show info", "user")
    lines = text.splitlines()
    assert lines[:9] == ["Name: HAProxy", "Version: 0.1.0", "Release_date: ", "Nbthread: 1", "Nbproc: 1",
                         "Process_num: 1", "Pid: 4242", "Uptime: 1d 1h01m01s", "Uptime_sec: 90061"]
    fields = dict(ln.split(": ", 1) for ln in lines if ": " in ln)
    assert (fields["Maxconn"], fields["CurrConns"], fields["CumConns"], fields["CumReq"]) == ("2000", "3", "40", "77")
    assert fields["node"] == "lb1" and fields["Start_time_sec"] == "1700000000"
    typed = w.run("show info typed").splitlines()
    assert typed[0] == "0.Name.1:POS:str:HAProxy" and typed[6] == "6.Pid.1:SGP:u32:4242"
    js = json.loads(w.run("show info json"))
    assert js[7]["field"] == {"pos": 7, "name": "Uptime"} and js[7]["value"]["value"] == "1d 1h01m01s"
    assert w.run("show info float").startswith("show info: unsupported option 'float'")


# --- show servers state ---------------------------------------------------------------------------------------

def test_servers_state_format(world: World) -> None:
    lines = world.run("show servers state").splitlines()
    assert lines[0] == "1"
    assert lines[1] == ("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
                        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
                        "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
                        "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port")
    assert lines[-1] == ""
    data = [ln.split(" ") for ln in lines[2:-1]]
    assert all(len(d) == 25 for d in data)
    assert data[0] == "3 esup-proxy 1 ents3 127.0.0.1 2 0 256 256 0 1 0 1 6 0 0 0 - 17101 - 0 0 - - 0".split()
    assert data[2] == "3 esup-proxy 3 ents1 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 17103 - 0 0 - - 0".split()
    assert [d[1] for d in data] == ["esup-proxy"] * 4 + ["st"]


def test_servers_state_codes_follow_changes(world: World) -> None:
    s3 = world.srv("esup-proxy/ents3")
    s3.check_status = "L7OK"
    world.run("set server esup-proxy/ents2 state drain")
    world.run("set server esup-proxy/ents1 state maint")
    world.run("set server esup-proxy/ents3 weight 64")
    world.clock.advance(38)
    data = {d[3]: d for d in (ln.split() for ln in world.run("show servers state esup-proxy").splitlines()[2:-1])}
    assert set(data) == {"ents3", "ents2", "ents1", "maint"}
    # op_state, admin_state, uweight, iweight, time since change, check status, check result, health, check state
    assert data["ents3"][5:14] == ["2", "0", "64", "256", "38", "15", "3", "1", "6"]
    assert data["ents2"][5:7] == ["2", "8"]
    assert data["ents1"][5:7] == ["0", "1"]
    assert world.run("show servers state nope") == "Can't find backend.\n\n"


def test_servers_state_config_maintenance(tmp_path: Path) -> None:
    text = ("defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
            "backend b\n    server x 127.0.0.1:1 disabled\n    server y 127.0.0.1:2\n"
            "frontend f\n    bind 127.0.0.1:3\n    default_backend b\n")
    w = build(tmp_path, text)
    line = w.run("show servers state b").splitlines()[2].split()
    assert line[5:7] == ["0", "4"]  # stopped, config maintenance
    w.run("set server b/x state ready")
    w.run("set server b/x state maint")
    line = w.run("show servers state b").splitlines()[2].split()
    assert line[5:7] == ["0", "1"]  # forced maintenance
