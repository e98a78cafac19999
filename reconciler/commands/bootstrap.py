"""`reconciler apply --bootstrap`: the first run on a fresh server, in one command.

A file that declares its own admin user (and disables `default`) cannot be applied to a fresh
server the usual way: the admin does not exist yet, so it cannot log in. With --bootstrap, for
every `provider: redis` instance where the file's admin cannot log in:

  step 1  connect as the server's current `default` (nopass, or --bootstrap-secret-env) and
          create or fix the admin user only;
  step 2  reconnect as the admin, re-read, and apply everything else;
  step 3  change `default` (disable it, give it a token) last.

An instance needs it when the file's admin can't log in on some node -- every node counts:
replicas, cluster members and the data nodes Sentinel reports, since ACLs don't replicate -- or
logs in but may not read, or lacks what every apply needs (rights.ESSENTIAL): step 1 fixes it.

All three steps are planned from one read and shown before the single confirmation. Like any
apply, the live state is re-read under the lock after the prompt and before step 1 (an admin
someone created meanwhile is not overwritten), and again as the admin after step 1: the rest
must still be what was shown. Each step is judged by the rights it will run with: step 1 by
`default`'s, steps 2 and 3 by the admin's as step 1 leaves it. Instances whose admin already
logs in and may do everything are applied in step 2 like any apply, so a second
`apply --bootstrap` is an ordinary apply (and a no-op when nothing changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import interrupt, safety, saved, secrets
from ..audit import AuditLog
from ..errors import ApplyError, LiveError, ReconcilerError
from ..manager import Manager, unpersisted
from ..model import Admin, DesiredState, Secret
from ..plan import Plan, UserChange, only_changes
from ..render import render_text
from ..render.terminal import use_color
from ..state import InstanceState, LiveState, LiveUser

Prompt = Callable[[str], str]
DEFAULT = "default"


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _bootstrap_admin(args: argparse.Namespace) -> Admin:
    var = getattr(args, "bootstrap_secret_env", None)
    if not var:
        return Admin(username=DEFAULT)
    value = os.environ.get(var)
    if not value:
        raise ReconcilerError(f"--bootstrap-secret-env {var}: the variable is not set or empty")
    secrets.check_one_line(value, f"--bootstrap-secret-env {var}")
    return Admin(username=DEFAULT, secret=Secret(value), source=f"env:{var}")


def _why_bootstrap(desired: DesiredState, name: str) -> str | None:
    """Why the file's admin can't run an apply on this instance as it is (None: it can). It is
    read as the admin, every node of it: an AUTH failure anywhere, a refused read, or rights
    without which no apply runs are for step 1 to fix; anything else is an error."""
    try:
        state = Manager(desired).read([name])
    except LiveError as exc:
        text = str(exc)
        if "AUTH failed" in text:
            return "cannot log in"
        if "NOPERM" in text or "no permissions" in text:
            return "may not read the node"
        raise
    missing = safety.admin_missing(state.instances[name])
    return f"lacks {missing[0]}" if missing else None


def needs_bootstrap(desired: DesiredState, names: list[str]) -> list[str]:
    out = []
    for name in names:
        inst = desired.instances[name]
        if inst.provider != "redis" or inst.admin.username == DEFAULT or not (inst.nodes or inst.sentinels):
            continue
        why = _why_bootstrap(desired, name)
        if why is None:
            continue
        if inst.admin.username not in {u.name for u in desired.users_for(name)}:
            raise ReconcilerError(
                f"--bootstrap: instance {name}: admin user {inst.admin.username} {why} and "
                f"{desired.source} does not declare it under users: to create it"
            )
        out.append(name)
    return out


def _as_admin(state: LiveState, desired: DesiredState, boot: set[str]) -> LiveState:
    """The live state as the safety rails must judge it: after step 1 the reconciler is the
    file's admin on bootstrapped instances, so disabling `default` there is no lockout."""
    instances: dict[str, InstanceState] = {}
    for name, inst in state.instances.items():
        if name in boot:
            admin = desired.instances[name].admin
            digest = hashlib.sha256(admin.secret.reveal().encode()).hexdigest() if admin.secret else None
            nodes = tuple(dataclasses.replace(n, admin_user=admin.username, admin_hash=digest) for n in inst.nodes)
            inst = dataclasses.replace(inst, nodes=nodes)
        instances[name] = inst
    return LiveState(instances=instances)


def _after_step1(state: LiveState, step1: Plan, desired: DesiredState, boot: set[str]) -> LiveState:
    """The live state steps 2 and 3 will meet: logged in as the file's admin, which step 1 has
    created or fixed (its rules, tokens and `on`/`off` as step 1 writes them)."""
    written = {(i.name, n.address): {c.user: c for c in n.changes} for i in step1.instances for n in i.nodes}
    instances: dict[str, InstanceState] = {}
    for name, inst in _as_admin(state, desired, boot).instances.items():
        nodes = []
        for node in inst.nodes:
            c = written.get((name, node.address), {}).get(node.admin_user)
            if c is not None and c.action != "delete":
                before = node.users.get(c.user)
                user = LiveUser(c.user, c.enabled, c.nopass, c.hashes, c.rules, before.connections if before else 0)
                node = dataclasses.replace(node, users={**node.users, c.user: user})
            nodes.append(node)
        instances[name] = dataclasses.replace(inst, nodes=tuple(nodes))
    return LiveState(instances=instances)


def rails(plan: Plan, steps: "Steps", state: LiveState, desired: DesiredState, boot: set[str], *, force: bool) -> list[str]:
    """The safety rails, each step judged by the rights it will run with: step 1 by `default`'s
    live rights, steps 2 and 3 by the admin's as step 1 leaves it (so an admin with another
    password or too few rights can be fixed, as step 1 promises)."""
    after = _after_step1(state, steps.admin, desired, boot)
    later = only_changes(plan, lambda i, u: not (i in boot and u == desired.instances[i].admin.username))
    return (
        safety.lockout(plan, after, desired)
        + safety.admin_rights(steps.admin, state)
        + safety.admin_rights(later, after)
        + safety.delete_threshold(plan, state, desired.policies.max_delete_percent, force=force)
    )


@dataclasses.dataclass(frozen=True)
class Steps:
    admin: Plan  # step 1, as `default`
    rest: Plan  # step 2, as the admin
    default: Plan  # step 3, as the admin


def split(plan: Plan, desired: DesiredState, boot: set[str]) -> Steps:
    def is_admin(inst: str, user: str) -> bool:
        return inst in boot and user == desired.instances[inst].admin.username

    def is_default(inst: str, user: str) -> bool:
        return inst in boot and user == DEFAULT

    return Steps(
        admin=only_changes(plan, is_admin, findings=False, config=False),
        rest=only_changes(plan, lambda i, u: not is_admin(i, u) and not is_default(i, u)),
        default=only_changes(plan, is_default, findings=False, config=False),
    )


def _key(c: UserChange) -> tuple[Any, ...]:
    # What a change writes; open-connection counts move with our own connections.
    return (c.action, c.user, c.enabled, c.nopass, c.hashes, c.rules, c.kill_sessions)


def _writes(plan: Plan) -> set[tuple[Any, ...]]:
    return {
        (inst.name, node.address, *_key(c)) for inst in plan.instances for node in inst.nodes for c in node.changes
    } | {(inst.name, node.address, cc) for inst in plan.instances for node in inst.nodes for cc in node.config}


def _apply(plan: Plan, desired: DesiredState, audit: AuditLog | None) -> list[str]:
    if not plan.has_changes:
        return []
    try:
        report = Manager(desired).apply(plan, audit=audit)
    except ApplyError as exc:
        for line in exc.report.summary_lines() if exc.report is not None else []:
            _out(line)
        raise
    for warning in report.warnings:
        print(f"reconciler: warning: {warning}", file=sys.stderr)
    return report.summary_lines()


def _titles(boot: list[str], desired: DesiredState) -> tuple[str, str, str]:
    admins = ", ".join(sorted({desired.instances[n].admin.username for n in boot}))
    where = ", ".join(boot)
    return (
        f"Step 1 of 3 ({where}): connected as `default`, create the admin user {admins}",
        "Step 2 of 3: connected as the file's admin, everything else",
        f"Step 3 of 3 ({where}): connected as the file's admin, `default` last",
    )


def run(args: argparse.Namespace, prompt: Prompt | None, confirm: Callable[[argparse.Namespace, Prompt | None], bool]) -> int:
    manager = Manager.from_file(args.file, allow_exec=getattr(args, "allow_exec", False))
    desired = manager.desired
    names = manager.instance_names(args.instance)
    boot = needs_bootstrap(desired, names)
    if not boot:
        _out("Bootstrap: the file's admin user logs in on every instance; nothing to bootstrap.")
        return -1  # the caller runs an ordinary apply
    boot_admin = _bootstrap_admin(args)
    # Step 1 connects as `default`; the file's admin's named connections still count as a lock.
    boot_desired = dataclasses.replace(
        desired,
        instances={
            n: dataclasses.replace(i, admin=boot_admin, lock_users=(i.admin.username,)) if n in boot else i
            for n, i in desired.instances.items()
        },
    )
    try:
        state = Manager(boot_desired).read(names)
    except LiveError as exc:
        raise ReconcilerError(f"--bootstrap: cannot log in as `default` either: {exc}") from None
    plan = manager.plan(state)
    steps = split(plan, desired, set(boot))
    color = use_color(args, sys.stdout)
    for i, (sub, title) in enumerate(zip((steps.admin, steps.rest, steps.default), _titles(boot, desired), strict=True)):
        if sub.has_changes or sub.findings:
            _out(("\n" if i else "") + render_text(sub, color=color, title=title))
        else:
            _out(f"\n{title}\n\n  nothing to change")
    c = plan.counts()
    _out(f"\nBootstrap plan: {c.add} to add, {c.change} to change, {c.destroy} to destroy, in 3 steps.")
    problems = rails(plan, steps, state, desired, set(boot), force=args.force)
    if problems:
        for p in problems:
            print(f"reconciler: refusing to apply: {p}", file=sys.stderr)
        print("reconciler: nothing was changed", file=sys.stderr)
        return 1
    if not confirm(args, prompt):
        print("reconciler: apply cancelled; nothing was changed", file=sys.stderr)
        return 1
    audit_path = args.audit_log or desired.audit_log
    audit = AuditLog(audit_path, plan) if audit_path else None
    interrupt.DONE.expect(plan)  # an interrupt between the steps says what step 1 did
    try:
        return _execute(args, manager, boot_desired, steps, names, audit, plan)
    finally:
        if audit is not None:
            audit.close()


def _execute(
    args: argparse.Namespace,
    manager: Manager,
    boot_desired: DesiredState,
    steps: Steps,
    names: list[str],
    audit: AuditLog | None,
    plan: Plan,
) -> int:
    desired = manager.desired
    # Like any apply, each step holds the instance's apply lock: step 1 as `default` (the admin
    # can't log in yet), steps 2 and 3 as the admin. Under step 1's lock, after the prompt, the
    # live state must still produce the plan shown; the re-read after step 1 happens under the
    # admin's lock, so whatever moved between the two locks is caught by the comparison.
    try:
        with Manager(boot_desired).lock(steps.admin):
            moved = saved.differences(plan, manager.plan(Manager(boot_desired).read(names)))
            if moved:
                for p in moved:
                    print(f"reconciler: refusing to apply: live state changed since the plan shown was made: {p}", file=sys.stderr)
                print("reconciler: nothing was changed; plan again", file=sys.stderr)
                return 1
            with manager.interruptible() as interrupted:
                for line in _apply(steps.admin, boot_desired, audit):
                    _out(line)
        if interrupted.is_set():
            for line in interrupt.DONE.lines() or ["interrupted; nothing was changed"]:
                print(f"reconciler: {line}", file=sys.stderr)
            return 130
        with manager.lock(plan), manager.interruptible() as interrupted:
            # Re-read as the admin: it must log in now, and the rest must still be what was shown.
            fresh = manager.plan(manager.read(names))
            boot = {i.name for i in steps.admin.instances}
            again = split(fresh, desired, boot)
            if again.admin.has_changes or _writes(again.rest) != _writes(steps.rest) or _writes(again.default) != _writes(steps.default):
                print(
                    "reconciler: refusing to go on: the live state changed after step 1 (the admin user exists now); "
                    f"review the rest with `reconciler plan -f {args.file}`",
                    file=sys.stderr,
                )
                return 1
            for line in _apply(again.rest, desired, audit) + _apply(again.default, desired, audit):
                _out(line)
    except ApplyError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 130 if interrupted.is_set() else 1
    for warning in unpersisted(fresh):
        print(f"reconciler: warning: {warning}", file=sys.stderr)
    Manager(desired).verify(fresh)
    c = steps.admin.counts()
    r = fresh.counts()
    _out(f"\nBootstrap complete: {c.add + r.add} added, {c.change + r.change} changed, {c.destroy + r.destroy} destroyed.")
    return 0
