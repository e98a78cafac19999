"""`apply -f FILE --target USER`: in an emergency, revoke or rotate one user now while the
file's other changes wait for review. Only that user's changes run; the safety rails judge
what runs; saved plans stay whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from servers import no_retry
from support.cli import Cli
from support.executor import acl_users, logs_in

ADMIN = "target-admin-plaintext-3e5a7c9b1d2f4068"
LEAKED = "target-leaked-plaintext-8a6c4e2f0b9d7153"
FRESH = "target-fresh-plaintext-1f3b5d7e9a0c2486"
REPORTS = "target-reports-plaintext-6d4b2f0e8c1a3957"

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_TGT_ADMIN}}}}
    kill_sessions_on_revoke: true
users:
  reconciler:
    acl: "+@all ~* &*"
    tokens: [{{id: admin-1, secret: {{env: T_TGT_ADMIN}}}}]
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
{orders_tokens}
  app-reports:
    acl: "{reports_acl}"
    tokens: [{{id: r1, secret: {{env: T_TGT_REPORTS}}}}]
"""
LEAKED_ENTRY = "      - {id: leaked, secret: {env: T_TGT_LEAKED}}"
FRESH_ENTRY = "      - {id: fresh, secret: {env: T_TGT_FRESH}}"



@pytest.mark.parametrize("server_id", ["redis-6.2", "valkey-9.1"])
def test_apply_target_runs_only_that_users_changes(server_factory, server_id: str, tmp_path: Path, monkeypatch, capsys) -> None:
    srv = server_factory(server_id)
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN}", "+@all", "~*", "&*")
    for name, value in {"T_TGT_ADMIN": ADMIN, "T_TGT_LEAKED": LEAKED, "T_TGT_FRESH": FRESH, "T_TGT_REPORTS": REPORTS}.items():
        monkeypatch.setenv(name, value)
    cli = Cli(tmp_path, capsys=capsys)
    cli.apply(FILE.format(address=srv.address, orders_tokens=LEAKED_ENTRY, reports_acl="~reports:* +@read"), expect=0)
    admin = srv.client("reconciler", ADMIN)

    # The leaked token is replaced; in the same file, a permission change still under review.
    cli.write(FILE.format(address=srv.address, orders_tokens=FRESH_ENTRY, reports_acl="~* +@all"))
    reports_before = acl_users(admin)["app-reports"]
    open_session = srv.client("app-orders", LEAKED, retry=no_retry())
    assert open_session.get("orders:1") is None

    code, out, err = cli("plan", "-f", str(cli.file), "--target", "app-orders", "--detailed-exitcode")
    assert code == 2 and "~ user app-orders" in out and "user app-reports" not in out, err
    assert "Targeted: only the changes of app-orders; the file's other changes wait for a whole apply." in out

    code, out, err = cli.apply(None, "--target", "app-orders")
    assert code == 0, err
    assert "~ user app-orders" in out and "user app-reports" not in out
    assert "Apply complete: 0 added, 1 changed, 0 destroyed." in out
    assert not logs_in(srv, "app-orders", LEAKED) and logs_in(srv, "app-orders", FRESH)
    with pytest.raises(redis.ConnectionError):
        open_session.get("orders:1")  # revoked: its sessions were killed (kill_sessions_on_revoke)
    assert acl_users(admin)["app-reports"] == reports_before  # the reviewed change waits

    # Nothing left for app-orders; that is not "the servers match the file".
    code, out, _ = cli("plan", "-f", str(cli.file), "--target", "app-orders", "--detailed-exitcode")
    assert code == 0 and "No changes for app-orders." in out and "match the file" not in out, out

    # The rest is still planned, and a whole apply makes it.
    code, out, _ = cli("plan", "-f", str(cli.file), "--detailed-exitcode")
    assert code == 2 and "~ user app-reports" in out and "user app-orders" not in out
    for text in (LEAKED, FRESH, REPORTS, ADMIN):
        assert all(text not in o for o in cli.outputs)


def test_apply_target_keeps_the_rails_and_whole_saved_plans(server_factory, tmp_path: Path, monkeypatch, capsys) -> None:
    srv = server_factory("valkey-9.1")
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN}", "+@all", "~*", "&*")
    for name, value in {"T_TGT_ADMIN": ADMIN, "T_TGT_LEAKED": LEAKED, "T_TGT_REPORTS": REPORTS}.items():
        monkeypatch.setenv(name, value)
    cli = Cli(tmp_path, capsys=capsys)
    text = FILE.format(address=srv.address, orders_tokens=LEAKED_ENTRY, reports_acl="~reports:* +@read")
    cli.apply(text, expect=0)
    before = acl_users(srv.client("reconciler", ADMIN))

    # Targeting the admin with a change that locks it out: refused like any apply.
    cli.write(text.replace('acl: "+@all ~* &*"', 'acl: "+@read ~*"'))
    code, _, err = cli.apply(None, "--target", "reconciler")
    assert code == 1 and "refusing to apply: cache" in err and "admin user reconciler" in err
    # Targeting another user: the admin's change does not run, so nothing locks it out.
    cli.write(text.replace('acl: "+@all ~* &*"', 'acl: "+@read ~*"').replace("~reports:* +@read", "~reports:* +@read -keys"))
    code, out, err = cli.apply(None, "--target", "app-reports")
    assert code == 0 and "~ user app-reports" in out and "user reconciler" not in out, err
    after = acl_users(srv.client("reconciler", ADMIN))
    assert after["reconciler"] == before["reconciler"] and after["app-reports"] != before["app-reports"]

    code, _, err = cli.apply(None, "--target", "nobody")
    assert code == 1 and "--target: nobody is neither declared" in err
    # A name is shown as the changes show names: a line break can't forge a line of output.
    code, _, err = cli("plan", "-f", str(cli.file), "--target", "app\nreconciler: all good")
    assert code == 1 and err == (
        r'reconciler: --target: "app\u000areconciler:\u0020all\u0020good" is neither declared in '
        f"{cli.file} nor in the plan\n"
    ), err
    srv.admin().execute_command("ACL", "SETUSER", "odd\u00a0", "on", "nopass")  # a live name the file can't declare
    code, out, err = cli("plan", "-f", str(cli.file), "--target", "odd\u00a0")
    assert code == 0 and r'Targeted: only the changes of "odd\u00a0";' in out, out + err
    saved = tmp_path / "plan.json"
    cli.write(text.replace("~reports:* +@read", "~reports:* +@read +@write"))
    assert cli("plan", "-f", str(cli.file), "--out", str(saved))[0] == 0
    code, _, err = cli("apply", str(saved), "--auto-approve", "--target", "app-reports")
    assert code == 1 and "--target works with -f FILE; a saved plan is applied whole" in err
    code, _, err = cli.apply(None, "--bootstrap", "--target", "app-reports")
    assert code == 1 and "drop --target" in err
