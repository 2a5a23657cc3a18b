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
site is refused with 403 while the same POST with the token works; the page reads without JavaScript.
Screenshots go to artifacts/dashboard/.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancier.cluster import api as cluster_api

from cluster_harness import ADMIN_TOKEN, READ_TOKEN, AdminCluster, resources_toml
from support.backends import BackendFactory, free_port

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
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
WIRED = "balancier.web" in Path(cluster_api.__file__).read_text()

# Until api.py calls balancier.web.dashboard.register itself, the daemons run with it added to the app
# api.py builds (exactly the one line the integrator adds); once wired, this is the plain command.
WRAP = """
import sys
from balancier.cluster import api
from balancier.web import dashboard
_app = api.AdminApi._app
def _with_dashboard(self, local):
    app = _app(self, local)
    dashboard.register(app, self, local=local)
    return app
api.AdminApi._app = _with_dashboard
from balancier.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

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


class DashCluster(AdminCluster):
    def start(self, name: str) -> None:
        if WIRED:
            return super().start(name)
        cmd = [sys.executable, "-c", WRAP, "cluster", "run", "-c", str(self.root / f"{name}.toml"),
               "--node", name, "--state-dir", str(self.state_dir(name))]
        env = dict(os.environ, OCF_ROOT=str(self.ocf_root))
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env)


def show_stat(path: str) -> dict[str, dict[str, str]]:
    """`show stat` over the proxy's stats socket, as a plain CLI client does it: one line, read to the end."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"show stat\n")
        out = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    return {r["svname"]: r for r in csv.DictReader(io.StringIO(out[2:])) if r.get("pxname")}


class World:
    def __init__(self, cluster: DashCluster, sock: str, port: int, backends: dict[str, Any]) -> None:
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
    # UNIX socket paths are limited to 108 bytes: the stats socket lives in a short directory of its own
    sockdir = Path(tempfile.mkdtemp(prefix="bdash", dir="/tmp"))
    factory = BackendFactory()
    c: DashCluster | None = None
    try:
        bes = {n: factory(n) for n in ("ents3", "ents2", "maintenance")}
        port = free_port()
        sock = str(sockdir / "proxy.sock")
        cfg = root / "haproxy.cfg"
        cfg.write_text(PROXY_CFG.format(sock=sock, port=port, b1=bes["ents3"].address, b2=bes["ents2"].address,
                                        b3=bes["maintenance"].address))
        proxy = (f'[[resource]]\nid = "lbproxy"\nagent = "balancier:proxy"\nparams = {{ config = "{cfg}", '
                 f'pidfile = "{root}/lbproxy.pid", runtime_socket = "{sock}" }}\n'
                 'op.monitor = { interval = "2s", timeout = "1500ms" }\n'
                 '[[location]]\nresource = "lbproxy"\nnode = "lb1"\nscore = 100\n')
        c = DashCluster(root, ["lb1", "lb2"], resources=resources_toml(root / "flags") + proxy)
        # lb2 first: the DC-to-be (lb1) then sends its first heartbeat before its first actions; the other way
        # round lb2 may ignore lb1's first actions ("not the DC") and the transition waits for their timeouts
        for n in reversed(c.names):
            c.start(n)
            time.sleep(0.3)
        c.wait("web and lbproxy started on lb1, transitions done",
               lambda: c.resource("web").get("node") == "lb1" and c.resource("lbproxy").get("node") == "lb1"
               and (c.status("lb2").get("transition") or {}).get("actions") == [], 45)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield World(c, sock, port, bes)
    finally:
        if c is not None:
            c.stop_all()
        factory.stop_all()
        shutil.rmtree(sockdir, ignore_errors=True)


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


def _live(driver: Any) -> None:
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "live").text.startswith("live"))


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
        assert d.find_element(By.ID, "dc-name").text == "lb1"
        assert "read-only" in d.find_element(By.CLASS_NAME, "who").text
        assert d.find_elements(By.CSS_SELECTOR, "form.action") == []
        assert d.find_elements(By.CSS_SELECTOR, "main button") == []
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
    dialog = WebDriverWait(d, 10).until(ec.visibility_of_element_located((By.ID, "confirm")))
    WebDriverWait(d, 10).until(lambda _: expect in dialog.text)
    ok = d.find_element(By.ID, "confirm-ok")
    WebDriverWait(d, 5).until(lambda _: ok.is_enabled())
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
    WebDriverWait(d, 5).until(lambda _: re.search(r"peak [1-9]", d.find_element(By.ID, "charts").text))
    row = d.find_element(By.CSS_SELECTOR, 'tr[data-server="esup/ents2"]')
    row.find_element(By.CSS_SELECTOR, 'form[data-op="drain"] button').click()
    text = _confirm(d, "set server esup/ents2 state drain")
    assert "ents2" in text and "DRAIN" in text and world.sock in text
    _shot(d, "drain-confirm")
    d.find_element(By.ID, "confirm-ok").click()
    deadline = time.monotonic() + 5
    while show_stat(world.sock)["ents2"]["status"] != "DRAIN":
        assert time.monotonic() < deadline, "ents2 never became DRAIN in show stat"
        time.sleep(0.1)
    WebDriverWait(d, 3).until(lambda _: d.find_element(
        By.CSS_SELECTOR, 'tr[data-server="esup/ents2"]').get_attribute("data-state") == "DRAIN")
    assert "admin via dashboard asks: set server esup/ents2 to DRAIN" in (c.root / "lb2.log").read_text()
    world.backends["ents2"].clear()
    world.get(10)
    assert world.backends["ents2"].requests() == []  # the real proxy sends a drained server no new traffic
    _shot(d, "drain-done")
    # back to ready through the page as well, so later tests see the proxy as it was
    d.find_element(By.CSS_SELECTOR, 'tr[data-server="esup/ents2"] form[data-op="ready"] button').click()
    _confirm(d, "state ready")
    d.find_element(By.ID, "confirm-ok").click()
    WebDriverWait(d, 5).until(lambda _: show_stat(world.sock)["ents2"]["status"] != "DRAIN")


@needs_browser
def test_migrate_with_duration_moves_the_group_and_the_page_follows(world: World, admin_browser: Any) -> None:
    d = admin_browser
    c = world.c
    d.get(f"{c.url('lb2')}/dashboard")  # lb2 is not the DC: the change is forwarded to lb1
    _live(d)
    assert d.find_element(By.ID, "dc-name").text == "lb1"
    assert [r.get_attribute("data-state") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-node]")
            if r.tag_name == "tr" and r.get_attribute("data-state")] == ["online", "online"]
    top = d.find_element(By.CSS_SELECTOR, 'tr.top[data-resource="web"]')
    assert top.get_attribute("data-node") == "lb1"
    _shot(d, "overview")
    d.execute_script("window.__sameDocument = 42")
    form = top.find_element(By.CSS_SELECTOR, "form.migrate")
    Select(form.find_element(By.NAME, "node")).select_by_value("lb2")
    form.find_element(By.NAME, "lifetime").send_keys("PT5M")
    form.find_element(By.CSS_SELECTOR, "button").click()
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
        WebDriverWait(d, 2.0, poll_frequency=0.05).until(lambda _: d.find_element(
            By.CSS_SELECTOR, 'tr.top[data-resource="web"]').get_attribute("data-node") == "lb2")
    except TimeoutException:
        pytest.fail("the page did not show web on lb2 within 2 s of the move")
    assert time.monotonic() - t_moved <= 2.0
    assert d.execute_script("return window.__sameDocument") == 42  # no reload
    constraint = d.find_element(By.CSS_SELECTOR, 'tr[data-constraint="cli-prefer-web"]')
    assert "lb2" in constraint.text and re.search(r"\b[45] min \d\d s left", constraint.text), constraint.text
    assert not ({("lb1", "ip"), ("lb1", "app")} & c.running())
    WebDriverWait(d, 5).until(lambda _: "migrate web to lb2" in d.find_element(By.ID, "sec-timeline").text)
    assert "by admin via dashboard" in d.find_element(By.ID, "sec-timeline").text
    assert "migrate web to lb2 (lifetime PT5M) by admin via dashboard@lb2" in (c.root / "lb1.log").read_text()
    _shot(d, "after-migrate")
    d.set_window_size(420, 900)
    _shot(d, "narrow")

