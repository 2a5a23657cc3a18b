"""Resource agents: the OCF contract (base), built-in agents (vip, proxy), external programs (OCF, LSB,
systemd), the registry that picks one for a resource, the LSB compliance checker and the OCF wrapper
that lets Pacemaker run the built-in agents.

Entry points: `agent_for(resource)` (registry), `ResourceAgent`/`AgentResult`/`classify` (base),
`lsb_compliance(name)` (lsb_check), `vip.release_all(vip.read_state(path))` (start-up clean-up).
"""

from balancier.cluster.agents.base import AgentError, AgentResult, ResourceAgent, classify
from balancier.cluster.agents.lsb_check import lsb_compliance
from balancier.cluster.agents.registry import agent_for

__all__ = ["AgentError", "AgentResult", "ResourceAgent", "agent_for", "classify", "lsb_compliance"]
