"""The reference deployment's file (examples/esup-haproxy.cfg, the seed verbatim) run as it is, addresses mapped to loopback.

Mapping: the syslog host 111.112.113.114 → a SyslogReceiver on 127.0.0.1; the balancer 111.112.113.115:80 →
127.0.0.5:<free port>; the servers 111.112.113.116..119:80 → portal backends on 127.0.0.6..9 (free ports).
`chroot`, `uid`, `gid` and `daemon` are removed (the test runs the proxy in the foreground as the test user);
every other line, legacy keywords included, is the seed's.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from support.backends import free_port
from support.http import RawConnection, build_request
from support.syslog import parse_httplog, parse_syslog

SEED = Path(__file__).resolve().parents[2] / "examples" / "esup-haproxy.cfg"  # the seed file, verbatim
NAMES = {"116": "ents3", "117": "ents2", "118": "ents1", "119": "ent-maintenance"}


@pytest.fixture
def seed(proxy_factory, backend_factory, syslog_receiver):
    if not SEED.exists():
        pytest.skip("the seed configuration is not available on this machine")
    text = SEED.read_text()
    text = re.sub(r"^\s*(chroot|uid|gid|daemon)\b.*\n", "", text, flags=re.M)
    text = text.replace("log 111.112.113.114 ", f"log {syslog_receiver.address} ")
    port = free_port("127.0.0.5")
    text = text.replace("111.112.113.115:80", f"127.0.0.5:{port}")
    text = text.replace("except 111.112.113.115", "except 127.0.0.5")
    backends = {}
    for last, name in NAMES.items():
        b = backend_factory(name, host=f"127.0.0.{int(last) - 110}")
        backends[name] = b
        text = text.replace(f"111.112.113.{last}:80", b.address)
    assert "111.112.113" not in text
    # one worker: the tests compare exact FWRR sequences, and each worker has its own cycle
    text = text.replace("global\n", "global\n    nbthread 1\n", 1)
    proxy = proxy_factory(text)
    return proxy, port, backends, syslog_receiver


def _get(port: int, target: str = "/", source: str | None = None, cookie: str | None = None):
    headers = [("Cookie", cookie)] if cookie else []
    with RawConnection("127.0.0.5", port, source=source) as c:
        r = c.request(build_request("GET", target, headers=headers))
        closed = c.is_closed(wait=2.0)
    return r, closed


def test_seed_serves_with_weighted_round_robin(seed) -> None:
    _proxy, port, backends, syslog = seed
    served = []
    for _ in range(770):
        r, closed = _get(port)
        assert r.status == 200 and closed  # option httpclose: one request per connection
        served.append(r.header("X-Served-By"))
    assert served[:3] == ["ents3", "ents3", "ents2"]
    assert Counter(served) == {"ents3": 512, "ents2": 256, "ents1": 2}
    assert backends["ent-maintenance"].requests() == []
    for b in backends.values():
        assert all(rec.index == 0 for rec in b.requests())
    raw = syslog.wait_for(lambda line: "esup-proxy/ents" in line)
    msg = parse_syslog(raw)
    assert msg.pri == 158  # local3.info
    log = parse_httplog(msg.message)
    assert log.frontend == "esup-proxy" and log.status == 200 and log.termination_state[2:] == "NN"


def test_seed_forwardfor_except_balancer_address(seed) -> None:
    _proxy, port, backends, _ = seed
    _get(port, source="127.0.0.1")
    _get(port, source="127.0.0.5")
    recs = [rec for b in backends.values() for rec in b.requests()]
    recs.sort(key=lambda r: r.time)
    assert recs[0].header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert recs[1].header_values("X-Forwarded-For") == []


def test_seed_cookie_prefix_persistence(seed) -> None:
    _proxy, port, backends, _ = seed
    r, _ = _get(port, "/login?user=alice")
    assert r.status == 200
    server = r.header("X-Served-By")
    cookie = r.header("Set-Cookie")
    assert cookie is not None
    sid = {"ents3": "s3", "ents2": "s2", "ents1": "s1"}[server]
    assert cookie.startswith(f"JSESSIONID={sid}~")
    value = cookie.split(";")[0].split("=", 1)[1]
    for _ in range(5):
        r2, _ = _get(port, "/", cookie=f"JSESSIONID={value}")
        assert r2.header("X-Served-By") == server
        assert "alice" in r2.text
    seen = backends[server].requests()[-1].header("Cookie")
    assert seen == f"JSESSIONID={value.split('~', 1)[1]}"  # the prefix never reaches the application


def test_seed_redispatches_away_from_a_dead_server(seed) -> None:
    _proxy, port, backends, _ = seed
    backends["ents3"].refuse()
    for _ in range(6):
        r, _ = _get(port)
        assert r.status == 200 and r.header("X-Served-By") in ("ents2", "ents1")
