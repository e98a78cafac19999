"""Discovery through Sentinel (`topology: sentinel`): the data nodes are the ones the sentinels
report for `master_name` right now, not a list in the file, so a failover never leaves a node
out.

Every listed sentinel is asked (SENTINEL GET-MASTER-ADDR-BY-NAME, SENTINEL REPLICAS, SENTINEL
SENTINELS). A majority of the listed sentinels must answer and all that answer must name the same
primary; the primary and the replicas must then say so themselves (INFO replication). Anything
else is a failover in progress or a split view, and is an error that says so: planning against
it would send ACLs to the wrong set of nodes.

When the instance manages the sentinels' own users (`sentinel_users:`), the sentinels are
members too (role "sentinel"): the listed ones plus any other sentinel they report for the same
master, every one of which must be reachable (one left out keeps old credentials).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from ...errors import LiveError
from ...model import Instance
from .deadline import deadline, resolve
from .topology import (
    Connect,
    Member,
    Session,
    Topology,
    canonical_address,
    join_address,
    pairs,
    parse_info,
    sort_key,
    unreachable,
)

RESET_HINT = "if a reported node is gone for good, SENTINEL RESET {name} on every sentinel forgets it"


@dataclass
class SentinelView:
    """What one sentinel says about the monitored master."""

    address: str
    run_id: str = ""  # SENTINEL MYID: what SENTINEL SENTINELS calls runid
    primary: str | None = None
    replicas: list[str] = field(default_factory=list)
    sentinels: list[str] = field(default_factory=list)  # other sentinels of this master (ip:port)
    sentinel_ids: list[str] = field(default_factory=list)  # their run ids, same order
    error: str = ""


def _entries(reply: Any) -> list[dict[str, Any]]:
    """SENTINEL REPLICAS / SENTINELS: a list of flat [k, v, ...] lists (RESP2) or of dicts."""
    return [pairs(e) for e in reply or ()]


def _address(entry: dict[str, Any]) -> str | None:
    ip, port = entry.get("ip"), entry.get("port")
    return join_address(str(ip), str(port)) if ip and port else None


def ask(client: redis.Redis, address: str, master_name: str) -> SentinelView:
    """One round trip to one sentinel."""
    view = SentinelView(address=address)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("INFO", "server")
    pipe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
    pipe.execute_command("SENTINEL", "REPLICAS", master_name)
    pipe.execute_command("SENTINEL", "SENTINELS", master_name)
    pipe.execute_command("SENTINEL", "MYID")  # the id other sentinels report it under (6.2+)
    info, primary, replicas, others, myid = pipe.execute(raise_on_error=False)
    for reply, what in ((info, "INFO"), (primary, "SENTINEL GET-MASTER-ADDR-BY-NAME"), (replicas, "SENTINEL REPLICAS"), (others, "SENTINEL SENTINELS")):
        if isinstance(reply, Exception):
            text = str(reply)
            if "no such master" in text.lower():
                view.error = f"does not monitor a master named '{master_name}' (check master_name)"
            else:
                view.error = f"{what} refused: {text}"
            return view
    fields = parse_info(info)
    if str(fields.get("redis_mode") or fields.get("server_mode") or "sentinel") != "sentinel":
        view.error = "is not a sentinel: list the sentinels under sentinels: (the data nodes are found through them)"
        return view
    view.run_id = "" if isinstance(myid, Exception) else str(myid)
    if not primary:
        view.error = f"does not monitor a master named '{master_name}' (check master_name)"
        return view
    view.primary = join_address(str(primary[0]), str(primary[1]))
    view.replicas = [a for a in (_address(e) for e in _entries(replicas)) if a]
    for e in _entries(others):
        a = _address(e)
        if a:
            view.sentinels.append(a)
            view.sentinel_ids.append(str(e.get("runid", "")))
    return view


def _ask_all(instance: Instance, connect: Connect, addresses: list[str], timeout: float, workers: int) -> tuple[dict[str, SentinelView], dict[str, redis.Redis]]:
    as_sentinel = instance.for_role("sentinel")
    assert instance.master_name is not None

    def one(address: str) -> tuple[SentinelView, redis.Redis | None]:
        try:
            client = connect(as_sentinel, address, timeout=timeout)
        except LiveError as exc:
            text, prefix = str(exc), f"{instance.name} {address}: "
            return SentinelView(address=address, error=text.removeprefix(prefix)), None
        try:
            # A sentinel that answers one byte a second must not hold discovery: past the
            # deadline it counts as one that did not answer (the others may be a majority).
            with deadline(client, timeout, f"{instance.name} {address}", "sentinel discovery"):
                view = ask(client, address, instance.master_name)  # type: ignore[arg-type]
        except LiveError as exc:
            text, prefix = str(exc), f"{instance.name} {address}: "
            view = SentinelView(address=address, error=text.removeprefix(prefix))
        except (redis.RedisError, OSError) as exc:
            view = SentinelView(address=address, error=str(exc) or type(exc).__name__)
        if view.error:
            client.close()
            return view, None
        return view, client

    views: dict[str, SentinelView] = {}
    clients: dict[str, redis.Redis] = {}
    if not addresses:
        return views, clients
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(addresses)))) as pool:
        for view, client in pool.map(one, addresses):
            views[view.address] = view
            if client is not None:
                clients[view.address] = client
    return views, clients


def _close(clients: dict[str, redis.Redis]) -> None:
    for c in clients.values():
        c.close()


def _same_sentinel_keys(view: SentinelView, timeout: float, where: str) -> set[str]:
    """What identifies the sentinel behind one listed address: its SENTINEL MYID when it answered,
    and the IP addresses its name resolves to."""
    keys = {f"id:{view.run_id}"} if view.run_id else set()
    host, _, port = view.address.rpartition(":")
    host = host.strip("[]")
    if "name resolution" in view.error or "cannot resolve" in view.error:
        return keys | {f"name:{view.address}"}  # not looked up twice
    try:
        keys |= {f"ip:{ip}:{port}" for ip in resolve(host, int(port), timeout, where)}
    except (LiveError, ValueError):
        keys.add(f"name:{view.address}")
    return keys


def distinct(instance: Instance, views: dict[str, SentinelView], timeout: float) -> list[list[str]]:
    """The listed addresses grouped by sentinel (listed order): two spellings of one sentinel
    (`localhost` and `127.0.0.1`, or one MYID under two addresses) are one group, so they are
    one vote in the majority, never two."""
    groups: list[tuple[set[str], list[str]]] = []
    for address, view in views.items():
        keys = _same_sentinel_keys(view, timeout, f"{instance.name} {address}")
        joined = [g for g in groups if g[0] & keys]
        merged: tuple[set[str], list[str]] = (set(keys), [])
        for g in joined:
            merged[0].update(g[0])
            merged[1].extend(g[1])
            groups.remove(g)
        merged[1].append(address)
        groups.append(merged)
    order = list(views)
    return sorted((sorted(addrs, key=order.index) for _, addrs in groups), key=lambda g: order.index(g[0]))


def discover(instance: Instance, *, connect: Connect, workers: int) -> tuple[Topology, dict[str, redis.Redis]]:
    """The primary and replicas Sentinel reports (and the sentinels, when their users are managed),
    with an open admin connection to each; the caller closes them."""
    timeout = float(instance.timeout_seconds or 5.0)
    views, sentinel_clients = _ask_all(instance, connect, list(dict.fromkeys(instance.sentinels)), timeout, workers)
    # One address per sentinel: an answering spelling when there is one.
    listed = [next((a for a in g if not views[a].error), g[0]) for g in distinct(instance, views, timeout)]
    try:
        topo, data_clients = _data_nodes(instance, listed, views, connect, workers)
    except BaseException:
        _close(sentinel_clients)
        raise
    if instance.sentinel_users is None:
        _close(sentinel_clients)
        return topo, data_clients
    try:
        sentinels = _all_sentinels(instance, listed, views, sentinel_clients, connect, timeout, workers)
    except BaseException:
        _close(sentinel_clients)
        _close(data_clients)
        raise
    members = topo.members + tuple(Member(a, "sentinel") for a in sentinels)
    kept = {a: sentinel_clients[a] for a in sentinels}
    _close({a: c for a, c in sentinel_clients.items() if a not in kept})
    return Topology(kind="sentinel", members=members), {**data_clients, **kept}


def _data_nodes(
    instance: Instance, listed: list[str], views: dict[str, SentinelView], connect: Connect, workers: int
) -> tuple[Topology, dict[str, redis.Redis]]:
    name = instance.name
    answered = {a: views[a] for a in listed if not views[a].error}
    failed = {a: views[a].error for a in listed if views[a].error}
    need = len(listed) // 2 + 1
    if len(answered) < need:
        detail = "; ".join(f"{a}: {e}" for a, e in failed.items())
        twice = len(views) - len(listed)
        also = f" ({twice} more listed address{'es name' if twice != 1 else ' names'} a sentinel listed before)" if twice else ""
        raise LiveError(
            f"{name}: only {len(answered)} of {len(listed)} sentinels answered for master '{instance.master_name}'{also} "
            f"(a majority, {need}, must agree on the primary): {detail}"
        )
    said: dict[str, list[str]] = {}
    for a, v in answered.items():
        said.setdefault(v.primary or "", []).append(a)
    if len(said) > 1:
        opinions = "; ".join(f"{', '.join(who)} say {p}" for p, who in said.items())
        raise LiveError(
            f"{name}: the sentinels disagree on the primary of '{instance.master_name}' ({opinions}): "
            "a failover is in progress or the sentinels are split; try again once they agree"
        )
    primary = next(iter(said))
    reported: dict[str, str] = {primary: f"primary per sentinel {next(iter(answered))}"}
    replicas: list[str] = []
    for a, v in answered.items():
        for r in v.replicas:
            if r != primary and r not in replicas:
                replicas.append(r)
                reported[r] = f"replica per sentinel {a}"
    session = Session(instance, connect, workers)
    try:
        session.probe_all([primary, *replicas])
        if session.errors:
            error = unreachable(instance, [], session.errors, reported)
            raise LiveError(f"{error}; {RESET_HINT.format(name=instance.master_name)}")
        _check_roles(instance, primary, replicas, session)
        hidden = _hidden_replicas(instance, primary, replicas, session, reported)
    except BaseException:
        session.close()
        raise
    ordered = [Member(primary, "primary")] + [Member(r, "replica", primary) for r in sorted(replicas, key=sort_key)]
    ordered += [Member(r, "replica", up) for r, up in hidden]
    # One entry per server process: a replica the sentinels list under two spellings is one node.
    seen: set[str] = set()
    members: list[Member] = []
    for m in ordered:
        run_id = session.probes[m.address].run_id or m.address
        if run_id not in seen:
            seen.add(run_id)
            members.append(m)
    keep = [m.address for m in members]
    session.close(keep=keep)
    return Topology(kind="sentinel", members=tuple(members)), {a: session.clients[a] for a in keep}


def _hidden_replicas(
    instance: Instance, primary: str, replicas: list[str], session: Session, reported: dict[str, str]
) -> list[tuple[str, str]]:
    """Replicas the sentinels do not list (`replica-announced no`, or not seen yet) but the primary
    reports in INFO replication, and their own replicas: (address, the node it follows). They
    replicate and can be promoted, so they get the ACLs like any replica; one that can't be
    reached is an error, never skipped."""
    if not session.probes[primary].replication_known:
        raise LiveError(
            f"{instance.name} {primary}: INFO replication refused, so replicas the sentinels do not list "
            "(replica-announced no) can't be found; allow INFO for the admin user"
        )
    known = {canonical_address(session, a) for a in [primary, *replicas]}
    found: list[tuple[str, str]] = []
    frontier = [primary, *replicas]
    while frontier:
        wanted: list[tuple[str, str]] = []
        for up in frontier:
            for r in session.probes[up].replicas:
                if r not in known and r not in session.errors:
                    wanted.append((r, up))
                    reported.setdefault(r, f"replica of {up} per its INFO replication, not listed by the sentinels")
        fresh = session.probe_all(r for r, _ in wanted)
        if session.errors:
            error = unreachable(instance, [], session.errors, reported)
            raise LiveError(f"{error}; a replica with replica-announced no is still a replica: it needs the users too")
        frontier = []
        for r, up in wanted:
            c = canonical_address(session, r)
            if r in fresh and c not in known:
                if session.probes[r].role != "replica":
                    raise LiveError(
                        f"{instance.name}: {up} reports {r} as its replica, but it is a primary: "
                        "a failover is in progress; try again once it is complete"
                    )
                known.add(c)
                found.append((c, canonical_address(session, up)))
                frontier.append(r)
    return sorted(found, key=lambda m: sort_key(m[0]))


def _check_roles(instance: Instance, primary: str, replicas: list[str], session: Session) -> None:
    """The nodes must agree with the sentinels: a mismatch is a failover still being carried out."""
    name = instance.name
    p = session.probes[primary]
    if p.role != "primary":
        raise LiveError(
            f"{name}: the sentinels report {primary} as the primary of '{instance.master_name}', but it is a replica "
            f"(of {p.primary or 'an unknown primary'}): a failover is in progress; try again once it is complete"
        )
    for r in replicas:
        q = session.probes[r]
        if q.role != "replica":
            raise LiveError(
                f"{name}: the sentinels report {r} as a replica of {primary}, but it is a primary: "
                "a failover is in progress, or a node the sentinels still list was taken out; try again, or "
                + RESET_HINT.format(name=instance.master_name)
            )
        follows = canonical_address(session, q.primary) if q.primary else None
        if q.primary and follows != primary and session.probes.get(follows or "", None) is not p:
            raise LiveError(
                f"{name}: {r} replicates from {q.primary}, but the sentinels report {primary} as the primary: "
                "a failover is in progress; try again once it is complete"
            )


def _all_sentinels(
    instance: Instance,
    listed: list[str],
    views: dict[str, SentinelView],
    clients: dict[str, redis.Redis],
    connect: Connect,
    timeout: float,
    workers: int,
) -> list[str]:
    """Every sentinel of the master (listed first), each reachable; sentinels receive users."""
    name = instance.name
    failed = {a: views[a].error for a in listed if views[a].error}
    if failed:
        detail = "; ".join(f"{a}: {e}" for a, e in failed.items())
        raise LiveError(f"{name}: sentinel_users are managed, so every sentinel must be reachable: {detail}")
    known_ids = {v.run_id for v in views.values() if v.run_id}
    extra: list[str] = []
    for v in views.values():
        for a, run_id in zip(v.sentinels, v.sentinel_ids, strict=True):
            if a not in views and a not in extra and not (run_id and run_id in known_ids):
                extra.append(a)
    if extra:
        more, more_clients = _ask_all(instance, connect, extra, timeout, workers)
        clients.update(more_clients)
        views.update(more)
        bad = {a: v.error for a, v in more.items() if v.error}
        if bad:
            detail = "; ".join(f"{a} (reported by the listed sentinels): {e}" for a, e in bad.items())
            raise LiveError(
                f"{name}: sentinel_users are managed, so every sentinel must be reachable: {detail}; "
                "list it under sentinels:, or " + RESET_HINT.format(name=instance.master_name)
            )
    return listed + sorted(extra, key=sort_key)  # `listed`: one address per sentinel (distinct)
