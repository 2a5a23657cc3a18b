"""The global section: every supported keyword reaches the model; bad values and other keywords are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from balancier.proxy.config.model import LogTarget, Where

from proxycfg_helpers import errors, parse_ok

GLOBAL_VALUES: list[tuple[str, str, Any]] = [
    ("daemon", "daemon", True),
    ("pidfile /run/b.pid", "pidfile", "/run/b.pid"),
    ("maxconn 4096", "maxconn", 4096),
    ("chroot /usr/share/haproxy", "chroot", "/usr/share/haproxy"),
    ("uid 99", "uid", 99),
    ("gid 98", "gid", 98),
    ("user haproxy", "user", "haproxy"),
    ("group nogroup", "group", "nogroup"),
    ("nbthread 1", "nbthread", 1),
    ("nbthread 64", "nbthread", 64),
    ("log-tag esup", "log_tag", "esup"),
    ("hard-stop-after 30s", "hard_stop_after", 30000),
    ("hard-stop-after 1500us", "hard_stop_after", 2),
    ("tune.bufsize 32768", "bufsize", 32768),
    ("tune.bufsize 64k", "bufsize", 65536),
    ("spread-checks 5", "spread_checks", 5),
    ("spread-checks 50", "spread_checks", 50),
    ("max-spread-checks 2s", "max_spread_checks", 2000),
]


@pytest.mark.parametrize(("line", "field", "value"), GLOBAL_VALUES)
def test_global_keywords(tmp_path: Path, line: str, field: str, value: Any) -> None:
    config = parse_ok(tmp_path, f"global\n    {line}\n")
    assert getattr(config.global_, field) == value


def test_global_defaults(tmp_path: Path) -> None:
    g = parse_ok(tmp_path, "global\n").global_
    assert (g.daemon, g.maxconn, g.nbthread, g.bufsize, g.log_tag, g.logs) == (False, None, None, 16384,
                                                                              "balancier", ())


def test_global_may_repeat(tmp_path: Path) -> None:
    g = parse_ok(tmp_path, "global\n    maxconn 10\nglobal\n    maxconn 20\n    daemon\n").global_
    assert (g.maxconn, g.daemon) == (20, True)


W = Where("PATH", 2)
LOGS: list[tuple[str, LogTarget]] = [
    ("111.112.113.114 local3", LogTarget("udp", 19, "111.112.113.114", 514, where=W)),
    ("127.0.0.1:5140 local0 info", LogTarget("udp", 16, "127.0.0.1", 5140, level=6, where=W)),
    ("127.0.0.1 len 4096 daemon notice err", LogTarget("udp", 3, "127.0.0.1", 514, level=5, minlevel=3,
                                                       maxlen=4096, where=W)),
    ("ipv4@127.0.0.2:515 local7", LogTarget("udp", 23, "127.0.0.2", 515, where=W)),
    ("udp@127.0.0.2 kern", LogTarget("udp", 0, "127.0.0.2", 514, where=W)),
    ("[::1]:5140 user", LogTarget("udp", 1, "::1", 5140, where=W)),
    ("ipv6@[::1] user", LogTarget("udp", 1, "::1", 514, where=W)),
    ("app.example local1", LogTarget("udp", 17, "10.1.2.3", 514, where=W)),
    ("stdout local0", LogTarget("stdout", 16, where=W)),
    ("stderr len 80 local0 debug", LogTarget("stderr", 16, level=7, maxlen=80, where=W)),
]


@pytest.mark.parametrize(("args", "target"), LOGS)
def test_log_targets(tmp_path: Path, args: str, target: LogTarget) -> None:
    config = parse_ok(tmp_path, f"global\n    log {args}\n")
    expected = LogTarget(**{**target.__dict__, "where": Where(str(tmp_path / "x.cfg"), 2)})
    assert config.global_.logs == (expected,)


def test_log_lines_add_up_and_no_log_clears(tmp_path: Path) -> None:
    g = parse_ok(tmp_path, "global\n    log 127.0.0.1 local0\n    log stdout local1\n").global_
    assert [t.kind for t in g.logs] == ["udp", "stdout"]
    g = parse_ok(tmp_path, "global\n    log 127.0.0.1 local0\n    no log\n").global_
    assert g.logs == ()


GLOBAL_ERRORS = [
    ("nbthread 0", "'nbthread' value must be between 1 and 64 (was 0)"),  # HAProxy 2.6 wording
    ("nbthread 65", "'nbthread' value must be between 1 and 64 (was 65)"),
    ("spread-checks 60", "'spread-checks' needs a positive value in range 0..50."),
    ("maxconn abc", "'maxconn' expects an integer argument (got 'abc')."),
    ("maxconn -1", "'maxconn' expects an integer argument (got '-1')."),
    ("uid 1e3", "'uid' expects an integer argument (got '1e3')."),
    ("tune.bufsize 0", "'tune.bufsize' expects a positive size argument (got '0')."),
    ("tune.bufsize 1.5k", "'tune.bufsize' expects a positive size argument (got '1.5k')."),
    ("hard-stop-after 5x", "unexpected character 'x' in 'hard-stop-after'"),
    ("daemon now", "'daemon' cannot handle unexpected argument 'now'."),
    ("chroot", "'chroot' expects an argument."),
    ("log-tag a b", "'log-tag' cannot handle unexpected argument 'b'."),
    ("log 1.2.3.4 local9", "log : unknown log facility 'local9'"),
    ("log 1.2.3.4 local0 foo", "log : unknown optional log level 'foo'"),
    ("log 1.2.3.4 local0 info bar", "log : unknown optional minimum log level 'bar'"),
    ("log 1.2.3.4 len 10 local0", "log : invalid log length '10', must be between 80 and 65535"),
    ("log 1.2.3.4", "log : missing facility"),
    ("log 1.2.3.4:99999 local0", "log : invalid port '99999' in '1.2.3.4:99999'"),
    ("log /dev/log local0", "log : UNIX socket path '/dev/log' is not supported (not implemented by balancier)"),
    ("log ring@buf local0", "log : address family 'ring@' in 'ring@buf' is not supported (not implemented by "
                            "balancier)"),
    ("log tcp@1.2.3.4:514 local0", "log : TCP log targets such as 'tcp@1.2.3.4:514' are not supported (not "
                                   "implemented by balancier)"),
    ("log nowhere.invalid local0", "log : could not resolve address 'nowhere.invalid'"),
    ("log 1.2.3.4 format rfc5424 local0", "unsupported keyword 'log ... format' (not implemented by balancier)"),
    ("log global", "'log global' is only valid in a 'defaults', 'frontend', 'backend' or 'listen' section."),
    ("stats socket /run/b.sock level root", "'stats socket' option 'level' expects 'user', 'operator' or 'admin' "
                                            "(got 'root')."),
    ("stats socket /run/b.sock expose-fd listeners", "unsupported option 'expose-fd' on 'stats socket' (not "
                                                     "implemented by balancier; supported: mode, level)"),
    ("stats socket abns@x", "unsupported address family in 'stats socket abns@x' (use a path or ipv4@host:port)"),
    ("stats bind-process 1", "unsupported keyword 'stats bind-process' in section 'global' (not implemented by "
                             "balancier)"),
    ("nbproc 2", "unsupported keyword 'nbproc' in section 'global' (not implemented by balancier)"),
    ("maxconnn 10", "unknown keyword 'maxconnn' in 'global' section; did you mean 'maxconn'?"),
    ("deamon", "unknown keyword 'deamon' in 'global' section; did you mean 'daemon'?"),
    ("frobnicate", "unknown keyword 'frobnicate' in 'global' section"),
    ("no daemon", "negation/default currently supported only for options, log, busy-polling, set-dumpable, "
                  "strict-limits, insecure-fork-wanted and numa-cpu-mapping."),
]


def test_stats_sockets(tmp_path: Path) -> None:
    from balancier.proxy.config import load
    from balancier.proxy.config.model import StatsSocket, Where

    path = tmp_path / "x.cfg"
    path.write_text("global\n    stats socket /run/b.sock mode 660 level admin\n"
                    "    stats socket ipv4@127.0.0.1:9999\n    stats timeout 5s\n    stats maxconn 3\n")
    config, _ = load([str(path)])
    assert config.global_.stats_sockets == (
        StatsSocket("/run/b.sock", 0o660, "admin", Where(str(path), 2)),
        StatsSocket("127.0.0.1:9999", None, "operator", Where(str(path), 3)),
    )
    assert (config.global_.stats_timeout, config.global_.stats_maxconn) == (5000, 3)


@pytest.mark.parametrize(("line", "message"), GLOBAL_ERRORS)
def test_global_errors(tmp_path: Path, line: str, message: str) -> None:
    assert errors(tmp_path, f"global\n    {line}\n") == [f"alert x.cfg:2: {message}"]


def test_real_resolver_for_localhost(tmp_path: Path) -> None:
    # /etc/hosts answers for localhost: no DNS traffic.
    from balancier.proxy.config import load

    path = tmp_path / "x.cfg"
    path.write_text("global\n    log localhost:5140 local0\n")
    config, _ = load([str(path)], {})
    assert config.global_.logs[0].host in ("127.0.0.1", "::1")


def test_environment_keywords_change_later_lines(tmp_path: Path) -> None:
    text = ('global\n    setenv TAG first\n    presetenv TAG ignored\n    presetenv PORT 8080\n'
            '    log-tag "$TAG-$PORT"\n    unsetenv TAG\n    maxconn "${TAG-77}"\n'
            '    resetenv PORT\n    pidfile "/run/${HOME-nohome}.pid"\n')
    g = parse_ok(tmp_path, text, env={"HOME": "root", "PORT": "9"}).global_
    assert (g.log_tag, g.maxconn, g.pidfile) == ("first-9", 77, "/run/nohome.pid")


@pytest.mark.parametrize(("line", "message"), [
    ("setenv A", "'setenv' expects exactly 2 arguments (got 1)."),
    ("unsetenv", "'unsetenv' expects at least one variable name."),
    ("setenv 1A x", "'setenv' : invalid environment variable name '1A'."),
])
def test_environment_keyword_errors(tmp_path: Path, line: str, message: str) -> None:
    assert errors(tmp_path, f"global\n    {line}\n") == [f"alert x.cfg:2: {message}"]
