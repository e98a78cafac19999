"""Safety rails: pure checks over a plan and the live state it was made from.

Each rail returns a list of problems (one line each). `check` runs them all and is the one
entry point: `plan`, `plan --out`, `drift` and every kind of `apply` call it (through
Manager.check), so a plan shows exactly what apply would refuse. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from . import rights
from .model import DesiredState
from .plan import FORCE_HINT, InstancePlan, NodePlan, Plan, Rail, Refusal, UserChange
from .state import InstanceState, LiveState, NodeState

# How a command is asked of the engine: bare COMMAND is a container on 7.0+, whose own bit the
# engine does not model, so its INFO subcommand stands in for it (same categories).
_PROBE = {"command": ["command", "info"]}

TableLookup = Callable[[NodeState], Any]


def _admin_hash(node: NodeState, desired: DesiredState | None, instance: str) -> str | None:
    if node.admin_hash:
        return node.admin_hash
    if desired is not None and instance in desired.instances:
        secret = desired.instances[instance].for_role(node.role).admin.secret
        if secret is not None:
            return hashlib.sha256(secret.reveal().encode()).hexdigest()
    return None


def _default_table(node: NodeState) -> Any:
    # The table the plan was made with (bundled, or read off the node): never a nearby version's.
    return node.acl_table()


def missing_commands(rules: str, table: Any, required: tuple[rights.Requirement, ...]) -> list[str]:
    """Requirements a user with these rules could not meet (what ACL DRYRUN would say), each as
    `CMD` or `CMD1 or CMD2` when any one of several will do."""
    from . import acl

    perms = acl.effective(rules, table)
    return [
        " or ".join(c.upper() for c in group)
        for group in required
        if not any(acl.check(perms, _PROBE.get(cmd, cmd.split("|")), table) for cmd in group)
    ]


def lockout(
    plan: Plan,
    live: LiveState,
    desired: DesiredState | None = None,
    *,
    table_for: TableLookup | None = None,
) -> list[str]:
    """Changes that would cut the reconciler's own admin user off any node."""
    table_for = table_for or _default_table
    problems: list[str] = []
    for inst, node_plan, node in _planned_nodes(plan, live):
        if node is None:
            continue
        for change in node_plan.changes:
            if change.user != node.admin_user:
                continue
            where = f"{inst.name} {node.address}: admin user {change.user}"
            problems.extend(f"{where}: {p}" for p in _admin_problems(change, node, desired, inst, table_for))
    return problems


def _planned_nodes(plan: Plan, live: LiveState) -> list[tuple[InstancePlan, NodePlan, NodeState | None]]:
    """Every node plan with the live node it was made for (None when the live state lacks it)."""
    out: list[tuple[InstancePlan, NodePlan, NodeState | None]] = []
    for inst in plan.instances:
        inst_live = live.instances.get(inst.name)
        nodes = {n.address: n for n in inst_live.nodes} if inst_live else {}
        out.extend((inst, node_plan, nodes.get(node_plan.address)) for node_plan in inst.nodes)
    return out


def _admin_problems(
    change: UserChange, node: NodeState, desired: DesiredState | None, inst: InstancePlan, table_for: TableLookup
) -> list[str]:
    if change.action == "delete":
        return ["the plan deletes the user the reconciler logs in as"]
    out: list[str] = []
    if not change.enabled:
        out.append("the plan disables the user the reconciler logs in as")
    if not change.nopass:
        token = _admin_hash(node, desired, inst.name)
        if token is not None and token not in change.hashes:
            out.append(f"the plan removes the token the reconciler logs in with (sha256:{token[:8]}…)")
        elif token is None:
            live_user = node.users.get(change.user)
            if live_user is not None and live_user.nopass:
                out.append("the plan sets a password on the admin user, but the reconciler has no admin secret for it")
    missing = missing_commands(change.rules, table_for(node), rights.kept(node.role, inst.topology))
    if missing:
        out.append("the plan revokes commands the reconciler needs: " + ", ".join(missing))
    return out


def delete_threshold(plan: Plan, live: LiveState, max_percent: int, *, force: bool = False, minimum: int = 10) -> list[str]:
    """Deleting more than max_percent of a node's live users needs --force (from `minimum` users on)."""
    if force:
        return []
    problems: list[str] = []
    for inst in plan.instances:
        inst_live = live.instances.get(inst.name)
        counts: Mapping[str, int] = {n.address: len(n.users) for n in inst_live.nodes} if inst_live else {}
        worst: tuple[int, int, str] | None = None
        for node_plan in inst.nodes:
            total = counts.get(node_plan.address, 0)
            deletes = sum(1 for c in node_plan.changes if c.action == "delete")
            if total >= minimum and deletes * 100 > max_percent * total:
                if worst is None or deletes * worst[1] > worst[0] * total:
                    worst = (deletes, total, node_plan.address)
        if worst is not None:
            deletes, total, address = worst
            problems.append(
                f"{inst.name} {address}: the plan deletes {deletes} of {total} users ({deletes * 100 // total}%), "
                f"more than max_delete_percent {max_percent}{FORCE_HINT}"
            )
    return problems


def needed_commands(node_plan: NodePlan) -> list[str]:
    """What executing this node plan sends as the admin user (the apply lock included)."""
    return rights.for_plan(node_plan)


def admin_rights(plan: Plan, live: LiveState, *, table_for: TableLookup | None = None) -> list[str]:
    """Before any write: the admin user's live rights cover every command the plan will send on
    each node, so an apply never stops half-way on a refusal (a token removed but its sessions,
    with no right to CLIENT KILL, left open)."""
    from . import acl

    table_for = table_for or _default_table
    problems: list[str] = []
    for inst, node_plan, node in _planned_nodes(plan, live):
        needed = needed_commands(node_plan)
        if node is None or not needed or node.role == "sentinel":
            continue  # sentinels: their own command table; the executor reports a refusal there
        admin = node.users.get(node.admin_user)
        if admin is None:
            continue  # not readable as a user (a managed service's data plane): the server decides
        where = f"{inst.name} {node.address}: admin user {node.admin_user}"
        table = table_for(node)
        try:
            perms = acl.effective(admin.rules, table)
        except (acl.AclSyntaxError, acl.UnsupportedRule, ValueError) as exc:
            problems.append(f"{where}: its live rules can't be read ({exc}), so its rights can't be checked")
            continue
        missing = [c for c in needed if not acl.check(perms, _PROBE.get(c, c.split("|")), table)]
        if missing:
            problems.append(
                f"{where} may not run {', '.join(c.upper() for c in missing)}, which this plan needs; "
                "grant them (e.g. +" + " +".join(missing) + ") and plan again"
            )
    return problems


def admin_missing(instance: InstanceState, *, table_for: TableLookup | None = None) -> list[str]:
    """What the admin user, as it is live, lacks of what every apply needs on each data node
    (rights.ESSENTIAL): `CMD on ADDRESS` lines, empty when it has it all. `apply --bootstrap`
    fixes it."""
    from . import acl

    table_for = table_for or _default_table
    out: list[str] = []
    for node in instance.nodes:
        admin = node.users.get(node.admin_user)
        if node.role == "sentinel" or admin is None:
            continue
        try:
            missing = missing_commands(admin.rules, table_for(node), rights.ESSENTIAL)
        except (acl.AclSyntaxError, acl.UnsupportedRule, ValueError) as exc:
            missing = [f"rules that can be read ({exc})"]
        out.extend(f"{m} on {node.address}" for m in missing)
    return out


def check(plan: Plan, live: LiveState, desired: DesiredState, *, force: bool = False) -> list[Refusal]:
    """Every rail over the plan; an empty list means the plan may be executed. With `force`, the
    refusals --force lifts (the delete threshold) are left out, as apply --force executes."""
    refusals = [Refusal(Rail.LOCKOUT, p) for p in lockout(plan, live, desired)]
    refusals += [Refusal(Rail.ADMIN_RIGHTS, p) for p in admin_rights(plan, live)]
    refusals += [
        Refusal(Rail.DELETE_THRESHOLD, p) for p in delete_threshold(plan, live, desired.policies.max_delete_percent)
    ]
    return [r for r in refusals if not (force and r.forcible)]
