"""The commands reconciler sends to a node as its admin user, by purpose: one list.

Both safety rails read it: the rights check before an apply (the admin may run everything this
plan sends: `for_plan`) and the lock-out rail (a plan never takes from the admin anything the
tool ever sends to that kind of node: `kept`). A command added to the reader, the lock or the
executor is added here, and tests/test_rights.py watches a real server's MONITOR to prove that
nothing is sent that this list does not name. AUTH and HELLO need no permission.

Names are `command` or `command|subcommand`, lower case, as ACL rules spell them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import NodePlan

# connect: a PING after AUTH; read and verify: one pipeline per node, plus the command table of a
# server version no bundled table covers (always, on a sentinel).
READ = ("ping", "info", "acl|list", "acl|whoami", "config|get", "client|list", "command", "acl|cat")
VERIFY = READ
# discovery: INFO replication walks primaries and replicas; a cluster lists its members with either.
DISCOVERY = ("info",)
CLUSTER_ANY = ("cluster|shards", "cluster|nodes")
# the apply lock (reconciler.lock): name a connection, list the others, keep it alive.
LOCK = ("client|setname", "client|list", "ping")
WRITE = {"create": "acl|setuser", "update": "acl|setuser", "delete": "acl|deluser"}
# a revoke's kill: list the connections, kill each of the user's by id (never our own).
KILL = ("client|list", "client|kill")
PERSIST = {
    "acl-save": ("acl|save",),
    "auto": ("acl|save",),  # falls back to CONFIG REWRITE only when the server says it has no ACL file
    "config-rewrite": ("config|rewrite",),
    "sentinel-flushconfig": ("sentinel|flushconfig",),
}
CONFIG = ("config|set", "config|rewrite")  # managed settings (tls_client_auth)
SENTINEL = (
    "sentinel|get-master-addr-by-name",
    "sentinel|replicas",
    "sentinel|sentinels",
    "sentinel|myid",
    "sentinel|flushconfig",
)
EXPLAIN = ("acl|dryrun",)  # `reconciler explain` only; never part of an apply
# redis-py names itself on every new connection (7.2+) and ignores a refusal.
LIBRARY = ("client|setinfo",)

# Commands whose refusal the tool works around (it reads less, or asks the server another way):
# the lock-out rail does not insist on them.
OPTIONAL = frozenset({"sentinel|myid", *LIBRARY})

Requirement = tuple[str, ...]  # any one of these commands will do

# Without these no apply can run at all (take the lock, write a user): `apply --bootstrap`
# fixes an admin that lacks them. (The reads fail on their own, and say so.)
ESSENTIAL: tuple[Requirement, ...] = (("client|setname",), ("client|list",), ("acl|setuser",))


def kept(role: str, topology: str = "") -> tuple[Requirement, ...]:
    """What the admin user of a node of this role must keep (grouped: any one of each group):
    every command the tool may send there, so no apply and no bootstrap is refused later."""
    writes = tuple(WRITE.values()) + KILL
    if role == "sentinel":
        # A sentinel runs no CONFIG; SENTINEL FLUSHCONFIG persists.
        names = [c for c in writes + LOCK + READ + SENTINEL if not c.startswith("config|")]
    else:
        names = list(writes + PERSIST["acl-save"] + PERSIST["config-rewrite"] + LOCK + READ + DISCOVERY)
    out: list[Requirement] = [(c,) for c in dict.fromkeys(names) if c not in OPTIONAL]
    if topology == "cluster" and role != "sentinel":
        out.append(CLUSTER_ANY)
    return tuple(out)


def for_plan(node_plan: "NodePlan") -> list[str]:
    """What executing this node plan sends (the apply lock included), in order of use."""
    if not node_plan.has_changes:
        return []
    needed = list(LOCK)
    for action in dict.fromkeys(c.action for c in node_plan.changes):
        needed.append(WRITE[str(action)])
    if any(c.kill_sessions for c in node_plan.changes) or any(p.startswith("kill-sessions ") for p in node_plan.pending):
        needed.extend(KILL)
    if node_plan.config:
        needed.append("config|set")
        if any(cc.rewrite for cc in node_plan.config):
            needed.append("config|rewrite")
    needed.extend(PERSIST.get(node_plan.persist, ()))
    return list(dict.fromkeys(needed))


def sent() -> frozenset[str]:
    """Every command the tool sends to any node (tests compare it with what a server saw)."""
    groups = READ + DISCOVERY + CLUSTER_ANY + LOCK + tuple(WRITE.values()) + KILL + CONFIG + SENTINEL + EXPLAIN + LIBRARY
    return frozenset(groups + tuple(c for cs in PERSIST.values() for c in cs))
