"""`reconciler apply`: plan (or load a saved plan), check the safety rails, ask, execute, verify.

    apply -f FILE [--auto-approve] [--force] [--audit-log PATH]
    apply PLAN.json [--auto-approve] [--force] [--audit-log PATH]

Nothing is written before every check has passed: the plan is complete (the planner raises
on rules a node can't express), the rails found nothing, a saved plan still matches every
node's live ACLs, and the operator said `yes` (or passed --auto-approve).
"""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import contextmanager
from datetime import date
from typing import Any, Callable, Iterator

from .. import executor, inventory, live, pending, providers, safety, saved
from ..audit import AuditLog
from ..errors import ApplyError, ReconcilerError
from ..lock import InstanceLock, Locks
from ..manager import Manager, today, warn_unpersisted
from ..model import DesiredState
from ..plan import Plan, only_instances
from ..planner import node_fingerprint
from ..render import render_text
from ..render.terminal import use_color
from ..state import InstanceState, LiveState, NodeState

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


def stale_nodes(plan: Plan, desired: DesiredState) -> tuple[list[str], LiveState]:
    """Re-read every node of a saved plan; name each whose ACLs or version moved since.

    Returns (problems, the fresh live state for the safety rails).
    """
    problems: list[str] = []
    instances: dict[str, InstanceState] = {}
    for inst in plan.instances:
        instance = desired.instances.get(inst.name)
        if instance is None:
            problems.append(f"instance {inst.name} is in the plan but not in {desired.source}")
            continue
        # Discovery again: a replica or cluster member that joined since would miss the changes.
        fresh = providers.get(instance.provider, desired).read(instance)
        by_address = {n.address: n for n in fresh.nodes}
        planned = {n.address for n in inst.nodes}
        for address in sorted(by_address.keys() - planned):
            problems.append(f"{inst.name} {address}: node joined the instance since the plan was made; make a new plan")
        states: list[NodeState] = []
        for node_plan in inst.nodes:
            state = by_address.get(node_plan.address)
            if state is None:
                problems.append(
                    f"{inst.name} {node_plan.address}: node is no longer part of the instance; make a new plan"
                )
                continue
            states.append(state)
            # The planner's own digest of the parsed ACL state: the same function made the plan's.
            if node_fingerprint(state) != node_plan.fingerprint:
                problems.append(
                    f"{inst.name} {node_plan.address}: live ACLs changed since the plan was made "
                    "(fingerprint differs); make a new plan"
                )
            elif state.role != node_plan.role:
                problems.append(
                    f"{inst.name} {node_plan.address}: node is now {state.role}, the plan was made when it was "
                    f"{node_plan.role} (a failover since?); make a new plan"
                )
            elif state.label != node_plan.label:
                problems.append(
                    f"{inst.name} {node_plan.address}: server is now {state.label}, the plan was made for "
                    f"{node_plan.label}; make a new plan"
                )
        instances[inst.name] = InstanceState(name=inst.name, nodes=tuple(states), topology=fresh.topology)
    return problems, LiveState(instances=instances)


def _by_provider(plan: Plan, desired: DesiredState) -> list[tuple[str, Plan]]:
    """The plan split by each instance's provider (file order); unknown instances go to redis,
    whose executor names them."""
    groups: dict[str, set[str]] = {}
    for inst in plan.instances:
        spec = desired.instances.get(inst.name)
        groups.setdefault(spec.provider if spec is not None else providers.DEFAULT, set()).add(inst.name)
    return [(name, only_instances(plan, names)) for name, names in groups.items()]


class _Results:
    def __init__(self) -> None:
        self.parts: list[Any] = []

    def summary_lines(self) -> list[str]:
        return [line for r in self.parts for line in r.summary_lines()]


def _apply_all(plan: Plan, desired: DesiredState, audit: AuditLog | None) -> _Results:
    """Each provider applies its instances; a failure still reports what earlier providers did."""
    done = _Results()
    for name, sub in _by_provider(plan, desired):
        try:
            done.parts.append(providers.get(name, desired).apply(sub, audit=audit))
        except ApplyError as exc:
            partial: Any = getattr(exc, "result", None)
            if partial is not None:
                done.parts.append(partial)
            exc.result = done
            raise
    return done


def _verify_all(plan: Plan, desired: DesiredState, day: date) -> None:
    for name, sub in _by_provider(plan, desired):
        providers.get(name, desired).verify(sub, today=day)


def _verify_saved(plan: Plan, desired: DesiredState) -> None:
    managed = [sub for name, sub in _by_provider(plan, desired) if name != providers.DEFAULT]
    if managed:
        # Managed services: re-read through the provider and re-plan against the file.
        day = date.fromisoformat(plan.today) if plan.today else today()
        for sub in managed:
            providers.for_instance(desired, sub.instances[0].name).verify(sub, today=day)
        plan = only_instances(plan, {i.name for i in plan.instances} - {i.name for sub in managed for i in sub.instances})
    fresh: dict[tuple[str, str], NodeState] = {}
    for inst in plan.instances:
        for node_plan in inst.nodes:
            if node_plan.changes:
                fresh[(inst.name, node_plan.address)] = live.read_node(desired.instances[inst.name], node_plan.address)
    problems = executor.verify_targets(plan, fresh)
    if problems:
        raise ApplyError("\n".join(problems))


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT/SIGTERM while writing: stop after the batch in flight (every sent command is then
    audited and reported), instead of dying between a command and its record."""
    executor.INTERRUPT.clear()

    def stop(signum: int, frame: Any) -> None:
        executor.INTERRUPT.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _lock(plan: Plan, desired: DesiredState) -> Locks:
    """Lock every node of each instance the plan writes (redis provider: the lock lives on the servers)."""
    locks = Locks()
    try:
        for inst in plan.instances:
            spec = desired.instances.get(inst.name)
            if spec is None or spec.provider != providers.DEFAULT or not any(n.has_changes for n in inst.nodes):
                continue
            data = [n.address for n in inst.nodes if n.role != "sentinel"]
            sentinels = [n.address for n in inst.nodes if n.role == "sentinel"]
            if data:
                locks.add(InstanceLock(spec, data, live.connect))
            if sentinels:  # sentinels are reached as the sentinel admin
                locks.add(InstanceLock(spec.for_role("sentinel"), sentinels, live.connect))
    except BaseException:
        locks.release()
        raise
    return locks


def _recheck(manager: Manager, plan: Plan) -> list[str]:
    """Under the lock, before the first write: the file and live state must still produce exactly
    this plan (nothing moved while it was reviewed, confirmed or saved)."""
    fresh = manager.plan(manager.read([i.name for i in plan.instances]))
    return saved.differences(plan, fresh)


def _execute(
    args: argparse.Namespace, plan: Plan, manager: Manager, verify: Callable[[], None], what: str = "the plan"
) -> int:
    desired = manager.desired
    with _lock(plan, desired):
        moved = _recheck(manager, plan)
        if moved:
            for p in moved:
                _err(f"reconciler: refusing to apply: live state changed since {what} was made: {p}")
            _err("reconciler: nothing was changed; plan again")
            return 1
        audit = _audit(args, desired, plan)
        own = only_instances(plan, {n for n, s in desired.instances.items() if s.provider == providers.DEFAULT})
        before = pending.begin(desired.source, own)
        partial: Any = None
        try:
            try:
                with _interruptible():
                    result = partial = _apply_all(plan, desired, audit)
            except ApplyError as exc:
                partial = getattr(exc, "result", None)
                if partial is not None:
                    for line in partial.summary_lines():
                        _out(line)
                _err(f"reconciler: {exc}")
                return 130 if executor.INTERRUPT.is_set() else 1
        finally:
            if audit is not None:
                audit.close()
            nodes = [n for part in (partial.parts if partial is not None else []) for n in getattr(part, "nodes", [])]
            pending.finish(desired.source, own, before, [n for n in nodes if hasattr(n, "persisted")])
    for line in result.summary_lines():
        _out(line)
    warn_unpersisted(plan)
    verify()
    if any(i.inventory for i in plan.instances):
        path = inventory.record_inventory(desired.source, desired, [i.name for i in plan.instances])
        _out(f"Certificate inventory recorded in {path}")
    c = plan.counts()
    _out(f"\nApply complete: {c.add} added, {c.change} changed, {c.destroy} destroyed.")
    return 0


def _refuse(problems: list[str]) -> int:
    for p in problems:
        _err(f"reconciler: refusing to apply: {p}")
    _err("reconciler: nothing was changed")
    return 1


def _present(plan: Plan, args: argparse.Namespace | None = None) -> None:
    _out(render_text(plan, color=use_color(args, sys.stdout)))


def run_file(args: argparse.Namespace, prompt: Prompt | None = None) -> int:
    manager = Manager.from_file(args.file)
    state = manager.read(args.instance)
    plan = manager.plan(state)
    if not plan.has_changes:
        _present(plan, args)  # says "No changes." and lists any findings
        return 0
    _present(plan, args)
    problems = safety.check(plan, state, manager.desired, force=args.force)
    if problems:
        return _refuse(problems)
    if not _confirm(args, prompt):
        _err("reconciler: apply cancelled; nothing was changed")
        return 1
    day: date = date.fromisoformat(plan.today) if plan.today else today()
    return _execute(args, plan, manager, lambda: _verify_all(plan, manager.desired, day), "the plan shown")


def run_saved(args: argparse.Namespace, prompt: Prompt | None = None) -> int:
    plan = saved.load(args.plan_file)
    source = args.file or plan.source
    if not plan.source_sha256:
        raise ReconcilerError(f"{args.plan_file} does not name the digest of the file it was made from; make a new plan")
    if saved.file_digest(source) != plan.source_sha256:
        _err(f"reconciler: {args.plan_file} is stale: {source} changed since the plan was made; make a new plan")
        _err("reconciler: nothing was changed")
        return 1
    manager = Manager.from_file(source)
    if args.instance:
        # Names or globs; one that matches nothing is an error.
        plan = only_instances(plan, set(manager.instance_names(args.instance)))
    if not plan.has_changes:
        _out(f"No changes. {args.plan_file} has nothing to apply.")
        return 0
    stale, state = stale_nodes(plan, manager.desired)
    if not stale:
        # Executed only if the file and live state still produce exactly these commands: a hand
        # edit (a user added, a hash replaced) is as stale as a change on a server.
        stale = saved.differences(plan, manager.plan(state))
    if stale:
        for p in stale:
            _err(f"reconciler: {args.plan_file} is stale: {p}")
        _err("reconciler: nothing was changed")
        return 1
    problems = safety.check(plan, state, manager.desired, force=args.force)
    if problems:
        return _refuse(problems)
    _present(plan, args)
    if not _confirm(args, prompt):
        _err("reconciler: apply cancelled; nothing was changed")
        return 1
    return _execute(args, plan, manager, lambda: _verify_saved(plan, manager.desired), args.plan_file)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "bootstrap", False):
        if args.plan_file or not args.file:
            raise ReconcilerError("--bootstrap works with -f FILE, not with a saved plan")
        from . import bootstrap

        code = bootstrap.run(args, None, _confirm)
        if code >= 0:
            return code
    if args.plan_file:
        # With -f FILE as well, the file only supplies connection details and secrets.
        return run_saved(args)
    if not args.file:
        raise ReconcilerError("apply needs -f FILE or a saved PLAN.json")
    return run_file(args)
