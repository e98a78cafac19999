"""`reconciler apply`: plan (or load a saved plan), check the safety rails, ask, execute, verify.

    apply -f FILE [--target USER]... [--auto-approve] [--force] [--audit-log PATH]
    apply PLAN.json [--auto-approve] [--force] [--audit-log PATH]

Nothing is written before every check has passed: the plan is complete (the planner raises
on rules a node can't express), the rails found nothing, a saved plan still matches every
node's live ACLs, and the operator said `yes` (or passed --auto-approve).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .. import interrupt, inventory, saved
from ..audit import AuditLog
from ..errors import ApplyError, ReconcilerError
from ..manager import Manager, unpersisted
from ..model import DesiredState
from ..plan import Plan, only_instances
from ..render import refusal_lines, render_text
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
    answer = (prompt or input)("\nDo you want to perform these actions? Only 'yes' will be accepted.\n  Enter a value: ")
    return answer.strip() == "yes"


def _audit(args: argparse.Namespace, desired: DesiredState, plan: Plan) -> AuditLog | None:
    path = args.audit_log or desired.audit_log
    if not path:
        return None
    try:
        return AuditLog(path, plan)
    except OSError as exc:
        raise ReconcilerError(f"audit log {path}: {exc.strerror or exc}") from None


def _warnings(lines: list[str]) -> None:
    for line in lines:
        _err(f"reconciler: warning: {line}")


def _execute(args: argparse.Namespace, plan: Plan, manager: Manager, what: str = "the plan") -> int:
    desired = manager.desired
    with manager.lock(plan):
        moved = manager.recheck(plan)
        if moved:
            for p in moved:
                _err(f"reconciler: refusing to apply: live state changed since {what} was made: {p}")
            _err("reconciler: nothing was changed; plan again")
            return 1
        audit = _audit(args, desired, plan)
        interrupt.DONE.expect(plan)
        try:
            with manager.interruptible() as interrupted:
                report = manager.apply(plan, audit=audit)
        except ApplyError as exc:
            if exc.report is not None:
                for line in exc.report.summary_lines():
                    _out(line)
                _warnings(exc.report.warnings)
            _err(f"reconciler: {exc}")
            return 130 if interrupted.is_set() else 1
        finally:
            if audit is not None:
                audit.close()
    for line in report.summary_lines():
        _out(line)
    _warnings(report.warnings + unpersisted(plan))
    manager.verify(plan)
    if any(i.inventory for i in plan.instances):
        path = inventory.record_inventory(desired.source, desired, [i.name for i in plan.instances])
        _out(f"Certificate inventory recorded in {path}")
    c = plan.counts()
    _out(f"\nApply complete: {c.add} added, {c.change} changed, {c.destroy} destroyed.")
    return 0


def _refuse(plan: Plan) -> int:
    for line in refusal_lines(plan, "refusing to apply"):
        _err(f"reconciler: {line}")
    if not plan.refused:
        return 0
    _err("reconciler: nothing was changed")
    return 1


def _present(plan: Plan, args: argparse.Namespace | None = None) -> None:
    _out(render_text(plan, color=use_color(args, sys.stdout)))


def run_file(args: argparse.Namespace, prompt: Prompt | None = None) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    state = manager.read(args.instance)
    # `--target USER`: only that user's changes run now; the rails judge what runs.
    plan = manager.check(manager.target(manager.plan(state), args.target), state, force=args.force)
    if not plan.has_changes:
        _present(plan, args)  # says "No changes." and lists any findings
        return 0
    _present(plan, args)
    if _refuse(plan):
        return 1
    if not _confirm(args, prompt):
        _err("reconciler: apply cancelled; nothing was changed")
        return 1
    return _execute(args, plan, manager, "the plan shown")


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
    if args.instance:
        # Names or globs; one that matches nothing is an error.
        plan = only_instances(plan, set(manager.instance_names(args.instance)))
    # Checked even when the plan is empty: a plan edited down to nothing is as stale as any.
    stale, state, fresh = manager.stale(plan)
    if stale:
        for p in stale:
            _err(f"reconciler: {args.plan_file} is stale: {p}")
        _err("reconciler: nothing was changed")
        return 1
    if not fresh.has_changes:
        _out(f"No changes. {args.plan_file} has nothing to apply.")
        return 0
    # The fresh plan equals the saved one in every field but display-only ones (the date, open
    # connection counts, the words of notes): it is what runs and what is shown, so nothing but
    # that comparison reaches the servers from the saved file. The rails judge it as the live
    # state is now (the verdict saved with the plan is not trusted).
    plan = manager.check(fresh, state, force=args.force)
    _present(plan, args)
    if _refuse(plan):
        return 1
    if not _confirm(args, prompt):
        _err("reconciler: apply cancelled; nothing was changed")
        return 1
    return _execute(args, plan, manager, args.plan_file)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "bootstrap", False):
        if args.plan_file or not args.file:
            raise ReconcilerError("--bootstrap works with -f FILE, not with a saved plan")
        if args.target:
            raise ReconcilerError("--bootstrap applies the whole file (the admin first); drop --target")
        from . import bootstrap

        code = bootstrap.run(args, None, _confirm)
        if code >= 0:
            return code
    if args.plan_file:
        if args.target:
            raise ReconcilerError("--target works with -f FILE; a saved plan is applied whole")
        # With -f FILE as well, the file only supplies connection details and secrets.
        return run_saved(args)
    if not args.file:
        raise ReconcilerError("apply needs -f FILE or a saved PLAN.json")
    return run_file(args)
