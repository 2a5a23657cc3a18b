"""Collecting the alerts (fatal), warnings and notices found while reading a configuration.

Rules:
- Messages are HAProxy's words where HAProxy has words for the case; the location is a separate ``Where`` so that
  the text is ``file:line: message`` when printed.
- Diagnostics are kept in the order they were found; :meth:`Report.sorted` orders them by file (in load order) and
  line, keeping the finding order for equal positions. Diagnostics without a location come last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from balancier.proxy.config.model import Diagnostic, Where


@dataclass
class Report:
    items: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # load order, for sorting

    def alert(self, where: Where | None, message: str) -> None:
        self.items.append(Diagnostic("alert", message, where))

    def warning(self, where: Where | None, message: str) -> None:
        self.items.append(Diagnostic("warning", message, where))

    def notice(self, where: Where | None, message: str) -> None:
        self.items.append(Diagnostic("notice", message, where))

    @property
    def has_alerts(self) -> bool:
        return any(d.level == "alert" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        order = {f: i for i, f in enumerate(self.files)}

        def key(d: Diagnostic) -> tuple[int, int, int]:
            if d.where is None:
                return (len(order) + 1, 0, 0)
            return (order.get(d.where.file, len(order)), d.where.line, 0)

        return sorted(self.items, key=key)  # stable: finding order kept for equal positions
