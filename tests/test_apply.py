"""`reconciler apply` end to end on every server of the matrix: apply, no-op re-apply, drift
reverted, safety rails, saved plans, mid-apply failure and re-run, secrets never written."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import pytest
import redis
from servers import RunningServer, no_retry
from support.cli import Cli
from support.executor import acl_users, logs_in, sha, write_calls

from reconciler.providers.redis import execute as executor

ADMIN = "admin-plaintext-0c8e2f4a6b1d3957e0f2a4c6"
TOKENS = {
    "ORDERS_NEW": "orders-plaintext-4f1c9a7e2b6d8035c1e9f4a2",
    "ORDERS_OLD": "orders-old-plaintext-7d2e9b04c5a1f386e2d0",
    "REPORTS": "reports-plaintext-b8e1d3f5a7c90246e8b1d3f5",
}
ALL_PLAINTEXTS = [ADMIN, *TOKENS.values()]

BASE = """\
version: 1
{extra}instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
    prune: {prune}
users:
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS_NEW}}
      - id: 2026-08
        secret: {{env: T_ORDERS_OLD}}
  app-reports:
    acl: "~reports:* +@read -keys"
    tokens:
      - id: 2026-10
        secret: {{env: T_REPORTS}}
{more}"""


class Env:
    """A server whose `default` user has the admin token, and a desired-state file for it."""

    def __init__(self, srv: RunningServer, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.srv = srv
        self.tmp = tmp
        self.cli = Cli(tmp, capsys=capsys)
        self.file = self.cli.file
        monkeypatch.setenv("T_NODE", srv.address)
        monkeypatch.setenv("T_ADMIN", ADMIN)
        for k, v in TOKENS.items():
            monkeypatch.setenv(f"T_{k}", v)
        monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
        srv.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
        self.write()

    def write(self, *, prune: bool = False, more: str = "", extra: str = "") -> None:
        self.file.write_text(BASE.format(prune=str(prune).lower(), more=more, extra=extra))

    def admin(self) -> redis.Redis:
        return self.srv.client("default", ADMIN, retry=no_retry())

    def users(self) -> dict[str, str]:
        return acl_users(self.admin())


@pytest.fixture
def env(server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Env:
    return Env(server, tmp_path, monkeypatch, capsys)



def test_apply_then_no_changes_and_no_writes(env: Env, capsys, monkeypatch) -> None:
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "Apply complete: 2 added, 0 changed, 0 destroyed." in out
    assert f"cache {env.srv.address} ({'Valkey' if env.srv.server == 'valkey' else 'Redis'} {env.srv.version}): 2 created" in out
    for user, token in (("app-orders", "ORDERS_NEW"), ("app-orders", "ORDERS_OLD"), ("app-reports", "REPORTS")):
        assert logs_in(env.srv, user, TOKENS[token])
    assert not logs_in(env.srv, "app-reports", TOKENS["ORDERS_NEW"])

    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0 and "No changes." in out

    # Second apply: nothing to do, so the executor never runs and no write command is sent.
    before = write_calls(env.admin())
    monkeypatch.setattr(executor, "execute", lambda *a, **k: pytest.fail("executor ran on a no-op apply"))
    code, out, _ = env.cli.apply()
    assert code == 0 and "No changes." in out
    after = write_calls(env.admin())
    if "acl|setuser" in after:  # 7.0+ count subcommands; 6.2's `acl` also counts the reads
        assert after == before


def test_out_of_band_edits_are_reverted(env: Env, capsys) -> None:
    assert env.cli.apply()[0] == 0
    admin = env.admin()
    admin.execute_command("ACL", "SETUSER", "app-orders", "+flushall", ">rogue-password", "~*")
    admin.execute_command("ACL", "SETUSER", "app-reports", "off")
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "0 added, 2 changed, 0 destroyed" in out
    assert not logs_in(env.srv, "app-orders", "rogue-password")
    assert logs_in(env.srv, "app-reports", TOKENS["REPORTS"])
    app = env.srv.client("app-orders", TOKENS["ORDERS_NEW"], retry=no_retry())
    assert app.set("orders:1", "v") is True
    for forbidden in (("FLUSHALL",), ("SET", "other:1", "v")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*forbidden)
    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out


def test_lockout_refused(env: Env, capsys) -> None:
    before = env.users()
    # Manages `default` (the admin) without the admin's token and without ACL rights.
    env.write(
        more=(
            "  default:\n"
            '    acl: "~* +@all -@admin"\n'
            "    tokens:\n"
            "      - id: new\n"
            f"        sha256: {sha('some-other-token')}\n"
        )
    )
    code, out, err = env.cli.apply()
    assert code == 1
    assert "refusing to apply: cache " + env.srv.address + ": admin user default: the plan removes the token" in err
    assert "the plan revokes commands the reconciler needs: ACL|SETUSER" in err
    assert "nothing was changed" in err
    assert env.users() == before
    # Keeping the admin token and rights is fine.
    env.write(
        more=(
            "  default:\n"
            '    acl: "~* &* +@all"\n'
            "    tokens:\n"
            "      - id: admin\n"
            "        secret: {env: T_ADMIN}\n"
        )
    )
    code, out, err = env.cli.apply()
    assert code == 0, err


def test_delete_threshold_needs_force(env: Env, capsys) -> None:
    assert env.cli.apply()[0] == 0
    admin = env.admin()
    for i in range(8):
        admin.execute_command("ACL", "SETUSER", f"stray-{i}", "on", ">x", "~*", "+get")
    env.write(prune=True)
    before = env.users()
    code, out, err = env.cli.apply()
    assert code == 1
    # 11 live users (default, 2 managed, 8 strays), 8 deletions = 72%.
    assert f"cache {env.srv.address}: the plan deletes 8 of 11 users (72%), more than max_delete_percent 30" in err
    assert "--force" in err
    assert env.users() == before
    code, out, err = env.cli.apply(None, "--force")
    assert code == 0, err
    assert "0 added, 0 changed, 8 destroyed" in out
    assert set(env.users()) == {"default", "app-orders", "app-reports"}


def test_delete_threshold_below_ten_users_is_free(env: Env, capsys) -> None:
    admin = env.admin()
    for i in range(3):
        admin.execute_command("ACL", "SETUSER", f"stray-{i}", "on", ">x")
    env.write(prune=True)
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "2 added, 0 changed, 3 destroyed" in out


def test_saved_plan_refused_when_stale_then_applied(env: Env, capsys) -> None:
    plan_file = env.tmp / "plan.json"
    code, _, err = env.cli("plan", "-f", str(env.file), "--out", str(plan_file))
    assert code == 0, err
    env.admin().execute_command("ACL", "SETUSER", "someone", "on", ">x")
    before = env.users()
    code, out, err = env.cli("apply", str(plan_file), "--auto-approve")
    assert code == 1
    assert f"{plan_file} is stale: cache {env.srv.address}: live ACLs changed since the plan was made" in err
    assert env.users() == before

    code, _, err = env.cli("plan", "-f", str(env.file), "--out", str(plan_file))
    assert code == 0, err
    code, out, err = env.cli("apply", str(plan_file), "--auto-approve")
    assert code == 0, err
    assert "Apply complete: 2 added" in out
    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out


def test_refuses_without_tty_unless_auto_approve(env: Env, capsys) -> None:
    before = env.users()
    code, out, err = env.cli("apply", "-f", str(env.file))
    assert code == 1
    assert "refusing to apply without a terminal to confirm on; pass --auto-approve" in err
    assert env.users() == before


def _with_hook(monkeypatch: pytest.MonkeyPatch, hook: Callable[[str, str, str, int], None]) -> Callable[[], None]:
    """Make the command's executor run one change per batch and call `hook` between batches;
    returns the function that puts the real executor back."""
    real = executor.execute
    monkeypatch.setattr(executor, "execute", functools.partial(real, batch_size=1, between_batches=hook))
    return lambda: monkeypatch.setattr(executor, "execute", real)


def test_server_killed_mid_apply_then_rerun_converges(env: Env, capsys, monkeypatch) -> None:
    def hook(inst: str, addr: str, step: str, n: int) -> None:
        if n == 1:
            env.srv.kill()

    restore = _with_hook(monkeypatch, hook)
    code, out, err = env.cli.apply()
    assert code == 1
    assert "apply stopped on instance cache:" in err
    # The lock is confirmed before each batch: the dead node is found before batch 2 is sent.
    assert f"node {env.srv.address}" in err and "FAILED: apply lock not held before setuser batch 2" in err
    assert "applied (1): create app-orders" in err
    assert "not applied (2): create app-reports, persist" in err, err
    env.srv.restart()  # in-memory ACLs are gone: a fresh node with a nopass default
    env.srv.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    restore()
    code, out, err = env.cli.apply()
    assert code == 0, err
    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out


def test_command_refused_mid_apply_then_rerun_converges(env: Env, capsys, monkeypatch) -> None:
    env.admin().execute_command("ACL", "SETUSER", "rescue", "on", ">rescue", "~*", "&*", "+@all")
    rescue = env.srv.client("rescue", "rescue", retry=no_retry())

    def hook(inst: str, addr: str, step: str, n: int) -> None:
        if n == 1:  # someone takes the admin's ACL rights away half-way
            rescue.execute_command("ACL", "SETUSER", "default", "-acl")

    restore = _with_hook(monkeypatch, hook)
    code, out, err = env.cli.apply()
    assert code == 1
    assert "server refused 1 command(s): app-reports:" in err
    assert "applied (1): create app-orders" in err
    assert "refused (1): create app-reports" in err
    assert "not applied (1): persist" in err
    live = acl_users(rescue)
    assert "app-orders" in live and "app-reports" not in live
    rescue.execute_command("ACL", "SETUSER", "default", "+@all")
    restore()
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "1 added, 0 changed" in out


def test_secrets_never_leave_the_process(env: Env, capsys, monkeypatch) -> None:
    audit = env.tmp / "audit.jsonl"
    plan_file = env.tmp / "plan.json"
    outputs: list[str] = []

    def go(*argv: str) -> int:
        code, out, err = env.cli(*argv)
        outputs.extend((out, err))
        return code

    assert go("plan", "-f", str(env.file), "--out", str(plan_file), "--format", "json") == 0
    assert go("plan", "-f", str(env.file), "--format", "markdown") == 0
    assert go("apply", str(plan_file), "--auto-approve", "--audit-log", str(audit)) == 0
    env.admin().execute_command("ACL", "SETUSER", "app-orders", "off")
    assert go("apply", "-f", str(env.file), "--auto-approve", "--audit-log", str(audit)) == 0

    def hook(inst: str, addr: str, step: str, n: int) -> None:
        env.srv.kill()

    env.admin().execute_command("ACL", "DELUSER", "app-orders", "app-reports")
    _with_hook(monkeypatch, hook)
    assert go("apply", "-f", str(env.file), "--auto-approve", "--audit-log", str(audit)) == 1
    texts = {"output": "\n".join(outputs), "plan file": plan_file.read_text(), "audit log": audit.read_text()}
    for where, text in texts.items():
        for secret in ALL_PLAINTEXTS:
            assert secret not in text, f"a token's plaintext is in the {where}"
    # The audit log carries 8-hex prefixes, never a full hash (plans carry them by design).
    for secret in ALL_PLAINTEXTS:
        assert sha(secret) not in texts["audit log"]
    records = [json.loads(line) for line in texts["audit log"].splitlines()]
    assert {r["result"].split(":")[0] for r in records} >= {"ok", "not-applied"}
    assert any(t["sha256"] == sha(TOKENS["ORDERS_NEW"])[:8] and t["id"] == "2026-11" for r in records for t in r["tokens"])


def test_audit_log_from_the_file(env: Env, capsys) -> None:
    env.write(extra="audit_log: audit.jsonl\n")
    code, out, err = env.cli.apply()
    assert code == 0, err
    records = [json.loads(line) for line in (env.tmp / "audit.jsonl").read_text().splitlines()]
    assert [(r["action"], r["user"], r["result"]) for r in records if r["result"] != "attempt"] == [
        ("create", "app-orders", "ok"),
        ("create", "app-reports", "ok"),
        ("persist", "", "ok"),
    ]
    # Each command is named before it is sent (the servers here have nothing to persist to).
    assert [(r["action"], r["user"]) for r in records if r["result"] == "attempt"] == [("create", "app-orders"), ("create", "app-reports")]


def test_verify_reports_what_did_not_converge(env: Env, capsys) -> None:
    """verify() re-reads the touched nodes and checks each change holds there; it compares only
    the users the plan touched (the rest was in sync when the plan was made) and re-plans nothing."""
    from datetime import date

    from support.executor import create, node_plan, plan

    from reconciler import config
    from reconciler.errors import ApplyError

    desired = config.load(str(env.file), today=date(2026, 11, 23))
    partial = plan(
        "cache",
        node_plan(
            env.srv.address,
            create("app-orders", "~orders:* +@read +@write -@dangerous", tokens=(("a", TOKENS["ORDERS_NEW"]),)),
        ),
    )
    executor.execute(partial, desired, warn=lambda m: None)
    # app-reports (in the file, not in this hand-made plan) is not looked at.
    executor.verify(partial, desired, today=date(2026, 11, 23))
    env.admin().execute_command("ACL", "SETUSER", "someone-else", "on", "+flushall")
    executor.verify(partial, desired, today=date(2026, 11, 23))
    # A touched user whose live permissions differ in meaning (not just in text) fails.
    env.admin().execute_command("ACL", "SETUSER", "app-orders", "+flushall")
    with pytest.raises(ApplyError) as info:
        executor.verify(partial, desired, today=date(2026, 11, 23))
    assert str(info.value) == f"did not converge on node {env.srv.address} (cache): create app-orders"
    env.admin().execute_command("ACL", "SETUSER", "app-orders", "-flushall")
    executor.verify(partial, desired, today=date(2026, 11, 23))
    env.admin().execute_command("ACL", "DELUSER", "app-orders")
    with pytest.raises(ApplyError):
        executor.verify(partial, desired, today=date(2026, 11, 23))
    # The plan-only check used for saved plans agrees.
    from reconciler.providers.redis import read as live

    fresh = {("cache", env.srv.address): live.read_node(desired.instances["cache"], env.srv.address)}
    assert executor.verify_targets(partial, fresh) == [
        f"did not converge on node {env.srv.address} (cache): create app-orders"
    ]


def test_read_node_only_parses_the_named_users(env: Env) -> None:
    from datetime import date

    from reconciler import config
    from reconciler.providers.redis import read as live

    desired = config.load(str(env.file), today=date(2026, 11, 23))
    env.admin().execute_command("ACL", "SETUSER", "one", "on", "+get")
    env.admin().execute_command("ACL", "SETUSER", "two", "on", "+set")
    full = live.read_node(desired.instances["cache"], env.srv.address)
    some = live.read_node(desired.instances["cache"], env.srv.address, only=frozenset({"two", "absent"}))
    assert {"one", "two"} <= set(full.users)
    assert set(some.users) == {"two"}
    assert some.users["two"] == full.users["two"]


class _Terminal:
    """stdin that claims to be a terminal and answers `answer`."""

    def __init__(self, answer: str):
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer + "\n"


@pytest.mark.parametrize(("answer", "applied"), [("yes", True), ("y", False), ("no", False)])
def test_asks_on_a_terminal(env: Env, capsys, monkeypatch, answer: str, applied: bool) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    monkeypatch.setattr("builtins.input", lambda prompt="": (print(prompt, end=""), answer)[1])
    before = env.users()
    code, out, err = env.cli("apply", "-f", str(env.file))
    assert "Only 'yes' will be accepted." in out
    if applied:
        assert code == 0, err
        assert {"app-orders", "app-reports"} <= set(env.users())
    else:
        assert code == 1
        assert "apply cancelled; nothing was changed" in err
        assert env.users() == before


def test_apply_over_tls(tls_server: RunningServer, tmp_path: Path, capsys, monkeypatch) -> None:
    env = Env(tls_server, tmp_path, monkeypatch, capsys)
    mat = tls_server.tls_material
    assert mat is not None
    text = env.file.read_text().replace(
        "    prune: false\n",
        "    prune: false\n"
        f"    tls: {{ca_file: {mat.ca_file}, cert_file: {mat.admin_cert}, key_file: {mat.admin_key}}}\n",
    )
    env.file.write_text(text)
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "Apply complete: 2 added" in out
    assert logs_in(tls_server, "app-reports", TOKENS["REPORTS"])
    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out


def test_primary_and_replica_both_get_the_users(server: RunningServer, server_factory, tmp_path: Path, capsys, monkeypatch) -> None:
    """ACLs do not replicate: every node is written, in parallel, and verified."""
    replica = server_factory(server.id, extra_config=[f"replicaof {server.host} {server.port}"])
    env = Env(server, tmp_path, monkeypatch, capsys)
    replica.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    env.file.write_text(env.file.read_text().replace("[{env: T_NODE}]", f'[{{env: T_NODE}}, "{replica.address}"]'))
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert f"cache {server.address} " in out and f"cache {replica.address} " in out
    for srv in (server, replica):
        assert logs_in(srv, "app-orders", TOKENS["ORDERS_NEW"])
    code, out, _ = env.cli("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out


def test_quickstart_example_applies_then_no_changes(server: RunningServer, tmp_path: Path, capsys, monkeypatch) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
    cli = Cli(tmp_path, capsys=capsys)
    server.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    monkeypatch.setenv("DEMO_NODE", server.address)
    monkeypatch.setenv("DEMO_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("DEMO_ORDERS_TOKEN", TOKENS["ORDERS_NEW"])
    monkeypatch.setenv("DEMO_ORDERS_TOKEN_OLD", TOKENS["ORDERS_OLD"])
    monkeypatch.setenv("DEMO_REPORTS_TOKEN", TOKENS["REPORTS"])
    monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
    code, out, err = cli("apply", "-f", str(example), "--auto-approve")
    assert code == 0, err
    assert "Apply complete: 2 added, 0 changed, 0 destroyed." in out
    assert "changes live in memory only" in err  # persist: auto on a server without files
    assert logs_in(server, "app-orders", TOKENS["ORDERS_OLD"]) and logs_in(server, "app-reports", TOKENS["REPORTS"])
    code, out, _ = cli("plan", "-f", str(example), "--detailed-exitcode")
    assert code == 0 and "No changes." in out


def test_rule_a_node_cannot_express_refuses_the_whole_instance(server_factory, tmp_path: Path, capsys, monkeypatch) -> None:
    """A selector is fine on 7.0 but not on 6.2: nothing is written to either node."""
    new, old = server_factory("redis-7.0"), server_factory("redis-6.2")
    env = Env(new, tmp_path, monkeypatch, capsys)
    old.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    text = env.file.read_text().replace("[{env: T_NODE}]", f'[{{env: T_NODE}}, "{old.address}"]')
    env.file.write_text(text.replace('"~reports:* +@read -keys"', '"~reports:* +@read -keys (~audit:* +get)"'))
    before = {s.address: acl_users(s.client("default", ADMIN)) for s in (new, old)}
    code, out, err = env.cli.apply()
    assert code == 1
    assert f"cache {old.address}: user app-reports: Redis 6.2.14 can't express this" in err
    assert {s.address: acl_users(s.client("default", ADMIN)) for s in (new, old)} == before


def test_audit_log_never_written_into_the_saved_plan_being_applied(server_factory, tmp_path: Path, monkeypatch, capsys) -> None:
    """`apply plan.json --audit-log plan.json` used to append audit lines to the saved plan:
    afterwards the file was neither a plan nor a log. Now one line; nothing changed."""
    env = Env(server_factory("valkey-9.1"), tmp_path, monkeypatch, capsys)
    saved = tmp_path / "plan.json"
    code, _, err = env.cli("plan", "-f", str(env.file), "--out", str(saved))
    assert code == 0, err
    text = saved.read_text()
    before = env.users()
    code, out, err = env.cli("apply", str(saved), "--auto-approve", "--audit-log", str(saved))
    assert code == 1, out + err
    assert err.strip().endswith(f"audit log {saved} is the saved plan being applied; name another file (e.g. audit.jsonl); nothing was changed"), err
    assert saved.read_text() == text and env.users() == before
    code, _, err = env.cli("apply", str(saved), "--auto-approve", "--audit-log", str(tmp_path / "audit.jsonl"))
    assert code == 0, err


def test_audit_log_never_written_into_the_desired_state_file(server_factory, tmp_path: Path, monkeypatch, capsys) -> None:
    """`--audit-log access.yaml` (or the file's `audit_log:` naming itself, or a record beside
    it) used to append JSON lines to the YAML after the apply: the next plan was a YAML error.
    Now one line before the prompt; nothing changed on the server or in the file."""
    env = Env(server_factory("valkey-9.1"), tmp_path, monkeypatch, capsys)
    text = env.file.read_text()
    before = env.users()
    for path in (env.file, tmp_path / "access.inventory.json"):
        code, out, err = env.cli("apply", "-f", str(env.file), "--auto-approve", "--audit-log", str(path))
        assert code == 1, out + err
        assert err.strip().endswith(f"audit log {path} is " + (
            "the desired-state file itself" if path == env.file else f"a record reconciler keeps beside {env.file}"
        ) + "; name another file (e.g. audit.jsonl); nothing was changed"), err
        assert not (tmp_path / "access.inventory.json").exists() and env.file.read_text() == text
    itself = text.replace("version: 1\n", "version: 1\naudit_log: access.yaml\n", 1)
    env.file.write_text(itself)
    code, _, err = env.cli("apply", "-f", str(env.file), "--auto-approve")
    assert code == 1 and "is the desired-state file itself" in err, err
    assert env.users() == before and env.file.read_text() == itself
