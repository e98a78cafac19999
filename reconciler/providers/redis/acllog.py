"""Reading ACL LOG off every node of an instance: primaries, replicas, cluster members and
sentinels (each keeps its own log). One round trip per node, under the instance's deadline.

The reply is read undecoded: a refused key or channel name is whatever bytes the client sent,
and one that is not UTF-8 must not fail the read (it is decoded with surrogateescape and shown
escaped by the report).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from ...denials.model import InstanceLog, LogEntry, NodeLog
from ...errors import LiveError, redact_name
from ...model import Instance
from . import read, sentinel, topology
from .deadline import deadline, timeout_of

# Bare ACL LOG answers only the 10 most recent entries; a count returns up to that many, so
# the largest count every version accepts (a long) returns the whole log.
ALL_ENTRIES = str(2**63 - 1)
# In this order, pipelined; only ACL LOG must be allowed (the rest tells how complete it is).
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("INFO", "server"),
    ("INFO", "stats"),
    ("CONFIG", "GET", "acllog-max-len"),
    ("ACL", "LOG", ALL_ENTRIES),
)
STATS_PREFIX = "acl_access_denied_"
# INFO stats key suffix -> ACL LOG reason
STAT_REASONS = {"auth": "auth", "cmd": "command", "key": "key", "channel": "channel", "db": "database", "tls_cert": "tls-cert"}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _pairs(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return {_text(k): v for k, v in entry.items()}
    items = list(entry)
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _client_fields(info: str) -> dict[str, str]:
    """`id=6 addr=10.0.3.4:51234 ... name=worker-1 ...` -> fields (values have no spaces)."""
    out: dict[str, str] = {}
    for part in info.split(" "):
        key, sep, value = part.partition("=")
        if sep:
            out.setdefault(key, value)
    return out


def _host(addr: str) -> str:
    host = addr.rpartition(":")[0] if ":" in addr else addr
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


# No log entry is older than this (about 300 years): an age beyond it (inf, 1e300) is a reply
# that is not an ACL log, and a time it would place before year 1 could not be printed.
MAX_AGE = 1e10


def _age(seconds: float) -> float:
    if not seconds <= MAX_AGE:  # also NaN
        raise ValueError(f"an entry's age of {seconds:g} s")
    return max(0.0, seconds)  # negative after the server's clock was set back: just now


def parse_entry(raw: Any) -> LogEntry:
    """One ACL LOG entry (RESP2 flat list or RESP3 map) as a LogEntry. The names in it are
    whatever a client sent (an application's token sent as the user name, or as a key): every
    secret the run holds is cut out of them here, before the report escapes them for display."""
    d = _pairs(raw)
    age = _age(float(_text(d.get("age-seconds")) or 0.0))
    entry_id = d.get("entry-id")
    created, updated = d.get("timestamp-created"), d.get("timestamp-last-updated")
    first_age = None
    if created is not None and updated is not None:
        # Both stamps come from the server's clock; their distance is exact, so the creation is
        # placed relative to the read without comparing clocks.
        first_age = _age(age + max(0, int(updated) - int(created)) / 1000.0)
    client = _client_fields(_text(d.get("client-info")))
    return LogEntry(
        reason=_text(d.get("reason")),
        context=_text(d.get("context")),
        object=redact_name(_text(d.get("object"))),
        username=redact_name(_text(d.get("username"))),
        count=int(d.get("count") or 0),
        last_age=age,
        first_age=first_age,
        entry_id=int(entry_id) if entry_id is not None else None,
        created_ms=int(created) if created is not None else None,
        client=_host(client.get("addr", "")),
        client_name=redact_name(client.get("name", "")),
    )


def _max_len(reply: Any) -> int | None:
    if isinstance(reply, Exception) or not reply:
        return None
    if isinstance(reply, dict):
        values = list(reply.values())
    else:
        values = list(reply)[1::2]
    try:
        return int(_text(values[0])) if values else None
    except ValueError:
        return None


def parse_node(address: str, role: str, replies: list[Any], read_at: float) -> NodeLog:
    """A node's log from the replies to COMMANDS (errors in place of refused ones)."""
    info_server, info_stats, max_len, log = replies
    if isinstance(log, Exception):
        hint = "; allow `acl|log` for the admin user" if "NOPERM" in str(log) or "permission" in str(log).lower() else ""
        raise LiveError(f"ACL LOG refused: {log}{hint}")
    info = {} if isinstance(info_server, Exception) else topology.parse_info(_text(info_server))
    stats = {} if isinstance(info_stats, Exception) else topology.parse_info(_text(info_stats))
    totals = {
        STAT_REASONS.get(k[len(STATS_PREFIX):], k[len(STATS_PREFIX):]): int(v)
        for k, v in stats.items()
        if k.startswith(STATS_PREFIX) and str(v).isdigit()
    }
    uptime = info.get("uptime_in_seconds")
    return NodeLog(
        address=address,
        role=role,
        server="valkey" if "valkey_version" in info else "redis",
        version=str(info.get("valkey_version") or info.get("redis_version") or ""),
        run_id=str(info.get("run_id") or ""),
        entries=tuple(parse_entry(e) for e in log or ()),
        max_len=_max_len(max_len),
        uptime=float(uptime) if uptime is not None and str(uptime).isdigit() else None,
        denied_total=totals or None,
        read_at=read_at,
    )


def read_node(instance: Instance, address: str, client: redis.Redis, role: str) -> NodeLog:
    """One pipelined round trip, raw replies, under the instance's deadline."""
    where = f"{instance.name} {address}"
    conn = client.connection_pool.get_connection()
    try:
        with deadline(client, timeout_of(instance), where, "ACL LOG"):
            conn.send_packed_command(conn.pack_commands(COMMANDS))
            replies: list[Any] = []
            for _ in COMMANDS:
                try:
                    replies.append(conn.read_response(disable_decoding=True))
                except redis.ResponseError as exc:  # that command refused; the next replies still follow
                    replies.append(exc)
        read_at = time.time()
    except (redis.RedisError, OSError) as exc:
        conn.disconnect()
        raise LiveError(f"{where}: {read.describe_error(exc, instance, address)}") from None
    finally:
        client.connection_pool.release(conn)
    try:
        return parse_node(address, role, replies, read_at)
    except LiveError as exc:
        raise LiveError(f"{where}: {exc}") from None
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        # A proxy or a server that only looks like Redis: that node is not read, the others are.
        raise LiveError(f"{where}: ACL LOG reply not understood ({type(exc).__name__}: {exc})") from None


def _node_error(address: str, role: str, exc: LiveError, instance: Instance) -> NodeLog:
    text = str(exc)
    prefix = f"{instance.name} {address}: "
    return NodeLog(address=address, role=role, error=text[len(prefix):] if text.startswith(prefix) else text)


def read_instance(instance: Instance) -> InstanceLog:
    """Discover the nodes as a plan does, then read every node's log in parallel. The listed
    sentinels are read too when their users are not managed (discovery then does not keep
    them): they log the failed AUTH and refused commands of whoever talks to them."""
    find = sentinel.discover if instance.topology == "sentinel" else topology.discover
    try:
        topo, clients = find(instance, connect=read.connect, workers=read.MAX_PARALLEL_NODES)
    except LiveError as exc:
        text = str(exc)
        prefix = f"{instance.name}: "
        return InstanceLog(instance.name, "redis", error=text[len(prefix):] if text.startswith(prefix) else text)
    members = [(m.address, m.role) for m in topo.members]
    known = {a for a, _ in members}
    members += [(a, "sentinel") for a in instance.sentinels if a not in known]

    def one(item: tuple[str, str]) -> NodeLog:
        address, role = item
        as_role = instance.for_role(role)
        try:
            client = clients.get(address) or read.connect(as_role, address)
        except LiveError as exc:
            return _node_error(address, role, exc, instance)
        try:
            return read_node(as_role, address, client, role)
        except LiveError as exc:
            return _node_error(address, role, exc, instance)
        finally:
            if address not in clients:
                client.close()

    try:
        with ThreadPoolExecutor(max_workers=min(read.MAX_PARALLEL_NODES, max(1, len(members)))) as pool:
            nodes = tuple(pool.map(one, members))
    finally:
        for client in clients.values():
            client.close()
    return InstanceLog(instance.name, "redis", nodes=nodes)
