"""`reconciler rotate`: for each token entry with `rotate:` that is due, a new token in the one
order with no failed login (rotation.py), each server-changing step through the same rails,
prompt, lock, audit and verify as `apply -f` (the Manager's pipeline).

    rotate -f FILE [--user U] [--instance N] [--dry-run] [--force] [--auto-approve] [--audit-log PATH]

Exit 0: rotated, or nothing due (the next due dates are said); 1: an error, a refusal, a step
that stopped (a re-run converges); 2: --dry-run found something to rotate.
"""

from __future__ import annotations

import argparse

from ..clock import now_utc
from ..manager import Manager
from ..pipeline import Options
from ..rotator import Request
from . import apply


def run(args: argparse.Namespace) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    request = Request(users=args.user, instances=args.instance, dry_run=args.dry_run, force=args.force, now=now_utc())
    # --force here is about min_overlap_hours; the delete threshold never applies to a rotation's removals
    return manager.rotate(request, apply.console(args), Options(audit_log=args.audit_log))
