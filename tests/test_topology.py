"""Topology discovery (reconciler.providers.redis.topology): parsers offline, then real servers on every
version of the matrix -- any seed finds the whole replicated group or cluster, `discover:
false` keeps to the listed nodes, an address a node reports but we can't reach is an error
naming it (with the NAT hint), never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import MATRIX, free_port
from support.cluster import (
    ADMIN_PASSWORD,
    REGISTRY,
    Deployment,
    admin,
    needed_keys,
    reset_acls,
    start_replicated,
    wait_until,
)

from reconciler.cli import main
from reconciler.errors import LiveError
from reconciler.model import Admin, Instance, Secret
from reconciler.providers.redis import read as live
from reconciler.providers.redis import topology

# -- parsers, offline ---------------------------------------------------------------------------

NODES_62 = """\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003,cache-3.example master - 0 1426238318243 3 connected 10923-16383 [12000->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460
aaaaeecce10fd6bb5eb35b9f99a514335d9ba9ca 10.0.0.9:30009@31009 handshake - 0 0 0 connected
bbbbeecce10fd6bb5eb35b9f99a514335d9ba9ca :0@0 slave,noaddr 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 0 0 disconnected
"""


def test_parse_cluster_nodes() -> None:
    nodes = {n.id[:4]: n for n in topology.parse_cluster_nodes(NODES_62, myself="seed.example:30001")}
    assert "aaaa" not in nodes  # a MEET in progress is not a member
    assert nodes["e7d1"].address == "seed.example:30001"  # a lone `myself` has no IP yet
    assert nodes["e7d1"].role == "primary" and nodes["e7d1"].first_slot == 0
    assert nodes["292f"].address == "127.0.0.1:30003" and nodes["292f"].first_slot == 10923
    assert nodes["07c3"].role == "replica" and nodes["07c3"].primary_id.startswith("e7d1")
    assert nodes["6ec2"].failed and nodes["6ec2"].address == "127.0.0.1:30005"
    assert nodes["bbbb"].address is None  # noaddr: reported as unreachable, not skipped


def test_parse_cluster_shards_prefers_tls_port_and_endpoint() -> None:
    reply = [
        [
            "slots", [0, 5460],
            "nodes", [
                ["id", "a" * 40, "port", 7000, "tls-port", 7100, "ip", "10.0.0.1", "endpoint", "cache-1.internal",
                 "role", "master", "replication-offset", 1, "health", "online"],
                {"id": "b" * 40, "port": 7001, "ip": "10.0.0.2", "endpoint": "?", "role": "replica", "health": "fail"},
            ],
        ],
        {"slots": [], "nodes": [{"id": "c" * 40, "port": 7002, "ip": "::1", "endpoint": "::1", "role": "master"}]},
    ]
    plain = topology.parse_cluster_shards(reply, tls=False)
    assert [(n.address, n.role) for n in plain] == [
        ("cache-1.internal:7000", "primary"),
        ("10.0.0.2:7001", "replica"),  # endpoint "?" -> ip
        ("[::1]:7002", "primary"),
    ]
    assert plain[1].primary_id == "a" * 40 and plain[1].failed
    assert plain[0].first_slot == 0 and plain[2].first_slot > 16383
    tls = topology.parse_cluster_shards(reply, tls=True)
    assert tls[0].address == "cache-1.internal:7100" and tls[1].address == "10.0.0.2:7001"


def test_parse_replication() -> None:
    primary = {
        "role": "master",
        "connected_slaves": 2,
        "slave0": {"ip": "10.0.0.2", "port": 6379, "state": "online", "offset": 14, "lag": 0},
        "slave1": "ip=fe80::2,port=6380,state=wait_bgsave,offset=0,lag=0",
        "master_repl_offset": 14,
    }
    assert topology.parse_replication("p:1", primary) == ("primary", None, ["10.0.0.2:6379", "[fe80::2]:6380"])
    replica = {"role": "slave", "master_host": "cache-primary", "master_port": 6379, "connected_slaves": 0}
    assert topology.parse_replication("r:1", replica) == ("replica", "cache-primary:6379", [])


# -- real servers -------------------------------------------------------------------------------

KEYS = [(sid, kind) for kind in ("replicated", "cluster") for sid in MATRIX]


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    dep = REGISTRY.get(tuple(request.param), needed_keys(request.session))
    reset_acls(dep)
    return dep


each_deployment = pytest.mark.parametrize("deployment", KEYS, indirect=True, ids=lambda k: f"{k[0]}-{k[1]}")


def instance(*nodes: str, discover: bool = True, topo: str = "auto", password: str | None = ADMIN_PASSWORD) -> Instance:
    admin_ = Admin(username="default", secret=Secret(password)) if password else Admin()
    return Instance(name="cache", nodes=tuple(nodes), admin=admin_, discover=discover, topology=topo)  # type: ignore[arg-type]


def discovered(inst: Instance) -> topology.Topology:
    topo, clients = topology.discover(inst, connect=live.connect)
    for c in clients.values():
        c.close()
    return topo


@pytest.mark.server
@each_deployment
def test_any_seed_finds_every_node(deployment: Deployment) -> None:
    roles = deployment.roles()
    everyone = set(roles)
    for seed in deployment.nodes:
        topo = discovered(instance(seed.address))
        assert topo.kind == deployment.kind
        assert set(topo.nodes) == everyone, f"from {seed.address}"
        assert {m.address: m.role for m in topo.members} == roles
        # Primaries first, each followed by its own replicas.
        first = topo.members[0]
        assert first.role == "primary"
        for m in topo.members:
            if m.role == "replica":
                assert m.primary in everyone
                assert topo.nodes.index(m.primary) < topo.nodes.index(m.address)
    # A seed under another name for the same server is not read twice; its spelling is kept.
    seed = deployment.replicas()[0]
    alias = f"localhost:{seed.port}"
    topo = discovered(instance(alias))
    assert len(topo.nodes) == len(everyone)
    assert alias in topo.nodes and seed.address not in topo.nodes

    state = live.read_instance(instance(deployment.nodes[-1].address))
    assert state.topology == deployment.kind
    assert {n.address: n.role for n in state.nodes} == roles


@pytest.mark.server
@each_deployment
def test_discover_false_reads_only_the_listed_nodes(deployment: Deployment) -> None:
    one, two = deployment.replicas()[0], deployment.primaries()[0]
    topo = discovered(instance(one.address, two.address, discover=False))
    assert topo.nodes == (one.address, two.address)
    assert topo.kind == deployment.kind
    state = live.read_instance(instance(one.address, discover=False))
    assert [n.address for n in state.nodes] == [one.address]
    assert state.nodes[0].role == "replica"


@pytest.mark.server
@each_deployment
def test_declared_topology_must_match(deployment: Deployment) -> None:
    seed = deployment.nodes[0].address
    assert discovered(instance(seed, topo=deployment.kind)).kind == deployment.kind
    other = "cluster" if deployment.kind == "replicated" else "replicated"
    with pytest.raises(LiveError, match=rf"topology: {other} in the file, but the servers are {deployment.kind} \("):
        discovered(instance(seed, topo=other))


@pytest.mark.server
def test_unreachable_seed_is_named(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(LiveError, match=rf"^cache 127\.0\.0\.1:{port}: .*(refused|111)"):
        discovered(instance(f"127.0.0.1:{port}"))


@pytest.mark.server
@pytest.mark.parametrize("server_id", MATRIX)
def test_replica_announcing_an_unreachable_address(server_id: str, tmp_path: Path, monkeypatch, capsys) -> None:
    dead = free_port()  # nothing listens here: what a NATed / containerised replica looks like
    group = start_replicated(server_id, tmp_path, replicas=2)
    try:
        # A third replica announcing a port nobody can reach.
        hidden = start_replicated(server_id, tmp_path / "x", replicas=0)
        hidden_node = hidden.nodes[0]
        c = admin(hidden_node)
        c.execute_command("CONFIG", "SET", "replica-announce-port", str(dead))
        c.execute_command("REPLICAOF", group.nodes[0].host, str(group.nodes[0].port))
        c.close()
        wait_until("the primary to list 3 replicas", lambda: _replicas(group.nodes[0]) == 3)

        for seed in (group.nodes[0], group.nodes[1]):  # from the primary and from a sibling replica
            with pytest.raises(LiveError) as info:
                discovered(instance(seed.address, password=None))
            msg = str(info.value)
            assert msg.startswith("cache: cannot reach 1 node: ")
            assert f"127.0.0.1:{dead} (replica of {group.nodes[0].address})" in msg
            assert "list every node under `nodes:` and set `discover: false`" in msg

        # The CLI: one line, exit 1, nothing else.
        monkeypatch.setenv("T_SEED", group.nodes[1].address)
        f = tmp_path / "access.yaml"
        f.write_text("version: 1\ninstances:\n  cache:\n    nodes: [{env: T_SEED}]\nusers: {}\n")
        assert main(["plan", "-f", str(f)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and f"127.0.0.1:{dead}" in err and "Traceback" not in err

        # The hint works: list the nodes, discover: false.
        listed = [group.nodes[0].address, group.nodes[1].address, group.nodes[2].address, hidden_node.address]
        state = live.read_instance(instance(*listed, discover=False, password=None))
        assert [n.address for n in state.nodes] == listed
        assert [n.role for n in state.nodes] == ["primary", "replica", "replica", "replica"]
        hidden.stop()
    finally:
        group.stop()


def _replicas(srv) -> int:
    c = admin(srv)
    try:
        return int(c.info("replication").get("connected_slaves", 0))
    finally:
        c.close()


@pytest.mark.server
@pytest.mark.parametrize("server_id", MATRIX)
def test_chained_replica_found_from_any_seed(server_id: str, tmp_path: Path) -> None:
    group = start_replicated(server_id, tmp_path, replicas=1)
    chained = start_replicated(server_id, tmp_path / "chained", replicas=0)
    try:
        leaf = chained.nodes[0]
        c = admin(leaf)
        c.execute_command("REPLICAOF", group.nodes[1].host, str(group.nodes[1].port))
        c.close()
        wait_until("the middle replica to list its replica", lambda: _replicas(group.nodes[1]) == 1)
        expected = [group.nodes[0].address, group.nodes[1].address, leaf.address]
        for seed in (group.nodes[0], leaf):
            topo = discovered(instance(seed.address, password=None))
            assert topo.kind == "replicated"
            assert list(topo.nodes) == expected
            assert topo.members[2].primary == group.nodes[1].address
    finally:
        chained.stop()
        group.stop()


@pytest.mark.server
@pytest.mark.parametrize("deployment", [k for k in KEYS if k[1] == "cluster"], indirect=True, ids=lambda k: f"{k[0]}-{k[1]}")
def test_cluster_member_announcing_an_unreachable_port(deployment: Deployment) -> None:
    victim = deployment.replicas()[-1]
    seed = deployment.primaries()[0]
    dead = free_port()
    c = admin(victim)
    try:
        c.execute_command("CONFIG", "SET", "cluster-announce-port", str(dead))

        def seen() -> bool:
            try:
                discovered(instance(seed.address))
            except LiveError as exc:
                return f"127.0.0.1:{dead}" in str(exc)
            return False

        wait_until("the announced port to reach the seed by gossip", seen, timeout=15)
        with pytest.raises(LiveError) as info:
            discovered(instance(seed.address))
        msg = str(info.value)
        assert f"127.0.0.1:{dead} (cluster replica reported by {seed.address})" in msg
        assert "`discover: false`" in msg
    finally:
        c.execute_command("CONFIG", "SET", "cluster-announce-port", "0")
        c.close()

    def healed() -> bool:
        try:
            return set(discovered(instance(seed.address)).nodes) == set(deployment.roles())
        except LiveError:
            return False

    wait_until("the real port to be gossiped back", healed, timeout=15)


@pytest.mark.server
@pytest.mark.parametrize("deployment", [k for k in KEYS if k[1] == "cluster"], indirect=True, ids=lambda k: f"{k[0]}-{k[1]}")
def test_cluster_discovery_with_a_restricted_admin(deployment: Deployment) -> None:
    """An admin user without CLUSTER SHARDS falls back to CLUSTER NODES; without either, the
    error says what to allow (or to list the nodes with discover: false)."""
    secret = "restricted-admin-plaintext-7e3a9c1d5b"
    # 6.2 has no CLUSTER SHARDS (and refuses the rule): it always reads CLUSTER NODES.
    no_shards = "+@all" if deployment.nodes[0].id == "redis-6.2" else "+@all -cluster|shards"
    for rules, works in ((no_shards, True), ("+@all -cluster", False)):
        for s in deployment.nodes:
            c = admin(s)
            c.execute_command("ACL", "SETUSER", "reconciler", "reset", "on", f">{secret}", "~*", "&*", *rules.split())
            c.close()
        inst = Instance(name="cache", nodes=(deployment.nodes[0].address,), admin=Admin("reconciler", Secret(secret)))
        if works:
            assert set(discovered(inst).nodes) == set(deployment.roles())
        else:
            with pytest.raises(LiveError, match=r"cannot list cluster members .*allow CLUSTER SHARDS / CLUSTER NODES.*`discover: false`"):
                discovered(inst)
            listed = Instance(
                name="cache", nodes=tuple(s.address for s in deployment.nodes), admin=Admin("reconciler", Secret(secret)), discover=False
            )
            assert discovered(listed).kind == "cluster"
