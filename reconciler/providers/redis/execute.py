"""Executor: carry out a Plan on the live nodes, then verify.

Per node, in this order:
  1. one atomic `ACL SETUSER name reset <on|off> <#hash..|resetpass|nopass> <rules>` per
     created/updated user, pipelined without MULTI in batches (one round trip per batch),
     every reply checked;
  2. `ACL DELUSER` for deleted users (same batching)              -- both batches.py
  3. kill the open connections of every change with kill_sessions (`off` and password removal
     leave them alive), except this process's own (the apply lock)  -- kills.py
  4. CONFIG SET for managed settings, then persistence (`ACL SAVE`, `CONFIG REWRITE`, or a
     warning that changes live in memory only)                      -- persist.py
and afterwards verify.py re-reads what was touched.

Nodes of one instance run in parallel (ACLs are per node: replicas and cluster members do not
propagate them). When a node dies or refuses a command, that instance stops: nodes still
running finish the batch in flight and send nothing more. Because every SETUSER is atomic,
each user on each node is either fully old or fully new; a re-run converges. Before each batch
(and before CONFIG SET and persist) the node's apply lock must still be held (lock.check): a
lock connection that died stops the node before it writes more. Every outcome is recorded
through node_run.NodeRun (audit log, interrupt ledger, the node's result).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ...audit import AuditLog
from ...errors import ApplyError, ReconcilerError
from ...model import DesiredState, Instance
from ...plan import Action, InstancePlan, NodePlan, Plan, UserChange
from ...report import ApplyReport
from . import batches, kills, persist
from .node_run import MAX_NODE_THREADS, BatchHook, Connect, NodeResult, NodeRun, Stop, failure_report, node_results
from .verify import verify, verify_targets

# Callers reach the whole executor through this module: execute, then verify.
__all__ = ["NodeResult", "execute", "failure_report", "node_results", "verify", "verify_targets"]


def _default_connect() -> Connect:
    from . import read as live

    return live.connect


def _pending_kills(node: NodePlan) -> list[UserChange]:
    """CLIENT KILL USER an earlier apply did not get to: its revoke is not complete until it runs."""
    planned = {c.user for c in node.changes if c.kill_sessions}
    users = [p.split(" ", 1)[1] for p in node.pending if p.startswith("kill-sessions ")]
    return [UserChange(action=Action.UPDATE, user=u, kill_sessions=True, note="pending") for u in users if u not in planned]


def _run_node(run: NodeRun) -> NodeResult:
    """One node, in the order above; whatever a stop leaves is recorded as not applied."""
    changes = run.node.changes
    run.pending = {
        "setuser": [c for c in changes if c.action in ("create", "update")],
        "deluser": [c for c in changes if c.action == "delete"],
        "kill": [c for c in changes if c.kill_sessions] + _pending_kills(run.node),
    }
    try:
        run.check_stop()
        try:
            client = run.connect(run.instance.for_role(run.node.role), run.node.address)
        except ReconcilerError as exc:
            run.fail(str(exc))
            raise Stop from None
        except Exception as exc:  # connection refused, TLS, auth: the node cannot be written
            run.fail(f"{run.instance.name} {run.node.address}: cannot connect: {exc}")
            raise Stop from None
        try:
            batches.send(run, client, "setuser")
            batches.send(run, client, "deluser")
            kills.kill(run, client)
            persist.set_config(run, client)
            persist.persist(run, client)
        finally:
            try:
                client.close()
            except Exception:  # closing a dead connection: nothing left to release
                pass
    except Stop:
        run.mark_rest_not_applied()
    return run.result


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
        NodeRun(
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
        return [_run_node(r) for r in runs]
    with ThreadPoolExecutor(max_workers=min(MAX_NODE_THREADS, len(runs))) as pool:
        return list(pool.map(_run_node, runs))


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
