"""Helpers for executor/apply tests: hand-made desired states and plans, server probes."""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.model import Admin, DesiredState, Instance, Policies, Secret
from reconciler.plan import InstancePlan, NodePlan, Plan, TokenChange, UserChange

# Plaintexts used by tests; the grep tests assert none of them ever leaves the process.
PLAINTEXTS = {
    "t-orders": "orders-plaintext-4f1c9a7e2b6d8035c1e9f4a2",
    "t-billing": "billing-plaintext-93ab51d0e7c24f68a1b3c5d7",
    "t-admin": "admin-plaintext-0c8e2f4a6b1d3957e0f2a4c6",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def instance(name: str, nodes: list[str], *, admin_secret: str | None = None, persist: str = "auto") -> Instance:
    admin = Admin(username="default", secret=Secret(admin_secret) if admin_secret else None)
    return Instance(name=name, nodes=tuple(nodes), admin=admin, persist=persist)  # type: ignore[arg-type]


def desired(*instances: Instance, audit_log: str | None = None, max_delete_percent: int = 30) -> DesiredState:
    return DesiredState(
        source="test.yaml",
        version=1,
        policies=Policies(max_delete_percent=max_delete_percent),
        instances={i.name: i for i in instances},
        roles={},
        users={},
        audit_log=audit_log,
    )


def create(user: str, rules: str = "~* +get", *, tokens: tuple[tuple[str, str], ...] = (), enabled: bool = True) -> UserChange:
    """tokens: (token id, plaintext) pairs; only their sha256 enters the change."""
    hashes = tuple(sha(p) for _, p in tokens)
    return UserChange(
        action="create",
        user=user,
        enabled=enabled,
        hashes=hashes,
        rules=rules,
        tokens=tuple(TokenChange("add", sha(p), tid) for tid, p in tokens),
    )


def update(user: str, rules: str = "~* +get", *, hashes: tuple[str, ...] = (), enabled: bool = True, kill: bool = False) -> UserChange:
    return UserChange(action="update", user=user, enabled=enabled, hashes=hashes, rules=rules, kill_sessions=kill)


def delete(user: str) -> UserChange:
    return UserChange(action="delete", user=user, enabled=False, kill_sessions=True)


def node_plan(address: str, *changes: UserChange, persist: str = "none", fingerprint: str = "") -> NodePlan:
    return NodePlan(address=address, role="primary", label="test", fingerprint=fingerprint, changes=changes, persist=persist)


def plan(name: str, *nodes: NodePlan) -> Plan:
    return Plan(source="test.yaml", instances=(InstancePlan(name=name, topology="standalone", nodes=nodes),))


def acl_users(client: Any) -> dict[str, str]:
    """user name -> its ACL LIST line."""
    return {line.split()[1]: line for line in client.execute_command("ACL", "LIST")}


def write_calls(client: Any) -> dict[str, int]:
    """Calls of every write command the executor may send, from INFO commandstats.

    Redis >= 7.0 and Valkey count ACL/CLIENT/CONFIG subcommands separately; 6.2 only has the
    container commands, so there `acl` includes the reads (ACL LIST, WHOAMI) as well.
    """
    stats = client.info("commandstats")
    names = ("acl|setuser", "acl|deluser", "acl|save", "client|kill", "config|rewrite")
    if not any(k.startswith("cmdstat_acl|") for k in stats):
        names = ("acl", "client", "config")
    return {n: int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in names}


def user_connections(client: Any, user: str) -> int:
    return sum(1 for c in client.client_list() if c.get("user") == user)


def logs_in(srv: Any, user: str, password: str) -> bool:
    """Whether `user` authenticates with `password` on the server (a fresh connection)."""
    import redis
    from servers import no_retry

    try:
        client = srv.client(user, password, retry=no_retry())
    except redis.AuthenticationError:
        return False
    try:
        client.execute_command("AUTH", user, password)
        return True
    except redis.AuthenticationError:
        return False
    finally:
        client.close()
