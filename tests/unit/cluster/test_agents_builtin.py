"""Pure parts of the built-in agents: VIP parameters and announcement packets, the proxy's bind scanner,
the state file, the OCF wrapper's environment reading and the shipped scripts."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from balancier.cluster.agents.metadata import METADATA
from balancier.cluster.agents.ocf_wrapper import resource_from_env, script_text
from balancier.cluster.agents.proxy import Endpoint, config_digest, parse_address, scan_binds
from balancier.cluster.agents.vip import (
    ParamError,
    VipAddress,
    garp_frame,
    parse_params,
    read_state,
    unsolicited_na,
    write_state,
)

ROOT = Path(__file__).resolve().parents[3]
MAC = bytes.fromhex("02aabbccddee")


def _get(**kw: str):
    return lambda name: kw.get(name)


def test_vip_defaults() -> None:
    p = parse_params(_get(ip="10.0.0.100"))
    assert (p.ip, p.prefix, p.nic, p.arp_count, p.arp_interval_ms, p.arp_bg) == \
        (ipaddress.ip_address("10.0.0.100"), 32, None, 5, 200, True)
    assert parse_params(_get(ip="fd00::10")).prefix == 128


@pytest.mark.parametrize(("params", "message"), [
    ({}, "parameter ip is required"),
    ({"ip": "10.0.0.300"}, "is not an IPv4 or IPv6 address"),
    ({"ip": "10.0.0.1", "cidr_netmask": "33"}, "cidr_netmask 33 is out of range 1..32"),
    ({"ip": "10.0.0.1", "cidr_netmask": "24x"}, "is not a whole number"),
    ({"ip": "10.0.0.1", "nic": "eth0:1"}, "no alias names"),
    ({"ip": "10.0.0.1", "nic": "eth0", "label": "averyverylongone"}, "longer than 15 characters"),
    ({"ip": "fd00::1", "label": "x"}, "label applies to IPv4 addresses only"),
])
def test_vip_invalid_params(params: dict[str, str], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        parse_params(_get(**params))


def test_gratuitous_arp_frame() -> None:
    frame = garp_frame(MAC, "10.0.0.100")
    assert len(frame) == 42
    assert frame[0:6] == b"\xff" * 6 and frame[6:12] == MAC
    assert struct.unpack("!H", frame[12:14])[0] == 0x0806
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)  # an ARP request
    sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    assert sha == MAC and spa == tpa == socket.inet_aton("10.0.0.100") and tha == b"\x00" * 6


def test_unsolicited_neighbour_advertisement() -> None:
    pkt = unsolicited_na(MAC, "fd00::10")
    assert len(pkt) == 32
    typ, code, _csum, flags = struct.unpack("!BBHI", pkt[:8])
    assert (typ, code) == (136, 0)
    assert flags == 0x20000000  # override only: not solicited, not a router
    assert pkt[8:24] == socket.inet_pton(socket.AF_INET6, "fd00::10")
    assert pkt[24:26] == b"\x02\x01" and pkt[26:32] == MAC


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "vips.json")
    assert read_state(path) == []
    held = [VipAddress("10.0.0.100", 24, "eth0"), VipAddress("fd00::10", 64, "eth1")]
    write_state(path, held)
    assert read_state(path) == held
    Path(path).write_text("not json")
    assert read_state(path) == []


@pytest.mark.parametrize(("text", "endpoints"), [
    ("127.0.0.1:8080", [Endpoint("tcp", "127.0.0.1", 8080)]),
    (":80", [Endpoint("tcp", "127.0.0.1", 80)]),
    ("*:443,127.0.0.2:81", [Endpoint("tcp", "127.0.0.1", 443), Endpoint("tcp", "127.0.0.2", 81)]),
    ("0.0.0.0:8000-8002", [Endpoint("tcp", "127.0.0.1", p) for p in (8000, 8001, 8002)]),
    ("ipv6@:::80", [Endpoint("tcp", "::1", 80)]),
    ("[::1]:81", [Endpoint("tcp", "::1", 81)]),
    ("unix@/run/x.sock", [Endpoint("unix", "/run/x.sock")]),
    ("abns@name", []),
])
def test_bind_address_parsing(text: str, endpoints: list[Endpoint]) -> None:
    assert parse_address(text) == endpoints


def test_scan_binds_reads_frontends_and_listens_only(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    stats socket /run/s.sock\n"
        "defaults\n    mode http\n"
        "frontend web  # comment\n    bind 127.0.0.1:8080 name web\n    bind 127.0.0.1:8443 ssl crt /x.pem\n"
        "backend app\n    server a 127.0.0.1:9000\n"
        "listen legacy 127.0.0.2:8081\n    server b 127.0.0.1:9001\n"
        "listen stats\n    bind :9999\n    # bind 127.0.0.1:1\n")
    assert [str(e) for e in scan_binds(str(cfg))] == \
        ["127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.2:8081", "127.0.0.1:9999"]
    before = config_digest(str(cfg))
    cfg.write_text(cfg.read_text() + "\n")
    assert config_digest(str(cfg)) != before


def test_wrapper_reads_the_ocf_environment() -> None:
    env = {"OCF_RESOURCE_INSTANCE": "vip1", "OCF_RESKEY_ip": "10.0.0.1", "OCF_RESKEY_nic": "eth0",
           "OCF_RESKEY_CRM_meta_timeout": "20000", "OCF_RESKEY_crm_feature_set": "3.16", "OCF_ROOT": "/x"}
    r = resource_from_env("vip", env)
    assert r.id == "vip1" and r.agent == "balancier:vip"
    assert r.params == (("ip", "10.0.0.1"), ("nic", "eth0"))


@pytest.mark.parametrize("kind", ["vip", "proxy"])
def test_shipped_scripts_are_the_generated_ones(kind: str) -> None:
    """ocf/balancier-* must embed the current meta-data (regenerate with --write-scripts ocf)."""
    path = ROOT / "ocf" / f"balancier-{kind}"
    assert path.read_text() == script_text(kind)
    assert path.stat().st_mode & 0o777 == 0o755
    assert METADATA[kind] in path.read_text()


def test_vip_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root -> 4 (insufficient privileges) before touching any interface."""
    import asyncio

    from balancier.cluster.agents import vip
    from balancier.cluster.model import ResourceConfig

    monkeypatch.setattr(vip.os, "geteuid", lambda: 1000)
    agent = vip.VipAgent(ResourceConfig(id="v", agent="balancier:vip", params=(("ip", "10.0.0.1"), ("nic", "eth0"))))
    for op in ("start", "stop"):
        r = asyncio.run(agent.run(op))
        assert r.rc == 4 and "needs root" in (r.exit_reason or "")
    bad = vip.VipAgent(ResourceConfig(id="v", agent="balancier:vip", params=(("ip", "nope"),)))
    assert asyncio.run(bad.run("start")).rc == 6  # invalid parameters are reported before privileges
