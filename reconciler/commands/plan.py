"""`reconciler plan`: read live state, print the ordered changes, optionally save them.

The plan is judged by the same safety rails as apply: a plan apply would refuse is printed
whole, each refusal is an error line on stderr, and the exit code is 1 (a saved plan is
not written), so a pull request shows the refusal before anyone runs apply.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .. import saved
from ..errors import ReconcilerError
from ..manager import Manager
from ..pipeline import unpersisted
from ..plan import Plan
from ..render import budget_from_args, headline, refusal_lines, render
from ..render.terminal import use_color
from ..selection import Shard


def report_refusals(plan: Plan) -> None:
    """One error line per refusal (stderr), and a warning per refusal --force lifted."""
    for line in refusal_lines(plan, "error: apply would refuse this plan"):
        print(f"reconciler: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "target", None) and args.out:
        # A saved plan is applied only while a fresh whole plan still equals it; a subset never would.
        raise ReconcilerError("--target is for review; --out saves whole plans only (drop one of them)")
    if args.out:
        saved.check_destination(args.out, args.file)
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    state = manager.read(args.instance, Shard.parse(args.shard) if args.shard else None)
    plan = manager.target(manager.plan(state), getattr(args, "target", None))
    # The rails judge what apply would execute: the targeted subset when --target is given.
    plan = manager.check(plan, state, force=args.force)
    title = f"reconciler plan: {headline(plan)}" if args.format == "markdown" else ""
    budget = budget_from_args(args, out=args.out)
    sys.stdout.write(render(plan, args.format, color=use_color(args, sys.stdout), title=title, budget=budget))
    report_refusals(plan)
    if args.out and plan.refused:
        print(f"reconciler: plan not saved to {args.out}: apply would refuse it", file=sys.stderr)
    elif args.out:
        # Bound to the file it was made from: apply re-plans from it and refuses on any difference.
        saved.write(args.out, replace(plan, source_sha256=saved.file_digest(args.file)))
        # Apply judges the plan again: what --force allowed here needs --force there too.
        force = " --force" if any(r.waived for r in plan.refusals) else ""
        print(f"reconciler: plan saved to {args.out}; apply it with `reconciler apply {args.out}{force}`", file=sys.stderr)
    for warning in unpersisted(plan):
        print(f"reconciler: warning: {warning}", file=sys.stderr)
    if plan.refused:
        return 1
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return 0
