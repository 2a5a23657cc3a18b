"""The line lexer: words, comments, escapes, quoting, environment variables, fatal shapes (spec 2.1-2.3).

Expected values were checked against HAProxy 2.6 (`haproxy -c` on the same line) where HAProxy has an opinion.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancier.proxy.config.lexer import split_line

ENV = {"HX": "a b", "EMPTY": "", "PORT": "8080", "NAME": "web"}

WORDS = [
    # line, expected words
    ("", []),
    ("   \t  ", []),
    ("bind :80", ["bind", ":80"]),
    ("  \tmaxconn\t\t 100  ", ["maxconn", "100"]),
    ("daemon # a comment", ["daemon"]),
    ("daemon#glued comment", ["daemon"]),
    ("# only a comment", []),
    (r"w\x41\d\$\#\ \\z", ["wA\\d\\$# \\z"]),  # HAProxy 2.6: 'wA\d\$# \z'
    (r"a\ b c", ["a b", "c"]),
    (r"x\#y", ["x#y"]),
    (r"tab\there", ["tab\there"]),
    (r"cr\rlf\n", ["cr\rlf\n"]),
    (r"q\'\"", ["q'\""]),
    ('w"$HX"z', ["wa bz"]),
    ('w"${HX}"z', ["wa bz"]),
    ('w"${NOPE-def}"z', ["wdefz"]),
    ('w"${HX-def}"z', ["wa bz"]),
    ('w"${EMPTY-def}"z', ["wz"]),  # set but empty: no default (HAProxy's '-' form)
    ("w'$HX'z", ["w$HXz"]),
    ("w$HX", ["w$HX"]),  # never expanded outside double quotes
    ("w${HX}", ["w${HX}"]),
    ('w"${HX[*]}"z', ["wa", "bz"]),  # split into words
    ("\"a b\"'c'd", ["a bcd"]),
    ('"a # not a comment"', ["a # not a comment"]),
    ("'a \"b\" \\x41'", ['a "b" \\x41']),  # strong quoting: nothing interpreted
    (r'w"\$x\"y\\"z', ['w$x"y\\z']),
    ('bind ":${PORT}"', ["bind", ":8080"]),
    ('server "$NAME" 127.0.0.1', ["server", "web", "127.0.0.1"]),
    ("log-tag x \\", ["log-tag", "x", "\\"]),  # a trailing backslash is a word of its own
    ('log-tag foo "$NOPE"', ["log-tag", "foo"]),  # empty words at the end are dropped
    ('x "" ""', ["x"]),
]


@pytest.mark.parametrize(("line", "expected"), WORDS)
def test_words(line: str, expected: list[str]) -> None:
    result = split_line(line, ENV, {".LINE": "7", ".FILE": "f.cfg", ".SECTION": "fe"})
    assert result.error is None
    assert result.words == expected


def test_pseudo_variables() -> None:
    result = split_line('x "${.FILE}:${.LINE}" "$.SECTION"', {}, {".FILE": "a.cfg", ".LINE": "12", ".SECTION": "fe"})
    assert result.words == ["x", "a.cfg:12", "fe"]


ERRORS = [
    ('w"ab', "unmatched quote at position 2"),  # HAProxy 2.6 wording and 1-based position
    ("w'ab", "unmatched quote at position 2"),
    ("bind '127.0.0.1:80", "unmatched quote at position 6"),
    (r"w\xZZ", "truncated or invalid hexadecimal sequence at position 2"),
    ("w\\x4", "truncated or invalid hexadecimal sequence at position 2"),
    ('w"${NOPE"', "unmatched brace in environment variable name at position 4"),
    ('w"$"x', "forbidden first char in environment variable name at position 4"),
    ('w"$1x"', "forbidden first char in environment variable name at position 4"),
    ('log-tag "$NOPE" foo', "argument number 1 at position 9 is empty and marks the end of the argument list"),
    ('a b "${EMPTY}" c', "argument number 2 at position 5 is empty and marks the end of the argument list"),
    ('a "" b', "argument number 1 at position 3 is empty and marks the end of the argument list"),
    ("a\0b", "NUL character at position 2"),
    ("'a\0b'", "NUL character at position 3"),
    ('"a\0b"', "NUL character at position 3"),
    ("x " + " ".join(["a"] * 70), "too many words, truncating after word 64, position 129: <a>."),
]


@pytest.mark.parametrize(("line", "message"), ERRORS)
def test_errors(line: str, message: str) -> None:
    result = split_line(line, ENV)
    assert result.error == message


def test_exactly_64_words_is_fine() -> None:
    result = split_line(" ".join(["w"] * 64), {})
    assert result.error is None and len(result.words) == 64


# Round trip: any list of non-empty words survives quoting and splitting.
_word = st.text(alphabet=st.characters(blacklist_characters="\0\n\r", blacklist_categories=("Cs",)), min_size=1)


def _strong(word: str) -> str:
    # Strong quotes cannot contain "'"; close, escape it, reopen (pieces join into one word).
    return "'" + word.replace("'", "'\\''") + "'"


def _escaped(word: str) -> str:
    out = []
    for c in word:
        if c == "\t":
            out.append("\\t")
        elif c in " #\\'\"":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _weak(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


@given(st.lists(_word, min_size=1, max_size=10), st.sampled_from([_strong, _escaped, _weak]))
def test_round_trip(words: list[str], quote) -> None:  # type: ignore[no-untyped-def]
    line = " \t ".join(quote(w) for w in words)
    result = split_line(line, {})
    assert result.error is None
    assert result.words == words


@given(st.lists(st.from_regex(r"[A-Za-z0-9_.:/-]{1,12}", fullmatch=True), min_size=1, max_size=10))
def test_plain_words_split_on_blanks(words: list[str]) -> None:
    assert split_line("  ".join(words) + "   # trailing comment", {}).words == words
