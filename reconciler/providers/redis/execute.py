"""Executor: carry out a Plan on the live nodes, then verify.

Per node, in this order:
  1. one atomic `ACL SETUSER name reset <on|off> <#hash..|resetpass|nopass> <rules>` per
     created/updated user, pipelined without MULTI in batches (one round trip per batch),
     every reply checked;
  2. `ACL DELUSER` for deleted users (same batching);
  3. kill the open connections of every change with kill_sessions (`off` and password removal
     leave them alive): CLIENT LIST, then `CLIENT KILL ID` for each of the user's connections
     except this process's own (the apply lock, named like it; our own connection is skipped by
     the server). `CLIENT KILL USER` would also close the lock when the admin's own token is
     revoked. After DELUSER the user has no connections left (DELUSER dropped them);
  4. persistence (`ACL SAVE`, `CONFIG REWRITE`, or a warning that changes live in memory only).

Nodes of one instance run in parallel (ACLs are per node: replicas and cluster members do not
propagate them). When a node dies or refuses a command, that instance stops: nodes still
running finish the batch in flight and send nothing more. Because every SETUSER is atomic,
each user on each node is either fully old or fully new; a re-run converges. Before each batch
(and before CONFIG SET and persist) the node's apply lock must still be held (lock.check): a
lock connection that died stops the node before it writes more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ... import interrupt, lock
from ...audit import AuditLog, redact
from ...errors import ApplyError, LiveError, ReconcilerError
from ...model import DesiredState, Instance
from ...names import shown
from ...plan import Action, InstancePlan, NodePlan, Plan, UserChange
from ...report import ApplyReport
from ...state import NodeState
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


class _Stop(Exception):
    """Internal: this node stops; the NodeResult already says why."""


def _default_connect() -> Connect:
    from . import read as live

    return live.connect


def _is_ok(reply: Any) -> bool:
    return reply is True or reply in (b"OK", "OK")


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _pending_kills(node: NodePlan) -> list[UserChange]:
    """CLIENT KILL USER an earlier apply did not get to: its revoke is not complete until it runs."""
    planned = {c.user for c in node.changes if c.kill_sessions}
    users = [p.split(" ", 1)[1] for p in node.pending if p.startswith("kill-sessions ")]
    return [UserChange(action=Action.UPDATE, user=u, kill_sessions=True, note="pending") for u in users if u not in planned]


def _config_changes(node: NodePlan) -> tuple[Any, ...]:
    return node.config


class _NodeRun:
    """Executes one NodePlan; every outcome lands in self.result (and the audit log)."""

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

    # -- bookkeeping ---------------------------------------------------------------------

    def _record(self, action: str, user: str, status: str, detail: str = "", change: UserChange | None = None) -> None:
        self.result.steps.append(Step(action, user, status, redact(detail)))
        self._ledger(action, user, status, detail)
        if self.audit is not None:
            result = OK if status == OK else f"{status}: {detail}" if detail else status
            self.audit.record(
                instance=self.instance.name,
                node=self.node.address,
                action=action,
                user=user,
                result=result,
                change=change,
                detail=detail if status == OK else "",
            )

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

    def _attempt(self, steps: list[tuple[str, str, UserChange | None]]) -> None:
        """Before sending: the audit log names every command of the batch (synced to disk)."""
        if self.audit is not None:
            self.audit.attempt(instance=self.instance.name, node=self.node.address, steps=steps)

    def _fail(self, error: str) -> None:
        self.result.error = redact(error)
        self.stop.set()

    def _mark_rest_not_applied(self) -> None:
        for step in ("setuser", "deluser", "kill"):
            for c in self.pending.get(step, []):
                action = "kill-sessions" if step == "kill" else c.action
                self._record(action, c.user, NOT_APPLIED, change=c)
            self.pending[step] = []
        if self.result.persisted == "":
            self._record("persist", "", NOT_APPLIED)

    def _check_lock(self, before: str) -> None:
        """The node's apply lock must still be held (when this process took one) before a write."""
        if self.lock is None:
            return
        problem = self.lock.check(self.node.address)
        if problem is not None:
            self._fail(
                f"apply lock not held before {before} (its connection: {problem}): the node went away or the "
                "lock connection was closed, and another apply may be writing; stopped here, run apply again"
            )
            raise _Stop

    def _check_stop(self) -> None:
        if interrupt.REQUESTED.is_set():
            if self.result.error is None:
                self.result.error = "interrupted: stopped after the batch in flight"
            raise _Stop
        if self.stop.is_set():
            if self.result.error is None:
                self.result.error = "stopped: another node of this instance failed"
            raise _Stop

    # -- the steps -----------------------------------------------------------------------

    def run(self) -> NodeResult:
        changes = self.node.changes
        self.pending = {
            "setuser": [c for c in changes if c.action in ("create", "update")],
            "deluser": [c for c in changes if c.action == "delete"],
            "kill": [c for c in changes if c.kill_sessions] + _pending_kills(self.node),
        }
        try:
            self._check_stop()
            try:
                client = self.connect(self.instance.for_role(self.node.role), self.node.address)
            except ReconcilerError as exc:
                self._fail(str(exc))
                raise _Stop from None
            except Exception as exc:  # connection refused, TLS, auth: the node cannot be written
                self._fail(f"{self.instance.name} {self.node.address}: cannot connect: {exc}")
                raise _Stop from None
            try:
                self._pipelined(client, "setuser")
                self._pipelined(client, "deluser")
                self._kill(client)
                self._config(client)
                self._persist(client)
            finally:
                try:
                    client.close()
                except Exception:  # closing a dead connection: nothing left to release
                    pass
        except _Stop:
            self._mark_rest_not_applied()
        return self.result

    def _command(self, step: str, c: UserChange) -> tuple[str, ...]:
        if step == "setuser":
            return ("ACL", "SETUSER", c.user, *c.setuser_args())
        return ("ACL", "DELUSER", c.user)

    def _pipelined(self, client: Any, step: str) -> None:
        items = self.pending.get(step, [])
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            self.pending[step] = items[start:]
            self._check_stop()
            self._check_lock(f"{step} batch {self.batch_no + 1}")
            self.result.started = True
            self._attempt([("kill-sessions" if step == "kill" else c.action, c.user, c) for c in batch])
            pipe = client.pipeline(transaction=False)
            for c in batch:
                pipe.execute_command(*self._command(step, c))
            try:
                with _deadline(client, self.instance, self.node.address, f"{step} batch {self.batch_no + 1}"):
                    replies = pipe.execute(raise_on_error=False)
            except Exception as exc:  # the node died, stalled past the deadline or broke mid-batch
                for c in batch:
                    self._record("kill-sessions" if step == "kill" else c.action, c.user, IN_DOUBT, change=c)
                self.pending[step] = items[start + len(batch) :]
                self._fail(f"connection lost during {step} batch {self.batch_no + 1}: {exc}")
                raise _Stop from None
            refused: list[str] = []
            for c, reply in zip(batch, replies, strict=True):
                refused_text = self._check_reply(step, c, reply)
                if refused_text:
                    refused.append(f"{shown(c.user)}: {refused_text}")
            self.pending[step] = items[start + len(batch) :]
            self.batch_no += 1
            if refused:
                self._fail(f"server refused {len(refused)} command(s): " + "; ".join(refused[:5]))
                raise _Stop from None
            if self.between_batches is not None:
                self.between_batches(self.instance.name, self.node.address, step, self.batch_no)

    def _kill(self, client: Any) -> None:
        """Close the open connections of each user whose sessions the plan kills, except this
        process's own: one CLIENT LIST per batch, then CLIENT KILL ID per connection (pipelined)."""
        items = self.pending.get("kill", [])
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            self.pending["kill"] = items[start:]
            self._check_stop()
            self._check_lock(f"kill batch {self.batch_no + 1}")
            self.result.started = True
            phase = f"kill batch {self.batch_no + 1}"
            try:
                with _deadline(client, self.instance, self.node.address, f"{phase}: CLIENT LIST"):
                    listed = lock.parse_clients(client.execute_command("CLIENT", "LIST"))
            except Exception as exc:  # nothing was killed yet: refused, or the node is gone
                for c in batch:
                    self._record("kill-sessions", c.user, FAILED, f"CLIENT LIST: {exc}", c)
                self.pending["kill"] = items[start + len(batch) :]
                self._fail(f"{phase}: CLIENT LIST failed: {exc}")
                raise _Stop from None
            ours = lock.own_names()
            ids = {c.user: [e["id"] for e in listed if e.get("user") == c.user and e.get("name", "") not in ours and e.get("id")] for c in batch}
            self._attempt([("kill-sessions", c.user, c) for c in batch])
            pipe = client.pipeline(transaction=False)
            for c in batch:
                for client_id in ids[c.user]:
                    pipe.execute_command("CLIENT", "KILL", "ID", client_id)  # SKIPME yes: never this connection
            try:
                with _deadline(client, self.instance, self.node.address, phase):
                    replies = pipe.execute(raise_on_error=False) if any(ids.values()) else []
            except Exception as exc:  # the node died, stalled past the deadline or broke mid-batch
                for c in batch:
                    self._record("kill-sessions", c.user, IN_DOUBT, change=c)
                self.pending["kill"] = items[start + len(batch) :]
                self._fail(f"connection lost during {phase}: {exc}")
                raise _Stop from None
            refused: list[str] = []
            at = 0
            for c in batch:
                mine = replies[at : at + len(ids[c.user])]
                at += len(ids[c.user])
                errors = [r for r in mine if isinstance(r, Exception)]
                n = sum(int(r) for r in mine if not isinstance(r, Exception))
                if not errors:
                    self.result.killed[c.user] = n  # pending.finish: this revoke is complete
                if errors:
                    self._record("kill-sessions", c.user, FAILED, str(errors[0]), c)
                    refused.append(f"{shown(c.user)}: {errors[0]}")
                elif c.action == "delete" and not ids[c.user]:
                    # Measured on Redis 6.2-Valkey 9.1: DELUSER closes the user's connections.
                    self._record("kill-sessions", c.user, OK, "user deleted; DELUSER closed its connections", c)
                else:
                    self._record("kill-sessions", c.user, OK, f"{n} connection{'s' if n != 1 else ''} killed", c)
            self.pending["kill"] = items[start + len(batch) :]
            self.batch_no += 1
            if refused:
                self._fail(f"server refused {len(refused)} command(s): " + "; ".join(refused[:5]))
                raise _Stop from None
            if self.between_batches is not None:
                self.between_batches(self.instance.name, self.node.address, "kill", self.batch_no)

    def _check_reply(self, step: str, c: UserChange, reply: Any) -> str:
        """Record the outcome of one command; return the refusal text ("" when it worked)."""
        if isinstance(reply, Exception):
            self._record(c.action, c.user, FAILED, str(reply), c)
            return str(reply)
        if step == "setuser" and not _is_ok(reply):
            self._record(c.action, c.user, FAILED, f"unexpected reply {_text(reply)!r}", c)
            return f"unexpected reply {_text(reply)!r}"
        detail = "already absent" if step == "deluser" and int(reply) == 0 else ""
        self._record(c.action, c.user, OK, detail, c)
        return ""

    def _config(self, client: Any) -> None:
        """CONFIG SET for managed settings (tls_client_auth); CONFIG REWRITE when the server has a config file."""
        config = _config_changes(self.node)
        if not config:
            return
        self._check_stop()
        self._check_lock("CONFIG SET")
        self.result.started = True
        for cc in config:
            label = f"{cc.parameter} {cc.after}"
            self._attempt([("config", label, None)])
            try:
                with _deadline(client, self.instance, self.node.address, f"CONFIG SET {cc.parameter}"):
                    client.execute_command("CONFIG", "SET", cc.parameter, cc.after)
            except LiveError as exc:  # the deadline: sent, no answer
                self._record("config", label, IN_DOUBT, str(exc))
                self._fail(str(exc))
                raise _Stop from None
            except Exception as exc:
                self._record("config", label, FAILED, str(exc))
                self._fail(f"CONFIG SET {label} refused: {exc}")
                raise _Stop from None
            self._record("config", label, OK, f"was {cc.before}")
        if any(cc.rewrite for cc in config) and self.node.persist != "config-rewrite":
            self._attempt([("config", "rewrite", None)])
            try:
                with _deadline(client, self.instance, self.node.address, "CONFIG REWRITE"):
                    client.execute_command("CONFIG", "REWRITE")
            except Exception as exc:
                self._record("config", "rewrite", FAILED, str(exc))
                self._fail(f"CONFIG REWRITE after CONFIG SET failed: {exc}")
                raise _Stop from None
            self._record("config", "rewrite", OK)

    def _persist(self, client: Any) -> None:
        self._check_stop()
        self._check_lock("persist")
        mode = self.node.persist
        if mode not in ("warn", "none"):
            self._attempt([("persist", "", None)])
        try:
            with _deadline(client, self.instance, self.node.address, "persist"):
                if mode == "auto":
                    # The aclfile setting could not be read (no CONFIG GET). ACL SAVE is tried first: only
                    # the server's own "no ACL file" answer makes CONFIG REWRITE (or nothing) safe.
                    mode = self._save_or_fallback(client)
                elif mode == "acl-save":
                    client.execute_command("ACL", "SAVE")
                elif mode == "config-rewrite":
                    client.execute_command("CONFIG", "REWRITE")
                elif mode == "sentinel-flushconfig":  # a sentinel has no CONFIG REWRITE; this rewrites its file, users too
                    client.execute_command("SENTINEL", "FLUSHCONFIG")
                # mode "warn": nothing to run; the command says so once per instance (manager.unpersisted)
        except Exception as exc:
            self._record("persist", "", FAILED, f"{mode}: {exc}")
            self.result.persisted = "failed"
            self._fail(f"persist ({mode}) failed: {exc}")
            raise _Stop from None
        self.result.persisted = mode
        self._record("persist", "", OK, mode)

    def _save_or_fallback(self, client: Any) -> str:
        try:
            client.execute_command("ACL", "SAVE")
            return "acl-save"
        except Exception as exc:
            if "acl file" not in str(exc).lower():
                raise
        try:
            client.execute_command("CONFIG", "REWRITE")
            return "config-rewrite"
        except Exception as exc:
            if "config file" not in str(exc).lower():
                raise
        self.warn(f"{self.instance.name} {self.node.address}: no aclfile and no config file; changes live in memory only")
        return "warn"


def _deadline(client: Any, instance: Instance, address: str, phase: str) -> Any:

    return deadline(client, timeout_of(instance), f"{instance.name} {address}", phase)


def _run_instance(
    inst_plan: InstancePlan,
    instance: Instance,
    *,
    connect: Connect,
    audit: AuditLog | None,
    batch_size: int,
    between_batches: BatchHook | None,
    warn: Callable[[str], None],
) -> list[NodeResult]:
    nodes = [n for n in inst_plan.nodes if n.has_changes]
    stop = threading.Event()
    runs = [
        _NodeRun(
            instance,
            n,
            connect=connect,
            audit=audit,
            batch_size=batch_size,
            stop=stop,
            between_batches=between_batches,
            warn=warn,
        )
        for n in nodes
    ]
    if len(runs) <= 1:
        return [r.run() for r in runs]
    with ThreadPoolExecutor(max_workers=min(MAX_NODE_THREADS, len(runs))) as pool:
        return list(pool.map(lambda r: r.run(), runs))


def execute(
    plan: Plan,
    desired: DesiredState,
    *,
    audit: AuditLog | None = None,
    connect: Connect | None = None,
    batch_size: int = 1000,
    between_batches: BatchHook | None = None,
    warn: Callable[[str], None] | None = None,
) -> ApplyReport:
    """Execute every node plan; raise ApplyError (with .report) when any instance stopped.

    `connect(instance, address)` returns an authenticated admin client (read.connect).
    `between_batches` is called after each completed batch (tests kill servers there).
    Warnings go to the report (and to `warn` as they happen, when given).
    """
    connect = connect or _default_connect()
    if between_batches is None:
        from ... import progress

        between_batches = progress.batch_hook(plan, batch_size)
    report = ApplyReport()

    def _warn_and_record(message: str) -> None:
        report.warnings.append(message)
        if warn is not None:
            warn(message)

    nodes: list[NodeResult] = []
    for inst_plan in plan.instances:
        if not any(n.has_changes for n in inst_plan.nodes):
            continue
        instance = desired.instances.get(inst_plan.name)
        if instance is None:
            raise ApplyError(f"plan names instance {inst_plan.name!r}, which {desired.source} does not declare", report)
        nodes.extend(
            _run_instance(
                inst_plan,
                instance,
                connect=connect,
                audit=audit,
                batch_size=batch_size,
                between_batches=between_batches,
                warn=_warn_and_record,
            )
        )
    report.outcomes.extend(nodes)
    if not all(n.ok for n in nodes):
        raise ApplyError(failure_report(nodes), report)
    return report


# -- verification ------------------------------------------------------------------------


def _touched_nodes(plan: Plan) -> dict[str, list[NodePlan]]:
    return {i.name: [n for n in i.nodes if n.has_changes] for i in plan.instances if any(n.has_changes for n in i.nodes)}


def _describe_left(changes: Sequence[UserChange]) -> str:
    parts = [f"{c.action} {shown(c.user)}" for c in changes[:10]]
    more = f", ... and {len(changes) - 10} more" if len(changes) > 10 else ""
    return ", ".join(parts) + more


def _reread(read_node: Callable[..., NodeState], instance: Instance, node: NodePlan) -> NodeState:
    only = frozenset(c.user for c in node.changes)  # the touched users; the rest is not parsed
    if node.role == "sentinel":
        return read_node(instance.for_role("sentinel"), node.address, role="sentinel", only=only)
    return read_node(instance, node.address, only=only)


def verify(
    plan: Plan,
    desired: DesiredState,
    *,
    today: date | None = None,
    read_node: Callable[..., NodeState] | None = None,
) -> None:
    """Re-read every node the plan touched; each change must hold there, else ApplyError.

    Only the touched users are parsed and compared (enabled, tokens, effective permissions:
    the planner's own comparison), deleted users must be gone and each CONFIG SET in effect.
    The rest of a node was in sync when the plan was made, so nothing is re-planned: verifying
    10,000 created users costs one ACL LIST per node, not a second plan. `today` is unused
    (the plan already judged expiry); it stays for the providers' verify interface.
    """
    if read_node is None:
        from . import read as live

        read_node = live.read_node
    from ... import progress

    problems = []
    for name, nodes in _touched_nodes(plan).items():
        instance = desired.instances[name]
        tick = progress.counter(f"verify {name}", f"verifying {name}", len(nodes), "nodes")

        def read_one(n: NodePlan, instance: Instance = instance, tick: Callable[[], None] = tick) -> NodeState:
            state = _verify_read(read_node, instance, n)
            tick()
            return state

        # In parallel, like the first read: verifying a 6-node cluster should not cost 6 reads in a row.
        with ThreadPoolExecutor(max_workers=min(MAX_NODE_THREADS, len(nodes))) as pool:
            states = list(pool.map(read_one, nodes))
        for node, state in zip(nodes, states, strict=True):
            left = [c for c in node.changes if not _holds(c, state)]
            config_left = [cc for cc in _config_changes(node) if _config_value(state, cc.parameter) != cc.after]
            if left:
                problems.append(f"did not converge on node {node.address} ({name}): {_describe_left(left)}")
            elif config_left:
                settings = ", ".join(f"{cc.parameter} {cc.after}" for cc in config_left)
                problems.append(f"did not converge on node {node.address} ({name}): CONFIG {settings}")
    if problems:
        raise ApplyError("\n".join(problems))


def _config_value(state: NodeState, parameter: str) -> str | None:
    # ConfigChange parameters are server settings NodeState carries (tls-auth-clients -> tls_auth_clients).
    return getattr(state, parameter.replace("-", "_"), None)


def _verify_read(read_node: Callable[..., NodeState], instance: Instance, node: NodePlan) -> NodeState:
    try:
        return _reread(read_node, instance, node)
    except ReconcilerError as exc:
        # The writes are done; say so, so nobody reads this as a failed apply.
        raise ApplyError(f"verify (re-reading after the apply): {exc}") from None


def verify_targets(plan: Plan, nodes: dict[tuple[str, str], NodeState]) -> list[str]:
    """Plan-only check for a saved plan: each change's target state is what the node now holds.

    `nodes` maps (instance, address) to a fresh read. Permissions are compared on effective
    meaning through the ACL engine (servers rewrite rule text).
    """
    problems: list[str] = []
    for inst in plan.instances:
        for node in inst.nodes:
            if not node.changes:
                continue
            state = nodes[(inst.name, node.address)]
            left = [c for c in node.changes if not _holds(c, state)]
            if left:
                problems.append(f"did not converge on node {node.address} ({inst.name}): {_describe_left(left)}")
    return problems


def _holds(change: UserChange, state: NodeState) -> bool:
    user = state.users.get(change.user)
    if change.action == "delete":
        return user is None
    if user is None:
        return False
    if user.enabled != change.enabled or user.nopass != change.nopass:
        return False
    if set(user.hashes) != set(change.hashes) and not change.nopass:
        return False
    return same_permissions(change.rules, user.rules, state)


def same_permissions(wanted: str, live_rules: str, state: NodeState) -> bool:
    from ... import acl

    table = state.acl_table()  # the one the plan was made with
    return acl.effective(wanted, table) == acl.effective(live_rules, table)
