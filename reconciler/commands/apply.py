"""`reconciler apply`: plan (or load a saved plan), check the safety rails, ask, execute, verify.

    apply -f FILE [--target USER]... [--auto-approve] [--force] [--audit-log PATH]
    apply PLAN.json [--auto-approve] [--force] [--audit-log PATH]
    apply -f FILE --bootstrap [--bootstrap-secret-env VAR] [--auto-approve] [--force] [--audit-log PATH]

Nothing is written before every check has passed: the plan is complete (the planner raises
on rules a node can't express), the rails found nothing, a saved plan still matches every
node's live ACLs, and the operator said `yes` (or passed --auto-approve). The sequence itself
is the Manager's apply pipeline (pipeline.py; --bootstrap: bootstrap.py runs it in steps with
two logins); this module parses, asks and renders.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .. import saved
from ..errors import ReconcilerError
from ..manager import Manager
from ..pipeline import Console, Options
from ..plan import Plan
from ..render import render_text
from ..render.terminal import use_color

Prompt = Callable[[str], str]


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _confirm(args: argparse.Namespace, prompt: Prompt | None = None) -> bool:
    if args.auto_approve:
        return True
    if not sys.stdin.isatty():
        raise ReconcilerError("refusing to apply without a terminal to confirm on; pass --auto-approve")
    try:
        answer = (prompt or input)("\nDo you want to perform these actions? Only 'yes' will be accepted.\n  Enter a value: ")
    except EOFError:  # Ctrl-D, or the terminal went away: no answer is not a yes
        print(file=sys.stderr)
        return False
    return answer.strip() == "yes"


def _present(plan: Plan, args: argparse.Namespace | None = None, title: str = "") -> None:
    _out(render_text(plan, color=use_color(args, sys.stdout), title=title))


def console(args: argparse.Namespace, prompt: Prompt | None = None) -> Console:
    """The terminal as the apply pipeline sees it (also `rotate`'s)."""
    return Console(
        out=_out,
        err=lambda line: _err(f"reconciler: {line}"),
        present=lambda plan, title="": _present(plan, args, title),
        confirm=lambda plan: _confirm(args, prompt),
    )


def options(args: argparse.Namespace) -> Options:
    return Options(force=args.force, audit_log=args.audit_log)


def run_file(args: argparse.Namespace, prompt: Prompt | None = None) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    # `--target USER`: only that user's changes run now; the rails judge what runs.
    return manager.apply_file(args.instance, console(args, prompt), options(args), targets=args.target)


def run_saved(args: argparse.Namespace, prompt: Prompt | None = None) -> int:
    plan = saved.load(args.plan_file)
    source = args.file or plan.source
    if not plan.source_sha256:
        raise ReconcilerError(f"{args.plan_file} does not name the digest of the file it was made from; make a new plan")
    if saved.file_digest(source) != plan.source_sha256:
        _err(f"reconciler: {args.plan_file} is stale: {source} changed since the plan was made; make a new plan")
        _err("reconciler: nothing was changed")
        return 1
    manager = Manager.from_file(source, allow_exec=getattr(args, "allow_exec", False))
    audit_log = args.audit_log or manager.desired.audit_log
    if audit_log and saved.same_file(audit_log, args.plan_file):
        # Audit lines appended to the plan would leave neither a plan nor a log.
        raise ReconcilerError(f"audit log {audit_log} is the saved plan being applied; name another file (e.g. audit.jsonl); nothing was changed")
    return manager.apply_saved(plan, args.plan_file, args.instance, console(args, prompt), options(args))


def run(args: argparse.Namespace) -> int:
    if getattr(args, "bootstrap", False):
        if args.plan_file or not args.file:
            raise ReconcilerError("--bootstrap works with -f FILE, not with a saved plan")
        if args.target:
            raise ReconcilerError("--bootstrap applies the whole file (the admin first); drop --target")
        manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
        return manager.bootstrap(args.instance, console(args), options(args),
                                 default_secret_env=getattr(args, "bootstrap_secret_env", None))
    if args.plan_file:
        if args.target:
            raise ReconcilerError("--target works with -f FILE; a saved plan is applied whole")
        # With -f FILE as well, the file only supplies connection details and secrets.
        return run_saved(args)
    if not args.file:
        raise ReconcilerError("apply needs -f FILE or a saved PLAN.json")
    return run_file(args)
