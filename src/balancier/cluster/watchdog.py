"""The VIP watchdog: a node whose daemon dies must not keep answering for the virtual IP.

keepalived leaves the address on a node whose daemon was SIGKILLed until it restarts, so two nodes answer for one
address. balancier does better, in two places:

- Start-up cleanup: before joining, the daemon removes every address a previous run recorded as held
  (`<state-dir>/vips.json`, written by the `balancier:vip` agent on start and stop).
- This watchdog: a small child process started by the daemon in its own session (so killing the daemon's process
  group does not kill it), holding the read end of a pipe whose write end only the daemon has. When the pipe reaches
  EOF without the daemon having said `keep` first, the daemon died (SIGKILL, crash, OOM kill): the watchdog removes
  the recorded addresses at once, then exits. A clean daemon exit writes `keep` first (the resources it leaves
  running on purpose stay as they are).

Run as `python -m balancier.cluster.watchdog STATE_FILE` with the pipe on stdin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

STATE_ENV = "BALANCIER_VIP_STATE_FILE"


def start(state_file: str) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start the watchdog; keep the returned pipe open for as long as the daemon lives."""
    proc = subprocess.Popen([sys.executable, "-m", "balancier.cluster.watchdog", state_file],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True)
    assert proc.stdin is not None
    return proc, proc.stdin


def release_recorded(state_file: str) -> list[str]:
    """Remove the addresses recorded in state_file, then empty it; what was removed."""
    from balancier.cluster.agents.vip import read_state, release_all, write_state

    held = read_state(state_file)
    if not held:
        return []
    removed = release_all(held)
    write_state(state_file, [])
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m balancier.cluster.watchdog STATE_FILE (pipe from the daemon on stdin)", file=sys.stderr)
        return 2
    state_file = argv[0]
    # import netlink now, not after the daemon died: the import alone takes ~250 ms, all of it VIP overlap
    import balancier.cluster.agents.vip  # noqa: F401

    try:  # the vip agent imports pyroute2 lazily: here it must be loaded before it is needed
        import pyroute2  # noqa: F401
    except ImportError:
        pass

    said = b""
    while True:
        chunk = os.read(0, 64)
        if not chunk:
            break
        said += chunk
    if b"keep" in said:
        return 0
    removed = release_recorded(state_file)
    if removed:
        print(f"balancier watchdog: the cluster daemon died; removed {', '.join(removed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
