"""The apply lock and the admin's rights under attack, with real processes: an app user naming
its connection like the lock, a server `timeout` that closes idle connections, the lock
connection killed mid-apply, the admin's own token revoked with kill_sessions_on_revoke, a
file that takes CLIENT SETNAME away from the admin, and the server's own count of every
command the tool sends. docs/guarantees.md lists each promise with its test."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import MATRIX, RunningServer, no_retry
from support.cli import Cli
from support.cluster import wait_until
from support.drip import DripProxy

from reconciler import rights

ADMIN = "lock-admin-plaintext-7d1f3b9e5a2c4860"
ADMIN_OLD = "lock-admin-old-plaintext-2e8a4c6f1b3d5097"
APP = "lock-app-plaintext-9b3d5f7a1c2e4068"
ACCEPT = ("redis-7.0", "valkey-9.1")
PREFIX = "reconciler-apply-"
pytestmark = pytest.mark.server


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def access(address: str, *, users: str = "", instance: str = "", admin_rules: str = "~* &* +@all", admin_tokens: str = "") -> str:
    tokens = admin_tokens or "      - id: admin\n        secret: {env: T_ADMIN}\n"
    return f"""\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_ADMIN}}}}
{instance}users:
  reconciler:
    acl: "{admin_rules}"
    tokens:
{tokens}{users}"""


def bulk(n: int, start: int = 0) -> str:
    return "".join(f'  bulk-{i:05d}:\n    acl: "~b{i}:* +get"\n    tokens: [{{id: a, sha256: {sha(str(i))}}}]\n' for i in range(start, start + n))


def setup_admin(srv: RunningServer, *passwords: str) -> None:
    c = srv.admin()
    c.execute_command("ACL", "SETUSER", "reconciler", "reset", "on", *(f">{p}" for p in passwords or (ADMIN,)), "~*", "&*", "+@all")
    c.close()


def acl_users(srv: RunningServer) -> dict[str, str]:
    c = srv.admin()
    try:
        return {line.split()[1]: line for line in c.execute_command("ACL", "LIST")}
    finally:
        c.close()


def lock_connections(srv: RunningServer, user: str = "reconciler") -> list[dict[str, Any]]:
    c = srv.admin()
    try:
        return [e for e in c.client_list() if e.get("name", "").startswith(PREFIX) and e.get("user") == user]
    finally:
        c.close()


def cli_env(tmp: Path) -> dict[str, str]:
    return {"T_ADMIN": ADMIN, "T_APP": APP, "RECONCILER_NO_CACHE": "1", "RECONCILER_TODAY": "2026-11-23"}


def spawn(tmp: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", *argv],
        env={**os.environ, **cli_env(tmp)},
        cwd=tmp,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    for k, v in cli_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    return Cli(tmp_path, capsys=capsys)


# -- only the admin's connections are a lock ------------------------------------------------------


def test_impostor_lock_name_does_not_block_apply(server: RunningServer, cli: Cli) -> None:
    """An app user with `+@all -@dangerous` names its connection like the lock: apply ignores it
    (and disables that user, killing the connection); plan and drift report the impersonation."""
    setup_admin(server)
    root = server.admin()
    root.execute_command("ACL", "SETUSER", "app", "on", f">{APP}", "~*", "&*", "+@all", "-@dangerous", "+client|setname")
    impostor = server.client("app", APP, retry=no_retry())
    impostor.execute_command("CLIENT", "SETNAME", f"{PREFIX}1-cafe")
    app = '  app:\n    enabled: false\n    acl: "~app:* +get"\n    tokens:\n      - id: a\n        secret: {env: T_APP}\n'
    text = access(server.address, users=app, instance="    kill_sessions_on_revoke: true\n")
    rc, out, err = cli.plan(text)
    assert rc == 2, err
    assert "a connection of user app from " in out and f"({PREFIX}1-cafe) is named like the apply lock" in out, out
    rc, out, err = cli.drift()
    assert rc == 2 and "impersonates the reconciler" in out, out + err
    rc, out, err = cli.apply()
    assert rc == 0, err
    assert "another apply" not in err
    assert " off " in acl_users(server)["app"]
    with pytest.raises(redis.ConnectionError):
        impostor.ping()  # the revoke killed the impostor's connection
    # A real lock -- a connection of the admin user -- still blocks.
    holder = server.client("reconciler", ADMIN, retry=no_retry())
    holder.execute_command("CLIENT", "SETNAME", f"{PREFIX}2-beef")
    rc, _, err = cli.apply(text.replace("enabled: false", "enabled: true"))
    assert rc == 1 and "another apply is running on this instance" in err, err
    holder.close()
    root.close()


@pytest.mark.parametrize("sid", ACCEPT)
def test_an_apply_of_another_file_with_another_admin_login_blocks(sid: str, server_factory, cli: Cli) -> None:
    """Two files manage one server, each with its own admin user (`ops` and `reconciler`): an
    apply of one holds its lock as `ops`; an apply of the other used to count that connection
    as no lock (not its admin) and wrote at the same time. A user that may change users (ACL
    DRYRUN says so) is an apply; an app user naming its connection alike still is not (above)."""
    srv = server_factory(sid)
    setup_admin(srv)
    root = srv.admin()
    root.execute_command("ACL", "SETUSER", "ops", "on", f">{APP}", "~*", "&*", "+@all")
    holder = srv.client("ops", APP, retry=no_retry())
    holder.execute_command("CLIENT", "SETNAME", f"{PREFIX}3-d00d")
    text = access(srv.address, users=bulk(3))
    rc, _, err = cli.apply(text)
    assert rc == 1 and "another apply is running on this instance" in err, err
    assert not any(u.startswith("bulk-") for u in acl_users(srv))
    holder.close()
    rc, _, err = cli.apply(text)
    assert rc == 0, err
    assert len([u for u in acl_users(srv) if u.startswith("bulk-")]) == 3
    root.close()


# -- the lock stays held while the apply runs ------------------------------------------------------


@pytest.mark.parametrize("sid", ACCEPT)
def test_lock_survives_server_timeout_and_blocks_a_second_apply(sid: str, server_factory, tmp_path: Path) -> None:
    """A server with `timeout 1` closes idle connections; the apply's replies crawl (a proxy),
    so the apply runs for seconds while its lock connection would sit idle. The lock is kept
    alive: a second apply meanwhile refuses, and the first completes."""
    srv = server_factory(sid, extra_config=["timeout 1"])
    setup_admin(srv)
    # 100 SETUSER replies of 5 bytes, 5 bytes every 0.1 s: the batch answers in about 10 s.
    with DripProxy(srv.address, trigger=(b"SETUSER",), every=0.1, chunk=5) as proxy:
        first = tmp_path / "first.yaml"
        first.write_text(access(proxy.address, users=bulk(100), instance="    timeout_seconds: 60\n"))
        other = tmp_path / "other.yaml"
        other.write_text(access(srv.address, users=bulk(1, start=500)))
        proc = spawn(tmp_path, "apply", "-f", str(first), "--auto-approve")
        try:
            wait_until("the first apply's writes", lambda: proxy.triggered.is_set() or proc.poll() is not None)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            since = time.monotonic()
            wait_until("3 s of a crawling apply", lambda: time.monotonic() - since > 3 or proc.poll() is not None)
            assert proc.poll() is None, "the first apply finished before the server's timeout could matter"
            assert lock_connections(srv), "the lock connection was closed by the server's timeout"
            second = subprocess.run(
                [sys.executable, "-m", "reconciler.cli", "apply", "-f", str(other), "--auto-approve"],
                env={**os.environ, **cli_env(tmp_path)}, cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )
            assert second.returncode == 1, second.stdout + second.stderr
            assert "another apply is running on this instance" in second.stderr
            assert "bulk-00500" not in acl_users(srv)
        finally:
            _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert sum(1 for u in acl_users(srv) if u.startswith("bulk-")) == 100


@pytest.mark.parametrize("sid", ACCEPT)
def test_lost_lock_stops_the_apply_before_the_next_batch(sid: str, server_factory, tmp_path: Path) -> None:
    """The lock connection is killed while the first of two batches is answered: the apply checks
    its lock before the second batch and stops there, naming why; a re-run completes."""
    srv = server_factory(sid)
    setup_admin(srv)
    with DripProxy(srv.address, trigger=(b"SETUSER",), every=0.05, chunk=100) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address, users=bulk(1001), instance="    timeout_seconds: 60\n"))
        proc = spawn(tmp_path, "apply", "-f", str(f), "--auto-approve")
        try:
            wait_until("the first batch", lambda: proxy.triggered.is_set() or proc.poll() is not None)
            held = lock_connections(srv)
            assert len(held) == 1, held
            root = srv.admin()
            root.execute_command("CLIENT", "KILL", "ID", held[0]["id"])
            root.close()
        finally:
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert "apply lock not held before setuser batch 2" in err, err
        assert "not applied (2): create bulk-01000, persist" in err, err
        created = [u for u in acl_users(srv) if u.startswith("bulk-")]
        assert len(created) == 1000 and "bulk-01000" not in created
        r = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "apply", "-f", str(f), "--auto-approve"],
            env={**os.environ, **cli_env(tmp_path)}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert "bulk-01000" in acl_users(srv)


@pytest.mark.parametrize("sid", ACCEPT)
def test_revoking_the_admins_own_token_keeps_the_lock(sid: str, server_factory, tmp_path: Path) -> None:
    """The admin's old token is removed with kill_sessions_on_revoke: a session opened with it
    is killed, but the apply's own lock connection (the same user) is not."""
    srv = server_factory(sid)
    setup_admin(srv, ADMIN, ADMIN_OLD)
    victim = srv.client("reconciler", ADMIN_OLD, retry=no_retry())
    victim.execute_command("CLIENT", "SETNAME", "old-token-session")
    # The kill's replies crawl, so the lock can be looked at between the kill and the end.
    with DripProxy(srv.address, trigger=(b"SETUSER", b"KILL"), every=1.0) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address, instance="    kill_sessions_on_revoke: true\n    timeout_seconds: 60\n"))
        proc = spawn(tmp_path, "apply", "-f", str(f), "--auto-approve")
        try:
            wait_until("the kill", lambda: proxy.triggered.is_set() or proc.poll() is not None)
            root = srv.admin()
            wait_until(
                "the old token's session to be killed",
                lambda: not any(e.get("name") == "old-token-session" for e in root.client_list()),
                timeout=30,
            )
            root.close()
            assert proc.poll() is None, "the apply finished before its lock could be looked at"
            assert lock_connections(srv), "the apply's kill closed its own lock connection"
        finally:
            _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"#{sha(ADMIN_OLD)}" not in acl_users(srv)["reconciler"]
    with pytest.raises(redis.ConnectionError):
        victim.ping()


# -- the rails and the list of commands ------------------------------------------------------------


@pytest.mark.parametrize("sid", [s for s in MATRIX if s != "redis-6.2"])  # 6.2 can't take one subcommand away
def test_lockout_rail_keeps_client_setname(sid: str, server_factory, cli: Cli) -> None:
    """`+@all -client|setname` would leave the admin unable to take the apply lock, so every
    later apply (and --bootstrap) would be refused: the rail refuses it first."""
    srv = server_factory(sid)
    setup_admin(srv)
    before = acl_users(srv)
    rc, _, err = cli.apply(access(srv.address, admin_rules="~* &* +@all -client|setname"))
    assert rc == 1
    assert "admin user reconciler: the plan revokes commands the reconciler needs: CLIENT|SETNAME" in err, err
    assert acl_users(srv) == before
    rc, _, err = cli.apply(access(srv.address))  # and the lock still works for a plain apply
    assert rc == 0, err


def commands_run(srv: RunningServer) -> set[str]:
    """Every command (`cmd|sub` on 7.0+) the server ran since CONFIG RESETSTAT, from INFO commandstats
    (MONITOR would not do: it leaves out administrative commands such as ACL SETUSER)."""
    c = srv.admin()
    try:
        stats = c.info("commandstats")
    finally:
        c.close()
    names = {k.removeprefix("cmdstat_") for k, v in stats.items() if int(v.get("calls", 0)) > 0}
    return names - {"auth", "hello", "config|resetstat"}  # AUTH and HELLO need no permission; the reset is ours


@pytest.mark.parametrize("sid", ACCEPT)
def test_every_command_sent_is_in_the_rights_list(sid: str, server_factory, cli: Cli, tmp_path: Path) -> None:
    """The server counts everything plan, apply (lock, writes, kills, persist, verify), drift and
    explain send as the admin: all of it is in reconciler.rights, the one list the rights check
    and the lock-out rail read."""
    srv = server_factory(sid, aclfile=True)
    setup_admin(srv)
    root = srv.admin()
    root.execute_command("ACL", "SETUSER", "app", "on", ">old-app-token-0123456789", "~app:*", "+get")
    root.execute_command("ACL", "SETUSER", "stray", "on", ">stray-token-0123456789", "~*", "+get")
    session = srv.client("app", "old-app-token-0123456789", retry=no_retry())
    session.get("app:1")
    app = '  app:\n    acl: "~app:* +get +set"\n    tokens:\n      - id: a\n        secret: {env: T_APP}\n'
    cli.write(access(srv.address, users=app, instance="    prune: true\n    kill_sessions_on_revoke: true\n"))
    root.execute_command("CONFIG", "RESETSTAT")
    assert cli("plan", "-f", str(cli.file))[0] == 0
    rc, _, err = cli.apply()
    assert rc == 0, err
    assert cli.drift()[0] == 2  # default is nopass: a finding
    assert cli("explain", "app", "-f", str(cli.file), "--command", "get", "--key", "app:1")[0] == 0
    seen = commands_run(srv)
    assert {"client|setname", "client|list", "acl|setuser", "acl|deluser", "client|kill", "acl|save", "acl|dryrun"} <= seen, seen
    assert seen <= rights.sent(), f"sent but not in reconciler.rights: {sorted(seen - rights.sent())}"
    with pytest.raises(redis.ConnectionError):
        session.get("app:1")
    root.close()
