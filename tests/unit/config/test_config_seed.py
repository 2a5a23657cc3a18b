"""The reference deployment's configuration (data/esup-haproxy.cfg, copied from the seed), and run_check.

data/esup-slide.cfg is the same file without its comment and blank lines, i.e. numbered as on the slide and in
the specification (1.1): the legacy warnings then fall on lines 14, 16, 17, 18 and 19.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from balancier.proxy.config import ConfigError, load, run_check

from proxycfg_helpers import fake_resolve, render

DATA = Path(__file__).parent / "data"

LEGACY = [
    "'redispatch' read as 'option redispatch' (legacy keyword, removed in HAProxy 2.1; write 'option redispatch')",
    "'timeout 5000' read as 'timeout connect 5000' (legacy form; write 'timeout connect 5000')",
    "'clitimeout 50000' read as 'timeout client 50000' (legacy keyword, removed in HAProxy 2.1; write 'timeout "
    "client 50000')",
    "'srvtimeout 50000' read as 'timeout server 50000' (legacy keyword, removed in HAProxy 2.1; write 'timeout "
    "server 50000')",
    "'listen esup-proxy 111.112.113.115:80' read as 'listen esup-proxy' + 'bind 111.112.113.115:80' (legacy form, "
    "removed in HAProxy 1.6; write 'bind 111.112.113.115:80' in the section)",
]


@pytest.mark.parametrize(("name", "lines"), [("esup-slide.cfg", [14, 16, 17, 18, 19]),
                                             ("esup-haproxy.cfg", [17, 19, 20, 21, 23])])
def test_seed_loads_with_exactly_the_legacy_warnings(name: str, lines: list[int]) -> None:
    _, diags = load([str(DATA / name)], {})
    assert [render(d) for d in diags] == [f"warning {name}:{n}: {m}" for n, m in zip(lines, LEGACY, strict=True)]


def test_seed_model() -> None:
    config, _ = load([str(DATA / "esup-slide.cfg")], {})
    g = config.global_
    assert (g.maxconn, g.chroot, g.uid, g.gid, g.daemon) == (4096, "/usr/share/haproxy", 99, 99, True)
    assert [(t.kind, t.host, t.port, t.facility) for t in g.logs] == [("udp", "111.112.113.114", 514, 19)]
    (px,) = config.proxies
    assert (px.name, px.kind, px.mode) == ("esup-proxy", "listen", "http")
    assert [(b.host, b.port) for b in px.binds] == [("111.112.113.115", 80)]
    assert (px.timeouts.connect, px.timeouts.client, px.timeouts.server) == (5000, 50000, 50000)
    assert (px.retries, px.redispatch, px.maxconn) == (3, -1, 2000)
    assert (px.log_format, px.dontlognull, px.http_conn_mode) == ("httplog", True, "clo")
    assert [(t.host, t.facility) for t in px.logs] == [("111.112.113.114", 19)]  # log global
    assert px.cookie is not None and (px.cookie.name, px.cookie.mode) == ("JSESSIONID", "prefix")
    assert px.httpchk is not None and (px.httpchk.method, px.httpchk.uri, px.httpchk.version) == (
        "OPTIONS", "/", "HTTP/1.0")
    assert px.forwardfor is not None and px.forwardfor.except_net == "111.112.113.115/32"
    assert px.forwardfor.header == "X-Forwarded-For"
    assert px.balance.algorithm == "roundrobin"
    rows = [(s.name, s.host, s.port, s.cookie, s.weight, s.check, s.inter, s.rise, s.fall, s.backup)
            for s in px.servers]
    assert rows == [
        ("ents3", "111.112.113.116", 80, "s3", 256, True, 5000, 1, 3, False),
        ("ents2", "111.112.113.117", 80, "s2", 128, True, 5000, 1, 3, False),
        ("ents1", "111.112.113.118", 80, "s1", 1, True, 5000, 1, 3, False),
        ("ent-maintenance", "111.112.113.119", 80, None, 1, True, 2000, 2, 3, True),
    ]
    assert config.backend_for(px) is px


def test_run_check_on_the_seed() -> None:
    out = io.StringIO()
    assert run_check([str(DATA / "esup-slide.cfg")], False, out) == 0
    lines = out.getvalue().splitlines()
    path = str(DATA / "esup-slide.cfg")
    assert lines == [f"[WARNING] {path}:{n}: {m}" for n, m in zip([14, 16, 17, 18, 19], LEGACY, strict=True)] + [
        "Warnings were found.", "Configuration file is valid"]


def test_run_check_quiet(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.cfg"
    cfg.write_text("defaults\n    mode http\n    timeout client 1s\n    timeout connect 1s\n    timeout server 1s\n"
                   "listen l\n    bind 127.0.0.1:8080\n    server s 127.0.0.1:80\n")
    out = io.StringIO()
    assert run_check([str(cfg)], True, out, resolve=fake_resolve) == 0
    assert out.getvalue() == ""
    assert run_check([str(cfg)], False, out, resolve=fake_resolve) == 0
    assert out.getvalue() == "Configuration file is valid\n"


def test_run_check_invalid(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("global\n    daemon\nfrontend f\n    bind :80\n    foo bar\n    default_backend b\n"
                   "backend b\n    timeout client 1s\n")
    out = io.StringIO()
    assert run_check([str(cfg)], False, out, resolve=fake_resolve) == 1
    lines = out.getvalue().splitlines()
    assert f"[ALERT] {cfg}:5: unknown keyword 'foo' in 'frontend' section" in lines
    assert f"[WARNING] {cfg}:8: 'timeout client' will be ignored because backend 'b' has no frontend capability" \
        in lines
    assert lines[-1] == "Fatal errors found in configuration."
    assert all(line.startswith(("[ALERT] ", "[WARNING] ")) for line in lines[:-1])


def test_run_check_no_listener(tmp_path: Path) -> None:
    cfg = tmp_path / "nolisten.cfg"
    cfg.write_text("global\n    daemon\ndefaults\n    timeout client 1s\n")
    out = io.StringIO()
    assert run_check([str(cfg)], False, out) == 2
    assert out.getvalue() == "Configuration file has no error but will not start (no listener) => exit(2).\n"


def test_config_error_carries_every_diagnostic(tmp_path: Path) -> None:
    cfg = tmp_path / "two.cfg"
    cfg.write_text("global\n    frob\nlisten l\n    bind :80\n    timeout client 1s\n    timeout client 2s\n"
                   "    acl x\n")
    with pytest.raises(ConfigError) as info:
        load([str(cfg)], {})
    assert [(d.level, d.where.line if d.where else 0) for d in info.value.diagnostics] == [
        ("alert", 2), ("warning", 6), ("alert", 7)]
    assert str(info.value) == f"[ALERT] {cfg}:2: unknown keyword 'frob' in 'global' section (and 1 more)"
