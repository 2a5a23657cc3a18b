"""External agents: OCF resource agents, LSB init scripts and systemd units, run as programs.

Rules this file governs (spec cluster.md §6, §7):
- OCF: `$OCF_ROOT/resource.d/PROVIDER/TYPE ACTION`, parameters only through the environment
  (OCF_RESKEY_<name>), plus OCF_ROOT, OCF_RA_VERSION_MAJOR/MINOR, OCF_RESOURCE_INSTANCE/TYPE/PROVIDER,
  OCF_RESKEY_CRM_meta_<meta> for every meta-attribute and for timeout (ms), interval (ms), name (the
  action) and on_node, OCF_EXIT_REASON_PREFIX. A probe is `monitor` with interval 0. The agent's
  `ocf-exit-reason:` lines on stderr become the result's exit reason (the last one wins).
- LSB: `/etc/init.d/NAME start|stop|status`, no parameters. monitor and probe call `status`,
  mapped 0->0, 1/2/3->7, 150->5, 151->4, anything else->1; start/stop codes above 7 -> 1.
- systemd: `systemctl start|stop|is-active UNIT` when systemd runs (/run/systemd/system exists);
  otherwise every operation answers 5 ("systemd not running") — and a probe reports "not
  installed here", which is true. is-active: active/activating/reloading -> 0, inactive/
  deactivating/unknown -> 7, failed (or anything else) -> 1 so the cluster stops it before moving it.
  A unit systemctl does not know (exit 5) is rc 5 for start and success for stop (nothing runs).
- The environment handed to an agent is built from scratch (a fixed PATH, LANG=C), never the
  daemon's own: an agent must not depend on how the daemon was started.
- A missing or non-executable program is rc 5 (not installed) with a sentence saying which file.
"""

from __future__ import annotations

import os

from balancier.cluster.agents.base import (
    OCF_ERR_GENERIC,
    OCF_ERR_INSTALLED,
    OCF_ERR_PERM,
    OCF_ERR_UNIMPLEMENTED,
    OCF_NOT_RUNNING,
    OCF_SUCCESS,
    AgentResult,
    ResourceAgent,
    tail,
)
from balancier.cluster.agents.programs import Completed, run_program
from balancier.cluster.model import ResourceConfig

EXIT_REASON_PREFIX = "ocf-exit-reason:"
CRM_FEATURE_SET = "3.16.2"
AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
SYSTEMCTL_NO_SUCH_UNIT = 5  # systemctl's exit status for "Unit ... not found" (LSB: program not installed)
META_DATA_TIMEOUT_MS = 20_000


def ocf_environment(resource: ResourceConfig, provider: str, rtype: str, action: str, *,
                    ocf_root: str, timeout_ms: int, interval_ms: int, node: str | None = None,
                    ) -> dict[str, str]:
    """The environment of one OCF action (spec §6)."""
    env = {
        "PATH": AGENT_PATH,
        "LANG": "C",
        "LC_ALL": "C",
        "OCF_ROOT": ocf_root,
        "OCF_FUNCTIONS_DIR": os.path.join(ocf_root, "lib", "heartbeat"),
        "OCF_RA_VERSION_MAJOR": "1",
        "OCF_RA_VERSION_MINOR": "1",
        "OCF_RESOURCE_INSTANCE": resource.id,
        "OCF_RESOURCE_TYPE": rtype,
        "OCF_RESOURCE_PROVIDER": provider,
        "OCF_EXIT_REASON_PREFIX": EXIT_REASON_PREFIX,
        "OCF_RESKEY_crm_feature_set": CRM_FEATURE_SET,
        "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
        "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
        "OCF_RESKEY_CRM_meta_name": action,
        "HA_LOGFACILITY": "none",
    }
    if node is not None:
        env["OCF_RESKEY_CRM_meta_on_node"] = node
    for name, value in resource.meta:
        # Pacemaker passes meta-attribute names with '-' turned into '_'.
        env[f"OCF_RESKEY_CRM_meta_{name.replace('-', '_')}"] = value
    for name, value in resource.params:
        env[f"OCF_RESKEY_{name}"] = value
    return env


def exit_reason(stderr: str) -> str | None:
    """The last `ocf-exit-reason:` line an agent printed, without the prefix."""
    reason = None
    for line in stderr.splitlines():
        if line.startswith(EXIT_REASON_PREFIX):
            reason = line[len(EXIT_REASON_PREFIX):].strip()
    return reason


def _output(done: Completed) -> str:
    return tail("\n".join(s for s in (done.stdout.rstrip("\n"), done.stderr.rstrip("\n")) if s))


def _missing(path: str) -> AgentResult | None:
    if not os.path.isfile(path):
        return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"{path} does not exist")
    if not os.access(path, os.X_OK):
        return AgentResult(OCF_ERR_INSTALLED, exit_reason=f"{path} is not executable")
    return None


def _timed_out(done: Completed, what: str, timeout_ms: int) -> AgentResult:
    return AgentResult(OCF_ERR_GENERIC, _output(done),
                       exit_reason=f"{what} timed out after {timeout_ms}ms; its process group was killed",
                       timed_out=True)


class OCFAgent(ResourceAgent):
    """`ocf:PROVIDER:TYPE`: a program under $OCF_ROOT/resource.d/."""

    enforces_timeout = True

    def __init__(self, resource: ResourceConfig, provider: str, rtype: str, ocf_root: str = "/usr/lib/ocf",
                 node: str | None = None) -> None:
        super().__init__(resource)
        self.provider, self.rtype, self.ocf_root, self.node = provider, rtype, ocf_root, node
        self.standard = f"ocf:{provider}:{rtype}"
        self.path = os.path.join(ocf_root, "resource.d", provider, rtype)

    async def action(self, action: str, timeout_ms: int, interval_ms: int = 0) -> AgentResult:
        missing = _missing(self.path)
        if missing is not None:
            return missing
        env = ocf_environment(self.resource, self.provider, self.rtype, action, ocf_root=self.ocf_root,
                              timeout_ms=timeout_ms, interval_ms=interval_ms, node=self.node)
        done = await run_program([self.path, action], env, timeout_ms / 1000)
        if done.timed_out:
            return _timed_out(done, f"{self.standard} {action}", timeout_ms)
        assert done.rc is not None
        if action == "meta-data":
            return AgentResult(done.rc, done.stdout, exit_reason(done.stderr))
        return AgentResult(done.rc, _output(done), exit_reason(done.stderr))

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("start", timeout_ms)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("stop", timeout_ms)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        return await self.action("monitor", timeout_ms, 0 if probe else interval_ms)

    async def validate(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("validate-all", timeout_ms)

    async def meta_data(self) -> AgentResult:
        return await self.action("meta-data", META_DATA_TIMEOUT_MS)

    async def reload(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("reload", timeout_ms)

    async def migrate_to(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("migrate_to", timeout_ms)

    async def migrate_from(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self.action("migrate_from", timeout_ms)


def lsb_status_rc(status: int) -> int:
    """Map an LSB `status` exit code to OCF (spec §7, Pacemaker since 1.1.13)."""
    if status == 0:
        return OCF_SUCCESS
    if status in (1, 2, 3):
        return OCF_NOT_RUNNING
    if status == 150:
        return OCF_ERR_INSTALLED
    if status == 151:
        return OCF_ERR_PERM
    return OCF_ERR_GENERIC


def lsb_action_rc(rc: int) -> int:
    """Map an LSB start/stop exit code to OCF: 0..7 keep their OCF meaning, anything else is 1."""
    return rc if 0 <= rc <= 7 else OCF_ERR_GENERIC


LSB_STATUS_WORDS = {0: "running", 1: "dead but pid file exists", 2: "dead but lock file exists",
                    3: "not running", 4: "status unknown", 150: "not installed", 151: "insufficient privilege"}


def lsb_environment() -> dict[str, str]:
    return {"PATH": AGENT_PATH, "LANG": "C", "LC_ALL": "C"}


class LSBAgent(ResourceAgent):
    """`lsb:NAME`: an init script in /etc/init.d (no parameters can be passed)."""

    enforces_timeout = True

    def __init__(self, resource: ResourceConfig, script: str, init_dir: str = "/etc/init.d") -> None:
        super().__init__(resource)
        self.script = script
        self.standard = f"lsb:{script}"
        self.path = os.path.join(init_dir, script)

    async def raw(self, action: str, timeout_ms: int) -> tuple[Completed | None, AgentResult | None]:
        """Run the script with `action`; (completed, None) or (None, the result to report)."""
        missing = _missing(self.path)
        if missing is not None:
            return None, missing
        done = await run_program([self.path, action], lsb_environment(), timeout_ms / 1000)
        if done.timed_out:
            return None, _timed_out(done, f"{self.path} {action}", timeout_ms)
        return done, None

    async def _action(self, action: str, timeout_ms: int) -> AgentResult:
        done, early = await self.raw(action, timeout_ms)
        if done is None:
            assert early is not None
            return early
        assert done.rc is not None
        rc = lsb_action_rc(done.rc)
        reason = None if rc == 0 else f"{self.path} {action} exited with {done.rc}"
        return AgentResult(rc, _output(done), reason)

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self._action("start", timeout_ms)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self._action("stop", timeout_ms)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        done, early = await self.raw("status", timeout_ms)
        if done is None:
            assert early is not None
            return early
        assert done.rc is not None
        rc = lsb_status_rc(done.rc)
        reason = None
        if rc != 0:
            reason = f"status exited with {done.rc} ({LSB_STATUS_WORDS.get(done.rc, 'not an LSB status code')})"
        return AgentResult(rc, _output(done), reason)

    async def meta_data(self) -> AgentResult:
        return AgentResult(OCF_ERR_UNIMPLEMENTED, exit_reason="LSB scripts have no meta-data")


class SystemdAgent(ResourceAgent):
    """`systemd:UNIT` through systemctl; refuses clearly when systemd is not the init system here."""

    enforces_timeout = True

    def __init__(self, resource: ResourceConfig, unit: str, runtime_dir: str = SYSTEMD_RUNTIME_DIR,
                 systemctl: str = "systemctl") -> None:
        super().__init__(resource)
        self.unit = unit if "." in unit else f"{unit}.service"
        self.standard = f"systemd:{unit}"
        self.runtime_dir = runtime_dir
        self.systemctl = systemctl

    def _not_running(self) -> AgentResult | None:
        if not os.path.isdir(self.runtime_dir):
            return AgentResult(OCF_ERR_INSTALLED,
                               exit_reason=f"systemd not running on this host ({self.runtime_dir} is absent); "
                                           f"cannot manage {self.unit}")
        return None

    async def _systemctl(self, args: list[str], timeout_ms: int) -> Completed | AgentResult:
        done = await run_program([self.systemctl, *args], lsb_environment(), timeout_ms / 1000)
        if done.timed_out:
            return _timed_out(done, f"systemctl {' '.join(args)}", timeout_ms)
        return done

    async def _change(self, verb: str, timeout_ms: int) -> AgentResult:
        refused = self._not_running()
        if refused is not None:
            return refused
        done = await self._systemctl([verb, self.unit], timeout_ms)
        if isinstance(done, AgentResult):
            return done
        if done.rc == 0:
            return AgentResult(OCF_SUCCESS, _output(done))
        if done.rc == SYSTEMCTL_NO_SUCH_UNIT:
            if verb == "stop":  # a unit that does not exist here is not running here
                return AgentResult(OCF_SUCCESS, _output(done))
            return AgentResult(OCF_ERR_INSTALLED, _output(done), f"{self.unit} is not installed on this host "
                                                                 f"(systemctl {verb} exited with {done.rc})")
        return AgentResult(OCF_ERR_GENERIC, _output(done), f"systemctl {verb} {self.unit} exited with {done.rc}")

    async def start(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self._change("start", timeout_ms)

    async def stop(self, timeout_ms: int = 20_000) -> AgentResult:
        return await self._change("stop", timeout_ms)

    async def monitor(self, probe: bool = False, timeout_ms: int = 20_000, interval_ms: int = 0) -> AgentResult:
        refused = self._not_running()
        if refused is not None:
            return refused
        done = await self._systemctl(["is-active", self.unit], timeout_ms)
        if isinstance(done, AgentResult):
            return done
        state = done.stdout.strip()
        if state in ("active", "reloading", "activating"):
            return AgentResult(OCF_SUCCESS, state)
        if state in ("inactive", "deactivating", "unknown", ""):
            return AgentResult(OCF_NOT_RUNNING, state)
        return AgentResult(OCF_ERR_GENERIC, state, f"{self.unit} is {state}")

