"""Privileges with several workers (root only): the master binds a privileged port and reads a TLS key that only
root may read, then every worker runs as the configured user and group inside the chroot.

With -W the master stays root outside the chroot (it re-reads the configuration and the keys on a reload, as
HAProxy's master does); without -W it drops too. After a reload the new workers are unprivileged again and the
certificate still works.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path

import pytest
import trustme

from support.backends import free_port
from support.http import curl
from support.workers import master_command, wait_children, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="binding a privileged port, chroot and setuid need root")


def _privileged_port() -> int:
    """A free TCP port below 1024 on 127.0.0.1."""
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free privileged port on 127.0.0.1")


def _ids(pid: int) -> tuple[list[str], list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(ln for ln in lines if ln.startswith("Uid:")).split()[1:]
    gid = next(ln for ln in lines if ln.startswith("Gid:")).split()[1:]
    return uid, gid


@pytest.fixture
def tls_setup(tmp_path: Path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pem = tmp_path / "site.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    os.chown(pem, 0, 0)
    os.chmod(pem, 0o400)  # readable by root only
    jail = tmp_path / "jail"
    jail.mkdir()
    return ca_file, pem, jail


def _cfg(port: int, tls_port: int, pem: Path, jail: Path, backend: str) -> str:
    return (
        "global\n"
        "    nbthread 2\n"
        f"    chroot {jail}\n"
        "    user nobody\n"
        "    group nogroup\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 5s\n"
        "    timeout server 5s\n"
        "listen web\n"
        f"    bind 127.0.0.1:{port}\n"
        f"    bind 127.0.0.1:{tls_port} ssl crt {pem}\n"
        f"    server a {backend}\n"
    )


def _check_worker(pid: int, jail: Path) -> None:
    uid, gid = _ids(pid)
    assert uid == [str(pwd.getpwnam("nobody").pw_uid)] * 4
    assert gid == [str(grp.getgrnam("nogroup").gr_gid)] * 4
    assert os.readlink(f"/proc/{pid}/root") == str(jail)


def _https_ok(tls_port: int, ca_file: Path) -> bool:
    r = curl(f"https://localhost:{tls_port}/", "--cacert", str(ca_file), "--resolve",
             f"localhost:{tls_port}:127.0.0.1")
    return r.status == 200


@pytest.mark.parametrize("master_worker", [True, False], ids=["W", "standalone"])
def test_workers_drop_privileges_and_tls_key_works(proxy_factory, backend_factory, tls_setup,
                                                   master_worker: bool, tmp_path: Path) -> None:
    ca_file, pem, jail = tls_setup
    b = backend_factory("a")
    port = _privileged_port()
    tls_port = free_port()
    msock = tmp_path / "master.sock"
    extra = ["-W", "-S", str(msock)] if master_worker else []
    p = proxy_factory(_cfg(port, tls_port, pem, jail, b.address), extra_args=extra)
    workers = wait_children(p.pid, 2)
    assert len(workers) == 2, p.explain()
    r = curl(f"http://127.0.0.1:{port}/")
    assert r.status == 200, p.explain()
    assert _https_ok(tls_port, ca_file), p.explain()
    for w in workers:
        _check_worker(w, jail)
    if master_worker:
        assert _ids(p.pid)[0] == ["0"] * 4  # the master keeps root for reloads
        assert os.readlink(f"/proc/{p.pid}/root") == "/"
        assert master_command(str(msock)).startswith("Success=1")
        fresh = wait_children(p.pid, 2, exclude=set(workers))
        assert len(fresh) == 2
        for w in fresh:
            _check_worker(w, jail)
        assert wait_for(lambda: all(not Path(f"/proc/{w}").exists() or _zombie(w) for w in workers), 5.0)
        assert _https_ok(tls_port, ca_file)  # the key was read again by the root master
    else:
        _check_worker(p.pid, jail)  # nothing stays privileged without -W
    assert stat.S_IMODE(pem.stat().st_mode) == 0o400


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
