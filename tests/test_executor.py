"""Executor on real servers with hand-made plans: order, batching, replies, kills, persistence,
failure reports and audit lines. Runs on every server of the matrix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from servers import RunningServer, no_retry
from support.executor import (
    PLAINTEXTS,
    acl_users,
    create,
    delete,
    desired,
    instance,
    node_plan,
    plan,
    sha,
    update,
    user_connections,
    write_calls,
)

from reconciler.audit import AuditLog, plan_fingerprint
from reconciler.errors import ApplyError
from reconciler.providers.redis import execute as executor


def _wait_until(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _session(srv: RunningServer, user: str, password: str) -> redis.Redis:
    c = srv.client(user, password, single_connection_client=True, retry=no_retry())
    assert c.acl_whoami() == user
    return c


def test_creates_updates_deletes_in_batches(server: RunningServer) -> None:
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "old", "on", ">x", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", "gone", "on", ">x", "~*", "+@all")
    before = write_calls(admin)
    users = [create(f"u{i}", "~k:* +get", tokens=(("t1", f"pw-{i}"),)) for i in range(5)]
    p = plan("c", node_plan(server.address, *users, update("old", "~* +set", hashes=(sha("new"),)), delete("gone")))
    batches: list[tuple[str, int]] = []
    result = executor.execute(
        p,
        desired(instance("c", [server.address])),
        batch_size=2,
        between_batches=lambda inst, addr, step, n: batches.append((step, n)),
    )
    assert all(n.ok for n in executor.node_results(result))
    # 6 SETUSERs in batches of 2, one DELUSER, one kill batch: one round trip each batch.
    assert batches == [("setuser", 1), ("setuser", 2), ("setuser", 3), ("deluser", 4), ("kill", 5)]
    live = acl_users(admin)
    assert "gone" not in live
    for i in range(5):
        assert f"#{sha(f'pw-{i}')}" in live[f"u{i}"] and " on " in live[f"u{i}"]
    assert f"#{sha('new')}" in live["old"] and "+set" in live["old"] and "+@all" not in live["old"]
    # The update replaced the password: the old one no longer logs in.
    with pytest.raises(redis.AuthenticationError):
        server.client("old", "x", retry=no_retry()).ping()
    after = write_calls(admin)
    if "acl|setuser" in after:
        assert after["acl|setuser"] - before["acl|setuser"] == 6
        assert after["acl|deluser"] - before["acl|deluser"] == 1
        # The deleted user's connections went with DELUSER: the kill batch finds none to kill.
        assert after["client|kill"] - before["client|kill"] == 0
    assert result.summary_lines() == [f"c {server.address} (test): 5 created, 1 updated, 1 deleted, persist: none"]


def test_setuser_is_one_atomic_command_with_reset(server: RunningServer) -> None:
    """An update starts from `reset`: nothing of the old user survives unless restated."""
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "app", "on", ">old", "~*", "&*", "+@all")
    p = plan("c", node_plan(server.address, update("app", "~orders:* +get", hashes=(sha("n1"), sha("n2")))))
    executor.execute(p, desired(instance("c", [server.address])))
    line = acl_users(admin)["app"]
    assert " +@all" not in line and "&*" not in line and "~*" not in line.replace("~orders:*", "")
    assert line.count("#") == 2
    assert server.client("app", "n2", retry=no_retry()).get("orders:1") is None


def test_disable_kills_sessions_and_delete_after_deluser(server: RunningServer) -> None:
    admin = server.admin()
    for u in ("off-me", "del-me"):
        admin.execute_command("ACL", "SETUSER", u, "on", ">pw", "~*", "+@all")
    s_off = _session(server, "off-me", "pw")
    s_del = _session(server, "del-me", "pw")
    p = plan(
        "c",
        node_plan(server.address, update("off-me", "~* +get", hashes=(sha("pw"),), enabled=False, kill=True), delete("del-me")),
    )
    result = executor.execute(p, desired(instance("c", [server.address])))
    node = executor.node_results(result)[0]
    assert node.killed == {"off-me": 1, "del-me": 0}
    kills = {s.user: s for s in node.steps if s.action == "kill-sessions"}
    assert kills["del-me"].status == "ok" and "DELUSER" in kills["del-me"].detail
    assert _wait_until(lambda: user_connections(admin, "off-me") == 0)
    assert user_connections(admin, "del-me") == 0
    for s in (s_off, s_del):
        with pytest.raises(redis.ConnectionError):
            s.ping()


def test_client_kill_user_facts(server: RunningServer) -> None:
    """The per-version facts the executor relies on, measured on each server."""
    admin = server.admin()
    with pytest.raises(redis.ResponseError, match="(?i)no such user"):
        admin.execute_command("CLIENT", "KILL", "USER", "never-existed")
    admin.execute_command("ACL", "SETUSER", "x", "on", ">pw", "~*", "+@all")
    s = _session(server, "x", "pw")
    assert admin.execute_command("ACL", "DELUSER", "x") == 1
    assert _wait_until(lambda: user_connections(admin, "x") == 0)
    with pytest.raises(redis.ConnectionError):
        s.ping()
    with pytest.raises(redis.ResponseError, match="(?i)no such user"):
        admin.execute_command("CLIENT", "KILL", "USER", "x")


def test_refused_command_stops_and_reports_exactly(server: RunningServer, tmp_path: Path) -> None:
    admin = server.admin()
    changes = [
        create("a1", "~* +get"),
        create("bad", "~* +no-such-command"),
        create("a3", "~* +get"),  # same batch, after the refused one: a non-MULTI pipeline still runs it
        create("a4", "~* +get"),  # next batch: never sent
    ]
    p = plan("c", node_plan(server.address, *changes))
    log = tmp_path / "audit.jsonl"
    with AuditLog(str(log), p) as audit, pytest.raises(ApplyError) as info:
        executor.execute(p, desired(instance("c", [server.address])), audit=audit, batch_size=3)
    text = str(info.value)
    assert "apply stopped on instance c:" in text
    assert "applied (2): create a1, create a3" in text
    assert "refused (1): create bad (" in text
    assert "not applied (2): create a4, persist" in text
    live = acl_users(admin)
    assert "a1" in live and "a3" in live and "bad" not in live and "a4" not in live
    report = info.value.report
    assert [(n.instance, n.ok) for n in executor.node_results(report)] == [("c", False)]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["user"], r["result"][:6]) for r in records] == [
        ("a1", "attemp"),  # the batch, named before it is sent
        ("bad", "attemp"),
        ("a3", "attemp"),
        ("a1", "ok"),
        ("bad", "failed"),
        ("a3", "ok"),
        ("a4", "not-ap"),  # never sent: no attempt
        ("", "not-ap"),
    ]
    # Fix the rule and run again: converges, the already-applied users are simply re-set.
    fixed = plan("c", node_plan(server.address, changes[0], create("bad", "~* +get"), *changes[2:]))
    assert all(n.ok for n in executor.node_results(executor.execute(fixed, desired(instance("c", [server.address])))))
    assert {"a1", "bad", "a3", "a4"} <= set(acl_users(admin))


@pytest.mark.parametrize("persisted", [False, True], ids=["in-memory", "aclfile"])
def test_killed_between_batches_matrix(server: RunningServer, server_factory, persisted: bool) -> None:
    srv = server if not persisted else server_factory(server.id, aclfile=True)
    if persisted:
        server.stop()
    users = [create(f"u{i:02d}", "~* +get", tokens=(("t", f"p{i}"),)) for i in range(10)]
    p = plan("c", node_plan(srv.address, *users, persist="acl-save" if persisted else "warn"))
    d = desired(instance("c", [srv.address]))

    def hook(inst: str, addr: str, step: str, n: int) -> None:
        if n == 2:
            srv.kill()

    warnings: list[str] = []
    with pytest.raises(ApplyError) as info:
        executor.execute(p, d, batch_size=4, between_batches=hook, warn=warnings.append)
    text = str(info.value)
    assert "FAILED: connection lost during setuser batch 3" in text
    assert "applied (8): create u00, create u01" in text
    assert "sent, no reply (in doubt) (2): create u08, create u09" in text
    assert "not applied (1): persist" in text
    assert warnings == []  # never reached persistence
    srv.restart()
    # Nothing was persisted: the restarted node is back to its file (empty), complete users only.
    assert set(acl_users(srv.admin())) == {"default"}
    result = executor.execute(p, d, warn=warnings.append)
    assert all(n.ok for n in executor.node_results(result))
    assert {f"u{i:02d}" for i in range(10)} <= set(acl_users(srv.admin()))
    if persisted:
        assert srv.aclfile is not None and "user u09 on" in srv.aclfile.read_text()
        srv.restart()
        assert "u09" in acl_users(srv.admin())
    else:
        # nothing to persist with: recorded per node; the command prints one line per instance
        assert [n.persisted for n in executor.node_results(result)] == ["warn"] and warnings == []


def test_persist_config_rewrite(server_factory, server: RunningServer) -> None:
    srv = server_factory(server.id, config_file=True)
    server.stop()
    p = plan("c", node_plan(srv.address, create("app", "~* +get", tokens=(("t", "pw"),)), persist="config-rewrite"))
    result = executor.execute(p, desired(instance("c", [srv.address])))
    assert executor.node_results(result)[0].persisted == "config-rewrite"
    assert srv.config_file is not None and f"user app on #{sha('pw')}" in srv.config_file.read_text().replace("sanitize-payload ", "")
    srv.restart()
    assert "app" in acl_users(srv.admin())


def test_nodes_of_an_instance_in_parallel_and_stop_together(server_factory, server: RunningServer) -> None:
    other = server_factory(server.id)
    p = plan(
        "c",
        node_plan(server.address, *(create(f"u{i}") for i in range(6))),
        node_plan(other.address, *(create(f"u{i}") for i in range(6))),
    )
    d = desired(instance("c", [server.address, other.address]))
    result = executor.execute(p, d, batch_size=2)
    assert [n.address for n in executor.node_results(result)] == [server.address, other.address]
    for srv in (server, other):
        assert {f"u{i}" for i in range(6)} <= set(acl_users(srv.admin()))

    # A node that cannot be reached stops the instance; the report names it.
    other.kill()
    p2 = plan("c", node_plan(server.address, create("late")), node_plan(other.address, create("late")))
    with pytest.raises(ApplyError) as info:
        executor.execute(p2, d)
    assert f"node {other.address} (test): FAILED: c {other.address}:" in str(info.value)


def test_audit_lines(server: RunningServer, tmp_path: Path) -> None:
    admin = server.admin()
    admin.execute_command("ACL", "SETUSER", "gone", "on", ">x")
    p = plan(
        "c",
        node_plan(
            server.address,
            create("orders", tokens=(("2026-11", PLAINTEXTS["t-orders"]),)),
            delete("gone"),
        ),
    )
    log = tmp_path / "audit.jsonl"
    with AuditLog(str(log), p) as audit:
        executor.execute(p, desired(instance("c", [server.address])), audit=audit)
    assert log.stat().st_mode & 0o777 == 0o600
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["action"], r["user"], r["result"]) for r in records] == [
        ("create", "orders", "attempt"),
        ("create", "orders", "ok"),
        ("delete", "gone", "attempt"),
        ("delete", "gone", "ok"),
        ("kill-sessions", "gone", "attempt"),
        ("kill-sessions", "gone", "ok"),
        ("persist", "", "ok"),  # nothing to send here (no aclfile, no config file): no attempt
    ]
    assert records[0]["tokens"] == records[1]["tokens"]  # the attempt names the same tokens
    first = records[1]
    assert first["instance"] == "c" and first["node"] == server.address
    assert first["tokens"] == [{"id": "2026-11", "sha256": sha(PLAINTEXTS["t-orders"])[:8], "change": "add"}]
    assert first["plan"] == plan_fingerprint(p)
    assert first["time"].endswith("Z")
    raw = log.read_text()
    assert sha(PLAINTEXTS["t-orders"]) not in raw and PLAINTEXTS["t-orders"] not in raw


def test_refused_hash_is_not_echoed_in_full(server: RunningServer) -> None:
    """Servers echo a refused `#<hash>` modifier; the report shortens it."""
    bad = "A" * 64  # uppercase: refused by every version
    p = plan("c", node_plan(server.address, update("x", "~*", hashes=(bad,))))
    with pytest.raises(ApplyError) as info:
        executor.execute(p, desired(instance("c", [server.address])))
    assert bad not in str(info.value) and "AAAAAAAA…" in str(info.value)
