"""`reconciler rotate` where an instance is many nodes: a primary with replicas, a cluster, and
the users of Sentinel processes. ACLs are per node, so the new token must be on every node
before the store names it, and the old one leaves every node: a client that logs in on each
node in turn, with whatever the store's latest was 200 ms ago, never fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from openbao import RunningBao
from servers import RunningServer, no_retry
from support.cli import Cli
from support.cluster import ADMIN_PASSWORD, REGISTRY, Deployment, needed_keys, reset_acls, wait_until
from test_rotate_providers import CURRENT_PREVIOUS as TOKENS
from test_sentinel import ADMIN as SENTINEL_ADMIN
from test_sentinel import MASTER, Group, start_group

pytestmark = pytest.mark.server
SERVER = "valkey-9.1"
FIRST = "topology-first-version-4Hq8-Vd2mZ7"

RULES = '"~orders:* +@read +@write +ping -@dangerous"'


class Logins:
    """Logs in on each node in turn every 20 ms (a fresh connection), with the token the store's
    latest was at its last read (every 200 ms)."""

    def __init__(self, bao: RunningBao, login: Callable[[int, str], None]):
        self.bao, self.login = bao, login
        self.token = str(bao.get("apps/orders")["data"]["token"])
        self.attempts = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._reread, daemon=True), threading.Thread(target=self._logins, daemon=True)]
        for t in self.threads:
            t.start()

    def _reread(self) -> None:
        while not self._stop.wait(0.2):
            self.token = str(self.bao.get("apps/orders")["data"]["token"])

    def _logins(self) -> None:
        while not self._stop.wait(0.02):
            self.attempts += 1
            try:
                self.login(self.attempts, self.token)
            except (redis.RedisError, OSError) as exc:
                self.failures.append(f"attempt {self.attempts}: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        time.sleep(0.3)
        self._stop.set()
        for t in self.threads:
            t.join(5)


def three_rotations(cli: Cli, bao: RunningBao, login: Callable[[int, str], None]) -> list[str]:
    bao.put("apps/orders", {"token": FIRST})
    assert cli.apply(expect=0).code == 0
    logins = Logins(bao, login)
    try:
        for _ in range(3):
            r = cli("rotate", "-f", str(cli.file), "--auto-approve", "--user", "app-orders", expect=0)
            assert "Rotation summary:" in r.out, r.out
            wait_until("the client to read the latest version", lambda: logins.token == str(bao.get("apps/orders")["data"]["token"]), 10)
            time.sleep(0.1)
    finally:
        logins.stop()
    assert logins.failures == [], logins.failures[:5]
    assert logins.attempts > 50
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0
    current = bao.get("apps/orders")["metadata"]["version"]
    values = [str(bao.get("apps/orders", v)["data"]["token"]) for v in range(1, current + 1)]
    for text in cli.outputs:
        assert not any(v in text for v in values)
    return values


# -- a primary with replicas, a cluster ----------------------------------------------------------------


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    dep = REGISTRY.get(tuple(request.param), needed_keys(request.session))
    reset_acls(dep)
    return dep


@pytest.mark.parametrize("deployment", [(SERVER, "replicated"), (SERVER, "cluster")], indirect=True, ids=lambda k: k[1])
def test_every_node(deployment: Deployment, bao: RunningBao, tmp_path: Path) -> None:
    cli = Cli(tmp_path, env={"T_SEED": deployment.nodes[0].address, "T_ADMIN": ADMIN_PASSWORD, **bao.env(), "NO_COLOR": "1"})
    cli.write(f"""version: 1
policies: {{min_overlap_hours: 0}}
instances:
  cache:
    nodes: [{{env: T_SEED}}]
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
users:
  app-orders:
    acl: {RULES}
    tokens:
{TOKENS}""")
    nodes = deployment.nodes

    def login(n: int, token: str) -> None:
        srv = nodes[n % len(nodes)]
        conn = redis.Connection(host=srv.host, port=srv.port, username="app-orders", password=token, socket_timeout=2)
        try:
            conn.connect()
        finally:
            conn.disconnect()

    values = three_rotations(cli, bao, login)
    for srv in nodes:
        for value, valid in zip(values, (False, False, True, True), strict=True):
            if valid:
                c = srv.client("app-orders", value, retry=no_retry())
                assert c.ping()
                c.close()
            else:
                with pytest.raises(redis.AuthenticationError):
                    srv.client("app-orders", value, retry=no_retry()).ping()


# -- the users of Sentinel processes ---------------------------------------------------------------------


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    g = start_group(SERVER, tmp_path / "sentinel")
    yield g
    g.stop()


def test_sentinel_users(group: Group, bao: RunningBao, tmp_path: Path) -> None:
    env = {"T_ADMIN": SENTINEL_ADMIN, **{f"T_S{i}": s.address for i, s in enumerate(group.sentinels)}}
    cli = Cli(tmp_path, env={**env, **bao.env(), "NO_COLOR": "1"})
    cli.write(f"""version: 1
policies: {{min_overlap_hours: 0}}
instances:
  cache:
    topology: sentinel
    sentinels: [{{env: T_S0}}, {{env: T_S1}}, {{env: T_S2}}]
    master_name: {MASTER}
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
    sentinel_users:
      app-orders:
        acl: "+ping +sentinel|get-master-addr-by-name"
        tokens:
{TOKENS.replace("      ", "          ")}users: {{}}
""")
    sentinels: list[RunningServer] = group.sentinels

    def login(n: int, token: str) -> None:
        c = sentinels[n % len(sentinels)].client(username="app-orders", password=token, retry=no_retry())
        try:
            assert c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        finally:
            c.close()

    values = three_rotations(cli, bao, login)
    for s in sentinels:
        for old in values[:2]:
            with pytest.raises(redis.AuthenticationError):
                s.client(username="app-orders", password=old, retry=no_retry()).ping()
        assert s.client(username="app-orders", password=values[-1], retry=no_retry()).ping()
    for srv in group.data:
        assert "app-orders" not in group.users(srv)  # sentinel users never reach the data nodes
