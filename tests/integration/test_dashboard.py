"""The web dashboard in a real browser (headless Chromium via Selenium) against a real 2-node cluster.

Daemons: `balancier cluster run` subprocesses on loopback (cluster_harness.py): group `web` (two ocf:test:Flag
resources, preferring lb1) and `lbproxy`, a real `balancier:proxy` resource: a real proxy process in front of
real backends, with a `stats socket` named by the resource's ``runtime_socket`` parameter, which is where the
dashboard reads `show stat json` and sends `set server` lines.

Asserted: the page (served by lb2, which is not the DC) names the DC, the nodes and where `web` runs; a migrate
with a duration clicked in the page shows the planned transition, moves the group (the agent's state files
say so) and the page shows it within 2 s without a reload, with the migration constraint and its remaining
lifetime; real traffic shows in the requests/s chart; a drain clicked for a server turns it DRAIN in
`show stat` and the proxy stops sending it requests; a read-only user sees no action buttons
and the API refuses their POST with 403; a POST without the CSRF token, with a wrong one, or from another
site is refused with 403 while the same POST with the token works; the page reads without JavaScript and opens
with where each resource runs and how many servers are UP; the event stream redraws the page every second and
the browser fetches nothing from another origin; the response-time chart and the server-state events show; in
a 420 px window nothing scrolls the page sideways. The other actions (unmigrate, standby/online, cleanup,
maint/ready, weight) go through the plain-HTML confirmation page and form, each with its real effect and a
log line naming who asked. Screenshots go to artifacts/dashboard/.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_harness import ADMIN_TOKEN, READ_TOKEN, AdminCluster, resources_toml
from support.backends import BackendFactory, free_port

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported by the skip below
    webdriver = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
                                   reason="needs Debian's chromium and chromium-driver and `pip install selenium`")

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"


PROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend www
    bind 127.0.0.1:{port}
    default_backend esup

backend esup
    balance roundrobin
    server ents3 {b1} weight 256
    server ents2 {b2} weight 128
    server maintenance {b3} backup
"""


def show_stat(path: str) -> dict[str, dict[str, str]]:
    """`show stat` over the proxy's stats socket, as a plain CLI client does it: one line, read to the end."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"show stat\n")
        out = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    return {r["svname"]: r for r in csv.DictReader(io.StringIO(out[2:])) if r.get("pxname")}


class World:
    def __init__(self, cluster: AdminCluster, sock: str, port: int, backends: dict[str, Any]) -> None:
        self.c = cluster
        self.sock = sock
        self.port = port
        self.backends = backends

    def get(self, n: int) -> None:
        """n requests through the proxy (bounded: each has a 5 s timeout)."""
        for _ in range(n):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as resp:
                resp.read()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dash")
    # each node has its own pidfile ({node}): the two nodes share this file system, and a probe on lb2 reading
    # lb1's pidfile would find the proxy "active on lb2" too
    # UNIX socket paths are limited to 108 bytes: the stats socket lives in a short directory of its own
    sockdir = Path(tempfile.mkdtemp(prefix="bdash", dir="/tmp"))
    factory = BackendFactory()
    c: AdminCluster | None = None
    try:
        bes = {n: factory(n) for n in ("ents3", "ents2", "maintenance")}
        port = free_port()
        sock = str(sockdir / "proxy.sock")
        cfg = root / "haproxy.cfg"
        cfg.write_text(PROXY_CFG.format(sock=sock, port=port, b1=bes["ents3"].address, b2=bes["ents2"].address,
                                        b3=bes["maintenance"].address))
        proxy = (f'[[resource]]\nid = "lbproxy"\nagent = "balancier:proxy"\nparams = {{ config = "{cfg}", '
                 f'pidfile = "{root}/lbproxy-{{node}}.pid", runtime_socket = "{sock}" }}\n'
                 'op.monitor = { interval = "2s", timeout = "1500ms" }\n'
                 '[[location]]\nresource = "lbproxy"\nnode = "lb1"\nscore = 100\n')
        c = AdminCluster(root, ["lb1", "lb2"], resources=resources_toml(root / "flags") + proxy)
        # lb2 first: the DC-to-be (lb1) then sends its first heartbeat before its first actions; the other way
        # round lb2 may ignore lb1's first actions ("not the DC") and the transition waits for their timeouts
        for n in reversed(c.names):
            c.start(n)
            time.sleep(0.3)
        c.wait("web and lbproxy started on lb1, transitions done",
               lambda: c.resource("web").get("node") == "lb1" and c.resource("lbproxy").get("node") == "lb1"
               and (c.status("lb2").get("transition") or {}).get("actions") == [], 45)
        # lb2 serves most pages below: its copy of the status must say so too (it follows the DC's by a heartbeat)
        c.wait("lb2 knows where web and lbproxy run",
               lambda: c.resource("web", "lb2").get("node") == "lb1" and c.resource("lbproxy", "lb2").get("node") == "lb1"
               and c.resource("lbproxy", "lb2").get("state") == "started", 10)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield World(c, sock, port, bes)
    finally:
        if c is not None:
            c.stop_all()
        _stop_own_proxies(root)
        factory.stop_all()
        shutil.rmtree(sockdir, ignore_errors=True)


def _stop_own_proxies(root: Path) -> None:
    """Stop any proxy process still running on this test's configuration (a daemon killed before it stopped its
    resources leaves one behind): found by its command line, which names this test's own temporary directory."""
    mine = str(root / "haproxy.cfg").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if mine in (proc / "cmdline").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for pid in pids:
        try:
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _browser(user: str, token: str, width: int = 1280) -> Any:
    opts = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="bdash-chrome-")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--user-data-dir={profile}", f"--window-size={width},1400"):
        opts.add_argument(a)
    assert CHROMIUM is not None
    opts.binary_location = CHROMIUM
    driver: Any = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.profile_dir = profile  # removed by _quit
    # the admin API's HTTP basic credentials, sent with every request of the page (documents, fetch, SSE)
    driver.execute_cdp_cmd("Network.enable", {})
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}})
    return driver


def _quit(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


@pytest.fixture
def admin_browser() -> Iterator[Any]:
    d = _browser("admin", ADMIN_TOKEN)
    try:
        yield d
    finally:
        _quit(d)


def _shot(driver: Any, name: str) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.set_window_size(width, min(max(height + 40, 600), 4000))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _wait(driver: Any, timeout: float, **kw: Any) -> Any:
    """WebDriverWait that tolerates an element replaced under it: the event stream redraws a section whenever
    its HTML changed (rates, sessions, clocks), so an element found a moment ago may be gone."""
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException], **kw)


def _retry(fn: Any, timeout: float = 5.0) -> Any:
    """fn() again while the element it holds was replaced by the next event (a person's click lands on the
    new button at the same place; a driver's reference to the old one goes stale)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _click(driver: Any, css: str) -> None:
    _retry(lambda: driver.find_element(By.CSS_SELECTOR, css).click())


def _live(driver: Any) -> None:
    _wait(driver, 10).until(lambda d: d.find_element(By.ID, "live").text.startswith("live"))


def _auth(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def _request(url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None,
             method: str | None = None) -> tuple[int, str, dict[str, str]]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _page_token(url: str, user: str, token: str) -> tuple[str, str]:
    """(session cookie, CSRF token) as a browser gets them from the page."""
    status, html, headers = _request(f"{url}/dashboard", headers={"Authorization": _auth(user, token)})
    assert status == 200
    cookie = re.search(r"balancier_session=([^;]+)", headers["Set-Cookie"])
    assert cookie is not None and "SameSite=Strict" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    m = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert m is not None
    return cookie[1], m[1]


# --------------------------------------------------------------------------- no browser needed


def test_page_reads_without_javascript(world: World) -> None:
    status, html, headers = _request(f"{world.c.url('lb2')}/dashboard",
                                     headers={"Authorization": _auth("viewer", READ_TOKEN)})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<strong id="dc-name">lb1</strong>' in html
    assert re.search(r'<tr data-node="lb1" data-state="online">.*?DC', html)
    assert '<tr data-node="lb2" data-state="online">' in html
    assert '<tr class="top" data-resource="web" data-node="lb1">' in html
    assert '<tr data-server="esup/ents2" data-state="' in html  # the proxy panel, from the stats socket
    assert "<th scope=\"col\">" in html and "<caption" in html
    # the first lines answer a newcomer: where it runs, how many servers are up
    assert re.search(r'<strong>web</strong> runs on <strong class="where">lb1</strong>', html)
    assert re.search(r'Backend <strong>esup</strong>.*?<strong class="up-count">3 of 3</strong> servers UP', html)
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, _ = _request(f"{world.c.url('lb2')}/dashboard")
    assert status == 401  # the dashboard sits behind the API's authentication


def test_csrf_token_required_and_cross_site_refused(world: World) -> None:
    c = world.c
    url = c.url("lb1")
    auth = _auth("admin", ADMIN_TOKEN)
    cookie, token = _page_token(url, "admin", ADMIN_TOKEN)
    form = {"op": "standby", "node": "lb2"}
    # no token at all, a wrong token, the right token without its session cookie: 403, nothing changes
    for headers, data in (({"Authorization": auth, "Cookie": f"balancier_session={cookie}"}, form),
                          ({"Authorization": auth, "Cookie": f"balancier_session={cookie}"},
                           {**form, "csrf": "0" * 64}),
                          ({"Authorization": auth}, {**form, "csrf": token})):
        status, body, _ = _request(f"{url}/dashboard/do", data, headers)
        assert status == 403, body
        assert "CSRF" in body
    # another user's token does not fit this user
    _, viewer_token = _page_token(url, "viewer", READ_TOKEN)
    status, _, _ = _request(f"{url}/dashboard/plan", {**form, "csrf": viewer_token},
                            {"Authorization": auth, "Cookie": f"balancier_session={cookie}"})
    assert status == 403
    assert c.status("lb1")["nodes"][1]["state"] == "online"
    # a browser request from another site to the JSON API is refused even with valid credentials
    status, body, _ = _request(f"{url}/api/node/lb2/standby", None,
                               {"Authorization": auth, "Origin": "http://evil.example", "Content-Type": "text/plain"},
                               method="POST")
    assert status == 403 and "origin" in body
    assert c.status("lb1")["nodes"][1]["state"] == "online"
    # positive control: the same plan with the token is answered, and the no-JS confirmation page shows it
    status, body, _ = _request(f"{url}/dashboard/plan", {**form, "csrf": token},
                               {"Authorization": auth, "Cookie": f"balancier_session={cookie}"})
    assert status == 200 and '"ok": true' in body and "standby lb2" in body
    status, body, _ = _request(f"{url}/dashboard/confirm", {"op": "migrate", "resource": "web", "node": "lb2",
                                                            "csrf": token},
                               {"Authorization": auth, "Cookie": f"balancier_session={cookie}"})
    assert status == 200 and "<strong>web</strong>: lb1 → lb2" in body and 'action="/dashboard/do"' in body
    assert c.resource("web")["node"] == "lb1"  # a plan changes nothing
    # the no-JavaScript path ends with a redirect to the page; here a harmless change (the weight it has)
    status, body, headers = _request(f"{url}/dashboard/do", {"op": "weight", "backend": "esup",
                                                             "server": "maintenance", "weight": "1", "csrf": token},
                                     {"Authorization": auth, "Cookie": f"balancier_session={cookie}"})
    assert status == 303 and headers["Location"] == "/dashboard", body
    status, body, _ = _request(f"{url}/dashboard/do", {"op": "weight", "backend": "esup", "server": "nope",
                                                       "weight": "1", "csrf": token},
                               {"Authorization": auth, "Cookie": f"balancier_session={cookie}",
                                "Accept": "application/json"})
    assert status == 409 and "No such server" in body  # the proxy's own answer is passed on


@needs_browser
def test_read_only_user_sees_no_actions_and_is_refused(world: World) -> None:
    c = world.c
    d = _browser("viewer", READ_TOKEN)
    try:
        d.get(f"{c.url('lb2')}/dashboard")
        _live(d)
        assert _retry(lambda: d.find_element(By.ID, "dc-name").text) == "lb1"
        assert "read-only" in d.find_element(By.CLASS_NAME, "who").text
        assert d.find_elements(By.CSS_SELECTOR, "form.action") == []
        assert d.find_elements(By.CSS_SELECTOR, "main button") == []
        # the server-sent events replace the sections every second (the body carries the last event's time)
        seen: list[tuple[float, float]] = []
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            v = d.find_element(By.TAG_NAME, "body").get_attribute("data-updated")
            if v and (not seen or float(v) != seen[-1][1]):
                seen.append((time.monotonic(), float(v)))
            time.sleep(0.05)
        assert len(seen) >= 3, seen
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:], strict=False)]
        assert max(gaps) < 1.7, seen
        print(f"\nevent stream: {len(seen)} updates in 3.5 s, gaps {', '.join(f'{g:.2f}' for g in gaps)} s")
        # every resource the page loaded came from the dashboard itself
        origin = c.url("lb2")
        fetched = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched and all(u.startswith(origin + "/") for u in fetched), fetched
        _shot(d, "read-only")
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme",
                                                                        "value": "dark"}]})
        assert d.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(18, 22, 28)"
        _shot(d, "read-only-dark")
    finally:
        _quit(d)
    cookie, token = _page_token(c.url("lb2"), "viewer", READ_TOKEN)
    headers = {"Authorization": _auth("viewer", READ_TOKEN), "Cookie": f"balancier_session={cookie}"}
    status, body, _ = _request(f"{c.url('lb2')}/dashboard/do", {"op": "standby", "node": "lb1", "csrf": token},
                               headers)
    assert status == 403 and "read role" in body
    status, body, _ = _request(f"{c.url('lb2')}/api/resource/web/migrate", {"node": "lb2"}, headers)
    assert status == 403
    assert c.resource("web")["node"] == "lb1" and c.status("lb1")["nodes"][0]["state"] == "online"


# --------------------------------------------------------------------------- the browser acts


def _confirm(d: Any, expect: str) -> str:
    dialog = _wait(d, 10).until(ec.visibility_of_element_located((By.ID, "confirm")))
    _wait(d, 10).until(lambda _: expect in dialog.text)
    ok = d.find_element(By.ID, "confirm-ok")
    _wait(d, 5).until(lambda _: ok.is_enabled())
    text: str = dialog.text
    return text


@needs_browser
def test_drain_clicked_changes_show_stat(world: World, admin_browser: Any) -> None:
    d = admin_browser
    c = world.c
    assert show_stat(world.sock)["ents2"]["status"] != "DRAIN"
    d.get(f"{c.url('lb2')}/dashboard")
    _live(d)
    world.get(30)  # real traffic through the proxy: the chart of requests/s shows it within two samples
    _wait(d, 5).until(lambda _: re.search(r"peak [1-9]", d.find_element(By.ID, "charts").text))
    _click(d, 'tr[data-server="esup/ents2"] form[data-op="drain"] button')
    text = _confirm(d, "set server esup/ents2 state drain")
    assert "ents2" in text and "DRAIN" in text and world.sock in text
    _shot(d, "drain-confirm")
    d.find_element(By.ID, "confirm-ok").click()
    deadline = time.monotonic() + 5
    while show_stat(world.sock)["ents2"]["status"] != "DRAIN":
        assert time.monotonic() < deadline, "ents2 never became DRAIN in show stat"
        time.sleep(0.1)
    _wait(d, 3).until(lambda _: d.find_element(
        By.CSS_SELECTOR, 'tr[data-server="esup/ents2"]').get_attribute("data-state") == "DRAIN")
    assert "admin via dashboard asks: set server esup/ents2 to DRAIN" in (c.root / "lb2.log").read_text()
    _wait(d, 3).until(lambda _: "server esup/ents2 is DRAIN (was UP)" in d.find_element(
        By.ID, "sec-timeline").text)
    assert "2 of 3 servers UP" in d.find_element(By.ID, "sec-summary").text
    assert d.find_elements(By.CSS_SELECTOR, "#chart-rtime polyline")  # the response-time chart is drawn
    assert re.search(r"esup: \d+(\.\d+)? ms", d.find_element(By.ID, "charts").text)
    world.backends["ents2"].clear()
    world.get(10)
    assert world.backends["ents2"].requests() == []  # the real proxy sends a drained server no new traffic
    _shot(d, "drain-done")
    # back to ready through the page as well, so later tests see the proxy as it was
    _click(d, 'tr[data-server="esup/ents2"] form[data-op="ready"] button')
    _confirm(d, "state ready")
    d.find_element(By.ID, "confirm-ok").click()
    _wait(d, 5).until(lambda _: show_stat(world.sock)["ents2"]["status"] != "DRAIN")


@needs_browser
def test_migrate_with_duration_moves_the_group_and_the_page_follows(world: World, admin_browser: Any) -> None:
    d = admin_browser
    c = world.c
    d.get(f"{c.url('lb2')}/dashboard")  # lb2 is not the DC: the change is forwarded to lb1
    _live(d)
    assert _retry(lambda: d.find_element(By.ID, "dc-name").text) == "lb1"
    assert _retry(lambda: [r.get_attribute("data-state") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-node]")
                           if r.tag_name == "tr" and r.get_attribute("data-state")]) == ["online", "online"]
    assert _retry(lambda: d.find_element(By.CSS_SELECTOR, 'tr.top[data-resource="web"]').get_attribute(
        "data-node")) == "lb1"
    _shot(d, "overview")
    d.execute_script("window.__sameDocument = 42")

    def fill() -> None:  # once the select changed, the section is held while the form is filled in
        form = d.find_element(By.CSS_SELECTOR, 'tr.top[data-resource="web"] form.migrate')
        Select(form.find_element(By.NAME, "node")).select_by_value("lb2")
        form.find_element(By.NAME, "lifetime").clear()
        form.find_element(By.NAME, "lifetime").send_keys("PT5M")
        form.find_element(By.CSS_SELECTOR, "button").click()
    _retry(fill)
    text = _confirm(d, "lb1 → lb2")
    assert "migrate web to lb2 (lifetime PT5M)" in text
    assert "stop" in text and "start" in text  # the policy engine's actions are listed
    _shot(d, "migrate-confirm")
    d.find_element(By.ID, "confirm-ok").click()
    moved = c.wait("web running on lb2", lambda: c.resource("web", "lb2").get("node") == "lb2" and
                   {("lb2", "ip"), ("lb2", "app")} <= c.running(), 20, step=0.05)
    assert moved
    t_moved = time.monotonic()
    try:
        _wait(d, 2.0, poll_frequency=0.05).until(lambda _: d.find_element(
            By.CSS_SELECTOR, 'tr.top[data-resource="web"]').get_attribute("data-node") == "lb2")
    except TimeoutException:
        pytest.fail("the page did not show web on lb2 within 2 s of the move")
    shown = time.monotonic() - t_moved
    assert shown <= 2.0
    print(f"\nweb moved (agent state files) -> page shows lb2: {shown * 1000:.0f} ms, same document")
    assert d.execute_script("return window.__sameDocument") == 42  # no reload
    constraint = _retry(lambda: d.find_element(By.CSS_SELECTOR, 'tr[data-constraint="cli-prefer-web"]').text)
    assert "lb2" in constraint and re.search(r"\b[45] min \d\d s left", constraint), constraint
    assert not ({("lb1", "ip"), ("lb1", "app")} & c.running())
    _wait(d, 5).until(lambda _: "migrate web to lb2" in d.find_element(By.ID, "sec-timeline").text)
    assert "by admin via dashboard" in d.find_element(By.ID, "sec-timeline").text
    # the transition after the move ("keeping web on lb2") does not erase why web moved
    _wait(d, 5).until(lambda _: "keeping web on lb2" in d.find_element(By.ID, "sec-timeline").text)
    assert "moving web to lb2" in d.find_element(By.ID, "sec-timeline").text
    assert "migrate web to lb2 (lifetime PT5M) by admin via dashboard@lb2" in (c.root / "lb1.log").read_text()
    _shot(d, "after-migrate")
    d.set_window_size(420, 900)
    _wait(d, 3).until(lambda _: d.execute_script("return window.innerWidth") <= 420)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    for sel in ('tr[data-node="lb1"] .st', "#sec-summary li"):
        box = _retry(lambda sel=sel: d.find_element(By.CSS_SELECTOR, sel).rect)
        assert box["x"] >= 0 and box["x"] + box["width"] <= 420, (sel, box)
    _shot(d, "narrow")



# --------------------------------------------------------------------------- the other actions, without JavaScript


def _form_post(url: str, path: str, fields: dict[str, str], session: tuple[str, str]) -> tuple[int, str, dict[str, str]]:
    cookie, token = session
    return _request(f"{url}{path}", {**fields, "csrf": token},
                    {"Authorization": _auth("admin", ADMIN_TOKEN), "Cookie": f"balancier_session={cookie}"})


def _act(url: str, fields: dict[str, str], session: tuple[str, str], expect: str) -> None:
    """What a browser without JavaScript does: the confirmation page shows the plan, its form makes the change."""
    status, body, _ = _form_post(url, "/dashboard/confirm", fields, session)
    assert status == 200 and expect in body and 'action="/dashboard/do"' in body, body
    status, body, headers = _form_post(url, "/dashboard/do", fields, session)
    assert status == 303 and headers["Location"] == "/dashboard", body


def test_every_other_action_without_javascript(world: World) -> None:
    """standby/online, migrate/unmigrate, cleanup, maint/ready and weight through the page's plain forms (on lb2,
    which forwards cluster changes to the DC), each with its real effect and a log line naming who asked."""
    c = world.c
    url = c.url("lb2")
    session = _page_token(url, "admin", ADMIN_TOKEN)

    def node_state(name: str) -> str:
        return str(next(n["state"] for n in c.status("lb1")["nodes"] if n["name"] == name))

    if c.resource("web").get("node") != "lb2":  # alone, this test makes the migration the browser test makes
        _act(url, {"op": "migrate", "resource": "web", "node": "lb2", "lifetime": "PT5M"}, session, "lb1 → lb2")
        c.wait("web on lb2", lambda: c.resource("web").get("node") == "lb2", 20)
    _act(url, {"op": "unmigrate", "resource": "web"}, session, "<strong>web</strong>: lb2 → lb1")
    c.wait("web back on lb1 (its preference) after unmigrate", lambda: c.resource("web").get("node") == "lb1"
           and {("lb1", "ip"), ("lb1", "app")} <= c.running(), 20)
    status, html, _ = _request(f"{url}/dashboard", headers={"Authorization": _auth("viewer", READ_TOKEN)})
    assert status == 200 and "cli-prefer-web" not in html

    _act(url, {"op": "standby", "node": "lb2"}, session, "standby lb2")
    c.wait("lb2 on standby", lambda: node_state("lb2") == "standby")
    # online through the DC's own dashboard: the change shows once in its timeline (the DC's own event)
    _act(c.url("lb1"), {"op": "online", "node": "lb2"}, _page_token(c.url("lb1"), "admin", ADMIN_TOKEN), "online lb2")
    c.wait("lb2 online again", lambda: node_state("lb2") == "online")
    status, body, _ = _request(f"{c.url('lb1')}/dashboard/state.json",
                               headers={"Authorization": _auth("viewer", READ_TOKEN)})
    sentences = [i["sentence"] for i in json.loads(body)["timeline"]]
    assert status == 200 and len([t for t in sentences if t.startswith("online lb2 by admin via dashboard")]) == 1, \
        sentences

    # cleanup forgets lbproxy's operation history: the cluster probes it again and finds it running, untouched
    pid = (c.root / "lbproxy-lb1.pid").read_text().split()
    _act(url, {"op": "cleanup", "resource": "lbproxy"}, session, "cleanup lbproxy")
    c.wait("lbproxy probed again and found on lb1", lambda: c.resource("lbproxy", "lb2").get("node") == "lb1"
           and c.resource("lbproxy", "lb2").get("state") == "started", 15)
    assert (c.root / "lbproxy-lb1.pid").read_text().split() == pid

    _act(url, {"op": "maint", "resource": "lbproxy", "backend": "esup", "server": "ents3"}, session,
         "set server esup/ents3 state maint")
    assert show_stat(world.sock)["ents3"]["status"] == "MAINT"
    _act(url, {"op": "ready", "resource": "lbproxy", "backend": "esup", "server": "ents3"}, session, "state ready")
    assert show_stat(world.sock)["ents3"]["status"] != "MAINT"
    _act(url, {"op": "weight", "resource": "lbproxy", "backend": "esup", "server": "ents2", "weight": "64"}, session,
         "set server esup/ents2 weight 64")
    assert show_stat(world.sock)["ents2"]["weight"] == "64"
    _act(url, {"op": "weight", "resource": "lbproxy", "backend": "esup", "server": "ents2", "weight": "128"},
         session, "weight 128")
    assert show_stat(world.sock)["ents2"]["weight"] == "128"

    logs = (c.root / "lb2.log").read_text()
    for line in ("admin via dashboard asks: unmigrate web", "admin via dashboard asks: standby lb2",
                 "admin via dashboard asks: cleanup lbproxy",
                 "admin via dashboard asks: set server esup/ents3 to MAINT",
                 "admin via dashboard asks: set the weight of server esup/ents2 to 64"):
        assert line in logs, line
    dc_log = (c.root / "lb1.log").read_text()
    assert "standby lb2 by admin via dashboard@lb2" in dc_log  # the DC applied it and says who asked
    assert "admin via dashboard asks: online lb2" in dc_log
