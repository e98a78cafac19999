"""`reconciler drift`: the plan plus policy findings, for schedulers. Exit 0 clean, 2 drift or findings."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..manager import Manager
from ..render import render


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file)
    plan = manager.plan(manager.read(args.instance))
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
        title = "reconciler drift: " + ("drift or findings" if drifted else "clean")
        color = args.format == "text" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        sys.stdout.write(render(plan, args.format, color=color, title=title))
    return 2 if drifted else 0
