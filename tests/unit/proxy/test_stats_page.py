"""The stats page: HTML content per proxy, colours by state, Basic auth, suffixes and admin actions (pure)."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_runtime_api import World, build

from balancier.proxy.stats import ProcessInfo
from balancier.proxy.statspage import StatsPage, apply_admin_form, handle_stats_request, prometheus_answer

INFO = ProcessInfo(pid=77, start_time=1_700_000_000.0, uptime=125.0, version="0.1.0", maxconn=2000)


class Tables(HTMLParser):
    """Collects, per proxy table, the rows as (tr class, data-server, [cell texts])."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, str, list[str]]]] = {}
        self.forms: list[dict[str, str]] = []
        self.meta_refresh: str | None = None
        self._table: str | None = None
        self._row: tuple[str, str, list[str]] | None = None
        self._cell: list[str] | None = None
        self.inputs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("data-proxy"):
            self._table = a["data-proxy"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = (a.get("class") or "", a.get("data-server") or "", [])
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "form":
            self.forms.append({k: v or "" for k, v in attrs})
        elif tag == "input":
            self.inputs.append(a)
        elif tag == "meta" and a.get("http-equiv") == "refresh":
            self.meta_refresh = a.get("content")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row[2].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row[2]:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def get(w: World, page: StatsPage, path: str, headers: list[tuple[str, str]] | None = None,
        method: str = "GET", body: bytes = b"", admin_allowed: bool | None = None):  # noqa: ANN201
    ans = handle_stats_request(page, w.view, w.api, INFO, method, path, headers or [], body, admin_allowed)
    assert ans is not None
    assert ("Cache-Control", "no-cache") in ans.headers
    return ans


def parse(body: bytes) -> Tables:
    t = Tables()
    t.feed(body.decode())
    return t


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build(tmp_path)


def test_page_has_one_table_per_proxy_with_servers_and_colours(world: World) -> None:
    world.run("set server esup-proxy/ents2 state drain")
    world.run("set server esup-proxy/ents1 state maint")
    world.run("set server esup-proxy/ents3 health down")
    page = StatsPage(refresh=5)
    ans = get(world, page, "/haproxy?stats")
    assert ans.status == 200 and ("Content-Type", "text/html") in ans.headers
    t = parse(ans.body)
    assert list(t.tables) == ["fe", "esup-proxy", "st"]
    rows = t.tables["esup-proxy"]
    assert [r[2][0] for r in rows] == ["ents3", "ents2", "ents1", "maint", "Backend"]
    classes = {r[1]: r[0] for r in rows if r[1]}
    assert classes == {"ents3": "active_down", "ents2": "active_draining", "ents1": "maintain",
                       "maint": "backup_no_check"}
    status = {r[1]: r[2][21] for r in rows if r[1]}
    assert status["ents3"].startswith("DOWN ") and status["ents2"].startswith("DRAIN")
    assert status["ents1"].startswith("MAINT") and status["maint"] == "no check"
    assert t.tables["fe"][0][2][0] == "Frontend" and t.tables["fe"][0][2][21] == "OPEN"
    assert t.meta_refresh == "5"
    assert b"Statistics Report for pid 77" in ans.body and b"0.1.0" in ans.body


def test_page_options(world: World) -> None:
    world.run("set server esup-proxy/ents1 state maint")
    page = StatsPage(uri="/stats", refresh=5, hide_version=True)
    t = parse(get(world, page, "/stats;up;norefresh").body)
    assert [r[1] for r in t.tables["esup-proxy"] if r[1]] == ["ents3", "ents2", "maint"]
    assert t.meta_refresh is None
    body = get(world, page, "/stats").body
    assert b"0.1.0" not in body and b"pid 77" not in body
    assert handle_stats_request(page, world.view, world.api, INFO, "GET", "/other", []) is None
    assert get(world, page, "/stats", method="DELETE").status == 405


def test_csv_and_json_suffixes(world: World) -> None:
    page = StatsPage()
    ans = get(world, page, "/haproxy?stats;csv")
    assert ("Content-Type", "text/plain") in ans.headers
    rows = list(csv.DictReader(io.StringIO(ans.body.decode()[2:])))
    assert rows[1]["svname"] == "ents3" and rows[1]["addr"] == "127.0.0.1:17101"
    ans = get(world, page, "/haproxy?stats;json")
    assert json.loads(ans.body)[0][0]["value"]["value"] == "fe"


def test_basic_auth(world: World) -> None:
    page = StatsPage(auth=(("admin", "s3cret"), ("ops", "pw")), realm="Portal stats")
    ans = get(world, page, "/haproxy?stats")
    assert ans.status == 401 and ("WWW-Authenticate", 'Basic realm="Portal stats"') in ans.headers
    bad = base64.b64encode(b"admin:nope").decode()
    assert get(world, page, "/haproxy?stats", [("Authorization", f"Basic {bad}")]).status == 401
    assert get(world, page, "/haproxy?stats", [("Authorization", "Basic !!!")]).status == 401
    good = base64.b64encode(b"ops:pw").decode()
    assert get(world, page, "/haproxy?stats", [("authorization", f"Basic {good}")]).status == 200
    assert get(world, page, "/haproxy?stats;csv", [("Authorization", f"Basic {good}")]).status == 200


def test_admin_form_and_post(world: World) -> None:
    page = StatsPage(admin=True)
    t = parse(get(world, page, "/haproxy?stats").body)
    assert len(t.forms) == 2 and all(f["method"] == "post" for f in t.forms)  # esup-proxy and st
    boxes = [i["value"] for i in t.inputs if i.get("name") == "s"]
    assert boxes == ["ents3", "ents2", "ents1", "maint", "a"]
    hidden = [i["value"] for i in t.inputs if i.get("name") == "b"]
    assert hidden == ["#3", "#4"]
    ans = get(world, page, "/haproxy?stats", method="POST", body=b"s=ents2&s=ents1&action=drain&b=%233")
    assert ans.status == 303 and ("Location", "/haproxy?stats;st=DONE") in ans.headers
    assert world.srv("esup-proxy/ents2").admin == "drain" and world.srv("esup-proxy/ents1").admin == "drain"
    banner = get(world, page, "/haproxy?stats;st=DONE").body
    assert b"Action processed successfully." in banner


@pytest.mark.parametrize("body, code", [
    (b"s=ents3&action=maint&b=esup-proxy", "DONE"),
    (b"s=ents3&s=nope&action=maint&b=esup-proxy", "PART"),
    (b"action=maint&b=esup-proxy", "NONE"),
    (b"s=ents3&action=explode&b=esup-proxy", "UNKN"),
    (b"s=ents3&action=maint&b=nope", "ERRP"),
    (b"s=ents3&action=maint", "ERRP"),
    (b"s=nope&action=maint&b=esup-proxy", "ERRP"),
    (b"s=ents3&action=hdown&b=%233", "DONE"),
])
def test_admin_result_codes(world: World, body: bytes, code: str) -> None:
    assert apply_admin_form(world.api, body) == code


def test_admin_post_denied_without_admin(world: World) -> None:
    for page, allowed in ((StatsPage(admin=False), None), (StatsPage(admin=True), False)):
        ans = get(world, page, "/haproxy?stats", method="POST", body=b"s=ents3&action=maint&b=esup-proxy",
                  admin_allowed=allowed)
        assert ("Location", "/haproxy?stats;st=DENY") in ans.headers
        assert world.srv("esup-proxy/ents3").admin == "ready"
    assert parse(get(world, StatsPage(admin=True), "/haproxy?stats", admin_allowed=False).body).forms == []


def test_names_are_escaped() -> None:
    from balancier.proxy.runtime_api import RuntimeApi
    from balancier.proxy.stats import StatsView

    from proxy_builders import FakeClock, make_backend

    clock = FakeClock()
    be = make_backend([("s&1", 1)], name="b<x>", clock=clock)
    view = StatsView([], [be], clock=clock)
    api = RuntimeApi([be], [], lambda: INFO, view=view)
    ans = handle_stats_request(StatsPage(admin=True), view, api, INFO, "GET", "/haproxy?stats", [])
    assert ans is not None
    assert b"b<x>" not in ans.body and b"b&lt;x&gt;" in ans.body and b"s&amp;1" in ans.body
    assert b'value="s&amp;1"' in ans.body


def test_prometheus_answer(world: World) -> None:
    ans = prometheus_answer(world.view, INFO)
    assert ans.status == 200
    assert ("Content-Type", "text/plain; version=0.0.4; charset=utf-8") in ans.headers
    assert b'haproxy_server_status{proxy="esup-proxy",server="ents3",state="UP"} 1\n' in ans.body
