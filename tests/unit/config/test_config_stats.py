"""`stats ...` proxy keywords and `http-request use-service prometheus-exporter`: accepted forms reach the model,
everything else is refused with a `file:line` alert naming the word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config.model import StatsConfig

from proxycfg_helpers import HTTP_DEFAULTS, errors, one_proxy

ACCEPTED: list[tuple[str, str, Any]] = [
    # body lines, StatsConfig attribute (or "" for the whole object), expected
    ("", "", None),
    ("stats enable", "uri", "/haproxy?stats"),
    ("stats enable", "realm", "HAProxy Statistics"),
    ("stats enable", "auth", ()),
    ("stats enable", "refresh", None),
    ("stats enable", "admin", False),
    ("stats uri /st", "uri", "/st"),
    ("stats uri /st?x", "uri", "/st?x"),
    ("stats auth u:p", "auth", (("u", "p"),)),
    ("stats auth u:p\nstats auth v:w:x", "auth", (("u", "p"), ("v", "w:x"))),
    ("stats auth u:", "auth", (("u", ""),)),
    ('stats realm "Portal stats"', "realm", "Portal stats"),
    ("stats refresh 5", "refresh", 5000),
    ("stats refresh 10s", "refresh", 10000),
    ("stats refresh 500ms", "refresh", 500),
    ("stats refresh 1m", "refresh", 60000),
    ("stats admin if TRUE", "admin", True),
    ("stats hide-version", "hide_version", True),
]


@pytest.mark.parametrize("body, attr, expected", ACCEPTED)
def test_stats_keywords(tmp_path: Path, body: str, attr: str, expected: Any) -> None:
    p = one_proxy(tmp_path, body or "mode http", section="listen l")
    if not attr:
        assert p.stats is expected
        return
    assert isinstance(p.stats, StatsConfig)
    assert getattr(p.stats, attr) == expected


def test_stats_settings_enable_the_page_and_keep_their_line(tmp_path: Path) -> None:
    p = one_proxy(tmp_path, "mode http\nstats uri /s", section="backend b")
    assert p.stats is not None and p.stats.uri == "/s"
    assert p.stats.where.line == 8  # 6 lines of defaults + section line + mode line


def test_stats_inherited_from_defaults(tmp_path: Path) -> None:
    p = one_proxy(tmp_path, "stats auth x:y", section="listen l", defaults=HTTP_DEFAULTS + "    stats uri /d\n")
    assert p.stats is not None and p.stats.uri == "/d" and p.stats.auth == (("x", "y"),)


@pytest.mark.parametrize("path", ["/metrics", "/prom/m"])
def test_prometheus_exporter(tmp_path: Path, path: str) -> None:
    p = one_proxy(tmp_path, f"http-request use-service prometheus-exporter if {{ path {path} }}", section="listen l")
    assert p.prometheus_path == path


def test_no_prometheus_by_default(tmp_path: Path) -> None:
    assert one_proxy(tmp_path, "mode http", section="listen l").prometheus_path is None


REFUSED: list[tuple[str, str]] = [
    ("stats show-legends", "unsupported keyword 'stats show-legends' in section 'listen' (not implemented by balancier)"),
    ("stats scope b", "unsupported keyword 'stats scope' in section 'listen' (not implemented by balancier)"),
    ("stats admin if LOCALHOST", "'stats admin' only supports 'if TRUE' in balancier (ACL conditions are not "
                                 "implemented; got 'if LOCALHOST')"),
    ("stats admin", "'stats admin' only supports 'if TRUE' in balancier (ACL conditions are not implemented; got '')"),
    ("stats admin if { src 127.0.0.1 }", "'stats admin' only supports 'if TRUE'"),
    ("stats uri", "'stats uri' needs an argument."),
    ("stats uri st", "'stats uri' expects a path starting with '/' (got 'st')."),
    ("stats auth nocolon", "'stats auth' expects <user>:<password> as argument."),
    ("stats refresh 5x", "stats refresh"),
    ("stats enable now", "stats enable"),
    ("stats bogus", "'stats' expects 'enable', 'uri', 'auth', 'realm', 'refresh', 'admin' or 'hide-version' "
                    "(got 'bogus')."),
    ("stats socket /tmp/s", "'stats socket' is only valid in the 'global' section."),
    ("http-request deny", "unsupported keyword 'http-request deny' in section 'listen' (not implemented by "
                          "balancier; only 'http-request use-service prometheus-exporter if { path <path> }', "
                          "'http-request redirect scheme <scheme> [code <code>] [drop-query] [if|unless [!]{ ssl_fc }]' "
                          "and 'http-request set-header <name> <string> [if|unless [!]{ ssl_fc }]' are)"),
    ("http-request use-service lua.x", "'http-request use-service' only supports 'prometheus-exporter if { path "
                                       "<path> }' in balancier (got 'lua.x')."),
    ("http-request use-service prometheus-exporter", "only supports 'prometheus-exporter if { path <path> }'"),
    ("http-request use-service prometheus-exporter if { path_beg /m }", "(got 'prometheus-exporter if { path_beg"),
    ("http-request use-service prometheus-exporter if { path /m } || TRUE", "only supports"),
]


@pytest.mark.parametrize("line, message", REFUSED)
def test_refused(tmp_path: Path, line: str, message: str) -> None:
    text = HTTP_DEFAULTS + "listen l\n    bind 127.0.0.1:8000\n    " + line + "\n"
    alerts = errors(tmp_path, text)
    assert len(alerts) == 1, alerts
    assert alerts[0].startswith("alert x.cfg:8: "), alerts
    assert message in alerts[0], alerts
