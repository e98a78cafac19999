"""`reconciler plan`: read live state, print the ordered changes, optionally save them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .. import saved
from ..errors import ReconcilerError
from ..manager import Manager, Shard, unpersisted
from ..plan import Plan, only_changes
from ..render import budget_from_args, headline, render
from ..render.terminal import use_color


def targeted(plan: Plan, users: list[str] | None, manager: Manager) -> Plan:
    """`--target USER`: only these users' changes and findings (config changes are left out)."""
    if not users:
        return plan
    declared = set(manager.desired.users)
    live = {c.user for i in plan.instances for n in i.nodes for c in n.changes} | {
        f.user for f in plan.findings if f.user
    }
    unknown = [u for u in users if u not in declared and u not in live]
    if unknown:
        raise ReconcilerError(
            f"--target: {', '.join(unknown)} is neither declared in {manager.desired.source} nor in the plan"
        )
    wanted = set(users)
    return only_changes(plan, lambda _inst, user: user in wanted, config=False)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "target", None) and args.out:
        # A saved plan is applied only while a fresh whole plan still equals it; a subset never would.
        raise ReconcilerError("--target is for review; --out saves whole plans only (drop one of them)")
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    state = manager.read(args.instance, Shard.parse(args.shard) if args.shard else None)
    plan = targeted(manager.plan(state), getattr(args, "target", None), manager)
    title = f"reconciler plan: {headline(plan)}" if args.format == "markdown" else ""
    budget = budget_from_args(args, out=args.out)
    sys.stdout.write(render(plan, args.format, color=use_color(args, sys.stdout), title=title, budget=budget))
    if args.out:
        # Bound to the file it was made from: apply re-plans from it and refuses on any difference.
        saved.write(args.out, replace(plan, source_sha256=saved.file_digest(args.file)))
        print(f"reconciler: plan saved to {args.out}; apply it with `reconciler apply {args.out}`", file=sys.stderr)
    for warning in unpersisted(plan):
        print(f"reconciler: warning: {warning}", file=sys.stderr)
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return 0
