"""The bed's generated configurations are the seed's, with the bed's addresses, and load cleanly.

No namespace is created here: a Testbed that is not brought up only names hosts and addresses.
"""

from __future__ import annotations

from pathlib import Path

from balancier.cluster.config import load as load_cluster
from balancier.proxy.config import load as load_proxy
from balancier.testbed.deployment import ClusterDeployment, ClusterTimers, KeepalivedDeployment, proxy_config
from balancier.testbed.topology import HOSTS, VIP, Testbed


def test_addresses_stay_in_the_test_subnet() -> None:
    assert all(a.startswith("10.99.0.") for a in HOSTS.values()) and VIP == "10.99.0.10"
    assert len(set(HOSTS.values())) == len(HOSTS) and VIP not in HOSTS.values()
    tb = Testbed(prefix="bt0-", workdir="/nonexistent")
    assert tb.ns("lb1") == "bt0-lb1" and tb.switch == "bt0-sw" and tb.host_of("10.99.0.12") == "lb2"


def test_proxy_config_is_the_seeds_with_bed_addresses(tmp_path: Path) -> None:
    tb = Testbed(prefix="bt0-", workdir=tmp_path)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(proxy_config(tb))
    config, _ = load_proxy([str(cfg)])
    (px,) = [p for p in config.proxies if p.name == "esup-proxy"]
    servers = {s.name: s for s in px.servers}
    assert [(n, servers[n].weight) for n in ("ents3", "ents2", "ents1")] == [("ents3", 256), ("ents2", 128),
                                                                            ("ents1", 1)]
    assert servers["ent-maintenance"].backup and not servers["ents3"].backup
    assert (servers["ents2"].host, servers["ents2"].port) == (HOSTS["ents2"], 80)
    assert servers["ents3"].cookie == "s3" and servers["ents3"].check
    assert px.cookie is not None and px.cookie.name == "JSESSIONID"


def test_cluster_config_has_equal_timers_and_the_seed_group(tmp_path: Path) -> None:
    tb = Testbed(prefix="bt0-", workdir=tmp_path)
    cd = ClusterDeployment(tb, ClusterTimers(keepalive_ms=100, deadtime_ms=300), stickiness=0, ping_gateway="tcp",
                           layout="group")
    cfg = load_cluster(str(cd.config))
    assert (cfg.keepalive_ms, cfg.deadtime_ms) == (100, 300) and cfg.keepalive_ms < cfg.warntime_ms < 300
    assert cfg.ping == (f"{HOSTS['gateway']}:9",)
    group = cfg.configuration.groups[0]
    assert group.id == "esup_proxy" and list(group.resources) == ["vip", "proxy"]
    assert cd.moving == "esup_proxy"
    vip = cfg.configuration.resource("vip")
    assert vip is not None and dict(vip.params)["ip"] == VIP
    sticky = load_cluster(str(ClusterDeployment(tb, stickiness=1000, name="c2").config))
    assert sticky.auto_failback is False


def test_cluster_config_default_layout_clones_the_proxy_and_moves_the_vip(tmp_path: Path) -> None:
    cd = ClusterDeployment(Testbed(prefix="bt0-", workdir=tmp_path))
    conf = load_cluster(str(cd.config)).configuration
    assert conf.groups == () and cd.moving == "vip"
    assert [(c.id, c.resource) for c in conf.clones] == [("proxy-clone", "proxy")]
    assert {(loc.resource, loc.node, loc.score) for loc in conf.locations} == {("vip", "lb1", 200), ("vip", "lb2", 100)}


def test_keepalived_config_mirrors_the_reference(tmp_path: Path) -> None:
    kd = KeepalivedDeployment(Testbed(prefix="bt0-", workdir=tmp_path), advert_ms=100)
    lb1, lb2 = kd.config("lb1"), kd.config("lb2")
    assert "vrrp_version 3" in lb1 and "advert_int 0.1" in lb1 and "vrrp_garp_master_repeat 5" in lb1
    assert "state MASTER" in lb1 and "priority 200" in lb1 and f"unicast_peer {{\n    {HOSTS['lb2']}" in lb1
    assert "state BACKUP" in lb2 and "priority 100" in lb2 and f"unicast_src_ip {HOSTS['lb2']}" in lb2
    assert f"{VIP}/24 dev eth0" in lb2
