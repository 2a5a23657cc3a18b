"""Sections and inheritance: turning statements into the frozen model.

Rules (HAProxy >= 2.4, specification section 2.6):
- Section starters are valid anywhere and end the previous section: ``global``, ``defaults [name] [from x]``,
  ``frontend|backend|listen <name> [from x]``. Other HAProxy sections (``peers``, ``userlist`` ...) are refused by
  name and their lines skipped. Each file starts outside any section; the most recent defaults section carries
  over to the next file, as in HAProxy.
- A defaults section resets everything to the built-in defaults (or starts from its ``from`` section) and then
  applies its own lines; each later proxy starts as a copy of the most recent defaults section, or of the named
  one given with ``from``. ``from`` names a defaults section declared earlier; an ambiguous name is fatal, and so
  is a named defaults section used both with ``from`` and implicitly (HAProxy 2.6).
- Proxy names use ``[A-Za-z0-9-_.:]``; two proxies with the same name are fatal whatever their types (HAProxy
  >= 3.3), because balancier looks backends up by name.
- The address on a ``listen``/``frontend`` line (removed in HAProxy 1.6) is read as a ``bind`` with a warning.
- After the last file, per-proxy checks (tcp-mode leftovers, missing timeouts, http-check without httpchk, ...) and
  cross-checks (default_backend exists and has a compatible mode) run; see :mod:`crosscheck`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

from balancier.proxy.config.addresses import Resolver
from balancier.proxy.config.context import Ctx
from balancier.proxy.config.crosscheck import finish
from balancier.proxy.config.diagnostics import Report
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.global_section import parse_global_line
from balancier.proxy.config.keywords import OTHER_SECTIONS
from balancier.proxy.config.model import NOWHERE, Config, Global, Where
from balancier.proxy.config.proxies import add_binds, parse_proxy_line
from balancier.proxy.config.source import StatementReader, expand_paths

PROXY_SECTIONS = ("defaults", "frontend", "backend", "listen")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_SKIP = "skip"  # an unsupported section: its lines are not parsed


class _Parser:
    def __init__(self, report: Report, env: MutableMapping[str, str], resolve: Resolver) -> None:
        self.report = report
        self.env = env
        self.ctx = Ctx(report, resolve, env)
        self.current: ProxyDraft | str | None = None
        self.last_defaults = ProxyDraft("defaults", "", NOWHERE)
        self.named_defaults: dict[str, list[ProxyDraft]] = {}
        self.proxies: list[ProxyDraft] = []

    def read(self, path: str) -> None:
        reader = StatementReader(path, self.report, self.env)
        self.current = None
        for st in reader:
            words = st.words
            kw = words[0]
            if kw in ("global", *PROXY_SECTIONS) or kw in OTHER_SECTIONS:
                self.start_section(st.where, words)
                reader.section = self.section_label(kw)
                continue
            if self.current is None:
                self.report.alert(st.where, f"unknown keyword '{kw}' out of section.")
            elif self.current == _SKIP:
                continue
            elif self.current == "global":
                parse_global_line(self.ctx, st.where, words)
            elif isinstance(self.current, ProxyDraft):
                parse_proxy_line(self.ctx, self.current, st.where, words)

    def section_label(self, kw: str) -> str:
        if isinstance(self.current, ProxyDraft) and self.current.name:
            return self.current.name
        return kw

    def start_section(self, where: Where, words: list[str]) -> None:
        kw = words[0]
        if kw in OTHER_SECTIONS:
            self.report.alert(where, f"unsupported section '{kw}' (not implemented by balancier); its lines are "
                                     "skipped")
            self.current = _SKIP
            return
        if kw == "global":
            self.current = "global"
            self.ctx.max_args(where, words, 1)
            return
        if kw == "defaults":
            self.start_defaults(where, words)
            return
        self.start_proxy(where, words)

    def check_name(self, where: Where, kw: str, name: str) -> bool:
        bad = next((c for c in name if c not in _NAME_CHARS), None)
        if bad is not None:
            self.report.alert(where, f"character '{bad}' is not permitted in '{kw}' name '{name}'.")
            return False
        return True

    def find_defaults(self, where: Where, name: str, kind: str, proxy: str) -> ProxyDraft | None:
        found = self.named_defaults.get(name, [])
        if not found:
            self.report.alert(where, f"defaults section '{name}' not found for {kind} '{proxy}'.")
            return None
        if len(found) > 1:
            self.report.alert(where, f"defaults section '{name}' used by {kind} '{proxy}' is ambiguous: it is "
                                     f"declared at {found[0].where} and {found[1].where}.")
            return None
        parent = found[0]
        if parent.used_implicitly is not None:
            self.report.alert(where, f"defaults section '{name}' (declared at {parent.where}) is implicitly used by "
                                     f"another proxy (at {parent.used_implicitly}) and explicitly referenced here. "
                                     "To avoid any ambiguity don't mix both usage. Add a last defaults section not "
                                     "explicitly used or always use explicit references.")
            return None
        parent.used_from = parent.used_from or where
        return parent

    def implicit_defaults(self, where: Where) -> ProxyDraft | None:
        """The most recent defaults section, for a proxy without 'from' (HAProxy 2.6 forbids mixing both uses)."""
        base = self.last_defaults
        if base.name and base.used_from is not None:
            self.report.alert(where, f"defaults section '{base.name}' (declared at {base.where}) is explicitly "
                                     "referenced by another proxy and implicitly used here. To avoid any ambiguity "
                                     "don't mix both usage. Add a last defaults section not explicitly used or "
                                     "always use explicit references.")
            return None
        if base.name:
            base.used_implicitly = base.used_implicitly or where
        return base

    def start_defaults(self, where: Where, words: list[str]) -> None:
        args = words[1:]
        name = ""
        if args and args[0] != "from":
            name, args = args[0], args[1:]
        base = ProxyDraft("defaults", "", NOWHERE)  # built-in defaults
        self.current = _SKIP
        if name and not self.check_name(where, "defaults", name):
            return
        if args:
            if args[0] != "from" or len(args) != 2:
                self.report.alert(where, f"'defaults' expects [<name>] [from <defaults>] (got '{' '.join(args)}').")
                return
            parent = self.find_defaults(where, args[1], "defaults", name)
            if parent is None:
                return
            base = parent
        draft = base.inherit("defaults", name, where)
        if name:
            self.named_defaults.setdefault(name, []).append(draft)
        self.last_defaults = draft
        self.current = draft

    def start_proxy(self, where: Where, words: list[str]) -> None:
        kw = words[0]
        self.current = _SKIP
        if len(words) < 2:
            self.report.alert(where, f"'{kw}' expects <name> as an argument.")
            return
        name, args = words[1], words[2:]
        if not self.check_name(where, kw, name):
            return
        base: ProxyDraft | None = None
        legacy_bind: str | None = None
        if args and args[0] == "from":
            if len(args) != 2:
                self.report.alert(where, f"'{kw}' expects <name> [from <defaults>] (got '{' '.join(args)}').")
                return
            parent = self.find_defaults(where, args[1], kw, name)
            if parent is None:
                return
            base = parent
        elif args:
            if kw == "backend" or len(args) > 1:
                self.report.alert(where, f"'{kw} {name}' cannot handle unexpected argument '{args[-1]}'.")
                return
            legacy_bind = args[0]
        if base is None:
            base = self.implicit_defaults(where)
            if base is None:
                return
        draft = base.inherit(kw, name, where)
        for other in self.proxies:
            if other.name == name:
                self.report.alert(where, f"{draft.type_str} '{name}' has the same name as {other.type_str} "
                                         f"'{name}' declared at {other.where}.")
                self.current = draft  # parse its lines for errors, but keep it out of the model
                return
        self.proxies.append(draft)
        self.current = draft
        if legacy_bind is not None:
            self.report.warning(where, f"'{kw} {name} {legacy_bind}' read as '{kw} {name}' + 'bind {legacy_bind}' "
                                       f"(legacy form, removed in HAProxy 1.6; write 'bind {legacy_bind}' in the "
                                       "section)")
            add_binds(self.ctx, draft, where, legacy_bind)

    def config(self, files: Sequence[str]) -> Config:
        proxies = finish(self.ctx, self.proxies)
        return Config(global_=Global(**self.ctx.global_values), proxies=proxies, files=tuple(files))


def parse_files(
    paths: Sequence[str], env: MutableMapping[str, str], resolve: Resolver, report: Report
) -> Config:
    files = expand_paths(paths, report)
    report.files = list(files)
    parser = _Parser(report, env, resolve)
    for path in files:
        parser.read(path)
    return parser.config(files)


def default_env() -> dict[str, str]:
    return dict(os.environ)
