"""Safety rails: pure checks over a plan and the live state it was made from.

Each rail returns a list of problems (one line each). `check` runs them all and is the one
entry point: `plan`, `plan --out`, `drift` and every kind of `apply` call it (through
Manager.check), so a plan shows exactly what apply would refuse. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from .model import DesiredState
from .plan import FORCE_HINT, InstancePlan, NodePlan, Plan, Rail, Refusal, UserChange
from .state import LiveState, NodeState

# What the reader and the executor send as the admin user; losing any of these locks us out
# of reading, writing, persisting or verifying. AUTH/HELLO need no permission.
REQUIRED_COMMANDS: tuple[str, ...] = (
    "acl|setuser",
    "acl|deluser",
    "acl|list",
    "acl|save",
    "acl|whoami",
    "acl|cat",
    "client|kill",
    "client|list",
    "config|get",
    "config|rewrite",
    "info",
    "ping",
    "command",
)
# A sentinel runs no CONFIG; discovery and persistence need these SENTINEL subcommands instead.
SENTINEL_REQUIRED_COMMANDS: tuple[str, ...] = tuple(
    c for c in REQUIRED_COMMANDS if not c.startswith("config|")
) + ("sentinel|get-master-addr-by-name", "sentinel|replicas", "sentinel|sentinels", "sentinel|flushconfig")
# How each one is asked of the engine: bare COMMAND is a container on 7.0+, whose own bit the
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


def missing_commands(rules: str, table: Any, required: tuple[str, ...] = REQUIRED_COMMANDS) -> list[str]:
    """Required commands a user with these rules could not run (what ACL DRYRUN would say)."""
    from . import acl

    perms = acl.effective(rules, table)
    return [cmd for cmd in required if not acl.check(perms, _PROBE.get(cmd, cmd.split("|")), table)]


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
            problems.extend(f"{where}: {p}" for p in _admin_problems(change, node, desired, inst.name, table_for))
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
    change: UserChange, node: NodeState, desired: DesiredState | None, instance: str, table_for: TableLookup
) -> list[str]:
    if change.action == "delete":
        return ["the plan deletes the user the reconciler logs in as"]
    out: list[str] = []
    if not change.enabled:
        out.append("the plan disables the user the reconciler logs in as")
    if not change.nopass:
        token = _admin_hash(node, desired, instance)
        if token is not None and token not in change.hashes:
            out.append(f"the plan removes the token the reconciler logs in with (sha256:{token[:8]}…)")
        elif token is None:
            live_user = node.users.get(change.user)
            if live_user is not None and live_user.nopass:
                out.append("the plan sets a password on the admin user, but the reconciler has no admin secret for it")
    required = SENTINEL_REQUIRED_COMMANDS if node.role == "sentinel" else REQUIRED_COMMANDS
    missing = missing_commands(change.rules, table_for(node), required)
    if missing:
        out.append("the plan revokes commands the reconciler needs: " + ", ".join(c.upper() for c in missing))
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
    if not node_plan.has_changes:
        return []
    needed = ["client|setname", "client|list"]  # the apply lock (reconciler.lock)
    actions = {c.action for c in node_plan.changes}
    if actions & {"create", "update"}:
        needed.append("acl|setuser")
    if "delete" in actions:
        needed.append("acl|deluser")
    if any(c.kill_sessions for c in node_plan.changes) or any(p.startswith("kill-sessions ") for p in node_plan.pending):
        needed.append("client|kill")
    if node_plan.config:
        needed.append("config|set")
        if any(cc.rewrite for cc in node_plan.config):
            needed.append("config|rewrite")
    needed.extend({"acl-save": ["acl|save"], "auto": ["acl|save"], "config-rewrite": ["config|rewrite"]}.get(node_plan.persist, []))
    return list(dict.fromkeys(needed))


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


def check(plan: Plan, live: LiveState, desired: DesiredState, *, force: bool = False) -> list[Refusal]:
    """Every rail over the plan; an empty list means the plan may be executed. With `force`, the
    refusals --force lifts (the delete threshold) are left out, as apply --force executes."""
    refusals = [Refusal(Rail.LOCKOUT, p) for p in lockout(plan, live, desired)]
    refusals += [Refusal(Rail.ADMIN_RIGHTS, p) for p in admin_rights(plan, live)]
    refusals += [
        Refusal(Rail.DELETE_THRESHOLD, p) for p in delete_threshold(plan, live, desired.policies.max_delete_percent)
    ]
    return [r for r in refusals if not (force and r.forcible)]
