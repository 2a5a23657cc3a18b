"""Proxy keywords: each supported keyword of frontend/backend/listen/defaults reaches the model as HAProxy means it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config.model import (
    Balance,
    ForwardFor,
    HttpCheck,
    HttpCheckExpect,
    Proxy,
)

from proxycfg_helpers import HTTP_DEFAULTS, one_proxy, parse_ok

Get = Callable[[Proxy], Any]

CASES: list[tuple[str, str, Get, Any]] = [
    # section, lines, accessor, expected
    ("backend b", "mode tcp", lambda p: p.mode, "tcp"),
    ("backend b", "mode http", lambda p: p.mode, "http"),
    ("frontend f", "bind 127.0.0.1:8080\ndefault_backend x\nbackend x", lambda p: p.name, "x"),
    ("frontend f", "maxconn 100\ndefault_backend f2\nbackend f2", lambda p: p.kind, "backend"),
    ("listen l", "maxconn 100", lambda p: p.maxconn, 100),
    ("backend b", "retries 5", lambda p: p.retries, 5),
    ("backend b", "retries 0", lambda p: p.retries, 0),
    ("backend b", "fullconn 500", lambda p: p.fullconn, 500),
    ("backend b", "http-reuse never", lambda p: p.http_reuse, "never"),
    ("backend b", "http-reuse aggressive", lambda p: p.http_reuse, "aggressive"),
    ("backend b", "http-reuse always", lambda p: p.http_reuse, "always"),
    ("backend b", "", lambda p: p.http_reuse, "safe"),
    ("backend b", "", lambda p: p.balance, Balance("roundrobin")),
    ("backend b", "balance static-rr", lambda p: p.balance.algorithm, "static-rr"),
    ("backend b", "balance leastconn", lambda p: p.balance.algorithm, "leastconn"),
    ("backend b", "balance first", lambda p: p.balance.algorithm, "first"),
    ("backend b", "balance source", lambda p: p.balance.algorithm, "source"),
    # timeouts
    ("listen l", "timeout client 1m", lambda p: p.timeouts.client, 60000),
    ("listen l", "timeout client-fin 1s", lambda p: p.timeouts.client_fin, 1000),
    ("listen l", "timeout http-request 10s", lambda p: p.timeouts.http_request, 10000),
    ("listen l", "timeout http-keep-alive 2s", lambda p: p.timeouts.http_keep_alive, 2000),
    ("listen l", "timeout tarpit 3s", lambda p: p.timeouts.tarpit, 3000),
    ("listen l", "timeout connect 4s", lambda p: p.timeouts.connect, 4000),
    ("listen l", "timeout server 5s", lambda p: p.timeouts.server, 5000),
    ("listen l", "timeout queue 6s", lambda p: p.timeouts.queue, 6000),
    ("listen l", "timeout tunnel 1h", lambda p: p.timeouts.tunnel, 3600000),
    ("listen l", "timeout check 7s", lambda p: p.timeouts.check, 7000),
    ("listen l", "timeout server-fin 8s", lambda p: p.timeouts.server_fin, 8000),
    ("listen l", "timeout server 0", lambda p: p.timeouts.server, None),  # 0 = not set
    ("frontend f", "timeout http-request 1s\ndefault_backend b\nbackend b",
     lambda p: p.timeouts.http_request, None),  # not inherited by another proxy
    # log formats and connection modes
    ("listen l", "option httplog", lambda p: p.log_format, "httplog"),
    ("listen l", "option httplog clf", lambda p: p.log_format, "httplog-clf"),
    ("listen l", "option tcplog", lambda p: p.log_format, "tcplog"),
    ("listen l", "option httplog\noption tcplog", lambda p: p.log_format, "tcplog"),
    ("listen l", "option httplog\nno option httplog", lambda p: p.log_format, "default"),
    ("listen l", "option dontlognull", lambda p: p.dontlognull, True),
    ("listen l", "option dontlognull\nno option dontlognull", lambda p: p.dontlognull, False),
    ("listen l", "option allbackups", lambda p: p.allbackups, True),
    ("listen l", "option persist", lambda p: p.persist, True),
    ("listen l", "option log-health-checks", lambda p: p.log_health_checks, True),
    ("listen l", "option log-health-checks\ndefault option log-health-checks", lambda p: p.log_health_checks,
     False),
    ("listen l", "", lambda p: p.http_conn_mode, "kal"),
    ("listen l", "option httpclose", lambda p: p.http_conn_mode, "clo"),
    ("listen l", "option http-server-close", lambda p: p.http_conn_mode, "scl"),
    ("listen l", "option httpclose\noption http-keep-alive", lambda p: p.http_conn_mode, "kal"),
    ("listen l", "option httpclose\noption http-server-close", lambda p: p.http_conn_mode, "scl"),
    ("listen l", "option httpclose\nno option httpclose", lambda p: p.http_conn_mode, "kal"),
    # 'no option X' clears the mode only when it is X
    ("listen l", "option http-server-close\nno option httpclose", lambda p: p.http_conn_mode, "scl"),
    # forwardfor
    ("listen l", "option forwardfor", lambda p: p.forwardfor, ForwardFor()),
    ("listen l", "option forwardfor except 111.112.113.115", lambda p: p.forwardfor,
     ForwardFor(except_net="111.112.113.115/32")),
    ("listen l", "option forwardfor except 10.1.2.3/8 header X-Client if-none", lambda p: p.forwardfor,
     ForwardFor(header="X-Client", except_net="10.0.0.0/8", if_none=True)),
    ("listen l", "option forwardfor except ::1", lambda p: p.forwardfor, ForwardFor(except_net="::1/128")),
    # redispatch
    ("listen l", "", lambda p: p.redispatch, None),
    ("listen l", "option redispatch", lambda p: p.redispatch, -1),
    ("listen l", "option redispatch 2", lambda p: p.redispatch, 2),
    ("listen l", "option redispatch -2", lambda p: p.redispatch, -2),
    ("listen l", "option redispatch 0", lambda p: p.redispatch, None),
    ("listen l", "option redispatch\nno option redispatch", lambda p: p.redispatch, None),
    # httpchk and http-check
    ("backend b", "option httpchk", lambda p: p.httpchk, HttpCheck()),
    ("backend b", "option httpchk /health", lambda p: (p.httpchk.method, p.httpchk.uri), ("OPTIONS", "/health")),
    ("backend b", "option httpchk GET /health", lambda p: (p.httpchk.method, p.httpchk.uri, p.httpchk.version),
     ("GET", "/health", "HTTP/1.0")),
    ("backend b", "option httpchk HEAD / HTTP/1.1", lambda p: p.httpchk.version, "HTTP/1.1"),
    ("backend b", "option httpchk GET / HTTP/1.1 www.example.org", lambda p: p.httpchk.headers,
     (("host", "www.example.org"),)),
    ("backend b", r"option httpchk GET /ping HTTP/1.1\r\nHost:\ esup.example",
     lambda p: (p.httpchk.version, p.httpchk.headers), ("HTTP/1.1", (("Host", "esup.example"),))),
    ("backend b", "option httpchk\nhttp-check send meth GET uri /h ver HTTP/1.1 hdr Host a.b hdr X-A 1 body hi",
     lambda p: p.httpchk, HttpCheck(method="GET", uri="/h", version="HTTP/1.1",
                                    headers=(("Host", "a.b"), ("X-A", "1")), body="hi")),
    ("backend b", "option httpchk\nhttp-check expect status 200", lambda p: p.httpchk.expect,
     HttpCheckExpect("status", "200")),
    ("backend b", "option httpchk\nhttp-check expect ! rstring ^ERR", lambda p: p.httpchk.expect,
     HttpCheckExpect("rstring", "^ERR", negate=True)),
    ("backend b", "option httpchk\nhttp-check expect string OK", lambda p: p.httpchk.expect,
     HttpCheckExpect("string", "OK")),
    ("backend b", "option httpchk\nhttp-check expect rstatus ^2", lambda p: p.httpchk.expect,
     HttpCheckExpect("rstatus", "^2")),
    ("backend b", "option httpchk\nhttp-check disable-on-404", lambda p: p.httpchk.disable_on_404, True),
    ("backend b", "http-check send meth GET\noption httpchk", lambda p: p.httpchk.method, "GET"),
    # cookie
    ("backend b", "cookie SRV", lambda p: (p.cookie.name, p.cookie.mode), ("SRV", "passive")),
    ("backend b", "cookie JSESSIONID prefix", lambda p: (p.cookie.name, p.cookie.mode), ("JSESSIONID", "prefix")),
    ("backend b", "cookie S rewrite", lambda p: p.cookie.mode, "rewrite"),
    ("backend b", "cookie S insert indirect nocache postonly preserve httponly secure",
     lambda p: (p.cookie.mode, p.cookie.indirect, p.cookie.nocache, p.cookie.postonly, p.cookie.preserve,
                p.cookie.httponly, p.cookie.secure), ("insert", True, True, True, True, True, True)),
    ("backend b", "cookie S insert domain .a.org domain .b.org maxidle 30m maxlife 1d attr SameSite=Lax attr P",
     lambda p: (p.cookie.domains, p.cookie.maxidle, p.cookie.maxlife, p.cookie.attrs),
     ((".a.org", ".b.org"), 1800, 86400, ("SameSite=Lax", "P"))),
    ("backend b", "cookie A insert\ncookie B prefix", lambda p: (p.cookie.name, p.cookie.mode, p.cookie.indirect),
     ("B", "prefix", False)),
    # logs
    ("listen l", "log 127.0.0.1:5140 local0", lambda p: [(t.host, t.port, t.facility) for t in p.logs],
     [("127.0.0.1", 5140, 16)]),
    ("listen l", "log 127.0.0.1 local0\nlog stdout local1", lambda p: [t.kind for t in p.logs], ["udp", "stdout"]),
    ("listen l", "log 127.0.0.1 local0\nno log", lambda p: p.logs, ()),
]


@pytest.mark.parametrize(("section", "body", "get", "expected"), CASES)
def test_proxy_keywords(tmp_path: Path, section: str, body: str, get: Get, expected: Any) -> None:
    if section.startswith("frontend") and "default_backend" not in body:
        body += "\ndefault_backend z\nbackend z"
    px = one_proxy(tmp_path, body, section)
    assert get(px) == expected


BINDS = [
    ("bind :80", [("", 80)]),
    ("bind *:80", [("", 80)]),
    ("bind 127.0.0.1:8080", [("127.0.0.1", 8080)]),
    ("bind :::8443", [("::", 8443)]),
    ("bind [::1]:81", [("::1", 81)]),
    ("bind ipv4@:82", [("", 82)]),
    ("bind ipv6@:83", [("::", 83)]),
    ("bind ipv4@127.0.0.1:84", [("127.0.0.1", 84)]),
    ("bind 127.0.0.1:85,127.0.0.2:86", [("127.0.0.1", 85), ("127.0.0.2", 86)]),
    ("bind :87\nbind :88", [("", 87), ("", 88)]),
    ("bind app.example:89", [("10.1.2.3", 89)]),
]


@pytest.mark.parametrize(("body", "binds"), BINDS)
def test_binds(tmp_path: Path, body: str, binds: list[tuple[str, int]]) -> None:
    px = one_proxy(tmp_path, body, "listen l")
    assert [(b.host, b.port) for b in px.binds] == binds
    assert all(b.where.line >= 7 for b in px.binds)


def test_log_global_copies_global_targets(tmp_path: Path) -> None:
    text = "global\n    log 127.0.0.1:5140 local3\n" + HTTP_DEFAULTS + "    log global\nlisten l\n    bind :80\n" \
        "    log 127.0.0.2 local0\n"
    config = parse_ok(tmp_path, text)
    assert [(t.host, t.facility) for t in config.proxy("l").logs] == [("127.0.0.1", 19), ("127.0.0.2", 16)]


def test_kinds_and_capabilities(tmp_path: Path) -> None:
    text = HTTP_DEFAULTS + "frontend f\n    bind :80\n    default_backend b\nbackend b\n    server s 1.2.3.4:80\n" \
        "listen l\n    bind :81\n    server s 1.2.3.4:80\n"
    config = parse_ok(tmp_path, text)
    assert [p.name for p in config.frontends] == ["f", "l"]
    assert [p.name for p in config.backends] == ["b", "l"]
    assert config.backend_for(config.proxy("f")) is config.proxy("b")
    assert config.backend_for(config.proxy("l")) is config.proxy("l")
    assert config.proxy("f").where.line == 6
