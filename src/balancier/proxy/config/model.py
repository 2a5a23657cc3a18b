"""The HAProxy configuration as frozen dataclasses: the contract between the parser and the data plane.

Rules:
- The parser (``parser.py``) is the only producer; the data plane only reads these objects.
- Every time is in milliseconds (int), ``None`` meaning "not set" (HAProxy's infinite / fall back).
- Every object that comes from a line keeps its ``where`` (file:line) so runtime messages can point at it.
- A field exists here only when the data plane implements it; a keyword without a field is rejected by the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import ssl as _ssl

    from balancier.proxy.tls import BindSettings, BindTls, ServerSettings

Mode = Literal["http", "tcp"]
# HTTP connection modes, HAProxy's names: KAL = http-keep-alive (default), SCL = http-server-close, CLO = httpclose.
HttpConnMode = Literal["kal", "scl", "clo"]
HttpReuse = Literal["never", "safe", "aggressive", "always"]
Algorithm = Literal["roundrobin", "static-rr", "leastconn", "first", "source"]
CookieMode = Literal["passive", "insert", "rewrite", "prefix"]
LogFormat = Literal["default", "httplog", "httplog-clf", "tcplog"]


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Where("<builtin>", 0)


@dataclass(frozen=True)
class LogTarget:
    """One `log` line. kind 'udp' sends RFC 3164 datagrams to host:port; 'stdout'/'stderr' write lines."""

    kind: Literal["udp", "stdout", "stderr"]
    facility: int  # 0..23 (local3 = 19)
    host: str = ""
    port: int = 514
    level: int = 7  # highest severity number sent (7 = debug: everything)
    minlevel: int = 0
    maxlen: int = 1024
    where: Where = NOWHERE


@dataclass(frozen=True)
class Timeouts:
    connect: int | None = None
    client: int | None = None
    server: int | None = None
    queue: int | None = None  # falls back to connect at run time
    http_request: int | None = None
    http_keep_alive: int | None = None  # falls back to http_request, then client
    tunnel: int | None = None
    check: int | None = None
    client_fin: int | None = None
    server_fin: int | None = None
    tarpit: int | None = None


@dataclass(frozen=True)
class Bind:
    host: str  # '' = every IPv4 address, '::' = IPv6
    port: int
    where: Where = NOWHERE
    ssl: BindSettings | None = None  # `bind ... ssl crt ...`: the TLS words (None: plain TCP)
    # the certificates read from them when the configuration was loaded (proxy/tls.py), given to the listener
    tls: BindTls | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class HttpRule:
    """One supported `http-request` rule (proxy/httprules.py runs them in order, before a server is chosen).

    action 'redirect-scheme': `redirect scheme <value> [code <code>] [drop-query]` (final);
    action 'set-header': `set-header <name> <value>` (value: a plain string).
    cond: 'always' (no condition), 'ssl' (`if { ssl_fc }` / `unless !{ ssl_fc }`), 'nossl' (the opposite).
    """

    action: Literal["redirect-scheme", "set-header"]
    value: str
    name: str = ""
    code: int = 302
    drop_query: bool = False
    cond: Literal["always", "ssl", "nossl"] = "always"
    where: Where = NOWHERE


@dataclass(frozen=True)
class ForwardFor:
    header: str = "X-Forwarded-For"
    except_net: str | None = None  # an ipaddress network ('111.112.113.115/32')
    if_none: bool = False


@dataclass(frozen=True)
class CookieConfig:
    name: str
    mode: CookieMode = "passive"
    indirect: bool = False
    nocache: bool = False
    postonly: bool = False
    preserve: bool = False
    httponly: bool = False
    secure: bool = False
    domains: tuple[str, ...] = ()
    maxidle: int | None = None  # seconds
    maxlife: int | None = None  # seconds
    attrs: tuple[str, ...] = ()
    where: Where = NOWHERE


@dataclass(frozen=True)
class HttpCheckExpect:
    kind: Literal["status", "rstatus", "string", "rstring"]
    pattern: str
    negate: bool = False


@dataclass(frozen=True)
class HttpCheck:
    """`option httpchk [meth] [uri] [ver]` plus `http-check send/expect/disable-on-404`."""

    method: str = "OPTIONS"
    uri: str = "/"
    version: str = "HTTP/1.0"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    expect: HttpCheckExpect | None = None
    disable_on_404: bool = False


@dataclass(frozen=True)
class ServerConfig:
    name: str
    host: str
    port: int | None  # None: same port as the client connected to (HAProxy semantics)
    weight: int = 1  # 0..256
    cookie: str | None = None
    check: bool = False
    inter: int = 2000
    fastinter: int | None = None  # None = inter
    downinter: int | None = None  # None = inter
    rise: int = 2
    fall: int = 3
    check_port: int | None = None
    check_addr: str | None = None
    backup: bool = False
    maxconn: int = 0  # 0 = unlimited
    minconn: int = 0
    maxqueue: int = 0  # 0 = unlimited
    disabled: bool = False  # starts in MAINT
    where: Where = NOWHERE
    ssl: bool = False  # `ssl`: traffic to the server goes over TLS
    tls: ServerSettings | None = None  # verify / ca-file / sni (with `ssl` or `check-ssl`)
    check_ssl: bool | None = None  # `check-ssl` / `no-check-ssl`; None: checks use TLS when `ssl` and no addr/port
    # the client context built from `tls` when the configuration was loaded (proxy/tls.py)
    tls_context: _ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # the same for health checks, which send no SNI and so check no name (the same object when no name is checked)
    check_tls_context: _ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def check_uses_ssl(self) -> bool:
        if self.check_ssl is not None:
            return self.check_ssl
        return self.ssl and self.check_port is None and self.check_addr is None


@dataclass(frozen=True)
class Balance:
    algorithm: Algorithm = "roundrobin"


@dataclass(frozen=True)
class StatsConfig:
    """`stats enable|uri|auth|realm|refresh|admin if TRUE|hide-version`: the stats page served by the proxy."""

    uri: str = "/haproxy?stats"
    realm: str = "HAProxy Statistics"
    auth: tuple[tuple[str, str], ...] = ()  # (user, password) pairs; empty = no authentication
    refresh: int | None = None  # ms
    admin: bool = False  # `stats admin if TRUE`
    hide_version: bool = False
    where: Where = NOWHERE


@dataclass(frozen=True)
class Proxy:
    """A frontend, backend or listen section after inheritance from its defaults section."""

    name: str
    kind: Literal["frontend", "backend", "listen"]
    mode: Mode = "tcp"
    binds: tuple[Bind, ...] = ()
    default_backend: str | None = None  # frontend only; a listen section is its own backend
    maxconn: int = 0  # 0 = global maxconn
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 3
    redispatch: int | None = None  # None = off; -1 = on the last retry (plain `option redispatch`); N as HAProxy
    balance: Balance = field(default_factory=Balance)
    cookie: CookieConfig | None = None
    servers: tuple[ServerConfig, ...] = ()
    forwardfor: ForwardFor | None = None
    http_conn_mode: HttpConnMode = "kal"
    http_reuse: HttpReuse = "safe"
    log_format: LogFormat = "default"
    dontlognull: bool = False
    logs: tuple[LogTarget, ...] = ()
    httpchk: HttpCheck | None = None
    allbackups: bool = False
    persist: bool = False
    log_health_checks: bool = False
    fullconn: int = 0
    stats: StatsConfig | None = None  # None = no stats page
    prometheus_path: str | None = None  # `http-request use-service prometheus-exporter if { path P }`
    where: Where = NOWHERE
    http_rules: tuple[HttpRule, ...] = ()  # `http-request redirect scheme` / `set-header` rules, in order

    @property
    def is_frontend(self) -> bool:
        return self.kind in ("frontend", "listen")

    @property
    def is_backend(self) -> bool:
        return self.kind in ("backend", "listen")


@dataclass(frozen=True)
class StatsSocket:
    """`stats socket <path|ipv4@host:port> [mode m] [level user|operator|admin]`: the runtime API."""

    address: str  # a UNIX socket path, or "host:port" for TCP
    mode: int | None = None  # permission bits of a UNIX socket (octal on the line)
    level: Literal["user", "operator", "admin"] = "operator"
    where: Where = NOWHERE


@dataclass(frozen=True)
class Global:
    daemon: bool = False
    pidfile: str | None = None
    maxconn: int | None = None  # None: computed at start from the file-descriptor limit
    chroot: str | None = None
    uid: int | None = None
    gid: int | None = None
    user: str | None = None
    group: str | None = None
    nbthread: int | None = None
    logs: tuple[LogTarget, ...] = ()
    log_tag: str = "balancier"
    hard_stop_after: int | None = None
    bufsize: int = 16384  # tune.bufsize: the largest request/response head accepted
    spread_checks: int = 0  # percent
    max_spread_checks: int | None = None
    stats_sockets: tuple[StatsSocket, ...] = ()
    stats_timeout: int = 10000  # ms: idle time allowed on a runtime API connection
    stats_maxconn: int = 10  # concurrent runtime API connections


@dataclass(frozen=True)
class Config:
    global_: Global = field(default_factory=Global)
    proxies: tuple[Proxy, ...] = ()
    files: tuple[str, ...] = ()

    def proxy(self, name: str) -> Proxy:
        for p in self.proxies:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def frontends(self) -> tuple[Proxy, ...]:
        return tuple(p for p in self.proxies if p.is_frontend)

    @property
    def backends(self) -> tuple[Proxy, ...]:
        return tuple(p for p in self.proxies if p.is_backend)

    def backend_for(self, frontend: Proxy) -> Proxy | None:
        """The backend a frontend sends to: itself for listen, else its default_backend."""
        if frontend.kind == "listen":
            return frontend
        if frontend.default_backend is None:
            return None
        return self.proxy(frontend.default_backend)


@dataclass(frozen=True)
class Diagnostic:
    level: Literal["alert", "warning", "notice"]
    message: str
    where: Where | None = None

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where is not None else ""
        return f"{prefix}{self.level}: {self.message}"
