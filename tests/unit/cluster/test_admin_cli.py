"""The admin commands' parsing and output without a daemon: arguments, change reports, unreachable daemons, [api] config."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from balancier.cli import build_parser, main
from balancier.cluster.admin import Client, Unreachable, client_from_args, format_change
from balancier.cluster.config import ConfigError, load


def test_parsing() -> None:
    p = build_parser()
    a = p.parse_args(["resource", "migrate", "web", "lb2", "--lifetime", "PT1H", "-s", "/x.sock"])
    assert (a.command, a.resource_command, a.resource, a.node, a.lifetime, a.socket) == \
        ("resource", "migrate", "web", "lb2", "PT1H", "/x.sock")
    a = p.parse_args(["resource", "ban", "web"])
    assert a.node is None
    a = p.parse_args(["node", "standby", "lb1", "--url", "http://127.0.0.1:7080", "--token", "t"])
    assert (a.node_command, a.node, a.url, a.token) == ("standby", "lb1", "http://127.0.0.1:7080", "t")
    a = p.parse_args(["check-cluster", "--expect-nodes", "2", "--state-dir", "/var/lib/x"])
    assert client_from_args(a).socket_path == "/var/lib/x/admin.sock"
    a = p.parse_args(["status", "--json"])
    assert client_from_args(a).socket_path == "/var/lib/balancier/admin.sock"
    with pytest.raises(SystemExit):
        p.parse_args(["status", "-s", "/a", "--url", "http://b"])  # one place to ask, not two


def test_change_report() -> None:
    answer = {"ok": True, "change": "migrate web to lb2", "dc": "lb1", "cib_version": "0.3.0", "changed": True,
              "transition": {"reasons": ["moving web to lb2: preference INFINITY beats 200 on lb1"],
                             "actions": ["stop ip on lb1", "start ip on lb2"]}}
    assert format_change(answer) == (
        "migrate web to lb2: done by the DC lb1 (CIB 0.3.0)\n"
        "  moving web to lb2: preference INFINITY beats 200 on lb1\n"
        "  actions: stop ip on lb1; start ip on lb2")
    answer["changed"] = False
    answer["transition"] = {"reasons": [], "actions": []}
    assert format_change(answer).splitlines() == ["migrate web to lb2: done by the DC lb1 (CIB 0.3.0); nothing changed",
                                                  "  actions: none"]


def test_unreachable_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "admin.sock")
    with pytest.raises(Unreachable, match="No such file or directory"):
        Client(socket_path=missing, timeout=1).request("GET", "/api/status")
    assert main(["check-cluster", "-s", missing]) == 3
    out = capsys.readouterr().out
    assert out == f"CLUSTER UNKNOWN: cannot reach the cluster daemon at {missing}: No such file or directory\n"
    assert main(["status", "-s", missing]) == 1
    assert "cannot reach the cluster daemon" in capsys.readouterr().err
    # something listening that is not our API: still UNKNOWN, with a sentence
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(missing)
        srv.listen(1)
        srv.settimeout(2)
        assert main(["check-cluster", "-s", missing, "--timeout", "0.5"]) == 3
        assert capsys.readouterr().out.startswith("CLUSTER UNKNOWN: cannot reach the cluster daemon at ")
    finally:
        srv.close()


def test_bad_lifetime_is_refused_before_asking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resource", "migrate", "web", "lb2", "--lifetime", "1 week", "-s", str(tmp_path / "x")]) == 1
    assert "--lifetime: '1 week'" in capsys.readouterr().err


def _config(tmp_path: Path, api: str) -> Path:
    key = tmp_path / "authkey"
    key.write_text("auth 1\n1 sha256 secret\n")
    key.chmod(0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nname = "t"\nauthkey_file = "authkey"\n' + api +
                   '[[node]]\nname = "lb1"\naddress = "127.0.0.1:7001"\n'
                   '[[node]]\nname = "lb2"\naddress = "127.0.0.1:7002"\n')
    return cfg


def test_api_configuration(tmp_path: Path) -> None:
    cfg = load(_config(tmp_path, '[api]\nlisten = "127.0.0.1:7080"\nauth_file = "tokens"\n'))
    assert cfg.api_listen == ("127.0.0.1", 7080) and cfg.api_auth_file == str(tmp_path / "tokens")
    assert load(_config(tmp_path, "")).api_listen is None
    with pytest.raises(ConfigError) as exc:
        load(_config(tmp_path, '[api]\nlisten = "127.0.0.1:7080"\n'))
    assert exc.value.errors == [f"{tmp_path / 'c.toml'}:4: api.auth_file: required with api.listen: the HTTP API "
                                f"never runs unauthenticated"]
    with pytest.raises(ConfigError, match="api.listen: '7080': expected"):
        load(_config(tmp_path, '[api]\nlisten = "7080"\nauth_file = "t"\n'))
    with pytest.raises(ConfigError, match="api.lisen: unknown key"):
        load(_config(tmp_path, '[api]\nlisen = "127.0.0.1:1"\n'))
