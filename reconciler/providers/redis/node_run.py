"""One node's apply as it runs: what it did (NodeResult, a Step per command) and the
bookkeeping every write goes through (NodeRun): the audit log's attempt and result lines,
the interrupt ledger, the lock check before each write, the stop checks and each command's
deadline. The writes themselves are batches.py, kills.py and persist.py; execute.py runs
them in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ... import interrupt, lock
from ...audit import AuditLog, AuditWriteError, redact
from ...model import Instance
from ...names import shown
from ...plan import NodePlan, UserChange
from ...report import ApplyReport
from .deadline import deadline, timeout_of

# Step outcomes.
OK = "ok"
FAILED = "failed"
IN_DOUBT = "in-doubt"  # sent, but the connection died before the reply
NOT_APPLIED = "not-applied"

MAX_NODE_THREADS = 4
LIST_LIMIT = 50  # names listed per outcome in a failure report (counts stay exact)

Connect = Callable[..., Any]
BatchHook = Callable[[str, str, str, int], None]  # (instance, address, step, batch index)


@dataclass(frozen=True)
class Step:
    action: str  # create | update | delete | kill-sessions | persist
    user: str
    status: str  # ok | failed | in-doubt | not-applied
    detail: str = ""

    @property
    def label(self) -> str:
        if not self.user:
            return self.action
        # `user` names a user, except for config steps ("tls-auth-clients yes"): shown as written.
        return f"{self.action} {self.user if self.action == 'config' else shown(self.user)}"


@dataclass
class NodeResult:
    instance: str
    address: str
    label: str = ""
    steps: list[Step] = field(default_factory=list)
    error: str | None = None  # why this node stopped
    started: bool = False
    killed: dict[str, int] = field(default_factory=dict)
    persisted: str = ""  # what persistence did: acl-save | config-rewrite | warn | none | ""

    def by_status(self, status: str) -> list[Step]:
        return [s for s in self.steps if s.status == status]

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """One line for the success report: `127.0.0.1:6379 (Valkey 9.1.2): 2 created, ...`."""
        counts: dict[str, int] = {}
        for s in self.steps:
            if s.status == OK and s.action in ("create", "update", "delete"):
                counts[s.action] = counts.get(s.action, 0) + 1
        words = {"create": "created", "update": "updated", "delete": "deleted"}
        parts = [f"{counts[a]} {words[a]}" for a in ("create", "update", "delete") if a in counts]
        killed = sum(self.killed.values())
        if killed:
            parts.append(f"{killed} connection{'s' if killed != 1 else ''} killed")
        parts.append(
            {
                "acl-save": "saved (ACL SAVE)",
                "config-rewrite": "saved (CONFIG REWRITE)",
                "sentinel-flushconfig": "saved (SENTINEL FLUSHCONFIG)",
                "warn": "not persisted (in memory only)",
                "none": "persist: none",
            }.get(self.persisted, "not persisted")
        )
        where = f"{self.address} ({self.label})" if self.label else self.address
        return f"{self.instance} {where}: " + ", ".join(parts)

    def summary_lines(self) -> list[str]:
        return [self.summary()]


def node_results(report: ApplyReport) -> list[NodeResult]:
    """The redis nodes' outcomes in a report (which may hold other providers' too)."""
    return [o for o in report.outcomes if isinstance(o, NodeResult)]


def failure_report(nodes: list[NodeResult]) -> str:
    """What was applied, refused, in doubt and not applied on every node of each stopped instance."""
    lines: list[str] = []
    for inst in sorted({n.instance for n in nodes if not n.ok}):
        lines.append(f"apply stopped on instance {inst}:")
        for n in (n for n in nodes if n.instance == inst):
            where = f"{n.address} ({n.label})" if n.label else n.address
            state = f"FAILED: {n.error}" if n.error else "stopped" if n.by_status(NOT_APPLIED) else "complete"
            lines.append(f"  node {where}: {state}")
            for status, title in (
                (OK, "applied"),
                (FAILED, "refused"),
                (IN_DOUBT, "sent, no reply (in doubt)"),
                (NOT_APPLIED, "not applied"),
            ):
                steps = n.by_status(status)
                if not steps:
                    continue
                names = [s.label + (f" ({s.detail})" if status == FAILED and s.detail else "") for s in steps]
                listed = ", ".join(names[:LIST_LIMIT])
                more = f", ... and {len(names) - LIST_LIMIT} more" if len(names) > LIST_LIMIT else ""
                lines.append(f"    {title} ({len(steps)}): {listed}{more}")
    lines.append(
        "Every user is complete on every node (each ACL SETUSER is atomic); "
        "fix the cause and run apply again to converge."
    )
    return redact("\n".join(lines))


class Stop(Exception):
    """This node stops; its NodeResult already says why."""


class NodeRun:
    """One NodePlan being executed; every outcome lands in self.result (and the audit log).

    `pending` holds what each step ("setuser", "deluser", "kill") has still to send: whatever
    is left when the node stops is reported as not applied.
    """

    def __init__(
        self,
        instance: Instance,
        node: NodePlan,
        *,
        connect: Connect,
        audit: AuditLog | None,
        batch_size: int,
        stop: threading.Event,
        between_batches: BatchHook | None,
        warn: Callable[[str], None],
    ):
        self.instance = instance
        self.node = node
        self.connect = connect
        self.audit = audit
        self.batch_size = max(1, batch_size)
        self.stop = stop
        self.between_batches = between_batches
        self.warn = warn
        self.result = NodeResult(instance=instance.name, address=node.address, label=node.label)
        self.pending: dict[str, list[UserChange]] = {}
        self.batch_no = 0
        self.lock = lock.held(instance.name, node.address)

    def record(self, action: str, user: str, status: str, detail: str = "", change: UserChange | None = None) -> None:
        self.result.steps.append(Step(action, user, status, redact(detail)))
        self._ledger(action, user, status, detail)
        if self.audit is not None:
            result = OK if status == OK else f"{status}: {detail}" if detail else status
            try:
                self.audit.record(
                    instance=self.instance.name,
                    node=self.node.address,
                    action=action,
                    user=user,
                    result=result,
                    change=change,
                    detail=detail if status == OK else "",
                )
            except AuditWriteError as exc:
                # The command ran (its attempt line is on disk); nothing more is sent.
                if self.result.error is None:
                    self.fail(f"{exc}; stopped: nothing more is sent that the log cannot name")

    def _ledger(self, action: str, user: str, status: str, detail: str) -> None:
        """What an interrupt later in the run must say was done (interrupt.DONE)."""
        where = (self.instance.name, self.node.address)
        if action in ("create", "update", "delete") and status in (OK, IN_DOUBT):
            what = f"{action} {shown(user)}" + (" (sent, no answer)" if status == IN_DOUBT else "")
            interrupt.DONE.record(*where, what, change=status == OK)
        elif action == "config" and user != "rewrite" and status == OK:
            interrupt.DONE.record(*where, f"CONFIG SET {user}", change=True)
        elif action == "kill-sessions" and status == OK:
            interrupt.DONE.record(*where, f"killed {shown(user)}'s connections", change=False)
        elif action == "persist" and status == OK and detail in ("acl-save", "config-rewrite", "sentinel-flushconfig"):
            interrupt.DONE.record(*where, f"saved ({detail})", change=False)

    def attempt(self, steps: list[tuple[str, str, UserChange | None]]) -> None:
        """Before sending: the audit log names every command of the batch (synced to disk)."""
        if self.audit is not None:
            try:
                self.audit.attempt(instance=self.instance.name, node=self.node.address, steps=steps)
            except AuditWriteError as exc:
                self.fail(f"{exc}; stopped before sending what the log could not name")
                raise Stop from None

    def fail(self, error: str) -> None:
        self.result.error = redact(error)
        self.stop.set()

    def mark_rest_not_applied(self) -> None:
        for step in ("setuser", "deluser", "kill"):
            for c in self.pending.get(step, []):
                action = "kill-sessions" if step == "kill" else c.action
                self.record(action, c.user, NOT_APPLIED, change=c)
            self.pending[step] = []
        if self.result.persisted == "":
            self.record("persist", "", NOT_APPLIED)

    def check_lock(self, before: str) -> None:
        """The node's apply lock must still be held (when this process took one) before a write."""
        if self.lock is None:
            return
        problem = self.lock.check(self.node.address)
        if problem is not None:
            self.fail(
                f"apply lock not held before {before} (its connection: {problem}): the node went away or the "
                "lock connection was closed, and another apply may be writing; stopped here, run apply again"
            )
            raise Stop

    def check_stop(self) -> None:
        if interrupt.REQUESTED.is_set():
            if self.result.error is None:
                self.result.error = "interrupted: stopped after the batch in flight"
            raise Stop
        if self.stop.is_set():
            if self.result.error is None:
                self.result.error = "stopped: another node of this instance failed"
            raise Stop

    def before_write(self, phase: str) -> None:
        """Every write begins here: not stopped, the lock still held, the node started."""
        self.check_stop()
        self.check_lock(phase)
        self.result.started = True

    def deadline(self, client: Any, phase: str) -> Any:
        return deadline(client, timeout_of(self.instance), f"{self.instance.name} {self.node.address}", phase)
