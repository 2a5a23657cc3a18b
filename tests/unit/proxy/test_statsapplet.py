"""statsapplet: which requests the stats page / exporter take, how much form body they wait for, and the raw
HTTP answer (framing, HEAD, Connection: close, status) built from statspage's answer. Pure: parsed heads in,
bytes out."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from test_runtime_api import build

from balancier.http1 import parse_request_head
from balancier.proxy import statsapplet
from balancier.proxy.config.model import Proxy, StatsConfig
from balancier.proxy.statsapplet import PROMEX, STATS, RouteStats
from balancier.proxy.statspage import MAX_ADMIN_BODY

AUTH = "Basic " + base64.b64encode(b"u:p").decode()


def _rs(tmp_path: Path, *, prom: str | None = "/metrics", admin: bool = True) -> tuple[RouteStats, object]:
    w = build(tmp_path)
    cfg = Proxy("l", "listen", mode="http", stats=StatsConfig(uri="/st", auth=(("u", "p"),), refresh=1500,
                                                              admin=admin), prometheus_path=prom)
    rs = statsapplet.route_stats(cfg, cfg, w.view, w.api, w.api.info_provider)
    assert rs is not None
    return rs, w


def _head(text: str):  # type: ignore[no-untyped-def]
    h = parse_request_head(text.replace("\n", "\r\n").encode() + b"\r\n")
    assert h is not None
    return h


def test_route_without_stats_has_no_state(tmp_path: Path) -> None:
    w = build(tmp_path)
    cfg = Proxy("l", "listen", mode="http")
    assert statsapplet.route_stats(cfg, cfg, w.view, w.api, w.api.info_provider) is None
    tcp = Proxy("t", "listen", mode="tcp", stats=StatsConfig())
    assert statsapplet.route_stats(tcp, tcp, w.view, w.api, w.api.info_provider) is None


def test_page_settings_from_config(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path)
    assert rs.page is not None
    assert (rs.page.uri, rs.page.refresh, rs.page.admin, rs.page.auth) == ("/st", 2, True, (("u", "p"),))


@pytest.mark.parametrize("target, expected", [
    ("/st", STATS), ("/st;csv", STATS), ("/stats", STATS), ("/s", None), ("/", None), ("/metrics", PROMEX),
    ("/metrics?x=1", PROMEX), ("/metrics/x", None), ("/other", None),
])
def test_service(tmp_path: Path, target: str, expected: str | None) -> None:
    rs, _w = _rs(tmp_path)
    assert statsapplet.service(rs, _head(f"GET {target} HTTP/1.1\nHost: x\n")) == expected


def test_not_for_stats_answers_none(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path, prom=None)
    assert statsapplet.answer(rs, _head("GET /metrics HTTP/1.1\nHost: x\n"), ("127.0.0.1", 1), b"") is None


def test_body_needed(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path)
    assert statsapplet.body_needed(rs, _head("POST /st HTTP/1.1\nHost: x\nContent-Length: 30\n")) == 30
    assert statsapplet.body_needed(rs, _head("GET /st HTTP/1.1\nHost: x\n")) == 0
    assert statsapplet.body_needed(rs, _head("POST /x HTTP/1.1\nHost: x\nContent-Length: 30\n")) == 0
    big = _head(f"POST /st HTTP/1.1\nHost: x\nContent-Length: {MAX_ADMIN_BODY + 1}\n")
    assert statsapplet.body_needed(rs, big) == 0


def _split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}, body


def test_401_then_page_with_framing(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path)
    res = statsapplet.serve(rs, _head("GET /st HTTP/1.1\nHost: x\n"), ("127.0.0.1", 1), b"")
    assert res is not None and res.status == 401 and res.service == STATS and res.keep_alive
    status, headers, body = _split(res.raw)
    assert status == "HTTP/1.1 401 Unauthorized"
    assert headers["www-authenticate"] == 'Basic realm="HAProxy Statistics"'
    assert int(headers["content-length"]) == len(body) > 0
    res = statsapplet.serve(rs, _head(f"GET /st HTTP/1.1\nHost: x\nAuthorization: {AUTH}\n"), ("127.0.0.1", 1),
                            b"")
    assert res is not None and res.status == 200
    _s, headers, body = _split(res.raw)
    assert b"<table" in body and int(headers["content-length"]) == len(body)


def test_head_has_no_body_and_http10_closes(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path)
    get = statsapplet.answer(rs, _head(f"GET /st;csv HTTP/1.1\nHost: x\nAuthorization: {AUTH}\n"), ("", 0), b"")
    head = statsapplet.answer(rs, _head(f"HEAD /st;csv HTTP/1.1\nHost: x\nAuthorization: {AUTH}\n"), ("", 0), b"")
    assert get is not None and head is not None
    assert head == get.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    old = statsapplet.serve(rs, _head(f"GET /st;csv HTTP/1.0\nAuthorization: {AUTH}\n"), ("", 0), b"")
    assert old is not None and not old.keep_alive and b"\r\nConnection: close\r\n" in old.raw


def test_admin_post_applies_and_redirects(tmp_path: Path) -> None:
    rs, w = _rs(tmp_path)
    body = b"s=ents2&action=drain&b=esup-proxy"
    head = _head(f"POST /st HTTP/1.1\nHost: x\nAuthorization: {AUTH}\nContent-Length: {len(body)}\n")
    res = statsapplet.serve(rs, head, ("127.0.0.1", 1), body)
    assert res is not None and res.status == 303
    assert _split(res.raw)[1]["location"] == "/st;st=DONE"
    assert w.srv("esup-proxy/ents2").admin == "drain"  # type: ignore[attr-defined]


def test_oversized_form_is_refused_and_closes(tmp_path: Path) -> None:
    rs, w = _rs(tmp_path)
    head = _head(f"POST /st HTTP/1.1\nHost: x\nAuthorization: {AUTH}\nContent-Length: {MAX_ADMIN_BODY + 1}\n")
    res = statsapplet.serve(rs, head, ("127.0.0.1", 1), b"")
    assert res is not None and res.status == 303 and not res.keep_alive
    assert _split(res.raw)[1]["location"] == "/st;st=EXCD"


def test_admin_denied_without_stats_admin(tmp_path: Path) -> None:
    rs, w = _rs(tmp_path, admin=False)
    body = b"s=ents2&action=maint&b=esup-proxy"
    head = _head(f"POST /st HTTP/1.1\nHost: x\nAuthorization: {AUTH}\nContent-Length: {len(body)}\n")
    res = statsapplet.serve(rs, head, ("127.0.0.1", 1), body)
    assert res is not None and _split(res.raw)[1]["location"] == "/st;st=DENY"
    assert w.srv("esup-proxy/ents2").admin != "maint"  # type: ignore[attr-defined]


def test_prometheus(tmp_path: Path) -> None:
    rs, _w = _rs(tmp_path)
    res = statsapplet.serve(rs, _head("GET /metrics HTTP/1.1\nHost: x\n"), ("127.0.0.1", 1), b"")
    assert res is not None and res.status == 200 and res.service == PROMEX
    _s, headers, body = _split(res.raw)
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE haproxy_server_status gauge" in body
    post = statsapplet.serve(rs, _head("POST /metrics HTTP/1.1\nHost: x\nContent-Length: 0\n"), ("", 0), b"")
    assert post is not None and post.status == 405
