"""The TLS words of ``bind`` and ``server`` lines.

Rules (spec/haproxy.md §16, HAProxy 2.6's wording):
- ``bind <addr> ssl crt <pem|dir> [crt ...] [default-crt <pem>] [alpn <list>] [ssl-min-ver V] [ssl-max-ver V]
  [ciphers <list>] [strict-sni]``; V is TLSv1.0 .. TLSv1.3 (an unknown one: ``'TLSv9' : unknown ssl/tls
  version``). ``ssl`` without any certificate is refused as HAProxy does (``no SSL certificate specified for bind
  ... (use 'crt')``); ``crt`` without ``ssl`` loads nothing and warns. ``alpn`` may only offer ``http/1.1``
  (balancier speaks HTTP/1.1 only); ``ciphersuites`` (TLS 1.3) and ``SSLv3`` cannot be set with Python's ssl
  module and are refused. Every other bind option keeps being refused by name.
- ``server ... ssl [verify none|required] [ca-file F] [sni str(<name>)|req.hdr(host)] [check-ssl]
  [no-check-ssl] [no-ssl]``. ``verify`` defaults to ``required``; with TLS in use (``ssl`` or ``check-ssl``) and
  no ``ca-file`` the server is refused with HAProxy's message (the caller words it with the server's name).
- ``http-request redirect scheme`` / ``set-header`` rules, whose only condition is ``ssl_fc``, are parsed here too
  (``http_rule``): see proxies.py for where they are allowed; httprules.py runs them.
- Certificates and CA files are read here, when the configuration is loaded: their errors are configuration
  errors at the line that names them.
"""

from __future__ import annotations

from typing import Any

from balancier.proxy.config.context import Ctx
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.keywords import BIND_OPTIONS
from balancier.proxy.config.model import HttpRule, Where
from balancier.proxy.config.units import parse_uint
from balancier.proxy.tls import VERSIONS, BindSettings, BindTls, ServerSettings, TlsError, load_bind

BIND_TLS_WORDS = frozenset({"ssl", "crt", "default-crt", "alpn", "ssl-min-ver", "ssl-max-ver", "ciphers",
                            "ciphersuites", "strict-sni"})
SERVER_TLS_WORDS = frozenset({"ssl", "no-ssl", "verify", "ca-file", "sni", "check-ssl", "no-check-ssl"})
_WITH_ARG = frozenset({"crt", "default-crt", "alpn", "ssl-min-ver", "ssl-max-ver", "ciphers", "ciphersuites"})


class TlsOptionError(Exception):
    pass


def _version(word: str) -> str:
    if word == "SSLv3":
        raise TlsOptionError("'SSLv3' is not supported by balancier (Python's ssl module cannot enable it)")
    if word not in VERSIONS:
        raise TlsOptionError(f"'{word}' : unknown ssl/tls version")
    return word


def _alpn(text: str) -> tuple[str, ...]:
    protos = tuple(p for p in text.split(",") if p)
    if not protos:
        raise TlsOptionError("'alpn' : missing protocol name")
    for p in protos:
        if p != "http/1.1":
            raise TlsOptionError(f"'alpn {text}' : protocol '{p}' is not implemented by balancier (HTTP/1.1 only: "
                                 "use 'alpn http/1.1')")
    return protos


def parse_bind_words(words: list[str]) -> tuple[BindSettings | None, list[str]]:
    """The TLS settings of a bind line's options (``words``: everything after the address).

    Returns (settings or None when ``ssl`` is absent, warnings). Raises TlsOptionError for a bad TLS word; the
    caller refuses the words that are not TLS words before calling this."""
    use_ssl = strict = False
    crts: list[str] = []
    fields: dict[str, Any] = {}
    i = 0
    while i < len(words):
        kw = words[i]
        if kw == "ssl":
            use_ssl = True
            i += 1
            continue
        if kw == "strict-sni":
            strict = True
            i += 1
            continue
        if kw not in _WITH_ARG:
            raise TlsOptionError(f"unknown keyword '{kw}'.")
        if i + 1 >= len(words):
            raise TlsOptionError(f"'{kw}' : missing argument")
        arg = words[i + 1]
        i += 2
        if kw == "crt":
            crts.append(arg)
        elif kw == "default-crt":
            fields["default_crt"] = arg
        elif kw == "alpn":
            fields["alpn"] = _alpn(arg)
        elif kw == "ssl-min-ver":
            fields["min_ver"] = _version(arg)
        elif kw == "ssl-max-ver":
            fields["max_ver"] = _version(arg)
        elif kw == "ciphers":
            fields["ciphers"] = arg
        else:  # ciphersuites
            raise TlsOptionError("'ciphersuites' (TLS 1.3 cipher suites) is not implemented by balancier (Python's "
                                 "ssl module cannot set them; OpenSSL's default TLS 1.3 suites are used)")
    warnings: list[str] = []
    if not use_ssl:
        if crts or fields or strict:
            warnings.append("TLS settings ignored: the bind line has no 'ssl' keyword")
        return None, warnings
    min_ver, max_ver = fields.get("min_ver"), fields.get("max_ver")
    if min_ver is not None and max_ver is not None and VERSIONS[min_ver] > VERSIONS[max_ver]:
        raise TlsOptionError(f"'ssl-min-ver {min_ver}' is higher than 'ssl-max-ver {max_ver}'")
    if max_ver is not None and min_ver is None and VERSIONS[max_ver] < VERSIONS["TLSv1.2"]:
        fields["min_ver"] = max_ver  # the default minimum (TLSv1.2) would leave no version at all
    return BindSettings(crts=tuple(crts), strict_sni=strict, **fields), warnings


def load_bind_tls(settings: BindSettings) -> BindTls:
    """Read the certificates (raises TlsOptionError with HAProxy's wording)."""
    try:
        return load_bind(settings)
    except TlsError as e:
        raise TlsOptionError(str(e)) from None


def parse_sni(expr: str) -> dict[str, Any]:
    if expr.startswith("str(") and expr.endswith(")") and len(expr) > 5:
        return {"sni": expr[4:-1]}
    if expr.lower() in ("req.hdr(host)", "hdr(host)"):
        return {"sni_from_host": True}
    raise TlsOptionError(f"'sni {expr}' : only 'sni str(<name>)' and 'sni req.hdr(host)' are implemented by "
                         "balancier")


def server_word(words: list[str], i: int, out: dict[str, Any]) -> int:
    """Parse the server TLS word at ``words[i]`` into ``out`` (ServerConfig fields; TLS settings under the
    private key ``_tls``). Returns the index of the next word."""
    kw = words[i]
    tls: dict[str, Any] = out.setdefault("_tls", {})
    if kw == "ssl":
        out["ssl"] = True
        return i + 1
    if kw == "no-ssl":
        out["ssl"] = False
        return i + 1
    if kw == "check-ssl":
        out["check_ssl"] = True
        return i + 1
    if kw == "no-check-ssl":
        out["check_ssl"] = False
        return i + 1
    if i + 1 >= len(words):
        raise TlsOptionError(f"'{kw}' expects an argument.")
    arg = words[i + 1]
    if kw == "verify":
        if arg not in ("none", "required"):
            raise TlsOptionError(f"'verify' : unknown verify method '{arg}', only 'none' and 'required' are "
                                 "supported")
        tls["verify"] = arg
    elif kw == "ca-file":
        tls["ca_file"] = arg
    else:  # sni
        tls.pop("sni", None)
        tls.pop("sni_from_host", None)
        tls.update(parse_sni(arg))
    return i + 2


def server_settings(fields: dict[str, Any]) -> ServerSettings | None:
    """The ServerSettings of merged server fields (``_tls`` removed from ``fields``), None if nothing TLS."""
    tls = fields.pop("_tls", None) or {}
    if not tls and not fields.get("ssl") and not fields.get("check_ssl"):
        return None
    return ServerSettings(**tls)


NO_CA_MESSAGE = ("verify is enabled by default but no CA file specified. If you're running on a LAN where you're "
                 "certain to trust the server's certificate, please set an explicit 'verify none' statement on the "
                 "'server' line, or use 'ssl-server-verify none' in the global section to disable server-side "
                 "verifications by default.")


_BIND_WITH_ARG = frozenset({"crt", "default-crt", "alpn", "ssl-min-ver", "ssl-max-ver", "ciphers", "ciphersuites"})


def bind_tls(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> tuple[bool, BindSettings | None,
                                                                                  BindTls | None]:
    """The TLS part of a bind line: (line ok, settings, loaded certificates)."""
    words = args[2:]
    i = 0
    while i < len(words):  # refuse non-TLS options by name first, with the usual messages
        opt = words[i]
        if opt not in BIND_TLS_WORDS:
            if opt in BIND_OPTIONS:
                ctx.report.alert(where, f"unsupported bind option '{opt}' on 'bind {args[1]}' "
                                        "(not implemented by balancier)")
            else:
                ctx.report.alert(where, f"'bind {args[1]}' unknown keyword '{opt}'.")
            return False, None, None
        i += 2 if opt in _BIND_WITH_ARG else 1
    try:
        settings, warnings = parse_bind_words(words)
    except TlsOptionError as exc:
        ctx.report.alert(where, f"'bind {args[1]}' in section '{px.kind}' : {exc}")
        return False, None, None
    for w in warnings:
        ctx.report.warning(where, f"'bind {args[1]}' : {w}")
    if settings is None:
        return True, None, None
    if not settings.crts and settings.default_crt is None:
        ctx.report.alert(where, f"Proxy '{px.name}': no SSL certificate specified for bind '{args[1]}' at "
                                f"[{where.file}:{where.line}] (use 'crt').")
        return False, None, None
    try:
        loaded = load_bind_tls(settings)
    except TlsOptionError as exc:
        ctx.report.alert(where, f"'bind {args[1]}' in section '{px.kind}' : {exc}")
        return False, None, None
    return True, settings, loaded


_REDIRECT_CODES = (301, 302, 303, 307, 308)


def _rule_condition(words: list[str]) -> str | None:
    """'always', 'ssl' or 'nossl' for the words after a rule's action, None when the form is not supported."""
    if not words:
        return "always"
    if words[0] not in ("if", "unless"):
        return None
    rest = words[1:]
    negate = False
    if rest[:1] == ["!"]:
        negate, rest = True, rest[1:]
    elif rest[:1] == ["!{"]:
        negate, rest = True, ["{", *rest[1:]]
    if rest != ["{", "ssl_fc", "}"]:
        return None
    truth = (words[0] == "if") != negate
    return "ssl" if truth else "nossl"


def http_rule(ctx: Ctx, px: ProxyDraft, where: Where, args: list[str]) -> HttpRule | None:
    action = args[1]
    words = args[2:]
    cond_at = next((i for i, w in enumerate(words) if w in ("if", "unless")), len(words))
    body, cond_words = words[:cond_at], words[cond_at:]
    cond = _rule_condition(cond_words)
    if cond is None:
        ctx.report.alert(where, f"unsupported condition '{' '.join(cond_words)}' on 'http-request {action}' (not "
                                "implemented by balancier; only 'if { ssl_fc }', 'if !{ ssl_fc }', 'unless { ssl_fc "
                                "}' and 'unless !{ ssl_fc }' are)")
        return None
    if action == "set-header":
        if len(body) != 2:
            ctx.report.alert(where, "'http-request set-header' expects exactly 2 arguments (<name> <fmt>).")
            return None
        name, value = body
        if not name or any(not (c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")) for c in name):
            ctx.report.alert(where, f"'http-request set-header' : invalid header name '{name}'.")
            return None
        if "%" in value or any(c in value for c in "\r\n\0"):
            ctx.report.alert(where, f"'http-request set-header {name}' : only a plain string is implemented by "
                                    f"balancier as the value (got '{value}': log-format expressions are not)")
            return None
        return HttpRule(action="set-header", name=name, value=value, cond=cond,  # type: ignore[arg-type]
                        where=where)
    # redirect
    if body[:1] != ["scheme"]:
        kind = body[0] if body else ""
        ctx.report.alert(where, f"unsupported keyword 'http-request redirect {kind}' in section '{px.kind}' (not "
                                "implemented by balancier; only 'redirect scheme' is)")
        return None
    if len(body) < 2:
        ctx.report.alert(where, "'http-request redirect scheme' expects a scheme as argument.")
        return None
    scheme = body[1]
    code = 302
    drop_query = False
    i = 2
    while i < len(body):
        word = body[i]
        if word == "code":
            if i + 1 >= len(body):
                ctx.report.alert(where, "error detected while parsing 'http-request redirect' rule : 'code': "
                                        "missing argument.")
                return None
            number = parse_uint(body[i + 1])
            if number is None or number not in _REDIRECT_CODES:
                ctx.report.alert(where, f"error detected in {px.type_str} '{px.name}' while parsing 'http-request "
                                        f"redirect' rule : 'code': unsupported HTTP code '{body[i + 1]}' (must be "
                                        "one of 301, 302, 303, 307 or 308).")
                return None
            code = number
            i += 2
        elif word == "drop-query":
            drop_query = True
            i += 1
        else:
            ctx.report.alert(where, f"unsupported option '{word}' on 'http-request redirect scheme' (not implemented "
                                    "by balancier; only 'code' and 'drop-query' are)")
            return None
    if not scheme or any(c in scheme for c in ":/%\r\n"):
        ctx.report.alert(where, f"'http-request redirect scheme' : invalid scheme '{scheme}'.")
        return None
    return HttpRule(action="redirect-scheme", value=scheme, code=code, drop_query=drop_query,
                    cond=cond, where=where)  # type: ignore[arg-type]
