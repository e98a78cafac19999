"""After an apply: re-read every node the plan touched and check that each change holds there.

Only the touched users are parsed and compared (enabled, tokens, effective permissions: the
planner's own comparison), deleted users must be gone and each CONFIG SET in effect. The rest
of a node was in sync when the plan was made, so nothing is re-planned: verifying 10,000
created users costs one ACL LIST per node, not a second plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from ...errors import ApplyError, ReconcilerError
from ...model import DesiredState, Instance
from ...names import shown
from ...plan import NodePlan, Plan, UserChange
from ...state import NodeState
from .node_run import MAX_NODE_THREADS


def verify(
    plan: Plan,
    desired: DesiredState,
    *,
    today: date | None = None,
    read_node: Callable[..., NodeState] | None = None,
) -> None:
    """Re-read every node the plan touched; each change must hold there, else ApplyError.
    `today` is unused (the plan already judged expiry); it stays for the providers' verify
    interface."""
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
            config_left = [cc for cc in node.config if _config_value(state, cc.parameter) != cc.after]
            if left:
                problems.append(f"did not converge on node {node.address} ({name}): {_describe_left(left)}")
            elif config_left:
                settings = ", ".join(f"{cc.parameter} {cc.after}" for cc in config_left)
                problems.append(f"did not converge on node {node.address} ({name}): CONFIG {settings}")
    if problems:
        raise ApplyError("\n".join(problems))


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


def same_permissions(wanted: str, live_rules: str, state: NodeState) -> bool:
    from ... import acl

    table = state.acl_table()  # the one the plan was made with
    return acl.effective(wanted, table) == acl.effective(live_rules, table)


def _touched_nodes(plan: Plan) -> dict[str, list[NodePlan]]:
    return {i.name: [n for n in i.nodes if n.has_changes] for i in plan.instances if any(n.has_changes for n in i.nodes)}


def _describe_left(changes: Sequence[UserChange]) -> str:
    parts = [f"{c.action} {shown(c.user)}" for c in changes[:10]]
    more = f", ... and {len(changes) - 10} more" if len(changes) > 10 else ""
    return ", ".join(parts) + more


def _verify_read(read_node: Callable[..., NodeState], instance: Instance, node: NodePlan) -> NodeState:
    try:
        only = frozenset(c.user for c in node.changes)  # the touched users; the rest is not parsed
        if node.role == "sentinel":
            return read_node(instance.for_role("sentinel"), node.address, role="sentinel", only=only)
        return read_node(instance, node.address, only=only)
    except ReconcilerError as exc:
        # The writes are done; say so, so nobody reads this as a failed apply.
        raise ApplyError(f"verify (re-reading after the apply): {exc}") from None


def _config_value(state: NodeState, parameter: str) -> str | None:
    # ConfigChange parameters are server settings NodeState carries (tls-auth-clients -> tls_auth_clients).
    return getattr(state, parameter.replace("-", "_"), None)


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
