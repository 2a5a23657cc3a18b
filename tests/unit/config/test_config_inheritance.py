"""defaults sections: reset to built-in values, most recent wins, named defaults with `from` (spec 2.6)."""

from __future__ import annotations

from pathlib import Path

from proxycfg_helpers import errors, parse_ok

TEXT = """defaults
    mode http
    retries 5
    timeout connect 1s
    timeout client 2s
    timeout server 3s
    option httpclose
    option redispatch
    option forwardfor
    cookie SRV insert
    default-server inter 9s
    http-reuse always
backend first
    server s 127.0.0.1:1
defaults
    timeout connect 4s
backend second
    server s 127.0.0.1:1
defaults named
    mode http
    timeout server 7s
    maxconn 77
defaults child from named
    timeout client 8s
defaults
    mode http
backend third from named
    server s 127.0.0.1:1
backend fourth from child
    server s 127.0.0.1:1
backend fifth
    retries 1
    timeout connect 11s
    server s 127.0.0.1:1
"""


def test_inheritance_chain(tmp_path: Path) -> None:
    config = parse_ok(tmp_path, TEXT)
    first, second, third, fourth, fifth = config.proxies
    # first: everything from the first defaults section
    assert (first.mode, first.retries, first.http_conn_mode, first.redispatch, first.http_reuse) == (
        "http", 5, "clo", -1, "always")
    assert (first.timeouts.connect, first.timeouts.client, first.timeouts.server) == (1000, 2000, 3000)
    assert first.forwardfor is not None and first.cookie is not None and first.cookie.mode == "insert"
    assert first.servers[0].inter == 9000
    # second: the second defaults section reset everything to built-in values
    assert (second.mode, second.retries, second.http_conn_mode, second.redispatch, second.http_reuse) == (
        "tcp", 3, "kal", None, "safe")
    assert (second.timeouts.connect, second.timeouts.client, second.timeouts.server) == (4000, None, None)
    assert second.forwardfor is None and second.cookie is None and second.servers[0].inter == 2000
    # third: 'from named' although a later unnamed defaults section exists
    assert (third.timeouts.server, third.maxconn, third.timeouts.client) == (7000, 77, None)
    # fourth: child inherits from named, then adds its own
    assert (fourth.timeouts.server, fourth.maxconn, fourth.timeouts.client) == (7000, 77, 8000)
    # fifth: the most recent defaults section (plain 'mode http')
    assert (fifth.mode, fifth.maxconn, fifth.timeouts.server, fifth.retries, fifth.timeouts.connect) == (
        "http", 0, None, 1, 11000)


def test_overriding_an_inherited_timeout_does_not_warn(tmp_path: Path) -> None:
    # HAProxy warns only when the same section sets the timeout twice.
    config = parse_ok(tmp_path, TEXT)
    assert config.proxy("fifth").timeouts.connect == 11000


def test_defaults_values_are_not_shared_between_proxies(tmp_path: Path) -> None:
    text = "defaults\n    mode http\n    timeout client 1s\n    timeout connect 1s\n    timeout server 1s\n" \
           "    default-server weight 5\nbackend a\n    default-server weight 6\n    server s 127.0.0.1:1\n" \
           "backend b\n    server s 127.0.0.1:1\n"
    config = parse_ok(tmp_path, text)
    assert (config.proxy("a").servers[0].weight, config.proxy("b").servers[0].weight) == (6, 5)


def test_ambiguous_named_defaults(tmp_path: Path) -> None:
    text = "defaults d\n    mode http\ndefaults d\n    mode tcp\nbackend b from d\n"
    got = errors(tmp_path, text)
    assert got == ["alert x.cfg:5: defaults section 'd' used by backend 'b' is ambiguous: it is declared at "
                   f"{tmp_path / 'x.cfg'}:1 and {tmp_path / 'x.cfg'}:3.".replace(str(tmp_path) + "/", "")]


def test_http_check_rules_from_defaults_are_replaced_per_kind(tmp_path: Path) -> None:
    text = "defaults\n    mode http\n    timeout client 1s\n    timeout connect 1s\n    timeout server 1s\n" \
           "    option httpchk GET /\n    http-check expect status 200\n    http-check send hdr Host a\n" \
           "backend b\n    http-check expect status 204\n    server s 127.0.0.1:1 check\n"
    httpchk = parse_ok(tmp_path, text).proxy("b").httpchk
    assert httpchk is not None
    assert (httpchk.method, httpchk.expect.pattern if httpchk.expect else None, httpchk.headers) == (
        "GET", "204", (("Host", "a"),))
