"""Cookie persistence (``cookie NAME [rewrite|insert|prefix] ...``): decisions and header rewrites. Pure code.

Rules (spec/haproxy.md §5, HAProxy http_ana.c):
- Request side, only when no server was assigned yet. Every ``Cookie`` header is scanned for NAME (attributes
  starting with ``$`` and cookies without ``=`` are ignored). The value is ``SRV~APPVALUE`` split at the first ``~`` in
  prefix mode, ``SRV[|LAST[|FIRST]]`` in the other modes (dates: 5 base64 characters of a 30-bit count of 4-second
  units). SRV is compared byte for byte with the servers' ``cookie`` values in declaration order; an empty SRV never
  matches.
- FIRST older than ``maxlife`` (or more than a day in the future) → flag ``O``; LAST older than ``maxidle`` (or more
  than a day in the future) → ``E``; in both cases the cookie is treated as absent.
- A matching server that is not stopped (DOWN or MAINT; DRAIN, weight 0 and STOPPING are fine), or any matching
  server with ``option persist`` (except one in MAINT: maintenance takes no traffic at all) → that server,
  DIRECT, flag ``V`` (``D`` if it was stopped). A matching but stopped
  server without persist → flag ``D``, the search goes on with the next server sharing the value, then normal load
  balancing (no ``option redispatch`` needed). No match → ``I``. No cookie → ``N``. No cookie configured → ``-``.
  As in HAProxy's logs, a passive cookie (no rewrite/insert/prefix, no indirect) decides but shows ``-`` in both
  cookie columns.
- Forwarded request: in prefix mode ``SRV~`` is always removed when a ``~`` is present, whatever server is chosen;
  with ``insert indirect`` the persistence cookie is deleted (the whole header when nothing else is left); otherwise
  the header is forwarded untouched.
- Response side (not for 1xx other than 101). The server's own ``Set-Cookie: NAME=...``: ``preserve`` → untouched
  (``P``); ``insert`` with a chosen server, or ``indirect`` on a DIRECT request → removed (``D``); ``rewrite`` → value
  replaced by the server's cookie value (``R``); ``prefix`` → ``SRV~`` put in front (``R``); servers without a
  cookie value are left alone (``P``).
- ``insert`` adds ``Set-Cookie`` when a server was chosen, and not (preserve and the server sent NAME), and (the
  request was not DIRECT, or the date must be refreshed, or FIRST must be added or removed), and (not postonly or
  the method is POST). Format: ``NAME=VALUE[|LAST[|FIRST]]; path=/`` then ``; domain=D`` per domain, ``; HttpOnly``,
  ``; Secure``, ``; ATTR`` per attr. A server without ``cookie`` gets ``NAME=; Expires=Thu, 01-Jan-1970 00:00:01
  GMT; path=/``. Flag ``U`` when only the date of a DIRECT request was refreshed, else ``I``. ``nocache`` adds
  ``Cache-control: private`` to a cacheable response that gets an inserted cookie.

Public API:
    on_request(cfg, backend, cookie_headers, method, now) -> RequestPersistence
        .server .flag .cookie_headers (rewritten values; a header whose value became empty is dropped) .changed
        .direct .last_date .first_date; .redispatched() after a redispatch broke persistence (flag D, not DIRECT)
    on_response(cfg, server, req, set_cookie_headers, method, status, cacheable, now) -> ResponsePersistence
        .set_cookie_headers (rewritten values) .add_headers [(name, value)] .flag .changed
    is_cacheable(method, status, headers) -> bool; encode_date(t) / decode_date(s)
    `now` is the wall-clock time in seconds since the epoch (cookie dates are absolute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from balancier.proxy.config.model import CookieConfig

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64REV = {c: i for i, c in enumerate(_B64)}
_DELETE_COOKIE = "=; Expires=Thu, 01-Jan-1970 00:00:01 GMT; path=/"
_ONE_DAY = 86400


def encode_date(t: float) -> str:
    """An absolute date as HAProxy writes it in a cookie: ((t+3) >> 2) as 5 base64 characters, MSB first."""
    v = (int(t) + 3) >> 2
    return "".join(_B64[(v >> (24 - 6 * i)) & 0x3F] for i in range(5))


def _s30(v: int) -> str:
    return "".join(_B64[(v >> (24 - 6 * i)) & 0x3F] for i in range(5))


def decode_date(s: str) -> int:
    """The date (seconds) in 5 base64 characters, or 0 when invalid."""
    if len(s) < 5:
        return 0
    v = 0
    for c in s[:5]:
        d = _B64REV.get(c)
        if d is None:
            return 0
        v = (v << 6) | d
    return v << 2 if v > 0 else 0


@dataclass(slots=True)
class RequestPersistence:
    server: Any = None  # servers.Server chosen by the cookie, or None (load balance)
    flag: str = "-"
    cookie_headers: list[str] = field(default_factory=list)
    changed: bool = False
    direct: bool = False
    last_date: int = 0
    first_date: int = 0

    def redispatched(self) -> None:
        """Persistence was broken by a redispatch: the request is no longer DIRECT."""
        if self.direct:
            self.direct = False
            if self.flag != "-":
                self.flag = "D"


@dataclass(slots=True)
class ResponsePersistence:
    set_cookie_headers: list[str] = field(default_factory=list)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    flag: str = "-"
    changed: bool = False


def _persist_ok(s: Any) -> bool:
    """Not stopped in HAProxy's sense: DOWN and MAINT are stopped; DRAIN, weight 0 and STOPPING are not."""
    return s.op != "down" and s.admin != "maint"


def on_request(cfg: CookieConfig | None, backend: Any, cookie_headers: Sequence[str], method: str,
               now: float) -> RequestPersistence:
    if cfg is None:
        return RequestPersistence(cookie_headers=list(cookie_headers))
    res = RequestPersistence(flag="N" if _logs_flags(cfg) else "-", cookie_headers=list(cookie_headers))
    if not cookie_headers:
        return res
    name = cfg.name
    prefix = cfg.mode == "prefix"
    delete = cfg.mode == "insert" and cfg.indirect
    found = False
    out: list[str] = []
    for header in cookie_headers:
        if name not in header:
            out.append(header)
            continue
        segs = header.split(";")
        new_segs: list[str] = []
        hdr_changed = False
        for seg in segs:
            eq = seg.find("=")
            if eq < 0:
                new_segs.append(seg)
                continue
            cname = seg[:eq].strip()
            if cname != name:
                new_segs.append(seg)
                continue
            lead = len(seg) - len(seg.lstrip())
            value = seg[eq + 1:].strip()
            if not found:
                found = True
                _decide(cfg, backend, value, prefix, now, res)
            if prefix:
                tilde = value.find("~")
                if tilde >= 0:
                    seg = f"{seg[:lead]}{name}={value[tilde + 1:]}"
                    hdr_changed = True
                new_segs.append(seg)
            elif delete:
                hdr_changed = True  # the server never sees the persistence cookie
            else:
                new_segs.append(seg)
        if hdr_changed:
            res.changed = True
            rebuilt = ";".join(new_segs).strip()
            if rebuilt:
                out.append(rebuilt)
        else:
            out.append(header)
    res.cookie_headers = out
    if not _logs_flags(cfg):
        res.flag = "-"
    return res


def _logs_flags(cfg: CookieConfig) -> bool:
    """HAProxy shows the cookie columns only for rewrite/insert/prefix or indirect (PR_CK_ANY), not passive."""
    return cfg.mode != "passive" or cfg.indirect


def _decide(cfg: CookieConfig, backend: Any, value: str, prefix: bool, now: float,
            res: RequestPersistence) -> None:
    if prefix:
        tilde = value.find("~")
        srv_value = value if tilde < 0 else value[:tilde]
    else:
        parts = value.split("|", 2)
        srv_value = parts[0]
        if len(parts) > 1:
            res.last_date = decode_date(parts[1])
            if len(parts) > 2:
                res.first_date = decode_date(parts[2])
        inow = int(now)
        if res.first_date and cfg.maxlife and (
                inow - res.first_date > cfg.maxlife or res.first_date - inow > _ONE_DAY):
            res.flag = "O"
            res.first_date = res.last_date = 0
            return
        if res.last_date and cfg.maxidle and (
                inow - res.last_date > cfg.maxidle or res.last_date - inow > _ONE_DAY):
            res.flag = "E"
            res.first_date = res.last_date = 0
            return
    if not srv_value:
        res.flag = "I"
        return
    flag = "I"
    persist = backend.cfg.persist
    for s in backend.servers:
        if s.cfg.cookie is not None and s.cfg.cookie == srv_value:
            ok = _persist_ok(s)
            # `option persist` sticks to a DOWN server, never to one an administrator put in MAINT.
            if ok or (persist and s.admin != "maint"):
                res.server = s
                res.direct = True
                res.flag = "V" if ok else "D"
                return
            flag = "D"  # named server is down: try another one sharing the value, else load balance
    res.flag = flag


def on_response(cfg: CookieConfig | None, server: Any, req: RequestPersistence, set_cookie_headers: Sequence[str],
                method: str, status: int, cacheable: bool, now: float) -> ResponsePersistence:
    res = ResponsePersistence(set_cookie_headers=list(set_cookie_headers))
    if cfg is None:
        return res
    res.flag = "N"
    if 100 <= status < 200 and status != 101:
        return res
    name = cfg.name
    mode = cfg.mode
    srv_cookie = server.cfg.cookie if server is not None else None
    sck_found = False
    out: list[str] = []
    for h in set_cookie_headers:
        eq = h.find("=")
        semi = h.find(";")
        if eq < 0 or (0 <= semi < eq) or h[:eq].strip() != name:
            out.append(h)
            continue
        sck_found = True
        res.flag = "P"
        if cfg.preserve:
            out.append(h)
        elif (server is not None and mode == "insert") or (req.direct and cfg.indirect):
            res.flag = "D"
            res.changed = True
        elif server is not None and srv_cookie and mode == "rewrite":
            end = semi if semi >= 0 else len(h)
            out.append(f"{h[:eq + 1]}{srv_cookie}{h[end:]}")
            res.flag = "R"
            res.changed = True
        elif server is not None and srv_cookie and mode == "prefix":
            out.append(f"{h[:eq + 1]}{srv_cookie}~{h[eq + 1:].lstrip()}")
            res.flag = "R"
            res.changed = True
        else:
            out.append(h)
    res.set_cookie_headers = out
    if not _logs_flags(cfg):
        res.flag = "-"

    if mode != "insert" or server is None:
        return res
    if cfg.preserve and sck_found:
        return res
    if cfg.postonly and method != "POST":
        return res
    inow = int(now)
    last = req.last_date
    need = (
        not req.direct
        or ((cfg.maxidle or last) and (not last or last - inow < 0))
        or (cfg.maxlife and not req.first_date)
        or (not cfg.maxlife and req.first_date)
    )
    if not need:
        return res
    if not srv_cookie:
        value = f"{name}{_DELETE_COOKIE}"
    else:
        value = f"{name}={srv_cookie}"
        if cfg.maxidle or cfg.maxlife:
            value += "|" + encode_date(now)
            if cfg.maxlife:
                value += "|" + (_s30(req.first_date >> 2) if req.first_date else encode_date(now))
        value += "; path=/"
    for d in cfg.domains:
        value += f"; domain={d}"
    if cfg.httponly:
        value += "; HttpOnly"
    if cfg.secure:
        value += "; Secure"
    for a in cfg.attrs:
        value += f"; {a}"
    res.add_headers.append(("Set-Cookie", value))
    res.flag = "U" if (srv_cookie and req.direct) else "I"
    res.changed = True
    if cfg.nocache and cacheable:
        res.add_headers.append(("Cache-control", "private"))
    return res


def is_cacheable(method: str, status: int, headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a shared cache could store this response (what `nocache` protects the inserted cookie from).

    Safe method, explicit freshness (Cache-Control max-age / s-maxage / public, Expires) or validators (ETag /
    Last-Modified), and no private / no-cache / no-store (nor Pragma: no-cache).
    """
    if method not in ("GET", "HEAD"):
        return False
    explicit = False
    validator = False
    for n, v in headers:
        ln = n.lower()
        if ln == "cache-control":
            for d in v.lower().split(","):
                d = d.strip()
                if d.startswith(("private", "no-cache", "no-store")):
                    return False
                if d.startswith(("max-age", "s-maxage", "public")):
                    explicit = True
        elif ln == "pragma" and "no-cache" in v.lower():
            return False
        elif ln == "expires":
            explicit = True
        elif ln in ("etag", "last-modified"):
            validator = True
    return status >= 200 and (explicit or validator)
