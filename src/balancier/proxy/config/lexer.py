"""Splitting one configuration line into words, as HAProxy's ``parse_line`` does (HAProxy >= 1.6 rules).

Rules:
- One statement per physical line; there is no line continuation (a trailing ``\\`` is a word of its own).
- Words are separated by runs of unprotected blanks (space, tab). An unprotected ``#`` starts a comment, even glued
  to a word. Leading blanks are skipped.
- Outside quotes, ``\\ ``, ``\\#``, ``\\\\``, ``\\'``, ``\\"``, ``\\n``, ``\\r``, ``\\t`` and ``\\xHH`` are escapes; any
  other backslash is kept as it is (so regexes such as ``\\d`` pass through).
- ``"..."`` (weak quoting): blanks, ``'`` and ``#`` are literal, the escapes above apply plus ``\\$``, and environment
  variables are expanded: ``$NAME``, ``${NAME}``, ``${NAME-default}``, ``${NAME[*]}`` (the value split into words).
  Names are ``[A-Za-z_][A-Za-z0-9_]*`` plus the pseudo-variables ``.FILE``, ``.LINE``, ``.SECTION``. An unset
  variable is empty. ``$`` is never expanded outside double quotes.
- ``'...'`` (strong quoting): nothing inside is interpreted.
- Adjacent pieces join into one word (``"a b"'c'd`` is ``a bcd``).
- Fatal: an unmatched quote, a bad ``\\x`` sequence, a bad variable name or brace, a NUL byte, more than 64 words,
  and an empty word followed by a non-empty one (typically an unset variable mid-line). Empty words at the end of
  the line are dropped.

Positions in messages are 1-based columns of the line, as HAProxy prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_WORDS = 64
_BLANKS = " \t"
_SIMPLE_ESCAPES = {" ": " ", "#": "#", "\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX = "0123456789abcdefABCDEF"


def _is_name_start(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_name_char(c: str) -> bool:
    return _is_name_start(c) or ("0" <= c <= "9")


@dataclass
class LexResult:
    words: list[str]
    error: str | None = None  # the alert text, when the line is invalid


class _LexError(Exception):
    pass


def split_line(line: str, env: Mapping[str, str], pseudo: Mapping[str, str] | None = None) -> LexResult:
    """Split ``line`` (without its line feed) into words. ``pseudo`` holds ``.FILE``/``.LINE``/``.SECTION``."""
    try:
        words, starts = _split(line, env, pseudo or {})
    except _LexError as exc:
        return LexResult([], str(exc))
    # Empty words: allowed only at the end of the line, where they are dropped.
    while words and words[-1] == "":
        words.pop()
        starts.pop()
    for i, w in enumerate(words):
        if w == "":
            return LexResult(
                words,
                f"argument number {i} at position {starts[i] + 1} is empty and marks the end of the argument list",
            )
    if len(words) > MAX_WORDS:
        return LexResult(
            words[:MAX_WORDS],
            f"too many words, truncating after word {MAX_WORDS}, position {starts[MAX_WORDS] + 1}: "
            f"<{words[MAX_WORDS]}>.",
        )
    return LexResult(words)


def _split(line: str, env: Mapping[str, str], pseudo: Mapping[str, str]) -> tuple[list[str], list[int]]:
    words: list[str] = []
    starts: list[int] = []
    cur: list[str] = []
    in_word = False  # a word has started (even if it is still empty, e.g. after "")
    i, n = 0, len(line)

    def begin(pos: int) -> None:
        nonlocal in_word
        if not in_word:
            in_word = True
            starts.append(pos)

    def end() -> None:
        nonlocal in_word
        if in_word:
            words.append("".join(cur))
            cur.clear()
            in_word = False

    while i < n:
        c = line[i]
        if c == "\0":
            raise _LexError(f"NUL character at position {i + 1}")
        if c in _BLANKS:
            end()
            i += 1
        elif c == "#":
            break
        elif c == "'":
            begin(i)
            close = line.find("'", i + 1)
            if close < 0:
                raise _LexError(f"unmatched quote at position {i + 1}")
            piece = line[i + 1 : close]
            if "\0" in piece:
                raise _LexError(f"NUL character at position {i + 2 + piece.index(chr(0))}")
            cur.append(piece)
            i = close + 1
        elif c == '"':
            begin(i)
            i = _weak_quoted(line, i, env, pseudo, cur, words, starts)
        elif c == "\\":
            begin(i)
            text, i = _escape(line, i, in_dquote=False)
            cur.append(text)
        else:
            begin(i)
            cur.append(c)
            i += 1
    end()
    return words, starts


def _escape(line: str, i: int, in_dquote: bool) -> tuple[str, int]:
    """Decode the escape starting at line[i] == '\\'; return (text, next index)."""
    nxt = line[i + 1] if i + 1 < len(line) else ""
    if nxt in _SIMPLE_ESCAPES and nxt != "":
        return _SIMPLE_ESCAPES[nxt], i + 2
    if nxt == "$" and in_dquote:
        return "$", i + 2
    if nxt == "x":
        hexa = line[i + 2 : i + 4]
        if len(hexa) != 2 or any(h not in _HEX for h in hexa):
            raise _LexError(f"truncated or invalid hexadecimal sequence at position {i + 1}")
        return chr(int(hexa, 16)), i + 4  # two hex digits checked above
    return "\\", i + 1  # not an escape: the backslash is literal


def _weak_quoted(
    line: str,
    i: int,
    env: Mapping[str, str],
    pseudo: Mapping[str, str],
    cur: list[str],
    words: list[str],
    starts: list[int],
) -> int:
    """Consume a "..." piece starting at line[i] == '"'; return the index after the closing quote."""
    open_pos = i
    i += 1
    n = len(line)
    while i < n:
        c = line[i]
        if c == '"':
            return i + 1
        if c == "\0":
            raise _LexError(f"NUL character at position {i + 1}")
        if c == "\\":
            text, i = _escape(line, i, in_dquote=True)
            cur.append(text)
        elif c == "$":
            i = _variable(line, i, env, pseudo, cur, words, starts)
        else:
            cur.append(c)
            i += 1
    raise _LexError(f"unmatched quote at position {open_pos + 1}")


def _variable(
    line: str,
    i: int,
    env: Mapping[str, str],
    pseudo: Mapping[str, str],
    cur: list[str],
    words: list[str],
    starts: list[int],
) -> int:
    """Expand the variable at line[i] == '$' into ``cur`` (and ``words`` for ``[*]``); return the next index."""
    n = len(line)
    j = i + 1
    braced = j < n and line[j] == "{"
    if braced:
        j += 1
    name_start = j
    if j < n and line[j] == ".":
        j += 1  # pseudo-variables: .FILE, .LINE, .SECTION
    if j >= n or not _is_name_start(line[j]):
        raise _LexError(f"forbidden first char in environment variable name at position {j + 1}")
    while j < n and _is_name_char(line[j]):
        j += 1
    name = line[name_start:j]
    value = pseudo.get(name) if name.startswith(".") else env.get(name)
    if not braced:
        cur.append(value or "")
        return j
    split = False
    default: str | None = None
    if line.startswith("[*]", j):
        split = True
        j += 3
    if j < n and line[j] == "-":
        close = line.find("}", j)
        if close < 0:
            raise _LexError(f"unmatched brace in environment variable name at position {i + 2}")
        default = line[j + 1 : close]
        j = close
    if j >= n or line[j] != "}":
        raise _LexError(f"unmatched brace in environment variable name at position {i + 2}")
    if value is None and default is not None:
        value = default
    value = value or ""
    if split:
        parts = value.split()
        if parts:
            cur.append(parts[0])
            for part in parts[1:]:
                words.append("".join(cur))
                cur.clear()
                starts.append(i)
                cur.append(part)
    else:
        cur.append(value)
    return j + 1
