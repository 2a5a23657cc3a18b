"""The Prometheus exposition, read back with the reference parser (prometheus_client.parser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_runtime_api import World, build

from balancier.proxy import statspage
from balancier.proxy.stats import ProcessInfo

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is a test dependency")

INFO = ProcessInfo(pid=99, start_time=1_700_000_000.0, uptime=42.0, version="0.1.0", maxconn=2000, curr_conns=2,
                   cum_conns=10, cum_req=25)


def scrape(w: World) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """family name as exposed (with _total) -> {sorted labels: value}; also checks HELP/TYPE pairs."""
    text = statspage.render_prometheus(w.view, INFO)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    families = list(parser.text_string_to_metric_families(text))
    assert families, "nothing parsed"
    for fam in families:
        assert fam.documentation, fam.name
        for sample in fam.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    # one HELP and one TYPE per family, before its samples
    helps = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP ")]
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE ")]
    assert helps == types and len(helps) == len(set(helps))
    return out


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build(tmp_path)


def test_families_use_haproxy_names(world: World) -> None:
    m = scrape(world)
    for name in ("haproxy_process_uptime_seconds", "haproxy_process_current_connections",
                 "haproxy_process_requests_total", "haproxy_frontend_current_sessions",
                 "haproxy_frontend_http_requests_total", "haproxy_backend_active_servers",
                 "haproxy_backend_status", "haproxy_server_status", "haproxy_server_weight",
                 "haproxy_server_check_status", "haproxy_server_http_responses_total"):
        assert name in m, name
    assert m["haproxy_process_uptime_seconds"][()] == 42
    assert m["haproxy_process_requests_total"][()] == 25
    assert m["haproxy_process_build_info"][(("version", "0.1.0"),)] == 1


def test_server_status_is_one_hot(world: World) -> None:
    world.run("set server esup-proxy/ents2 state drain")
    world.run("set server esup-proxy/ents1 state maint")
    world.run("set server esup-proxy/ents3 health stopping")
    world.run("set server st/a health down")
    status = scrape(world)["haproxy_server_status"]
    expected = {"ents3": "NOLB", "ents2": "DRAIN", "ents1": "MAINT", "maint": "UP", "a": "DOWN"}
    for (proxy, server), state in {(("esup-proxy", k) if k != "a" else ("st", k)): v
                                   for k, v in expected.items()}.items():
        values = {lb[2][1]: v for lb, v in status.items() if dict(lb)["server"] == server
                  and dict(lb)["proxy"] == proxy}
        assert set(values) == {"DOWN", "UP", "MAINT", "DRAIN", "NOLB"}
        assert [k for k, v in values.items() if v == 1] == [state], server


def test_backend_gauges(world: World) -> None:
    m = scrape(world)
    key = (("proxy", "esup-proxy"),)
    assert m["haproxy_backend_active_servers"][key] == 3
    assert m["haproxy_backend_backup_servers"][key] == 1
    assert m["haproxy_backend_weight"][key] == 385
    assert m["haproxy_backend_status"][(("proxy", "esup-proxy"), ("state", "UP"))] == 1
    for s in ("ents3", "ents2", "ents1", "maint"):
        world.run(f"set server esup-proxy/{s} state maint")
    m = scrape(world)
    assert m["haproxy_backend_active_servers"][key] == 0
    assert m["haproxy_backend_status"][(("proxy", "esup-proxy"), ("state", "DOWN"))] == 1
    assert m["haproxy_backend_check_up_down_total"][key] == 1


def test_counters_and_http_codes(world: World) -> None:
    s = world.srv("esup-proxy/ents3")
    s.stot, s.hrsp[2], s.hrsp[5] = 12, 10, 2
    fe = world.frontends["fe"]
    fe.req_tot, fe.hrsp[4] = 30, 3
    m = scrape(world)
    srv = (("proxy", "esup-proxy"), ("server", "ents3"))
    assert m["haproxy_server_sessions_total"][srv] == 12
    codes = m["haproxy_server_http_responses_total"]
    assert codes[(("code", "2xx"), *srv)] == 10 and codes[(("code", "5xx"), *srv)] == 2
    assert m["haproxy_frontend_http_requests_total"][(("proxy", "fe"),)] == 30
    assert m["haproxy_frontend_http_responses_total"][(("code", "4xx"), ("proxy", "fe"))] == 3
    # tcp proxies have no HTTP families
    assert (("proxy", "st"),) not in m["haproxy_frontend_http_requests_total"]


def test_check_families_only_for_checked_servers(world: World) -> None:
    s = world.srv("esup-proxy/ents2")
    s.check_status, s.check_code, s.check_duration = "L7OK", 200, 12
    m = scrape(world)
    chk = m["haproxy_server_check_status"]
    ents2 = {dict(lb)["state"]: v for lb, v in chk.items() if dict(lb)["server"] == "ents2"}
    assert ents2["L7OK"] == 1 and sum(ents2.values()) == 1
    assert not any(dict(lb)["server"] == "ents1" for lb in chk)
    assert m["haproxy_server_check_duration_seconds"][(("proxy", "esup-proxy"), ("server", "ents2"))] == 0.012
    assert m["haproxy_server_check_code"][(("proxy", "esup-proxy"), ("server", "ents2"))] == 200


def test_label_values_are_escaped(tmp_path: Path) -> None:
    text = ("defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
            "backend b\n    server x 127.0.0.1:1\n"
            "frontend f\n    bind 127.0.0.1:3\n    default_backend b\n")
    w = build(tmp_path, text)
    raw = statspage.render_prometheus(w.view, INFO)
    assert 'haproxy_server_weight{proxy="b",server="x"} 1\n' in raw
    assert statspage._labels([("proxy", 'a"b\\c\nd')]) == '{proxy="a\\"b\\\\c\\nd"}'
    fam = list(parser.text_string_to_metric_families('# TYPE x gauge\nx' + statspage._labels([("p", 'a"b')]) + " 1\n"))
    assert fam[0].samples[0].labels == {"p": 'a"b'}
