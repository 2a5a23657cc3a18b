"""Files and lines: missing LF, NUL bytes, CRLF, directories, several -f files, and .if/.elif/.else/.endif."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancier.proxy.config import ConfigError, load
from balancier.proxy.config.conditions import ConditionError, evaluate

from proxycfg_helpers import HTTP_DEFAULTS, errors, fake_resolve, parse, parse_ok, render


def test_missing_lf_on_last_line(tmp_path: Path) -> None:
    # HAProxy 2.6: "Missing LF on last line, file might have been truncated at position 11."
    assert errors(tmp_path, "global\n    log-tag x\n    daemon") == [
        "alert x.cfg:3: Missing LF on last line, file might have been truncated at position 11."
    ]


def test_nul_byte(tmp_path: Path) -> None:
    assert errors(tmp_path, "global\n    log-tag x\0y\n") == ["alert x.cfg:2: NUL character at position 14"]


def test_crlf_lines(tmp_path: Path) -> None:
    config = parse_ok(tmp_path, "global\r\n    log-tag crlf\r\n    maxconn 10\r\n")
    assert config.global_.log_tag == "crlf" and config.global_.maxconn == 10


def test_empty_file_is_valid(tmp_path: Path) -> None:
    config = parse_ok(tmp_path, "")
    assert config.proxies == ()


def test_lexer_error_reported_with_line(tmp_path: Path) -> None:
    assert errors(tmp_path, "global\n\n    log-tag \"x\n") == ["alert x.cfg:3: unmatched quote at position 13"]


def test_env_expansion_in_config(tmp_path: Path) -> None:
    text = HTTP_DEFAULTS + 'frontend "fe-${SITE}"\n    bind "${ADDR}:${PORT-8080}"\n    default_backend b\n' \
        "backend b\n    server s \"$BACKEND\"\n"
    config = parse_ok(tmp_path, text, env={"SITE": "esup", "ADDR": "127.0.0.1", "BACKEND": "127.0.0.2:81"})
    fe = config.proxy("fe-esup")
    assert (fe.binds[0].host, fe.binds[0].port) == ("127.0.0.1", 8080)
    assert (config.proxy("b").servers[0].host, config.proxy("b").servers[0].port) == ("127.0.0.2", 81)


def test_unset_env_var_mid_line(tmp_path: Path) -> None:
    text = HTTP_DEFAULTS + 'backend b\n    server "$NOPE" 127.0.0.1:80 check\n'
    assert errors(tmp_path, text) == [
        "alert x.cfg:7: argument number 1 at position 12 is empty and marks the end of the argument list"
    ]


def test_directory_loads_cfg_files_in_c_order(tmp_path: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "b.cfg").write_text("backend Zb\n    server s 127.0.0.1:1\n")
    (d / "B.cfg").write_text("backend ZB\n    server s 127.0.0.1:1\n")  # 'B' < 'b' in the C locale
    (d / "a.cfg").write_text(HTTP_DEFAULTS)
    (d / ".hidden.cfg").write_text("this is not a config\n")
    (d / "notes.txt").write_text("neither is this\n")
    (d / "10.cfg").write_text("global\n    maxconn 7\n")
    config, diags = load([str(d)], {}, resolve=fake_resolve)
    # ZB is read before a.cfg's defaults, so it has no timeouts
    assert [render(d)[:45] for d in diags] == ["warning B.cfg:1: missing timeouts for backend 'ZB'"[:45]]
    assert [p.name for p in config.proxies] == ["ZB", "Zb"]
    assert config.global_.maxconn == 7
    assert [Path(f).name for f in config.files] == ["10.cfg", "B.cfg", "a.cfg", "b.cfg"]
    assert config.proxy("ZB").timeouts.connect is None and config.proxy("Zb").timeouts.connect == 5000


def test_several_files_keep_defaults_but_not_the_section(tmp_path: Path) -> None:
    one = tmp_path / "one.cfg"
    two = tmp_path / "two.cfg"
    one.write_text(HTTP_DEFAULTS + "backend b\n    server s 127.0.0.1:1\n")
    two.write_text("    server t 127.0.0.1:2\nbackend c\n    server s 127.0.0.1:1\n")
    with pytest.raises(ConfigError) as info:
        load([str(one), str(two)], {}, resolve=fake_resolve)
    assert [render(d) for d in info.value.diagnostics] == [
        "alert two.cfg:1: unknown keyword 'server' out of section."
    ]
    two.write_text("backend c\n    server s 127.0.0.1:1\n")
    config, _ = load([str(one), str(two)], {}, resolve=fake_resolve)
    assert config.proxy("c").timeouts.server == 30000  # the defaults of one.cfg still apply


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load([str(tmp_path / "nope.cfg")], {})
    assert "nope.cfg" in str(info.value) and "No such file" in str(info.value)


CONDITIONS = [
    (["1"], True), (["0"], False), (["defined(HOME)"], True), (["defined(NOPE)"], False),
    (["!defined(NOPE)"], True), (["streq(a,a)"], True), (["streq(a,b)"], False), (["strneq(a,b)"], True),
    (["strstr(haystack,st)"], True), (["defined(HOME)", "&&", "0"], False), (["0", "||", "1"], True),
    (["1", "||", "0", "&&", "0"], True),  # && binds tighter
    (["(1", "||", "0)", "&&", "0"], False), (["!", "(0", "||", "0)"], True), (["!!1"], True), (["42"], True),
]


@pytest.mark.parametrize(("words", "value"), CONDITIONS)
def test_condition_values(words: list[str], value: bool) -> None:
    assert evaluate(words, {"HOME": "/root"}) is value


@pytest.mark.parametrize(("words", "message"), [
    (["feature(OPENSSL)"], "unsupported predicate 'feature' (not implemented by balancier)"),
    (["version_atleast(2.4)"], "unsupported predicate 'version_atleast' (not implemented by balancier)"),
    (["foo(x)"], "unknown term 'foo' in conditional expression"),
    (["streq(a)"], "'streq' expects 2 argument(s), got 1"),
    (["(1"], "missing closing ')' in conditional expression"),
    (["yes"], "unparsable conditional expression 'yes'"),
    (["1", "&&"], "missing term in conditional expression at ''"),
])
def test_condition_errors(words: list[str], message: str) -> None:
    with pytest.raises(ConditionError) as info:
        evaluate(words, {})
    assert str(info.value) == message


IF_CONFIG = """global
.if defined(PROD)
    maxconn 1000
.elif streq("$SITE",test)
    maxconn 20
    .if 1
    log-tag nested-in-test
    .endif
.else
    maxconn 5
    log-tag "${NOT_SET_HERE}" ignored-because-inactive
.endif
"""


@pytest.mark.parametrize(("env", "maxconn", "tag"), [
    ({"PROD": ""}, 1000, "balancier"), ({"SITE": "test"}, 20, "nested-in-test"), ({}, None, None),
])
def test_if_blocks(tmp_path: Path, env: dict[str, str], maxconn: int | None, tag: str | None) -> None:
    config, diags = parse(tmp_path, IF_CONFIG, env)
    if tag is None:  # the .else branch is active: its empty argument mid-line is an error
        assert config is None
        assert diags == ["alert x.cfg:11: argument number 1 at position 13 is empty and marks the end of the "
                         "argument list"]
        return
    assert config is not None and diags == []
    assert config.global_.maxconn == maxconn and config.global_.log_tag == tag


@pytest.mark.parametrize(("text", "message"), [
    ("global\n.if 1\n    daemon\n", "alert x.cfg:2: missing '.endif' for this '.if' at end of file"),
    ("global\n.endif\n", "alert x.cfg:2: '.endif' without a matching '.if'"),
    ("global\n.else\n", "alert x.cfg:2: '.else' without a matching '.if'"),
    ("global\n.if 0\n.else\n.else\n.endif\n", "alert x.cfg:4: '.else' after '.else' is not permitted"),
    ("global\n.if 0\n.else\n.elif 1\n.endif\n", "alert x.cfg:4: '.elif' after '.else' is not permitted"),
    ("global\n.if bogus(1)\n.endif\n", "alert x.cfg:2: unknown term 'bogus' in conditional expression in '.if' "
                                       "condition"),
    ("global\n.alert \"stop here\"\n", "alert x.cfg:2: stop here"),
    ("global\n.foo\n", "alert x.cfg:2: unknown directive '.foo'"),
])
def test_if_errors(tmp_path: Path, text: str, message: str) -> None:
    assert errors(tmp_path, text) == [message]


def test_messages_directives(tmp_path: Path) -> None:
    text = "global\n.warning \"check ${.FILE}\"\n.notice hello\n.diag quiet\n.if 0\n.warning never\n.endif\n"
    config, diags = parse(tmp_path, text)
    assert config is not None
    assert diags == ["warning x.cfg:2: check x.cfg", "notice x.cfg:3: hello"]  # ${.FILE} is the path as given


def test_section_pseudo_variable(tmp_path: Path) -> None:
    text = 'global\n    log-tag "${.SECTION}"\n' + HTTP_DEFAULTS + \
        'backend b\n    cookie "${.SECTION}-${.LINE}"\n    server s 127.0.0.1:1\n'
    config = parse_ok(tmp_path, text)
    assert config.global_.log_tag == "global"
    cookie = config.proxy("b").cookie
    assert cookie is not None and cookie.name == "b-9"


def test_directory_without_cfg_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("global\n")
    with pytest.raises(ConfigError) as info:
        load([str(tmp_path)], {})
    assert [d.message for d in info.value.diagnostics] == [
        f"no configuration file found in {tmp_path} (a directory contributes its *.cfg files)"]
