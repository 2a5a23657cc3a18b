"""The stats page served from the HTTP stream: HTML report, ``;csv``/``;json`` suffixes, Basic auth, admin actions,
and the Prometheus endpoint's answer. Pure code: a request's parts in, (status, headers, body) out.

Rules (spec/haproxy.md §14):
- Prometheus: HAProxy's exporter names (``haproxy_process_*``, ``haproxy_frontend_*``, ``haproxy_backend_*``,
  ``haproxy_server_*``) and help texts, ``# HELP``/``# TYPE`` once per family, families in HAProxy's order with
  every object's sample together, one 0/1 series per state for the status families.
- The page answers every URI that *starts with* the configured ``stats uri`` (default ``/haproxy?stats``). Suffixes
  after the prefix, separated by ``;``: ``csv`` (the ``show stat`` CSV, ``text/plain``), ``json`` (``show stat
  json``), ``up`` (hide servers that are not up), ``norefresh`` (no automatic reload), ``st=CODE`` (the result of
  an admin action, shown as a banner).
- ``stats auth user:pass`` (any number): until a request carries valid Basic credentials the answer is 401 with
  ``WWW-Authenticate: Basic realm="<realm>"`` (realm default ``HAProxy Statistics``). Credentials are compared in
  constant time.
- ``stats admin`` (the caller evaluates its condition): the page gets a form per backend (checkboxes, an action
  list, Apply). A POST to the page applies the action to the selected servers through the runtime API at admin
  level and answers 303 to ``<uri>;st=<CODE>``: DONE (all applied), PART (some failed), NONE (nothing selected),
  ERRP (bad parameters), UNKN (unknown action), DENY (admin not allowed for this request), EXCD (body too large).
- ``stats refresh N`` adds a refresh of N seconds (unless ``;norefresh``); ``stats hide-version`` leaves the
  version and the process details out of the page.
- Every answer carries ``Cache-Control: no-cache``. Everything written into the HTML is escaped.
- Server rows are coloured by state as HAProxy's page: up green, going down yellow, going up orange, down red,
  drain/NOLB blue, maintenance brown, no check grey; backups in a bluish shade when up.

Public API:
    StatsPage(uri="/haproxy?stats", realm="HAProxy Statistics", auth=(), refresh=None, admin=False,
              hide_version=False)
    handle_stats_request(page, view, api, info, method, path, headers, body=b"", admin_allowed=None)
        -> StatsAnswer(status, reason, headers, body)
    prometheus_answer(view, info) -> StatsAnswer; render_prometheus(view, info) -> str
    render_html(view, info, page, *, only_up=False, refresh=True, status=None, admin=False) -> str
    apply_admin_form(api, body) -> status code ("DONE", "PART", "NONE", "ERRP", "UNKN", "EXCD")
"""

from __future__ import annotations

import base64
import hmac
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from balancier.proxy import stats
from balancier.proxy.runtime_api import RuntimeApi, Session
from balancier.proxy.servers import Backend, Server
from balancier.proxy.stats import ProcessInfo, StatsView, check_enabled, group_in_use, server_state_label

MAX_ADMIN_BODY = 16384

STATUS_TEXT = {
    "DONE": "Action processed successfully.",
    "NONE": "Nothing has changed.",
    "PART": "Action partially processed. Some server names are probably unknown or ambiguous.",
    "ERRP": "Action not processed because of invalid parameters. The action is probably unknown or the "
            "backend/server name doesn't exist.",
    "EXCD": "Action not processed: the request was too large. You should retry with fewer servers at a time.",
    "DENY": "Action denied.",
    "UNKN": "Unexpected result.",
}

# action value -> (label, runtime API command template)
ADMIN_ACTIONS: dict[str, tuple[str, str]] = {
    "ready": ("Set state to READY", "set server {b}/{s} state ready"),
    "drain": ("Set state to DRAIN", "set server {b}/{s} state drain"),
    "maint": ("Set state to MAINT", "set server {b}/{s} state maint"),
    "dhlth": ("Health: disable checks", "disable health {b}/{s}"),
    "ehlth": ("Health: enable checks", "enable health {b}/{s}"),
    "hrunn": ("Health: force UP", "set server {b}/{s} health up"),
    "hnolb": ("Health: force NOLB", "set server {b}/{s} health stopping"),
    "hdown": ("Health: force DOWN", "set server {b}/{s} health down"),
    "shutdown": ("Kill Sessions", "shutdown sessions server {b}/{s}"),
}


@dataclass(frozen=True)
class StatsPage:
    """A proxy's ``stats`` settings, as the page needs them."""

    uri: str = "/haproxy?stats"
    realm: str = "HAProxy Statistics"
    auth: tuple[tuple[str, str], ...] = ()
    refresh: int | None = None  # seconds
    admin: bool = False  # `stats admin if ...` present; the condition is evaluated per request by the caller
    hide_version: bool = False


@dataclass(frozen=True)
class StatsAnswer:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _answer(status: int, reason: str, ctype: str | None, body: str | bytes,
            extra: Sequence[tuple[str, str]] = ()) -> StatsAnswer:
    data = body.encode("utf-8") if isinstance(body, str) else body
    headers = [("Cache-Control", "no-cache")]
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    headers.extend(extra)
    return StatsAnswer(status, reason, tuple(headers), data)


def _authorized(page: StatsPage, headers: Iterable[tuple[str, str]]) -> bool:
    if not page.auth:
        return True
    for name, value in headers:
        if name.lower() != "authorization":
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            continue
        try:
            raw = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        user, sep, password = raw.partition(":")
        if not sep:
            return False
        ok = False
        for u, p in page.auth:
            # every pair is compared, so timing tells nothing about which part was wrong
            ok |= hmac.compare_digest(u.encode(), user.encode()) & hmac.compare_digest(p.encode(), password.encode())
        return ok
    return False


def parse_suffixes(page: StatsPage, path: str) -> dict[str, str] | None:
    """The ``;key[=value]`` options after the stats prefix, or None when the path is not the stats page."""
    if not path.startswith(page.uri):
        return None
    opts: dict[str, str] = {}
    for part in path[len(page.uri):].split(";"):
        if not part:
            continue
        key, _, value = part.partition("=")
        opts[key] = value
    return opts


def handle_stats_request(page: StatsPage, view: StatsView, api: RuntimeApi, info: ProcessInfo, method: str,
                         path: str, headers: Iterable[tuple[str, str]], body: bytes = b"",
                         admin_allowed: bool | None = None) -> StatsAnswer | None:
    """Answer a request for the stats page; None when ``path`` is not under ``page.uri``."""
    opts = parse_suffixes(page, path)
    if opts is None:
        return None
    headers = list(headers)
    if not _authorized(page, headers):
        realm = page.realm.replace('"', "'")
        return _answer(401, "Unauthorized", "text/html",
                       "<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this "
                       "content.\n</body></html>\n", [("WWW-Authenticate", f'Basic realm="{realm}"')])
    admin = page.admin if admin_allowed is None else (page.admin and admin_allowed)
    if method == "POST":
        if not admin:
            code = "DENY"
        elif len(body) > MAX_ADMIN_BODY:
            code = "EXCD"
        else:
            code = apply_admin_form(api, body)
        return _answer(303, "See Other", None, b"", [("Location", f"{page.uri};st={code}")])
    if method not in ("GET", "HEAD"):
        return _answer(405, "Method Not Allowed", "text/html",
                       "<html><body><h1>405 Method Not Allowed</h1>\nA request method is not allowed.\n"
                       "</body></html>\n", [("Allow", "GET, HEAD, POST")])
    only = _only_up if "up" in opts else None
    if "csv" in opts:
        return _answer(200, "OK", "text/plain", stats.render_csv(view, "operator", only=only))
    if "json" in opts:
        return _answer(200, "OK", "application/json", stats.render_json(view, "operator", only=only))
    html = render_html(view, info, page, only_up="up" in opts, refresh="norefresh" not in opts,
                       status=opts.get("st"), admin=admin)
    return _answer(200, "OK", "text/html", html)


def prometheus_answer(view: StatsView, info: ProcessInfo) -> StatsAnswer:
    """The ``prometheus-exporter`` service's answer."""
    return _answer(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_prometheus(view, info))


def _only_up(s: Server) -> bool:
    return s.admin != "maint" and s.op != "down"


def apply_admin_form(api: RuntimeApi, body: bytes) -> str:
    """Apply ``s=<server>&...&action=<a>&b=<backend or #id>``; HAProxy's result code."""
    try:
        form = urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return "ERRP"
    action = form.get("action", [""])[-1]
    backend = form.get("b", [""])[-1]
    servers = form.get("s", [])
    if not action or not backend:
        return "ERRP"
    if action not in ADMIN_ACTIONS:
        return "UNKN"
    if api.view.backend(backend) is None:
        return "ERRP"
    if not servers:
        return "NONE"
    template = ADMIN_ACTIONS[action][1]
    done = 0
    for name in servers:
        if not name or any(c in name for c in " \t;\\/"):
            continue
        sess = Session(level="admin")
        answer = api.execute(template.format(b=backend, s=name), sess)
        if answer == "\n":
            done += 1
    if done == len(servers):
        return "DONE"
    return "PART" if done else "ERRP"


# --- HTML -------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: Arial, Helvetica, sans-serif; font-size: 12px; color: #222; margin: 1em; }
h1 { font-size: 18px; margin: 0 0 .4em 0; } h2 { font-size: 14px; margin: 1.2em 0 .3em 0; }
table.px { border-collapse: collapse; margin-bottom: .6em; min-width: 60%; }
table.px th, table.px td { border: 1px solid #999; padding: 2px 6px; text-align: right; white-space: nowrap; }
table.px th { background: #20435c; color: #fff; font-weight: normal; }
table.px th.pxname { background: #b00040; text-align: left; font-weight: bold; font-size: 13px; }
table.px td.name { text-align: left; } table.px td.status { text-align: center; }
tr.frontend td, tr.backend td { background: #e8e8d0; font-weight: bold; }
tr.active_up td { background: #c0ffc0; } tr.backup_up td { background: #b0d0ff; }
tr.active_going_down td, tr.backup_going_down td { background: #ffffa0; }
tr.active_going_up td, tr.backup_going_up td { background: #ffd020; }
tr.active_down td, tr.backup_down td { background: #ff9090; }
tr.active_draining td, tr.backup_draining td, tr.active_nolb td, tr.backup_nolb td { background: #20a0ff; }
tr.maintain td { background: #c07820; } tr.active_no_check td, tr.backup_no_check td { background: #e0e0e0; }
div.status { padding: .4em; margin: .5em 0; border: 1px solid #888; }
div.status.ok { background: #c0ffc0; } div.status.err { background: #ff9090; }
table.info td { padding: 1px 8px 1px 0; } table.legend td { padding: 1px 6px; border: 1px solid #999; }
"""

_HEAD1 = ("<tr><th class=\"pxname\" rowspan=\"2\">{name}</th><th colspan=\"3\">Queue</th>"
          "<th colspan=\"3\">Session rate</th><th colspan=\"5\">Sessions</th><th colspan=\"2\">Bytes</th>"
          "<th colspan=\"2\">Denied</th><th colspan=\"3\">Errors</th><th colspan=\"2\">Warnings</th>"
          "<th colspan=\"9\">Server</th></tr>\n")
_HEAD2 = "".join(f"<th>{h}</th>" for h in (
    "Cur", "Max", "Limit", "Cur", "Max", "Limit", "Cur", "Max", "Limit", "Total", "LbTot", "In", "Out", "Req",
    "Resp", "Req", "Conn", "Resp", "Retr", "Redis", "Status", "LastChk", "Wght", "Act", "Bck", "Chk", "Dwn",
    "Dwntme", "Thrtle"))


def _row_class(s: Server) -> str:
    if s.admin == "maint":
        return "maintain"
    side = "backup" if s.is_backup else "active"
    text = stats.server_status(s)
    if s.op == "down":
        return f"{side}_going_up" if text.startswith("DOWN ") else f"{side}_down"
    if s.admin == "drain":
        return f"{side}_draining"
    if s.op == "stopping":
        return f"{side}_nolb"
    if text == "no check":
        return f"{side}_no_check"
    return f"{side}_going_down" if text.startswith("UP ") else f"{side}_up"


def _duration(sec: int) -> str:
    d, rem = divmod(max(0, sec), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    return f"{m}m{s}s"


def _cells(values: Iterable[object]) -> str:
    return "".join(f"<td>{'' if v is None else escape(str(v))}</td>" for v in values)


def _frontend_tr(view: StatsView, fe: stats.FrontendLike) -> str:
    r = stats.frontend_row(view, fe)
    vals = ["", "", "", r[33], r[35], r.get(34) or "", r[4], r[5], r[6], r[7], "", r[8], r[9], r[10], r[11],
            r[12], "", "", "", ""]
    return (f"<tr class=\"frontend\"><td class=\"name\">Frontend</td>{_cells(vals)}"
            f"<td class=\"status\">{escape(r[17])}</td>{_cells([''] * 8)}</tr>\n")


def _server_tr(view: StatsView, s: Server, admin: bool) -> str:
    r = stats.server_row(view, s, legends=True)
    chk = ""
    if r.get(36):
        chk = f"{r[36]} in {r[38]}ms" if r.get(38) is not None else str(r[36])
    vals = [r[2], r[3], r.get(25) or "", r[33], r[35], "", r[4], r[5], r.get(6) or "", r[7], r[30], r[8], r[9],
            "", r[11], "", r[13], r[14], r[15], r[16]]
    tail = [chk, r[18], "Y" if r[19] else "-", "Y" if r[20] else "-", r.get(21, "") if r.get(21) is not None else "",
            r.get(22) if r.get(22) is not None else "",
            _duration(r[24]) if r.get(24) is not None else "", "-"]
    box = ""
    if admin:
        box = f"<input type=\"checkbox\" name=\"s\" value=\"{escape(s.name)}\"> "
    status = escape(r[17]) + (f" {_duration(r[23])}" if r[17] not in ("no check",) else "")
    return (f"<tr class=\"{_row_class(s)}\" data-server=\"{escape(s.name)}\"><td class=\"name\">{box}"
            f"<a name=\"{escape(s.backend.name)}/{escape(s.name)}\"></a>{escape(s.name)}</td>{_cells(vals)}"
            f"<td class=\"status\">{status}</td>{_cells(tail)}</tr>\n")


def _backend_tr(view: StatsView, be: Backend) -> str:
    r = stats.backend_row(view, be, legends=True)
    vals = [r[2], r[3], "", r[33], r[35], "", r[4], r[5], r[6], r[7], r[30], r[8], r[9], r[10], r[11], "", r[13],
            r[14], r[15], r[16]]
    tail = ["", r[18], r[19], r[20], "", r[22], _duration(r[24]), ""]
    return (f"<tr class=\"backend\"><td class=\"name\">Backend</td>{_cells(vals)}"
            f"<td class=\"status\">{escape(r[17])} {_duration(r[23])}</td>{_cells(tail)}</tr>\n")


def _admin_form_tail(view: StatsView, be: Backend) -> str:
    opts = "".join(f"<option value=\"{k}\">{escape(label)}</option>" for k, (label, _t) in ADMIN_ACTIONS.items())
    iid = view.proxy_ids.get(be.name, 0)
    return (f"<div class=\"admin\">Choose the action to perform on the checked servers: "
            f"<select name=\"action\"><option value=\"\"></option>{opts}</select>"
            f"<input type=\"hidden\" name=\"b\" value=\"#{iid}\">"
            f"<input type=\"submit\" value=\"Apply\"></div>\n")


def render_html(view: StatsView, info: ProcessInfo, page: StatsPage, *, only_up: bool = False,
                refresh: bool = True, status: str | None = None, admin: bool = False) -> str:
    title = "Statistics Report" if page.hide_version else f"Statistics Report for pid {info.pid}"
    out = ["<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n",
           f"<title>{escape(title)}</title>\n"]
    if refresh and page.refresh:
        out.append(f"<meta http-equiv=\"refresh\" content=\"{int(page.refresh)}\">\n")
    out.append(f"<style>{_CSS}</style></head><body>\n<h1>{escape(title)}</h1>\n")
    if status:
        cls = "ok" if status in ("DONE", "NONE") else "err"
        text = STATUS_TEXT.get(status, STATUS_TEXT["UNKN"])
        out.append(f"<div class=\"status {cls}\" id=\"status\">[{escape(status)}] {escape(text)} "
                   f"<a href=\"{escape(page.uri)}\">[X]</a></div>\n")
    out.append("<h2>General process information</h2>\n<table class=\"info\">")
    rows = [("uptime", stats._uptime(int(info.uptime)))]
    if not page.hide_version:
        rows = [("version", info.version), ("pid", str(info.pid)), *rows,
                ("current conns", f"{info.curr_conns} (maxconn {info.maxconn})")]
    out.extend(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    out.append("</table>\n<table class=\"legend\"><tr>" + "".join(
        f"<td class=\"{c}\"><span>{escape(t)}</span></td>" for c, t in (
            ("active_up", "active UP"), ("backup_up", "backup UP"), ("active_going_down", "UP, going down"),
            ("active_going_up", "DOWN, going up"), ("active_down", "DOWN"), ("active_draining", "DRAIN / NOLB"),
            ("maintain", "MAINT"), ("active_no_check", "no check"))) + "</tr></table>\n")
    out.append(f"<p>Display option: <a href=\"{escape(page.uri)};csv\">CSV export</a> "
               f"<a href=\"{escape(page.uri)};json\">JSON export</a> "
               f"<a href=\"{escape(page.uri)}{';norefresh' if refresh else ''}{';up' if only_up else ''}\">"
               f"{'Disable' if refresh else 'Keep'} refresh</a> "
               f"<a href=\"{escape(page.uri)}{'' if only_up else ';up'}\">{'Show all' if only_up else 'Hide DOWN'} "
               f"servers</a> (generated {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(view.wall()))} UTC)</p>\n")
    for name in view.order:
        fe = view.frontend(name)
        be = view.backend(name)
        out.append(f"<h2 id=\"px-{escape(name)}\">{escape(name)}</h2>\n")
        form = admin and be is not None
        if form:
            out.append(f"<form method=\"post\" action=\"{escape(page.uri)}\">\n")
        out.append(f"<table class=\"px\" data-proxy=\"{escape(name)}\">\n"
                   + _HEAD1.format(name=escape(name)) + f"<tr>{_HEAD2}</tr>\n")
        if fe is not None:
            out.append(_frontend_tr(view, fe))
        if be is not None:
            for s in be.servers:
                if only_up and not _only_up(s):
                    continue
                out.append(_server_tr(view, s, form))
            out.append(_backend_tr(view, be))
        out.append("</table>\n")
        if form and be is not None:
            out.append(_admin_form_tail(view, be) + "</form>\n")
    out.append("</body></html>\n")
    return "".join(out)


# --- Prometheus ------------------------------------------------------------------------------------------------------

_SERVER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")
_CHECK_STATES = ("HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
                 "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK")
_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
_H_SESS = "Number of current sessions on the frontend, backend or server"
_H_MAXS = "Highest value of current sessions encountered since process started"
_H_LIM = "Frontend/listener/server's maxconn, backend's fullconn"
_H_STOT = "Total number of sessions since process started"
_H_BIN = "Total number of request bytes since process started"
_H_BOUT = "Total number of response bytes since process started"
_H_STATUS = "Current status of the service, per state label value."
_H_RESP = "Total number of HTTP responses with status 100-199 returned by this object since the worker process started"
_H_REQ = "Total number of HTTP requests processed by this object since the worker process started"
_H_ECON = "Total number of failed connections to server since the worker process started"
_H_ERESP = "Total number of invalid responses since the worker process started"
_H_RETR = "Total number of server connection retries since the worker process started"
_H_REDIS = "Total number of server redispatches due to connection failures since the worker process started"
_H_W = "Server's effective weight, or sum of active servers' effective weights for a backend"
_H_UW = "Server's user weight, or sum of active servers' user weights for a backend"
_H_CHGDOWN = "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started"
_H_LASTCHG = "How long ago the last server state changed, in seconds"
_H_DOWNT = "Total time spent in DOWN state, for server or backend"
_H_LB = "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"
_H_CABRT = "Total number of requests or connections aborted by the client since the worker process started"
_H_SABRT = "Total number of requests or connections aborted by the server since the worker process started"
_H_QCUR = "Number of current queued connections"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class _Families:
    def __init__(self) -> None:
        self.out: list[str] = []

    def family(self, name: str, help_: str, typ: str, samples: Iterable[tuple[Sequence[tuple[str, str]], Any]]) -> None:
        lines = [f"haproxy_{name}{_labels(lb)} {_num(v)}\n" for lb, v in samples]
        if not lines:
            return
        self.out.append(f"# HELP haproxy_{name} {help_}\n# TYPE haproxy_{name} {typ}\n")
        self.out.extend(lines)


def _num(v: Any) -> str:
    if isinstance(v, float) and not v.is_integer():
        return repr(v)
    return str(int(v))


def render_prometheus(view: StatsView, info: ProcessInfo) -> str:
    f = _Families()
    g, c = "gauge", "counter"
    f.family("process_nbthread", "Number of started threads (global.nbthread)", g, [((), info.nbthread)])
    f.family("process_nbproc", "Number of started worker processes (historical, always 1)", g, [((), 1)])
    f.family("process_relative_process_id", "Relative worker process number (1)", g, [((), 1)])
    f.family("process_uptime_seconds", "How long ago this worker process was started (seconds)", g,
             [((), int(info.uptime))])
    f.family("process_max_connections", "Hard limit on the number of per-process connections (configured or "
             "imposed by Ulimit-n)", g, [((), info.maxconn)])
    f.family("process_current_connections", "Current number of connections on this worker process", g,
             [((), info.curr_conns)])
    f.family("process_connections_total", "Total number of connections on this worker process since started", c,
             [((), info.cum_conns)])
    f.family("process_requests_total", "Total number of requests on this worker process since started", c,
             [((), info.cum_req)])
    f.family("process_stopping", "1 if the worker process is currently stopping, otherwise zero", g, [((), int(info.stopping))])
    f.family("process_start_time_seconds", "Start time in seconds", g, [((), int(info.start_time))])
    f.family("process_build_info", "Build info", g, [((("version", info.version),), 1)])

    fes = [fe for n in view.order if (fe := view.frontend(n)) is not None]
    bes = [be for n in view.order if (be := view.backend(n)) is not None]
    srvs = [s for be in bes for s in be.servers]
    tot = {id(o): view.totals(o) for o in [*fes, *bes, *srvs]}  # counters summed over the workers

    def t(o: Any) -> Any:
        return tot[id(o)]

    def fl(fe: Any) -> tuple[tuple[str, str], ...]:
        return (("proxy", fe.name),)

    def sl(s: Server) -> tuple[tuple[str, str], ...]:
        return (("proxy", s.backend.name), ("server", s.name))

    f.family("frontend_current_sessions", _H_SESS, g, [(fl(x), t(x).feconn) for x in fes])
    f.family("frontend_max_sessions", _H_MAXS, g, [(fl(x), t(x).smax) for x in fes])
    f.family("frontend_limit_sessions", _H_LIM, g, [(fl(x), getattr(x, "slim", x.maxconn)) for x in fes])
    f.family("frontend_sessions_total", _H_STOT, c, [(fl(x), t(x).stot) for x in fes])
    f.family("frontend_bytes_in_total", _H_BIN, c, [(fl(x), t(x).bin) for x in fes])
    f.family("frontend_bytes_out_total", _H_BOUT, c, [(fl(x), t(x).bout) for x in fes])
    f.family("frontend_requests_denied_total", "Total number of denied requests since process started", c,
             [(fl(x), t(x).dreq) for x in fes])
    f.family("frontend_request_errors_total", "Total number of invalid requests since process started", c,
             [(fl(x), t(x).ereq) for x in fes])
    f.family("frontend_status", _H_STATUS, g,
             [((*fl(x), ("state", st)), int((st == "UP") != bool(getattr(x, "disabled", False))))
              for x in fes for st in ("DOWN", "UP")])
    f.family("frontend_connections_total", "Total number of new connections accepted on this frontend since the "
             "worker process started", c, [(fl(x), t(x).stot) for x in fes])
    hfes = [x for x in fes if x.cfg.mode == "http"]
    f.family("frontend_http_requests_total", _H_REQ, c, [(fl(x), t(x).req_tot) for x in hfes])
    f.family("frontend_http_responses_total", _H_RESP, c,
             [((*fl(x), ("code", code)), t(x).hrsp[(i + 1) % 6]) for i, code in enumerate(_CODES) for x in hfes])

    f.family("backend_current_queue", _H_QCUR, g, [(fl(b), t(b).qcur) for b in bes])
    f.family("backend_current_sessions", _H_SESS, g, [(fl(b), t(b).beconn) for b in bes])
    f.family("backend_limit_sessions", _H_LIM, g, [(fl(b), b.fullconn) for b in bes])
    f.family("backend_sessions_total", _H_STOT, c, [(fl(b), t(b).stot) for b in bes])
    f.family("backend_bytes_in_total", _H_BIN, c, [(fl(b), t(b).bin) for b in bes])
    f.family("backend_bytes_out_total", _H_BOUT, c, [(fl(b), t(b).bout) for b in bes])
    f.family("backend_connection_errors_total", _H_ECON, c, [(fl(b), t(b).econ) for b in bes])
    f.family("backend_response_errors_total", _H_ERESP, c, [(fl(b), t(b).eresp) for b in bes])
    f.family("backend_retry_warnings_total", _H_RETR, c, [(fl(b), t(b).wretr) for b in bes])
    f.family("backend_redispatch_warnings_total", _H_REDIS, c, [(fl(b), t(b).wredis) for b in bes])
    f.family("backend_status", _H_STATUS, g,
             [((*fl(b), ("state", st)), int((st == "UP") == b.has_usable())) for b in bes for st in ("DOWN", "UP")])
    f.family("backend_weight", _H_W, g, [(fl(b), sum(s.uweight for s in group_in_use(b))) for b in bes])
    f.family("backend_active_servers", "Total number of active UP servers with a non-zero weight", g,
             [(fl(b), b.usable_counts()[0]) for b in bes])
    f.family("backend_backup_servers", "Total number of backup UP servers with a non-zero weight", g,
             [(fl(b), b.usable_counts()[1]) for b in bes])
    f.family("backend_check_up_down_total", _H_CHGDOWN, c, [(fl(b), view.backend_downtime(b)[1]) for b in bes])
    f.family("backend_check_last_change_seconds", _H_LASTCHG, g,
             [(fl(b), max(0, int(view.clock() - b.lastchg))) for b in bes])
    f.family("backend_downtime_seconds_total", _H_DOWNT, c, [(fl(b), view.backend_downtime(b)[0]) for b in bes])
    f.family("backend_loadbalanced_total", _H_LB, c, [(fl(b), t(b).lbtot) for b in bes])
    hbes = [b for b in bes if b.cfg.mode == "http"]
    f.family("backend_http_requests_total", _H_REQ, c, [(fl(b), t(b).req_tot) for b in hbes])
    f.family("backend_http_responses_total", _H_RESP, c,
             [((*fl(b), ("code", code)), t(b).hrsp[(i + 1) % 6]) for b in hbes for i, code in enumerate(_CODES)])
    f.family("backend_client_aborts_total", _H_CABRT, c, [(fl(b), t(b).cli_abrt) for b in bes])
    f.family("backend_server_aborts_total", _H_SABRT, c, [(fl(b), t(b).srv_abrt) for b in bes])
    f.family("backend_uweight", _H_UW, g, [(fl(b), sum(s.uweight for s in group_in_use(b))) for b in bes])

    f.family("server_current_queue", _H_QCUR, g, [(sl(s), t(s).qcur) for s in srvs])
    f.family("server_current_sessions", _H_SESS, g, [(sl(s), t(s).served) for s in srvs])
    f.family("server_limit_sessions", _H_LIM, g, [(sl(s), s.cfg.maxconn) for s in srvs if s.cfg.maxconn])
    f.family("server_sessions_total", _H_STOT, c, [(sl(s), t(s).stot) for s in srvs])
    f.family("server_bytes_in_total", _H_BIN, c, [(sl(s), t(s).bin) for s in srvs])
    f.family("server_bytes_out_total", _H_BOUT, c, [(sl(s), t(s).bout) for s in srvs])
    f.family("server_connection_errors_total", _H_ECON, c, [(sl(s), t(s).econ) for s in srvs])
    f.family("server_response_errors_total", _H_ERESP, c, [(sl(s), t(s).eresp) for s in srvs])
    f.family("server_retry_warnings_total", _H_RETR, c, [(sl(s), t(s).wretr) for s in srvs])
    f.family("server_redispatch_warnings_total", _H_REDIS, c, [(sl(s), t(s).wredis) for s in srvs])
    f.family("server_status", _H_STATUS, g,
             [((*sl(s), ("state", st)), int(server_state_label(s) == st)) for s in srvs for st in _SERVER_STATES])
    f.family("server_weight", _H_W, g, [(sl(s), s.uweight) for s in srvs])
    chk = [s for s in srvs if check_enabled(s)]
    f.family("server_check_failures_total", "Total number of failed individual health checks per server/backend, "
             "since the worker process started", c, [(sl(s), t(s).chkfail) for s in chk])
    f.family("server_check_up_down_total", _H_CHGDOWN, c, [(sl(s), t(s).chkdown) for s in chk])
    f.family("server_check_last_change_seconds", _H_LASTCHG, g,
             [(sl(s), view.since(s.lastchg)) for s in srvs])
    f.family("server_downtime_seconds_total", _H_DOWNT, c, [(sl(s), view.server_downtime(s)) for s in chk])
    f.family("server_queue_limit", "Limit on the number of connections in queue, for servers only (maxqueue "
             "argument)", g, [(sl(s), s.cfg.maxqueue) for s in srvs if s.cfg.maxqueue])
    f.family("server_loadbalanced_total", _H_LB, c, [(sl(s), t(s).lbtot) for s in srvs])
    f.family("server_check_status", "Status of last health check, per state label value.", g,
             [((*sl(s), ("state", st)), int(s.check_status == st)) for s in chk for st in _CHECK_STATES])
    f.family("server_check_code", "layer5-7 code, if available of the last health check.", g,
             [(sl(s), s.check_code or 0) for s in chk])
    f.family("server_check_duration_seconds", "Total duration of the latest server health check, in seconds.", g,
             [(sl(s), (s.check_duration or 0) / 1000.0) for s in chk])
    hsrvs = [s for s in srvs if s.backend.cfg.mode == "http"]
    f.family("server_http_responses_total", _H_RESP, c,
             [((*sl(s), ("code", code)), t(s).hrsp[(i + 1) % 6]) for i, code in enumerate(_CODES) for s in hsrvs])
    f.family("server_client_aborts_total", _H_CABRT, c, [(sl(s), t(s).cli_abrt) for s in srvs])
    f.family("server_server_aborts_total", _H_SABRT, c, [(sl(s), t(s).srv_abrt) for s in srvs])
    f.family("server_uweight", _H_UW, g, [(sl(s), s.uweight) for s in srvs])
    return "".join(f.out)
