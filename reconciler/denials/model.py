"""What the servers refused, as plain data: the ACL LOG read off each node (provider side) and
the report merged from it (reconciler.denials.merge, pure).

ACL LOG facts this model follows (measured on Redis 6.2, 7.0, 8.0, 8.6 and Valkey 8.1, 9.1):
one entry groups identical denials (same reason, context, object and user name, each within
60 s of the entry's last update) and keeps only the LAST client's info; every entry has
`count`, `reason`, `context`, `object`, `username`, `age-seconds` (since its last update) and
`client-info`; Redis 7.2+ and Valkey add `entry-id`, `timestamp-created` and
`timestamp-last-updated` (ms). Failed AUTH is reason `auth` with object `AUTH` (or `HELLO`) and
the name that was tried; the password is never in the entry. Every replica, cluster member and
sentinel keeps its own log, a ring buffer of `acllog-max-len` entries (128 by default): the
least recently updated entry is dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Reasons in the order the report lists them; servers may add others (Valkey 9: database).
REASONS = ("command", "key", "channel", "auth")


@dataclass(frozen=True)
class LogEntry:
    """One ACL LOG entry, ages relative to the moment the node answered."""

    reason: str  # command | key | channel | auth | whatever else the server logs
    context: str  # toplevel | multi | lua | module
    object: str  # command ("keys", "client|kill"; 6.2: "client"), key, channel, or AUTH/HELLO
    username: str  # the user who was refused, or the name a failed AUTH tried
    count: int
    last_age: float  # seconds between the entry's last update and the read
    first_age: float | None = None  # seconds since the entry was created (7.2+); None before
    entry_id: int | None = None  # 7.2+
    created_ms: int | None = None  # 7.2+, the server's clock
    client: str = ""  # host of the last client's address (its port dropped: it changes per connection)
    client_name: str = ""  # CLIENT SETNAME of that client, if any


@dataclass(frozen=True)
class NodeLog:
    """One node's ACL LOG and what tells how much of it survived."""

    address: str
    role: str  # primary | replica | sentinel
    server: str = ""  # redis | valkey
    version: str = ""
    run_id: str = ""  # the server process: one log per process, whatever address reached it
    entries: tuple[LogEntry, ...] = ()
    max_len: int | None = None  # acllog-max-len; None when CONFIG GET is not allowed (sentinels)
    uptime: float | None = None  # seconds since the process started (the log starts empty then)
    # INFO stats acl_access_denied_* (Redis 7.2+, Valkey): reason -> denials since start or CONFIG RESETSTAT
    denied_total: dict[str, int] | None = None
    read_at: float = 0.0  # epoch seconds (our clock) when the node answered
    error: str = ""  # why this node's log could not be read ("" when it was)

    @property
    def label(self) -> str:
        return f"{'Valkey' if self.server == 'valkey' else 'Redis'} {self.version}" if self.version else ""

    @property
    def exact(self) -> bool:
        """Entries carry ids and creation times (Redis 7.2+, Valkey)."""
        return all(e.entry_id is not None for e in self.entries) if self.entries else _has_entry_ids(self.server, self.version)


def _has_entry_ids(server: str, version: str) -> bool:
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return server == "valkey" or (major, minor) >= (7, 2)


@dataclass(frozen=True)
class InstanceLog:
    """Every node's log of one instance, or why there is none."""

    name: str
    provider: str
    nodes: tuple[NodeLog, ...] = ()
    unavailable: str = ""  # the provider has no way to read ACL LOG: one line saying so
    error: str = ""  # the instance could not be discovered


def _plain(value: Any) -> Any:
    """JSON-ready data (dataclasses.asdict without its deep copies, which a 6,400-row report feels)."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """The change a denial follows, from the audit log."""

    words: str  # the plan's line "- revokes KEYS"; failed AUTH: "token 2026-08 (sha256:5e884898…) was removed"
    time: float  # epoch seconds of the apply that made it
    likely: str = ""  # failed AUTH: why the tie is likely, not certain ("" for a revoked permission)


@dataclass(frozen=True)
class Denial:
    """Denials of one user, reason and object on one instance, merged over its nodes. Failed
    AUTH is merged per name tried (object "")."""

    instance: str
    user: str
    reason: str
    object: str
    count: int
    last: float  # epoch seconds
    first: float | None  # None: some node gives no creation time (before 7.2); `last` minus nothing known
    nodes: tuple[tuple[str, int], ...]  # (address, count), file order of the nodes
    contexts: tuple[str, ...] = ()  # toplevel | multi | lua | module
    clients: tuple[str, ...] = ()  # hosts of the last client of each entry
    client_names: tuple[str, ...] = ()
    declared: bool = True  # the user (the name tried, for auth) is declared in the file for this node
    exact: bool = True  # every entry came with an id and creation time
    cause: Cause | None = None

    @property
    def probing(self) -> bool:
        """Failed AUTH for a name the file does not declare and no change of ours removed."""
        return self.reason == "auth" and not self.declared and self.cause is None

    @property
    def unintended(self) -> bool:
        """What the file did not mean to happen: failed AUTH for a declared user, or a denial a change caused."""
        return self.cause is not None or (self.reason == "auth" and self.declared)


@dataclass(frozen=True)
class NodeSummary:
    address: str
    role: str
    label: str
    entries: int  # entries read (before the --since window)
    error: str = ""
    lossy: str = ""  # why the log lost denials in the window ("" when it holds them all)
    coverage: str = ""  # what else limits the log (a restart inside the window, a reset)
    duplicate_of: str = ""  # the same server process read under another instance/address: counted there


@dataclass(frozen=True)
class InstanceDenials:
    name: str
    provider: str
    nodes: tuple[NodeSummary, ...] = ()
    denials: tuple[Denial, ...] = ()
    unavailable: str = ""
    error: str = ""
    approximate: str = ""  # why the figures are approximate ("" when every node gave entry ids)

    @property
    def count(self) -> int:
        return sum(d.count for d in self.denials)


@dataclass(frozen=True)
class DenialReport:
    source: str
    instances: tuple[InstanceDenials, ...]
    now: float  # epoch seconds the ages are counted back from
    since: float | None = None  # window in seconds (--since), None for the whole log
    audit: str = ""  # what the audit log said about ties: path read, or why there are none
    notes: tuple[str, ...] = field(default=())

    @property
    def denials(self) -> tuple[Denial, ...]:
        return tuple(d for i in self.instances for d in i.denials)

    @property
    def caused(self) -> tuple[Denial, ...]:
        return tuple(d for d in self.denials if d.cause is not None)

    @property
    def unintended(self) -> tuple[Denial, ...]:
        return tuple(d for d in self.denials if d.unintended)

    @property
    def errors(self) -> tuple[str, ...]:
        out = [f"{i.name}: {i.error}" for i in self.instances if i.error]
        out += [f"{i.name} {n.address}: {n.error}" for i in self.instances for n in i.nodes if n.error]
        return tuple(out)

    @property
    def lossy(self) -> tuple[tuple[str, NodeSummary], ...]:
        return tuple((i.name, n) for i in self.instances for n in i.nodes if n.lossy)

    @property
    def has_denials(self) -> bool:
        return bool(self.denials)

    def to_json(self) -> dict[str, Any]:
        d = _plain(self)
        d["format"] = "denials/1"
        d["summary"] = {
            "denials": sum(x.count for x in self.denials),
            "entries": len(self.denials),
            "caused_by_change": len(self.caused),
            "unintended": len(self.unintended),
            "failed_auth": sum(x.count for x in self.denials if x.reason == "auth"),
            "probing": sorted({x.user for x in self.denials if x.probing}),
            "lossy_nodes": len(self.lossy),
            "errors": list(self.errors),
        }
        for inst, src in zip(d["instances"], self.instances, strict=True):
            for den, obj in zip(inst["denials"], src.denials, strict=True):
                den["probing"] = obj.probing
                den["unintended"] = obj.unintended
        return d
