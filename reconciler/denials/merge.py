"""Pure: the node logs of a run -> one report.

- One server process is counted once. When its log was read more than once in a run (a sentinel
  shared by two instances, one server under two addresses), the reads are merged: on Redis 7.2+
  and Valkey entry by entry (`entry-id` + `timestamp-created` name an entry whatever its count
  has grown to since), before 7.2 by keeping the later read whole (entries carry no identity).
- Entries are merged per instance, user, reason and object (failed AUTH per name tried) with
  counts, first and last time and the nodes they came from.
- `since`: entries last updated inside the window. Before 7.2 only the last update's age is
  logged: first times are unknown and an entry's count may include older denials, so the
  report calls those figures approximate.
- A log lost denials of the window when it is full (acllog-max-len entries) and its oldest entry
  was updated inside the window (the ring buffer drops the least recently updated entry).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from ..acl.table import CommandTable
from ..errors import REDACTED
from ..model import DesiredState
from . import tie
from .changes import History
from .model import REASONS, Denial, DenialReport, InstanceDenials, InstanceLog, LogEntry, NodeLog, NodeSummary

DEFAULT_MAX_LEN = 128  # acllog-max-len when the node does not say (sentinels refuse CONFIG)

TableFor = Callable[[str, str], CommandTable]


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class _Read:
    instance: str
    node: NodeLog


def _entry_key(e: LogEntry) -> tuple[int | None, int | None]:
    return (e.entry_id, e.created_ms)


def _merged_reads(reads: list[_Read]) -> NodeLog:
    """The reads of one process as one log: the later version of each entry (7.2+), else the later read."""
    reads = sorted(reads, key=lambda r: r.node.read_at)
    last = reads[-1].node
    if len(reads) == 1 or not all(r.node.exact for r in reads):
        return last
    # Entries as of the last read; an entry only an earlier read saw keeps its age from then.
    by_key: dict[tuple[int | None, int | None], LogEntry] = {}
    shift: dict[tuple[int | None, int | None], float] = {}
    for r in reads:
        for e in r.node.entries:
            k = _entry_key(e)
            if k not in by_key or e.count >= by_key[k].count:
                by_key[k] = e
                shift[k] = last.read_at - r.node.read_at
    entries = tuple(
        replace(e, last_age=e.last_age + shift[k], first_age=None if e.first_age is None else e.first_age + shift[k])
        for k, e in by_key.items()
    )
    return replace(last, entries=entries)


@dataclass(frozen=True)
class _Tokens:
    """The tokens a name could be, by hash: the file's (most are declared by sha256 alone, so the
    run holds no plaintext to redact by value) and, by their 8-digit prefix, those the audit log
    recorded (a token rotation removed is the one a lagging client still sends)."""

    digests: frozenset[str]
    prefixes: frozenset[str]

    def hide(self, name: str) -> str:
        if not name or name == REDACTED:
            return name
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
        return REDACTED if digest in self.digests or digest[:8] in self.prefixes else name

    def entry(self, e: LogEntry, declared: set[str]) -> LogEntry:
        # A declared user's name is no token (an 8-digit prefix could collide with one by chance,
        # and its failed AUTH must stay the declared user's).
        user = e.username if e.username in declared else self.hide(e.username)
        hidden = replace(e, username=user, object=self.hide(e.object), client_name=self.hide(e.client_name))
        return e if hidden == e else hidden


def _tokens(desired: DesiredState, history: History | None) -> _Tokens:
    users = list(desired.users.values())
    for spec in desired.instances.values():
        users += list(spec.sentinel_users or ())
    digests = frozenset(t.sha256 for u in users for t in u.tokens)
    prefixes: set[str] = set()
    if history is not None:
        prefixes.update(prefix for (_, _, prefix) in history.token_ids)
        prefixes.update(prefix for c in history.changes for _, prefix in c.removed)
    return _Tokens(digests, frozenset(p for p in prefixes if len(p) == 8))


def _declared(desired: DesiredState, instance: str) -> tuple[set[str], set[str]]:
    """(names a data node knows from the file, names a sentinel knows from the file)."""
    spec = desired.instances.get(instance)
    data = {u.name for u in desired.users_for(instance)}
    if spec is None:
        return data, set()
    data.add(spec.admin.username)
    sentinels = {u.name for u in spec.sentinel_users or ()} | {spec.sentinel_admin.username}
    return data, sentinels


def _node_summary(node: NodeLog, window_start: float | None, duplicate_of: str = "") -> NodeSummary:
    base = NodeSummary(node.address, node.role, node.label, len(node.entries), error=node.error, duplicate_of=duplicate_of)
    if node.error or duplicate_of:
        return base
    lossy, coverage = "", []
    limit = node.max_len if node.max_len is not None else DEFAULT_MAX_LEN
    limit_text = f"acllog-max-len {node.max_len}" if node.max_len is not None else f"acllog-max-len unknown, {DEFAULT_MAX_LEN} by default"
    oldest = min((node.read_at - e.last_age for e in node.entries), default=None)
    if node.max_len == 0:
        lossy = "ACL LOG is off (acllog-max-len 0): no denial is kept"
    elif oldest is not None and len(node.entries) >= limit and (window_start is None or oldest >= window_start):
        lossy = f"log full ({len(node.entries)} entries, {limit_text}): denials last seen before {when(oldest)} were dropped"
    if node.denied_total is not None:
        lost = sum(node.denied_total.values()) - sum(e.count for e in node.entries)
        if lost > 0:
            what = f"the server counted {lost:,} more denials since it started than its log holds"
            if lossy:
                lossy += f"; {what}"
            else:
                coverage.append(f"{what} (rotated out earlier, or ACL LOG RESET)")
    if window_start is not None and node.uptime is not None and node.read_at - node.uptime > window_start:
        coverage.append(f"restarted at {when(node.read_at - node.uptime)}: the log begins then")
    return replace(base, lossy=lossy, coverage="; ".join(coverage))


def _group(instance: str, entries: list[tuple[NodeLog, LogEntry, bool]], order: dict[str, int]) -> list[Denial]:
    groups: dict[tuple[str, str, str, bool], list[tuple[NodeLog, LogEntry]]] = {}
    for node, e, declared in entries:
        obj = "" if e.reason == "auth" else e.object
        groups.setdefault((e.username, e.reason, obj, declared), []).append((node, e))
    out = []
    for (user, reason, obj, declared), items in groups.items():
        per_node: dict[str, int] = {}
        for node, e in items:
            per_node[node.address] = per_node.get(node.address, 0) + e.count
        firsts = [node.read_at - e.first_age for node, e in items if e.first_age is not None]
        exact = all(e.entry_id is not None for _, e in items)
        out.append(
            Denial(
                instance=instance,
                user=user,
                reason=reason,
                object=obj,
                count=sum(e.count for _, e in items),
                last=max(node.read_at - e.last_age for node, e in items),
                first=min(firsts) if exact and firsts else None,
                nodes=tuple(sorted(per_node.items(), key=lambda kv: order.get(kv[0], 0))),
                contexts=tuple(sorted({e.context for _, e in items if e.context})),
                clients=tuple(dict.fromkeys(e.client for _, e in items if e.client)),
                client_names=tuple(dict.fromkeys(e.client_name for _, e in items if e.client_name)),
                declared=declared,
                exact=exact,
            )
        )
    rank = {r: i for i, r in enumerate(REASONS)}
    return sorted(out, key=lambda d: (d.user, rank.get(d.reason, len(rank)), d.reason, -d.count, d.object))


def _approximate(nodes: Sequence[NodeLog]) -> str:
    labels = sorted({n.label for n in nodes if not n.error and not n.exact and n.label})
    if not labels:
        return ""
    return (
        f"figures approximate on {', '.join(labels)}: no entry ids before Redis 7.2, so times come from "
        "age-seconds, first times are unknown and a count may include denials from before --since"
    )


def _table(log: InstanceLog, table_for: TableFor) -> CommandTable | None:
    for node in log.nodes:
        if node.role != "sentinel" and node.version and not node.error:
            try:
                return table_for(node.server, node.version)
            except KeyError:
                return None
    return None


def build(
    desired: DesiredState,
    logs: Sequence[InstanceLog],
    history: History | None,
    *,
    now: float,
    since: float | None = None,
    audit: str = "",
    table_for: TableFor = CommandTable.nearest,
) -> DenialReport:
    window_start = now - since if since is not None else None
    # One process, one log: every read of it, in the order instances were read.
    reads: dict[str, list[_Read]] = {}
    for log in logs:
        for node in log.nodes:
            if not node.error:
                reads.setdefault(node.run_id or f"{log.name} {node.address}", []).append(_Read(log.name, node))
    owner = {key: (rs[0].instance, rs[0].node.address) for key, rs in reads.items()}
    merged = {key: _merged_reads(rs) for key, rs in reads.items()}

    tokens = _tokens(desired, history)
    instances = []
    for log in logs:
        if log.unavailable or log.error:
            instances.append(InstanceDenials(log.name, log.provider, unavailable=log.unavailable, error=log.error))
            continue
        data_names, sentinel_names = _declared(desired, log.name)
        order = {n.address: i for i, n in enumerate(log.nodes)}
        summaries, entries = [], []
        for node in log.nodes:
            key = node.run_id or f"{log.name} {node.address}"
            if node.error:
                summaries.append(_node_summary(node, window_start))
                continue
            first_instance, first_address = owner[key]
            if (first_instance, first_address) != (log.name, node.address):
                where = first_address if first_instance == log.name else f"{first_instance} {first_address}"
                summaries.append(_node_summary(node, window_start, duplicate_of=where))
                continue
            node = merged[key]
            summaries.append(_node_summary(node, window_start))
            names = sentinel_names if node.role == "sentinel" else data_names
            for e in node.entries:
                if window_start is None or node.read_at - e.last_age >= window_start:
                    # A client that sends its token as the user name or a key: never shown.
                    e = tokens.entry(e, names)
                    entries.append((node, e, e.username in names))
        denials = _group(log.name, entries, order)
        if history is not None:
            table = _table(log, table_for)
            denials = [replace(d, cause=tie.cause(d, history, table)) for d in denials]
        instances.append(
            InstanceDenials(
                log.name,
                log.provider,
                nodes=tuple(summaries),
                denials=tuple(denials),
                approximate=_approximate(log.nodes),
            )
        )
    notes: tuple[str, ...] = ()
    if history is not None and history.skipped:
        notes = (f"audit log {history.source}: {history.skipped} line(s) are not change records it can read (cut short, hand-edited); skipped",)
    return DenialReport(
        source=desired.source, instances=tuple(instances), now=now, since=since, audit=audit, notes=notes
    )
