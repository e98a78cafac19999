"""`reconciler plan` against real servers of the whole matrix, with examples/quickstart.yaml:
an empty server shows the creates (and nothing is written); users set by hand with differently
written but equivalent rules are no change (exit 0); one rule changed out of band is exit 2,
naming the user and the exact permission."""

from __future__ import annotations

import hashlib
from pathlib import Path

from servers import RunningServer
from support.cli import Cli, Result

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart.yaml"
TOKENS = {
    "DEMO_ADMIN_TOKEN": "Admin-token-for-plan-tests-1",
    "DEMO_ORDERS_TOKEN": "Orders-token-2026-11-abcdef",
    "DEMO_ORDERS_TOKEN_OLD": "Orders-token-2026-08-ghijkl",
    "DEMO_REPORTS_TOKEN": "Reports-token-2026-10-mnopq",
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def plan(srv: RunningServer) -> Result:
    env = {**TOKENS, "DEMO_NODE": srv.address, "RECONCILER_TODAY": "2026-11-23", "NO_COLOR": "1"}
    return Cli(REPO, env=env)("plan", "-f", str(QUICKSTART), "--detailed-exitcode")


def acl_list(srv: RunningServer) -> list[str]:
    return sorted(srv.admin(password=TOKENS["DEMO_ADMIN_TOKEN"]).execute_command("ACL", "LIST"))


def _protect_default(srv: RunningServer) -> None:
    # quickstart connects as `default` with DEMO_ADMIN_TOKEN
    srv.admin().execute_command("ACL", "SETUSER", "default", "on", "resetpass", f"#{sha(TOKENS['DEMO_ADMIN_TOKEN'])}")


def test_empty_server_shows_creates_and_writes_nothing(server: RunningServer) -> None:
    _protect_default(server)
    before = acl_list(server)
    r = plan(server)
    assert r.code == 2, r.err
    assert "+ user app-orders" in r.out and "+ user app-reports" in r.out
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in r.out
    assert acl_list(server) == before


def test_equivalent_rules_by_hand_are_no_change_then_one_rule_is(server: RunningServer) -> None:
    _protect_default(server)
    admin = server.admin(password=TOKENS["DEMO_ADMIN_TOKEN"])
    # The file says: roles reader (~* +@read -@dangerous) + orders-writer (~orders:* +@write -@dangerous)
    # + "&orders:events +publish". Written differently here, with the same meaning:
    admin.execute_command(
        "ACL", "SETUSER", "app-orders", "reset", "on", f"#{sha(TOKENS['DEMO_ORDERS_TOKEN'])}",
        f"#{sha(TOKENS['DEMO_ORDERS_TOKEN_OLD'])}", "resetchannels", "&orders:events", "~*",
        "-@all", "+@write", "+@read", "-@dangerous", "+publish",
    )
    admin.execute_command(
        "ACL", "SETUSER", "app-reports", "reset", "on", f"#{sha(TOKENS['DEMO_REPORTS_TOKEN'])}",
        "resetchannels", "allkeys", "-keys", "+@read", "-@dangerous", "-keys",
    )
    r = plan(server)
    assert r.code == 0, r.out + r.err
    assert "No changes." in r.out

    admin.execute_command("ACL", "SETUSER", "app-reports", "+flushall")
    r = plan(server)
    assert r.code == 2, r.err
    block = r.out.split("~ user app-reports", 1)[1]
    assert "revokes FLUSHALL" in block
    assert "app-orders" not in r.out
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in r.out
