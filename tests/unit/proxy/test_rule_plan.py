"""set-header rules planned once per connection (httprules.plan_for/appends, stream.py `_on_head_bytes`): the
bytes a server and a client receive are exactly those of running the rules on every request, whatever the
request (field present or not, any case, HTTP/1.0, Connection tokens, a cookie to rewrite, pipelined bytes) and
whatever the rules (condition on ssl_fc, several fields, a redirect, a derived field)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_stream_fast import RESP_KA, setup

from balancier.proxy import httprules
from balancier.proxy.stream import HttpStream

from proxy_builders import Recorder

RULES = {
    "proto-if-ssl": "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n",
    "two-fields": "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n"
                  "    http-request set-header X-Site portal\n",
    "redirect-plain": "    http-request redirect scheme https code 301 if !{ ssl_fc }\n"
                      "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n",
    "derived": "    http-request set-header Cookie a=b\n",
    "xff-name": "    http-request set-header X-Forwarded-For 10.9.9.9\n",
}
BASE = b"GET /a HTTP/1.1\r\nHost: h\r\n"
REQUESTS = [
    BASE + b"\r\n",
    BASE + b"X-Forwarded-Proto: http\r\n\r\n",  # present: removed and set again
    BASE + b"x-forwarded-PROTO :http\r\n\r\n",
    BASE + b"X-Site: a\r\nX-Forwarded-Proto: http\r\n\r\n",
    BASE + b"Connection: close\r\n\r\n",
    BASE + b"Connection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n",  # a hop-by-hop field: rebuilt head
    BASE + b"Cookie: JSESSIONID=A~abc\r\n\r\n",  # cookie prefix to strip: rebuilt head
    b"GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    BASE + b"X-Forwarded-Protocol: x\r\n\r\n",  # a longer name is another field
]


def run(tmp_path: Path, loop: asyncio.AbstractEventLoop, rules: str, ssl_fc: bool, requests: list[bytes],
        planned: bool) -> tuple[bytes, bytes, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rt, route, conn = setup(tmp_path, loop, "    http-reuse always\n    cookie JSESSIONID prefix\n" + rules)
    s = HttpStream(rt, route)
    s.http_rules = httprules.rules_for(route.fe.cfg.http_rules, route.be.cfg.http_rules, route.fe.cfg is route.be.cfg)
    s.ssl_fc = ssl_fc
    if not planned:
        s.rule_plan = httprules.NO_PLAN  # the rules run on every request, as before plans existed
    client = Recorder()
    s.connection_made(client)
    for req in requests:
        if client.closing:
            break
        s.data_received(req)
        if s.sconn is conn:
            conn.data_received(RESP_KA)
    assert isinstance(conn.transport, Recorder)
    return conn.transport.data, client.data, s.rule_plan


@pytest.mark.parametrize("ssl_fc", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("rules", list(RULES))
def test_planned_rules_send_what_the_rules_send(tmp_path: Path, loop: asyncio.AbstractEventLoop, rules: str,
                                                ssl_fc: bool) -> None:
    # every request on one connection (the plan is made once), then each request on a connection of its own
    batches = [REQUESTS] + [[r] for r in REQUESTS]
    for i, batch in enumerate(batches):
        got = run(tmp_path / f"p{i}", loop, RULES[rules], ssl_fc, batch, planned=True)
        want = run(tmp_path / f"r{i}", loop, RULES[rules], ssl_fc, batch, planned=False)
        assert got[0] == want[0], "the server receives the same bytes"
        assert got[1] == want[1], "the client receives the same bytes"


def test_plans(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    cases = {("proto-if-ssl", True): httprules.Plan, ("proto-if-ssl", False): httprules.EMPTY_PLAN,
             ("two-fields", True): httprules.Plan, ("redirect-plain", False): httprules.NO_PLAN,
             ("redirect-plain", True): httprules.Plan, ("derived", True): httprules.NO_PLAN,
             ("xff-name", True): httprules.NO_PLAN}
    for i, ((rules, ssl_fc), want) in enumerate(cases.items()):
        to_srv, _, plan = run(tmp_path / str(i), loop, RULES[rules], ssl_fc, [REQUESTS[0]], planned=True)
        assert plan is want or isinstance(plan, want), (rules, ssl_fc, plan)
    # the usual TLS request: the field goes out after the request's own, before X-Forwarded-For
    to_srv, _, _ = run(tmp_path / "x", loop, RULES["two-fields"], True, [REQUESTS[0]], planned=True)
    assert to_srv == BASE + b"X-Forwarded-Proto: https\r\nX-Site: portal\r\nX-Forwarded-For: 127.0.0.9\r\n\r\n"


def test_a_plan_gives_way_to_the_rules_near_the_limits(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    from balancier.http1 import parse_request_head
    from balancier.http1.heads import MAX_HEADERS

    plan = httprules.plan_for((httprules_rule(),), True, "X-Forwarded-For")
    assert isinstance(plan, httprules.Plan)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    full = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"  # MAX_HEADERS fields: one more is an error
    small = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields[:200] + b"\r\n"
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 16300 + b"\r\n\r\n"
    present = b"GET / HTTP/1.1\r\nx-forwarded-PROTO: http\r\nHost: h\r\n\r\n"
    plan.verdicts.clear()
    for _ in range(2):  # the second time, every answer comes from the plan's verdicts (per head text and limit)
        head = parse_request_head(full, 16384)
        assert head is not None and not httprules.appends(plan, head, full, 16384)
        head = parse_request_head(small, 16384)
        assert head is not None and httprules.appends(plan, head, small, 16384)
        head = parse_request_head(big, 16384)
        assert head is not None
        edge = head.raw_len + len(plan.lines) - httprules.MAX_REWRITE  # the smallest limit the edited head fits
        assert httprules.appends(plan, head, big, edge) and not httprules.appends(plan, head, big, edge - 1)
        head = parse_request_head(present, 16384)
        assert head is not None and not httprules.appends(plan, head, present, 16384)  # the field is there
    assert len(plan.verdicts) == 3, "the big head (over MEMO_HEAD_MAX) is answered each time, not kept"


def httprules_rule() -> object:
    from balancier.proxy.config.model import HttpRule

    return HttpRule(action="set-header", name="X-Forwarded-Proto", value="https", cond="ssl")
