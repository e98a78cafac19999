"""Topology discovery: from an instance's seed nodes to every primary and replica.

ACLs are per node (Redis Cluster does not propagate ACL SETUSER and replicas do not take
ACLs from their primary), so every member must be found and managed:

- cluster (`cluster_enabled:1`): the members CLUSTER SHARDS lists (Redis/Valkey 7.0+), or
  CLUSTER NODES on 6.2 and for admin users not allowed CLUSTER SHARDS;
- replicated: INFO replication, walked both ways (a replica names its primary, a primary
  lists its replicas, chained replicas list theirs), so any seed finds the whole group;
- standalone: one node, no replicas.

With `discover: false` exactly the listed nodes are used. An address a node reports that
cannot be reached is an error naming it -- never skipped: a node left out keeps old ACLs
and turns a failover into an outage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from ... import addresses
from ...errors import LiveError
from ...model import Instance
from .deadline import deadline

MAX_WORKERS = 8
NAT_HINT = (
    "if these addresses are not reachable from here (NAT, containers, announced addresses), "
    "list every node under `nodes:` and set `discover: false`"
)

Connect = Callable[..., redis.Redis]


@dataclass
class Probe:
    """What one INFO round trip tells about a node."""

    address: str
    run_id: str = ""
    role: str = "primary"  # primary | replica
    primary: str | None = None  # replicas: "host:port" of the primary they follow
    replicas: list[str] = field(default_factory=list)  # primaries (and chained replicas): their replicas
    cluster: bool = False
    replication_known: bool = True  # INFO replication answered


@dataclass(frozen=True)
class Member:
    address: str
    role: str  # primary | replica | sentinel (topology: sentinel, when the sentinels' users are managed)
    primary: str | None = None  # replicas: the address of their primary, when known


@dataclass(frozen=True)
class Topology:
    kind: str  # standalone | replicated | cluster | sentinel
    members: tuple[Member, ...]  # primaries each followed by their replicas

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(m.address for m in self.members)


join_address = addresses.join


def sort_key(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host, int(port) if port.isdigit() else 0)


def parse_info(reply: Any) -> dict[str, Any]:
    """INFO as a dict, whether redis-py parsed it already or not."""
    if isinstance(reply, dict):
        return reply
    out: dict[str, Any] = {}
    for line in str(reply).splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _replica_entry(value: Any) -> tuple[str, str] | None:
    """(ip, port) of an INFO replication `slaveN` value: parsed dict or `ip=..,port=..,...`."""
    if isinstance(value, dict):
        fields = {str(k): str(v) for k, v in value.items()}
    else:
        fields = dict(part.split("=", 1) for part in str(value).split(",") if "=" in part)
    ip, port = fields.get("ip"), fields.get("port")
    if not ip or not port:
        return None
    return ip, port


def parse_replication(address: str, info: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(role, primary address, replica addresses) from INFO replication."""
    role = "replica" if info.get("role") == "slave" else "primary"
    primary = None
    if role == "replica" and info.get("master_host"):
        primary = join_address(str(info["master_host"]), info.get("master_port", ""))
    replicas = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit():
            entry = _replica_entry(value)
            if entry is not None:
                replicas.append(join_address(*entry))
    return role, primary, replicas


def probe(client: redis.Redis, address: str) -> Probe:
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("INFO", "server")
    pipe.execute_command("INFO", "replication")
    pipe.execute_command("INFO", "cluster")
    server, repl, cluster = pipe.execute(raise_on_error=False)
    if isinstance(server, Exception):
        raise LiveError(f"{address}: INFO refused: {server}")
    p = Probe(address=address, run_id=str(parse_info(server).get("run_id", "")))
    if isinstance(repl, Exception):
        p.replication_known = False
    else:
        p.role, p.primary, p.replicas = parse_replication(address, parse_info(repl))
    if not isinstance(cluster, Exception):
        p.cluster = str(parse_info(cluster).get("cluster_enabled", "0")) == "1"
    return p


# -- cluster membership ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    id: str
    address: str | None  # None: the node has no known address
    role: str  # primary | replica
    primary_id: str | None
    failed: bool = False
    first_slot: int = 1 << 20  # orders shards like the slot map; slotless primaries last


def pairs(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    items = list(value)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def parse_cluster_shards(reply: Any, *, tls: bool) -> list[ClusterNode]:
    """CLUSTER SHARDS (7.0+): one entry per shard with its slot ranges and nodes."""
    out: list[ClusterNode] = []
    for shard in reply:
        s = pairs(shard)
        slots = [int(x) for x in (s.get("slots") or [])]
        nodes = [pairs(n) for n in (s.get("nodes") or [])]
        primary_id = next((str(n["id"]) for n in nodes if n.get("role") == "master"), None)
        for n in nodes:
            host = str(n.get("endpoint") or "")
            if host in ("", "?"):
                host = str(n.get("ip") or "")
            port = n.get("tls-port") if tls and n.get("tls-port") else n.get("port") or n.get("tls-port")
            address = join_address(host, port) if host and port else None
            role = "primary" if n.get("role") == "master" else "replica"
            out.append(
                ClusterNode(
                    id=str(n["id"]),
                    address=address,
                    role=role,
                    primary_id=None if role == "primary" else primary_id,
                    failed=str(n.get("health", "online")) == "fail",
                    first_slot=min(slots) if slots and role == "primary" else 1 << 20,
                )
            )
    return out


def parse_cluster_nodes(text: str, *, myself: str) -> list[ClusterNode]:
    """CLUSTER NODES (every version): `<id> <ip:port@cport[,hostname]> <flags> <master> ...`."""
    out: list[ClusterNode] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, addr, flags = parts[0], parts[1], set(parts[2].split(","))
        if "handshake" in flags:
            continue  # not a member yet: a MEET in progress, under a temporary id
        hostport = addr.split("@", 1)[0]
        host, _, port = hostport.rpartition(":")
        if "myself" in flags and not host:
            address: str | None = myself  # a lone node does not know its own IP yet
        elif not host or "noaddr" in flags or port in ("", "0"):
            address = None
        else:
            address = join_address(host, port)
        role = "replica" if "slave" in flags else "primary"
        slots = [int(s.split("-")[0]) for s in parts[8:] if s[:1].isdigit()]
        out.append(
            ClusterNode(
                id=node_id,
                address=address,
                role=role,
                primary_id=parts[3] if role == "replica" and parts[3] != "-" else None,
                failed="fail" in flags,
                first_slot=min(slots) if slots else 1 << 20,
            )
        )
    return out


def cluster_members(client: redis.Redis, address: str, *, tls: bool) -> list[ClusterNode]:
    try:
        reply = client.execute_command("CLUSTER", "SHARDS")
        return parse_cluster_shards(reply, tls=tls)
    except redis.ResponseError:
        pass  # Redis 6.2 has no CLUSTER SHARDS; an admin user may be allowed CLUSTER NODES only
    # Read the raw text: redis-py's CLUSTER NODES parser drops fields.
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("CLUSTER", "NODES")
        reply = conn.read_response()
    finally:
        client.connection_pool.release(conn)
    if isinstance(reply, bytes):
        reply = reply.decode()
    return parse_cluster_nodes(str(reply), myself=address)


# -- discovery ----------------------------------------------------------------------------------


class Session:
    """Connections and probes of one discovery run; every connection made is either handed
    to the caller or closed."""

    def __init__(self, instance: Instance, connect: Connect, workers: int):
        self.instance = instance
        self.connect = connect
        self.workers = workers
        self.timeout = float(instance.timeout_seconds or 5.0)
        self.clients: dict[str, redis.Redis] = {}
        self.probes: dict[str, Probe] = {}
        self.errors: dict[str, str] = {}  # address -> why it could not be read

    def _one(self, address: str) -> tuple[str, redis.Redis | None, Probe | None, str]:
        try:
            client = self.connect(self.instance, address, timeout=self.timeout)
        except LiveError as exc:
            text = str(exc)
            prefix = f"{self.instance.name} {address}: "
            return address, None, None, text[len(prefix):] if text.startswith(prefix) else text
        try:
            with deadline(client, self.timeout, address, "discovery"):
                return address, client, probe(client, address), ""
        except (redis.RedisError, OSError, LiveError) as exc:
            client.close()
            text = str(exc)
            return address, None, None, text[len(address) + 2:] if text.startswith(f"{address}: ") else text

    def probe_all(self, addresses: Iterable[str]) -> list[str]:
        """Connect to and probe every address not seen yet, in parallel; returns the new ones."""
        todo = [a for a in dict.fromkeys(addresses) if a not in self.probes and a not in self.errors]
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(todo)))) as pool:
            results = list(pool.map(self._one, todo))
        for address, client, p, error in results:
            if p is None or client is None:
                self.errors[address] = error
            else:
                self.clients[address] = client
                self.probes[address] = p
        return todo

    def close(self, keep: Iterable[str] = ()) -> None:
        kept = set(keep)
        for address, client in self.clients.items():
            if address not in kept:
                client.close()


def unreachable(instance: Instance, seeds: list[str], errors: dict[str, str], reported: dict[str, str]) -> LiveError:
    """One error naming every node that could not be read."""
    listed = [a for a in errors if a in seeds]
    found = [a for a in errors if a not in seeds]
    if len(errors) == 1 and listed:
        a = listed[0]
        return LiveError(f"{instance.name} {a}: {errors[a]}")
    parts = [f"{a}: {errors[a]}" for a in listed]
    parts += [f"{a} ({reported.get(a, 'discovered')}): {errors[a]}" for a in found]
    message = f"{instance.name}: cannot reach {len(errors)} node{'s' if len(errors) != 1 else ''}: " + "; ".join(parts)
    if found:
        message += f"; {NAT_HINT}"
    return LiveError(message)


def discover(
    instance: Instance,
    *,
    connect: Connect,
    workers: int = MAX_WORKERS,
) -> tuple[Topology, dict[str, redis.Redis]]:
    """Every node of `instance` (listed, replicated or cluster; `topology: sentinel` is
    sentinel.discover), and an open admin connection to each (the caller closes them).

    Raises LiveError naming every node that could not be reached or read.
    """
    seeds = list(dict.fromkeys(instance.nodes))
    session = Session(instance, connect, workers)
    try:
        session.probe_all(seeds)
        if session.errors:
            raise unreachable(instance, seeds, session.errors, {})
        if not instance.discover:
            topo = _listed(instance, seeds, session)
        elif any(session.probes[s].cluster for s in seeds):
            topo = _cluster(instance, seeds, session)
        else:
            topo = _replication(instance, seeds, session)
        _check_declared(instance, topo, session)
    except BaseException:
        session.close()
        raise
    session.close(keep=topo.nodes)
    return topo, {a: session.clients[a] for a in topo.nodes}


def _dedupe(addresses: list[str], session: Session) -> list[str]:
    """One address per server process (run_id), preferring the first spelling (seeds come first)."""
    seen: dict[str, str] = {}
    out = []
    for a in addresses:
        run_id = session.probes[a].run_id or a
        if run_id not in seen:
            seen[run_id] = a
            out.append(a)
    return out


def canonical_address(session: Session, address: str) -> str:
    """The address under which this server is kept (the seed spelling when it is a seed)."""
    p = session.probes.get(address)
    if p is None:
        return address
    for a, other in session.probes.items():
        if other.run_id and other.run_id == p.run_id:
            return a  # dict order: seeds were probed first
    return address


def _kind(probes: list[Probe]) -> str:
    if any(p.cluster for p in probes):
        return "cluster"
    if any(p.role == "replica" or p.replicas for p in probes):
        return "replicated"
    return "standalone"


def _listed(instance: Instance, seeds: list[str], session: Session) -> Topology:
    nodes = _dedupe(seeds, session)
    probes = [session.probes[a] for a in nodes]
    members = tuple(Member(p.address, p.role, p.primary) for p in probes)
    return Topology(kind=_kind(probes), members=members)


def _replication(instance: Instance, seeds: list[str], session: Session) -> Topology:
    reported: dict[str, str] = {}
    frontier = list(seeds)
    while frontier:
        wanted: list[str] = []
        for a in frontier:
            p = session.probes.get(a)
            if p is None:
                continue
            if not p.replication_known:
                raise LiveError(
                    f"{instance.name} {a}: INFO replication refused, so replicas can't be discovered; "
                    "allow it for the admin user, or list every node and set `discover: false`"
                )
            if p.primary:
                wanted.append(p.primary)
                reported.setdefault(p.primary, f"primary of {a}")
            for r in p.replicas:
                wanted.append(r)
                reported.setdefault(r, f"replica of {a}")
        frontier = session.probe_all(wanted)
    if session.errors:
        raise unreachable(instance, seeds, session.errors, reported)
    nodes = _dedupe(list(session.probes), session)
    by_address = {a: session.probes[a] for a in nodes}
    if any(p.cluster for p in by_address.values()):
        odd = [a for a, p in by_address.items() if p.cluster]
        raise LiveError(f"{instance.name}: {', '.join(odd)} run in cluster mode but the seed nodes do not; list nodes of one deployment")
    # Order: each primary (seed order), then its replicas by address, chained ones after.
    primaries = [a for a in nodes if by_address[a].role == "primary"]
    replicas = [a for a in nodes if by_address[a].role == "replica"]
    ordered: list[Member] = []
    placed: set[str] = set()

    def place_replicas_of(primary: str) -> None:
        kids = sorted(
            (r for r in replicas if r not in placed and (up := by_address[r].primary) and canonical_address(session, up) == primary),
            key=sort_key,
        )
        for r in kids:
            placed.add(r)
            ordered.append(Member(r, "replica", primary))
        for r in kids:
            place_replicas_of(r)

    for a in primaries:
        placed.add(a)
        ordered.append(Member(a, "primary"))
        place_replicas_of(a)
    for r in sorted((r for r in replicas if r not in placed), key=sort_key):
        ordered.append(Member(r, "replica", by_address[r].primary))  # its primary is not reachable from here
    return Topology(kind=_kind(list(by_address.values())), members=tuple(ordered))


def _cluster(instance: Instance, seeds: list[str], session: Session) -> Topology:
    not_cluster = [s for s in seeds if not session.probes[s].cluster]
    if not_cluster:
        raise LiveError(
            f"{instance.name}: {', '.join(not_cluster)} not in cluster mode, but other seed nodes are; "
            "list nodes of one deployment per instance"
        )
    seed = seeds[0]
    try:
        with deadline(session.clients[seed], session.timeout, f"{instance.name} {seed}", "cluster discovery"):
            members = cluster_members(session.clients[seed], seed, tls=instance.tls is not None)
    except redis.ResponseError as exc:
        raise LiveError(
            f"{instance.name} {seed}: cannot list cluster members ({exc}); allow CLUSTER SHARDS / CLUSTER NODES "
            "for the admin user, or list every node and set `discover: false`"
        ) from None
    except (redis.RedisError, OSError) as exc:
        raise LiveError(f"{instance.name} {seed}: cannot list cluster members: {exc}") from None
    reported: dict[str, str] = {}
    no_address: list[str] = []
    for m in members:
        if m.address is None:
            no_address.append(m.id[:12])
            continue
        what = "cluster primary" if m.role == "primary" else "cluster replica"
        reported[m.address] = f"{what} reported by {seed}" + (", marked failed" if m.failed else "")
    session.probe_all(m.address for m in members if m.address)
    if session.errors or no_address:
        errors = dict(session.errors)
        for node_id in no_address:
            errors[f"node {node_id}"] = "the cluster reports no address for it"
        raise unreachable(instance, seeds, errors, reported)
    # A seed may be a member under another spelling (hostname vs IP): match by run_id.
    canonical = {m.address: canonical_address(session, m.address) for m in members if m.address}
    by_id = {m.id: m for m in members}
    primaries = sorted((m for m in members if m.role == "primary"), key=lambda m: (m.first_slot, sort_key(m.address or "")))
    ordered: list[Member] = []
    placed: set[str] = set()
    for p in primaries:
        pa = canonical[p.address]  # type: ignore[index]  # members without an address were refused above
        if pa not in placed:
            placed.add(pa)
            ordered.append(Member(pa, "primary"))
        for r in sorted((m for m in members if m.role == "replica" and m.primary_id == p.id), key=lambda m: sort_key(m.address or "")):
            ra = canonical[r.address]  # type: ignore[index]  # members without an address were refused above
            if ra not in placed:
                placed.add(ra)
                ordered.append(Member(ra, "replica", pa))
    for m in members:  # replicas whose primary the seed does not know
        a = canonical[m.address]  # type: ignore[index]  # members without an address were refused above
        if a not in placed:
            placed.add(a)
            primary = by_id.get(m.primary_id or "")
            ordered.append(Member(a, m.role, canonical.get(primary.address) if primary and primary.address else None))
    for s in seeds:  # a seed the member list does not contain (it left the cluster?) is still managed
        a = canonical_address(session, s)
        if a not in placed:
            placed.add(a)
            ordered.append(Member(a, session.probes[s].role, session.probes[s].primary))
    missing = [m.address for m in ordered if not session.probes[m.address].cluster]
    if missing:
        raise LiveError(f"{instance.name}: {', '.join(missing)} reported as cluster members but not in cluster mode")
    return Topology(kind="cluster", members=tuple(ordered))


def _check_declared(instance: Instance, topo: Topology, session: Session) -> None:
    declared = instance.topology
    if declared in (None, "", "auto") or declared == topo.kind:
        return
    roles = ", ".join(f"{m.address} {m.role}" for m in topo.members[:6])
    more = f", ... ({len(topo.members)} nodes)" if len(topo.members) > 6 else ""
    raise LiveError(
        f"{instance.name}: topology: {declared} in the file, but the servers are {topo.kind} ({roles}{more}); "
        "fix `topology:` or the node list"
    )
