"""Nothing is ignored silently, and no input crashes the parser.

- Every HAProxy keyword that balancier knows but does not implement is refused with an alert naming it.
- Arbitrary lines (hypothesis) give a model or diagnostics, never an exception other than ConfigError.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancier.proxy.config import ConfigError, load
from balancier.proxy.config.keywords import (
    BIND_OPTIONS,
    GLOBAL_UNSUPPORTED,
    OPTION_UNSUPPORTED,
    OTHER_SECTIONS,
    PROXY_UNSUPPORTED,
    SERVER_UNSUPPORTED,
)

from proxycfg_helpers import HTTP_DEFAULTS, errors, fake_resolve


@pytest.mark.parametrize("kw", sorted(PROXY_UNSUPPORTED))
def test_unsupported_proxy_keywords(tmp_path: Path, kw: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + f"listen l\n    {kw} x\n")
    assert got == [f"alert x.cfg:7: unsupported keyword '{kw}' in section 'listen' (not implemented by balancier)"]


@pytest.mark.parametrize("name", sorted(OPTION_UNSUPPORTED))
def test_unsupported_options(tmp_path: Path, name: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + f"backend b\n    option {name}\n")
    assert got == [f"alert x.cfg:7: unsupported keyword 'option {name}' in section 'backend' (not implemented by "
                   "balancier)"]


@pytest.mark.parametrize("kw", sorted(GLOBAL_UNSUPPORTED))
def test_unsupported_global_keywords(tmp_path: Path, kw: str) -> None:
    got = errors(tmp_path, f"global\n    {kw} x\n")
    label = f"{kw} x" if kw == "stats" else kw
    assert got == [f"alert x.cfg:2: unsupported keyword '{label}' in section 'global' (not implemented by "
                   "balancier)"]


@pytest.mark.parametrize("param", sorted(SERVER_UNSUPPORTED))
def test_unsupported_server_params(tmp_path: Path, param: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + f"backend b\n    server s 127.0.0.1:80 check {param} x\n")
    assert got == [f"alert x.cfg:7: 'server b/s' : unsupported server parameter '{param}' (not implemented by "
                   "balancier)"]


@pytest.mark.parametrize("option", sorted(BIND_OPTIONS))
def test_unsupported_bind_options(tmp_path: Path, option: str) -> None:
    got = errors(tmp_path, HTTP_DEFAULTS + f"listen l\n    bind :80 {option} x\n")
    assert got == [f"alert x.cfg:7: unsupported bind option '{option}' on 'bind :80' (not implemented by "
                   "balancier)"]


@pytest.mark.parametrize("section", sorted(OTHER_SECTIONS))
def test_unsupported_sections_skip_their_lines(tmp_path: Path, section: str) -> None:
    got = errors(tmp_path, f"{section} x\n    anything goes here\nglobal\n    daemon\n")
    assert got == [f"alert x.cfg:1: unsupported section '{section}' (not implemented by balancier); its lines are "
                   "skipped"]


_LINE = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=60),
    st.lists(st.sampled_from(["global", "defaults", "frontend f", "backend b", "listen l", "bind", ":80", "server",
                              "s", "127.0.0.1:80", "option", "httpchk", "no", "timeout", "client", "5s", "cookie",
                              "insert", "\"", "'", "$X", "\"${X}\"", "#", "\\", "weight", "300", "log", "global",
                              ".if", ".endif", "1", "balance", "mode", "http", "tcp", "default_backend", "from"]),
             max_size=6).map(" ".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_LINE, max_size=12))
def test_arbitrary_input_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.cfg"
    path.write_text("".join(line + "\n" for line in lines))
    try:
        config, diags = load([str(path)], {"X": "1"}, resolve=fake_resolve)
    except ConfigError as exc:
        assert any(d.level == "alert" for d in exc.diagnostics)
    else:
        assert all(d.level != "alert" for d in diags)
        assert all(p.name for p in config.proxies)
