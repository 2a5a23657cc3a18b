"""The namespace test bed: the reference deployment rebuilt from Linux network namespaces.

- ``topology``: the hosts (a bridge in its own namespace, lb1/lb2, three application servers, a
  maintenance server, a client, a gateway), their processes, and fault injection with nftables.
- ``probe``: the client probe (a new TCP connection and ``GET /`` every 10 ms) and the outage it saw.
- ``deployment``: the configuration files and processes of a deployment on the bed: the portal
  servers, ``balancier cluster`` on lb1/lb2 (``balancier:vip`` + ``balancier:proxy``) or keepalived
  moving the same VIP in front of always-running proxies.
- ``scenarios``: one measured event: the probe around a fault injected at a random phase (hard failure,
  return of a node), and the exact VIP timeline of lb1/lb2 from ``ip monitor`` (double-VIP time).

- ``drill_plan`` (pure: scenarios, plans, limits, verdicts, the report), ``drill_runner`` (runs a plan with a
  pluggable fault injector and probe: command templates for a real cluster, the demo's processes),
  ``drill_netns`` (the namespace injector and probe) and ``drill`` (the ``balancier drill`` command).

Used by ``tests/e2e``, ``bench/failover`` and the failure drill. Needs root and iproute2/nftables.
"""
