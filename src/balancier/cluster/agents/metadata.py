"""OCF meta-data of the built-in agents (valid per ra-api-1.dtd: xmllint --valid passes).

Rules this file governs:
- One XML document per built-in agent; the OCF scripts under ocf/ embed the same text so that
  `meta-data` works as any user without Python's help (ocf-tester runs it as nobody).
- The DTD allows content types string|integer|boolean|time only, and parameter attributes name,
  required, unique: nothing else is used here.
- Action timeouts are the minimum recommended values (OCF semantics), not defaults we enforce.
"""

from __future__ import annotations

from xml.sax.saxutils import escape


def _param(name: str, short: str, long: str, ctype: str = "string", default: str | None = None,
           required: bool = False, unique: bool = False) -> str:
    dflt = f' default="{escape(default)}"' if default is not None else ""
    return (f'<parameter name="{name}" required="{int(required)}" unique="{int(unique)}">\n'
            f'<longdesc lang="en">{escape(long)}</longdesc>\n'
            f'<shortdesc lang="en">{escape(short)}</shortdesc>\n'
            f'<content type="{ctype}"{dflt}/>\n'
            f'</parameter>\n')


def _document(name: str, short: str, long: str, params: list[str], actions: list[str]) -> str:
    return ('<?xml version="1.0"?>\n'
            '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            f'<resource-agent name="{name}" version="1.0">\n'
            '<version>1.0</version>\n'
            f'<longdesc lang="en">{escape(long)}</longdesc>\n'
            f'<shortdesc lang="en">{escape(short)}</shortdesc>\n'
            '<parameters>\n' + "".join(params) + '</parameters>\n'
            '<actions>\n' + "".join(f"{a}\n" for a in actions) + '</actions>\n'
            '</resource-agent>\n')


VIP_METADATA = _document(
    "balancier-vip", "A virtual IP address, announced by gratuitous ARP / unsolicited NA",
    "Adds a virtual IPv4 or IPv6 address to an interface through netlink, announces it to the "
    "neighbours (gratuitous ARP for IPv4, unsolicited neighbour advertisement for IPv6) and removes it "
    "on stop. Monitor checks that the address is on the interface and the link is up.",
    [
        _param("ip", "Virtual IP address", "The IPv4 or IPv6 address to hold.", required=True, unique=True),
        _param("cidr_netmask", "Prefix length", "Prefix length of the address (default 32 for IPv4, 128 for "
               "IPv6).", "integer"),
        _param("nic", "Interface", "The interface that carries the address (default: the interface the "
               "kernel routes the address through). No alias names such as eth0:1."),
        _param("label", "IPv4 label", "Label suffix: the address is labelled NIC:LABEL (15 characters "
               "at most)."),
        _param("arp_count", "Announcements", "How many gratuitous ARPs or unsolicited neighbour "
               "advertisements to send after start.", "integer", "5"),
        _param("arp_interval_ms", "Announcement interval", "Milliseconds between two announcements.",
               "integer", "200"),
        _param("arp_bg", "Announce in the background", "Send the announcements after the first one in the "
               "background.", "boolean", "true"),
        _param("state_file", "State file", "A file recording the addresses held by this node, for clean-up "
               "at start-up after a crash."),
        _param("migrate_drain_ms", "Drain after a migration", "Live migration (allow-migrate): the source "
               "keeps the address this many milliseconds after migrate_to, so replies to requests it accepted "
               "still leave from it.", "integer", "500"),
        _param("migrate_guard_ms", "Guard after a migration", "Live migration: for this many milliseconds "
               "after migrate_from, the target hands TCP segments of connections it does not know back to "
               "the source (nftables dup), so they are not reset; 0 = off.", "integer", "1000"),
        _param("migrate_peers", "Peer addresses", "Addresses of the other nodes (separated by spaces) that "
               "the guard hands segments to (default: $BALANCIER_CLUSTER_PEERS)."),
    ],
    ['<action name="start" timeout="20s"/>', '<action name="stop" timeout="20s"/>',
     '<action name="migrate_to" timeout="20s"/>', '<action name="migrate_from" timeout="20s"/>',
     '<action name="monitor" timeout="20s" interval="10s" depth="0"/>',
     '<action name="validate-all" timeout="20s"/>', '<action name="meta-data" timeout="5s"/>'],
)

PROXY_METADATA = _document(
    "balancier-proxy", "The balancier HTTP/TCP reverse proxy",
    "Runs `balancier proxy -D` with an HAProxy-language configuration file. Start checks the configuration "
    "first (invalid: not configured) and returns once every bind accepts connections. Monitor checks the "
    "process and that every listener accepts a TCP connection. Stop asks for a soft stop (SIGUSR1: "
    "in-flight requests finish) and escalates to SIGTERM then SIGKILL at the operation timeout. Reload "
    "starts a new process with the changed configuration, which takes the listeners over from the old one "
    "(-sf) without refusing connections.",
    [
        _param("config", "Configuration file", "Path of the HAProxy-language configuration file.",
               required=True, unique=True),
        _param("pidfile", "Pid file", "Where the proxy writes its pid (default /run/balancier-RESOURCE.pid).",
               unique=True),
        _param("runtime_socket", "Runtime API socket", "UNIX socket of the runtime API, when the "
               "configuration declares one (stats socket); monitor asks it `show info`."),
        _param("extra_args", "Extra arguments", "More arguments for `balancier proxy`, separated by spaces."),
        _param("binary", "Program", "The balancier program (default: balancier on PATH).", default="balancier"),
    ],
    ['<action name="start" timeout="20s"/>', '<action name="stop" timeout="30s"/>',
     '<action name="monitor" timeout="20s" interval="10s" depth="0"/>',
     '<action name="reload" timeout="20s"/>',
     '<action name="validate-all" timeout="20s"/>', '<action name="meta-data" timeout="5s"/>'],
)

METADATA = {"vip": VIP_METADATA, "proxy": PROXY_METADATA}
