"""The pieces of a zero-loss move and a fast takeover outside the policy engine (pure parts).

- balancier:vip's migration guard: the nft script a migration target installs (and removes) so the
  source's connections are not reset by the target's kernel after the gratuitous ARP.
- The ping score's next change: the daemon wakes exactly when a lost ping node stops counting, so a
  node that lost its gateway gives its resources up before its peer may declare it dead.
- The agent base class: migrate_to / migrate_from are dispatched, and unimplemented (rc 3) by default.
"""

from __future__ import annotations

import asyncio
import ipaddress

from balancier.cluster.agents.base import AgentResult, ResourceAgent
from balancier.cluster.agents.vip import parse_params
from balancier.cluster.agents.vip_guard import guard_peers, guard_script, guard_table
from balancier.cluster.model import ResourceConfig
from balancier.cluster.ping import PingScore


def test_guard_script_drops_only_segments_of_unknown_connections() -> None:
    ip = ipaddress.ip_address("10.99.0.10")
    on = guard_script(ip, True)
    assert guard_table(ip) == "bvip_10_99_0_10"
    # idempotent: an old table of the same name goes first, then the rule (not a SYN, conntrack new: drop)
    assert on.startswith("add table ip bvip_10_99_0_10\ndelete table ip bvip_10_99_0_10\n")
    assert "type filter hook input priority 0; policy accept;" in on
    assert "ip daddr 10.99.0.10 tcp flags & syn != syn ct state new drop" in on
    assert guard_script(ip, False) == "add table ip bvip_10_99_0_10\ndelete table ip bvip_10_99_0_10\n"
    v6 = guard_script(ipaddress.ip_address("fd00::10"), True)
    assert "table ip6 bvip_fd00__10" in v6 and "ip6 daddr fd00::10 tcp flags" in v6


def test_guard_hands_segments_back_to_the_peers_of_the_same_family() -> None:
    ip = ipaddress.ip_address("10.99.0.10")
    on = guard_script(ip, True, "eth0", ("10.99.0.11", "fd00::11", "10.99.0.13"))
    assert ('ip daddr 10.99.0.10 tcp flags & syn != syn ct state new dup to 10.99.0.11 device "eth0" '
            'dup to 10.99.0.13 device "eth0" drop') in on
    assert "dup" not in guard_script(ip, True, "", ("10.99.0.11",))  # no interface named: drop only
    assert guard_peers({"migrate_peers": "10.0.0.2 nonsense 10.0.0.3"}.get) == ("10.0.0.2", "10.0.0.3")


def test_vip_migration_parameters() -> None:
    p = parse_params({"ip": "10.0.0.1"}.get)
    assert (p.migrate_drain_ms, p.migrate_guard_ms) == (500, 1000)
    p = parse_params({"ip": "10.0.0.1", "migrate_drain_ms": "0", "migrate_guard_ms": "0"}.get)
    assert (p.migrate_drain_ms, p.migrate_guard_ms) == (0, 0)


def test_ping_score_next_change() -> None:
    ps = PingScore(("gw",), deadping=0.15)
    assert ps.next_change(10.0) is None  # never answered: nothing to lose
    ps.record("gw", True, 10.0)
    assert ps.score(10.149) == 100 and ps.score(10.151) == 0
    due = ps.next_change(10.05)
    assert due is not None and 10.15 < due <= 10.152  # just past the instant the answer stops counting
    assert ps.next_change(10.2) is None


class _Plain(ResourceAgent):
    standard = "test:plain"

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        return AgentResult(0)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        return AgentResult(0)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        return AgentResult(7)


def test_agents_without_migration_say_so() -> None:
    agent = _Plain(ResourceConfig("x", "test:plain"))
    for op in ("migrate_to", "migrate_from"):
        r = asyncio.run(agent.run(op))
        assert r.rc == 3 and "cannot migrate" in (r.exit_reason or "")
