"""Exact diagnostics: unknown and unsupported keywords, capabilities, legacy keywords, end-of-file checks.

Where HAProxy 2.6 has a message for the case, the expected text is HAProxy's (checked with `haproxy -c`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxycfg_helpers import HTTP_DEFAULTS, errors, parse

FE = "frontend f\n    bind :80\n    default_backend b\n"
BE = "backend b\n    server s 127.0.0.1:80\n"

# (section + lines after HTTP_DEFAULTS, the alert, at line N of the file; HTTP_DEFAULTS is 5 lines)
ALERTS = [
    ("frontend f\n    foo\n", "x.cfg:7: unknown keyword 'foo' in 'frontend' section"),
    ("frontend f\n    bnid :80\n", "x.cfg:7: unknown keyword 'bnid' in 'frontend' section; did you mean 'bind'?"),
    ("backend b\n    balanse roundrobin\n", "x.cfg:7: unknown keyword 'balanse' in 'backend' section; did you mean "
                                            "'balance'?"),
    ("backend b\n    option httpclos\n", "x.cfg:7: unknown option 'httpclos' in 'backend' section; did you mean "
                                         "'httpclose'?"),
    ("frontend f\n    acl bad src 1.2.3.4\n", "x.cfg:7: unsupported keyword 'acl' in section 'frontend' (not "
                                              "implemented by balancier)"),
    ("listen l\n    http-request deny\n", "x.cfg:7: unsupported keyword 'http-request deny' in section 'listen' "
                                          "(not implemented by balancier; only 'http-request use-service "
                                          "prometheus-exporter if { path <path> }', 'http-request redirect scheme "
                                          "<scheme> [code <code>] [drop-query] [if|unless [!]{ ssl_fc }]' and "
                                          "'http-request set-header <name> <string> [if|unless [!]{ ssl_fc }]' are)"),
    ("listen l\n    stats show-legends\n", "x.cfg:7: unsupported keyword 'stats show-legends' in section 'listen' "
                                           "(not implemented by balancier)"),
    ("listen l\n    option http-buffer-request\n", "x.cfg:7: unsupported keyword 'option http-buffer-request' in "
                                                   "section 'listen' (not implemented by balancier)"),
    ("backend b\n    balance uri\n", "x.cfg:7: unsupported keyword 'balance uri' in section 'backend' (not "
                                     "implemented by balancier)"),
    ("backend b\n    balance hdr(host)\n", "x.cfg:7: unsupported keyword 'balance hdr(host)' in section 'backend' "
                                           "(not implemented by balancier)"),
    ("backend b\n    balance foo\n", "x.cfg:7: balance only supports 'roundrobin', 'static-rr', 'leastconn', "
                                     "'source', 'uri', 'url_param', 'hdr(name)' and 'rdp-cookie(name)' options."),
    ("backend b\n    balance roundrobin x\n", "x.cfg:7: 'balance' cannot handle unexpected argument 'x'."),
    ("listen l\n    bind :443 ssl crt /etc/site.pem\n", "x.cfg:7: 'bind :443' in section 'listen' : unable to stat "
                                                        "SSL certificate from file '/etc/site.pem' : No such file or "
                                                        "directory."),
    ("listen l\n    bind :80 frob\n", "x.cfg:7: 'bind :80' unknown keyword 'frob'."),
    ("listen l\n    bind 127.0.0.1\n", "x.cfg:7: 'bind 127.0.0.1' : missing port number: '127.0.0.1'"),
    ("listen l\n    bind :8000-8010\n", "x.cfg:7: 'bind :8000-8010' : port ranges are not supported in ':8000-8010' "
                                        "(not implemented by balancier)"),
    ("listen l\n    bind unix@/run/x.sock\n", "x.cfg:7: 'bind unix@/run/x.sock' : address family 'unix@' in "
                                              "'unix@/run/x.sock' is not supported (not implemented by balancier)"),
    ("listen l\n    bind\n", "x.cfg:7: 'bind' expects {<path>|[addr1]:port1[-end1]}{,...} [param*] as arguments."),
    ("listen l\n    mode health\n", "x.cfg:7: 'mode health' doesn't exist anymore. Please use 'http-request return "
                                    "status 200' instead."),
    ("listen l\n    mode foo\n", "x.cfg:7: unknown proxy mode 'foo'."),
    ("listen l\n    timeout foo 5\n", "x.cfg:7: 'timeout' supports 'client', 'server', 'connect', 'check', 'queue', "
                                      "'http-keep-alive', 'http-request', 'tunnel', 'tarpit', 'client-fin' and "
                                      "'server-fin' (got 'foo')"),
    ("listen l\n    timeout handshake 5s\n", "x.cfg:7: unsupported keyword 'timeout handshake' in section 'listen' "
                                             "(not implemented by balancier)"),
    ("listen l\n    no retries\n", "x.cfg:7: negation/default currently supported only for options, log, "
                                   "busy-polling, set-dumpable, strict-limits, insecure-fork-wanted and "
                                   "numa-cpu-mapping."),
    ("listen l\n    retries x\n", "x.cfg:7: 'retries' expects an integer argument (dispatch counts for one)."),
    ("listen l\n    maxconn 1k\n", "x.cfg:7: 'maxconn' expects an integer argument."),
    ("listen l\n    no option forwardfor\n", "x.cfg:7: negation/default is not supported for option 'forwardfor'."),
    ("listen l\n    no option httpchk\n", "x.cfg:7: negation/default is not supported for option 'httpchk'."),
    ("listen l\n    option forwardfor except\n", "x.cfg:7: 'option forwardfor except' expects <address>[/mask] as "
                                                  "argument."),
    ("listen l\n    option forwardfor except 1.2.3.400\n", "x.cfg:7: 'option forwardfor except' : invalid address "
                                                           "or mask '1.2.3.400'."),
    ("listen l\n    option forwardfor header\n", "x.cfg:7: 'option forwardfor header' expects <header_name> as "
                                                 "argument."),
    ("listen l\n    option forwardfor foo\n", "x.cfg:7: 'option forwardfor' only supports optional values: "
                                              "'except', 'header' and 'if-none'."),
    ("listen l\n    option redispatch x\n", "x.cfg:7: 'option redispatch' expects an integer argument, got 'x'."),
    ("listen l\n    option httplog foo\n", "x.cfg:7: 'option httplog' only supports the 'clf' option, got 'foo'."),
    ("listen l\n    option allbackups x\n", "x.cfg:7: 'option allbackups' cannot handle unexpected argument 'x'."),
    ("listen l\n    option httpchk GET / HTTP/1.1 h x\n", "x.cfg:7: 'option httpchk' cannot handle unexpected "
                                                          "argument 'x'."),
    ("listen l\n    http-check send foo\n", "x.cfg:7: 'http-check send' : expects 'meth', 'uri', 'ver', 'hdr' or "
                                            "'body' but got 'foo' as argument."),
    ("listen l\n    http-check send hdr X\n", "x.cfg:7: 'http-check send' : 'hdr' expects <name> and <value> as "
                                              "arguments."),
    ("listen l\n    http-check send-state\n", "x.cfg:7: unsupported keyword 'http-check send-state' in section "
                                              "'listen' (not implemented by balancier)"),
    ("listen l\n    http-check expect hdr name x\n", "x.cfg:7: unsupported keyword 'http-check expect hdr' in "
                                                     "section 'listen' (not implemented by balancier)"),
    ("listen l\n    http-check expect foo 200\n", "x.cfg:7: 'http-check expect' : only supports '[!]status', "
                                                  "'[!]rstatus', '[!]string' and '[!]rstring' but got 'foo' as "
                                                  "argument."),
    ("listen l\n    http-check expect status\n", "x.cfg:7: 'http-check expect' : 'status' expects a <pattern> as "
                                                 "argument."),
    ("listen l\n    http-check expect status 200\n    http-check expect status 204\n",
     "x.cfg:8: several 'http-check expect' rules in one section are not implemented by balancier"),
    ("listen l\n    http-check frob\n", "x.cfg:7: 'http-check' only supports 'disable-on-404', 'send' and 'expect' "
                                        "in balancier (got 'frob')"),
    ("listen l\n    http-reuse sometimes\n", "x.cfg:7: 'http-reuse' only supports 'never', 'safe', 'aggressive', "
                                             "'always'."),
    ("listen l\n    cookie\n", "x.cfg:7: 'cookie' expects <cookie_name> as argument."),
    ("listen l\n    cookie A insert prefix\n", "x.cfg:7: cookie 'rewrite', 'insert' and 'prefix' modes are "
                                               "incompatible."),
    ("listen l\n    cookie A foo\n", "x.cfg:7: 'cookie' supports 'rewrite', 'insert', 'prefix', 'indirect', "
                                     "'nocache', 'postonly', 'domain', 'maxidle', 'dynamic', 'maxlife' and 'attr' "
                                     "options."),
    ("listen l\n    cookie A insert dynamic\n", "x.cfg:7: unsupported keyword 'cookie ... dynamic' in section "
                                                "'listen' (not implemented by balancier)"),
    ("listen l\n    cookie A insert maxidle 5x\n", "x.cfg:7: 'cookie maxidle' : invalid time value '5x' (bad "
                                                   "character 'x')."),
    ("listen l\n    cookie A insert domain\n", "x.cfg:7: 'cookie' : 'domain' expects a value as argument."),
    ("listen l\n    default_backend\n", "x.cfg:7: 'default_backend' expects a backend name."),
    ("defaults\n    bind :80\n", "x.cfg:7: 'bind' not allowed in 'defaults' section."),
    ("defaults\n    server s 1.2.3.4\n", "x.cfg:7: 'server' not allowed in 'defaults' section."),
    ("frontend f\n    server s 1.2.3.4\n", "x.cfg:7: 'server' not allowed because frontend 'f' has no backend "
                                           "capability."),
    ("frontend f\n    default-server check\n", "x.cfg:7: 'default-server' not allowed because frontend 'f' has no "
                                               "backend capability."),
    ("backend b 1.2.3.4:80\n", "x.cfg:6: 'backend b' cannot handle unexpected argument '1.2.3.4:80'."),
    ("listen\n", "x.cfg:6: 'listen' expects <name> as an argument."),
    ("listen a/b\n", "x.cfg:6: character '/' is not permitted in 'listen' name 'a/b'."),
    ("listen a from nope\n", "x.cfg:6: defaults section 'nope' not found for listen 'a'."),
    ("defaults d from nope\n", "x.cfg:6: defaults section 'nope' not found for defaults 'd'."),
    ("listen l\nbackend l\n", "x.cfg:7: backend 'l' has the same name as proxy 'l' declared at x.cfg:6."),
    ("frontend f\n    bind :80\n    default_backend b\nbackend f\n" + BE, "x.cfg:9: backend 'f' has the same name "
                                                                          "as frontend 'f' declared at x.cfg:6."),
    ("peers mypeers\n    peer lb1 10.0.0.1:1024\n", "x.cfg:6: unsupported section 'peers' (not implemented by "
                                                    "balancier); its lines are skipped"),
    ("userlist admins\n", "x.cfg:6: unsupported section 'userlist' (not implemented by balancier); its lines are "
                          "skipped"),
    # cross-checks at the end
    ("frontend f\n    bind :80\n    default_backend nope\n", "x.cfg:8: Proxy 'f': unable to find required "
                                                             "default_backend: 'nope'."),
    ("frontend f\n    bind :80\n    default_backend g\nfrontend g\n    bind :81\n    default_backend b\n" + BE,
     "x.cfg:8: Proxy 'f': unable to find required default_backend: 'g'."),
    ("frontend f\n    bind :80\n    default_backend b\nbackend b\n    mode tcp\n    server s 1.2.3.4:1\n",
     "x.cfg:6: http frontend 'f' (x.cfg:6) tries to use incompatible tcp backend 'b' (x.cfg:9) as its default "
     "backend (see 'mode')."),
    ("frontend f\n    mode tcp\n    bind :80\n    default_backend b\n" + BE,
     "x.cfg:6: tcp frontend 'f' hands its connections to http backend 'b': upgrading a tcp stream to HTTP is not "
     "implemented by balancier (use the same 'mode' on both)."),
    ("listen l\n    bind :80\n    default_backend b\n" + BE,
     "x.cfg:8: unsupported keyword 'default_backend' in section 'listen' (not implemented by balancier: listen 'l' "
     "serves its own servers)"),
]


@pytest.mark.parametrize(("text", "alert"), ALERTS)
def test_alerts(tmp_path: Path, text: str, alert: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + text)
    assert len(got) == 1, got
    assert got[0].startswith("alert " + alert), got


# (text after HTTP_DEFAULTS, expected warnings); the configuration stays valid.
WARNINGS = [
    ("backend b\n    timeout client 5s\n    bind :80\n    maxconn 10\n" + BE[10:],
     ["x.cfg:7: 'timeout client' will be ignored because backend 'b' has no frontend capability",
      "x.cfg:8: 'bind' ignored because backend 'b' has no frontend capability.",
      "x.cfg:9: 'maxconn' ignored because backend 'b' has no frontend capability. Maybe you want 'fullconn' "
      "instead ?"]),
    (FE + "    fullconn 10\n" + BE, ["x.cfg:9: 'fullconn' ignored because frontend 'f' has no backend capability. "
                                     "Maybe you want 'maxconn' instead ?"]),
    (FE + "    balance roundrobin\n    timeout server 5\n    option httpchk\n    cookie A insert\n"
          "    retries 3\n    http-reuse safe\n    option persist\n" + BE,
     ["x.cfg:9: 'balance' ignored because frontend 'f' has no backend capability.",
      "x.cfg:10: 'timeout server' will be ignored because frontend 'f' has no backend capability",
      "x.cfg:11: 'httpchk' ignored because frontend 'f' has no backend capability.",
      "x.cfg:12: 'cookie' ignored because frontend 'f' has no backend capability.",
      "x.cfg:13: 'retries' ignored because frontend 'f' has no backend capability.",
      "x.cfg:14: 'http-reuse' ignored because frontend 'f' has no backend capability.",
      "x.cfg:15: 'persist' ignored because frontend 'f' has no backend capability."]),
    ("backend b\n    option dontlognull\n    option httplog\n" + BE[10:],
     ["x.cfg:7: 'dontlognull' ignored because backend 'b' has no frontend capability.",
      "x.cfg:8: backend 'b' : 'option httplog' directive is ignored in backends."]),
    ("listen l\n    bind :80\n    timeout client 5s\n    timeout client 6s\n",
     ["x.cfg:9: overwriting 'timeout client' which was already specified"]),
    ("listen l\n    bind :80\n    option forceclose\n",
     ["x.cfg:8: 'option forceclose' read as 'option httpclose' (legacy option, removed in HAProxy 2.0; write "
      "'option httpclose')"]),
    (FE + "backend b\n    http-check expect status 200\n    server s 1.2.3.4:80\n",
     ["x.cfg:10: backend 'b' uses http-check rules without 'option httpchk', so the rules are ignored."]),
    ("frontend f\n    bind :80\n" + BE,
     ["x.cfg:6: frontend 'f' has no 'default_backend' and no other rule picks a backend: every request will get a "
      "503 (tcp: connections are closed)."]),
    ("listen l\n    bind :80\n    option httplog\n",
     ["x.cfg:6: log format ignored for proxy 'l' since it has no log address."]),
]


@pytest.mark.parametrize(("text", "warnings"), WARNINGS)
def test_warnings(tmp_path: Path, text: str, warnings: list[str]) -> None:
    config, diags = parse(tmp_path, HTTP_DEFAULTS + text)
    assert config is not None, diags
    assert diags == ["warning " + w for w in warnings]


TCP_TEXT = """defaults
    mode tcp
    log 127.0.0.1 local0
    option httplog
    option forwardfor
    cookie X insert
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend f
    bind :80
    default_backend b
backend b
    option httpchk
    server s 127.0.0.1:80 check
"""


def test_tcp_mode_leftovers(tmp_path: Path) -> None:
    config, diags = parse(tmp_path, TCP_TEXT)
    assert config is not None
    assert diags == [
        "warning x.cfg:4: 'option httplog' not usable with frontend 'f' (needs 'mode http'). Falling back to "
        "'option tcplog'.",
        "warning x.cfg:10: 'option forwardfor' ignored for frontend 'f' as it requires HTTP mode.",
        "warning x.cfg:13: cookie will be ignored for backend 'b' (needs 'mode http').",
        "warning x.cfg:13: 'option forwardfor' ignored for backend 'b' as it requires HTTP mode.",
    ]
    f, b = config.proxies
    assert (f.log_format, f.forwardfor, b.cookie, b.forwardfor) == ("tcplog", None, None, None)
    assert b.httpchk is not None  # HAProxy runs HTTP checks on tcp backends too


def test_missing_timeouts(tmp_path: Path) -> None:
    text = "defaults\n    mode http\nfrontend f\n    bind :80\n    default_backend b\nbackend b\n" \
           "    timeout connect 1s\n    server s 1.2.3.4:80\nbackend empty\n    timeout connect 1s\n" \
           "backend tcpb\n    mode tcp\n    timeout connect 1s\n    timeout tunnel 1h\n    server s 1.2.3.4:80\n"
    config, diags = parse(tmp_path, text)
    assert config is not None
    advice = ("While not properly invalid, you will certainly encounter various problems with such a "
              "configuration. To fix this, please ensure that all following timeouts are set to a non-zero value: "
              "'client', 'connect', 'server'.")
    # 'empty' has no server, 'tcpb' is tcp with a tunnel timeout: HAProxy does not warn for them either
    assert diags == [f"warning x.cfg:3: missing timeouts for frontend 'f'. {advice}",
                     f"warning x.cfg:6: missing timeouts for backend 'b'. {advice}"]


def test_all_alerts_are_reported_in_line_order(tmp_path: Path) -> None:
    text = "global\n    frob\n" + HTTP_DEFAULTS + "frontend f\n    bind :80\n    default_backend nope\n" \
        "    acl x\nbackend b\n    server s 1.2.3.4 weight 999\n    timeout client 1s\n"
    got = errors(tmp_path, text)
    assert [g.split(":")[1] for g in got] == ["2", "10", "11", "13"]


LEGACY = [
    ("listen l\n    contimeout 4000\n", "x.cfg:7: 'contimeout 4000' read as 'timeout connect 4000' (legacy keyword, "
                                        "removed in HAProxy 2.1; write 'timeout connect 4000')",
     lambda p: p.timeouts.connect, 4000),
    ("listen l\n    redisp\n", "x.cfg:7: 'redisp' read as 'option redispatch' (legacy keyword, removed in HAProxy "
                               "2.1; write 'option redispatch')", lambda p: p.redispatch, -1),
    ("listen l\n    timeout 2s\n", "x.cfg:7: 'timeout 2s' read as 'timeout connect 2s' (legacy form; write 'timeout "
                                   "connect 2s')", lambda p: p.timeouts.connect, 2000),
    ("frontend f 127.0.0.1:8080\n    default_backend b\n" + BE,
     "x.cfg:6: 'frontend f 127.0.0.1:8080' read as 'frontend f' + 'bind 127.0.0.1:8080' (legacy form, removed in "
     "HAProxy 1.6; write 'bind 127.0.0.1:8080' in the section)",
     lambda p: [(b.host, b.port) for b in p.binds], [("127.0.0.1", 8080)]),
]


@pytest.mark.parametrize(("text", "warning", "get", "expected"), LEGACY)
def test_legacy_keywords(tmp_path: Path, text: str, warning: str, get, expected) -> None:  # type: ignore[no-untyped-def]
    config, diags = parse(tmp_path, HTTP_DEFAULTS + text)
    assert config is not None, diags
    assert diags == ["warning " + warning]
    assert get(config.proxies[0]) == expected


def test_legacy_listen_address_must_be_valid(tmp_path: Path) -> None:
    assert errors(tmp_path, HTTP_DEFAULTS + "listen l 127.0.0.1\n")[-1] == (
        "alert x.cfg:6: 'bind 127.0.0.1' : missing port number: '127.0.0.1'")


@pytest.mark.parametrize(("text", "alert"), [
    ("defaults base\n    mode http\nbackend a from base\nbackend b\n",
     "alert x.cfg:4: defaults section 'base' (declared at x.cfg:1) is explicitly referenced by another proxy and "
     "implicitly used here. To avoid any ambiguity don't mix both usage. Add a last defaults section not explicitly "
     "used or always use explicit references."),
    ("defaults base\n    mode http\nbackend a\nbackend b from base\n",
     "alert x.cfg:4: defaults section 'base' (declared at x.cfg:1) is implicitly used by another proxy (at x.cfg:3) "
     "and explicitly referenced here. To avoid any ambiguity don't mix both usage. Add a last defaults section not "
     "explicitly used or always use explicit references."),
])
def test_mixing_explicit_and_implicit_defaults(tmp_path: Path, text: str, alert: str) -> None:
    # HAProxy 2.6 makes this fatal (the first wording is HAProxy's).
    assert errors(tmp_path, text) == [alert]


def test_unused_named_defaults_followed_by_unnamed_is_fine(tmp_path: Path) -> None:
    config, _ = parse(tmp_path, "defaults base\n    mode http\nbackend a from base\ndefaults\nbackend b\n")
    assert config is not None and [p.mode for p in config.proxies] == ["http", "tcp"]
