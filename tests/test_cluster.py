"""Many nodes, end to end through the CLI, on every server of the matrix: a primary with two
replicas and a 3-primary/3-replica cluster. ACLs are per node -- neither replication nor the
cluster bus carries them -- so every test checks every node.

Deployments are shared by the session (tests/support/cluster.py starts them all in parallel
on first use); each test starts from `default` only, with every node up and in sync.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import MATRIX, TLS_MATRIX, RunningServer, no_retry, start_server
from support.cli import Cli
from support.cluster import (
    ADMIN_PASSWORD,
    REGISTRY,
    REPL_CONFIG,
    Deployment,
    admin,
    needed_keys,
    replica_in_sync,
    reset_acls,
    wait_until,
)

from reconciler import acl
from reconciler.providers.redis import execute as executor
from reconciler.providers.redis import read as live

pytestmark = pytest.mark.server

KINDS = ("replicated", "cluster")
KEYS = [(sid, kind) for kind in KINDS for sid in MATRIX]
TOKENS = {
    "ORDERS": "orders-plaintext-4f1c9a7e2b6d8035c1e9f4a2",
    "REPORTS": "reports-plaintext-b8e1d3f5a7c90246e8b1d3f5",
    "BATCH": "batch-plaintext-1a2b3c4d5e6f708192a3b4c5",
}

BASE = """\
version: 1
instances:
  cache:
    nodes: [{{env: T_SEED}}]
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
    prune: {prune}
{instance_extra}users:
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS}}
  app-reports:
    acl: "~reports:* +@read -keys"
    tokens:
      - id: 2026-10
        secret: {{env: T_REPORTS}}
{more}"""

BATCH_USER = """\
  app-batch:
    enabled: {enabled}
    acl: "~batch:* +@all -@dangerous"
    tokens:
      - id: 2026-09
        secret: {{env: T_BATCH}}
"""


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    dep = REGISTRY.get(tuple(request.param), needed_keys(request.session))
    reset_acls(dep)
    return dep


def _ids(key: tuple[str, str]) -> str:
    return f"{key[0]}-{key[1]}"


each_deployment = pytest.mark.parametrize("deployment", KEYS, indirect=True, ids=_ids)


class Env:
    def __init__(
        self, dep: Deployment, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], seed: RunningServer | None = None
    ):
        self.dep = dep
        self.cli = Cli(tmp, capsys=capsys)
        self.file = self.cli.file
        self.seed = seed or dep.nodes[0]
        monkeypatch.setenv("T_SEED", self.seed.address)
        monkeypatch.setenv("T_ADMIN", ADMIN_PASSWORD)
        for k, v in TOKENS.items():
            monkeypatch.setenv(f"T_{k}", v)
        monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
        self.write()

    def write(self, *, prune: bool = False, more: str = "", instance_extra: str = "") -> None:
        self.file.write_text(BASE.format(prune=str(prune).lower(), more=more, instance_extra=instance_extra))

    def acls(self) -> dict[str, list[str]]:
        """address -> sorted ACL LIST of that node."""
        out = {}
        for s in self.dep.nodes:
            c = admin(s)
            try:
                out[s.address] = sorted(c.execute_command("ACL", "LIST"))
            finally:
                c.close()
        return out


def logs_in(srv: RunningServer, user: str, password: str) -> bool:
    try:
        c = srv.client(user, password, retry=no_retry())
        try:
            return c.execute_command("AUTH", user, password) in (True, "OK")
        finally:
            c.close()
    except (redis.AuthenticationError, redis.ResponseError):
        return False


def assert_identical(env: Env, users: set[str]) -> None:
    """Every node holds the same users with the same flags, hashes and effective permissions.

    Not the same text: Redis 7.x prints rules in its command table's hash order, which
    differs between processes of one version.
    """
    views = {}
    for s in env.dep.nodes:
        table = acl.CommandTable.bundled(f"{s.server}-{s.version}")
        c = admin(s)
        try:
            lines = c.execute_command("ACL", "LIST")
        finally:
            c.close()
        view = {}
        for line in lines:
            name, enabled, nopass, hashes, rules = acl.parse_acl_list_line(line)
            view[name] = (enabled, nopass, tuple(sorted(hashes)), acl.effective(rules, table))
        views[s.address] = view
    first_address, first = next(iter(views.items()))
    assert set(first) == users | {"default"}
    for address, view in views.items():
        assert view == first, f"{address} differs from {first_address}"


def group_headers(out: str) -> list[str]:
    """The `on ADDR, ADDR:` lines of a plan: nodes whose changes differ from the rest."""
    return [line.strip() for line in out.splitlines() if re.match(r"^\s+on \S+", line)]


@each_deployment
def test_apply_every_node_identical_drift_on_one_replica_and_failover(deployment: Deployment, tmp_path, monkeypatch, capsys) -> None:
    env = Env(deployment, tmp_path, monkeypatch, capsys)
    n = len(deployment.nodes)

    code, out, err = env.cli.plan()
    assert code == 2, err
    # Every node gets the same change, so the plan shows it once for the whole group.
    assert f"Instance cache ({n} nodes:" in out
    assert group_headers(out) == []
    assert out.count("+ user app-orders") == 1
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in out

    code, out, err = env.cli.apply()
    assert code == 0, err
    assert "Apply complete: 2 added" in out
    for s in deployment.nodes:  # one success line per node
        assert re.search(rf"cache {re.escape(s.address)} \(.*\): 2 created, saved \(ACL SAVE\)", out), out
    assert_identical(env, {"app-orders", "app-reports"})
    for s in deployment.nodes:
        assert logs_in(s, "app-orders", TOKENS["ORDERS"])
        assert logs_in(s, "app-reports", TOKENS["REPORTS"])

    code, out, err = env.cli.plan()
    assert code == 0 and "No changes." in out, out + err

    # Out-of-band change on one replica: drift on that node only.
    replica = deployment.replicas()[-1]
    c = admin(replica)
    c.execute_command("ACL", "SETUSER", "app-reports", "+flushall")
    c.close()
    code, out, err = env.cli.plan()
    assert code == 2, out + err
    assert group_headers(out) == [f"on {replica.address}:"], out
    assert "~ user app-reports" in out and "FLUSHALL" in out
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in out
    code, out, _ = env.cli.plan(None, "--format", "json")
    doc = json.loads(out)
    changed = [nd["address"] for nd in doc["instances"][0]["nodes"] if nd["changes"]]
    assert changed == [replica.address]
    assert len(doc["instances"][0]["nodes"]) == n

    # A user added by hand on another replica: a finding naming that node (prune: false).
    other = deployment.replicas()[0]
    c = admin(other)
    c.execute_command("ACL", "SETUSER", "handmade", "on", ">handmade-secret-2f7c", "+get", "~*")
    c.close()
    code, out, err = env.cli("drift", "-f", str(env.file))
    assert code == 2
    assert f"[{other.address}] user handmade is not in the file" in out

    code, out, err = env.cli.apply()
    assert code == 0, err
    assert f"cache {replica.address} (" in out and "1 updated" in out
    c = admin(other)
    c.execute_command("ACL", "DELUSER", "handmade")
    c.close()
    assert_identical(env, {"app-orders", "app-reports"})

    # Manual failover (CLUSTER FAILOVER / REPLICAOF swap): the new primary already has the ACLs.
    replica = deployment.replicas()[0]
    old_primary = deployment.failover(replica)
    assert deployment.roles()[replica.address] == "primary"
    assert deployment.roles()[old_primary.address] == "replica"
    assert logs_in(replica, "app-orders", TOKENS["ORDERS"])
    code, out, err = env.cli.plan()
    assert code == 0 and "No changes." in out, out + err
    assert_identical(env, {"app-orders", "app-reports"})

    # Discovery follows the new roles: a change after the failover reaches every node again.
    env.write(more=BATCH_USER.format(enabled="true"))
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert_identical(env, {"app-orders", "app-reports", "app-batch"})
    for s in deployment.nodes:
        assert logs_in(s, "app-batch", TOKENS["BATCH"])


def _sessions(srv: RunningServer, user: str) -> int:
    c = admin(srv)
    try:
        return sum(1 for entry in c.client_list() if entry.get("user") == user)
    finally:
        c.close()


@each_deployment
def test_client_kill_user_on_every_node(deployment: Deployment, tmp_path, monkeypatch, capsys) -> None:
    env = Env(deployment, tmp_path, monkeypatch, capsys)
    env.write(more=BATCH_USER.format(enabled="true"))
    code, _, err = env.cli.apply()
    assert code == 0, err

    def open_sessions() -> list[redis.Redis]:
        clients = []
        for s in deployment.nodes:  # primaries and replicas alike
            c = s.client("app-batch", TOKENS["BATCH"], retry=no_retry())
            assert c.execute_command("AUTH", "app-batch", TOKENS["BATCH"]) in (True, "OK")
            clients.append(c)
        return clients

    clients = open_sessions()
    assert all(_sessions(s, "app-batch") == 1 for s in deployment.nodes)

    # Disabling does not drop open connections by itself: the plan kills them on every node.
    env.write(more=BATCH_USER.format(enabled="false"))
    code, out, err = env.cli.plan()
    assert code == 2 and "sessions: every open connection of the user is closed (1 now)" in out
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert out.count("1 connection killed") == len(deployment.nodes), out
    for s, c in zip(deployment.nodes, clients, strict=False):
        assert _sessions(s, "app-batch") == 0, s.address
        with pytest.raises(redis.ConnectionError):
            c.ping()
        c.close()
        assert not logs_in(s, "app-batch", TOKENS["BATCH"])

    # Deleted users (prune: true, user gone from the file): no session survives anywhere.
    env.write(more=BATCH_USER.format(enabled="true"))
    code, _, err = env.cli.apply()
    assert code == 0, err
    clients = open_sessions()
    env.write(prune=True)
    code, out, err = env.cli.apply()
    assert code == 0, err
    for s, c in zip(deployment.nodes, clients, strict=False):
        assert _sessions(s, "app-batch") == 0, s.address
        with pytest.raises(redis.ConnectionError):
            c.ping()
        c.close()
    assert_identical(env, {"app-orders", "app-reports"})


@each_deployment
def test_replica_killed_mid_apply_then_rerun_converges(deployment: Deployment, tmp_path, monkeypatch, capsys) -> None:
    env = Env(deployment, tmp_path, monkeypatch, capsys)
    victim = deployment.replicas()[-1]
    finished = threading.Event()
    written: list[str] = []
    real_execute = executor.execute

    def connect(instance: Any, address: str, **kw: Any) -> redis.Redis:
        if address == victim.address:
            # Between nodes: once another node has finished all its writes, the replica dies.
            assert finished.wait(20), "no other node finished"
            victim.kill()
            return live.connect(instance, address, **kw)
        client = live.connect(instance, address, **kw)
        close = client.close

        def close_and_signal() -> None:  # the executor closes a node's client after its last step
            close()
            written.append(address)
            finished.set()

        client.close = close_and_signal  # type: ignore[method-assign]
        return client

    monkeypatch.setattr(
        executor, "execute", lambda plan, desired, **kw: real_execute(plan, desired, **{**kw, "connect": connect})
    )
    code, out, err = env.cli.apply()
    assert code == 1
    assert written and not victim.alive()
    assert "apply stopped on instance cache:" in err
    assert re.search(rf"node {re.escape(victim.address)} \(.*\): FAILED", err), err
    assert re.search(rf"node {re.escape(written[0])} \(.*\): complete", err), err
    assert "run apply again to converge" in err
    c = admin(deployment.by_address(written[0]))
    assert {line.split()[1] for line in c.execute_command("ACL", "LIST")} >= {"app-orders", "app-reports"}
    c.close()

    monkeypatch.setattr(executor, "execute", real_execute)
    victim.restart()
    deployment.rejoin(victim)
    deployment.wait_ready()
    code, out, err = env.cli.apply()
    assert code == 0, err
    assert f"cache {victim.address} (" in out
    code, out, err = env.cli.plan()
    assert code == 0 and "No changes." in out, out + err
    assert_identical(env, {"app-orders", "app-reports"})
    assert logs_in(victim, "app-orders", TOKENS["ORDERS"])


MIXED = """\
version: 1
instances:
  cache:
    nodes: [{{env: T_SEED}}]
users:
  app-orders:
    acl: "{acl}"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS}}
"""


def test_mixed_versions_rules_must_fit_every_node(tmp_path: Path, monkeypatch, capsys) -> None:
    """A Redis 6.2 primary with a 7.0 replica (an upgrade in progress): selectors exist on 7.0
    only, so a file using them is refused before anything is written to either node."""
    primary = start_server("redis-6.2", tmp_path / "primary", extra_config=REPL_CONFIG)
    replica = None
    try:
        replica = start_server(
            "redis-7.0", tmp_path / "replica", extra_config=REPL_CONFIG + (f"replicaof {primary.host} {primary.port}",)
        )
        wait_until("the 7.0 replica in sync", lambda: replica_in_sync(replica))
        monkeypatch.setenv("T_SEED", primary.address)
        monkeypatch.setenv("T_ORDERS", TOKENS["ORDERS"])
        monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
        cli = Cli(tmp_path, capsys=capsys)
        f = cli.file
        f.write_text(MIXED.format(acl="~orders:* +get (~audit:* +set)"))

        code, out, err = cli("apply", "-f", str(f), "--auto-approve")
        assert code == 1
        assert f"cache {primary.address}: user app-orders: Redis 6.2." in err and "can't express this" in err
        assert "selectors" in err
        for s in (primary, replica):
            c = s.admin()
            assert [line.split()[1] for line in c.execute_command("ACL", "LIST")] == ["default"], s.address
            c.close()

        f.write_text(MIXED.format(acl="~orders:* +get +set"))
        code, out, err = cli("plan", "-f", str(f), "--detailed-exitcode")
        assert code == 2
        assert f"Instance cache (2 nodes: {primary.address} primary, 1 replica; Redis {primary.version}, Redis {replica.version})" in out
        code, out, err = cli("apply", "-f", str(f), "--auto-approve")
        assert code == 0, err
        assert f"cache {primary.address} (Redis {primary.version}): 1 created" in out
        assert f"cache {replica.address} (Redis {replica.version}): 1 created" in out
        code, out, err = cli("plan", "-f", str(f), "--detailed-exitcode")
        assert code == 0 and "No changes." in out
        for s in (primary, replica):
            assert logs_in(s, "app-orders", TOKENS["ORDERS"])
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


# TLS costs a handshake per connection: clusters on every TLS version, replication on one.
TLS_KEYS = [(sid, "cluster-tls") for sid in TLS_MATRIX] + [("valkey-9.1", "replicated-tls")]


@pytest.mark.parametrize("deployment", TLS_KEYS, indirect=True, ids=_ids)
def test_tls_discovery_and_apply(deployment: Deployment, tmp_path, monkeypatch, capsys) -> None:
    """Over TLS-only ports: replicas announce their TLS port (tls-replication), cluster
    members are found at CLUSTER SHARDS' tls-port; every node gets the ACLs."""
    seed = deployment.replicas()[-1]
    env = Env(deployment, tmp_path, monkeypatch, capsys, seed=seed)
    tls = seed.tls_config()
    assert tls is not None
    env.write(instance_extra=f"    tls: {{ca_file: {tls['ca_file']}, cert_file: {tls['cert_file']}, key_file: {tls['key_file']}}}\n")
    code, out, err = env.cli.apply()
    assert code == 0, err
    for s in deployment.nodes:
        assert f"cache {s.address} (" in out
    assert_identical(env, {"app-orders", "app-reports"})
    code, out, err = env.cli.plan()
    assert code == 0 and "No changes." in out, out + err


@pytest.mark.parametrize("deployment", [(sid, "replicated") for sid in MATRIX], indirect=True, ids=_ids)
def test_saved_plan_refused_when_a_replica_joined(deployment: Deployment, tmp_path, monkeypatch, capsys) -> None:
    """`apply PLAN.json` discovers again: a replica added since the plan would miss the users."""
    env = Env(deployment, tmp_path, monkeypatch, capsys)
    saved = tmp_path / "plan.json"
    code, _, err = env.cli("plan", "-f", str(env.file), "--out", str(saved))
    assert code == 0, err

    primary = deployment.primaries()[0]
    extra = start_server(deployment.nodes[0].id, tmp_path / "extra", extra_config=REPL_CONFIG)
    try:
        c = extra.admin()
        c.execute_command("CONFIG", "SET", "masterauth", ADMIN_PASSWORD)
        c.execute_command("REPLICAOF", primary.host, str(primary.port))
        c.close()
        wait_until("the new replica in sync", lambda: replica_in_sync(extra))
        code, out, err = env.cli("apply", str(saved), "-f", str(env.file), "--auto-approve")
        assert code == 1
        assert f"cache {extra.address}: node joined the instance since the plan was made; make a new plan" in err
        assert "nothing was changed" in err
        for s in [*deployment.nodes, extra]:
            c = admin(s)
            assert [line.split()[1] for line in c.execute_command("ACL", "LIST")] == ["default"], s.address
            c.close()
    finally:
        extra.stop()
    wait_until("the primary back to 2 replicas", lambda: len(deployment.replicas()) == 2 and _replica_count(primary) == 2)
    code, out, err = env.cli("apply", str(saved), "-f", str(env.file), "--auto-approve")
    assert code == 0, err
    assert_identical(env, {"app-orders", "app-reports"})


def _replica_count(srv: RunningServer) -> int:
    c = admin(srv)
    try:
        return int(c.info("replication").get("connected_slaves", 0))
    finally:
        c.close()
