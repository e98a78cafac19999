"""`reconciler plan`: read live state, print the ordered changes, optionally save them."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from .. import saved
from ..manager import Manager, warn_unpersisted
from ..render import render


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file)
    state = manager.read(args.instance)
    plan = manager.plan(state)
    sys.stdout.write(render(plan, args.format, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    if args.out:
        # Bound to the file it was made from: apply re-plans from it and refuses on any difference.
        saved.write(args.out, replace(plan, source_sha256=saved.file_digest(args.file)))
        print(f"reconciler: plan saved to {args.out}; apply it with `reconciler apply {args.out}`", file=sys.stderr)
    warn_unpersisted(plan)
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return 0
