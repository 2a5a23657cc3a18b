"""``balancier proxy-cli SOCKET 'command[; command...]'``: send one line to a stats socket and print the answer.

Rules:
- SOCKET is a UNIX socket path or ``[ipv4@|ipv6@]host:port`` (the same forms as the ``stats socket`` line).
- The line is sent with its newline, then the write side is shut (as ``echo cmd | socat stdio UNIX-CONNECT:path``
  does); everything the server writes until it closes goes to stdout, unchanged.
- Without a command, each line of stdin is sent on its own connection, in order.
- Exit code 0 when an answer was read; 1 when the socket cannot be reached or the answer is "Permission denied" or
  "Unknown command" (so scripts notice); 2 on a bad invocation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TextIO

from balancier.proxy.statsock import query

_FAILURES = ("Permission denied", "Unknown command")


def run_lines(address: str, lines: Iterable[str], out: TextIO, timeout: float = 10.0) -> int:
    rc = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            answer = query(address, line, timeout)
        except OSError as e:
            print(f"proxy-cli: cannot talk to {address}: {e.strerror or e}", file=sys.stderr)
            return 1
        out.write(answer)
        if answer.startswith(_FAILURES):
            rc = 1
    return rc


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``proxy-cli`` sub-command's arguments (``cli.py`` owns the parser and calls this)."""
    p.add_argument("socket", metavar="SOCKET", help="stats socket: a UNIX path or [ipv4@|ipv6@]host:port")
    p.add_argument("words", nargs="*", metavar="WORD",
                   help="the command line, e.g. 'show stat' or 'set server b/s state drain' "
                        "(default: one command per line of stdin)")
    p.add_argument("-t", "--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")


def run(args: argparse.Namespace) -> int:
    command = " ".join(args.words) if args.words else None
    lines: Iterable[str] = [command] if command else sys.stdin
    return run_lines(args.socket, lines, sys.stdout, args.timeout)
