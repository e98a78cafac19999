"""The apply pipeline: one plan carried to the servers, the same way for `apply -f`,
`apply PLAN.json`, `apply --bootstrap` and each server-changing step of `rotate`:

    rails -> confirm -> (per step: lock -> re-check -> audit -> execute) -> verify -> records

Nothing is written before every check has passed: the rails found nothing, the operator said
yes (or passed --auto-approve), and under the lock the file and live state still produce
exactly the plan that was confirmed. A stop request (SIGINT/SIGTERM) ends the apply after the
batch in flight, or between two steps; work an apply left unfinished is recorded for the next
one (Manager.apply).

A plan is written in one step by the Manager's own login, or in several steps, each a login of
its own (`apply --bootstrap`: `default` creates the admin, then the admin writes the rest):
every step takes its own lock and re-checks before it writes, and the run is verified once, at
the end, by the last step's login.

The Manager owns the pipeline (Manager.pipeline); the pipeline never prints: it talks to the
operator through the Console the command supplies (rendering the plan, asking, printing lines).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import interrupt, inventory, saved
from .audit import AuditLog
from .errors import ApplyError, ReconcilerError
from .model import DesiredState
from .plan import Plan
from .render import refusal_lines
from .report import ApplyReport
from .state import LiveState

Lock = Callable[[Plan], AbstractContextManager[Any]]


class Runner(Protocol):
    """What the pipeline asks of a Manager (manager.Manager is the one), each with its login."""

    desired: DesiredState

    def check(self, plan: Plan, state: LiveState, *, force: bool = False) -> Plan: ...

    def lock(self, plan: Plan) -> AbstractContextManager[Any]: ...

    def recheck(self, plan: Plan, narrow: Callable[[Plan], Plan] | None = None) -> list[str]: ...

    def interruptible(self) -> AbstractContextManager[threading.Event]: ...

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport: ...

    def verify(self, plan: Plan) -> None: ...


class Present(Protocol):
    def __call__(self, plan: Plan, title: str = "") -> None: ...


@dataclass
class Console:
    """How a run talks to the operator; the command decides where each piece goes."""

    out: Callable[[str], None]  # a result line (stdout)
    err: Callable[[str], None]  # an error or warning line (stderr), without the "reconciler: " prefix
    present: Present  # show a plan (under a title, for one step of several)
    confirm: Callable[[Plan], bool]  # ask; raises ReconcilerError when nobody can be asked


@dataclass(frozen=True)
class Options:
    force: bool = False  # the delete threshold may be passed
    audit_log: str | None = None  # --audit-log; else the file's audit_log
    audit_fields: dict[str, Any] = field(default_factory=dict)  # added to every audit line (a rotation's id)


@dataclass(frozen=True)
class Rechecked:
    """A step's re-check under its lock: what moved since the plan was confirmed (one line each;
    empty: go on), and the plan the step writes from."""

    moved: list[str]
    plan: Plan


def _whole(plan: Plan) -> tuple[Plan, ...]:
    return (plan,)


@dataclass(frozen=True)
class Step:
    """One login's share of a confirmed plan.

    manager: reads, locks and writes with its login. lock: how it holds the instances the plan
    writes (default: its Manager.lock). recheck: under the lock, before writing (default: the
    file and live state must still produce the confirmed plan). writes: the parts of the
    re-checked plan it writes, one after the other (default: the whole plan).
    """

    manager: Runner
    lock: Lock | None = None
    recheck: Callable[[Plan], Rechecked] | None = None
    writes: Callable[[Plan], tuple[Plan, ...]] = _whole


class Pipeline:
    """Carries plans to the servers for one Manager.

    lock: how the instances a plan writes are held (default Manager.lock); a caller that holds
    them already for several plans (a rotation) passes its own. narrow: what of a fresh plan
    the confirmed plan stands for (a rotation confirms one user's changes), applied to the
    re-check's plan before comparing.
    """

    def __init__(
        self,
        manager: Runner,
        console: Console,
        options: Options | None = None,
        *,
        lock: Lock | None = None,
        narrow: Callable[[Plan], Plan] | None = None,
    ):
        self.manager = manager
        self.console = console
        self.options = options or Options()
        self.lock = lock or manager.lock
        self.narrow = narrow or (lambda plan: plan)

    def run(self, plan: Plan, state: LiveState, *, what: str = "the plan shown", present: bool = False,
            checked: bool = False, steps: Sequence[Step] = (), kind: str = "Apply") -> int:
        """The rails' verdict (Manager.check, unless `checked`: the plan carries it already), the
        plan shown when `present`, then refusals, confirm and execute. `steps`: the logins that
        write it, in order (default: one, this Manager's); `kind` opens the closing line ("Apply
        complete: ..."). Exit code."""
        if not checked:
            plan = self.manager.check(plan, state, force=self.options.force)
        if present:
            self.console.present(plan)
        if self.refuse(plan):
            return 1
        self._check_audit_path()  # before anyone is asked
        if not self.console.confirm(plan):
            self.console.err("apply cancelled; nothing was changed")
            return 1
        return self.execute(plan, what, steps=steps, kind=kind)

    def refuse(self, plan: Plan) -> bool:
        """Say the rails' verdict (a refusal per line; what --force lifted as warnings); True when
        the plan is refused."""
        for line in refusal_lines(plan, "refusing to apply"):
            self.console.err(line)
        if not plan.refused:
            return False
        self.console.err("nothing was changed")
        return True

    def execute(self, plan: Plan, what: str = "the plan shown", *, steps: Sequence[Step] = (),
                kind: str = "Apply") -> int:
        """Each step (default: one, the Manager's own), then verify and records. Exit code: 0, 1,
        or 130 when stopped."""
        steps = steps or (Step(self.manager, lock=self.lock),)
        written = plan
        for i, step in enumerate(steps):
            if i and interrupt.REQUESTED.is_set():
                # Stopped after the batch in flight of the step before: say what that step did.
                for line in interrupt.DONE.lines() or ["interrupted; nothing was changed"]:
                    self.console.err(line)
                return 130
            code, written = self._step(plan, step, what, first=i == 0)
            if code:
                return code
        self._warnings(unpersisted(written))
        last = steps[-1].manager
        last.verify(written)
        if any(i.inventory for i in written.instances):
            desired = last.desired
            path = inventory.record_inventory(desired.source, desired, [i.name for i in written.instances])
            self.console.out(f"Certificate inventory recorded in {path}")
        c = plan.counts()
        self.console.out(f"\n{kind} complete: {c.add} added, {c.change} changed, {c.destroy} destroyed.")
        return 0

    def _step(self, plan: Plan, step: Step, what: str, *, first: bool) -> tuple[int, Plan]:
        """Lock, re-check, audit, write. -> (exit code, the re-checked plan)."""
        manager, console = step.manager, self.console
        report = ApplyReport()
        with (step.lock or manager.lock)(plan):
            checked = step.recheck(plan) if step.recheck else Rechecked(manager.recheck(plan, self.narrow), plan)
            if checked.moved:
                if first:
                    for p in checked.moved:
                        console.err(f"refusing to apply: live state changed since {what} was made: {p}")
                    console.err("nothing was changed; plan again")
                else:  # an earlier step wrote: the ledger, not this line, says what
                    for p in checked.moved:
                        console.err(f"refusing to go on: {p}")
                return 1, checked.plan
            audit = self._audit(plan)
            interrupt.DONE.expect(plan)  # an interrupt from here on says what was done
            try:
                with manager.interruptible() as interrupted:
                    for part in step.writes(checked.plan):
                        if part.has_changes:
                            report.extend(manager.apply(part, audit=audit))
            except ApplyError as exc:
                if exc.report is not None:
                    report.extend(exc.report)
                for line in report.summary_lines():
                    console.out(line)
                self._warnings(report.warnings)
                console.err(str(exc))
                return (130 if interrupted.is_set() else 1), checked.plan
            finally:
                if audit is not None:
                    audit.close()
        for line in report.summary_lines():
            console.out(line)
        self._warnings(report.warnings)
        return 0, checked.plan

    def _check_audit_path(self) -> None:
        path = self.options.audit_log or self.manager.desired.audit_log
        what = saved.kept_beside(path, self.manager.desired.source) if path else None
        if what is not None:
            raise ReconcilerError(f"audit log {path} is {what}; name another file (e.g. audit.jsonl); nothing was changed")

    def _audit(self, plan: Plan) -> AuditLog | None:
        path = self.options.audit_log or self.manager.desired.audit_log
        if not path:
            return None
        try:
            return AuditLog(path, plan, fields=self.options.audit_fields)
        except OSError as exc:
            raise ReconcilerError(f"audit log {path}: {exc.strerror or exc}") from None

    def _warnings(self, lines: list[str]) -> None:
        for line in lines:
            self.console.err(f"warning: {line}")


def unpersisted(plan: Plan) -> list[str]:
    """A warning per instance whose changed nodes have neither an aclfile nor a config file."""
    out = []
    for inst in plan.instances:
        nodes = [n.address for n in inst.nodes if n.has_changes and n.persist == "warn"]
        if nodes:
            where = nodes[0] if len(nodes) == 1 else f"{len(nodes)} nodes ({', '.join(nodes)})"
            out.append(f"{inst.name} {where}: no aclfile and no config file; changes live in memory only and are lost on restart")
    return out
