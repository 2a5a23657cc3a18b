"""Helpers for the configuration tests: write a config to a temp file, load it, render diagnostics.

Host names resolve through a fixed table (no DNS traffic from unit tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from balancier.proxy.config import ConfigError, load
from balancier.proxy.config.model import Config, Diagnostic, Proxy

FAKE_HOSTS = {"app.example": "10.1.2.3", "v6.example": "2001:db8::7"}

# A defaults section that silences the "missing timeouts" warning, for tests about other things.
HTTP_DEFAULTS = """defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


def fake_resolve(host: str) -> str | None:
    return FAKE_HOSTS.get(host)


def render(d: Diagnostic) -> str:
    """``level file:line: message`` with directories left out (also inside the message), for stable tables."""
    if d.where is None:
        return f"{d.level} {d.message}"
    folder = os.path.dirname(d.where.file) + os.sep
    message = d.message.replace(folder, "") if folder != os.sep else d.message
    return f"{d.level} {os.path.basename(d.where.file)}:{d.where.line}: {message}"


def parse(tmp_path: Path, text: str, env: Mapping[str, str] | None = None,
          name: str = "x.cfg") -> tuple[Config | None, list[str]]:
    """Load ``text``; returns (config or None when invalid, rendered diagnostics)."""
    path = tmp_path / name
    path.write_text(text)
    try:
        config, diags = load([str(path)], env or {}, resolve=fake_resolve)
    except ConfigError as exc:
        return None, [render(d) for d in exc.diagnostics]
    return config, [render(d) for d in diags]


def parse_ok(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    config, diags = parse(tmp_path, text, env)
    assert config is not None, diags
    return config


def one_proxy(tmp_path: Path, body: str, section: str = "backend b", defaults: str = HTTP_DEFAULTS) -> Proxy:
    """Load HTTP defaults + one section made of ``body`` lines; return that proxy (asserting validity)."""
    text = defaults + section + "\n" + "".join(f"    {line}\n" for line in body.strip("\n").split("\n"))
    config = parse_ok(tmp_path, text)
    return config.proxies[-1]


def errors(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[str]:
    config, diags = parse(tmp_path, text, env)
    assert config is None, f"expected an invalid configuration, got warnings {diags}"
    return [d for d in diags if d.startswith("alert ")]
