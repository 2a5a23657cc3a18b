"""The reference deployment's own HAProxy file, served through balancier on loopback.

The seed file (examples/esup-haproxy.cfg, the seed verbatim, HAProxy 1.3/1.4 era, legacy keywords and all) is read
verbatim and only its environment is mapped:
- each placeholder address 111.112.113.11N becomes 127.0.1.1N: .114 the syslog host (a real SyslogReceiver on
  127.0.1.14), .115 the balancer (`listen esup-proxy 127.0.1.15:<free port>`, also the `forwardfor except`
  address), .116-.119 the four portal servers ents3, ents2, ents1, ent-maintenance;
- port 80 becomes a free port: the listen address gets one, each server line its portal's port;
- `chroot /usr/share/haproxy` is removed (the test tree is not a jail);
- `uid 99` / `gid 99` become the test's own uid/gid (the privilege drop still runs, as a no-op);
- `daemon` stays: the proxy is started with `-db`, which keeps it in the foreground as HAProxy does.
Everything else (the legacy `redispatch`, `timeout 5000`, `clitimeout`, `srvtimeout`, the address on the
`listen` line) is left for balancier to accept and map.

As a control, the same checks run against Debian's HAProxy 2.6 with the modern equivalent of the seed
(haproxy.md §1.2; 2.6 refuses the legacy keywords), mapped the same way.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.backends import Backend, free_port
from support.http import RawConnection, Response, build_request
from support.proxy import IMPLS, ProxyProcess, start_proxy
from support.syslog import SyslogReceiver, parse_httplog, parse_syslog

SEED = Path(__file__).resolve().parents[2] / "examples" / "esup-haproxy.cfg"  # the seed file, verbatim
BALANCER = "127.0.1.15"
SERVER_NAMES = {"116": "ents3", "117": "ents2", "118": "ents1", "119": "ent-maintenance"}

# haproxy.md §1.2: what HAProxy 2.6 accepts for the same deployment.
MODERN_SEED = """\
global
  log 111.112.113.114 local3
  maxconn 4096
  chroot /usr/share/haproxy
  uid 99
  gid 99
  daemon
defaults
  log global
  mode http
  option httplog
  option dontlognull
  retries 3
  option redispatch
  maxconn 2000
  timeout connect 5000
  timeout client 50000
  timeout server 50000
listen esup-proxy
  bind 111.112.113.115:80
  cookie JSESSIONID prefix
  option httpchk
  option forwardfor except 111.112.113.115
  option httpclose
  balance roundrobin
  server ents3 111.112.113.116:80 cookie s3 weight 256 check inter 5000 rise 1 fall 3
  server ents2 111.112.113.117:80 cookie s2 weight 128 check inter 5000 rise 1 fall 3
  server ents1 111.112.113.118:80 cookie s1 weight 1 check inter 5000 rise 1 fall 3
  server ent-maintenance 111.112.113.119:80 check backup
"""


def map_seed(text: str, listen_port: int, syslog: SyslogReceiver, backends: dict[str, Backend]) -> str:
    """Rewrite the seed's environment (addresses, ports, chroot, uid/gid) as the module docstring says."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["chroot"]:
            out.append("    # chroot removed for the test")
            continue
        if words[:1] == ["uid"]:
            line = re.sub(r"\d+", str(os.getuid()), line)
        if words[:1] == ["gid"]:
            line = re.sub(r"\d+", str(os.getgid()), line)
        if words[:1] == ["log"] and "111.112.113.114" in line:
            line = line.replace("111.112.113.114", f"{syslog.host}:{syslog.port}")
        line = line.replace("111.112.113.115:80", f"{BALANCER}:{listen_port}")

        def server_addr(m: re.Match[str]) -> str:
            return backends[SERVER_NAMES[m.group(1)]].address

        line = re.sub(r"111\.112\.113\.(11[6-9]):80", server_addr, line)
        line = re.sub(r"111\.112\.113\.(11\d)", lambda m: f"127.0.1.{m.group(1)[1:]}", line)
        out.append(line)
    mapped = "\n".join(out) + "\n"
    assert "111.112.113" not in mapped
    return mapped


@dataclass
class Deployment:
    impl: str
    port: int
    proxy: ProxyProcess
    syslog: SyslogReceiver
    backends: dict[str, Backend]

    def get(self, target: str, headers: list[tuple[str, str]] | None = None,
            source: str | None = None) -> tuple[Response, int, bool]:
        """One request on a new connection: (response, client port, closed by the proxy after it)."""
        with RawConnection(BALANCER, self.port, timeout=10, source=source) as c:
            client_port = c.sock.getsockname()[1]
            r = c.request(build_request("GET", target, host="ent.test", headers=headers))
            return r, client_port, c.is_closed(wait=2)


@pytest.fixture(scope="module", params=IMPLS)
def seed(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    impl: str = request.param
    backends: dict[str, Backend] = {}
    syslog = SyslogReceiver(host="127.0.1.14")
    proxy = None
    try:
        for last, name in SERVER_NAMES.items():
            backends[name] = Backend(name, f"127.0.1.{last[1:]}")
        port = free_port(BALANCER)
        text = SEED.read_text() if impl == "balancier" else MODERN_SEED
        # one worker: the test counts the exact 512/256/2 split, and each worker has its own FWRR cycle
        mapped = map_seed(text, port, syslog, backends).replace("global\n", "global\n    nbthread 1\n", 1)
        proxy = start_proxy(mapped, impl)
        yield Deployment(impl, port, proxy, syslog, backends)
    finally:
        if proxy is not None:
            proxy.stop()
        for b in backends.values():
            b.stop()
        syslog.close()


def test_seed_file_is_mapped_completely(tmp_path: Path) -> None:
    with SyslogReceiver() as s:
        bs = {name: _FakeAddr(f"127.0.1.{last[1:]}:{8000 + int(last)}") for last, name in SERVER_NAMES.items()}
        mapped = map_seed(SEED.read_text(), 18080, s, bs)  # type: ignore[arg-type]
    assert "chroot" not in mapped.replace("# chroot removed", "")
    assert f"listen esup-proxy {BALANCER}:18080" in mapped
    assert f"option forwardfor except {BALANCER}" in mapped
    assert "server ents1 127.0.1.18:8118 cookie s1 weight 1" in mapped
    assert "redispatch" in mapped and "clitimeout 50000" in mapped  # legacy keywords left alone


@dataclass
class _FakeAddr:
    address: str


def test_traffic_flows_and_770_requests_split_512_256_2(seed: Deployment) -> None:
    for b in seed.backends.values():
        b.clear()
    served = []
    for i in range(770):
        r, _, _ = seed.get(f"/health?n={i}")
        assert r.status == 200
        served.append(r.header("X-Served-By"))
    assert Counter(served) == {"ents3": 512, "ents2": 256, "ents1": 2}
    assert served[:3] == ["ents3", "ents3", "ents2"]
    # What the servers saw agrees with what the clients saw; the backup took nothing.
    seen = {name: len(b.requests()) for name, b in seed.backends.items()}
    assert seen == {"ents3": 512, "ents2": 256, "ents1": 2, "ent-maintenance": 0}


def test_httpclose_and_forwardfor(seed: Deployment) -> None:
    r, _, closed = seed.get("/")
    assert r.header("Connection") == "close" and closed, "httpclose: the client side is closed"
    r, _, _ = seed.get("/echo")
    rec = next(x for x in seed.backends[r.header("X-Served-By") or ""].requests() if x.target == "/echo")
    assert rec.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert rec.header("Connection") == "close", "httpclose: the server side is asked to close"
    # From the balancer's own address (a local TLS offloader in the reference deployment): no header added.
    r, _, _ = seed.get("/echo?from-self", headers=[("X-Forwarded-For", "203.0.113.7")], source=BALANCER)
    rec = next(x for x in seed.backends[r.header("X-Served-By") or ""].requests() if x.target == "/echo?from-self")
    assert rec.header_values("X-Forwarded-For") == ["203.0.113.7"]


def test_cookie_prefix_persistence(seed: Deployment) -> None:
    r, _, _ = seed.get("/login?user=alice")
    server = r.header("X-Served-By")
    cookie = r.header("Set-Cookie") or ""
    prefix = {"ents3": "s3", "ents2": "s2", "ents1": "s1"}[server or ""]
    assert re.fullmatch(rf"JSESSIONID={prefix}~[0-9A-F]{{32}}; Path=/", cookie), cookie
    sid = cookie.split(";")[0].split("=", 1)[1]
    for _ in range(5):  # every later request sticks to the same server, which sees its own id back
        r, _, _ = seed.get("/", headers=[("Cookie", f"JSESSIONID={sid}")])
        assert r.header("X-Served-By") == server
        assert "logged in as alice" in r.text


def test_httplog_lines_parse_field_by_field(seed: Deployment) -> None:
    seed.syslog.clear()
    before = time.time()
    r, client_port, _ = seed.get("/echo?log-check")
    line = seed.syslog.wait_for(lambda x: "/echo?log-check" in x, timeout=5)
    msg = parse_syslog(line)
    assert (msg.facility, msg.severity) == (19, 6), "local3.info"
    assert msg.tag in ("haproxy", "balancier") and msg.pid is not None
    assert line.endswith("\n") and line.count("\n") == 1
    log = parse_httplog(msg.message)
    assert (log.client_ip, log.client_port) == ("127.0.0.1", client_port)
    stamp = time.mktime(time.strptime(log.date.split(".")[0], "%d/%b/%Y:%H:%M:%S"))
    assert before - 2 <= stamp <= time.time() + 1
    assert (log.frontend, log.backend, log.server) == ("esup-proxy", "esup-proxy", r.header("X-Served-By"))
    assert log.TR >= 0 and log.Tw >= 0 and log.Tc >= 0 and log.Tr >= 0 and log.Ta >= log.Tr
    assert log.status == 200
    # HAProxy 2.6 counts %B from its internal (HTX) form: the wire bytes minus ": " and CRLF of each header
    # line (measured: always len(raw) - 4 x headers). The exact wire count is accepted for balancier too.
    htx_count = len(r.raw) - 4 * len(r.headers)
    expected = (htx_count,) if seed.impl == "haproxy" else (htx_count, len(r.raw))
    assert log.bytes_read in expected, f"bytes sent to the client: {log.bytes_read}, wire {len(r.raw)}"
    assert (log.captured_request_cookie, log.captured_response_cookie) == ("-", "-")
    assert log.termination_state == "--NN", "no cookie in, none out"
    # One client at a time: at log time the server side is already released (httpclose), as in spec §12.2.
    assert (log.actconn, log.feconn, log.beconn, log.srv_conn) == (1, 1, 0, 0)
    assert (log.retries, log.redispatched, log.srv_queue, log.backend_queue) == (0, False, 0, 0)
    assert log.request_line == "GET /echo?log-check HTTP/1.1"


def test_httplog_cookie_flags(seed: Deployment) -> None:
    seed.syslog.clear()
    r, _, _ = seed.get("/login?user=bob&flag-check")
    sid = (r.header("Set-Cookie") or "").split(";")[0].split("=", 1)[1]
    seed.get("/?flag-check-2", headers=[("Cookie", f"JSESSIONID={sid}")])
    first = parse_httplog(parse_syslog(seed.syslog.wait_for(lambda x: "flag-check HTTP" in x)).message)
    second = parse_httplog(parse_syslog(seed.syslog.wait_for(lambda x: "flag-check-2" in x)).message)
    assert first.termination_state == "--NR", "server cookie prefixed (rewritten)"
    assert second.termination_state == "--VN", "valid persistence cookie"


def test_dontlognull_and_checks(seed: Deployment) -> None:
    """A connection that sends nothing is not logged; the servers get `OPTIONS / HTTP/1.0` checks."""
    seed.syslog.clear()
    with socket.create_connection((BALANCER, seed.port), timeout=2):
        pass
    seed.get("/?after-null")
    seed.syslog.wait_for(lambda x: "after-null" in x)
    assert all("after-null" in x for x in seed.syslog.lines), seed.syslog.lines
    deadline = time.time() + 12  # checks are spread over the 5 s interval after start-up
    while time.time() < deadline and not all(b.checks() for b in seed.backends.values()):
        time.sleep(0.2)
    for name, b in seed.backends.items():
        checks = b.checks()
        assert checks, f"{name} got no health check"
        assert (checks[0].method, checks[0].target, checks[0].version) == ("OPTIONS", "/", "HTTP/1.0")
