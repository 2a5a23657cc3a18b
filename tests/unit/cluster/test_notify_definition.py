"""The notify hook (notify.py) with real scripts, and what a node stamps on its results (definition.py).

Notifier: argv and environment as documented, events in order, a hung hook killed (its whole group)
at the timeout, a failing or missing command logged, notify() never waiting. Definitions: file
digests of balancier:proxy, reload ability from OCF meta-data (asked once), stamping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from balancier.cluster.agents.base import OCF_SUCCESS, AgentResult, ResourceAgent
from balancier.cluster.definition import Definitions
from balancier.cluster.model import OpResult, ResourceConfig
from balancier.cluster.notify import Notifier


def _script(tmp: Path, body: str) -> str:
    path = tmp / "hook.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_hook_gets_argv_and_environment_in_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = _script(tmp_path, f'printf "%s|%s|%s|%s|%s|%s\\n" "$1" "$2" "$3" "$4" "$BALANCIER_EVENT" '
                             f'"$BALANCIER_CLUSTER/$BALANCIER_LOCAL_NODE/$BALANCIER_RESOURCE" >> {out}\n')

    async def go() -> None:
        n = Notifier((hook,), "web", "lb1", 5_000)
        t0 = time.monotonic()
        n.notify("dc-elected", "lb1", None, "lb1 is the DC; it won")
        n.notify("resource-started", "lb2", "vip", "vip started on lb2")
        assert time.monotonic() - t0 < 0.05  # queued, not run
        await n.close(grace=10)
    asyncio.run(go())
    assert out.read_text().splitlines() == [
        "dc-elected|lb1||lb1 is the DC; it won|dc-elected|web/lb1/",
        "resource-started|lb2|vip|vip started on lb2|resource-started|web/lb1/vip"]


def test_hung_hook_is_killed_with_its_group_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pids = tmp_path / "pids"
    hook = _script(tmp_path, f"sleep 30 & echo $! >> {pids}\nsleep 30\n")

    async def go() -> float:
        n = Notifier((hook,), "web", "lb1", 300)
        t0 = time.monotonic()
        n.notify("node-dead", "lb2", None, "lb2 is dead")
        await n.close(grace=5)
        assert n.failures == 1
        return time.monotonic() - t0
    with caplog.at_level(logging.WARNING, logger="balancier.cluster.notify"):
        took = asyncio.run(go())
    assert took < 4
    assert "killed after 0.3s (timeout)" in caplog.text
    child = int(pids.read_text().split()[0])
    time.sleep(0.1)
    assert _dead(child)  # the hook's background child died with its group


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaped yet (its parent, the hook, was killed first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_failing_and_missing_hooks_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = _script(tmp_path, "echo 'cannot reach the DNS' >&2\nexit 3\n")

    async def go() -> None:
        n = Notifier((bad,), "web", "lb1", 5_000)
        n.notify("resource-failed", "lb1", "proxy", "monitor of proxy on lb1 failed (rc=7)")
        await n.close(grace=5)
        missing = Notifier((str(tmp_path / "nope"),), "web", "lb1", 5_000)
        missing.notify("node-up", "lb2", None, "lb2 is up")
        await missing.close(grace=5)
        assert n.failures == 1 and missing.failures == 1
    with caplog.at_level(logging.WARNING, logger="balancier.cluster.notify"):
        asyncio.run(go())
    assert "exited with 3: cannot reach the DNS" in caplog.text
    assert "could not run" in caplog.text


def test_no_command_means_nothing_runs_and_unknown_events_are_bugs() -> None:
    n = Notifier(None, "web", "lb1")
    n.notify("node-up", "lb2", None, "x")
    assert n.pending() == 0 and n.runs == 0
    with pytest.raises(ValueError, match="unknown notify event"):
        n.notify("became-master", "lb1", None, "x")


class _Agent(ResourceAgent):
    def __init__(self, resource: ResourceConfig, meta: str) -> None:
        super().__init__(resource)
        self.meta = meta
        self.asked = 0

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        return AgentResult(OCF_SUCCESS)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        return AgentResult(OCF_SUCCESS)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        return AgentResult(OCF_SUCCESS)

    async def meta_data(self) -> AgentResult:
        self.asked += 1
        return AgentResult(OCF_SUCCESS, self.meta)


@pytest.mark.parametrize(("actions", "reloadable"), [
    ('<action name="start" timeout="5s"/><action name="reload" timeout="5s"/>', True),
    ("<action name='reload-agent' timeout='5s'/>", True),
    ('<action name="start"/><action name="monitor" interval="10s"/>', False),
])
def test_ocf_reload_ability_comes_from_meta_data(actions: str, reloadable: bool) -> None:
    res = ResourceConfig("d", "ocf:heartbeat:Dummy", params=(("state", "/x"),))
    agent = _Agent(res, f"<resource-agent><actions>{actions}</actions></resource-agent>")
    d = Definitions(lambda r: agent)
    assert asyncio.run(d.learn(res)) is reloadable
    assert asyncio.run(d.learn(res)) is reloadable and agent.asked == 1  # cached per definition
    stamped = d.stamp(OpResult("d", "lb1", "start", 0), res)
    assert (stamped.params_digest, stamped.file_digest, stamped.reloadable) == (res.params_digest, "", reloadable)


def test_proxy_file_digest_follows_its_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "p.cfg"
    cfg.write_text("listen a\n    bind 127.0.0.1:1\n")
    res = ResourceConfig("proxy", "balancier:proxy", params=(("config", str(cfg)),))
    agent = _Agent(res, "")
    d = Definitions(lambda r: agent)
    assert asyncio.run(d.learn(res)) is True and agent.asked == 0
    first = d.stamp(OpResult("proxy", "lb1", "start", 0), res)
    assert first.reloadable and len(first.file_digest) == 16
    assert not d.changed(res)
    cfg.write_text("listen a\n    bind 127.0.0.1:2\n")
    assert d.changed(res)
    second = d.stamp(OpResult("proxy", "lb1", "monitor", 0, interval_ms=1000), res)
    assert second.file_digest not in ("", first.file_digest) and not d.changed(res)
    d.stamp(OpResult("proxy", "lb1", "stop", 0), res)
    cfg.write_text("changed again while stopped\n")
    assert not d.changed(res)  # not running here: nothing to watch
    cfg.unlink()
    assert d.file_digest(res) == ""
