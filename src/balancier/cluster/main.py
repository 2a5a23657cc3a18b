"""``balancier cluster check|run``: load the configuration, then check it or run this node's daemon.

Exit codes: 0 = valid / clean shutdown, 1 = invalid configuration or refused start (bad key file
permissions, node not in the configuration, unusable state directory, ICMP not permitted).
Log lines are structured (logfmt) on stderr: ``ts=... level=... node=... component=... msg="..."``
followed by the event's own fields, one line per state change.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from balancier.cluster.config import ClusterConfig, ConfigError, load
from balancier.cluster.ping import check_icmp, parse_target

DEFAULT_STATE_DIR = "/var/lib/balancier"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_.:/@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LogfmtFormatter(logging.Formatter):
    """One line per record: ts, level, node, component, msg, then the record's extra fields."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        fields = [f"ts={ts}", f"level={record.levelname.lower()}", f"node={_quote(self.node)}",
                  f"component={_quote(getattr(record, 'component', 'cluster'))}",
                  f"msg={_quote(record.getMessage())}"]
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "component":
                fields.append(f"{key}={_quote(value)}")
        if record.exc_info:
            fields.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(fields)


def summary(cfg: ClusterConfig) -> str:
    return f"configuration valid: {len(cfg.nodes)} nodes, {len(cfg.configuration.resources)} resources"


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    print(summary(cfg))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    me = args.node or socket.gethostname()
    if me not in cfg.node_names:
        print(f"{args.config}: current node [{me}] not in configuration (nodes: {', '.join(cfg.node_names)}); "
              f"use --node NAME", file=sys.stderr)
        return 1
    if any(parse_target(t)[1] is None for t in cfg.ping):
        problem = check_icmp()
        if problem:
            print(f"{args.config}: cluster.ping: {problem}", file=sys.stderr)
            return 1
    state_dir = Path(args.state_dir or DEFAULT_STATE_DIR)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(state_dir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        print(f"state directory {state_dir}: {exc.strerror}", file=sys.stderr)
        return 1

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(me))
    root = logging.getLogger("balancier")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    root.propagate = False

    from balancier.cluster.daemon import Daemon

    async def main() -> None:
        await Daemon(cfg, me, state_dir).run()

    try:
        import uvloop  # the event loop of the whole project (DESIGN.md); plain asyncio otherwise

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(main())
    except OSError as exc:  # e.g. the address is not ours or the port is taken
        logging.getLogger("balancier.cluster").error("cannot run: %s", exc, extra={"component": "daemon"})
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cluster_command == "check":
        return _check(args)
    if args.cluster_command == "lsb-check":  # one violation per line, exit 1 when there is any
        from balancier.cluster.agents.runner import main as runner_main

        return runner_main(["--lsb-check", args.name, "--init-dir", args.init_dir, "--timeout", str(args.timeout)])
    return _run(args)
