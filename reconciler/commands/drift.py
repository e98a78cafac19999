"""`reconciler drift`: the plan plus policy findings, for schedulers. Exit 0 clean, 2 drift or
findings, 1 error: a plan the safety rails refuse (the file would lock the admin out, or
delete more than max_delete_percent) is an error here as in `plan`, since apply can't fix it."""

from __future__ import annotations

import argparse
import json
import sys

from ..manager import Manager, Shard
from ..render import budget_from_args, headline, render
from ..render.terminal import use_color
from .plan import report_refusals


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    shard = Shard.parse(args.shard) if args.shard else None
    plan = manager.drift(args.instance, shard)
    drifted = plan.has_changes or bool(plan.findings)
    code = 1 if plan.refused else 2 if drifted else 0
    if args.format == "json":
        doc = plan.to_json()
        kinds: dict[str, int] = {}
        for f in plan.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        doc["drift"] = {
            "status": "drift" if drifted else "clean",
            "exit_code": code,
            "changes": plan.has_changes,
            "findings": len(plan.findings),
            "kinds": kinds,
        }
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        title = "reconciler drift: " + (headline(plan) if drifted else "clean")
        color = args.format == "text" and use_color(args, sys.stdout)
        sys.stdout.write(render(plan, args.format, color=color, title=title, budget=budget_from_args(args)))
    report_refusals(plan)
    return code
