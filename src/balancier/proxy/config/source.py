"""Reading configuration files into statements: file lists, line checks and ``.if`` blocks.

Rules:
- ``-f`` arguments are files or directories; a directory contributes its ``*.cfg`` files (not dotfiles, not
  recursive) in C-locale (byte) order.
- Files are read as bytes and decoded as UTF-8 with surrogate escapes, so any byte survives to the messages.
- A last line without a line feed is fatal, as in HAProxy (the file may have been truncated). A trailing CR is
  part of the line ending (CRLF files work).
- ``.if``/``.elif``/``.else``/``.endif`` nest; lines inside a false branch are skipped (they are still split into
  words, but only directives are checked there, so ``"$X"`` guarded by ``.if defined(X)`` is fine). ``.warning``/``.notice``/``.alert`` emit their message
  (``.alert`` is fatal); ``.diag`` is only shown in HAProxy's diagnostic mode, which balancier does not have, so
  it is accepted and prints nothing. An ``.if`` left open at the end of a file is fatal.
- Words come from :mod:`lexer`, with ``.FILE``, ``.LINE`` and ``.SECTION`` provided; the caller updates
  :attr:`StatementReader.section` as sections start, and may change :attr:`StatementReader.env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field

from balancier.proxy.config.conditions import ConditionError, evaluate
from balancier.proxy.config.diagnostics import Report
from balancier.proxy.config.lexer import split_line
from balancier.proxy.config.model import Where


@dataclass
class Statement:
    where: Where
    words: list[str]
    line: str = ""  # the raw text, for messages that quote it


def expand_paths(paths: Sequence[str], report: Report) -> list[str]:
    """Turn the -f arguments into the ordered list of files to read."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(
                (n for n in os.listdir(path) if n.endswith(".cfg") and not n.startswith(".")),
                key=lambda n: n.encode("utf-8", "surrogateescape"),
            )
            files.extend(os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n)))
        elif os.path.isfile(path):
            files.append(path)
        else:
            report.alert(None, f"Cannot open configuration file/directory {path} : No such file or directory")
    if not files and not report.has_alerts:
        report.alert(None, f"no configuration file found in {', '.join(paths) or 'the arguments'} (a directory "
                           "contributes its *.cfg files)")
    return files


@dataclass
class _Block:
    where: Where
    active: bool  # lines of the current branch are parsed
    taken: bool  # a branch of this block was already true
    parent_active: bool
    seen_else: bool = False


@dataclass
class StatementReader:
    """Yields the statements of one file, honouring conditional blocks."""

    path: str
    report: Report
    env: MutableMapping[str, str]
    section: str = ""
    blocks: list[_Block] = field(default_factory=list)

    def __iter__(self) -> Iterator[Statement]:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self.report.alert(None, f"Cannot open configuration file/directory {self.path} : {exc.strerror}")
            return
        text = data.decode("utf-8", "surrogateescape")
        lines = text.split("\n")
        last_complete = text.endswith("\n") or text == ""
        if text.endswith("\n"):
            lines.pop()  # the empty piece after the final LF
        for number, raw in enumerate(lines, start=1):
            where = Where(self.path, number)
            if number == len(lines) and not last_complete:
                self.report.alert(
                    where, f"Missing LF on last line, file might have been truncated at position {len(raw) + 1}."
                )
                break
            line = raw[:-1] if raw.endswith("\r") else raw
            pseudo = {".FILE": self.path, ".LINE": str(number), ".SECTION": self.section}
            lexed = split_line(line, self.env, pseudo)
            if lexed.error is not None:
                # Inside a false branch only directives matter: '"$X"' guarded by '.if defined(X)' is fine.
                if not self.blocks or self.blocks[-1].active or line.lstrip().startswith("."):
                    self.report.alert(where, lexed.error)
                continue
            words = lexed.words
            if not words:
                continue
            if words[0].startswith("."):
                self._directive(where, words)
                continue
            if self.blocks and not self.blocks[-1].active:
                continue
            yield Statement(where, words, line)
        for block in reversed(self.blocks):
            self.report.alert(block.where, "missing '.endif' for this '.if' at end of file")
        self.blocks.clear()

    def _directive(self, where: Where, words: list[str]) -> None:
        kw = words[0]
        active = not self.blocks or self.blocks[-1].active
        if kw == ".if":
            value = self._condition(where, words) if active else False
            self.blocks.append(_Block(where, active and value, value, active))
        elif kw == ".elif":
            block = self._current(where, kw)
            if block is None:
                return
            if block.seen_else:
                self.report.alert(where, "'.elif' after '.else' is not permitted")
                return
            value = self._condition(where, words) if block.parent_active and not block.taken else False
            block.active = block.parent_active and not block.taken and value
            block.taken = block.taken or value
        elif kw == ".else":
            block = self._current(where, kw)
            if block is None:
                return
            if block.seen_else:
                self.report.alert(where, "'.else' after '.else' is not permitted")
                return
            block.seen_else = True
            block.active = block.parent_active and not block.taken
            block.taken = True
        elif kw == ".endif":
            if self._current(where, kw) is not None:
                self.blocks.pop()
        elif kw in (".diag", ".notice", ".warning", ".alert"):
            if not active:
                return
            message = " ".join(words[1:])
            if kw == ".alert":
                self.report.alert(where, message)
            elif kw == ".warning":
                self.report.warning(where, message)
            elif kw == ".notice":
                self.report.notice(where, message)
        else:
            self.report.alert(where, f"unknown directive '{kw}'")

    def _current(self, where: Where, kw: str) -> _Block | None:
        if not self.blocks:
            self.report.alert(where, f"'{kw}' without a matching '.if'")
            return None
        return self.blocks[-1]

    def _condition(self, where: Where, words: list[str]) -> bool:
        try:
            return evaluate(words[1:], self.env)
        except ConditionError as exc:
            self.report.alert(where, f"{exc} in '{words[0]}' condition")
            return False
