"""`reconciler denials`: what the servers refused (ACL LOG of every node), per user, reason and
object, tied to the changes that caused it. Exit 0 no denials, 2 denials found, 1 error."""

from __future__ import annotations

import argparse
import sys

from ..denials import since as window
from ..manager import Manager
from ..render import budget_from_args
from ..render.denials import inert, render
from ..render.terminal import use_color
from ..selection import Shard


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    report = manager.denials(
        args.instance,
        Shard.parse(args.shard) if args.shard else None,
        since=window.parse(args.since) if args.since else None,
        audit_log=args.audit_log,
    )
    color = args.format == "text" and use_color(args, sys.stdout)
    sys.stdout.write(render(report, args.format, color=color, budget=budget_from_args(args)))
    for error in report.errors:
        print(f"reconciler: {inert(error)}", file=sys.stderr)
    if report.errors:
        return 1
    return 2 if report.has_denials else 0
