"""The cluster TOML file: values, defaults, every error with its file:line and key, the key file rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from balancier.cluster.config import ConfigError, load, load_keyring
from balancier.cluster.model import INFINITY, OpConfig

ROOT = Path(__file__).resolve().parents[3]

NODES = '[[node]]\nname = "lb1"\naddress = "10.0.0.1"\n\n[[node]]\nname = "lb2"\naddress = "10.0.0.2:7000"\n'


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    key = tmp_path / "authkey"
    key.write_text("# rotation in progress\nauth 2\n1 sha256 old-secret\n2 sha256 new-secret  # current\n")
    key.chmod(0o600)
    return tmp_path


def write(keydir: Path, cluster: str, rest: str = NODES) -> Path:
    path = keydir / "cluster.toml"
    path.write_text(f'[cluster]\nname = "esup"\nauthkey_file = "authkey"\n{cluster}\n{rest}')
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value.errors


def test_the_example_configuration_is_valid_and_the_cli_says_so() -> None:
    key = ROOT / "examples" / "authkey"
    if not key.exists():
        key.write_text("auth 1\n1 sha256 example-secret-change-me\n")
    key.chmod(0o600)
    cfg = load(ROOT / "examples" / "cluster.toml")
    assert cfg.node_names == ("esup-proxy-1", "esup-proxy-2")
    assert (cfg.keepalive_ms, cfg.warntime_ms, cfg.deadtime_ms, cfg.initdead_ms) == (200, 600, 1000, 5000)
    conf = cfg.configuration
    # the recommended layout: the proxies cloned, the address alone moving (live migration)
    assert [(c.id, c.resource) for c in conf.clones] == [("haproxy-clone", "esup_haproxy"),
                                                         ("stunnel-clone", "esup_stunnel")]
    assert conf.groups == () and conf.allow_migrate("esup_ip")
    assert [(c.resource, c.with_resource) for c in conf.colocations] == [("esup_ip", "haproxy-clone"),
                                                                         ("esup_ip", "stunnel-clone")]
    assert [(loc.resource, loc.node, loc.score) for loc in conf.locations] == [("esup_ip", "esup-proxy-1", 200),
                                                                               ("esup_ip", "esup-proxy-2", 100)]
    assert conf.resource("esup_ip").params == (("ip", "10.0.0.100"), ("cidr_netmask", "24"), ("nic", "eth0"))
    assert conf.resource("esup_ip").ops == (OpConfig("monitor", interval_ms=10_000, timeout_ms=5000),)
    assert conf.options.migration_threshold == 3 and conf.options.failure_timeout_ms == 300_000
    assert conf.options.ping_score_attribute == "pingd"
    out = subprocess.run([sys.executable, "-m", "balancier", "cluster", "check", "-c",
                          str(ROOT / "examples" / "cluster.toml")], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, "configuration valid: 2 nodes, 3 resources\n")


def test_defaults_follow_heartbeat(keydir: Path) -> None:
    cfg = load(write(keydir, ""))
    assert (cfg.keepalive_ms, cfg.warntime_ms, cfg.deadtime_ms, cfg.initdead_ms) == (1000, 5000, 10_000, 20_000)
    assert cfg.port == 694 and cfg.media == ("ucast",) and cfg.auto_failback is True
    assert [(n.name, n.host, n.port) for n in cfg.nodes] == [("lb1", "10.0.0.1", 694), ("lb2", "10.0.0.2", 7000)]
    assert cfg.keyring.send_id == 2 and set(cfg.keyring.keys) == {1, 2}
    assert cfg.configuration.options.stonith_enabled is False and cfg.fence_command is None


@pytest.mark.parametrize("deadtime,initdead", [("30s", 30_000), ("5s", 12_000), ("8s", 16_000), (20, 20_000)])
def test_initdead_default_depends_on_deadtime(keydir: Path, deadtime: str | int, initdead: int) -> None:
    value = f'"{deadtime}"' if isinstance(deadtime, str) else deadtime
    assert load(write(keydir, f'keepalive = "1s"\ndeadtime = {value}')).initdead_ms == initdead


TIMING_ERRORS = [
    ('keepalive = "200ms"\nwarntime = "600ms"\ndeadtime = "500ms"',
     ["cluster.toml:6: cluster.deadtime: must be greater than warntime (600ms)"]),
    ('keepalive = "1s"\nwarntime = "1s"\ndeadtime = "10s"',
     ["cluster.toml:5: cluster.warntime: must be greater than keepalive (1000ms)"]),
    ('keepalive = "1s"\nwarntime = "1500ms"\ndeadtime = "2s"',
     ["cluster.toml:6: cluster.deadtime: must be greater than twice keepalive (2000ms)"]),
    ('deadtime = "10s"\ninitdead = "5s"', ["cluster.toml:5: cluster.initdead: must be at least deadtime (10000ms)"]),
    ('keepalive = "soon"', ["cluster.toml:4: cluster.keepalive: invalid duration 'soon': expected a number "
                            "with an optional unit ms, s, min, h"]),
    ('deadtime = "0s"', ["cluster.toml:4: cluster.deadtime: must be greater than 0"]),
    ('port = 70000', ["cluster.toml:4: cluster.port: must be between 1 and 65535"]),
    ('deadtme = "1s"', ["cluster.toml:4: cluster.deadtme: unknown key (did you mean 'deadtime'?)"]),
    ('transport = "serial"', ["cluster.toml:4: cluster.transport: unknown medium 'serial' (expected ucast, "
                              "mcast or bcast)"]),
    ('transport = "mcast"', ["cluster.toml:1: cluster.mcast_group: required with transport mcast"]),
    ('transport = ["ucast", "mcast"]\nmcast_group = "10.1.1.1"',
     ["cluster.toml:5: cluster.mcast_group: 10.1.1.1 is not in 224.0.0.0/4"]),
    ('ping = ["10.0.0.254", "gateway"]',
     ["cluster.toml:4: cluster.ping: bad target 'gateway': expected \"ip\" (ICMP) or \"ip:port\" (TCP)"]),
]


@pytest.mark.parametrize("cluster,expected", TIMING_ERRORS, ids=[e[1][0].split(": ", 2)[2] for e in TIMING_ERRORS])
def test_cluster_section_errors(keydir: Path, cluster: str, expected: list[str]) -> None:
    got = [e.replace(str(keydir) + "/", "") for e in errors_of(write(keydir, cluster))]
    assert got == expected


def test_several_errors_are_all_reported_with_their_lines(keydir: Path) -> None:
    rest = NODES + (
        '\n[[node]]\nname = "lb1"\naddress = "10.0.0.3:99999"\n'
        '\n[[resource]]\nid = "vip"\nagent = "balancier:vip"\nop.monitor = { interval = "2s", timeout = "5s" }\n'
        'op.promote = { timeout = "5s" }\nmeta = { resource_stickiness = 100, flavour = "x" }\n'
        '\n[[group]]\nid = "g"\nresources = ["vip", "ghost"]\n'
        '\n[options]\nno_quorum_policy = "panic"\nstickyness = 3\n')
    got = [e.replace(str(keydir) + "/", "") for e in errors_of(write(keydir, "", rest))]
    assert got == [
        "cluster.toml:15: node[2].address: bad address '10.0.0.3:99999': expected \"ip\" or \"ip:port\"",
        "cluster.toml:17: resource[0]: resource 'vip': unsupported meta-attribute 'flavour'",
        "cluster.toml:20: resource[0].op.monitor.timeout: must be shorter than the interval (2000ms)",
        "cluster.toml:21: resource[0].op.promote: unsupported operation (expected start, stop, monitor, reload, migrate_to or migrate_from)",
        "cluster.toml:24: group[0]: group 'g': unknown resource 'ghost'",
        "cluster.toml:29: options.no_quorum_policy: 'panic': expected stop, ignore or freeze",
        "cluster.toml:30: options.stickyness: unknown key (did you mean 'stickiness'?)",
    ]


def test_monitor_roles_other_than_started_are_refused_not_ignored(keydir: Path) -> None:
    rest = NODES + ('\n[[resource]]\nid = "vip"\nagent = "balancier:vip"\nop.monitor = [\n'
                    '  { interval = "10s", timeout = "2s", role = "Started" },\n'
                    '  { interval = "20s", timeout = "2s", role = "Stopped" },\n'
                    '  { interval = "30s", timeout = "2s", role = "Master" }]\n')
    got = [e.replace(str(keydir) + "/", "") for e in errors_of(write(keydir, "", rest))]
    why = ("only Started is supported (no promotable clones; rogue starts are found by the probes run when a node "
           "joins, not by role=Stopped monitors)")
    assert got == [f"cluster.toml:16: resource[0].op.monitor[1].role: 'Stopped': {why}",
                   f"cluster.toml:16: resource[0].op.monitor[2].role: 'Master': {why}"]


def test_toml_syntax_errors_carry_the_line(keydir: Path) -> None:
    path = write(keydir, 'keepalive = "1s"\ndeadtime = = 3')
    assert [e.replace(str(keydir) + "/", "") for e in errors_of(path)] == \
        ["cluster.toml:5: Invalid value"]


def test_auto_failback_off_means_infinite_stickiness(keydir: Path) -> None:
    assert load(write(keydir, "auto_failback = false")).configuration.options.stickiness == INFINITY
    assert load(write(keydir, "auto_failback = false", NODES + "[options]\nstickiness = 50\n")
                ).configuration.options.stickiness == 50
    errs = errors_of(write(keydir, "auto_failback = false", NODES + "[options]\nstickiness = 0\n"))
    assert errs[0].endswith("options.stickiness: 0 contradicts cluster.auto_failback = false")


def test_fence_command_enables_fencing(keydir: Path) -> None:
    cfg = load(write(keydir, "", NODES + '[options]\nfence_command = "/usr/sbin/fence --hard"\n'))
    assert cfg.fence_command == ("/usr/sbin/fence", "--hard")
    assert cfg.configuration.options.stonith_enabled is True


def test_constraints_and_meta(keydir: Path) -> None:
    rest = NODES + (
        '[[resource]]\nid = "a"\nagent = "ocf:heartbeat:IPaddr2"\nmeta = { target_role = "Stopped" }\n'
        'op.monitor = [{ interval = "10s", timeout = "2s" }, { interval = "30s", timeout = "5s", on_fail = "stop" }]\n'
        '[[resource]]\nid = "b"\nagent = "lsb:stunnel4"\n'
        '[[colocation]]\nresource = "b"\nwith = "a"\n'
        '[[order]]\nfirst = "a"\nthen = "b"\nkind = "Optional"\n'
        '[[location]]\nid = "ban"\nresource = "b"\nnode = "lb2"\nscore = "-INFINITY"\n')
    conf = load(write(keydir, "", rest)).configuration
    a = conf.resource("a")
    assert a.meta == (("target-role", "Stopped"),)
    assert [(o.interval_ms, o.timeout_ms, o.on_fail) for o in a.ops] == [(10_000, 2000, None), (30_000, 5000, "stop")]
    assert (conf.colocations[0].resource, conf.colocations[0].with_resource, conf.colocations[0].score) == \
        ("b", "a", INFINITY)
    assert (conf.orders[0].first, conf.orders[0].then, conf.orders[0].kind) == ("a", "b", "Optional")
    assert (conf.locations[0].id, conf.locations[0].score) == ("ban", -INFINITY)


def test_media_for_each_node(keydir: Path) -> None:
    cfg = load(write(keydir, 'transport = ["ucast", "mcast", "bcast"]\nmcast_group = "239.0.0.1"\n'
                             'mcast_interface = "eth0"\nbcast_interface = "eth0"\nbcast_address = "10.0.0.255"'))
    ucast, mcast, bcast = cfg.media_for("lb1")
    assert (ucast.bind, ucast.destinations) == (("10.0.0.1", 694), (("10.0.0.2", 7000),))
    assert (mcast.group, mcast.destinations, mcast.interface, mcast.ttl) == \
        ("239.0.0.1", (("239.0.0.1", 694),), "eth0", 1)
    assert bcast.destinations == (("10.0.0.255", 694),)


# ---- the key file ----------------------------------------------------------------------------------


def test_key_file_must_be_private(keydir: Path) -> None:
    (keydir / "authkey").chmod(0o640)
    errs = errors_of(write(keydir, ""))
    assert errs == [f"{keydir}/cluster.toml:3: cluster.authkey_file: bad permissions on key file "
                    f"{keydir}/authkey: mode 0640, must be 0600 (readable by its owner only); refusing to use it"]


def test_key_file_missing(keydir: Path) -> None:
    os.unlink(keydir / "authkey")
    assert "cannot read key file" in errors_of(write(keydir, ""))[0]


@pytest.mark.parametrize("text,message", [
    ("1 sha256 x\n", "no 'auth N' line: no authentication specified"),
    ("auth 3\n1 sha256 x\n", "'auth 3' names a key that is not listed"),
    ("auth 1\n1 crc\n", ":2: method crc authenticates nothing; use sha256"),
    ("auth 1\n1 rot13 x\n", ":2: unknown method 'rot13' (expected sha256, sha1 or md5)"),
    ("auth 1\n1 sha256\n", ":2: key 1 has no secret"),
    ("auth 1\nauth 1\n1 sha256 x\n", ":2: a second 'auth' line"),
    ("auth 1\n16 sha256 x\n", ":2: expected 'auth N' or 'N method secret' with N in 0..15"),
])
def test_key_file_format_errors(tmp_path: Path, text: str, message: str) -> None:
    key = tmp_path / "k"
    key.write_text(text)
    key.chmod(0o600)
    with pytest.raises(ValueError) as exc:
        load_keyring(key)
    assert str(exc.value).endswith(message)


def test_legacy_methods_are_hmacs(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("auth 0\n0 sha1 legacy secret with spaces\n5 md5 older\n")
    key.chmod(0o600)
    ring = load_keyring(key)
    assert ring.send_id == 0 and ring.keys == {0: ("sha1", b"legacy secret with spaces"), 5: ("md5", b"older")}


def test_a_node_may_serve_the_api_on_its_own_address(keydir: Path) -> None:
    # several nodes on one host (the demo, tests) cannot share one [api] listen address
    nodes = ('[[node]]\nname = "lb1"\naddress = "127.0.0.1:7001"\napi = "127.0.0.1:7081"\n\n'
             '[[node]]\nname = "lb2"\naddress = "127.0.0.1:7002"\n')
    cfg = load(write(keydir, "", nodes + '[api]\nlisten = "127.0.0.1:7080"\nauth_file = "users"\n'))
    assert cfg.api_listen_for("lb1") == ("127.0.0.1", 7081)
    assert cfg.api_listen_for("lb2") == ("127.0.0.1", 7080)
    errs = errors_of(write(keydir, "", nodes.replace('"127.0.0.1:7081"', '"nowhere"')))
    assert any(e.endswith("node[0].api: 'nowhere': expected \"host:port\" (e.g. \"127.0.0.1:7081\")") for e in errs)
    assert any(e.endswith("api.auth_file: required with a node's api: the HTTP API never runs unauthenticated")
               for e in errs)
