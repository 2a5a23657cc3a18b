"""balancier: a highly available load balancer for web portals.

Two planes in one package: ``balancier proxy`` (an HTTP/TCP reverse proxy configured
in HAProxy's language) and ``balancier cluster`` (a Heartbeat/Pacemaker-style cluster
manager that keeps the proxy and its virtual IP on the best live node).
"""

__version__ = "0.1.0"
