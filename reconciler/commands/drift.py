"""`reconciler drift`: the plan plus policy findings, for schedulers. Exit 0 clean, 2 drift or findings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..manager import Manager
from ..plan import Finding, Plan
from ..planner import _dedupe
from ..render import budget_from_args, headline, render
from ..render.terminal import use_color


def with_unmanaged_tokens(plan: Plan) -> Plan:
    """Name each live password the file doesn't declare as an `unmanaged_token` finding.

    The plan already removes them (`token - sha256:… not in file`); drift also reports them as
    findings so schedulers can count them by kind. Kept out of `plan`, where a token just
    deleted from the file during a rotation would otherwise be reported twice.
    """
    instances = []
    for inst in plan.instances:
        extra = [
            Finding(
                "unmanaged_token",
                f"user {c.user} has a token that is not in the file (sha256:{t.prefix}…); apply removes it",
                inst.name,
                node.address,
                user=c.user,
            )
            for node in inst.nodes
            for c in node.changes
            for t in c.tokens
            if t.action == "remove" and t.token_id is None
        ]
        instances.append(dataclasses.replace(inst, findings=inst.findings + tuple(_dedupe(extra, len(inst.nodes)))))
    return dataclasses.replace(plan, instances=tuple(instances))


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file)
    plan = with_unmanaged_tokens(manager.plan(manager.read(args.instance)))
    drifted = plan.has_changes or bool(plan.findings)
    if args.format == "json":
        doc = plan.to_json()
        kinds: dict[str, int] = {}
        for f in plan.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        doc["drift"] = {
            "status": "drift" if drifted else "clean",
            "exit_code": 2 if drifted else 0,
            "changes": plan.has_changes,
            "findings": len(plan.findings),
            "kinds": kinds,
        }
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        title = "reconciler drift: " + (headline(plan) if drifted else "clean")
        color = args.format == "text" and use_color(args, sys.stdout)
        sys.stdout.write(render(plan, args.format, color=color, title=title, budget=budget_from_args(args)))
    return 2 if drifted else 0
