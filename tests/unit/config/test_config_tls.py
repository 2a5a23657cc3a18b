"""TLS words on bind and server lines, and the ssl_fc http-request rules: what loads, what is refused, and where."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

from balancier.proxy.tls import BindSettings, load_bind

from proxycfg_helpers import HTTP_DEFAULTS, parse, parse_ok

NO_CA = ("verify is enabled by default but no CA file specified. If you're running on a LAN where you're certain "
         "to trust the server's certificate, please set an explicit 'verify none' statement on the 'server' line, "
         "or use 'ssl-server-verify none' in the global section to disable server-side verifications by default.")


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    a = ca.issue_cert("a.test")
    a.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "a.pem"))
    # certificate and key in two files: site.pem + site.pem.key
    b = ca.issue_cert("b.test")
    (tmp_path / "b.pem").write_bytes(b"".join(p.bytes() for p in b.cert_chain_pems))
    b.private_key_pem.write_to_path(str(tmp_path / "b.pem.key"))
    (tmp_path / "nokey.pem").write_bytes(b.cert_chain_pems[0].bytes())
    (tmp_path / "garbage.pem").write_text("hello\n")
    d = tmp_path / "dir"
    d.mkdir()
    ca.issue_cert("z.test").private_key_and_cert_chain_pem.write_to_path(str(d / "2-z.pem"))
    ca.issue_cert("*.w.test").private_key_and_cert_chain_pem.write_to_path(str(d / "1-w.pem"))
    (d / "1-w.pem.ocsp").write_text("not a pem")  # companion files are skipped
    (d / ".hidden").write_text("skipped")
    return {n: str(tmp_path / n) for n in ("ca.pem", "a.pem", "b.pem", "nokey.pem", "garbage.pem", "dir")}


def _fe(bind: str, extra: str = "") -> str:
    return (HTTP_DEFAULTS + f"frontend f\n    bind 127.0.0.1:8443 {bind}\n{extra}    default_backend b\n"
            "backend b\n    server s 127.0.0.1:80\n")


def test_bind_ssl_loads_certificates(tmp_path: Path, certs: dict[str, str]) -> None:
    cfg = parse_ok(tmp_path, _fe(f"ssl crt {certs['a.pem']} crt {certs['b.pem']} crt {certs['dir']} alpn http/1.1 "
                                 "ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 ciphers ECDHE+AESGCM strict-sni"))
    bind = cfg.proxy("f").binds[0]
    assert bind.ssl is not None and bind.tls is not None
    assert bind.ssl.strict_sni and bind.ssl.alpn == ("http/1.1",) and bind.ssl.min_ver == "TLSv1.2"
    names = [n for _, n in bind.tls.names()]
    assert names == [("a.test",), ("b.test",), ("*.w.test",), ("z.test",)]  # directory: alphabetical
    assert bind.tls.store.default.names == ("a.test",)


def test_plain_bind_keeps_no_tls(tmp_path: Path) -> None:
    cfg = parse_ok(tmp_path, _fe(""))
    assert cfg.proxy("f").binds[0].ssl is None and cfg.proxy("f").binds[0].tls is None


@pytest.mark.parametrize("words,message", [
    ("ssl crt {nokey.pem}", "No Private Key found in '{nokey.pem}.key'."),
    ("ssl crt {garbage.pem}", "unable to load certificate from file '{garbage.pem}'."),
    ("ssl crt /nonexistent/x.pem", "unable to stat SSL certificate from file '/nonexistent/x.pem' : No such file "
                                   "or directory."),
    ("ssl crt {a.pem} ssl-min-ver TLSv9", "'TLSv9' : unknown ssl/tls version"),
    ("ssl crt {a.pem} ssl-min-ver SSLv3", "'SSLv3' is not supported by balancier"),
    ("ssl crt {a.pem} ciphers FOO", "unable to set SSL cipher list to 'FOO'."),
    ("ssl crt {a.pem} alpn h2,http/1.1", "protocol 'h2' is not implemented by balancier"),
    ("ssl crt {a.pem} ciphersuites TLS_AES_128_GCM_SHA256", "'ciphersuites' (TLS 1.3 cipher suites) is not "
                                                            "implemented by balancier"),
    ("ssl crt {a.pem} ssl-min-ver TLSv1.3 ssl-max-ver TLSv1.2", "is higher than 'ssl-max-ver TLSv1.2'"),
    ("ssl crt", "'crt' : missing argument"),
])
def test_bind_tls_errors_carry_file_and_line(tmp_path: Path, certs: dict[str, str], words: str,
                                             message: str) -> None:
    def fill(text: str) -> str:
        for name, path in certs.items():
            text = text.replace("{" + name + "}", path)
        return text

    cfg, diags = parse(tmp_path, _fe(fill(words)))
    assert cfg is None
    alerts = [d for d in diags if d.startswith("alert x.cfg:")]
    assert alerts, diags
    expected = fill(message).replace(str(tmp_path) + os.sep, "")
    assert alerts[0].startswith("alert x.cfg:7: 'bind 127.0.0.1:8443' in section 'frontend' : "), alerts
    assert expected in alerts[0]


def test_ssl_without_crt_and_other_options(tmp_path: Path, certs: dict[str, str]) -> None:
    _, diags = parse(tmp_path, _fe("ssl"))
    assert diags[0] == ("alert x.cfg:7: Proxy 'f': no SSL certificate specified for bind '127.0.0.1:8443' at "
                        f"[{tmp_path / 'x.cfg'}:7] (use 'crt').").replace(str(tmp_path) + os.sep, "")
    _, diags = parse(tmp_path, _fe(f"ssl crt {certs['a.pem']} accept-proxy"))
    assert diags[0] == ("alert x.cfg:7: unsupported bind option 'accept-proxy' on 'bind 127.0.0.1:8443' (not "
                        "implemented by balancier)")
    _, diags = parse(tmp_path, _fe(f"ssl crt {certs['a.pem']} bogus"))
    assert diags[0] == "alert x.cfg:7: 'bind 127.0.0.1:8443' unknown keyword 'bogus'."
    cfg, diags = parse(tmp_path, _fe(f"crt {certs['a.pem']}"))
    assert cfg is not None and cfg.proxy("f").binds[0].tls is None
    assert "warning x.cfg:7: 'bind 127.0.0.1:8443' : TLS settings ignored: the bind line has no 'ssl' keyword" in diags


def test_reload_rereads_a_renewed_certificate(tmp_path: Path) -> None:
    """The same configuration loaded twice serves the certificate that is in the file at the second load."""
    ca = trustme.CA()
    path = tmp_path / "site.pem"
    ca.issue_cert("old.test").private_key_and_cert_chain_pem.write_to_path(str(path))
    text = _fe(f"ssl crt {path}")
    first = parse_ok(tmp_path, text).proxy("f").binds[0].tls
    ca.issue_cert("new.test").private_key_and_cert_chain_pem.write_to_path(str(path))
    second = parse_ok(tmp_path, text).proxy("f").binds[0].tls
    assert first is not None and second is not None
    assert first.store.default.names == ("old.test",)
    assert second.store.default.names == ("new.test",)
    assert load_bind(BindSettings(crts=(str(path),))).store.default.names == ("new.test",)


# ---------------------------------------------------------------- server side
def _be(server: str, extra: str = "") -> str:
    return (HTTP_DEFAULTS + f"frontend f\n    bind 127.0.0.1:8080\n    default_backend b\nbackend b\n{extra}"
            f"    server s 127.0.0.1:443 {server}\n")


def test_server_tls_settings(tmp_path: Path, certs: dict[str, str]) -> None:
    cfg = parse_ok(tmp_path, _be(f"ssl verify required ca-file {certs['ca.pem']} sni str(api.test) check"))
    s = cfg.proxy("b").servers[0]
    assert s.ssl and s.tls is not None and s.tls.sni == "api.test" and s.tls.verify == "required"
    assert s.tls_context is not None and s.tls_context.check_hostname
    assert s.check_tls_context is not None and not s.check_tls_context.check_hostname
    assert s.check_uses_ssl
    s = parse_ok(tmp_path, _be("ssl verify none sni req.hdr(host) port 80 check")).proxy("b").servers[0]
    assert s.tls is not None and s.tls.sni_from_host and not s.check_uses_ssl  # port: checks drop the implicit ssl
    s = parse_ok(tmp_path, _be("ssl verify none check no-check-ssl")).proxy("b").servers[0]
    assert not s.check_uses_ssl
    s = parse_ok(tmp_path, _be("verify none check check-ssl")).proxy("b").servers[0]
    assert s.check_uses_ssl and not s.ssl and s.check_tls_context is not None
    # default-server carries TLS words; a server line adds to them word by word
    s = parse_ok(tmp_path, _be("sni str(x.test)", extra="    default-server ssl verify none\n")).proxy("b").servers[0]
    assert s.ssl and s.tls is not None and s.tls.verify == "none" and s.tls.sni == "x.test"
    s = parse_ok(tmp_path, _be("no-ssl", extra="    default-server ssl verify none\n")).proxy("b").servers[0]
    assert not s.ssl


@pytest.mark.parametrize("server,message", [
    ("ssl", f"'server b/s' : {NO_CA}"),
    ("ssl verify required", f"'server b/s' : {NO_CA}"),
    ("check check-ssl", f"'server b/s' : {NO_CA}"),
    ("ssl verify optional", "'server b/s' : 'verify' : unknown verify method 'optional'"),
    ("ssl verify required ca-file /nonexistent/ca.pem", "'server b/s' : unable to load CA file '/nonexistent/ca.pem'"),
    ("ssl verify none sni req.hdr(x-foo)", "'server b/s' : 'sni req.hdr(x-foo)' : only 'sni str(<name>)' and 'sni "
                                           "req.hdr(host)' are implemented by balancier"),
    ("ssl verify none alpn http/1.1", "'server b/s' : unsupported server parameter 'alpn'"),
])
def test_server_tls_errors(tmp_path: Path, server: str, message: str) -> None:
    cfg, diags = parse(tmp_path, _be(server))
    assert cfg is None
    assert diags[0].startswith("alert x.cfg:10: " + message), diags


# ---------------------------------------------------------------- http-request rules
def _rules(lines: str, section: str = "frontend f", mode: str = "http") -> tuple[object, list[str]]:
    text = (f"defaults\n    mode {mode}\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            f"{section}\n    bind 127.0.0.1:8080\n{lines}    default_backend b\nbackend b\n"
            "    server s 127.0.0.1:80\n")
    return text, []


def test_http_request_rules_parse(tmp_path: Path) -> None:
    text, _ = _rules("    http-request redirect scheme https code 301 if !{ ssl_fc }\n"
                     "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n"
                     "    http-request set-header X-Plain yes unless { ssl_fc }\n"
                     "    http-request redirect scheme https drop-query unless ! { ssl_fc }\n"
                     "    http-request set-header X-Always 1\n")
    rules = parse_ok(tmp_path, str(text)).proxy("f").http_rules
    assert [(r.action, r.name, r.value, r.code, r.drop_query, r.cond, r.where.line) for r in rules] == [
        ("redirect-scheme", "", "https", 301, False, "nossl", 8),
        ("set-header", "X-Forwarded-Proto", "https", 302, False, "ssl", 9),
        ("set-header", "X-Plain", "yes", 302, False, "nossl", 10),
        ("redirect-scheme", "", "https", 302, True, "ssl", 11),
        ("set-header", "X-Always", "1", 302, False, "always", 12),
    ]


@pytest.mark.parametrize("line,message", [
    ("http-request redirect scheme https code 304 if !{ ssl_fc }",
     "error detected in frontend 'f' while parsing 'http-request redirect' rule : 'code': unsupported HTTP code "
     "'304' (must be one of 301, 302, 303, 307 or 308)."),
    ("http-request redirect location /x", "unsupported keyword 'http-request redirect location'"),
    ("http-request redirect scheme https if { path /x }", "unsupported condition 'if { path /x }'"),
    ("http-request set-header X-Src %[src]", "only a plain string is implemented by balancier"),
    ("http-request set-header X-A", "'http-request set-header' expects exactly 2 arguments"),
    ("http-request deny if { ssl_fc }", "unsupported keyword 'http-request deny' in section 'frontend'"),
    ("http-request redirect scheme https append-slash", "unsupported option 'append-slash'"),
])
def test_http_request_refused_forms(tmp_path: Path, line: str, message: str) -> None:
    text, _ = _rules(f"    {line}\n")
    cfg, diags = parse(tmp_path, str(text))
    assert cfg is None
    assert diags[0].startswith("alert x.cfg:8: "), diags
    assert message in diags[0], diags


def test_http_request_sections(tmp_path: Path) -> None:
    anon = HTTP_DEFAULTS + "    http-request set-header X-A b\n" + "backend b\n    server s 127.0.0.1:80\n"
    cfg, diags = parse(tmp_path, anon)
    assert cfg is None and diags[0] == "alert x.cfg:6: 'http-request' not allowed in anonymous 'defaults' section."
    named = HTTP_DEFAULTS.replace("defaults", "defaults d") + "    http-request set-header X-A b\n"
    cfg, diags = parse(tmp_path, named + "backend b\n    server s 127.0.0.1:80\n")
    assert cfg is None and "unsupported keyword 'http-request set-header' in section 'defaults'" in diags[0]
    # backend and listen sections take rules too
    cfg = parse_ok(tmp_path, HTTP_DEFAULTS + "backend b\n    http-request set-header X-B 1\n"
                             "    server s 127.0.0.1:80\nlisten l\n    bind 127.0.0.1:8081\n"
                             "    http-request set-header X-L 1 if { ssl_fc }\n    server s 127.0.0.1:80\n")
    assert cfg.proxy("b").http_rules[0].name == "X-B" and cfg.proxy("l").http_rules[0].cond == "ssl"
    # prometheus exporter keeps working next to them
    text, _ = _rules("    http-request use-service prometheus-exporter if { path /metrics }\n"
                     "    http-request set-header X-A 1\n")
    p = parse_ok(tmp_path, str(text)).proxy("f")
    assert p.prometheus_path == "/metrics" and len(p.http_rules) == 1


def test_http_request_rules_in_tcp_mode_warn_and_drop(tmp_path: Path) -> None:
    text, _ = _rules("    http-request set-header X-A b if { ssl_fc }\n", mode="tcp")
    cfg, diags = parse(tmp_path, str(text))
    assert cfg is not None and cfg.proxy("f").http_rules == ()
    assert ("warning x.cfg:8: 'http-request' rules ignored for frontend 'f' as they require HTTP mode." in diags)


def test_check_mode_reports_tls_errors(tmp_path: Path, certs: dict[str, str]) -> None:
    """`balancier proxy -c` says file:line for a certificate that cannot be loaded."""
    import subprocess
    import sys

    path = tmp_path / "bad.cfg"
    path.write_text(_fe(f"ssl crt {certs['nokey.pem']}"))
    out = subprocess.run([sys.executable, "-m", "balancier", "proxy", "-c", "-f", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{path}:7" in text and "No Private Key found" in text
    good = tmp_path / "good.cfg"
    good.write_text(_fe(f"ssl crt {certs['a.pem']}"))
    out = subprocess.run([sys.executable, "-m", "balancier", "proxy", "-c", "-f", str(good)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
