"""Process basics of the data plane: daemon, pidfile, chroot, privilege drop, signals to older processes.

Rules (HAProxy §15):
- Start-up order: parse, bind every listener, daemonize, write the pidfile (by the process that serves), `chroot`,
  then drop to `gid`/`uid` (`group`/`user` resolve to ids through grp/pwd *before* the chroot).
- A requested drop that fails (not root, unknown user, chroot missing) refuses the start: `StartError`.
- `daemon`/`-D` double-forks, detaches from the terminal (setsid), points stdio at /dev/null; the launching process
  waits on a pipe until the daemon says it is ready (or failed) and exits 0 (or 1) accordingly, so a shell script
  sees start-up errors. `-db`/`-d` force the foreground.
- `-sf PIDS` sends SIGUSR1 (soft stop) and `-st PIDS` SIGTERM to older processes once our listeners are bound.
- Nothing here runs an event loop: the loop is created after the fork (an event loop does not survive a fork).
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import signal
import sys
from collections.abc import Iterable


def say(level: str, msg: str, with_pid: bool = False) -> None:
    """One `[LEVEL] message` line on stderr (HAProxy's form; the master adds its pid); a closed stderr is not an
    error."""
    try:
        sys.stderr.write(f"[{level}] ({os.getpid()}) : {msg}\n" if with_pid else f"[{level}] {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class StartError(Exception):
    """The process cannot start as configured; the message is shown as is and the exit code is 1."""


def resolve_ids(user: str | None, group: str | None, uid: int | None, gid: int | None) -> tuple[int | None, int | None]:
    """The numeric uid/gid to drop to; names win over numbers as in HAProxy (the last one set wins there too)."""
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise StartError(f"unknown user '{user}' in 'user'") from None
        uid = pw.pw_uid
        if gid is None and group is None:
            gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise StartError(f"unknown group '{group}' in 'group'") from None
    return uid, gid


def write_pidfile(path: str, pids: Iterable[int]) -> None:
    """One pid per line, written atomically (temp file + rename) so a reader never sees half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            for pid in pids:
                f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as e:
        raise StartError(f"cannot write pidfile '{path}': {e.strerror}") from None


def drop_privileges(chroot: str | None, uid: int | None, gid: int | None) -> None:
    """chroot, then setgid/setgroups, then setuid: in this order, since each step needs the privileges of the last."""
    if chroot is not None:
        try:
            os.chroot(chroot)
            os.chdir("/")
        except OSError as e:
            raise StartError(f"cannot chroot to '{chroot}': {e.strerror}") from None
    if gid is not None:
        try:
            if os.getuid() == 0:
                os.setgroups([gid])
            os.setgid(gid)
        except OSError as e:
            raise StartError(f"cannot set gid to {gid}: {e.strerror}") from None
    if uid is not None:
        try:
            os.setuid(uid)
        except OSError as e:
            raise StartError(f"cannot set uid to {uid}: {e.strerror}") from None


class Daemon:
    """Double fork with a readiness pipe back to the launcher.

    `start()` returns in the daemon process only; the launcher waits for `ready()`/`failed()` and exits there.
    """

    def __init__(self) -> None:
        self._wfd: int | None = None

    def start(self) -> None:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid > 0:  # the launcher: wait for the verdict of the grandchild, reap the intermediate child
            os.close(wfd)
            os.waitpid(pid, 0)
            verdict = b""
            while True:
                chunk = os.read(rfd, 4096)
                if not chunk:
                    break
                verdict += chunk
            if verdict.startswith(b"ok"):
                os._exit(0)
            msg = verdict.decode(errors="replace").strip() or "daemon exited during start-up"
            sys.stderr.write(f"[ALERT] {msg.removeprefix('err ')}\n")
            sys.stderr.flush()
            os._exit(1)
        os.close(rfd)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        self._wfd = wfd
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)

    def forget(self) -> None:
        """In a process forked from the daemon (a worker): close our copy of the readiness pipe, so the launcher
        sees its end when the daemon says its word."""
        if self._wfd is not None:
            try:
                os.close(self._wfd)
            except OSError:
                pass
            self._wfd = None

    def ready(self) -> None:
        self._say(b"ok\n")

    def failed(self, message: str) -> None:
        self._say(b"err " + message.encode() + b"\n")

    def _say(self, msg: bytes) -> None:
        if self._wfd is None:
            return
        try:
            os.write(self._wfd, msg)
        except OSError:
            pass
        os.close(self._wfd)
        self._wfd = None


def signal_old_processes(soft: Iterable[int], hard: Iterable[int]) -> list[str]:
    """-sf / -st: returns one warning per pid that could not be signalled (already gone, not ours)."""
    problems: list[str] = []
    for pids, sig in ((soft, signal.SIGUSR1), (hard, signal.SIGTERM)):
        for pid in pids:
            if pid <= 1 or pid == os.getpid():
                problems.append(f"refusing to signal pid {pid}")
                continue
            try:
                os.kill(pid, sig)
            except OSError as e:
                problems.append(f"cannot signal pid {pid}: {e.strerror}")
    return problems


def default_maxconn() -> int:
    """HAProxy 2.x derives the global maxconn from the file-descriptor limit: two fds per proxied connection."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(1, (soft - 100) // 2)
