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

All three steps are planned from one read and shown before the single confirmation; then they
are two steps of the Manager's apply pipeline (pipeline.py), each with its own login: step 1 as
`default`, steps 2 and 3 as the admin. Like any apply, the live state is re-read under the lock
after the prompt and before step 1 (an admin someone created meanwhile is not overwritten), and
again as the admin after step 1: the rest must still be what was shown. Each step is judged by
the rights it will run with: step 1 by `default`'s, steps 2 and 3 by the admin's as step 1
leaves it. Instances whose admin already logs in and may do everything are applied in step 2
like any apply, so a second `apply --bootstrap` is an ordinary apply (and a no-op when nothing
changed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import safety, secrets
from .errors import LiveError, ReconcilerError
from .model import Admin, DesiredState, Secret
from .pipeline import Console, Options, Rechecked, Step
from .plan import Plan, Rail, Refusal, UserChange, only_changes
from .state import InstanceState, LiveState, LiveUser

if TYPE_CHECKING:
    from .manager import Manager

DEFAULT = "default"


def default_login(secret_env: str | None) -> Admin:
    """How step 1 logs in: as `default`, with the password in `secret_env` (None: nopass)."""
    if not secret_env:
        return Admin(username=DEFAULT)
    value = os.environ.get(secret_env)
    if not value:
        raise ReconcilerError(f"--bootstrap-secret-env {secret_env}: the variable is not set or empty")
    secrets.check_one_line(value, f"--bootstrap-secret-env {secret_env}")
    return Admin(username=DEFAULT, secret=Secret(value), source=f"env:{secret_env}")


def _why_bootstrap(manager: "Manager", name: str) -> str | None:
    """Why the file's admin can't run an apply on this instance as it is (None: it can). It is
    read as the admin, every node of it: an AUTH failure anywhere, a refused read, or rights
    without which no apply runs are for step 1 to fix; anything else is an error."""
    try:
        state = manager.read([name])
    except LiveError as exc:
        text = str(exc)
        if "AUTH failed" in text:
            return "cannot log in"
        if "NOPERM" in text or "no permissions" in text:
            return "may not read the node"
        raise
    missing = safety.admin_missing(state.instances[name])
    return f"lacks {missing[0]}" if missing else None


def needs_bootstrap(manager: "Manager", names: list[str]) -> list[str]:
    desired = manager.desired
    out = []
    for name in names:
        inst = desired.instances[name]
        if inst.provider != "redis" or inst.admin.username == DEFAULT or not (inst.nodes or inst.sentinels):
            continue
        why = _why_bootstrap(manager, name)
        if why is None:
            continue
        if inst.admin.username not in {u.name for u in desired.users_for(name)}:
            raise ReconcilerError(
                f"--bootstrap: instance {name}: admin user {inst.admin.username} {why} and "
                f"{desired.source} does not declare it under users: to create it"
            )
        out.append(name)
    return out


def as_default(desired: DesiredState, boot: set[str], login: Admin) -> DesiredState:
    """The file with step 1's login on the instances to bootstrap; the file's admin's named
    connections still count as a lock there."""
    return dataclasses.replace(
        desired,
        instances={
            n: dataclasses.replace(i, admin=login, lock_users=(i.admin.username,)) if n in boot else i
            for n, i in desired.instances.items()
        },
    )


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


def refusals(plan: Plan, steps: "Steps", state: LiveState, desired: DesiredState, boot: set[str], *,
             force: bool) -> tuple[Refusal, ...]:
    """The safety rails, each step judged by the rights it will run with: step 1 by `default`'s
    live rights, steps 2 and 3 by the admin's as step 1 leaves it (so an admin with another
    password or too few rights can be fixed, as step 1 promises). What --force lifts is kept,
    marked waived, as Manager.check does."""
    after = _after_step1(state, steps.admin, desired, boot)
    later = only_changes(plan, lambda i, u: not (i in boot and u == desired.instances[i].admin.username))
    found = (
        [Refusal(Rail.LOCKOUT, p) for p in safety.lockout(plan, after, desired)]
        + [Refusal(Rail.ADMIN_RIGHTS, p) for p in safety.admin_rights(steps.admin, state) + safety.admin_rights(later, after)]
        + [Refusal(Rail.DELETE_THRESHOLD, p) for p in safety.delete_threshold(plan, state, desired.policies.max_delete_percent)]
    )
    return tuple(dataclasses.replace(r, waived=True) if force and r.forcible else r for r in found)


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


def _titles(boot: list[str], desired: DesiredState) -> tuple[str, str, str]:
    admins = ", ".join(sorted({desired.instances[n].admin.username for n in boot}))
    where = ", ".join(boot)
    return (
        f"Step 1 of 3 ({where}): connected as `default`, create the admin user {admins}",
        "Step 2 of 3: connected as the file's admin, everything else",
        f"Step 3 of 3 ({where}): connected as the file's admin, `default` last",
    )


def _present(console: Console, plan: Plan, steps: Steps, titles: tuple[str, str, str]) -> None:
    for i, (sub, title) in enumerate(zip((steps.admin, steps.rest, steps.default), titles, strict=True)):
        if sub.has_changes or sub.findings:
            if i:
                console.out("")
            console.present(sub, title=title)
        else:
            console.out(f"\n{title}\n\n  nothing to change")
    c = plan.counts()
    console.out(f"\nBootstrap plan: {c.add} to add, {c.change} to change, {c.destroy} to destroy, in 3 steps.")


def _unchanged_after_step1(manager: "Manager", names: list[str], shown: Steps, boot: set[str]) -> Callable[[Plan], Rechecked]:
    """Step 2's re-check, as the admin under its lock: it logs in now, step 1 left nothing of
    its own to do, and the rest still writes what was shown; the fresh plan is what it writes."""
    desired = manager.desired

    def recheck(plan: Plan) -> Rechecked:
        fresh = manager.plan(manager.read(names))
        again = split(fresh, desired, boot)
        if again.admin.has_changes or _writes(again.rest) != _writes(shown.rest) or _writes(again.default) != _writes(shown.default):
            return Rechecked([
                "the live state changed after step 1 (the admin user exists now); "
                f"review the rest with `reconciler plan -f {desired.source}`"
            ], fresh)
        return Rechecked([], fresh)

    return recheck


def run(manager: "Manager", only: list[str] | None, console: Console, options: Options, *,
        secret_env: str | None = None) -> int:
    """Manager.bootstrap: plan the three steps, show them, then the pipeline (rails per step,
    one confirmation, step 1 as `default`, steps 2 and 3 as the admin). With nothing to
    bootstrap, an ordinary apply."""
    desired = manager.desired
    names = manager.instance_names(only)
    boot = needs_bootstrap(manager, names)
    if not boot:
        console.out("Bootstrap: the file's admin user logs in on every instance; nothing to bootstrap.")
        return manager.apply_file(only, console, options)
    booted = set(boot)
    first = manager.derived(as_default(desired, booted, default_login(secret_env)))
    try:
        state = first.read(names)
    except LiveError as exc:
        raise ReconcilerError(f"--bootstrap: cannot log in as `default` either: {exc}") from None
    plan = manager.plan(state)
    steps = split(plan, desired, booted)
    _present(console, plan, steps, _titles(boot, desired))
    plan = dataclasses.replace(plan, refusals=refusals(plan, steps, state, desired, booted, force=options.force))

    def step1(p: Plan) -> tuple[Plan, ...]:
        return (split(p, desired, booted).admin,)

    def steps23(p: Plan) -> tuple[Plan, ...]:
        later = split(p, desired, booted)
        return (later.rest, later.default)

    return manager.pipeline(console, options).run(plan, state, checked=True, kind="Bootstrap", steps=(
        # Step 1 holds the instances it writes as `default` (the admin can't log in yet); the
        # usual re-check holds the whole plan shown against a fresh read.
        Step(first, lock=lambda p: first.lock(step1(p)[0]), writes=step1),
        # Steps 2 and 3 under the admin's lock: whatever moved between the two locks is caught.
        Step(manager, recheck=_unchanged_after_step1(manager, names, steps, booted), writes=steps23),
    ))
