"""Command-line parsing only: each command hands its parsed arguments to the package that does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _proxy_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proxy",
        help="run the HTTP/TCP reverse proxy (HAProxy configuration language)",
        description="Run the data plane. Flags follow haproxy's: -f, -c, -d, -D, -p, -W, -S, -sf/-st. "
                    "'balancier proxy reload -S SOCK' (or -p PIDFILE) reloads a running master.",
    )
    p.add_argument("action", nargs="?", choices=["reload"],
                   help="reload: ask a running master (-S its socket, or -p its pidfile) to reload its configuration")
    p.add_argument("-f", dest="files", action="append", metavar="FILE",
                   help="configuration file or directory (*.cfg); may be repeated (required to run)")
    p.add_argument("-c", dest="check", action="store_true",
                   help="check the configuration only: exit 0 valid, 1 invalid, 2 valid but no listener")
    p.add_argument("-q", dest="quiet", action="store_true", help="quiet: print nothing on success with -c")
    p.add_argument("-d", dest="debug", action="store_true", help="foreground, debug output on stderr")
    p.add_argument("-db", dest="foreground", action="store_true", help="foreground, even if the config says daemon")
    p.add_argument("-D", dest="daemon", action="store_true", help="run in the background (daemon)")
    p.add_argument("-p", dest="pidfile", metavar="PIDFILE", help="write the pid(s) to this file")
    p.add_argument("-W", dest="master_worker", action="store_true", help="master-worker mode")
    p.add_argument("-j", "--workers", dest="workers", type=int, metavar="N",
                   help="number of worker processes (default: nbthread, else the number of available CPUs)")
    p.add_argument("-S", dest="master_socket", metavar="PATH",
                   help="master CLI socket (UNIX path): 'reload', 'show proc'")
    p.add_argument("-sf", dest="soft_finish", nargs="+", type=int, metavar="PID", default=[],
                   help="after start-up, ask these pids to finish softly (SIGUSR1)")
    p.add_argument("-st", dest="hard_terminate", nargs="+", type=int, metavar="PID", default=[],
                   help="after start-up, terminate these pids (SIGTERM)")


def _proxy_cli_parser(sub: argparse._SubParsersAction) -> None:
    from balancier.proxy_cli import add_arguments

    p = sub.add_parser("proxy-cli", help="send runtime API commands to a proxy's stats socket")
    add_arguments(p)


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
    lsb = csub.add_parser("lsb-check", help="check an init script against the LSB checklist the cluster relies on "
                                            "(status 3 when stopped, idempotent start and stop, ...)")
    lsb.add_argument("name", metavar="NAME", help="the script's name, as in lsb:NAME")
    lsb.add_argument("--init-dir", default="/etc/init.d", metavar="DIR")
    lsb.add_argument("--timeout", type=int, default=20_000, metavar="MS", help="per action (default 20000)")


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the reference deployment on this machine (loopback, no root)")
    p.add_argument("--base-port", type=int, default=18000, help="first loopback port used by the demo")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--self-test", action="store_true",
                   help="start everything, send requests through the proxy, print what answered, stop")
    from balancier.testbed.drill import add_demo_drill_arguments

    add_demo_drill_arguments(p)


def _drill_parser(sub: argparse._SubParsersAction) -> None:
    from balancier.testbed.drill import add_drill_parser

    add_drill_parser(sub)


def _connection_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", metavar="SOCKET", help="the daemon's admin socket "
                       "(default: /var/lib/balancier/admin.sock)")
    where.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (its admin.sock)")
    where.add_argument("--url", metavar="URL", help="the daemon's HTTP API, e.g. http://127.0.0.1:7080")
    p.add_argument("--token", metavar="TOKEN", help="API token for --url (default: $BALANCIER_TOKEN)")
    p.add_argument("--user", metavar="USER", help="with --url: send HTTP basic USER:TOKEN instead of a bearer token")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="give up after this long")


def _admin_parsers(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="show the cluster's status (crm_mon -1 style)")
    _connection_args(st)
    st.add_argument("--json", action="store_true", help="print the status document as JSON")
    st.add_argument("--watch", action="store_true", help="refresh until interrupted")
    st.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh interval with --watch")
    st.add_argument("--iterations", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes")

    res = sub.add_parser("resource", help="migrate, ban, clean up, start or stop a resource (through the DC)")
    rsub = res.add_subparsers(dest="resource_command", required=True)
    mig = rsub.add_parser("migrate", help="prefer NODE for RES (cli-prefer +INFINITY)")
    mig.add_argument("resource", metavar="RES")
    mig.add_argument("node", metavar="NODE")
    mig.add_argument("--lifetime", metavar="DURATION", help="ISO-8601 duration (PT1H) after which it expires")
    mig.add_argument("--force", action="store_true", help="even if RES already runs on NODE")
    unm = rsub.add_parser("unmigrate", help="remove RES's cli-prefer and cli-ban constraints")
    unm.add_argument("resource", metavar="RES")
    ban = rsub.add_parser("ban", help="forbid RES on NODE (default: where it runs now)")
    ban.add_argument("resource", metavar="RES")
    ban.add_argument("node", metavar="NODE", nargs="?")
    ban.add_argument("--lifetime", metavar="DURATION", help="ISO-8601 duration (PT1H) after which it expires")
    cln = rsub.add_parser("cleanup", help="forget RES's failures and history (on NODE), so it is probed again")
    cln.add_argument("resource", metavar="RES")
    cln.add_argument("node", metavar="NODE", nargs="?")
    for name, what in (("start", "target-role=Started"), ("stop", "target-role=Stopped")):
        one = rsub.add_parser(name, help=f"set {what} on RES")
        one.add_argument("resource", metavar="RES")
    for p in (mig, unm, ban, cln, *(rsub.choices[n] for n in ("start", "stop"))):
        _connection_args(p)

    node = sub.add_parser("node", help="put a node in standby or back online (through the DC)")
    nsub = node.add_subparsers(dest="node_command", required=True)
    for name, what in (("standby", "move every resource off NODE"), ("online", "let NODE run resources again")):
        one = nsub.add_parser(name, help=what)
        one.add_argument("node", metavar="NODE")
        if name == "standby":
            one.add_argument("--lifetime", choices=("forever", "reboot"), default=None,
                             help="forever (default) or until the node restarts")
        _connection_args(one)

    cib = sub.add_parser("cib", help="show or edit the CIB, or set a cluster option (through the DC)")
    csub = cib.add_subparsers(dest="cib_command", required=True)
    show = csub.add_parser("show", help="print the CIB as JSON")
    _connection_args(show)
    edit = csub.add_parser("edit", help="edit the CIB configuration as JSON in $VISUAL/$EDITOR (default vi), "
                           "then send it to the DC")
    _connection_args(edit)
    cset = csub.add_parser("set", help="set a cluster option, e.g. stickiness 100, no-quorum-policy freeze")
    cset.add_argument("key", metavar="KEY")
    cset.add_argument("value", metavar="VALUE")
    _connection_args(cset)

    chk = sub.add_parser("check-cluster", help="Nagios/Icinga check: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
    _connection_args(chk)
    chk.add_argument("--expect-nodes", type=int, default=None, metavar="N",
                     help="WARNING when fewer than N nodes are online (default: every configured node)")
    chk.add_argument("--ignore-failcount", action="store_true", help="fail counts above 0 are not a WARNING")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balancier", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _proxy_parser(sub)
    _proxy_cli_parser(sub)
    _cluster_parser(sub)
    _demo_parser(sub)
    _drill_parser(sub)
    _admin_parsers(sub)
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
    if args.command == "proxy-cli":
        from balancier.proxy_cli import run as run_proxy_cli

        return run_proxy_cli(args)
    if args.command == "cluster":
        from balancier.cluster.main import run as run_cluster

        return run_cluster(args)
    if args.command == "demo":
        from balancier.demo import run as run_demo

        return run_demo(args)
    if args.command == "drill":
        from balancier.testbed.drill import run_drill

        return run_drill(args)
    if args.command in ("status", "resource", "node", "cib", "check-cluster"):
        from balancier.cluster.admin import run as run_admin

        return run_admin(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
