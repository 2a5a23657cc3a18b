"""Helpers for the multi-worker tests: the master's workers, which process holds a connection, the stats socket.

Everything is read from /proc (pids, socket inodes, /proc/net/tcp), so nothing extra reaches the proxy.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (the master's workers)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return sorted(out)


def wait_children(pid: int, n: int, timeout: float = 10.0, exclude: set[int] | None = None) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        kids = [k for k in children(pid) if not exclude or k not in exclude]
        if len(kids) >= n or time.monotonic() > deadline:
            return kids
        time.sleep(0.05)


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _server_side_inodes(port: int) -> dict[int, int]:
    """Established connections accepted on `port`: client port -> inode of the accepted socket."""
    out: dict[int, int] = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] != "01":
                continue
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            if lport == port:
                out[rport] = int(fields[9])
    return out


def connection_owners(port: int, conns: list[socket.socket], pids: list[int]) -> dict[int, int]:
    """How many of the client sockets `conns` (connected to `port`) each pid has accepted."""
    by_client = _server_side_inodes(port)
    inodes = {pid: _socket_inodes(pid) for pid in pids}
    counts = {pid: 0 for pid in pids}
    for c in conns:
        ino = by_client.get(c.getsockname()[1])
        for pid in pids:
            if ino is not None and ino in inodes[pid]:
                counts[pid] += 1
    return counts


def cli(path: str, command: str, timeout: float = 5.0) -> str:
    """One command on a stats socket (UNIX path), the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


def stat_rows(path: str) -> dict[tuple[str, str], dict[str, str]]:
    text = cli(path, "show stat")
    lines = text.strip().splitlines()
    names = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        vals = line.split(",")
        row = dict(zip(names, vals, strict=False))
        out[(row["pxname"], row["svname"])] = row
    return out


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def master_command(path: str, command: str = "reload", timeout: float = 30.0) -> str:
    """One command on a master CLI socket (`-S path`), the whole answer (`reload` answers `Success=1`...)."""
    return cli(path, command, timeout)
