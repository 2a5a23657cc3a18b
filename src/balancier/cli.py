"""Command-line parsing only: each command hands its parsed arguments to the package that does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _proxy_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proxy",
        help="run the HTTP/TCP reverse proxy (HAProxy configuration language)",
        description="Run the data plane. Flags follow haproxy's: -f, -c, -d, -D, -p, -W, -sf/-st.",
    )
    p.add_argument("-f", dest="files", action="append", required=True, metavar="FILE",
                   help="configuration file or directory (*.cfg); may be repeated")
    p.add_argument("-c", dest="check", action="store_true",
                   help="check the configuration only: exit 0 valid, 1 invalid, 2 valid but no listener")
    p.add_argument("-q", dest="quiet", action="store_true", help="quiet: print nothing on success with -c")
    p.add_argument("-d", dest="debug", action="store_true", help="foreground, debug output on stderr")
    p.add_argument("-db", dest="foreground", action="store_true", help="foreground, even if the config says daemon")
    p.add_argument("-D", dest="daemon", action="store_true", help="run in the background (daemon)")
    p.add_argument("-p", dest="pidfile", metavar="PIDFILE", help="write the pid(s) to this file")
    p.add_argument("-W", dest="master_worker", action="store_true", help="master-worker mode")
    p.add_argument("-j", "--workers", dest="workers", type=int, metavar="N", help="number of worker processes")
    p.add_argument("-sf", dest="soft_finish", nargs="+", type=int, metavar="PID", default=[],
                   help="after start-up, ask these pids to finish softly (SIGUSR1)")
    p.add_argument("-st", dest="hard_terminate", nargs="+", type=int, metavar="PID", default=[],
                   help="after start-up, terminate these pids (SIGTERM)")


def _cluster_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="run or check the cluster manager (control plane)")
    csub = p.add_subparsers(dest="cluster_command", required=True)
    check = csub.add_parser("check", help="validate a cluster configuration file")
    check.add_argument("-c", "--config", required=True, metavar="FILE")
    run = csub.add_parser("run", help="run the cluster daemon of this node")
    run.add_argument("-c", "--config", required=True, metavar="FILE")
    run.add_argument("--node", metavar="NAME", help="this node's name (default: the host name)")
    run.add_argument("--state-dir", metavar="DIR", help="where the CIB and boot generation are kept")
    run.add_argument("-d", "--debug", action="store_true", help="debug logging")


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the reference deployment on this machine (loopback, no root)")
    p.add_argument("--base-port", type=int, default=18000, help="first loopback port used by the demo")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--self-test", action="store_true",
                   help="start everything, send requests through the proxy, print what answered, stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balancier", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _proxy_parser(sub)
    _cluster_parser(sub)
    _demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from balancier import __version__

        print(f"balancier {__version__}")
        return 0
    if args.command == "proxy":
        from balancier.proxy.main import run as run_proxy

        return run_proxy(args)
    if args.command == "cluster":
        from balancier.cluster.main import run as run_cluster

        return run_cluster(args)
    if args.command == "demo":
        from balancier.demo import run as run_demo

        return run_demo(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
