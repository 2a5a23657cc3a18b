"""The expressions of ``.if`` / ``.elif`` blocks (HAProxy >= 2.4), evaluated against the environment.

Rules:
- A condition is a term, ``!`` term, ``(`` expression ``)``, combined with ``&&`` (binds tighter) and ``||``.
- Terms: an integer (true when non-zero), an empty word (false), ``defined(VAR)``, ``streq(a,b)``, ``strneq(a,b)``,
  ``strstr(haystack,needle)``. Arguments are the text between the commas, already unquoted and expanded by the
  lexer (so ``streq("$ENV",prod)`` compares the variable's value).
- HAProxy's other predicates (``feature``, ``version_atleast``, ``version_before``, ``enabled``) are refused with
  a clear error rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PREDICATES = {"defined": 1, "streq": 2, "strneq": 2, "strstr": 2}
_UNSUPPORTED = ("feature", "version_atleast", "version_before", "enabled")
_INT_RE = re.compile(r"[-+]?[0-9]+")


class ConditionError(Exception):
    pass


def evaluate(words: list[str], env: Mapping[str, str]) -> bool:
    """Evaluate the words that follow ``.if``/``.elif``. Raises ConditionError with a readable message."""
    text = " ".join(words)
    if not text.strip():
        raise ConditionError("missing condition")
    parser = _Parser(text, env)
    value = parser.expression()
    parser.skip_blanks()
    if parser.pos != len(text):
        raise ConditionError(f"unparsable conditional expression at '{text[parser.pos:]}'")
    return value


class _Parser:
    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text = text
        self.pos = 0
        self.env = env

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def accept(self, token: str) -> bool:
        self.skip_blanks()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expression(self) -> bool:
        value = self.conjunction()
        while self.accept("||"):
            rhs = self.conjunction()  # evaluated anyway so that errors are always reported
            value = value or rhs
        return value

    def conjunction(self) -> bool:
        value = self.unary()
        while self.accept("&&"):
            rhs = self.unary()
            value = value and rhs
        return value

    def unary(self) -> bool:
        if self.accept("!"):
            return not self.unary()
        if self.accept("("):
            value = self.expression()
            if not self.accept(")"):
                raise ConditionError("missing closing ')' in conditional expression")
            return value
        return self.term()

    def term(self) -> bool:
        self.skip_blanks()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in " \t()!&|":
            self.pos += 1
        name = self.text[start : self.pos]
        if self.pos < len(self.text) and self.text[self.pos] == "(" and name:
            close = self.text.find(")", self.pos)
            if close < 0:
                raise ConditionError(f"missing closing ')' after '{name}('")
            args = self.text[self.pos + 1 : close].split(",")
            self.pos = close + 1
            return self.predicate(name, args)
        if name == "":
            raise ConditionError(f"missing term in conditional expression at '{self.text[start:]}'")
        if _INT_RE.fullmatch(name):
            return int(name) != 0
        raise ConditionError(f"unparsable conditional expression '{name}'")

    def predicate(self, name: str, args: list[str]) -> bool:
        if name in _UNSUPPORTED:
            raise ConditionError(f"unsupported predicate '{name}' (not implemented by balancier)")
        if name not in _PREDICATES:
            raise ConditionError(f"unknown term '{name}' in conditional expression")
        if len(args) != _PREDICATES[name]:
            raise ConditionError(f"'{name}' expects {_PREDICATES[name]} argument(s), got {len(args)}")
        if name == "defined":
            return args[0].strip() in self.env
        if name == "streq":
            return args[0] == args[1]
        if name == "strneq":
            return args[0] != args[1]
        return args[1] in args[0]  # strstr
