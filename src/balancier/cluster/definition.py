"""What a node reports about the definition a resource runs with (spec cluster.md §2.5: a changed
definition is reloaded, or the resource restarted). The policy engine decides; this file only
measures, on the node that runs the resource.

Rules this file governs:
- Every result the node reports is stamped with three fields (model.OpResult): params_digest (the
  definition's ResourceConfig.params_digest, which the policy engine also computes from the CIB),
  file_digest (what the agent reads besides its parameters) and reloadable.
- file_digest: an agent may offer ``definition_digest() -> str``; balancier:proxy's is the digest
  of its configuration file(s), the same one its reload compares (agents/proxy.config_digest).
  Other agents: "" (they read nothing the cluster knows of). A missing file gives "".
- reloadable: an agent may offer ``can_reload() -> bool``; balancier:proxy can; an OCF agent can
  when its meta-data lists a ``reload`` or ``reload-agent`` action (asked once per definition and
  cached: meta-data runs the agent); LSB, systemd and the other built-in agents cannot.
- A running resource's file is looked at again by watch(): when its digest differs from the one
  last reported, its recurring monitor is run at once, so the change reaches the DC as a monitor
  result (executor results are only reported when they change, and an unchanged rc is no news).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

from balancier.cluster.agents.base import AgentError, ResourceAgent
from balancier.cluster.model import OpResult, ResourceConfig

log = logging.getLogger("balancier.cluster.definition")

_RELOAD_ACTION = re.compile(r"<action\s+[^>]*name\s*=\s*[\"'](reload|reload-agent)[\"']")


def proxy_file_digest(resource: ResourceConfig) -> str:
    from balancier.cluster.agents.proxy import config_digest

    path = resource.param("config")
    if not path:
        return ""
    try:
        return config_digest(path)[:16]
    except OSError:
        return ""


class Definitions:
    """Stamps results with definition digests; remembers the file digest last reported per resource."""

    def __init__(self, agent_of: Callable[[ResourceConfig], ResourceAgent]) -> None:
        self._agent_of = agent_of
        self._reloadable: dict[tuple[str, str], bool] = {}
        self.reported: dict[str, str] = {}  # resource -> file digest in its last reported result

    def _agent(self, resource: ResourceConfig) -> ResourceAgent | None:
        try:
            return self._agent_of(resource)
        except AgentError:
            return None

    def file_digest(self, resource: ResourceConfig) -> str:
        agent = self._agent(resource)
        own: Any = getattr(agent, "definition_digest", None)
        if callable(own):
            try:
                return str(own())
            except OSError:
                return ""
        if resource.agent == "balancier:proxy":
            return proxy_file_digest(resource)
        return ""

    async def learn(self, resource: ResourceConfig) -> bool:
        """Can this resource's agent reload? Asked once per definition (meta-data for OCF agents)."""
        key = (resource.id, resource.params_digest)
        known = self._reloadable.get(key)
        if known is not None:
            return known
        agent = self._agent(resource)
        answer = False
        own: Any = getattr(agent, "can_reload", None)
        if callable(own):
            answer = bool(own())
        elif resource.agent == "balancier:proxy":
            answer = True
        elif agent is not None and resource.agent.startswith("ocf:"):
            try:
                meta = await agent.meta_data()
            except Exception as exc:  # an agent's meta-data bug must not stop its start
                log.warning("meta-data of %s failed: %s", resource.id, exc, extra={"component": "executor"})
            else:
                answer = meta.rc == 0 and bool(_RELOAD_ACTION.search(meta.output))
        self._reloadable[key] = answer
        return answer

    def stamp(self, result: OpResult, resource: ResourceConfig | None) -> OpResult:
        """The result with this node's view of the definition it ran with."""
        if resource is None:
            return result
        digest = self.file_digest(resource)
        if result.op == "stop" and result.ok:
            self.reported.pop(result.resource, None)
        else:
            self.reported[result.resource] = digest
        reloadable = self._reloadable.get((resource.id, resource.params_digest), False)
        return dataclasses.replace(result, params_digest=resource.params_digest, file_digest=digest,
                                   reloadable=reloadable)

    def changed(self, resource: ResourceConfig) -> bool:
        """Does the resource's file digest differ from the one last reported (it runs here)?"""
        last = self.reported.get(resource.id)
        return last is not None and last != "" and self.file_digest(resource) != last
