"""The apply pipeline: one plan carried to the servers, the same way for `apply -f`,
`apply PLAN.json` and each server-changing step of `rotate`:

    rails -> confirm -> lock -> re-check -> audit -> execute -> verify -> records

Nothing is written before every check has passed: the rails found nothing, the operator said
yes (or passed --auto-approve), and under the lock the file and live state still produce
exactly the plan that was confirmed. A stop request (SIGINT/SIGTERM) ends the apply after the
batch in flight; work an apply left unfinished is recorded for the next one (Manager.apply).

The Manager owns the pipeline (Manager.pipeline); the pipeline never prints: it talks to the
operator through the Console the command supplies (rendering the plan, asking, printing lines).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import interrupt, inventory
from .audit import AuditLog
from .errors import ApplyError, ReconcilerError
from .plan import Plan
from .render import refusal_lines
from .state import LiveState

if TYPE_CHECKING:
    from .manager import Manager


@dataclass
class Console:
    """How a run talks to the operator; the command decides where each piece goes."""

    out: Callable[[str], None]  # a result line (stdout)
    err: Callable[[str], None]  # an error or warning line (stderr), without the "reconciler: " prefix
    present: Callable[[Plan], None]  # show a plan
    confirm: Callable[[Plan], bool]  # ask; raises ReconcilerError when nobody can be asked


@dataclass(frozen=True)
class Options:
    force: bool = False  # the delete threshold may be passed
    audit_log: str | None = None  # --audit-log; else the file's audit_log
    audit_fields: dict[str, Any] = field(default_factory=dict)  # added to every audit line (a rotation's id)


class Pipeline:
    """Carries plans to the servers for one Manager.

    lock: how the instances a plan writes are held (default Manager.lock); a caller that holds
    them already for several plans (a rotation) passes its own. narrow: what of a fresh plan
    the confirmed plan stands for (a rotation confirms one user's changes), applied to the
    re-check's plan before comparing.
    """

    def __init__(
        self,
        manager: "Manager",
        console: Console,
        options: Options | None = None,
        *,
        lock: Callable[[Plan], AbstractContextManager[Any]] | None = None,
        narrow: Callable[[Plan], Plan] | None = None,
    ):
        self.manager = manager
        self.console = console
        self.options = options or Options()
        self.lock = lock or manager.lock
        self.narrow = narrow or (lambda plan: plan)

    def run(self, plan: Plan, state: LiveState, *, what: str = "the plan shown", present: bool = False,
            checked: bool = False) -> int:
        """The rails' verdict (Manager.check, unless `checked`: the plan carries it already), the
        plan shown when `present`, then refusals, confirm and execute. Exit code."""
        if not checked:
            plan = self.manager.check(plan, state, force=self.options.force)
        if present:
            self.console.present(plan)
        if self.refuse(plan):
            return 1
        if not self.console.confirm(plan):
            self.console.err("apply cancelled; nothing was changed")
            return 1
        return self.execute(plan, what)

    def refuse(self, plan: Plan) -> bool:
        """Say the rails' verdict (a refusal per line; what --force lifted as warnings); True when
        the plan is refused."""
        for line in refusal_lines(plan, "refusing to apply"):
            self.console.err(line)
        if not plan.refused:
            return False
        self.console.err("nothing was changed")
        return True

    def execute(self, plan: Plan, what: str = "the plan shown") -> int:
        """Lock, re-check, audit, apply, verify, record. Exit code: 0, 1, or 130 when stopped."""
        manager, console = self.manager, self.console
        desired = manager.desired
        with self.lock(plan):
            moved = self.recheck(plan)
            if moved:
                for p in moved:
                    console.err(f"refusing to apply: live state changed since {what} was made: {p}")
                console.err("nothing was changed; plan again")
                return 1
            audit = self._audit(plan)
            interrupt.DONE.expect(plan)  # an interrupt from here on says what was done
            try:
                with manager.interruptible() as interrupted:
                    report = manager.apply(plan, audit=audit)
            except ApplyError as exc:
                if exc.report is not None:
                    for line in exc.report.summary_lines():
                        console.out(line)
                    self._warnings(exc.report.warnings)
                console.err(str(exc))
                return 130 if interrupted.is_set() else 1
            finally:
                if audit is not None:
                    audit.close()
        for line in report.summary_lines():
            console.out(line)
        self._warnings(report.warnings + unpersisted(plan))
        manager.verify(plan)
        if any(i.inventory for i in plan.instances):
            path = inventory.record_inventory(desired.source, desired, [i.name for i in plan.instances])
            console.out(f"Certificate inventory recorded in {path}")
        c = plan.counts()
        console.out(f"\nApply complete: {c.add} added, {c.change} changed, {c.destroy} destroyed.")
        return 0

    def recheck(self, plan: Plan) -> list[str]:
        return self.manager.recheck(plan, self.narrow)

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
