"""Which agent serves a resource: its `agent` string decides (spec cluster.md §3.1).

Rules this file governs:
- `balancier:vip` and `balancier:proxy` are built in (Python); `ocf:PROVIDER:TYPE` is a program
  under OCF_ROOT; `lsb:NAME` an init script; `systemd:UNIT` a unit; `service:NAME` is lsb when a
  script exists, else systemd (Pacemaker's rule).
- Anything else is an AgentError naming the resource and what is accepted: the configuration is
  wrong, and nothing is started with a guess.
- Looking an agent up never runs it: a missing OCF script is found by the first operation
  (rc 5, "not installed"), on the node where it is missing, as Pacemaker does.
"""

from __future__ import annotations

import os

from balancier.cluster.agents.base import AgentError, ResourceAgent
from balancier.cluster.agents.external import LSBAgent, OCFAgent, SystemdAgent
from balancier.cluster.model import ResourceConfig, agent_parts

BUILTIN_TYPES = ("vip", "proxy")


def agent_for(resource: ResourceConfig, ocf_root: str = "/usr/lib/ocf", *, node: str | None = None,
              init_dir: str = "/etc/init.d") -> ResourceAgent:
    """The agent that runs `resource` on this node."""
    try:
        cls, provider, rtype = agent_parts(resource.agent)
    except ValueError as exc:
        raise AgentError(f"resource {resource.id!r}: {exc}") from None
    if cls == "balancier":
        if rtype == "vip":
            from balancier.cluster.agents.vip import VipAgent

            return VipAgent(resource)
        if rtype == "proxy":
            from balancier.cluster.agents.proxy import ProxyAgent

            return ProxyAgent(resource, node=node)
        raise AgentError(f"resource {resource.id!r}: unknown built-in agent {resource.agent!r}; "
                         f"expected one of {', '.join('balancier:' + t for t in BUILTIN_TYPES)}")
    if cls == "ocf":
        assert provider is not None
        if "/" in provider or "/" in rtype or provider.startswith(".") or rtype.startswith("."):
            raise AgentError(f"resource {resource.id!r}: invalid OCF agent name {resource.agent!r}")
        return OCFAgent(resource, provider, rtype, ocf_root=ocf_root, node=node)
    if "/" in rtype:
        raise AgentError(f"resource {resource.id!r}: invalid agent name {resource.agent!r}")
    if cls == "lsb" or (cls == "service" and os.path.isfile(os.path.join(init_dir, rtype))):
        if resource.params:
            raise AgentError(f"resource {resource.id!r}: LSB scripts take no parameters "
                             f"(got {', '.join(k for k, _ in resource.params)})")
        return LSBAgent(resource, rtype, init_dir=init_dir)
    if cls in ("systemd", "service"):
        return SystemdAgent(resource, rtype)
    raise AgentError(f"resource {resource.id!r}: unsupported agent class {cls!r}")
