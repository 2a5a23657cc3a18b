"""HAProxy keywords that balancier knows by name but does not implement.

Rules:
- A word in these lists is answered with ``unsupported keyword 'x' in section 'y' (not implemented by
  balancier)``; any other unknown word is ``unknown keyword 'x' in 'y' section`` with a "did you mean" hint. Both
  are fatal: nothing is ignored silently.
- The lists name HAProxy 2.x/3.x keywords; they only change the wording of the error, never what is accepted.
"""

from __future__ import annotations

# Section starters other than global/defaults/frontend/backend/listen.
OTHER_SECTIONS = frozenset({
    "peers", "userlist", "resolvers", "ring", "http-errors", "cache", "program", "mailers", "crt-store",
    "fcgi-app", "log-forward", "traces", "acme", "ssl-f-use", "namespace_list", "dynamic-update",
})

GLOBAL_UNSUPPORTED = frozenset({
    "master-worker", "nbproc", "cpu-map", "ca-base", "crt-base", "ssl-default-bind-ciphers",
    "ssl-default-bind-ciphersuites", "ssl-default-bind-options", "ssl-default-server-ciphers",
    "ssl-default-server-ciphersuites", "ssl-default-server-options", "ssl-server-verify", "ssl-dh-param-file",
    "tune.ssl.default-dh-param", "tune.maxrewrite", "tune.http.maxhdr", "tune.maxaccept", "tune.maxpollevents",
    "tune.rcvbuf.client", "tune.rcvbuf.server", "tune.sndbuf.client", "tune.sndbuf.server", "tune.idletimer",
    "tune.h2.initial-window-size", "tune.h2.max-concurrent-streams", "tune.ssl.cachesize", "tune.ssl.lifetime",
    "tune.comp.maxlevel", "tune.pipesize", "tune.recv_enough", "tune.runqueue-depth", "ulimit-n", "node",
    "description", "log-send-hostname", "localpeer", "lua-load", "lua-prepend-path", "grace", "external-check", "insecure-fork-wanted", "busy-polling", "set-dumpable",
    "strict-limits", "numa-cpu-mapping", "zero-warning", "expose-experimental-directives", "h1-case-adjust",
    "h1-case-adjust-file", "maxconnrate", "maxsessrate", "maxsslconn", "maxsslrate", "maxpipes", "maxzlibmem",
    "maxcomprate", "maxcompcpuusage", "noepoll", "nokqueue", "noevports", "nopoll", "nosplice", "nogetaddrinfo",
    "noreuseport", "profiling.tasks", "server-state-base", "server-state-file", "thread-groups", "unix-bind",
    "quiet", "debug", "log-format", "log-format-sd", "httpclient.resolvers.prefer", "fd-hard-limit",
    "cluster-secret", "anonkey", "deviceatlas-json-file", "51degrees-data-file", "wurfl-data-file",
    "ssl-engine", "ssl-mode-async", "ssl-load-extra-files", "harden.reject-privileged-ports.tcp",
    "tune.lua.maxmem", "tune.buffers.limit", "tune.buffers.reserve", "tune.http.cookielen", "tune.http.logurilen",
})

PROXY_UNSUPPORTED = frozenset({
    "acl", "use_backend", "use-server", "http-response", "http-after-response", "tcp-request",
    "tcp-response", "tcp-check", "stick-table", "stick", "errorfile", "errorfiles", "errorloc",
    "errorloc302", "errorloc303", "http-error", "redirect", "monitor", "monitor-uri", "monitor-net", "capture",
    "compression", "filter", "log-format", "log-format-sd", "error-log-format", "log-tag", "unique-id-format",
    "unique-id-header", "hash-type", "hash-balance-factor", "hash-key", "persist", "force-persist",
    "ignore-persist", "dynamic-cookie-key", "description", "id", "disabled", "enabled", "backlog", "rate-limit",
    "bind-process", "source", "server-template", "server-state-file-name", "load-server-state-from-file",
    "external-check", "email-alert", "declare", "grace", "max-keep-alive-queue", "max-session-srv-conns",
    "http-send-name-header", "retry-on", "guid", "log-steps", "log-profile", "use-fcgi-app",
    "reqadd", "reqdel", "reqrep", "reqirep", "reqidel", "reqallow", "reqdeny", "reqpass", "reqtarpit", "rspadd",
    "rspdel", "rsprep", "rspirep", "rspidel", "rspdeny", "block", "reqisetbe", "reqsetbe", "appsession",
})

OPTION_UNSUPPORTED = frozenset({
    "abortonclose", "accept-invalid-http-request", "accept-invalid-http-response", "accept-unsafe-violations-in-http-request",
    "accept-unsafe-violations-in-http-response", "checkcache", "clitcpka", "contstats", "disable-h2-upgrade",
    "dontlog-normal", "external-check", "h1-case-adjust-bogus-client", "h1-case-adjust-bogus-server",
    "http-buffer-request", "http-ignore-probes", "http-no-delay", "http-pretend-keepalive", "http-restrict-req-hdr-names",
    "http-use-htx", "http-use-proxy-header", "http_proxy", "idle-close-on-response", "independent-streams",
    "ldap-check", "log-separate-errors", "logasap", "mysql-check", "nolinger", "originalto", "pgsql-check",
    "prefer-last-server", "redis-check", "smtpchk", "socket-stats", "splice-auto", "splice-request",
    "splice-response", "spop-check", "srvtcpka", "ssl-hello-chk", "tcp-check", "tcp-smart-accept",
    "tcp-smart-connect", "tcpka", "transparent", "httpslog", "http-tunnel",
})

SERVER_UNSUPPORTED = frozenset({
    "agent-addr", "agent-check", "agent-inter", "agent-port", "agent-send", "allow-0rtt", "alpn",
    "check-alpn", "check-proto", "check-send-proxy", "check-sni", "check-via-socks4", "ciphers",
    "ciphersuites", "crl-file", "crt", "curves", "error-limit", "force-sslv3", "force-tlsv10", "force-tlsv11",
    "force-tlsv12", "force-tlsv13", "id", "init-addr", "init-state", "log-proto", "max-reuse", "namespace",
    "no-agent-check", "no-send-proxy", "no-send-proxy-v2", "no-ssl-reuse", "no-sslv3",
    "no-tls-tickets", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "no-verifyhost", "no-tfo", "non-stick",
    "npn", "observe", "on-error", "on-marked-down", "on-marked-up", "pool-conn-name", "pool-low-conn",
    "pool-max-conn", "pool-purge-delay", "proto", "proxy-v2-options", "redir", "resolve-net", "resolve-opts",
    "resolve-prefer", "resolvers", "send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn",
    "set-proxy-v2-tlv-fmt", "shard", "sigalgs", "slowstart", "socks4", "source", "ssl-max-ver",
    "ssl-min-ver", "ssl-reuse", "stick", "tcp-ut", "tfo", "tls-tickets", "track", "usesrc",
    "verifyhost", "ws", "guid", "hash-key", "strict-maxconn", "check-pool-conn-name", "check-reuse-pool",
    "client-sigalgs", "idle-ping", "sni-auto", "check-sni-auto",
})

BIND_OPTIONS = frozenset({
    "accept-netscaler-cip", "accept-proxy", "allow-0rtt", "backlog", "ca-file", "ca-ignore-err",
    "ca-sign-file", "ca-sign-pass", "ca-verify-file", "crl-file",
    "crt-ignore-err", "crt-list", "curves", "defer-accept", "ecdhe", "expose-fd", "force-sslv3", "force-tlsv10",
    "force-tlsv11", "force-tlsv12", "force-tlsv13", "generate-certificates", "gid", "group", "guid-prefix", "id",
    "idle-ping", "interface", "label", "level", "maxconn", "mode", "mss", "name", "namespace", "nbconn",
    "nice", "no-alpn", "no-ca-names", "no-sslv3", "no-tls-tickets", "no-tlsv10", "no-tlsv11", "no-tlsv12",
    "no-tlsv13", "npn", "prefer-client-ciphers", "process", "proto", "quic-cc-algo", "quic-force-retry",
    "severity-output", "shards", "sigalgs", "tcp-ut", "tfo",
    "thread", "tls-ticket-keys", "transparent", "uid", "user", "v4v6", "v6only", "verify",
    "client-sigalgs", "ktls",
})

HTTP_CHECK_UNSUPPORTED = frozenset({"connect", "send-state", "comment", "set-var", "unset-var"})
