"""The stats page and the Prometheus exporter served by a running proxy (spec haproxy.md §14), with real clients:
headless Chromium (Selenium) for the HTML page and its admin form, curl and raw sockets for the rest, the runtime
API over the stats socket (socat) to check what an admin action changed.

Farm: the reference deployment's shape (256/128/1 + backup) on loopback portal backends, plus `stats enable`,
`stats auth`, `stats admin if TRUE` and `http-request use-service prometheus-exporter if { path /metrics }`.
A screenshot of the page goes to artifacts/stats/.
"""

from __future__ import annotations

import base64
import csv
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.backends import Backend, BackendFactory, free_port
from support.http import RawConnection, build_request, curl
from support.proxy import ProxyFactory
from support.syslog import SyslogReceiver, parse_httplog, parse_syslog

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported by the skip below
    webdriver = None  # type: ignore[assignment]

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - reported by the skip below
    text_string_to_metric_families = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
                                   reason="needs Debian's chromium and chromium-driver and `pip install selenium`")
needs_prometheus = pytest.mark.skipif(text_string_to_metric_families is None,
                                      reason="needs `pip install prometheus_client` (the reference parser)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "stats"

USER, PASSWORD = "admin", "s3cret"
URI = "/haproxy?stats"
FARM = (("ents3", 256), ("ents2", 128), ("ents1", 1))


def _config(backends: dict[str, Backend], port: int, sock: str, syslog: SyslogReceiver) -> str:
    servers = "".join(f"    server {n} {backends[n].address} weight {w} check inter 500\n" for n, w in FARM)
    return f"""global
    stats socket {sock} level admin
defaults
    mode http
    log {syslog.address} local3
    option httplog
    timeout connect 1s
    timeout client 10s
    timeout server 10s
listen esup-proxy
    bind 127.0.0.1:{port}
    balance roundrobin
    option httpchk
    stats enable
    stats uri {URI}
    stats realm Portal\\ statistics
    stats auth {USER}:{PASSWORD}
    stats refresh 30s
    stats admin if TRUE
    http-request use-service prometheus-exporter if {{ path /metrics }}
{servers}    server ent-maintenance {backends['ent-maintenance'].address} check inter 500 backup
"""


@pytest.fixture
def farm(proxy_factory: ProxyFactory, backend_factory: BackendFactory, syslog_receiver: SyslogReceiver,
         tmp_path: Path) -> Any:
    backends = {n: backend_factory(n) for n in ("ents3", "ents2", "ents1", "ent-maintenance")}
    port = free_port()
    sock = str(tmp_path / "admin.sock")
    proxy_factory(_config(backends, port, sock, syslog_receiver))
    # some traffic, so the counters have something to show
    for _ in range(10):
        with RawConnection("127.0.0.1", port) as c:
            assert c.request(build_request("GET", "/", headers=[("Connection", "close")])).status == 200
    # each worker publishes its counters within 10 ms of a change (workers.py): wait for the sum, bounded
    deadline = time.monotonic() + 5.0
    while sum(int(_show_stat(sock)[n]["stot"]) for n in ("ents3", "ents2", "ents1")) < 10:
        assert time.monotonic() < deadline, "the workers' counters never added up to the 10 requests"
        time.sleep(0.05)
    return port, sock, backends, syslog_receiver


def _cli(sock: str, command: str) -> str:
    p = subprocess.run(["socat", "-t", "2", "-", f"UNIX-CONNECT:{sock}"], input=command + "\n", text=True,
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _show_stat(sock: str) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(_cli(sock, "show stat").lstrip("# "))))
    return {r["svname"]: r for r in rows if r.get("svname")}


def _auth() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _browser() -> Any:
    opts = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="bstats-chrome-")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
              f"--user-data-dir={profile}", "--window-size=1600,1200"):
        opts.add_argument(a)
    assert CHROMIUM is not None
    opts.binary_location = CHROMIUM
    driver: Any = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.profile_dir = profile
    # Basic credentials on every request of the page (the document, the form's POST, the redirect)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": _auth()}})
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    d = _browser()
    try:
        yield d
    finally:
        try:
            d.quit()
        finally:
            shutil.rmtree(d.profile_dir, ignore_errors=True)


def test_auth_required(farm) -> None:
    port, _sock, _b, _s = farm
    r = curl(f"http://127.0.0.1:{port}{URI}")
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Basic realm="Portal statistics"'
    assert curl(f"http://127.0.0.1:{port}{URI}", "-u", f"{USER}:wrong").status == 401
    ok = curl(f"http://127.0.0.1:{port}{URI}", "-u", f"{USER}:{PASSWORD}")
    assert ok.status == 200 and ok.header("Cache-Control") == "no-cache"
    assert '<meta http-equiv="refresh" content="30">' in ok.text


def test_not_forwarded_and_logged_as_stats(farm) -> None:
    port, _sock, backends, syslog = farm
    for b in backends.values():
        b.clear()
    syslog.clear()
    r = curl(f"http://127.0.0.1:{port}{URI};csv", "-u", f"{USER}:{PASSWORD}")
    assert r.status == 200
    head = curl(f"http://127.0.0.1:{port}{URI}", "-I", "-u", f"{USER}:{PASSWORD}")
    assert head.status == 200 and head.body == b"" and int(head.header("Content-Length") or 0) > 1000
    assert not any(b.requests() for b in backends.values())  # answered by the proxy itself
    raws = syslog.wait_count(lambda x: "<STATS>" in x, 2)
    logs = [parse_httplog(parse_syslog(x).message) for x in raws]
    assert [lg.server for lg in logs] == ["<STATS>", "<STATS>"]
    assert all(lg.termination_state.startswith("LR") and lg.status == 200 for lg in logs)
    # the next request on the same port still goes to a server
    assert curl(f"http://127.0.0.1:{port}/").header("X-Served-By") in ("ents3", "ents2", "ents1")


def test_csv_export(farm) -> None:
    port, sock, _b, _s = farm
    r = curl(f"http://127.0.0.1:{port}{URI};csv", "-u", f"{USER}:{PASSWORD}")
    assert r.status == 200 and r.header("Content-Type", ).startswith("text/plain")  # type: ignore[union-attr]
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("# "))))
    by_name = {row["svname"]: row for row in rows if row["svname"]}
    assert set(by_name) == {"FRONTEND", "ents3", "ents2", "ents1", "ent-maintenance", "BACKEND"}
    assert all(row["pxname"] == "esup-proxy" for row in rows if row["svname"])
    assert [by_name[n]["weight"] for n in ("ents3", "ents2", "ents1")] == ["256", "128", "1"]
    assert by_name["ent-maintenance"]["bck"] == "1"
    served = sum(int(by_name[n]["stot"]) for n in ("ents3", "ents2", "ents1"))
    assert served == 10
    # the same numbers as the runtime API's show stat
    cli = _show_stat(sock)
    assert {n: cli[n]["stot"] for n in ("ents3", "ents2", "ents1")} == \
        {n: by_name[n]["stot"] for n in ("ents3", "ents2", "ents1")}


@needs_prometheus
def test_prometheus_metrics(farm) -> None:
    port, _sock, _b, syslog = farm
    r = curl(f"http://127.0.0.1:{port}/metrics")  # no authentication on the exporter
    assert r.status == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("haproxy_process_uptime_seconds", "haproxy_frontend_current_sessions", "haproxy_server_status",
                 "haproxy_backend_status"):
        assert name in families, sorted(families)
    status = {(s.labels["server"], s.labels["state"]): s.value for s in families["haproxy_server_status"].samples
              if s.labels.get("proxy") == "esup-proxy"}
    assert status[("ents3", "UP")] == 1 and status[("ents3", "DOWN")] == 0
    reqs = [f for f in families if f.startswith("haproxy_frontend_http_requests")]
    assert reqs, sorted(families)
    total = [s.value for s in families[reqs[0]].samples if s.labels.get("proxy") == "esup-proxy"]
    assert total and total[0] >= 10
    syslog.wait_for(lambda x: "<PROMEX>" in x and "/metrics" in x)


@needs_browser
def test_page_in_browser_and_drain_action(farm, browser) -> None:
    port, sock, _b, _s = farm
    browser.get(f"http://127.0.0.1:{port}{URI}")
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.px")))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "stats-page.png"))
    assert "Statistics Report" in browser.title
    table = browser.find_element(By.CSS_SELECTOR, 'table.px[data-proxy="esup-proxy"]')
    rows = {tr.get_attribute("data-server"): tr for tr in table.find_elements(By.CSS_SELECTOR, "tr[data-server]")}
    assert list(rows) == ["ents3", "ents2", "ents1", "ent-maintenance"]
    assert rows["ents3"].get_attribute("class") == "active_up"
    assert rows["ent-maintenance"].get_attribute("class") == "backup_up"
    assert rows["ents2"].find_element(By.CSS_SELECTOR, "td.status").text.startswith("UP")
    cells = [td.text for td in rows["ents2"].find_elements(By.TAG_NAME, "td")]
    assert "128" in cells  # weight column
    assert table.find_element(By.CSS_SELECTOR, "tr.frontend td.status").text == "OPEN"

    # drain ents2 from the page: tick its box, choose the action, Apply
    assert _show_stat(sock)["ents2"]["status"].startswith("UP")
    rows["ents2"].find_element(By.CSS_SELECTOR, 'input[type="checkbox"][name="s"]').click()
    form = table.find_element(By.XPATH, "./ancestor::form")
    Select(form.find_element(By.NAME, "action")).select_by_value("drain")
    form.find_element(By.CSS_SELECTOR, 'input[type="submit"]').click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "status")))
    assert browser.current_url.endswith(";st=DONE")
    assert "[DONE]" in browser.find_element(By.ID, "status").text
    assert _show_stat(sock)["ents2"]["status"] == "DRAIN"
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-server="ents2"]')
    assert row.get_attribute("class") == "active_draining"
    browser.save_screenshot(str(ARTIFACTS / "stats-page-drained.png"))


def test_admin_post_without_credentials_is_refused(farm) -> None:
    port, sock, _b, _s = farm
    r = curl(f"http://127.0.0.1:{port}{URI}", data=b"s=ents1&action=maint&b=esup-proxy")
    assert r.status == 401
    assert _show_stat(sock)["ents1"]["status"].startswith("UP")
    r = curl(f"http://127.0.0.1:{port}{URI}", "-u", f"{USER}:{PASSWORD}",
             data=b"s=ents1&action=maint&b=esup-proxy")
    assert r.status == 303 and r.header("Location") == f"{URI};st=DONE"
    deadline = time.monotonic() + 2
    while _show_stat(sock)["ents1"]["status"] != "MAINT":
        assert time.monotonic() < deadline
        time.sleep(0.05)
