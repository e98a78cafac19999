"""Multi-node test deployments built from tests/servers.py: a primary with replicas, and a
Redis/Valkey Cluster assembled with CLUSTER MEET / ADDSLOTS / REPLICATE (no redis-cli needed).

Servers start in parallel threads; replication uses diskless sync with no delay and the
cluster a short node timeout, so a 6-node cluster is ready in about a second.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis
from servers import RunningServer, ServerStartError, start_server

SLOTS = 16384
NODE_TIMEOUT_MS = 1500
READY_TIMEOUT = 30.0

# Fast full syncs: 7.0+ default to diskless with a 5 s delay, 6.2 to an RDB file on disk.
REPL_CONFIG = ("repl-diskless-sync yes", "repl-diskless-sync-delay 0", "repl-diskless-load disabled")


def wait_until(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def _start(server_id: str, workdir: Path, cluster: bool, **opts: Any) -> RunningServer:
    """start_server, retried: the cluster bus listens on port + 10000, which must be free and
    below 65536, and the fixture picks the port itself."""
    for attempt in range(8):
        try:
            srv = start_server(server_id, workdir / f"try-{attempt}" if attempt else workdir, **opts)
        except ServerStartError:
            if not cluster or attempt == 7:
                raise
            continue
        return srv
    raise AssertionError("unreachable")


def _parallel(fns: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(fns))) as pool:
        return list(pool.map(lambda f: f(), fns))


# The admin password every node's `default` user gets once a deployment is set up
# (None before that: fresh servers have `default` nopass).
_PASSWORDS: dict[int, str] = {}


def set_password(srv: RunningServer, password: str) -> None:
    """From now on `srv.admin()` (also used by RunningServer.restart to wait for PING) and
    admin(srv) log in with `password`."""
    _PASSWORDS[id(srv)] = password

    def admin_with_password(**kw: Any) -> redis.Redis:
        return srv.client("default", password, **kw)

    srv.admin = admin_with_password  # type: ignore[method-assign]


def admin(srv: RunningServer, **kw: Any) -> redis.Redis:
    """`default` on this node, with the deployment's admin password once it has one."""
    return srv.admin(**kw)


def _repl_info(srv: RunningServer) -> dict[str, Any]:
    c = admin(srv, socket_timeout=2, socket_connect_timeout=2)
    try:
        return c.info("replication")
    finally:
        c.close()


def _in_sync(info: dict[str, Any]) -> bool:
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


def replica_in_sync(srv: RunningServer) -> bool:
    return _in_sync(_repl_info(srv))


def connected_replicas(srv: RunningServer) -> int:
    info = _repl_info(srv)
    return int(info.get("connected_slaves", 0)) if info.get("role") == "master" else 0


class Deployment:
    """Common view of a multi-node deployment; roles are read live (failovers move them)."""

    kind = ""
    nodes: list[RunningServer]

    def by_address(self, address: str) -> RunningServer:
        return next(s for s in self.nodes if s.address == address)

    def roles(self) -> dict[str, str]:
        """address -> "primary" | "replica", from each node's own ROLE."""
        return {s.address: "primary" if _role(s) == "master" else "replica" for s in self.nodes}

    def primaries(self) -> list[RunningServer]:
        roles = self.roles()
        return [s for s in self.nodes if roles[s.address] == "primary"]

    def replicas(self) -> list[RunningServer]:
        roles = self.roles()
        return [s for s in self.nodes if roles[s.address] == "replica"]

    def primary_of(self, replica: RunningServer) -> RunningServer:
        info = _repl_info(replica)
        return self.by_address(f"{info['master_host']}:{info['master_port']}")

    def wait_ready(self) -> None:
        raise NotImplementedError

    def rejoin(self, srv: RunningServer) -> None:
        """After `srv` was restarted: make it follow the deployment again."""
        use_masterauth(srv)

    def failover(self, replica: RunningServer) -> RunningServer:
        raise NotImplementedError

    def stop(self) -> None:
        _parallel([s.stop for s in self.nodes])


@dataclass
class Replicated(Deployment):
    """One primary and its replicas (`replicaof` in each replica's start options)."""

    nodes: list[RunningServer]
    kind = "replicated"

    def wait_ready(self) -> None:
        clients = {s.address: admin(s, socket_timeout=2) for s in self.nodes}

        def ok() -> bool:
            infos = {a: c.info("replication") for a, c in clients.items()}
            primaries = [a for a, i in infos.items() if i.get("role") == "master"]
            assert len(primaries) <= 1, f"expected one primary, found {primaries}"
            if not primaries or int(infos[primaries[0]].get("connected_slaves", 0)) != len(self.nodes) - 1:
                return False
            return all(_in_sync(i) for a, i in infos.items() if a != primaries[0])

        try:
            wait_until("one primary with every replica in sync", ok)
        finally:
            for c in clients.values():
                c.close()

    def rejoin(self, srv: RunningServer) -> None:
        # Its argv says `replicaof <first primary>`, which a failover may have demoted.
        use_masterauth(srv)
        primary = next(s for s in self.nodes if s is not srv and s.alive() and _role(s) == "master")
        c = admin(srv)
        try:
            c.execute_command("REPLICAOF", primary.host, str(primary.port))
        finally:
            c.close()

    def failover(self, replica: RunningServer) -> RunningServer:
        """REPLICAOF swap: `replica` becomes primary, every other node follows it; returns the old primary."""
        old = self.primary_of(replica)
        c = admin(replica)
        try:
            c.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            c.close()
        for s in self.nodes:
            if s is not replica:
                c = admin(s)
                try:
                    c.execute_command("REPLICAOF", replica.host, str(replica.port))
                finally:
                    c.close()
        self.wait_ready()
        return old


def start_replicated(server_id: str, workdir: Path, *, replicas: int = 2, **opts: Any) -> Replicated:
    extra = tuple(opts.pop("extra_config", ())) + REPL_CONFIG
    replica_opts = dict(opts)
    replica_extra = tuple(replica_opts.pop("replica_config", ()))
    opts.pop("replica_config", None)
    primary = _start(server_id, workdir / "primary", False, extra_config=extra, **opts)
    tls = ("tls-replication yes",) if primary.tls else ()
    replica_extra = extra + tls + replica_extra + (f"replicaof {primary.host} {primary.port}",)
    started: list[RunningServer] = []
    try:
        started = _parallel(
            [
                (lambda i=i: _start(server_id, workdir / f"replica-{i}", False, extra_config=replica_extra, **replica_opts))
                for i in range(replicas)
            ]
        )
        group = Replicated([primary, *started])
        group.wait_ready()
        return group
    except BaseException:
        _parallel([s.stop for s in [primary, *started]])
        raise


@dataclass
class Cluster(Deployment):
    """A cluster of `shards` primaries with `replicas` replicas each."""

    nodes: list[RunningServer]
    shards: int
    ids: dict[str, str] = field(default_factory=dict)  # address -> cluster node id
    kind = "cluster"

    def wait_ready(self) -> None:
        # One client per node for the whole wait: over TLS every new connection is a handshake.
        clients = {s.address: admin(s, socket_timeout=2) for s in self.nodes}

        def ok() -> bool:
            replicas = []
            for _address, c in clients.items():
                info = c.execute_command("CLUSTER", "INFO")
                text = info if isinstance(info, str) else str(info)
                if "cluster_state:ok" not in text.replace(" ", ""):
                    return False
                nodes = _cluster_nodes_text(c)
                if any(flag in nodes for flag in ("fail", "handshake", "noaddr")):
                    return False
                # Every node's own view must agree: each shard's primary holds slots and
                # every replica is known as one (gossip spreads role changes lazily).
                lines = [ln.split() for ln in nodes.splitlines() if ln.strip()]
                if len(lines) != len(self.nodes):
                    return False
                primaries = [f for f in lines if "master" in f[2].split(",")]
                if len(primaries) != self.shards or any(len(f) < 9 for f in primaries):
                    return False
                if c.execute_command("ROLE")[0] == "slave":
                    replicas.append(c)
            return all(_in_sync(c.info("replication")) for c in replicas)

        try:
            wait_until("cluster_state:ok on every node", ok)
        finally:
            for c in clients.values():
                c.close()

    wait_ok = wait_ready

    def failover(self, replica: RunningServer) -> RunningServer:
        """Manual failover (CLUSTER FAILOVER on the replica); returns the old primary."""
        old = self.primary_of(replica)
        c = admin(replica)
        try:
            c.execute_command("CLUSTER", "FAILOVER")
        finally:
            c.close()
        wait_until(f"{replica.address} promoted", lambda: _role(replica) == "master")
        wait_until(f"{old.address} demoted", lambda: _role(old) == "slave")
        self.wait_ready()
        return old


def _role(srv: RunningServer) -> str:
    c = admin(srv, socket_timeout=2)
    try:
        return c.execute_command("ROLE")[0]
    finally:
        c.close()


def _cluster_nodes_text(c: redis.Redis) -> str:
    # Bypass redis-py's CLUSTER NODES parser: the raw text is what we check.
    conn = c.connection_pool.get_connection()
    try:
        conn.send_command("CLUSTER", "NODES")
        reply = conn.read_response()
    finally:
        c.connection_pool.release(conn)
    return reply.decode() if isinstance(reply, bytes) else reply


def start_cluster(server_id: str, workdir: Path, *, shards: int = 3, replicas: int = 1, **opts: Any) -> Cluster:
    extra = tuple(opts.pop("extra_config", ())) + REPL_CONFIG + (
        "cluster-enabled yes",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        "cluster-config-file nodes.conf",
        # A replica whose link was down must still be allowed to fail over in tests.
        "cluster-replica-validity-factor 0",
    )
    if opts.get("tls"):
        extra += ("tls-cluster yes", "tls-replication yes")
    count = shards * (1 + replicas)
    nodes: list[RunningServer] = []
    try:
        nodes = _parallel(
            [(lambda i=i: _start(server_id, workdir / f"node-{i}", True, extra_config=extra, **opts)) for i in range(count)]
        )
        cluster = Cluster(nodes, shards)
        clients = [s.admin() for s in nodes]
        try:
            for s, c in zip(nodes, clients, strict=False):
                cluster.ids[s.address] = c.execute_command("CLUSTER", "MYID")
            per = SLOTS // shards
            for i in range(shards):
                lo = i * per
                hi = SLOTS - 1 if i == shards - 1 else lo + per - 1
                clients[i].execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
            first = nodes[0]
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", first.host, str(first.port))

            def everyone_known() -> bool:
                return all(
                    len([ln for ln in _cluster_nodes_text(c).splitlines() if ln.strip()]) == count
                    and "handshake" not in _cluster_nodes_text(c)
                    for c in clients
                )

            wait_until("every node to know every other", everyone_known)
            for j in range(shards * replicas):
                replica = clients[shards + j]
                primary = nodes[j % shards]
                wait_until(
                    f"{nodes[shards + j].address} replicating {primary.address}",
                    lambda replica=replica, primary=primary: replica.execute_command(
                        "CLUSTER", "REPLICATE", cluster.ids[primary.address]
                    )
                    in (True, "OK"),
                )
        finally:
            for c in clients:
                c.close()
        cluster.wait_ok()
        return cluster
    except BaseException:
        _parallel([s.stop for s in nodes])
        raise


# -- deployments shared by the tests of a session ---------------------------------------------

ADMIN_PASSWORD = "cluster-admin-plaintext-5c2e8a1f9d7b3064"
Key = tuple[str, str]  # (server id, "replicated" | "cluster" | "replicated-tls" | "cluster-tls")


def setup_admin(dep: Deployment, password: str = ADMIN_PASSWORD) -> None:
    """Give `default` the admin password on every node and save it to the aclfile, so a node
    restarted by a test comes back with it."""
    for s in dep.nodes:
        c = admin(s)
        try:
            c.execute_command("ACL", "SETUSER", "default", "on", f">{password}")
            if s.aclfile is not None:
                c.execute_command("ACL", "SAVE")
        finally:
            c.close()
        set_password(s, password)
    for s in dep.nodes:
        use_masterauth(s)


def use_masterauth(srv: RunningServer) -> None:
    """Replicas log in to their primary as `default`; set at run time, since a primary whose
    `default` is still nopass refuses AUTH with a password."""
    password = _PASSWORDS.get(id(srv))
    if password is None:
        return
    c = admin(srv)
    try:
        c.execute_command("CONFIG", "SET", "masterauth", password)
    finally:
        c.close()


def reset_acls(dep: Deployment) -> None:
    """Back to the starting point: every node up and in sync, only `default` left."""
    restarted = False
    for s in dep.nodes:
        if not s.alive():  # a test that failed half-way left a node down
            s.restart()
            dep.rejoin(s)
            restarted = True
    if restarted:
        dep.wait_ready()
    for s in dep.nodes:
        c = admin(s)
        try:
            others = [line.split()[1] for line in c.execute_command("ACL", "LIST") if line.split()[1] != "default"]
            if others:
                c.execute_command("ACL", "DELUSER", *others)
            if s.aclfile is not None:
                c.execute_command("ACL", "SAVE")
        finally:
            c.close()


class Registry:
    """Deployments started once per session, in parallel, on first use; stopped at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[Key, Deployment | BaseException] = {}
        self._root: Path | None = None

    def _workdir(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="reconciler-cluster-"))
            atexit.register(shutil.rmtree, self._root, True)
        return self._root

    def _start(self, key: Key) -> Deployment | BaseException:
        server_id, kind = key
        try:
            where = self._workdir() / f"{server_id}-{kind}"
            tls = kind.endswith("-tls")  # "cluster-tls": TLS-only ports, tls-replication, tls-cluster
            if kind.startswith("cluster"):
                dep: Deployment = start_cluster(server_id, where, aclfile=True, tls=tls)
            else:
                dep = start_replicated(server_id, where, aclfile=True, tls=tls)
            setup_admin(dep)
            return dep
        except BaseException as exc:  # pytest's skip/fail outcomes included: re-raised by get()
            return exc

    def prepare(self, keys: list[Key]) -> None:
        with self._lock:
            todo = [k for k in dict.fromkeys(keys) if k not in self._done]
            for key, result in zip(todo, _parallel([(lambda k=k: self._start(k)) for k in todo]) if todo else [], strict=False):
                self._done[key] = result

    def get(self, key: Key, also: list[Key] = ()) -> Deployment:
        self.prepare([key, *also])
        result = self._done[key]
        if isinstance(result, BaseException):
            raise result
        return result

    def stop_all(self) -> None:
        # Runs at interpreter exit, where thread pools are gone: signal every server, then wait.
        servers = [s for d in self._done.values() if isinstance(d, Deployment) for s in d.nodes]
        for s in servers:
            if s.alive() and s._proc is not None:
                s._proc.terminate()
        for s in servers:
            s.stop()


REGISTRY = Registry()
atexit.register(REGISTRY.stop_all)


def needed_keys(session: Any, fixture: str = "deployment") -> list[Key]:
    """Every deployment key the collected tests parametrize `fixture` with."""
    out: list[Key] = []
    for item in getattr(session, "items", []):
        callspec = getattr(item, "callspec", None)
        if callspec is not None and fixture in callspec.params:
            out.append(tuple(callspec.params[fixture]))  # type: ignore[arg-type]
    return out
