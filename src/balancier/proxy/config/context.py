"""What every keyword handler needs: the report, the resolver, and a few shared checks.

Rules:
- Handlers never raise for configuration mistakes: they add an alert (fatal) or a warning and return.
- Capability checks use HAProxy's words: ``'bind' ignored because backend 'b' has no frontend capability.``
- Fixed-arity keywords reject extra words: ``'daemon' cannot handle unexpected argument 'x'.``
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from balancier.proxy.config.addresses import Resolver
from balancier.proxy.config.diagnostics import Report
from balancier.proxy.config.drafts import ProxyDraft
from balancier.proxy.config.model import Global, LogTarget, Where


def _global_defaults() -> dict[str, Any]:
    return dict(Global().__dict__)


@dataclass
class Ctx:
    report: Report
    resolve: Resolver
    env: MutableMapping[str, str] = field(default_factory=dict)  # the lexer's view: global setenv changes it
    global_values: dict[str, Any] = field(default_factory=_global_defaults)

    @property
    def global_logs(self) -> tuple[LogTarget, ...]:
        logs: tuple[LogTarget, ...] = self.global_values["logs"]
        return logs

    def need_cap(self, px: ProxyDraft, where: Where, cap: str, label: str, hint: str = "") -> bool:
        """True when ``px`` has capability ``cap`` ('fe' or 'be'); otherwise warn that the line is ignored."""
        ok = px.has_fe if cap == "fe" else px.has_be
        if not ok:
            missing = "frontend" if cap == "fe" else "backend"
            self.report.warning(
                where, f"'{label}' ignored because {px.type_str} '{px.name}' has no {missing} capability.{hint}"
            )
        return ok

    def max_args(self, where: Where, words: list[str], count: int, label: str | None = None) -> bool:
        """True when ``words`` has at most ``count`` words (keyword included); otherwise alert on the first extra."""
        if len(words) > count:
            self.report.alert(where, f"'{label or words[0]}' cannot handle unexpected argument '{words[count]}'.")
            return False
        return True
