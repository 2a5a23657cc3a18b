"""The same files checked by Debian's `haproxy -c` and by run_check: same verdict (exit code), same first
fatal line. No traffic: `haproxy -c` only parses. Skipped, with the reason, where haproxy is not installed.

The legacy seed is not here on purpose: HAProxy >= 2.1 rejects what balancier maps with warnings.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from balancier.proxy.config import run_check

from proxycfg_helpers import HTTP_DEFAULTS

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="Debian's haproxy is not installed (reference parser)")

DATA = Path(__file__).parent / "data"

CASES = {
    "modern-seed": "global\n  log 127.0.0.1 local3\n  maxconn 4096\n" + HTTP_DEFAULTS +
                   "  option httplog\n  option redispatch\nlisten esup-proxy\n  bind 127.0.0.1:17980\n"
                   "  cookie JSESSIONID prefix\n  option httpchk\n  option forwardfor except 127.0.0.9\n"
                   "  option httpclose\n  balance roundrobin\n"
                   "  server ents3 127.0.0.2:80 cookie s3 weight 256 check inter 5000 rise 1 fall 3\n"
                   "  server ent-maintenance 127.0.0.5:80 check backup\n",
    "no-listener": HTTP_DEFAULTS + "backend b\n  server s 127.0.0.1:80\n",
    "unknown-keyword": HTTP_DEFAULTS + "frontend f\n  bind 127.0.0.1:17985\n  frob\n  default_backend b\n"
                       "backend b\n  server s 127.0.0.1:80\n",
    "bad-weight": HTTP_DEFAULTS + "backend b\n  server s 127.0.0.1:80 weight 257\n",
    "timer-overflow": HTTP_DEFAULTS + "backend b\n  timeout server 25d\n",
    "missing-backend": HTTP_DEFAULTS + "frontend f\n  bind 127.0.0.1:17986\n  default_backend nope\n",
    "mode-mismatch": HTTP_DEFAULTS + "frontend f\n  bind 127.0.0.1:17987\n  default_backend b\n"
                     "backend b\n  mode tcp\n  server s 127.0.0.1:80\n",
    "duplicate-name": HTTP_DEFAULTS + "listen l\n  bind 127.0.0.1:17988\nlisten l\n  bind 127.0.0.1:17989\n",
    "unmatched-quote": "global\n  log-tag \"abc\n",
    "missing-lf": "global\n  daemon",
    "bind-in-defaults": "defaults\n  bind :80\n",
    "cookie-modes": HTTP_DEFAULTS + "backend b\n  cookie A insert rewrite\n",
    "capability-warnings": HTTP_DEFAULTS + "frontend f\n  bind 127.0.0.1:17990\n  balance roundrobin\n"
                           "  default_backend b\nbackend b\n  timeout client 1s\n  server s 127.0.0.1:80\n",
}


def _haproxy(path: Path) -> tuple[int, list[int]]:
    assert HAPROXY is not None
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=20)
    alert_lines = [int(m) for m in re.findall(r"\[ALERT\].*?\[[^\]]*:(\d+)\]", proc.stdout + proc.stderr)]
    return proc.returncode, alert_lines


def _balancier(path: Path) -> tuple[int, list[int]]:
    out = io.StringIO()
    code = run_check([str(path)], True, out)
    alert_lines = [int(m) for m in re.findall(r"^\[ALERT\] [^\n]*?:(\d+): ", out.getvalue(), re.M)]
    return code, alert_lines


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_verdict_as_haproxy(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.cfg"
    path.write_text(CASES[name])
    ref_code, ref_lines = _haproxy(path)
    code, lines = _balancier(path)
    assert code == ref_code, (ref_lines, lines)
    if ref_lines:
        assert lines and lines[0] == ref_lines[0]


def test_kitchen_sink_is_valid_for_both() -> None:
    assert _haproxy(DATA / "kitchen-sink.cfg")[0] == 0
    assert _balancier(DATA / "kitchen-sink.cfg") == (0, [])
