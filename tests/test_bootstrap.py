"""`apply --bootstrap`: a fresh server (`default on nopass`) to a file with its own admin and
`default` disabled, in one run, on every server of the matrix; then a no-op."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import no_retry
from support.cli import Cli
from support.cluster import start_replicated
from support.prompt import until_prompt

ADMIN_TOKEN = "bootstrap-admin-token-0123456789abcdef"
APP_TOKEN = "bootstrap-app-token-0123456789abcdef"


def access_yaml(address: str) -> str:
    return f"""\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_BOOT_ADMIN}}}}
users:
  reconciler:
    acl: "+@all ~* &*"
    tokens:
      - id: admin-1
        secret: {{env: T_BOOT_ADMIN}}
  app:
    acl: "~app:* +@read +@write -@dangerous"
    tokens:
      - id: app-1
        secret: {{env: T_BOOT_APP}}
  default:
    enabled: false
"""


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("T_BOOT_ADMIN", ADMIN_TOKEN)
    monkeypatch.setenv("T_BOOT_APP", APP_TOKEN)
    return Cli(tmp_path, capsys=capsys)


def test_bootstrap_fresh_server_in_one_run(server, run: Cli) -> None:
    run.file.write_text(access_yaml(server.address))
    # Without --bootstrap: the admin does not exist yet.
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve")
    assert rc == 1 and "AUTH failed for user reconciler" in err
    assert server.admin().ping()  # nothing changed: default still nopass

    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 0, err
    step1 = out.index("Step 1 of 3 (cache): connected as `default`, create the admin user reconciler")
    step2 = out.index("Step 2 of 3: connected as the file's admin, everything else")
    step3 = out.index("Step 3 of 3 (cache): connected as the file's admin, `default` last")
    assert step1 < out.index("+ user reconciler") < step2 < out.index("+ user app") < step3
    assert step3 < out.index("~ user default") < out.index("Bootstrap complete: 2 added, 1 changed, 0 destroyed.")
    assert ADMIN_TOKEN not in out + err and APP_TOKEN not in out + err

    # default is disabled: a client without credentials can't run anything.
    with pytest.raises(redis.RedisError):
        server.admin().ping()
    admin = server.client(username="reconciler", password=ADMIN_TOKEN)
    assert admin.execute_command("ACL", "WHOAMI") == "reconciler"
    assert server.client(username="app", password=APP_TOKEN).set("app:1", "x")
    default = next(line for line in admin.execute_command("ACL", "LIST") if line.startswith("user default "))
    assert " off " in default

    # Second run: the admin logs in; an ordinary apply with nothing to do; plan is a no-op.
    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 0, err
    assert "nothing to bootstrap" in out and "No changes." in out
    rc, out, _ = run("plan", "-f", str(run.file), "--detailed-exitcode")
    assert rc == 0 and "No changes." in out


def test_bootstrap_refused_while_another_apply_holds_the_instance(server, run: Cli) -> None:
    """Bootstrap takes the same apply lock as apply: with another apply's named connection on
    the node, it refuses before its first write and the server stays as it was."""
    run.file.write_text(access_yaml(server.address))
    other = server.admin()
    other.execute_command("CLIENT", "SETNAME", "reconciler-apply-1-0000abcd")
    before = sorted(other.execute_command("ACL", "LIST"))
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 1 and "another apply is running" in err, err
    assert sorted(other.execute_command("ACL", "LIST")) == before
    other.close()
    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 0 and "Bootstrap complete" in out, err


def test_bootstrap_refuses_without_admin_user_in_file(server, run: Cli) -> None:
    text = access_yaml(server.address).replace("  reconciler:\n    acl: \"+@all ~* &*\"\n    tokens:\n      - id: admin-1\n        secret: {env: T_BOOT_ADMIN}\n", "")
    assert "users:\n  app:" in text
    run.file.write_text(text)
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 1
    assert "admin user reconciler cannot log in and" in err and "does not declare it under users:" in err
    assert server.admin().execute_command("ACL", "USERS") == ["default"]


def test_bootstrap_lockout_rail_still_applies(server, run: Cli) -> None:
    """An admin declared without the rights the reconciler needs is refused before any write."""
    run.file.write_text(access_yaml(server.address).replace('acl: "+@all ~* &*"', 'acl: "+@read ~*"'))
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 1 and "refusing to apply" in err and "nothing was changed" in err
    assert server.admin().execute_command("ACL", "USERS") == ["default"]


def test_bootstrap_with_default_password(server_factory, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose `default` has a password (requirepass): --bootstrap-secret-env names it."""
    srv = server_factory("redis-7.0")
    srv.admin().execute_command("ACL", "SETUSER", "default", "resetpass", ">old-default-password-0123456789")
    # The file disables `default`: its password goes with it (nobody logs in as a disabled user).
    run.file.write_text(access_yaml(srv.address))
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 1 and "cannot log in as `default` either" in err
    rc, _, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap", "--bootstrap-secret-env", "T_UNSET_VAR")
    assert rc == 1 and "--bootstrap-secret-env T_UNSET_VAR: the variable is not set or empty" in err
    monkeypatch.setenv("T_BOOT_DEFAULT", "old-default-password-0123456789")
    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap", "--bootstrap-secret-env", "T_BOOT_DEFAULT")
    assert rc == 0, err
    assert "old-default-password" not in out + err
    assert "Bootstrap complete: 2 added, 1 changed, 0 destroyed." in out
    admin = srv.client(username="reconciler", password=ADMIN_TOKEN)
    assert " off " in next(ln for ln in admin.execute_command("ACL", "LIST") if ln.startswith("user default "))


@pytest.mark.parametrize("fresh", ["nopass", "requirepass"])
def test_readme_bootstrap_file_on_both_kinds_of_fresh_server(server_factory, run: Cli, fresh: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first-run file, pointed at a fresh server, in one `apply --bootstrap`: on a
    new install (`default on nopass`) and on one whose `default` has a password, which goes away
    with `default` (a disabled user needs no token)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- doc-test: file access.yaml -->\n```yaml\n(.*?)```", readme, re.S).group(1)
    assert "127.0.0.1:6390" in block and "enabled: false" in block and "tokens" not in block.split("default:")[1]
    srv = server_factory("valkey-9.1")
    (run.dir / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (run.dir / "app.token").write_text(APP_TOKEN + "\n")
    for f in ("admin.token", "app.token"):
        (run.dir / f).chmod(0o600)
    run.file.write_text(block.replace("127.0.0.1:6390", srv.address))
    extra: tuple[str, ...] = ()
    if fresh == "requirepass":
        srv.admin().execute_command("CONFIG", "SET", "requirepass", "old-default-password-0123456789")
        monkeypatch.setenv("T_README_DEFAULT", "old-default-password-0123456789")
        extra = ("--bootstrap-secret-env", "T_README_DEFAULT")
    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap", *extra)
    assert rc == 0, err
    assert "Bootstrap complete: 2 added, 1 changed, 0 destroyed." in out
    assert "old-default-password" not in out + err and ADMIN_TOKEN not in out + err
    admin = srv.client(username="reconciler", password=ADMIN_TOKEN)
    default = next(line for line in admin.execute_command("ACL", "LIST") if line.startswith("user default "))
    assert " off " in default and "#" not in default  # disabled, its password gone
    assert srv.client(username="app", password=APP_TOKEN).set("app:1", "x")
    assert run("plan", "-f", str(run.file), "--detailed-exitcode")[0] == 0


# -- re-checked after the prompt, every node, each step judged by its own rights --------------------

ACCEPT = ("redis-7.0", "valkey-9.1")
SOMEONE_ELSES = "someone-elses-admin-token-5e7a9c1b3d"


def _spawn(run: Cli, *argv: str, stdin: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", *argv],
        env={**os.environ, "T_BOOT_ADMIN": ADMIN_TOKEN, "T_BOOT_APP": APP_TOKEN}, cwd=run.dir,
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _logs_in(srv: Any, user: str, password: str) -> bool:
    try:
        srv.client(user, password, retry=no_retry()).ping()
    except redis.exceptions.NoPermissionError:
        pass  # logged in; the user may just not run PING
    except redis.AuthenticationError:
        return False
    return True


@pytest.mark.parametrize("sid", ACCEPT)
def test_admin_created_while_the_prompt_waits_is_not_overwritten(sid: str, server_factory, run: Cli) -> None:
    """Someone creates the admin user (their own token) while `apply --bootstrap` waits for
    `yes`: step 1 re-reads under the lock and refuses; their token keeps working."""
    srv = server_factory(sid)
    run.file.write_text(access_yaml(srv.address))
    master, slave = pty.openpty()
    proc = _spawn(run, "apply", "-f", str(run.file), "--bootstrap", stdin=slave)
    os.close(slave)
    try:
        seen = until_prompt(proc)
        srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{SOMEONE_ELSES}", "~*", "&*", "+@all")
        os.write(master, b"yes\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 1, seen + out + err
    assert "live state changed since the plan shown was made" in err and "nothing was changed" in err, err
    assert _logs_in(srv, "reconciler", SOMEONE_ELSES)
    assert not _logs_in(srv, "reconciler", ADMIN_TOKEN)
    assert srv.admin().execute_command("ACL", "USERS") == ["default", "reconciler"]


@pytest.mark.parametrize("sid", ACCEPT)
def test_bootstrap_checks_every_replica(sid: str, run: Cli, tmp_path: Path) -> None:
    """The admin exists on the primary only (ACLs don't replicate): bootstrap finds the replica
    that lacks it and creates it there in step 1, instead of "nothing to bootstrap"."""
    group = start_replicated(sid, tmp_path / "group", replicas=1)
    try:
        primary, replica = group.nodes
        primary.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN_TOKEN}", "~*", "&*", "+@all")
        # `default` stays: the replica logs in to its primary as `default`.
        run.file.write_text(access_yaml(primary.address).replace("  default:\n    enabled: false\n", ""))
        rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
        assert rc == 0, out + err
        assert "nothing to bootstrap" not in out
        assert "Step 1 of 3 (cache)" in out and "Bootstrap complete" in out
        for node in group.nodes:
            assert _logs_in(node, "reconciler", ADMIN_TOKEN), node.address
            assert _logs_in(node, "app", APP_TOKEN), node.address
        rc, out, _ = run("plan", "-f", str(run.file), "--detailed-exitcode")
        assert rc == 0, out
    finally:
        group.stop()


@pytest.mark.parametrize("sid", ACCEPT)
@pytest.mark.parametrize(
    ("case", "rules"),
    [("another-password", "~* +@read"), ("cannot-read", "~* +@read"), ("cannot-write", "~* &* +@all -acl|setuser")],
)
def test_bootstrap_fixes_an_existing_admin(sid: str, case: str, rules: str, server_factory, run: Cli) -> None:
    """An admin that exists with another password, or with the file's token but too few rights
    (may not read; may read but not write users): step 1 (as `default`) fixes it, and steps 2
    and 3 are judged by the rights step 1 gives it, not by the ones it has now."""
    srv = server_factory(sid)
    password = SOMEONE_ELSES if case == "another-password" else ADMIN_TOKEN
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{password}", *rules.split())
    run.file.write_text(access_yaml(srv.address))
    rc, out, err = run("apply", "-f", str(run.file), "--auto-approve", "--bootstrap")
    assert rc == 0, out + err
    assert "~ user reconciler" in out and "Bootstrap complete: 1 added, 2 changed, 0 destroyed." in out, out
    assert _logs_in(srv, "reconciler", ADMIN_TOKEN) and not (case == "another-password" and _logs_in(srv, "reconciler", SOMEONE_ELSES))
    assert srv.client("reconciler", ADMIN_TOKEN).execute_command("ACL", "WHOAMI") == "reconciler"
    assert run("plan", "-f", str(run.file), "--detailed-exitcode")[0] == 0
