"""`reconciler drift`: the plan plus policy findings, for schedulers. Exit 0 clean, 2 drift or
findings, 1 error: a plan the safety rails refuse (the file would lock the admin out, or
delete more than max_delete_percent) is an error here as in `plan`, since apply can't fix it.

With --denials the report of what the servers refused follows; denials the file did not intend
(failed AUTH of a declared user, a denial a change caused) count as drift too."""

from __future__ import annotations

import argparse
import json
import sys

from ..denials import since as window
from ..errors import ReconcilerError
from ..manager import Manager
from ..render import Budget, budget_from_args, headline, render
from ..render import denials as denials_render
from ..render.terminal import use_color
from ..selection import Shard
from .plan import report_refusals


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "denials", False) and (getattr(args, "since", None) or getattr(args, "audit_log", None)):
        raise ReconcilerError("--since and --audit-log go with --denials")
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    shard = Shard.parse(args.shard) if args.shard else None
    plan = manager.drift(args.instance, shard)
    report = None
    if getattr(args, "denials", False):
        since = window.parse(args.since) if args.since else None
        report = manager.denials(args.instance, shard, since=since, audit_log=args.audit_log)
    drifted = plan.has_changes or bool(plan.findings) or bool(report and report.unintended)
    # A log that could not be read is no evidence of no denials: an error, in the exit code and
    # in the JSON a dashboard reads, never "clean".
    unread = report.errors if report is not None else ()
    code = 1 if plan.refused or unread else 2 if drifted else 0
    budget = budget_from_args(args)
    if args.format == "json":
        doc = plan.to_json()
        kinds: dict[str, int] = {}
        for f in plan.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        doc["drift"] = {
            "status": "drift" if drifted else "error" if unread else "clean",
            "exit_code": code,
            "changes": plan.has_changes,
            "findings": len(plan.findings),
            "kinds": kinds,
        }
        if report is not None:
            doc["denials"] = report.to_json()
            doc["drift"]["unintended_denials"] = len(report.unintended)
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        title = "reconciler drift: " + (
            headline(plan) if drifted else f"no changes; {len(unread)} ACL LOG{'s' if len(unread) != 1 else ''} not read" if unread else "clean"
        )
        if report is not None and report.unintended:
            n = len(report.unintended)
            title += f"; {n} unintended denial{'s' if n != 1 else ''}"
        color = args.format == "text" and use_color(args, sys.stdout)
        extra = ""
        if report is not None:
            # The denials take what they need of the comment budget (at most half); the plan the rest.
            half = Budget(max_chars=budget.max_chars // 2, full_plan=budget.full_plan)
            extra = denials_render.render(report, args.format, color=color, budget=half)
            budget = Budget(max_chars=budget.max_chars - len(extra) - 1, full_plan=budget.full_plan)
        sys.stdout.write(render(plan, args.format, color=color, title=title, budget=budget))
        if extra:
            sys.stdout.write("\n" + extra)
    report_refusals(plan)
    for error in unread:
        print(f"reconciler: {denials_render.inert(error)}", file=sys.stderr)
    return code
