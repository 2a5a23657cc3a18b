"""The HAProxy configuration language: files in, frozen :mod:`model` objects and diagnostics out.

Rules:
- :func:`load` reads files and directories (``*.cfg``, C-locale order, no dotfiles), returns the model and the
  warnings, and raises :class:`ConfigError` (carrying every diagnostic) when at least one alert was found.
- :func:`run_check` is ``balancier proxy -c``: one line per diagnostic, ``[WARNING] file:line: message`` or
  ``[ALERT] file:line: message``, then HAProxy's closing words, and HAProxy's exit codes (0 valid, 1 invalid,
  2 valid but no listener).
- Diagnostics are in file/line order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

from balancier.proxy.config.addresses import Resolver, system_resolver
from balancier.proxy.config.diagnostics import Report
from balancier.proxy.config.model import *  # noqa: F403  (the model is part of this package's API)
from balancier.proxy.config.model import Config, Diagnostic
from balancier.proxy.config.parser import parse_files


class ConfigError(Exception):
    """At least one alert (fatal error) was found; ``diagnostics`` holds all alerts and warnings in order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        alerts = [d for d in diagnostics if d.level == "alert"]
        first = format_diagnostic(alerts[0]) if alerts else "invalid configuration"
        more = f" (and {len(alerts) - 1} more)" if len(alerts) > 1 else ""
        super().__init__(first + more)


def format_diagnostic(d: Diagnostic) -> str:
    """``[ALERT] file:line: message`` (the location is left out when there is none)."""
    where = f"{d.where}: " if d.where is not None else ""
    return f"[{d.level.upper()}] {where}{d.message}"


def load(
    paths: Sequence[str], env: Mapping[str, str] | None = None, *, resolve: Resolver | None = None
) -> tuple[Config, list[Diagnostic]]:
    """Parse the configuration. Returns (model, warnings and notices); raises ConfigError on any alert."""
    import os

    environment = dict(os.environ if env is None else env)
    report = Report()
    config = parse_files(paths, environment, resolve or system_resolver, report)
    diagnostics = report.sorted()
    if report.has_alerts:
        raise ConfigError(diagnostics)
    return config, diagnostics


def run_check(paths: Sequence[str], quiet: bool, out: TextIO, *, env: Mapping[str, str] | None = None,
              resolve: Resolver | None = None) -> int:
    """Check the configuration like ``haproxy -c``; returns the exit code."""
    try:
        config, diagnostics = load(paths, env, resolve=resolve)
    except ConfigError as exc:
        for d in exc.diagnostics:
            out.write(format_diagnostic(d) + "\n")
        out.write("Fatal errors found in configuration.\n")
        return 1
    for d in diagnostics:
        out.write(format_diagnostic(d) + "\n")
    if not any(b for p in config.frontends for b in p.binds):
        out.write("Configuration file has no error but will not start (no listener) => exit(2).\n")
        return 2
    if not quiet:
        if diagnostics:
            out.write("Warnings were found.\n")
        out.write("Configuration file is valid\n")
    return 0
