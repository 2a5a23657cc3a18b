"""The migration guard of `balancier:vip` (rules in vip.py's docstring, "Live migration").

For a while after a migration target added the address, TCP segments to it that belong to no
connection the target knows (not a SYN, conntrack state new) are handed back to the source (nft
``dup to`` every peer address: only the node still holding the address accepts them) and the
target's own copy is dropped, instead of its kernel answering them with a reset. One nftables table
``bvip_<address>`` per address, input hook; run through the ``nft`` program.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address



def guard_table(ip: Address) -> str:
    return "bvip_" + "".join(c if c.isalnum() else "_" for c in str(ip))


def guard_script(ip: Address, on: bool, nic: str = "", peers: tuple[str, ...] = ()) -> str:
    """The nft script that installs (on) or removes the guard of a migration target (pure).

    peers: addresses the source may have (segments are duplicated to each of them on nic, then dropped here);
    those of the other IP version than the VIP are left out.
    """
    fam = "ip" if ip.version == 4 else "ip6"
    table = guard_table(ip)
    reset = f"add table {fam} {table}\ndelete table {fam} {table}\n"
    if not on:
        return reset
    back = "".join(f' dup to {peer} device "{nic}"' for peer in peers
                   if nic and _version(peer) == ip.version)
    return reset + (f"table {fam} {table} {{\n  chain input {{\n"
                     "    type filter hook input priority 0; policy accept;\n"
                     f"    {fam} daddr {ip} tcp flags & syn != syn ct state new{back} drop\n  }}\n}}\n")


def _version(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def guard_peers(get: Any) -> tuple[str, ...]:
    """The addresses a migration's source may have: param migrate_peers, else $BALANCIER_CLUSTER_PEERS."""
    text = get("migrate_peers") or os.environ.get(PEERS_ENV, "")
    return tuple(a for a in text.split() if _version(a))


PEERS_ENV = "BALANCIER_CLUSTER_PEERS"


def set_guard(ip: Address, on: bool, nic: str = "", peers: tuple[str, ...] = ()) -> str | None:
    """Install or remove the guard (blocking); None when done, else why not."""
    nft = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if nft is None:
        return "nft is not installed"
    try:
        proc = subprocess.run([nft, "-f", "-"], input=guard_script(ip, on, nic, peers), capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nft: {exc}"
    return None if proc.returncode == 0 else f"nft: {proc.stderr.strip()[:200]}"
