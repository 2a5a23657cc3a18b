"""A real protocol through `mode tcp`: Debian's redis-server behind balancier, spoken to by redis-cli and raw RESP.

What is proven, each against real redis servers started (and stopped by pid) by the test:
- redis-cli SET/GET through the balancer; a value of several MB both ways, byte for byte; 2000 pipelined commands
  in one write, every reply in order;
- a SUBSCRIBE connection stays open across `timeout client`/`timeout server` when `timeout tunnel` is longer, and
  still receives a message published later; the same connection without `timeout tunnel` is closed (`cD`);
- two redis servers behind `balance leastconn` and `balance first` with long-lived connections: where each new
  connection lands (read from each server's own CLIENT LIST); one server killed -> its health check goes DOWN
  (log line) and new connections go to the other one; a `backup` server takes over when the only active one dies;
- TLS terminated by the balancer in front of a plain redis (`bind ... ssl crt`, what stunnel did), logged with
  the `~` HAProxy adds to the frontend name of a TLS listener.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_tcp_peers
from test_tcp_peers import REDIS_CLI, RedisServer, needs_redis, read_resp, resp

from support.backends import free_port
from support.proxy import ProxyFactory
from support.syslog import SyslogReceiver

pytestmark = needs_redis
redis_servers = test_tcp_peers.redis_servers  # the fixture: redis processes stopped by pid at teardown


class Client:
    """A raw RESP connection (through the balancer or straight to a server)."""

    def __init__(self, port: int, name: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if name is not None:
            assert self.cmd("CLIENT", "SETNAME", name) == "OK"

    def cmd(self, *args: str | bytes) -> object:
        self.sock.sendall(resp(*args))
        return read_resp(self.sock)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    try:
        yield opened
    finally:
        for c in opened:
            c.close()


def names_on(server: RedisServer) -> set[str]:
    """The names of the clients connected to this redis server right now."""
    c = Client(server.port)
    try:
        listing = c.cmd("CLIENT", "LIST")
    finally:
        c.close()
    assert isinstance(listing, bytes)
    out = set()
    for line in listing.decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name"):
            out.add(fields["name"])
    return out


def wait_names(server: RedisServer, expected: set[str], timeout: float = 3.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        got = names_on(server)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def cfg(body: str, syslog: str | None = None, extra_defaults: str = "") -> str:
    log = f"    log {syslog} local0\n" if syslog else ""
    logd = "    log global\n    option tcplog\n" if syslog else ""
    return (f"global\n    nbthread 1\n{log}\ndefaults\n    mode tcp\n{logd}    timeout connect 1s\n"
            f"    timeout client 5s\n    timeout server 5s\n{extra_defaults}\n{body}")


def test_redis_cli_set_get_big_value_and_pipelining(proxy_factory: ProxyFactory,
                                                    redis_servers: list[RedisServer],
                                                    clients: list[Client]) -> None:
    r = RedisServer()
    redis_servers.append(r)
    port = free_port()
    proxy_factory(cfg(f"listen redis\n    bind 127.0.0.1:{port}\n    server r {r.address}\n"))
    if REDIS_CLI is not None:
        def cli(*args: str) -> str:
            out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                                 text=True, timeout=10)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        assert cli("SET", "greeting", "hello through the balancer") == "OK"
        assert cli("GET", "greeting") == "hello through the balancer"
        # what redis-cli wrote is really on the server
        direct = Client(r.port)
        clients.append(direct)
        assert direct.cmd("GET", "greeting") == b"hello through the balancer"

    big = os.urandom(6 * 1024 * 1024)
    c = Client(port)
    clients.append(c)
    assert c.cmd("SET", "big", big) == "OK"
    assert c.cmd("STRLEN", "big") == len(big)
    assert c.cmd("GET", "big") == big

    n = 2000
    c.sock.sendall(b"".join(resp("INCR", "counter") for _ in range(n)) + resp("GET", "counter"))
    replies = [read_resp(c.sock) for _ in range(n + 1)]
    assert replies[:n] == list(range(1, n + 1))
    assert replies[n] == str(n).encode()


def _subscribe(port: int) -> Client:
    c = Client(port)
    c.sock.sendall(resp("SUBSCRIBE", "news"))
    assert read_resp(c.sock) == [b"subscribe", b"news", 1]
    return c


def test_subscribe_outlives_timeout_client_with_timeout_tunnel(proxy_factory: ProxyFactory,
                                                               redis_servers: list[RedisServer],
                                                               clients: list[Client]) -> None:
    r = RedisServer()
    redis_servers.append(r)
    tunnel, plain = free_port(), free_port()
    with SyslogReceiver() as rx:
        proxy_factory(cfg(
            f"listen tunnel\n    bind 127.0.0.1:{tunnel}\n    timeout client 300\n    timeout server 300\n"
            f"    timeout tunnel 5s\n    server r {r.address}\n\n"
            f"listen plain\n    bind 127.0.0.1:{plain}\n    timeout client 300\n    timeout server 300\n"
            f"    server r {r.address}\n", rx.address))
        sub_t, sub_p = _subscribe(tunnel), _subscribe(plain)
        clients += [sub_t, sub_p]
        time.sleep(1.0)  # over three times timeout client/server without a byte either way
        pub = Client(r.port)
        clients.append(pub)
        receivers = pub.cmd("PUBLISH", "news", "still here")
        sub_t.sock.settimeout(5)
        assert read_resp(sub_t.sock) == [b"message", b"news", b"still here"]
        assert receivers == 1  # only the tunnelled subscriber is still connected to redis
        sub_p.sock.settimeout(5)
        assert sub_p.sock.recv(100) == b""  # closed by the balancer at `timeout client`
        line = rx.wait_for(lambda ln: "] plain plain/r" in ln)
        assert " cD " in line, line


def test_leastconn_and_a_killed_server(proxy_factory: ProxyFactory, redis_servers: list[RedisServer],
                                       clients: list[Client]) -> None:
    a, b = RedisServer(), RedisServer()
    redis_servers += [a, b]
    port = free_port()
    with SyslogReceiver() as rx:
        proxy_factory(cfg(f"listen redis\n    bind 127.0.0.1:{port}\n    balance leastconn\n"
                          f"    server a {a.address} check inter 200 fall 2 rise 1\n"
                          f"    server b {b.address} check inter 200 fall 2 rise 1\n", rx.address))
        conns = {f"c{i}": Client(port, f"c{i}") for i in range(4)}
        clients.extend(conns.values())
        on_a, on_b = names_on(a), names_on(b)
        assert len(on_a) == len(on_b) == 2 and on_a | on_b == set(conns), (on_a, on_b)
        # free server a entirely: leastconn sends the next two connections there, not one on each
        for name in on_a:
            conns[name].close()
        assert wait_names(a, set()) == set()
        later = [Client(port, "n1"), Client(port, "n2")]
        clients.extend(later)
        assert names_on(a) == {"n1", "n2"}
        assert names_on(b) == on_b

        a.kill()
        rx.wait_for(lambda ln: "Server redis/a is DOWN" in ln, timeout=5)
        for i in range(3):
            c = Client(port, f"after{i}")
            clients.append(c)
            assert c.cmd("SET", f"k{i}", "v") == "OK"
        assert {f"after{i}" for i in range(3)} <= names_on(b)
        direct = Client(b.port)
        clients.append(direct)
        assert direct.cmd("MGET", "k0", "k1", "k2") == [b"v", b"v", b"v"]


def test_first_fills_servers_in_order_then_fails_over(proxy_factory: ProxyFactory,
                                                      redis_servers: list[RedisServer],
                                                      clients: list[Client]) -> None:
    a, b = RedisServer(), RedisServer()
    redis_servers += [a, b]
    port = free_port()
    with SyslogReceiver() as rx:
        proxy_factory(cfg(f"listen redis\n    bind 127.0.0.1:{port}\n    balance first\n"
                          f"    server a {a.address} maxconn 2 check inter 200 fall 2 rise 1\n"
                          f"    server b {b.address} maxconn 2 check inter 200 fall 2 rise 1\n", rx.address))
        conns = [Client(port, f"c{i}") for i in range(3)]
        clients.extend(conns)
        assert names_on(a) == {"c0", "c1"}
        assert names_on(b) == {"c2"}
        conns[0].close()  # a slot frees on a: `first` fills it again before using b any further
        assert wait_names(a, {"c1"}) == {"c1"}
        c3 = Client(port, "c3")
        clients.append(c3)
        assert names_on(a) == {"c1", "c3"}

        a.kill()
        rx.wait_for(lambda ln: "Server redis/a is DOWN" in ln, timeout=5)
        c4 = Client(port, "c4")
        clients.append(c4)
        assert names_on(b) == {"c2", "c4"}


def test_backup_takes_over_when_the_active_server_dies(proxy_factory: ProxyFactory,
                                                       redis_servers: list[RedisServer],
                                                       clients: list[Client]) -> None:
    main, spare = RedisServer(), RedisServer()
    redis_servers += [main, spare]
    port = free_port()
    with SyslogReceiver() as rx:
        proxy_factory(cfg(f"listen redis\n    bind 127.0.0.1:{port}\n"
                          f"    server main {main.address} check inter 200 fall 2 rise 1\n"
                          f"    server spare {spare.address} check inter 200 fall 2 rise 1 backup\n",
                          rx.address))
        first = [Client(port, f"m{i}") for i in range(3)]
        clients.extend(first)
        assert names_on(main) == {"m0", "m1", "m2"} and names_on(spare) == set()
        main.kill()
        rx.wait_for(lambda ln: "Server redis/main is DOWN" in ln, timeout=5)
        c = Client(port, "after")
        clients.append(c)
        assert c.cmd("PING") == "PONG"
        assert names_on(spare) == {"after"}


def test_tls_terminated_redis(proxy_factory: ProxyFactory, redis_servers: list[RedisServer],
                              tmp_path: Path) -> None:
    """stunnel's job in the reference deployment: TLS on the front, plain redis behind, `mode tcp`."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    pem = tmp_path / "redis.pem"
    ca.issue_cert("redis.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    r = RedisServer()
    redis_servers.append(r)
    port = free_port()
    with SyslogReceiver() as rx:
        proxy_factory(cfg(f"listen tls\n    bind 127.0.0.1:{port} ssl crt {pem}\n    server r {r.address}\n",
                          rx.address))
        ctx = ssl.create_default_context(cafile=str(ca_file))
        big = os.urandom(3 * 1024 * 1024)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="redis.test") as s:
                s.sendall(resp("SET", "secret", big) + resp("GET", "secret"))
                assert read_resp(s) == "OK"
                assert read_resp(s) == big
        line = rx.wait_for(lambda ln: "] tls~ tls/r " in ln)
        assert " -- " in line, line
    direct = Client(r.port)
    try:
        assert direct.cmd("STRLEN", "secret") == len(big)
    finally:
        direct.close()
