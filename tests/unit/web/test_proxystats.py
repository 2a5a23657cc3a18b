"""The dashboard's reading of the proxy (proxystats.py): which socket, `show stat json` rows, rates, changes,
and the runtime API lines it sends. The contract test parses what the data plane's own runtime API prints."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from balancier.cluster.model import ResourceConfig
from balancier.proxy.config import load
from balancier.proxy.runtime import FrontendRt
from balancier.proxy.runtime_api import RuntimeApi
from balancier.proxy.servers import Backend
from balancier.proxy.stats import ProcessInfo
from balancier.web.proxystats import (
    Sample,
    backend_rates,
    parse_stat_json,
    proxy_targets,
    server_changes,
    server_command,
    state_word,
)

CFG = """\
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend www
    bind 127.0.0.1:18080
    default_backend esup

backend esup
    server ents3 127.0.0.1:17101 weight 256
    server ents2 127.0.0.1:17102 weight 128
    server maintenance 127.0.0.1:17104 backup
"""


@pytest.fixture
def runtime_api(tmp_path: Path) -> tuple[RuntimeApi, list[Backend]]:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CFG)
    config, _ = load([str(cfg)], env={})
    backends = [Backend(p) for p in config.backends]
    frontends = [FrontendRt(p, 1000, None) for p in config.frontends]
    info = ProcessInfo(pid=os.getpid(), start_time=time.time(), uptime=1.0, version="test")
    return RuntimeApi(backends, frontends, lambda: info, proxies=config.proxies), backends


def test_parses_the_data_planes_show_stat_json(runtime_api: tuple[RuntimeApi, list[Backend]]) -> None:
    api, _ = runtime_api
    rows = parse_stat_json(api.execute("show stat json"))
    assert [(r["_type"], r["pxname"], r["svname"]) for r in rows] == [
        ("Frontend", "www", "FRONTEND"), ("Server", "esup", "ents3"), ("Server", "esup", "ents2"),
        ("Server", "esup", "maintenance"), ("Backend", "esup", "BACKEND")]
    servers = {r["svname"]: r for r in rows if r["_type"] == "Server"}
    assert servers["ents2"]["weight"] == 128 and state_word(servers["ents2"]["status"]) == "UP"
    # a drain sent with the line server_command builds shows in the next sample
    assert api.execute(server_command("drain", "esup", "ents2")).strip() == ""
    after = {r["svname"]: r for r in parse_stat_json(api.execute("show stat json")) if r["_type"] == "Server"}
    assert after["ents2"]["status"] == "DRAIN"
    assert api.execute(server_command("weight", "esup", "ents3", "10")).strip() == ""
    assert api.execute("get weight esup/ents3") == "10 (initial 256)\n\n"


@pytest.mark.parametrize("text", ["{}", "[[{\"field\": {}}]]", "not json"])
def test_malformed_answers_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stat_json(text)


def row(kind: str, px: str, sv: str, **fields: Any) -> dict[str, Any]:
    return {"_type": kind, "pxname": px, "svname": sv, **fields}


def test_rates_from_cumulative_counters() -> None:
    a = Sample(10.0, [row("Backend", "esup", "BACKEND", req_tot=100, rtime=12),
                      row("Backend", "tcp", "BACKEND", stot=7)])
    b = Sample(12.0, [row("Backend", "esup", "BACKEND", req_tot=160, rtime=15),
                      row("Backend", "tcp", "BACKEND", stot=9), row("Backend", "new", "BACKEND", req_tot=5)])
    assert backend_rates(None, a) == {"esup": {"rate": None, "rtime": 12.0}, "tcp": {"rate": None, "rtime": None}}
    assert backend_rates(a, b) == {"esup": {"rate": 30.0, "rtime": 15.0}, "tcp": {"rate": 1.0, "rtime": None},
                                   "new": {"rate": None, "rtime": None}}
    restarted = Sample(13.0, [row("Backend", "esup", "BACKEND", req_tot=3)])
    assert backend_rates(b, restarted)["esup"]["rate"] is None  # a counter that went down: new series


def test_server_state_changes_become_sentences() -> None:
    a = Sample(0, [row("Server", "esup", "ents2", status="UP"), row("Server", "esup", "ents3", status="UP 2/3")])
    b = Sample(1, [row("Server", "esup", "ents2", status="DRAIN"), row("Server", "esup", "ents3", status="UP"),
                   row("Server", "esup", "ents9", status="DOWN")])
    assert server_changes(None, b) == []
    assert server_changes(a, b) == ["server esup/ents2 is DRAIN (was UP)"]


@pytest.mark.parametrize(("status", "word"), [("UP", "UP"), ("UP 1/3", "UP"), ("no check", "UP"),
                                              ("DOWN 1/2", "DOWN"), ("MAINT", "MAINT"), ("", "?")])
def test_state_words(status: str, word: str) -> None:
    assert state_word(status) == word


@pytest.mark.parametrize(("args", "line"), [
    (("drain", "esup", "ents2"), "set server esup/ents2 state drain"),
    (("maint", "esup", "ents2"), "set server esup/ents2 state maint"),
    (("ready", "be.x-1", "s:1"), "set server be.x-1/s:1 state ready"),
    (("weight", "esup", "ents2", "0"), "set server esup/ents2 weight 0"),
    (("weight", "esup", "ents2", " 256 "), "set server esup/ents2 weight 256"),
])
def test_server_commands(args: tuple[Any, ...], line: str) -> None:
    assert server_command(*args) == line


@pytest.mark.parametrize(("args", "words"), [
    (("drain", "esup", "ents2;shutdown sessions server esup/ents3"), "invalid server name"),
    (("drain", "es up", "ents2"), "invalid backend name"),
    (("drain", "", "ents2"), "invalid backend name"),
    (("weight", "esup", "ents2", "257"), "0 to 256"),
    (("weight", "esup", "ents2", "-1"), "0 to 256"),
    (("weight", "esup", "ents2", None), "0 to 256"),
    (("delete", "esup", "ents2"), "unknown server operation"),
])
def test_server_commands_refuse_what_could_smuggle_a_command(args: tuple[Any, ...], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        server_command(*args)


def test_proxy_targets_come_from_the_resource_params_and_the_placement() -> None:
    resources = [ResourceConfig("vip", "balancier:vip"),
                 ResourceConfig("p1", "balancier:proxy", params=(("config", "/c"), ("runtime_socket", "/run/a.sock"))),
                 ResourceConfig("p2", "balancier:proxy", params=(("config", "/c"), ("stats_socket", "127.0.0.1:9"))),
                 ResourceConfig("p3", "balancier:proxy", params=(("config", "/c"),))]
    doc = {"resources": [{"members": [{"id": "vip", "node": "lb1", "state": "started"},
                                      {"id": "p1", "node": "lb1", "state": "started"}]},
                         {"members": [{"id": "p2", "node": None, "state": "stopped"}]}]}
    got = [(t.resource, t.node, t.socket, t.state) for t in proxy_targets(resources, doc)]
    assert got == [("p1", "lb1", "/run/a.sock", "started"), ("p2", None, "127.0.0.1:9", "stopped"),
                   ("p3", None, None, "stopped")]


def test_json_rows_keep_typed_values() -> None:
    text = json.dumps([[{"objType": "Server", "field": {"pos": 0, "name": "pxname"}, "value": {"type": "str",
                                                                                             "value": "b"}},
                        {"objType": "Server", "field": {"pos": 18, "name": "weight"},
                         "value": {"type": "u32", "value": 3}}]])
    assert parse_stat_json(text) == [{"_type": "Server", "pxname": "b", "weight": 3}]
