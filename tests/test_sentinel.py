"""`topology: sentinel` end to end with real processes: a primary, two replicas and three
sentinels per server, driven through the CLI.

- the data nodes are the ones the sentinels report, and every one gets the ACLs;
- after a SENTINEL FAILOVER the plan is a no-op and names the new primary;
- a failover between `plan --out` and `apply PLAN.json` makes the saved plan stale;
- sentinel_users go to every sentinel (never to a data node) and rotate with zero failed
  logins for a client that reconnects all along;
- disagreeing sentinels and unreachable ones are errors that say so.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import (
    RunningServer,
    free_port,
    no_retry,
    start_sentinel,
    start_server,
)
from support.cli import Cli
from support.cluster import wait_until
from support.drip import DripProxy

pytestmark = pytest.mark.server

# Sentinel has its own ACL since 6.2: users and discovery run on every server that has it; the
# failover tests (about 12 s each) on the two acceptance servers only.
SERVERS = ("redis-6.2", "redis-7.0", "valkey-9.1", "redis-8.6")
FAILOVER_SERVERS = ("redis-7.0", "valkey-9.1")
failover_servers = pytest.mark.parametrize("group", FAILOVER_SERVERS, indirect=True)
MASTER = "cache-main"
ADMIN = "sentinel-admin-plaintext-3b9e1c7a5f2d8046"
TOKENS = {
    "T_ORDERS": "orders-plaintext-4f1c9a7e2b6d8035c1e9f4a2",
    "T_SAPP1": "sentinel-app-plaintext-one-8c2f4e6a1b3d5790",
    "T_SAPP2": "sentinel-app-plaintext-two-1d3f5b7e9a2c4680",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Group:
    server_id: str
    data: list[RunningServer]
    sentinels: list[RunningServer]

    def node(self, address: str) -> RunningServer:
        return next(s for s in self.data + self.sentinels if s.address == address)

    def data_client(self, srv: RunningServer) -> redis.Redis:
        return srv.client(password=ADMIN, retry=no_retry())

    def reported_primary(self) -> set[str]:
        out = set()
        for s in self.sentinels:
            c = s.client(retry=no_retry())
            try:
                host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                out.add(f"{host}:{port}")
            finally:
                c.close()
        return out

    def settled(self) -> bool:
        """Every sentinel names one primary that is a primary, and every other node replicates
        from it with its link up."""
        said = self.reported_primary()
        if len(said) != 1:
            return False
        primary = next(iter(said))
        for srv in self.data:
            c = self.data_client(srv)
            try:
                info = c.info("replication")
            finally:
                c.close()
            if srv.address == primary:
                if info.get("role") != "master":
                    return False
            elif info.get("role") != "slave" or f"{info.get('master_host')}:{info.get('master_port')}" != primary or info.get("master_link_status") != "up":
                return False
        for s in self.sentinels:  # sentinels know both replicas and the two other sentinels
            c = s.client(retry=no_retry())
            try:
                if len(c.execute_command("SENTINEL", "REPLICAS", MASTER)) != 2:
                    return False
                if len(c.execute_command("SENTINEL", "SENTINELS", MASTER)) != 2:
                    return False
            finally:
                c.close()
        return True

    def forget_departed(self) -> None:
        """SENTINEL RESET on every sentinel. A replica that lived for one test only (the hidden
        ones) may be seen in the primary's INFO before a sentinel reads its `replica-announced no`;
        stopped then, it stays listed (down) for good and the group never looks settled again."""
        for s in self.sentinels:
            c = s.client(retry=no_retry())
            try:
                c.execute_command("SENTINEL", "RESET", MASTER)
            finally:
                c.close()
        wait_until("the sentinels to find the group again", self.settled)

    def failover(self) -> str:
        before = next(iter(self.reported_primary()))
        c = self.sentinels[0].client()
        try:
            assert c.execute_command("SENTINEL", "FAILOVER", MASTER) in ("OK", True)
        finally:
            c.close()
        wait_until("the failover", lambda: self.reported_primary() != {before} and self.settled())
        after = next(iter(self.reported_primary()))
        assert after != before
        return after

    def users(self, srv: RunningServer) -> dict[str, str]:
        c = self.data_client(srv) if srv in self.data else srv.client()
        try:
            return {line.split()[1]: line for line in c.execute_command("ACL", "LIST")}
        finally:
            c.close()

    def reset(self) -> None:
        """Only `default` left everywhere; a node a failed test left down is started again."""
        if not all(srv.alive() for srv in self.data):
            for srv in self.data:
                if not srv.alive():
                    srv.restart()
            wait_until("the sentinel group", self.settled)
        for srv in self.data + self.sentinels:
            c = self.data_client(srv) if srv in self.data else srv.client()
            try:
                for line in c.execute_command("ACL", "LIST"):
                    name = line.split()[1]
                    if name != "default":
                        c.execute_command("ACL", "DELUSER", name)
            finally:
                c.close()

    def stop(self) -> None:
        for srv in self.sentinels + self.data:
            srv.stop()


def start_group(server_id: str, workdir: Path) -> Group:
    # requirepass is set once every node runs (the start-up PING is unauthenticated).
    auth = [f"masterauth {ADMIN}", "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
    data: list[RunningServer] = []
    sentinels: list[RunningServer] = []
    try:
        primary = start_server(server_id, workdir / "primary", config_file=True, extra_config=auth)
        data.append(primary)
        for i in (1, 2):
            data.append(
                start_server(server_id, workdir / f"replica{i}", config_file=True, extra_config=auth + [f"replicaof 127.0.0.1 {primary.port}"])
            )
        for srv in data:
            c = srv.admin()
            try:
                c.config_set("requirepass", ADMIN)
                c.config_rewrite()  # a node a test restarts comes back with it
            finally:
                c.close()
            # ... so its readiness check after a restart has to log in.
            srv.admin = functools.partial(srv.client, password=ADMIN)  # type: ignore[method-assign]
        for i in (1, 2, 3):
            sentinels.append(
                start_sentinel(server_id, workdir / f"sentinel{i}", master_name=MASTER, primary=primary.address,
                               extra_config=[f"sentinel auth-pass {MASTER} {ADMIN}"])
            )
    except BaseException:
        for srv in sentinels + data:
            srv.stop()
        raise
    group = Group(server_id, data, sentinels)
    wait_until("the sentinel group", group.settled)
    return group


@pytest.fixture(scope="module", params=[pytest.param(s, id=s) for s in SERVERS])
def group(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    g = start_group(request.param, tmp_path_factory.mktemp(f"sentinel-{request.param}"))
    yield g
    g.stop()


@pytest.fixture
def env(group: Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    wait_until("the sentinel group", group.settled)
    group.reset()
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("T_ADMIN", ADMIN)
    for i, s in enumerate(group.sentinels):
        monkeypatch.setenv(f"T_S{i}", s.address)
    yield Cli(tmp_path, capsys=capsys)
    group.reset()


def access(*, sentinels: str = "[{env: T_S0}, {env: T_S1}, {env: T_S2}]", sentinel_users: str = "", users: str = "") -> str:
    return f"""\
version: 1
instances:
  cache:
    topology: sentinel
    sentinels: {sentinels}
    master_name: {MASTER}
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
{sentinel_users}users:
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS}}
{users}"""


def sentinel_app(*token_envs: str) -> str:
    tokens = "".join(f"          - id: {e.lower()}\n            secret: {{env: {e}}}\n" for e in token_envs)
    return (
        "    sentinel_users:\n"
        "      app:\n"
        '        acl: "+ping +sentinel|get-master-addr-by-name +sentinel|replicas"\n'
        "        tokens:\n" + tokens
    )


@failover_servers
def test_apply_reaches_every_data_node_then_failover_is_a_noop(group: Group, env: Cli) -> None:
    primary = next(iter(group.reported_primary()))
    rc, out, err = env.apply(access())
    assert rc == 0, err
    for srv in group.data:
        line = group.users(srv).get("app-orders")
        assert line is not None and f"#{sha(TOKENS['T_ORDERS'])}" in line, srv.address
    for s in group.sentinels:  # no sentinel_users: the sentinels' ACLs are not touched
        assert set(group.users(s)) == {"default"}
    rc, out, err = env.plan(access())
    assert rc == 0, out + err
    assert f"{primary} primary" in out
    new_primary = group.failover()
    rc, out, err = env.plan(access())
    assert rc == 0, out + err  # same users everywhere: a failover changes nothing to apply
    assert f"{new_primary} primary" in out


@failover_servers
def test_failover_between_plan_and_apply_refuses_the_saved_plan(group: Group, env: Cli) -> None:
    env.file.write_text(access())
    saved = env.dir / "plan.json"
    rc, _out, err = env("plan", "-f", str(env.file), "--out", str(saved), "--detailed-exitcode")
    assert rc == 2, err
    group.failover()
    rc, _out, err = env("apply", str(saved), "--auto-approve")
    assert rc == 1
    assert "failover" in err and "make a new plan" in err
    for srv in group.data:
        assert "app-orders" not in group.users(srv)
    rc, _out, err = env.apply(access())  # a new plan goes through
    assert rc == 0, err
    assert all("app-orders" in group.users(srv) for srv in group.data)


@failover_servers
def test_failover_during_apply_is_reported_per_node_and_a_rerun_converges(
    group: Group, env: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary dies while apply runs (the usual cause of a failover): the report names the
    node that failed and says the rest is complete; once the sentinels have promoted a replica
    and the old primary is back (as a replica), a re-run converges on the new roles."""
    from reconciler.providers.redis import execute as executor
    from reconciler.providers.redis import read as live

    old = group.node(next(iter(group.reported_primary())))
    killed: list[str] = []

    def connect_and_kill_the_primary(instance, address, **kw):  # the executor's connections only
        client = live.connect(instance, address, **kw)
        if address == old.address and not killed:
            old.kill()
            killed.append(address)
        return client

    with monkeypatch.context() as mp:
        mp.setattr(executor, "_default_connect", lambda: connect_and_kill_the_primary)
        rc, out, err = env.apply(access())
    assert killed
    assert rc == 1
    assert "apply stopped on instance cache:" in err
    # Its lock connection went with it: found before the first batch is sent.
    label = f"{old.server.replace('redis', 'Redis').replace('valkey', 'Valkey')} {old.version}"
    assert f"node {old.address} ({label}): FAILED: apply lock not held before setuser batch 1" in err, err
    for srv in group.data:  # every node is in the report, each with what it got
        assert f"node {srv.address} " in err
    assert "run apply again to converge" in err
    wait_until("the sentinels to promote a replica", lambda: group.reported_primary() not in ({old.address}, set()))
    old.restart()  # it comes back as a primary; the sentinels turn it into a replica
    wait_until("the old primary to rejoin as a replica", group.settled)
    new_primary = next(iter(group.reported_primary()))
    rc, out, err = env.apply(access())
    assert rc == 0, err
    assert f"{new_primary} primary" in out  # the new plan names the primary the sentinels report now
    for srv in group.data:
        assert "app-orders" in group.users(srv), srv.address
    rc, out, err = env.plan(access())
    assert rc == 0, out + err


def test_sentinel_users_rotate_with_zero_failed_logins(group: Group, env: Cli) -> None:
    rc, out, err = env.apply(access(sentinel_users=sentinel_app("T_SAPP1")))
    assert rc == 0, err
    for s in group.sentinels:
        line = group.users(s)["app"]
        assert f"#{sha(TOKENS['T_SAPP1'])}" in line
        # SENTINEL FLUSHCONFIG wrote the user to sentinel.conf (a sentinel has no CONFIG REWRITE)
        saved = [ln for ln in s.config_file.read_text().splitlines() if ln.startswith("user app ")]
        assert len(saved) == 1 and sha(TOKENS["T_SAPP1"]) in saved[0]
    for srv in group.data:
        assert "app" not in group.users(srv)  # sentinel users never reach data nodes

    current = {"token": TOKENS["T_SAPP1"]}
    stats = {"ok": 0, "failed": 0}
    errors: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        i = 0
        while not stop.is_set():
            s = group.sentinels[i % len(group.sentinels)]
            i += 1
            c = s.client(username="app", password=current["token"], retry=no_retry())
            try:
                host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                assert host and port
                stats["ok"] += 1
            except (redis.RedisError, OSError, AssertionError) as exc:  # counted: the assertion below shows them
                stats["failed"] += 1
                errors.append(f"{s.address}: {exc}")
            finally:
                c.close()
            time.sleep(0.005)

    t = threading.Thread(target=client_loop)
    t.start()
    try:
        time.sleep(0.2)
        rc, out, err = env.apply(access(sentinel_users=sentinel_app("T_SAPP1", "T_SAPP2")))
        assert rc == 0, err
        current["token"] = TOKENS["T_SAPP2"]  # the client moves to the new token
        time.sleep(0.2)
        rc, out, err = env.apply(access(sentinel_users=sentinel_app("T_SAPP2")))
        assert rc == 0, err
        time.sleep(0.2)
    finally:
        stop.set()
        t.join()
    assert stats["failed"] == 0, errors[:5]
    assert stats["ok"] > 20
    for s in group.sentinels:
        line = group.users(s)["app"]
        assert f"#{sha(TOKENS['T_SAPP2'])}" in line and sha(TOKENS["T_SAPP1"]) not in line
        with pytest.raises(redis.AuthenticationError):
            s.client(username="app", password=TOKENS["T_SAPP1"], retry=no_retry()).ping()
    rc, out, err = env.plan(access(sentinel_users=sentinel_app("T_SAPP2")))
    assert rc == 0, out + err
    for text in env.outputs:  # plans and apply reports name tokens by id and sha256 prefix only
        assert not any(secret in text for secret in (*TOKENS.values(), ADMIN))
    restarted = group.sentinels[0]
    restarted.restart()  # persisted: the rotated user comes back from sentinel.conf
    assert restarted.client(username="app", password=TOKENS["T_SAPP2"], retry=no_retry()).ping()
    wait_until("the sentinel group", group.settled)


def test_sentinel_users_reach_sentinels_the_file_does_not_list(group: Group, env: Cli) -> None:
    """Two of three listed, one of them as localhost: the third is found through SENTINEL
    SENTINELS, and the localhost one is not counted twice (same SENTINEL MYID)."""
    first = group.sentinels[0]
    listed = f"[localhost:{first.port}, {{env: T_S1}}]"
    rc, out, err = env.apply(access(sentinels=listed, sentinel_users=sentinel_app("T_SAPP1")))
    assert rc == 0, err
    assert "3 sentinels" in out
    assert f"localhost:{first.port}" in out and first.address not in out
    for s in group.sentinels:
        assert f"#{sha(TOKENS['T_SAPP1'])}" in group.users(s)["app"], s.address


def test_sentinels_that_disagree_are_an_error(group: Group, env: Cli, tmp_path: Path) -> None:
    other = start_server(group.server_id, tmp_path / "other")
    rogue = start_sentinel(group.server_id, tmp_path / "rogue", master_name=MASTER, primary=other.address, quorum=1)
    try:
        env.file.write_text(access(sentinels=f"[{{env: T_S0}}, {{env: T_S1}}, {{env: T_S2}}, {rogue.address}]"))
        rc, _out, err = env("plan", "-f", str(env.file))
        assert rc == 1
        assert "disagree on the primary" in err and other.address in err
        for srv in group.data:
            assert "app-orders" not in group.users(srv)
    finally:
        rogue.stop()
        other.stop()


def test_denials_read_every_sentinel_and_data_node_and_count_each_process_once(group: Group, env: Cli) -> None:
    """Sentinels keep their own ACL LOG: `denials` reads the listed sentinels (their users are not
    managed here) next to the data nodes. Two instances over the same sentinels and master read
    every process twice; each is counted once, under the first instance."""
    import json

    assert env.apply(access())[0] == 0
    for srv in group.data + group.sentinels:
        c = group.data_client(srv) if srv in group.data else srv.client()
        try:
            c.execute_command("ACL", "LOG", "RESET")
        finally:
            c.close()
    sentinel = group.sentinels[1]
    for _ in range(2):
        c = sentinel.client("prober", "tried-sentinel-password-77e1c3a9", retry=no_retry())
        with pytest.raises(redis.AuthenticationError):
            c.ping()
        c.close()
    replica = next(s for s in group.data if s.address not in group.reported_primary())
    c = replica.client("app-orders", TOKENS["T_ORDERS"], retry=no_retry())
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.get("billing:1")
    c.close()
    text = access()
    twice = text.replace("users:\n", text.split("instances:\n", 1)[1].split("users:\n", 1)[0].replace("  cache:", "  cache-again:") + "users:\n", 1)
    env.write(twice)
    rc, out, err = env("denials", "-f", str(env.file), "--format", "json")
    assert rc == 2, err
    doc = json.loads(out)
    first, second = doc["instances"]
    roles = sorted(n["role"] for n in first["nodes"])
    assert roles == ["primary", "replica", "replica", "sentinel", "sentinel", "sentinel"]
    probe = next(d for d in first["denials"] if d["user"] == "prober")
    assert probe["probing"] and dict(probe["nodes"]) == {sentinel.address: probe["count"]} and probe["count"] >= 2
    key = next(d for d in first["denials"] if d["reason"] == "key")
    assert key["object"] == "billing:1" and dict(key["nodes"]) == {replica.address: 1} and key["declared"]
    assert second["denials"] == [] and all(n["duplicate_of"].startswith("cache 127.0.0.1:") for n in second["nodes"])
    assert sum(d["count"] for d in first["denials"]) == doc["summary"]["denials"]
    assert "tried-sentinel-password" not in out


def test_unreachable_sentinel_tolerated_for_data_but_not_for_sentinel_users(group: Group, env: Cli) -> None:
    dead = f"127.0.0.1:{free_port()}"
    listed = f"[{{env: T_S0}}, {{env: T_S1}}, {{env: T_S2}}, {dead}]"
    rc, _out, err = env.plan(access(sentinels=listed))
    assert rc == 2, err  # 3 of 4 answered and agree: enough to find the data nodes
    rc, _out, err = env.plan(access(sentinels=listed, sentinel_users=sentinel_app("T_SAPP1")))
    assert rc == 1
    assert dead in err and "every sentinel must be reachable" in err
    rc, _out, err = env.plan(access(sentinels=f"[{{env: T_S0}}, {dead}, 127.0.0.1:{free_port()}]"))
    assert rc == 1
    assert "only 1 of 3 sentinels answered" in err


def test_wrong_master_name_is_named(group: Group, env: Cli) -> None:
    env.file.write_text(access().replace(f"master_name: {MASTER}", "master_name: nosuch"))
    rc, _out, err = env("plan", "-f", str(env.file))
    assert rc == 1
    assert "does not monitor a master named 'nosuch'" in err


# --- replicas the sentinels hide, slow sentinels, one sentinel under two names ----------------


def start_hidden_replica(group: Group, workdir: Path, announce_port: int | None = None) -> RunningServer:
    """A replica of the current primary with `replica-announced no`: it replicates (and can be
    promoted) but SENTINEL REPLICAS leaves it out; only the primary's INFO replication lists it
    (at `announce_port` when given: an address nothing answers on)."""
    primary = group.node(next(iter(group.reported_primary())))
    extra = [f"replica-announce-port {announce_port}"] if announce_port else []
    srv = start_server(
        group.server_id, workdir, config_file=True,
        extra_config=[f"masterauth {ADMIN}", "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
                      "replica-announced no", f"replicaof 127.0.0.1 {primary.port}", *extra],
    )
    c = srv.admin()
    c.config_set("requirepass", ADMIN)
    c.close()
    srv.admin = functools.partial(srv.client, password=ADMIN)  # type: ignore[method-assign]
    port = str(announce_port or srv.port)

    def listed_by_primary() -> bool:
        c = group.data_client(primary)
        try:
            info = c.info("replication")
        finally:
            c.close()
        return any(isinstance(v, dict) and v.get("state") == "online" and str(v.get("port")) == port
                   for k, v in info.items() if k.startswith("slave"))

    try:
        wait_until("the hidden replica to be online", listed_by_primary)
        for s in group.sentinels:  # the fault is real: the sentinels do not list it
            c = s.client(retry=no_retry())
            try:
                listed = {str(pairs(e).get("port")) for e in c.execute_command("SENTINEL", "REPLICAS", MASTER)}
            finally:
                c.close()
            assert port not in listed, listed
    except BaseException:
        srv.stop()
        raise
    return srv


def pairs(entry: Any) -> dict[str, Any]:
    """A SENTINEL REPLICAS entry, as redis-py parsed it (a dict) or not (a flat list)."""
    return entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))


def test_hidden_replica_gets_the_users(group: Group, env: Cli, tmp_path: Path) -> None:
    hidden = start_hidden_replica(group, tmp_path / "hidden")
    try:
        rc, out, err = env.apply(access())
        assert rc == 0, err
        assert "4 nodes" in out and hidden.address in out, out
        c = hidden.client(password=ADMIN, retry=no_retry())
        try:
            line = next((ln for ln in c.execute_command("ACL", "LIST") if ln.startswith("user app-orders ")), None)
        finally:
            c.close()
        assert line is not None and f"#{sha(TOKENS['T_ORDERS'])}" in line
        rc, out, err = env.plan(access())
        assert rc == 0, out + err
    finally:
        hidden.stop()
        group.forget_departed()


def test_unreachable_hidden_replica_is_an_error(group: Group, env: Cli, tmp_path: Path) -> None:
    """The primary reports a replica at an address nothing answers on (replica-announce-port):
    an error naming it, never a node silently left out."""
    dead = free_port()
    hidden = start_hidden_replica(group, tmp_path / "hidden", announce_port=dead)
    try:
        rc, _out, err = env.plan(access())
        assert rc == 1
        assert f"127.0.0.1:{dead}" in err and "not listed by the sentinels" in err, err
        for srv in group.data:
            assert "app-orders" not in group.users(srv)
    finally:
        hidden.stop()
        group.forget_departed()


def test_slow_sentinel_is_cut_at_the_deadline_and_the_others_answer(group: Group, env: Cli) -> None:
    """One of three sentinels accepts and then answers one byte a second: after the deadline it
    counts as one that did not answer, and the other two, a majority, find the data nodes."""
    with DripProxy(group.sentinels[0].address, trigger=(b"GET-MASTER-ADDR-BY-NAME",)) as proxy:
        listed = f"[{proxy.address}, {{env: T_S1}}, {{env: T_S2}}]"
        env.file.write_text(access(sentinels=listed).replace("    admin:", "    timeout_seconds: 2\n    admin:"))
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "plan", "-f", str(env.file), "--detailed-exitcode"],
            env={**os.environ}, cwd=env.dir, capture_output=True, text=True, timeout=60,
        )
        took = time.monotonic() - started
    assert r.returncode == 2, r.stdout + r.stderr
    assert "+ user app-orders" in r.stdout
    assert took < 15, f"took {took:.1f} s"


def test_sentinel_command_table_read_has_the_deadline(group: Group, env: Cli) -> None:
    """Managed sentinel_users: each sentinel's own command table is read (COMMAND); one that
    answers it one byte a second is an error naming it and the phase, in seconds."""
    proxies = [DripProxy(s.address, trigger=(b"COMMAND",)) for s in group.sentinels]
    try:
        listed = "[" + ", ".join(p.address for p in proxies) + "]"
        text = access(sentinels=listed, sentinel_users=sentinel_app("T_SAPP1"))
        env.file.write_text(text.replace("    admin:", "    timeout_seconds: 2\n    admin:"))
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "plan", "-f", str(env.file)],
            env={**os.environ}, cwd=env.dir, capture_output=True, text=True, timeout=60,
        )
        took = time.monotonic() - started
    finally:
        for p in proxies:
            p.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert any(f"cache {p.address}: timed out after 2 s (command table)" in r.stderr for p in proxies), r.stderr
    assert took < 15, f"took {took:.1f} s"


def test_one_sentinel_under_two_names_is_one_vote(group: Group, env: Cli) -> None:
    """The same sentinel listed directly and through a TCP relay (as a port forward or NAT would
    show it: one SENTINEL MYID, two addresses validate can't tell apart), with a dead third: one
    of two sentinels answered -- no majority, though two of three listed addresses answered."""
    first = group.sentinels[0]
    dead = f"127.0.0.1:{free_port()}"
    with DripProxy(first.address) as relay:  # never triggered: a plain relay
        rc, _out, err = env.plan(access(sentinels=f"[{first.address}, {relay.address}, {dead}]"))
        assert rc == 1
        assert "only 1 of 2 sentinels answered" in err and "1 more listed address names a sentinel listed before" in err, err
        rc, _out, err = env.plan(access(sentinels=f"[{first.address}, {relay.address}, {{env: T_S1}}]"))
        assert rc == 2, err  # two distinct sentinels answered of two: a majority


@failover_servers
def test_bootstrap_creates_the_admin_on_every_data_node(group: Group, env: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with its own admin user on a Sentinel deployment: `apply --bootstrap` finds the data
    nodes through the sentinels and creates the admin on each (as `default`) before the rest."""
    monkeypatch.setenv("T_RECON", "sentinel-recon-plaintext-6c8e0a2b4d1f3957")
    text = access().replace("admin: {username: default, secret: {env: T_ADMIN}}", "admin: {username: reconciler, secret: {env: T_RECON}}")
    text += '  reconciler:\n    acl: "~* &* +@all"\n    tokens:\n      - id: a\n        secret: {env: T_RECON}\n'
    env.write(text)
    rc, out, err = env("apply", "-f", str(env.file), "--auto-approve", "--bootstrap", "--bootstrap-secret-env", "T_ADMIN")
    assert rc == 0, out + err
    assert "nothing to bootstrap" not in out and "Bootstrap complete: 2 added" in out, out
    for srv in group.data:
        line = group.users(srv).get("reconciler")
        assert line is not None and f"#{sha('sentinel-recon-plaintext-6c8e0a2b4d1f3957')}" in line, srv.address
        assert "app-orders" in group.users(srv)
    rc, out, err = env.plan(text)
    assert rc == 0, out + err


# --- validation: no server needed ------------------------------------------------------------


@pytest.mark.parametrize(
    "instance,message",
    [
        ("    topology: sentinel\n    master_name: m\n", "instances.cache: missing required key 'sentinels'"),
        ("    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n", "master_name"),
        (
            "    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n    master_name: m\n    nodes: [10.0.0.5:6379]\n",
            "instances.cache.nodes: nodes: is not used with topology: sentinel",
        ),
        ("    nodes: [10.0.0.5:6379]\n    master_name: m\n", "instances.cache.master_name: master_name: is for topology: sentinel"),
        (
            "    nodes: [10.0.0.5:6379]\n    sentinel_users: {}\n",
            "instances.cache.sentinel_users: sentinel_users: is for topology: sentinel",
        ),
        (
            ("    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n    master_name: m\n"
             "    sentinel_users:\n      app:\n        instances: [cache]\n        acl: \"+ping\"\n"),
            "instances.cache.sentinel_users.app.instances: instances: is not used in sentinel_users",
        ),
        (
            ("    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n    master_name: m\n"
             "    sentinel_users:\n      app:\n        acl: \"+ping >secret\"\n"),
            "instances.cache.sentinel_users.app.acl: '>…' is not allowed in acl",
        ),
        (
            "    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n    master_name: m\n    discover: false\n",
            "instances.cache.discover: discover: false does not apply to topology: sentinel",
        ),
    ],
    ids=["no-sentinels", "no-master-name", "nodes-too", "master-name-elsewhere", "sentinel-users-elsewhere",
         "instances-in-sentinel-users", "identity-rule", "discover-false"],
)
def test_sentinel_keys_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str], instance: str, message: str) -> None:
    from reconciler.cli import main

    f = tmp_path / "access.yaml"
    f.write_text(f"version: 1\ninstances:\n  cache:\n{instance}users: {{}}\n")
    assert main(["validate", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert f"{f}:" in err and "Traceback" not in err


def test_two_instances_may_share_sentinels_but_not_their_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import main

    def inst(name: str, users: bool) -> str:
        extra = "    sentinel_users:\n      app:\n        acl: \"+ping\"\n" if users else ""
        return f"  {name}:\n    topology: sentinel\n    sentinels: [10.0.0.7:26379]\n    master_name: {name}\n{extra}"

    f = tmp_path / "access.yaml"
    f.write_text("version: 1\ninstances:\n" + inst("a", True) + inst("b", False) + "users: {}\n")
    assert main(["validate", "-f", str(f)]) == 0, capsys.readouterr().err
    f.write_text("version: 1\ninstances:\n" + inst("a", True) + inst("b", True) + "users: {}\n")
    assert main(["validate", "-f", str(f)]) == 1
    err = capsys.readouterr().err
    assert "instances.b.sentinels[0]: sentinel 10.0.0.7:26379 is also managed by instance 'a'" in err, err


def test_the_sentinel_example_validates(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.cli import main

    example = Path(__file__).resolve().parent.parent / "examples" / "sentinel.yaml"
    monkeypatch.setenv("CACHE_ADMIN_TOKEN", "x" * 32)
    monkeypatch.setenv("SENTINEL_ADMIN_TOKEN", "y" * 32)
    assert main(["validate", "-f", str(example)]) == 0, capsys.readouterr().err
