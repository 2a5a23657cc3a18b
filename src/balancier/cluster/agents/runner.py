"""Run one operation of any agent by hand, through the executor, as the cluster would.

`python3 -m balancier.cluster.agents.runner AGENT OP [-p NAME=VALUE]... [--id ID] [--timeout MS]
[--interval MS] [--ocf-root DIR] [--init-dir DIR]` prints the operation's result as one JSON object
(the OpResult the executor would report) and exits with its rc. AGENT is `balancier:vip`,
`ocf:heartbeat:IPaddr2`, `lsb:stunnel4`, ...; OP is start, stop, monitor, probe, reload, validate or
meta-data.

Rules: this is a debugging and testing tool (like Pacemaker's `crm_resource --force-start`): it runs
the operation on this host, right now, without asking the cluster. `--lsb-check NAME` runs the LSB
compliance checklist instead and prints one violation per line (exit 1 when there is any).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from balancier.cluster.agents.base import AgentResult
from balancier.cluster.agents.registry import agent_for
from balancier.cluster.executor import Executor
from balancier.cluster.model import OpResult, ResourceConfig


async def run_one(resource: ResourceConfig, op: str, timeout_ms: int, interval_ms: int, ocf_root: str,
                  init_dir: str, node: str = "local") -> OpResult:
    executor = Executor(node, agent_factory=lambda r: agent_for(r, ocf_root, node=node, init_dir=init_dir))
    if op in ("validate", "meta-data"):
        agent = executor.agent(resource)
        answer: AgentResult = await agent.run(op, timeout_ms)
        return OpResult(resource=resource.id, node=node, op=op, rc=answer.rc, output=answer.output
                        + (f"\nocf-exit-reason:{answer.exit_reason}" if answer.exit_reason else ""))
    result = await executor.run(resource, op, timeout_ms, interval_ms if op == "monitor" else 0)
    wait = getattr(executor.agent(resource), "wait_announced", None)
    if wait is not None:
        await wait()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m balancier.cluster.agents.runner", description=__doc__)
    p.add_argument("agent", nargs="?")
    p.add_argument("op", nargs="?")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--id", default="manual")
    p.add_argument("--timeout", type=int, default=20_000, metavar="MS")
    p.add_argument("--interval", type=int, default=0, metavar="MS")
    p.add_argument("--ocf-root", default="/usr/lib/ocf")
    p.add_argument("--init-dir", default="/etc/init.d")
    p.add_argument("--lsb-check", metavar="NAME", help="check an init script against the LSB checklist")
    args = p.parse_args(argv)
    if args.lsb_check:
        from balancier.cluster.agents.lsb_check import lsb_compliance

        problems = lsb_compliance(args.lsb_check, args.init_dir, args.timeout)
        for line in problems:
            print(line)
        if not problems:
            print(f"{args.lsb_check}: LSB compliant")
        return 1 if problems else 0
    if not args.agent or not args.op:
        p.error("AGENT and OP are required")
    params = []
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            p.error(f"-p {item!r}: expected NAME=VALUE")
        params.append((name, value))
    resource = ResourceConfig(id=args.id, agent=args.agent, params=tuple(params))
    result = asyncio.run(run_one(resource, args.op, args.timeout, args.interval, args.ocf_root, args.init_dir))
    json.dump(result.to_dict(), sys.stdout)
    sys.stdout.write("\n")
    return result.rc if 0 <= result.rc < 256 else 1


if __name__ == "__main__":
    raise SystemExit(main())
