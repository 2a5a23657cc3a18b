"""Mutable drafts of proxies while their section is being read, and their freezing into the model.

Rules:
- A ``defaults`` section starts from the built-in defaults (the model's field defaults) or from the named
  defaults given with ``from``; a frontend/backend/listen starts as a copy of the most recent defaults section
  (or the ``from`` one). Copying is shallow: every value in a draft is immutable (ints, strings, tuples, frozen
  dataclasses), so a copy never shares state that a later line could change.
- Servers and binds are never inherited (HAProxy forbids them in defaults); ``default-server`` parameters are.
- ``set_here`` records the settings made by the section's own lines (for "overwriting" warnings); ``explicit``
  records keywords written in this section (to tell an inherited value from an explicit one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from balancier.proxy.config.model import (
    Bind,
    HttpCheck,
    HttpCheckExpect,
    Proxy,
    ServerConfig,
    Timeouts,
    Where,
)

# Fields of Proxy that are carried in ``ProxyDraft.values`` (the rest are built separately).
_SEPARATE = {"name", "kind", "binds", "servers", "timeouts", "httpchk", "where"}


def _builtin_values() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Proxy):
        if f.name in _SEPARATE:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def _builtin_timeouts() -> dict[str, int | None]:
    return {f.name: None for f in dataclasses.fields(Timeouts)}


@dataclass
class ProxyDraft:
    kind: str  # 'defaults', 'frontend', 'backend' or 'listen'
    name: str
    where: Where
    values: dict[str, Any] = field(default_factory=_builtin_values)
    timeouts: dict[str, int | None] = field(default_factory=_builtin_timeouts)
    default_server: dict[str, Any] = field(default_factory=dict)
    httpchk: dict[str, Any] | None = None  # from 'option httpchk': method, uri, version, headers
    check_send: dict[str, Any] = field(default_factory=dict)  # from 'http-check send'
    check_expect: HttpCheckExpect | None = None
    disable_on_404: bool = False
    http_check_where: Where | None = None  # first http-check line, for the "without option httpchk" warning
    log_format_where: Where | None = None  # where option httplog/tcplog was set
    servers: list[ServerConfig] = field(default_factory=list)
    binds: list[Bind] = field(default_factory=list)
    used_from: Where | None = None  # a defaults section referenced by 'from' (explicit use)
    used_implicitly: Where | None = None  # a defaults section a later proxy started from without 'from'
    set_here: set[str] = field(default_factory=set)
    explicit: dict[str, Where] = field(default_factory=dict)

    @property
    def has_fe(self) -> bool:
        return self.kind in ("defaults", "frontend", "listen")

    @property
    def has_be(self) -> bool:
        return self.kind in ("defaults", "backend", "listen")

    @property
    def type_str(self) -> str:
        """HAProxy's ``proxy_type_str``."""
        return {"frontend": "frontend", "backend": "backend", "listen": "proxy", "defaults": "defaults"}[self.kind]

    def inherit(self, kind: str, name: str, where: Where) -> ProxyDraft:
        """A new section starting from this defaults section."""
        return ProxyDraft(
            kind=kind,
            name=name,
            where=where,
            values=dict(self.values),
            timeouts=dict(self.timeouts),
            default_server=dict(self.default_server),
            httpchk=dict(self.httpchk) if self.httpchk is not None else None,
            check_send=dict(self.check_send),
            check_expect=self.check_expect,
            disable_on_404=self.disable_on_404,
            http_check_where=self.http_check_where,
            log_format_where=self.log_format_where,
        )

    def freeze_httpchk(self) -> HttpCheck | None:
        if self.httpchk is None:
            return None
        fields: dict[str, Any] = dict(self.httpchk)
        send = self.check_send
        for key in ("method", "uri", "version", "body"):
            if key in send:
                fields[key] = send[key]
        if "headers" in send:
            fields["headers"] = tuple(fields.get("headers", ())) + tuple(send["headers"])
        return HttpCheck(expect=self.check_expect, disable_on_404=self.disable_on_404, **fields)

    def freeze(self) -> Proxy:
        return Proxy(
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            binds=tuple(self.binds),
            servers=tuple(self.servers),
            timeouts=Timeouts(**self.timeouts),
            httpchk=self.freeze_httpchk(),
            where=self.where,
            **self.values,
        )
