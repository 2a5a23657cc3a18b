"""Server selection in `mode tcp` with real connections: each `ident` peer greets with its own name, so the client
reads which server its connection reached.

- roundrobin (FWRR) and static-rr follow the spec's vectors for weights 3,2,1 (haproxy.md §4.2, §4.3);
- source hashes the client address (127.0.0.1 -> c, .2 -> a, .3 -> b with weights 1,1,1, §4.6) and is stable;
- server `maxconn` holds the next connection in the queue until a slot frees (its bytes sent before are kept);
- a server that refuses connections is retried then redispatched (`option redispatch`): the client never notices.
(leastconn, first and backup servers with long-lived connections and health checks: test_tcp_redis.py.)
"""

from __future__ import annotations

import socket
import time

import pytest
import test_tcp_peers
from test_tcp_peers import TcpPeer

from support.backends import free_port
from support.proxy import ProxyFactory

peers = test_tcp_peers.peers  # the fixture: every peer closed at teardown


def _cfg(body: str) -> str:
    return ("global\n    nbthread 1\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n"
            f"    timeout server 5s\n\n{body}")


def _who(port: int, source: str = "127.0.0.1") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        f = s.makefile("rb")
        return f.readline().decode().strip()


def _ident(peers: list[TcpPeer], *names: str) -> list[TcpPeer]:
    out = [TcpPeer("ident", name=n) for n in names]
    peers.extend(out)
    return out


@pytest.mark.parametrize(("algo", "expected"), [
    ("roundrobin", "a b a c a b " * 2),
    ("static-rr", "a a b a b c " * 2),
])
def test_weighted_sequences(proxy_factory: ProxyFactory, peers: list[TcpPeer], algo: str, expected: str) -> None:
    a, b, c = _ident(peers, "a", "b", "c")
    port = free_port()
    proxy_factory(_cfg(f"listen t\n    bind 127.0.0.1:{port}\n    balance {algo}\n"
                       f"    server a {a.address} weight 3\n    server b {b.address} weight 2\n"
                       f"    server c {c.address} weight 1\n"))
    got = [_who(port) for _ in range(12)]
    assert got == expected.split()


def test_source_hash(proxy_factory: ProxyFactory, peers: list[TcpPeer]) -> None:
    a, b, c = _ident(peers, "a", "b", "c")
    port = free_port()
    proxy_factory(_cfg(f"listen t\n    bind 127.0.0.1:{port}\n    balance source\n"
                       f"    server a {a.address}\n    server b {b.address}\n    server c {c.address}\n"))
    for _ in range(2):  # the same client address always lands on the same server
        assert [_who(port, f"127.0.0.{i}") for i in (1, 2, 3)] == ["c", "a", "b"]


def test_server_maxconn_queues_the_next_connection(proxy_factory: ProxyFactory, peers: list[TcpPeer]) -> None:
    (a,) = _ident(peers, "a")
    port = free_port()
    proxy_factory(_cfg(f"listen t\n    bind 127.0.0.1:{port}\n    timeout queue 5s\n"
                       f"    server a {a.address} maxconn 1\n"))
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert first.makefile("rb").readline() == b"a\n"
        second.sendall(b"waiting\n")  # kept by the balancer while the connection is queued
        second.settimeout(0.5)
        with pytest.raises(TimeoutError):
            second.recv(100)  # nothing yet: the only slot is taken
        assert a.accepted == 1
        first.close()
        second.settimeout(5)
        f = second.makefile("rb")
        assert f.readline() == b"a\n"
        assert f.readline() == b"WAITING\n"
        assert a.accepted == 2
    finally:
        first.close()
        second.close()


def test_refused_server_is_redispatched(proxy_factory: ProxyFactory, peers: list[TcpPeer]) -> None:
    (b,) = _ident(peers, "b")
    port, dead = free_port(), free_port()
    proxy_factory(_cfg(f"listen t\n    bind 127.0.0.1:{port}\n    retries 2\n    option redispatch\n"
                       f"    server a 127.0.0.1:{dead}\n    server b {b.address}\n"))
    t0 = time.monotonic()
    assert [_who(port) for _ in range(4)] == ["b"] * 4
    assert time.monotonic() - t0 < 1.0  # redispatched at once, no turn-around delay
