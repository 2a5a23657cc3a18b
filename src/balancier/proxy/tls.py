"""TLS for the data plane: HAProxy-style PEM files, SNI certificate selection, and the client/server contexts.

Rules (spec/haproxy.md §16):
- A PEM file holds the certificate, its private key (either order) and the intermediate chain; the first
  certificate in the file is the leaf. When the file has no private key, ``<file>.key`` is read instead (HAProxy
  appends ``.key`` to the whole name). DH parameters in the file are loaded too. An encrypted key is refused (there
  is nobody to type a pass phrase).
- ``crt <dir>`` loads every file of the directory in alphabetical order, except dotfiles and the companion files
  ``.key``, ``.issuer``, ``.ocsp``, ``.sctl``.
- SNI: an exact name (CN or DNS SAN, case-insensitive) wins over a wildcard; ``*.example.org`` covers exactly one
  label. With no SNI or no match the default certificate answers (``default-crt``, else the first one loaded),
  unless ``strict-sni``: then the handshake is aborted with an ``unrecognized_name`` alert.
- ``ssl-min-ver`` defaults to TLSv1.2 (HAProxy >= 2.2). SSLv3 and TLS 1.3 cipher suites (``ciphersuites``) cannot
  be set through Python's ssl module and are refused by the option parser (config/tlsopts.py).
- Certificates are read when the configuration is loaded (so before any chroot or privilege drop, and again on
  every reload): a loading error is a configuration error. Every function here raises ``TlsError`` with a message
  worded like HAProxy's; the caller prefixes it with ``file:line``.
- Server side (``server ... ssl``): ``verify required`` checks the chain against ``ca-file`` and, when an SNI is
  sent, the server's name against it (HAProxy's verifyhost defaults to the SNI); ``verify none`` checks nothing.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_MIN_VERSION = "TLSv1.2"
_COMPANIONS = (".key", ".issuer", ".ocsp", ".sctl")
_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)
_KEY_KINDS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"}


class TlsError(Exception):
    pass


@dataclass(frozen=True)
class PemParts:
    """What one PEM file holds, as PEM blocks (bytes)."""

    certs: tuple[bytes, ...]
    key: bytes | None
    encrypted_key: bool = False
    dh_params: bool = False


def split_pem(data: bytes) -> PemParts:
    """The certificate, key and DH blocks of a PEM text (pure)."""
    certs: list[bytes] = []
    key: bytes | None = None
    encrypted = dh = False
    for m in _BLOCK_RE.finditer(data):
        kind = m.group(1)
        if kind in (b"CERTIFICATE", b"TRUSTED CERTIFICATE"):
            certs.append(m.group(0))
        elif kind in _KEY_KINDS and key is None:
            key = m.group(0)
            if b"Proc-Type: 4,ENCRYPTED" in key:
                encrypted = True
        elif kind == b"ENCRYPTED PRIVATE KEY":
            encrypted = True
        elif kind == b"DH PARAMETERS":
            dh = True
    return PemParts(tuple(certs), key, encrypted, dh)


def name_matches(pattern: str, host: str) -> bool:
    """SNI matching: exact (case-insensitive), or ``*.x.y`` covering exactly one label."""
    pattern, host = pattern.lower(), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return False


@dataclass
class Certificate:
    """One loaded certificate: its file, the names it serves and a server context presenting it."""

    path: str
    names: tuple[str, ...]
    context: ssl.SSLContext = field(repr=False)


@dataclass
class CertStore:
    """The certificates of one ``bind``: SNI picks one; ``default`` answers the rest (pure lookup)."""

    certs: list[Certificate]
    default: Certificate
    exact: dict[str, Certificate] = field(default_factory=dict)
    wildcard: dict[str, Certificate] = field(default_factory=dict)  # '*.example.org' -> keyed 'example.org'

    def add_names(self, cert: Certificate) -> None:
        for name in cert.names:
            n = name.lower()
            if n.startswith("*."):
                self.wildcard.setdefault(n[2:], cert)
            else:
                self.exact.setdefault(n, cert)

    def lookup(self, server_name: str | None) -> Certificate | None:
        """The certificate for this SNI, or None when none matches (the caller decides: default or refuse)."""
        if not server_name:
            return None
        host = server_name.lower().rstrip(".")
        cert = self.exact.get(host)
        if cert is not None:
            return cert
        _first, dot, rest = host.partition(".")
        if dot and _first:
            return self.wildcard.get(rest)
        return None


@dataclass(frozen=True)
class BindSettings:
    """The TLS words of one ``bind`` line, as parsed (config/tlsopts.py)."""

    crts: tuple[str, ...]
    default_crt: str | None = None
    alpn: tuple[str, ...] = ()
    min_ver: str | None = None
    max_ver: str | None = None
    ciphers: str | None = None
    strict_sni: bool = False


def cert_files(path: str) -> list[str]:
    """The PEM files named by ``crt <path>``: the file itself, or the files of a directory, alphabetically."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise TlsError(f"unable to stat SSL certificate from file '{path}' : {e.strerror}.") from None
    if not os.path.isdir(path):
        return [path]
    out = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.startswith(".") or name.endswith(_COMPANIONS) or not os.path.isfile(full):
            continue
        out.append(full)
    del st
    return out


def _decode_names(cert_pem_path: str) -> tuple[str, ...]:
    """CN and DNS SANs of the first certificate of a PEM file, read with OpenSSL's decoder."""
    decoder: Callable[[str], dict[str, Any]] = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]
    info = decoder(cert_pem_path)
    names: list[str] = []
    for rdn in info.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    for kind, value in info.get("subjectAltName", ()):
        if kind == "DNS" and value not in names:
            names.append(value)
    return tuple(names)


def _apply_versions(ctx: ssl.SSLContext, min_ver: str | None, max_ver: str | None) -> None:
    ctx.minimum_version = VERSIONS[min_ver or DEFAULT_MIN_VERSION]
    if max_ver is not None:
        ctx.maximum_version = VERSIONS[max_ver]


def load_certificate(path: str, settings: BindSettings) -> Certificate:
    """Read one PEM file (with the ``.key`` fallback) into a server context configured by ``settings``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TlsError(f"unable to stat SSL certificate from file '{path}' : {e.strerror}.") from None
    parts = split_pem(data)
    if not parts.certs:
        raise TlsError(f"unable to load certificate from file '{path}'.")
    key_path = path
    if parts.key is None and not parts.encrypted_key:
        key_path = path + ".key"
        try:
            with open(key_path, "rb") as f:
                kparts = split_pem(f.read())
        except OSError:
            raise TlsError(f"No Private Key found in '{key_path}'.") from None
        if kparts.key is None and not kparts.encrypted_key:
            raise TlsError(f"No Private Key found in '{key_path}'.")
        parts = PemParts(parts.certs, kparts.key, kparts.encrypted_key, parts.dh_params)
    if parts.encrypted_key:
        raise TlsError(f"encrypted private key in '{key_path}' is not supported (no pass phrase can be given).")
    ctx = new_server_context(settings)
    try:
        ctx.load_cert_chain(path, key_path)
    except ssl.SSLError as e:
        raise TlsError(f"unable to load SSL certificate and key from '{path}' ({e.reason or e}).") from None
    if parts.dh_params:
        try:
            ctx.load_dh_params(path)
        except ssl.SSLError as e:
            raise TlsError(f"unable to load DH parameters from '{path}' ({e.reason or e}).") from None
    try:
        names = _decode_names(path)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise TlsError(f"unable to load certificate from file '{path}' ({e}).") from None
    return Certificate(path=path, names=names, context=ctx)


class DirectSSLObject(ssl.SSLObject):
    """``ssl.SSLObject`` whose ``read``, ``write`` and ``pending`` are the underlying C object's own methods.

    uvloop's TLS layer binds these three once per connection and calls them for every record; ``ssl.py``'s
    versions only pass their arguments on (``read(len, buffer)`` positionally, as the C method takes them), at
    the cost of a Python frame each, about three per request. The contexts balancier makes (listeners,
    certificates, servers) create these objects (``SSLContext.sslobject_class``). Where the standard library
    builds the object differently (``_create`` is its constructor in every version we run on), the object
    keeps the wrappers: the same behaviour, the frames back."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self = super()._create(*args, **kwargs)  # type: ignore[misc]
        c = getattr(self, "_sslobj", None)
        if c is not None:
            self.read = c.read  # type: ignore[method-assign]
            self.write = c.write  # type: ignore[method-assign]
            self.pending = c.pending  # type: ignore[method-assign]
        return self  # type: ignore[no-any-return]


def new_server_context(settings: BindSettings) -> ssl.SSLContext:
    """A context for the listening side, without a certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslobject_class = DirectSSLObject
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _apply_versions(ctx, settings.min_ver, settings.max_ver)
    if settings.ciphers is not None:
        try:
            ctx.set_ciphers(settings.ciphers)
        except ssl.SSLError:
            raise TlsError(f"unable to set SSL cipher list to '{settings.ciphers}'.") from None
    if settings.alpn:
        ctx.set_alpn_protocols(list(settings.alpn))
    return ctx


class BindTls:
    """Everything a TLS ``bind`` needs at run time: the certificates and the context given to the listener.

    The listener's context is the default certificate's; its SNI callback swaps in the matching certificate's
    context (or aborts the handshake under strict-sni)."""

    def __init__(self, settings: BindSettings) -> None:
        self.settings = settings
        certs: list[Certificate] = []
        seen: set[str] = set()
        paths = list(settings.crts)
        if settings.default_crt is not None:
            paths.insert(0, settings.default_crt)
        for crt in paths:
            for path in cert_files(crt):
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                certs.append(load_certificate(path, settings))
        if not certs:
            raise TlsError(f"no certificate found in '{', '.join(settings.crts)}'.")
        self.store = CertStore(certs=certs, default=certs[0])
        for cert in certs:
            self.store.add_names(cert)
        self.context = certs[0].context
        if len(certs) > 1 or settings.strict_sni:  # one certificate and no strict-sni: nothing to choose
            for cert in certs:
                cert.context.sni_callback = self._on_sni

    def _on_sni(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        cert = self.store.lookup(server_name)
        if cert is None:
            if self.settings.strict_sni:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            cert = self.store.default
        if sslobj.context is not cert.context:
            sslobj.context = cert.context
        return None

    def names(self) -> list[tuple[str, tuple[str, ...]]]:
        """(file, names) of every certificate, in load order (for diagnostics and tests)."""
        return [(c.path, c.names) for c in self.store.certs]


def load_bind(settings: BindSettings) -> BindTls:
    """Load every certificate of a bind line. Raises TlsError."""
    return BindTls(settings)


@dataclass(frozen=True)
class ServerSettings:
    """The TLS words of one ``server`` line (config/tlsopts.py)."""

    verify: str = "required"  # 'required' | 'none'
    ca_file: str | None = None
    sni: str | None = None  # a fixed name (``sni str(name)``)
    sni_from_host: bool = False  # ``sni req.hdr(host)``
    alpn: tuple[str, ...] = ()


def server_context(settings: ServerSettings) -> ssl.SSLContext:
    """The client context used to talk TLS to a server (and to check it). Raises TlsError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sslobject_class = DirectSSLObject
    ctx.minimum_version = VERSIONS[DEFAULT_MIN_VERSION]
    if settings.verify == "none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        if settings.ca_file is None:
            raise TlsError("verify is enabled but no CA file specified.")
        try:
            ctx.load_verify_locations(cafile=settings.ca_file)
        except FileNotFoundError:
            raise TlsError(f"unable to load CA file '{settings.ca_file}' : No such file or directory.") from None
        except (ssl.SSLError, OSError) as e:
            raise TlsError(f"unable to load CA file '{settings.ca_file}' ({e}).") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        # the name is checked only when an SNI is sent (HAProxy's verifyhost defaults to the SNI value)
        ctx.check_hostname = settings.sni is not None or settings.sni_from_host
    if settings.alpn:
        ctx.set_alpn_protocols(list(settings.alpn))
    return ctx


def host_without_port(host: str) -> str:
    """The name part of a Host header value (``example.org:8443`` -> ``example.org``; IPv6 literals kept)."""
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def sni_for(settings: ServerSettings | None, host_header: str | None) -> str | None:
    """The SNI to send to a server for a request with this Host header (None: no SNI)."""
    if settings is None:
        return None
    if settings.sni is not None:
        return settings.sni
    if settings.sni_from_host and host_header:
        return host_without_port(host_header.strip()) or None
    return None


def describe(certs: Sequence[Certificate]) -> str:
    return ", ".join(f"{c.path} ({' '.join(c.names)})" for c in certs)
