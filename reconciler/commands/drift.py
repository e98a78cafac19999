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
        doc["drift"] = {"changes": plan.has_changes, "findings": len(plan.findings), "exit_code": 2 if drifted else 0}
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        title = "reconciler drift: " + ("drift or findings" if drifted else "clean")
        color = args.format == "text" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        sys.stdout.write(render(plan, args.format, color=color, title=title))
    return 2 if drifted else 0
