"""server and default-server lines: addresses, every supported parameter, HAProxy's error texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config.model import ServerConfig

from proxycfg_helpers import HTTP_DEFAULTS, errors, one_proxy

ADDRESSES = [
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("127.0.0.1", ("127.0.0.1", None)),  # no port: the client's port
    ("127.0.0.1:", ("127.0.0.1", None)),
    ("[::1]:8080", ("::1", 8080)),
    ("[2001:db8::1]", ("2001:db8::1", None)),
    ("2001:db8::1:80", ("2001:db8::1", 80)),  # bare IPv6: the port follows the last colon
    ("ipv4@10.0.0.1:81", ("10.0.0.1", 81)),
    ("ipv6@[::1]:82", ("::1", 82)),
    ("app.example:8000", ("10.1.2.3", 8000)),
    ("v6.example:8001", ("2001:db8::7", 8001)),
]


@pytest.mark.parametrize(("addr", "expected"), ADDRESSES)
def test_server_addresses(tmp_path: Path, addr: str, expected: tuple[str, int | None]) -> None:
    s = one_proxy(tmp_path, f"server s {addr}").servers[0]
    assert (s.host, s.port) == expected


PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("", {"weight": 1, "check": False, "inter": 2000, "rise": 2, "fall": 3, "backup": False, "cookie": None,
          "maxconn": 0, "minconn": 0, "maxqueue": 0, "disabled": False, "fastinter": None, "downinter": None,
          "check_port": None, "check_addr": None}),
    ("weight 0", {"weight": 0}),
    ("weight 256", {"weight": 256}),
    ("cookie s3", {"cookie": "s3"}),
    ("check", {"check": True}),
    ("check port 81", {"check": True, "check_port": 81}),
    ("check no-check", {"check": False}),
    ("check inter 5000 rise 1 fall 3", {"check": True, "inter": 5000, "rise": 1, "fall": 3}),
    ("inter 2s fastinter 500ms downinter 1m", {"inter": 2000, "fastinter": 500, "downinter": 60000}),
    ("port 8081", {"check_port": 8081}),
    ("addr 127.0.0.9", {"check_addr": "127.0.0.9"}),
    ("addr 127.0.0.9:9000", {"check_addr": "127.0.0.9", "check_port": 9000}),
    ("backup", {"backup": True}),
    ("backup no-backup", {"backup": False}),
    ("maxconn 10 minconn 2 maxqueue 5", {"maxconn": 10, "minconn": 2, "maxqueue": 5}),
    ("disabled", {"disabled": True}),
    ("disabled enabled", {"disabled": False}),
]


@pytest.mark.parametrize(("params", "fields"), PARAMS)
def test_server_params(tmp_path: Path, params: str, fields: dict[str, Any]) -> None:
    s = one_proxy(tmp_path, f"server s 127.0.0.1:80 {params}").servers[0]
    assert {k: getattr(s, k) for k in fields} == fields


def test_default_server_applies_to_later_servers(tmp_path: Path) -> None:
    px = one_proxy(tmp_path, "server a 127.0.0.1:1\ndefault-server check inter 3s rise 4 weight 10\n"
                             "server b 127.0.0.1:2\nserver c 127.0.0.1:3 inter 1s no-check weight 20")
    a, b, c = px.servers
    assert (a.check, a.inter, a.rise, a.weight) == (False, 2000, 2, 1)
    assert (b.check, b.inter, b.rise, b.weight) == (True, 3000, 4, 10)
    assert (c.check, c.inter, c.rise, c.weight) == (False, 1000, 4, 20)


def test_default_server_inherited_from_defaults(tmp_path: Path) -> None:
    px = one_proxy(tmp_path, "server a 127.0.0.1:1", defaults=HTTP_DEFAULTS + "    default-server fall 7 maxconn 9\n")
    assert (px.servers[0].fall, px.servers[0].maxconn) == (7, 9)


def test_server_where_and_order(tmp_path: Path) -> None:
    px = one_proxy(tmp_path, "server z 127.0.0.1:1\nserver a 127.0.0.1:2")
    assert [s.name for s in px.servers] == ["z", "a"]
    assert [s.where.line for s in px.servers] == [7, 8]
    assert isinstance(px.servers[0], ServerConfig)


SERVER_ERRORS = [
    ("server s1 127.0.0.1:80 weight 300", "'server b/s1' : weight of server s1 is not within 0 and 256 (300)."),
    ("server s1 127.0.0.1:80 weight -1", "'server b/s1' : weight of server s1 is not within 0 and 256 (-1)."),
    ("server s1 127.0.0.1:80 weight abc", "'server b/s1' : weight of server s1 is not within 0 and 256 (abc)."),
    ("server s3 127.0.0.1:80 rise 0", "'server b/s3' : 'rise' has to be > 0."),
    ("server s3 127.0.0.1:80 fall 0", "'server b/s3' : 'fall' has to be > 0."),
    ("server s3 127.0.0.1:80 rise x", "'server b/s3' : 'rise' expects an integer argument (got 'x')."),
    ("server s4 127.0.0.1:80 inter 0", "'server b/s4' : invalid value 0 for argument 'inter' of server s4."),
    ("server s5 127.0.0.1:80 inter 99999999999", "'server b/s5' : timer overflow in argument <99999999999> to "
                                                 "<inter> of server s5, maximum value is 2147483647 ms (~24.8 days)."),
    ("server s7 127.0.0.1:80 fastinter 10x", "'server b/s7' : unexpected character 'x' in 'fastinter' argument of "
                                             "server s7."),
    ("server s 127.0.0.1:80 inter", "'server b/s' : 'inter' expects an argument."),
    ("server s 127.0.0.1:80 maxconn -3", "'server b/s' : 'maxconn' expects a positive integer argument (got '-3')."),
    ("server s 127.0.0.1:80 port 0", "'server b/s' : invalid port '0' for 'port' (expects 1 to 65535)."),
    ("server s 127.0.0.1:80 ssl verify optional", "'server b/s' : 'verify' : unknown verify method 'optional', only "
                                                  "'none' and 'required' are supported"),
    ("server s 127.0.0.1:80 track b/t", "'server b/s' : unsupported server parameter 'track' (not implemented by "
                                        "balancier)"),
    ("server s 127.0.0.1:80 slowstart 10s", "'server b/s' : unsupported server parameter 'slowstart' (not "
                                            "implemented by balancier)"),
    ("server s 127.0.0.1:80 agent-check", "'server b/s' : unsupported server parameter 'agent-check' (not "
                                          "implemented by balancier)"),
    ("server s 127.0.0.1:80 chek", "'server b/s' : unknown keyword 'chek'; did you mean 'check'?"),
    ("server s 127.0.0.1:80 frob", "'server b/s' : unknown keyword 'frob'"),
    ("server s 127.0.0.1:99999", "'server b/s' : invalid port '99999' in '127.0.0.1:99999'"),
    ("server s 127.0.0.1:80-90", "'server b/s' : port ranges are not supported in '127.0.0.1:80-90' (not "
                                 "implemented by balancier)"),
    ("server s 127.0.0.1:+1", "'server b/s' : port offsets are not supported in '127.0.0.1:+1' (not implemented "
                              "by balancier)"),
    ("server s /run/app.sock", "'server b/s' : UNIX socket path '/run/app.sock' is not supported (not implemented "
                               "by balancier)"),
    ("server s unix@/run/app.sock", "'server b/s' : address family 'unix@' in 'unix@/run/app.sock' is not "
                                    "supported (not implemented by balancier)"),
    ("server s nowhere.invalid:80", "'server b/s' : could not resolve address 'nowhere.invalid'"),
    ("server s ipv4@[::1]:80", "'server b/s' : address '::1' does not match the family of 'ipv4@[::1]:80'"),
    ("server s", "'server' expects <name> and <addr>[:<port>] as arguments (got 1)."),
    ("server s/x 127.0.0.1", "character '/' is not permitted in server name 's/x'."),
    ("server s1 127.0.0.1:80\n    server s1 127.0.0.1:81", "backend 'b', another server named 's1' was already "
                                                             "defined at line 7, please use distinct names."),
    ("server s 127.0.0.1 check", "backend 'b': server 's' has neither service port nor check port."),
    ("default-server check\n    server s 127.0.0.1", "backend 'b': server 's' has neither service port nor check "
                                                      "port."),
    ("default-server cookie x", "'default-server' : 'cookie' is not permitted on 'default-server' lines."),
    ("default-server weight 999", "'default-server' : weight of server default-server is not within 0 and 256 "
                                  "(999)."),
]


@pytest.mark.parametrize(("line", "message"), SERVER_ERRORS)
def test_server_errors(tmp_path: Path, line: str, message: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + f"backend b\n    {line}\n")
    assert len(got) == 1
    assert got[0].split(": ", 1)[1] == message


def test_check_without_service_port_needs_a_check_port(tmp_path: Path) -> None:
    s = one_proxy(tmp_path, "server t 127.0.0.1 check port 81").servers[0]
    assert (s.port, s.check, s.check_port) == (None, True, 81)
