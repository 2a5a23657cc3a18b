"""`http-request redirect scheme` and `http-request set-header` rules, run before a server is chosen.

Rules (spec/haproxy.md §11, §16):
- The frontend's rules run first, then the backend's (when the backend is another section), in file order. A
  rule runs when its condition holds: none, or ``ssl_fc`` (the client connection is TLS) possibly negated.
- ``redirect scheme S [code C] [drop-query]`` is final: the client gets ``C`` (302 by default) with ``location:
  S://<Host><path?query>`` (the Host field as received, empty when absent; the path of an absolute-form target;
  ``drop-query`` cuts at ``?``) and ``content-length: 0``; nothing reaches a server. HAProxy 2.6's bytes:
  ``HTTP/1.1 301 Moved Permanently``, ``content-length: 0``, ``location: ...``, then ``connection: close`` when the
  connection ends after it. The connection stays open for a keep-alive client whose request has no body.
- ``set-header N V`` removes every field named N (case-insensitive) and appends ``N: V`` (the value is a plain
  string). The edit is made on the received bytes (field lines cut out, the new line added before the blank
  line) when they are exactly what the parser read; a normalised head is serialised again. Either way the result
  is parsed again, so the rest of the stream sees one consistent head.
- ``evaluate`` and ``rules_for`` are pure; ``run`` is the thin shell the HTTP stream calls (stream.py), which
  writes the redirect and ends the request with the stream's own bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from balancier.http1 import Framing, RequestHead, build_request_head, parse_request_head
from balancier.proxy.config.model import HttpRule

REASONS = {301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
           308: "Permanent Redirect"}
# room for the fields rules add on top of tune.bufsize (HAProxy reserves tune.maxrewrite for this)
MAX_REWRITE = 1024


@dataclass(slots=True)
class Outcome:
    """What the rules decided: a response to send (``response``), or an edited request (``head`` + ``raw``)."""

    response: bytes | None = None
    status: int = 0
    close: bool = False
    head: RequestHead | None = None
    raw: bytes = b""


def rules_for(fe_rules: Sequence[HttpRule], be_rules: Sequence[HttpRule], same: bool) -> tuple[HttpRule, ...] | None:
    """The rules a route runs, frontend first; None when there are none (the stream then tests one attribute)."""
    rules = tuple(fe_rules) if same else (*fe_rules, *be_rules)
    return rules or None


def applies(rule: HttpRule, ssl_fc: bool) -> bool:
    cond = rule.cond
    return cond == "always" or (cond == "ssl") == ssl_fc


def location(scheme: str, head: RequestHead, drop_query: bool) -> str:
    host = head.get("host") or ""
    target = head.target
    if not target.startswith("/"):
        # absolute-form (scheme://authority/path...): keep the path; other forms redirect to "/"
        sep = target.find("://")
        slash = target.find("/", sep + 3) if sep >= 0 else -1
        target = target[slash:] if slash >= 0 else "/"
    if drop_query:
        target = target.split("?", 1)[0]
    return f"{scheme}://{host}{target}"


def redirect_response(code: int, loc: str, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {code} {REASONS[code]}", "content-length: 0", f"location: {loc}"]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_FIELD_RES: dict[str, re.Pattern[bytes]] = {}


def _field_re(name: str) -> re.Pattern[bytes]:
    """``CRLF name OWS : value`` (one field line without its own CRLF), any case."""
    pat = _FIELD_RES.get(name)
    if pat is None:
        pat = _FIELD_RES[name] = re.compile(rb"\r\n" + re.escape(name.encode("latin-1")) + rb"[ \t]*:[^\r\n]*",
                                            re.IGNORECASE)
    return pat


def _field_line(rule: HttpRule) -> bytes:
    return f"{rule.name}: {rule.value}\r\n".encode("latin-1")


def evaluate(rules: Sequence[HttpRule], ssl_fc: bool, head: RequestHead, raw: bytes, keep_alive: bool,
             limit: int) -> Outcome | None:
    """Run ``rules`` on a request whose bytes start with ``head`` (``raw``). None when nothing changes.

    ``keep_alive``: the connection would stay open after this request's response (the stream's decision, made
    from the request and the connection mode). Raises http1's HttpError when the edited head no longer fits."""
    edits: list[HttpRule] = []
    for rule in rules:
        if not applies(rule, ssl_fc):
            continue
        if rule.action == "redirect-scheme":
            close = not keep_alive or head.framing != Framing.NONE
            loc = location(rule.value, head, rule.drop_query)
            return Outcome(response=redirect_response(rule.code, loc, close), status=rule.code, close=close)
        edits.append(rule)
    if not edits:
        return None
    rlen = head.raw_len
    if not head.normalised and raw[:1] != b"\r":
        # the received bytes are the parsed head: cut the field lines out and add ours before the blank line
        block = raw[:rlen - 2]
        for rule in edits:
            block = _field_re(rule.name).sub(b"", block) + _field_line(rule)
        new_raw = block + b"\r\n" + raw[rlen:]
    else:
        headers = list(head.headers)
        for rule in edits:
            low = rule.name.lower()
            headers = [(n, v) for n, v in headers if n.lower() != low]
            headers.append((rule.name, rule.value))
        new_raw = build_request_head(head.method, head.target, head.version, headers) + raw[rlen:]
    new_head = parse_request_head(new_raw, limit + MAX_REWRITE)
    assert new_head is not None  # a complete head was serialised
    return Outcome(head=new_head, raw=new_raw)


def run(stream: Any, rules: Sequence[HttpRule], head: RequestHead) -> RequestHead | None:
    """The stream's hook (stream.py `_on_head_bytes`): the head to go on with, or None when a rule answered."""
    rt = stream.rt
    keep = head.keep_alive and stream.route.conn_mode != "clo" and not rt.stopping
    out = evaluate(rules, stream.ssl_fc, head, stream.buf, keep, rt.bufsize)
    if out is None:
        return head
    if out.response is None:
        assert out.head is not None
        stream.buf = out.raw
        return out.head
    stream.head = head
    stream.t_head = stream.c_last
    stream.nreq += 1
    stream.buf = b"" if out.close else stream.buf[head.raw_len:]  # pipelined requests wait in buf
    stream.client_ka = not out.close
    transport = stream.transport
    if transport is not None and not transport.is_closing():
        stream.bytes_out = len(out.response)
        transport.write(out.response)
    stream._finish("L", "R", out.status, close=out.close)
    return None
