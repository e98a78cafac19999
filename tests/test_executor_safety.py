"""Safety rails and audit helpers as pure functions over hand-made plans and live states."""

from __future__ import annotations

import pytest
from support.executor import create, delete, desired, instance, node_plan, plan, sha, update

from reconciler import safety
from reconciler.audit import redact, token_refs
from reconciler.plan import TokenChange, UserChange
from reconciler.state import InstanceState, LiveState, LiveUser, NodeState

ADDR = "10.0.0.5:6379"
ADMIN_TOKEN = "admin-plaintext-0c8e2f4a6b1d3957e0f2a4c6"

TABLES = {
    "redis-6.2": ("redis", "6.2.14"),
    "redis-7.0": ("redis", "7.0.15"),
    "valkey-9.1": ("valkey", "9.1.2"),
}


def node(server: str = "redis", version: str = "7.0.15", users: int = 1, admin_hash: str | None = None) -> NodeState:
    us = {"default": LiveUser("default", True, admin_hash is None, (admin_hash,) if admin_hash else (), "~* &* +@all")}
    for i in range(users - 1):
        us[f"u{i}"] = LiveUser(f"u{i}", True, False, (sha(f"p{i}"),), "~* +get")
    return NodeState(
        address=ADDR,
        server=server,
        version=version,
        users=us,
        command_table=f"{server}-{version}",
        admin_user="default",
        admin_hash=admin_hash,
    )


def live_of(n: NodeState) -> LiveState:
    return LiveState(instances={"c": InstanceState("c", (n,))})


@pytest.mark.parametrize("table", list(TABLES), ids=list(TABLES))
def test_lockout_admin_rights(table: str) -> None:
    server, version = TABLES[table]
    n = node(server, version, admin_hash=sha(ADMIN_TOKEN))
    keep = (sha(ADMIN_TOKEN),)
    d = desired(instance("c", [ADDR], admin_secret=ADMIN_TOKEN))
    ok = plan("c", node_plan(ADDR, update("default", "~* &* +@all", hashes=keep)))
    assert safety.lockout(ok, live_of(n), d) == []
    bad = plan("c", node_plan(ADDR, update("default", "~* +@all -@dangerous", hashes=keep)))
    [problem] = safety.lockout(bad, live_of(n), d)
    assert problem.startswith(f"c {ADDR}: admin user default: the plan revokes commands the reconciler needs: ")
    assert "ACL|SETUSER" in problem and "CONFIG|REWRITE" in problem and "PING" not in problem
    only_config = "~* +@all -config|rewrite" if table != "redis-6.2" else "~* +@all -config +config|get"
    [problem] = safety.lockout(plan("c", node_plan(ADDR, update("default", only_config, hashes=keep))), live_of(n), d)
    assert problem.endswith("needs: CONFIG|REWRITE")


def test_lockout_disable_delete_token() -> None:
    n = node(admin_hash=sha(ADMIN_TOKEN))
    d = desired(instance("c", [ADDR], admin_secret=ADMIN_TOKEN))
    cases = {
        "the plan disables the user the reconciler logs in as": update("default", "~* &* +@all", hashes=(sha(ADMIN_TOKEN),), enabled=False),
        "the plan deletes the user the reconciler logs in as": delete("default"),
        f"the plan removes the token the reconciler logs in with (sha256:{sha(ADMIN_TOKEN)[:8]}…)": update(
            "default", "~* &* +@all", hashes=(sha("rotated"),)
        ),
    }
    for message, change in cases.items():
        assert safety.lockout(plan("c", node_plan(ADDR, change)), live_of(n), d) == [f"c {ADDR}: admin user default: {message}"]
    # Other users are none of the rail's business.
    assert safety.lockout(plan("c", node_plan(ADDR, delete("u0"))), live_of(node(users=3)), d) == []


def test_lockout_password_on_nopass_admin_without_secret() -> None:
    n = node()  # default is nopass, the reconciler has no admin secret
    change = update("default", "~* &* +@all", hashes=(sha("x"),))
    [problem] = safety.lockout(plan("c", node_plan(ADDR, change)), live_of(n), desired(instance("c", [ADDR])))
    assert "no admin secret" in problem


@pytest.mark.parametrize(
    ("users", "deletes", "force", "refused"),
    [
        (9, 8, False, False),  # fewer than 10 users: no limit
        (10, 3, False, False),  # exactly 30%
        (10, 4, False, True),
        (20, 7, False, True),
        (20, 7, True, False),
    ],
)
def test_delete_threshold(users: int, deletes: int, force: bool, refused: bool) -> None:
    n = node(users=users)
    p = plan("c", node_plan(ADDR, *(delete(f"u{i}") for i in range(deletes))))
    problems = safety.delete_threshold(p, live_of(n), 30, force=force)
    assert bool(problems) == refused
    if refused:
        assert problems == [
            f"c {ADDR}: the plan deletes {deletes} of {users} users ({deletes * 100 // users}%), "
            "more than max_delete_percent 30; re-run with --force to allow it"
        ]


def test_check_uses_policy() -> None:
    n = node(users=10)
    p = plan("c", node_plan(ADDR, *(delete(f"u{i}") for i in range(5))))
    assert safety.check(p, live_of(n), desired(instance("c", [ADDR]), max_delete_percent=50)) == []
    assert len(safety.check(p, live_of(n), desired(instance("c", [ADDR]), max_delete_percent=40))) == 1


def test_redact_and_token_refs() -> None:
    h = sha("x")
    assert redact(f"Error in ACL SETUSER modifier '#{h}'") == f"Error in ACL SETUSER modifier '#{h[:8]}…'"
    assert redact("no hex here, port 6379") == "no hex here, port 6379"
    change = UserChange(
        "update", "u", hashes=(h, sha("bare")), tokens=(TokenChange("add", h, "2026-11"), TokenChange("remove", sha("old"), None))
    )
    assert token_refs(change) == [
        {"id": "2026-11", "sha256": h[:8], "change": "add"},
        {"id": None, "sha256": sha("old")[:8], "change": "remove"},
        {"id": None, "sha256": sha("bare")[:8], "change": "set"},
    ]
    assert token_refs(create("n")) == []
