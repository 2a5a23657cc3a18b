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
  is parsed again, so the rest of the stream sees one consistent head. The common case — a head the parser's fast
  path took, a field that is absent and that the parser derives nothing from (not Host, Content-Length,
  Connection, Cookie, Expect, Transfer-Encoding or another hop-by-hop field), a value that parses back to itself —
  appends the line and extends the parsed head instead of parsing it again (the same result, held to the full
  parse by tests/unit/proxy/test_httprules.py).
- ``evaluate`` and ``rules_for`` are pure; ``run`` is the thin shell the HTTP stream calls (stream.py), which
  writes the redirect and ends the request with the stream's own bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from balancier.http1 import Framing, RequestHead, build_request_head, parse_request_head
from balancier.http1.heads import MAX_HEADERS, MEMO_HEAD_MAX
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


# Fields from which the parser derives something (framing, keep-alive, Host, the cookie flag, hop-by-hop
# handling): setting one of them always takes the edit-and-parse path.
_DERIVED = frozenset({"host", "content-length", "connection", "cookie", "transfer-encoding", "te", "trailer",
                      "expect", "keep-alive", "proxy-connection", "upgrade"})
# a value the parser gives back unchanged: visible ASCII, inner spaces/tabs, no surrounding whitespace
_PLAIN_VALUE_RE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
_APPENDABLE: dict[tuple[str, str], tuple[bytes, str] | None] = {}  # (name, value): the rule's hash is costly


def _appendable(rule: HttpRule) -> tuple[bytes, str] | None:
    """The field line of a set-header rule (bytes, text) when it may be appended to a fast-parsed head."""
    key = (rule.name, rule.value)
    try:
        return _APPENDABLE[key]
    except KeyError:
        pass
    ok = rule.name.lower() not in _DERIVED and _PLAIN_VALUE_RE.fullmatch(rule.value) is not None
    line = _field_line(rule)
    out = _APPENDABLE[key] = (line, line.decode("latin-1")) if ok else None
    return out


def _append_fields(edits: list[HttpRule], head: RequestHead, raw: bytes, limit: int) -> Outcome | None:
    """The fast edit (see the module's rules), or None when the full path must run."""
    rlen = head.raw_len
    lines: list[bytes] = []
    texts: list[str] = []
    seen: set[str] = set()
    for rule in edits:
        line = _appendable(rule)
        low = rule.name.lower()
        if line is None or low in seen or _field_re(rule.name).search(raw, 0, rlen) is not None:
            return None
        seen.add(low)
        lines.append(line[0])
        texts.append(line[1])
    added = b"".join(lines)
    new_len = rlen + len(added)
    text = head._text + "".join(texts)
    if new_len > limit + MAX_REWRITE or (len(text) >= 4 * MAX_HEADERS and text.count("\n") > MAX_HEADERS + 1):
        return None  # the full path gives the parser's verdict on an oversized head
    hdrs = head._headers
    if hdrs is not None:
        hdrs = hdrs + [(rule.name, rule.value) for rule in edits]
    new_head = RequestHead(head.method, head.target, head.version, hdrs, head.framing, head.content_length,
                           head.keep_alive, head.expect_continue, head.connection_tokens, new_len, False,
                           head.has_cookie, head.plain, text,
                           conn_span=head.conn_span)  # the lines go after the fields: the span still holds
    return Outcome(head=new_head, raw=raw[:rlen - 2] + added + raw[rlen - 2:])


@dataclass(frozen=True, slots=True)
class Plan:
    """What a connection's rules do to every request, when that is only appending fields: the `set-header` rules
    that apply (their condition is the connection's ssl_fc), none of them naming a field the parser derives
    something from or the forwardfor header. ``lines``: their field lines, in order; ``fields``: the same as
    (name, value); ``present``: finds any of their names as a field of a head; ``verdicts``: `appends`'s answers
    for the heads the parser's fast path read, by their text (see `appends`)."""

    lines: bytes
    fields: tuple[tuple[str, str], ...]
    present: Callable[[bytes, int, int], Any]
    verdicts: dict[tuple[str, int], bool] = field(default_factory=dict, compare=False, repr=False)


NO_PLAN: Any = object()  # the rules must run on every request (a redirect applies, or an edit is not an append)
EMPTY_PLAN: Any = object()  # no rule applies on this connection
_PLANS: dict[tuple[int, bool, str], tuple[Sequence[HttpRule], Any]] = {}


def plan_for(rules: Sequence[HttpRule], ssl_fc: bool, xff_header: str) -> Any:
    """The Plan of a connection's rules, EMPTY_PLAN or NO_PLAN (remembered per rule list)."""
    key = (id(rules), ssl_fc, xff_header)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    todo = [rule for rule in rules if applies(rule, ssl_fc)]
    out: Any
    if not todo:
        out = EMPTY_PLAN
    elif any(rule.action != "set-header" or _appendable(rule) is None for rule in todo) \
            or len({rule.name.lower() for rule in todo} | {xff_header.lower()}) != len(todo) + 1:
        out = NO_PLAN  # a redirect, a derived field, a field set twice or the forwardfor header: run the rules
    else:
        names = b"|".join(re.escape(rule.name.encode("latin-1")) for rule in todo)
        out = Plan(b"".join(_field_line(rule) for rule in todo), tuple((rule.name, rule.value) for rule in todo),
                   re.compile(rb"\r\n(?:" + names + rb")[ \t]*:", re.IGNORECASE).search)
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[key] = (rules, out)
    return out


def appends(plan: Plan, head: RequestHead, raw: bytes, limit: int) -> bool:
    """Whether the rules' whole effect on this request is appending the plan's lines to its fields: the head was
    not normalised, none of the fields is in it, and the result stays within what `evaluate` accepts (size and
    field count), else `evaluate` must run and give its own result or error.

    For a head the parser's fast path read, the answer depends on its text and ``limit`` alone (``raw`` starts
    with that text and its CRLF): it is remembered in the plan, so a head that comes again costs a lookup (the
    text's hash is already known from the parser's memo), not a search (bounded as the parser's memo: heads up
    to MEMO_HEAD_MAX, 256 per plan, then emptied)."""
    if head.normalised:
        return False
    text = head._text
    if not text or len(text) > MEMO_HEAD_MAX:
        return _appends(plan, head, raw, limit)
    verdicts = plan.verdicts
    key = (text, limit)
    v = verdicts.get(key)
    if v is None:
        v = _appends(plan, head, raw, limit)
        if len(verdicts) >= 256:
            verdicts.clear()
        verdicts[key] = v
    return v


def _appends(plan: Plan, head: RequestHead, raw: bytes, limit: int) -> bool:
    rlen = head.raw_len
    if plan.present(raw, 0, rlen) is not None:
        return False
    n = rlen - 2 + len(plan.lines)  # the fields block with ours, up to the CRLF of the last field line
    if n + 2 > limit + MAX_REWRITE:
        return False
    return n < 4 * MAX_HEADERS or raw.count(b"\n", 0, rlen - 2) + len(plan.fields) <= MAX_HEADERS + 1


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
    if head._text and not head.normalised:  # a head the parser's fast path took (see _fast_request)
        fast = _append_fields(edits, head, raw, limit)
        if fast is not None:
            return fast
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
    keep = head.keep_alive and not stream.route.client_close and not rt.stopping
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
