"""The runtime API: HAProxy's text commands parsed and executed over the servers' state. No I/O of its own.

Rules (spec/haproxy.md §14, checked against HAProxy 2.6's answers):
- A line holds commands separated by ``;``; words are separated by spaces or tabs; ``\\`` escapes the next
  character (so ``\\;`` and ``\\ `` are literal). Each command's answer is followed by an empty line, which is
  how a client sees where an answer ends. Error texts are HAProxy's, byte for byte (two of them, as in HAProxy,
  have no newline of their own).
- Levels: ``user`` < ``operator`` < ``admin``. Reading (``show info``, ``show stat``, ``show servers state``,
  ``get weight``, ``help``) needs user; ``show sess`` and ``clear counters`` need operator; every change needs
  admin. A command above the session's level answers ``Permission denied``. ``operator``/``user`` lower the level
  of the session; nothing raises it.
- ``b/s`` names a backend and a server, each by name or ``#id``.
- State changes go through ``Backend.set_admin``/``set_op``/``set_weight`` only, so the balancers, the log lines
  (``Server b/s is DOWN, changed from CLI.``) and the stats all follow. ``set server b/s health`` forces the health
  counter to the edge of the new state; ``disable health`` makes an UP server unchecked (``no check``).
- ``set maxconn server`` replaces the server's configured maxconn and hands freed slots to waiting requests.
- Sessions are the runtime's business: ``show sess`` and ``shutdown sessions server`` call the hooks it gives.
- Commands not listed in ``help`` answer HAProxy's "Unknown command" text with the closest supported commands; an
  empty line answers the whole list ("Unknown command. Please enter one of the following commands only:").

Public API:
    RuntimeApi(backends, frontends, info_provider, level="admin", *, proxies=None, hooks=None, view=None)
        .execute(line, session=None) -> str   .session() -> Session   .view (stats.StatsView)
    Session(level, prompt=False, quit=False)
    RuntimeHooks(sessions=None, shutdown_sessions=None); SessionInfo(...)
    hooks_for_runtime(runtime) -> RuntimeHooks; info_for_runtime(runtime, started_wall, started_mono, version)
    split_commands(line) -> list[list[str]]
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from balancier.proxy import stats
from balancier.proxy.config.model import Proxy
from balancier.proxy.servers import Backend, Server
from balancier.proxy.stats import ProcessInfo, StatsView

LEVELS = {"user": 0, "operator": 1, "admin": 2}
PERMISSION_DENIED = "Permission denied\n"
REQUIRE_BS = "Require 'backend/server'.\n"
SET_SERVER_USAGE = "usage: set server <backend>/<server> health | state | weight\n"

# (usage, description, level): the help lines, HAProxy's layout and wording.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("clear counters [all]", "clear max statistics counters (or all counters)", "operator"),
    ("disable health", "disable health checks", "admin"),
    ("disable server (DEPRECATED)", "disable a server for maintenance (use 'set server' instead)", "admin"),
    ("enable health", "enable health checks", "admin"),
    ("enable server  (DEPRECATED)", "enable a disabled server (use 'set server' instead)", "admin"),
    ("get weight <bk>/<srv>", "report a server's current weight", "user"),
    ("operator", "lower the level of the current CLI session to operator", "operator"),
    ("set maxconn server <bk>/<srv>", "change a server's maxconn setting", "admin"),
    ("set server <bk>/<srv> [opts]", "change a server's state, weight or health", "admin"),
    ("set weight <bk>/<srv>  (DEPRECATED)", "change a server's weight (use 'set server' instead)", "admin"),
    ("show info [json|typed]*", "report information about the running process", "user"),
    ("show servers state [<backend>]", "dump volatile server information (all or for a single backend)", "user"),
    ("show sess", "report the list of current sessions", "operator"),
    ("show stat [json|no-maint|typed|up]*", "report counters for each proxy and server", "user"),
    ("shutdown sessions server <bk>/<srv>", "kill sessions on a server", "admin"),
    ("user", "lower the level of the current CLI session to user", "user"),
)
_ALWAYS = (
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
)


def _help_line(usage: str, desc: str) -> str:
    return f"  {usage:<40}: {desc}\n"


@dataclass
class Session:
    """One CLI connection's state: its level, interactive mode, and whether it asked to leave."""

    level: str = "admin"
    prompt: bool = False
    quit: bool = False


@dataclass(frozen=True)
class SessionInfo:
    """One stream as ``show sess`` prints it."""

    id: int
    proto: str  # tcpv4, tcpv6, unix_stream
    src: str  # "ip:port"
    frontend: str
    backend: str
    server: str | None
    age: int  # seconds
    extra: str = ""

    def line(self) -> str:
        srv = self.server if self.server is not None else "<none>"
        tail = f" {self.extra}" if self.extra else ""
        return (f"{self.id:#x}: proto={self.proto} src={self.src} fe={self.frontend} be={self.backend} "
                f"srv={srv} ts=00 epoch=0 age={self.age}s{tail}\n")


@dataclass
class RuntimeHooks:
    """What only the running data plane can do: list its streams and close the ones on a server."""

    sessions: Callable[[], Iterable[SessionInfo]] | None = None
    shutdown_sessions: Callable[[Server], int] | None = None


def split_commands(line: str) -> list[list[str]]:
    """``a b;c\\;d`` -> [["a", "b"], ["c;d"]]: HAProxy's CLI tokenizer (``\\`` escapes any character)."""
    cmds: list[list[str]] = []
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    it = iter(line.rstrip("\r\n"))
    for ch in it:
        if ch == "\\":
            cur.append(next(it, ""))
            in_word = True
        elif ch in " \t":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        elif ch == ";":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
            cmds.append(words)
            words = []
        else:
            cur.append(ch)
            in_word = True
    if in_word:
        words.append("".join(cur))
    cmds.append(words)
    return [c for c in cmds if c]


class _Error(Exception):
    """An answer that ends the command (HAProxy's cli_err)."""


def _parse_int(text: str, garbage: str, trailing: str) -> int:
    """strtol-like parsing with HAProxy's two messages for garbage; never a bare int() on raw input."""
    i = 1 if text[:1] in ("+", "-") else 0
    j = i
    while j < len(text) and text[j] in "0123456789":  # ASCII digits only (str.isdigit accepts '²')
        j += 1
    if j == i:
        raise _Error(garbage)
    if j != len(text):
        raise _Error(trailing)
    return int(text[:j])


class RuntimeApi:
    def __init__(self, backends: Sequence[Backend], frontends: Sequence[Any],
                 info_provider: Callable[[], ProcessInfo], level: str = "admin", *,
                 proxies: Sequence[Proxy] | None = None, hooks: RuntimeHooks | None = None,
                 view: StatsView | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown CLI level '{level}' (user, operator or admin)")
        self.level = level
        self.info_provider = info_provider
        self.hooks = hooks or RuntimeHooks()
        self.view = view if view is not None else StatsView(frontends, backends, proxies)
        # servers put in maintenance from this API (HAProxy's "forced" maint bit, vs. the config's `disabled`)
        self.forced_maint: weakref.WeakSet[Server] = weakref.WeakSet()

    def session(self) -> Session:
        return Session(level=self.level)

    # --- entry point ----------------------------------------------------------------------------------------------
    def execute(self, line: str, session: Session | None = None) -> str:
        """Run every command of the line; the answers, each followed by an empty line."""
        sess = session if session is not None else self.session()
        cmds = split_commands(line)
        if not cmds:
            return self._all_commands("Unknown command. Please enter one of the following commands only:\n") + "\n"
        out = []
        for words in cmds:
            if sess.quit:
                break
            out.append(self.run(words, sess) + "\n")
        return "".join(out)

    def run(self, words: list[str], sess: Session) -> str:
        """One command's answer (without the empty line that follows it)."""
        try:
            return self._dispatch(words, sess)
        except _Error as e:
            return str(e)

    def _need(self, sess: Session, level: str) -> None:
        if LEVELS[sess.level] < LEVELS[level]:
            raise _Error(PERMISSION_DENIED)

    def _dispatch(self, w: list[str], sess: Session) -> str:
        cmd = w[0]
        n = len(w)
        if cmd == "help":
            return self._help(w[1:], sess)
        if cmd == "prompt":
            sess.prompt = not sess.prompt
            return ""
        if cmd == "quit":
            sess.quit = True
            return ""
        if cmd in ("operator", "user") and n == 1:
            self._need(sess, cmd)
            sess.level = cmd
            return ""
        if cmd == "show" and n >= 2:
            if w[1] == "info":
                return self._show_info(w[2:])
            if w[1] == "stat":
                return self._show_stat(w[2:], sess)
            if w[1] == "servers" and n >= 3 and w[2] == "state":
                return self._show_servers_state(w[3:])
            if w[1] == "sess":
                self._need(sess, "operator")
                return self._show_sess(w[2:])
        if cmd == "get" and n >= 2 and w[1] == "weight":
            s = self._server(w, 2)
            return f"{s.uweight} (initial {s.cfg.weight})\n"
        if cmd == "set" and n >= 2:
            if w[1] == "weight":
                self._need(sess, "admin")
                s = self._server(w, 2)
                return self._set_weight(s, w[3] if n > 3 else None)
            if w[1] == "server":
                self._need(sess, "admin")
                return self._set_server(w)
            if w[1] == "maxconn" and n >= 3 and w[2] == "server":
                self._need(sess, "admin")
                return self._set_maxconn(w)
        if cmd in ("enable", "disable") and n >= 2 and w[1] in ("server", "health"):
            self._need(sess, "admin")
            s = self._server(w, 2)
            if w[1] == "server":
                return self._admin(s, "ready" if cmd == "enable" else "maint", only_maint=True)
            return self._health_toggle(s, cmd == "enable")
        if cmd == "shutdown" and n >= 3 and w[1] == "sessions" and w[2] == "server":
            self._need(sess, "admin")
            s = self._server(w, 3)
            return self._shutdown_sessions(s)
        if cmd == "clear" and n >= 2 and w[1] == "counters":
            return self._clear_counters(w[2:], sess)
        return self._unknown(w)

    # --- help -----------------------------------------------------------------------------------------------------
    def _all_commands(self, header: str) -> str:
        return (header + "".join(_help_line(u, d) for u, d, _lv in COMMANDS)
                + "".join(_help_line(u, d) for u, d in _ALWAYS))

    def _help(self, words: list[str], sess: Session) -> str:
        prefix = " ".join(words)
        lines = [_help_line(u, d) for u, d, _lv in COMMANDS if not prefix or u.startswith(prefix)]
        return ("The following commands are valid at this level:\n" + "".join(lines)
                + "".join(_help_line(u, d) for u, d in _ALWAYS))

    def _unknown(self, w: list[str]) -> str:
        header = "Unknown command, but maybe one of the following ones is a better match:\n"
        close = [_help_line(u, d) for u, d, _lv in COMMANDS if u.split()[0] == w[0]]
        if not close:
            return self._all_commands(header)
        return header + "".join(close) + "".join(_help_line(u, d) for u, d in _ALWAYS)

    # --- lookups --------------------------------------------------------------------------------------------------
    def _server(self, w: list[str], i: int) -> Server:
        if len(w) <= i or "/" not in w[i]:
            raise _Error(REQUIRE_BS)
        bname, _, sname = w[i].partition("/")
        be = self.view.backend(bname)
        if be is None:
            raise _Error("No such backend.\n")
        for s in be.servers:
            if s.name == sname or (sname.startswith("#") and f"#{s.sid}" == sname):
                return s
        raise _Error("No such server.\n")

    # --- show -----------------------------------------------------------------------------------------------------
    def _show_info(self, args: list[str]) -> str:
        info = self.info_provider()
        for a in args:
            if a not in ("typed", "json"):
                raise _Error(f"show info: unsupported option '{a}' (json or typed).\n")
        if "json" in args:
            return stats.render_info_json(info)
        if "typed" in args:
            return stats.render_info_typed(info)
        return stats.render_info(info)

    def _show_stat(self, args: list[str], sess: Session) -> str:
        fmt = "csv"
        iid, types, sid = -1, stats.TYPE_ALL, -1
        only_up = no_maint = False
        rest = []
        for a in args:
            if a in ("typed", "json"):
                fmt = a
            elif a == "up":
                only_up = True
            elif a == "no-maint":
                no_maint = True
            else:
                rest.append(a)
        if rest:
            if len(rest) != 3:
                raise _Error("Usage: show stat [{<iid>|<proxy>} <type> <sid>] [json|typed] [up] [no-maint]\n")
            if rest[0] in self.view.proxy_ids:
                iid = self.view.proxy_ids[rest[0]]
            else:
                iid = _parse_int(rest[0], "No such proxy.\n", "No such proxy.\n")
            types = _parse_int(rest[1], "Invalid type.\n", "Invalid type.\n")
            sid = _parse_int(rest[2], "Invalid server id.\n", "Invalid server id.\n")
            if types == -1:
                types = stats.TYPE_ALL
        only: Callable[[Server], bool] | None = None
        if only_up or no_maint:
            def only(s: Server) -> bool:
                if no_maint and s.admin == "maint":
                    return False
                return not only_up or (s.op != "down" and s.admin != "maint")
        render = {"csv": stats.render_csv, "typed": stats.render_typed, "json": stats.render_json}[fmt]
        return render(self.view, sess.level, iid, types, sid, only)

    def _show_servers_state(self, args: list[str]) -> str:
        be = None
        if args:
            be = self.view.backend(args[0])
            if be is None:
                raise _Error("Can't find backend.\n")
        return stats.render_servers_state(self.view, be, self.forced_maint)

    def _show_sess(self, args: list[str]) -> str:
        if args and args[0] != "all":
            raise _Error("show sess: only the list of sessions is supported here ('show sess' or 'show sess all').\n")
        if self.hooks.sessions is None:
            return ""
        return "".join(si.line() for si in self.hooks.sessions())

    # --- changes --------------------------------------------------------------------------------------------------
    def _admin(self, s: Server, admin: str, only_maint: bool = False) -> str:
        be = s.backend
        if only_maint and admin == "ready" and s.admin != "maint":
            return ""  # `enable server` only lifts maintenance; a drained server stays drained
        if admin == "maint":
            self.forced_maint.add(s)
        else:
            self.forced_maint.discard(s)
            if s.admin == "maint" and s.hstate is None:
                # An unchecked server leaving maintenance is running again (HAProxy), whatever `health down`
                # said before; set_admin publishes the change and updates the balancers.
                s.op = "up"
        be.set_admin(s, admin)  # type: ignore[arg-type]
        return ""

    def _set_weight(self, s: Server, text: str | None) -> str:
        if text is None or text == "":
            raise _Error("Require <weight> or <weight%>.\n")
        garbage = "Empty weight string empty or preceded by garbage"
        if text.endswith("%"):
            w = _parse_int(text[:-1], garbage, "Trailing garbage in weight string")
            if w < 0:
                raise _Error("Relative weight must be positive.\n")
            w = min(s.cfg.weight * min(w, 25600) // 100, 256)
        else:
            w = _parse_int(text, garbage, "Trailing garbage in weight string")
            if not 0 <= w <= 256:
                raise _Error("Absolute weight can only be between 0 and 256 inclusive.\n")
        be = s.backend
        if w and w != s.cfg.weight and be.static:
            raise _Error("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n")
        be.set_weight(s, w)
        return ""

    def _set_server(self, w: list[str]) -> str:
        s = self._server(w, 2)
        if len(w) < 4:
            raise _Error(SET_SERVER_USAGE)
        what = w[3]
        arg = w[4] if len(w) > 4 else ""
        if what == "weight":
            return self._set_weight(s, arg or None)
        if what == "state":
            if arg not in ("ready", "drain", "maint"):
                raise _Error("'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n")
            return self._admin(s, arg)
        if what == "health":
            return self._set_health(s, arg)
        if what in ("addr", "agent", "agent-addr", "agent-port", "agent-send", "check-addr", "check-port", "fqdn",
                    "ssl"):
            raise _Error(f"'set server <srv> {what}' is not supported by this load balancer.\n")
        raise _Error(SET_SERVER_USAGE)

    def _set_health(self, s: Server, arg: str) -> str:
        if arg not in ("up", "stopping", "down"):
            raise _Error("'set server <srv> health' expects 'up', 'stopping', or 'down'.\n")
        if s.hstate is not None:
            s.hstate.force(arg != "down")
        else:
            self.view.nocheck_health[s] = 0 if arg == "down" else s.cfg.rise + s.cfg.fall - 1
        s.backend.set_op(s, arg, "changed from CLI")  # type: ignore[arg-type]
        return ""

    def _health_toggle(self, s: Server, enable: bool) -> str:
        if s.hstate is None:
            if enable:
                raise _Error("Health check was not configured on this server, cannot enable.\n")
            return ""
        if not hasattr(s, "check_enabled"):
            raise _Error("Health checks of this server cannot be switched at run time in this build.\n")
        s.check_enabled = enable  # type: ignore[attr-defined]
        if not enable and s.op == "down" and s.admin != "maint":
            # An unchecked server is UP (HAProxy's "no check"): nothing would ever bring it back otherwise.
            s.hstate.force(True)
            s.backend.set_op(s, "up", "health check disabled from CLI")
        return ""

    def _set_maxconn(self, w: list[str]) -> str:
        s = self._server(w, 3)
        if len(w) < 5:
            raise _Error("Require <maxconn>.\n")
        v = _parse_int(w[4], "maxconn string empty or preceded by garbage", "Trailing garbage in maxconn string")
        if v < 0:
            raise _Error("maxconn must be 0 (unlimited) or a positive number.\n")
        from balancier.proxy import queue as squeue

        squeue.set_maxconn(s, v)
        return ""

    def _shutdown_sessions(self, s: Server) -> str:
        if self.hooks.shutdown_sessions is None:
            raise _Error("Sessions cannot be shut down: no running data plane is attached.\n")
        self.hooks.shutdown_sessions(s)
        return ""

    def _clear_counters(self, args: list[str], sess: Session) -> str:
        if args and args[0] == "all":
            self._need(sess, "admin")
            for fe in self.view.frontends:
                fe.clear_counters()
            for be in self.view.backends:
                be.clear_counters()
                for s in be.servers:
                    s.clear_counters()
            # downtimes and the backends' down counts are proxy state in HAProxy, not counters: they stay
            return ""
        self._need(sess, "operator")
        # Only the maxima are cleared; the data plane keeps none of them yet beyond what it may add later.
        for obj in [*self.view.frontends, *self.view.backends, *(s for be in self.view.backends for s in be.servers)]:
            for attr in ("smax", "qmax"):
                if hasattr(obj, attr):
                    setattr(obj, attr, 0)
        return ""


# --- glue for the running data plane (read-only use of runtime.py's objects) ------------------------------------------

def hooks_for_runtime(rt: Any) -> RuntimeHooks:
    """``show sess`` and ``shutdown sessions`` over ``Runtime.streams`` (HttpStream/TcpStream objects)."""

    def sessions() -> list[SessionInfo]:
        now = rt.loop.time()
        out = []
        for st in list(rt.streams):
            cip = getattr(st, "cip", "") or "-"
            proto = "tcpv6" if ":" in cip else "tcpv4"
            born = getattr(st, "t_accept", 0.0) or getattr(st, "t_first", 0.0) or now
            srv = getattr(st, "srv", None)
            route = st.route
            out.append(SessionInfo(id(st), proto, f"{cip}:{getattr(st, 'cport', 0)}", route.fe.name,
                                   route.be.cfg.name, srv.name if srv is not None else None,
                                   max(0, int(now - born))))
        return out

    def shutdown(server: Server) -> int:
        victims = [st for st in list(rt.streams) if getattr(st, "srv", None) is server]
        for st in victims:
            kill_stream(st)
        return len(victims)

    return RuntimeHooks(sessions=sessions, shutdown_sessions=shutdown)


def kill_stream(st: Any) -> None:
    """End one stream the way HAProxy's `shutdown sessions` does (termination code `K`, one log line).

    An HTTP stream still waiting for its server's response head gets the 502 page and logs `KC--` / `KH--` (HAProxy
    2.6: `... 502 209 - - KH-- ...`); once response bytes went to the client nothing valid can follow, so the
    connection is cut and logged `KD--`. A TCP stream is cut and logged `KD` (its own `hard_close`)."""
    from balancier.proxy.serverside import CONNECTING, R_HEAD, TUNNEL, TURNAROUND

    if not hasattr(st, "rstate"):  # TcpStream
        st.hard_close()
        return
    if st.phase in (TURNAROUND, CONNECTING):
        b = "C"
    elif st.phase != TUNNEL and st.rstate == R_HEAD and not st.resp_started:
        b = "H"
    else:
        st._abort("K", "D")
        return
    st._drop_sconn(abort=True)
    st._fail(502, "K", b)


def info_for_runtime(rt: Any, started_wall: float, started_mono: float, version: str,
                     view: StatsView | None = None, nbthread: int = 1) -> Callable[[], ProcessInfo]:
    """An info provider reading the Runtime's admission counters; with a ``view``, the connection and request
    counts are summed over every worker (``view.totals``), and ``Nbthread`` says how many workers there are."""

    # the configured limit, not one worker's share of it
    maxconn = rt.maxconn if nbthread <= 1 else (rt.config.global_.maxconn or rt.maxconn * nbthread)

    def provide() -> ProcessInfo:
        fes = list(rt.frontends)
        if view is not None and nbthread > 1:
            tots = [view.totals(fe) for fe in fes]
            cur, cum_conns, cum_req = (sum(t.feconn for t in tots), sum(t.stot for t in tots),
                                       sum(t.req_tot for t in tots))
        else:
            cur, cum_conns, cum_req = rt.actconn, sum(fe.stot for fe in fes), sum(fe.req_tot for fe in fes)
        return ProcessInfo(
            pid=os.getpid(), start_time=started_wall, uptime=time.monotonic() - started_mono, version=version,
            nbthread=nbthread, maxconn=maxconn, hard_maxconn=maxconn, curr_conns=cur,
            cum_conns=cum_conns, cum_req=cum_req, stopping=rt.stopping,
            jobs=len(rt.streams), listeners=sum(len(fe.listeners) for fe in fes),
        )

    return provide
