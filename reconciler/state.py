"""Live state: what `live.read` found on each node, as plain data.

The same structure is written to plan-fixtures/*/live.json, so the pure planner can be
tested without servers. Command tables are referenced by name (`redis-7.0.15`); a table
read off the node (no bundled table has its name) travels in the NodeState itself, and
NodeState.acl_table() is the one place that resolves a node's table for the planner, the
safety rails and verification alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .acl.table import CommandTable


@dataclass(frozen=True)
class LiveUser:
    name: str
    enabled: bool
    nopass: bool
    hashes: tuple[str, ...]  # sha256 hex of every password, as ACL LIST shows them (#<hex>)
    rules: str  # permission part of the ACL LIST line (commands, keys, channels, selectors)
    connections: int = 0  # open client connections authenticated as this user

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hashes"] = list(self.hashes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LiveUser":
        return cls(
            name=d["name"],
            enabled=bool(d["enabled"]),
            nopass=bool(d.get("nopass", False)),
            hashes=tuple(d.get("hashes", ())),
            rules=d.get("rules", ""),
            connections=int(d.get("connections", 0)),
        )


@dataclass(frozen=True)
class NodeCapabilities:
    selectors: bool = False  # Redis >= 7.0 / Valkey
    key_permissions: bool = False  # %R~ %W~ (Redis >= 7.0)
    databases: bool = False  # Valkey >= 9.0 per-database rules
    tls: bool = False  # this connection / build speaks TLS
    cert_user_mapping: bool = False  # tls-auth-clients-user (Valkey >= 9.0, Redis >= 8.6)

    @classmethod
    def for_version(cls, server: str, version: str, tls: bool = False) -> "NodeCapabilities":
        major, minor = (int(x) for x in version.split(".")[:2])
        redis7 = server == "valkey" or major >= 7
        return cls(
            selectors=redis7,
            key_permissions=redis7,
            databases=server == "valkey" and major >= 9,
            tls=tls,
            cert_user_mapping=(server == "valkey" and major >= 9)
            or (server == "redis" and (major, minor) >= (8, 6)),
        )


@dataclass(frozen=True)
class NodeState:
    address: str  # "host:port" as used to connect
    server: str  # "redis" | "valkey"
    version: str  # "7.0.15"
    role: str = "primary"  # "primary" | "replica" | "sentinel" (topology: sentinel with sentinel_users)
    users: dict[str, LiveUser] = field(default_factory=dict)
    command_table: str = ""  # name of the CommandTable this node uses ("redis-7.0.15")
    aclfile: str | None = None  # CONFIG GET aclfile, None when unset
    aclfile_known: bool = True  # False: CONFIG GET was refused, so an aclfile may be in use unseen
    config_file: bool = False  # the server was started with a config file (CONFIG REWRITE works)
    tls_auth_clients: str | None = None  # CONFIG GET tls-auth-clients when TLS is on
    tls_auth_clients_user: str | None = None  # CONFIG GET tls-auth-clients-user (Valkey 9+)
    admin_user: str = "default"  # ACL WHOAMI of our own connection
    admin_hash: str | None = None  # sha256 of the token we authenticated with
    tls: bool = False
    # Connections named like the apply lock by a user other than the admin (no lock: any user may
    # name its connection): "user app from 10.0.0.9:51234 (reconciler-apply-1-cafe)".
    lock_impostors: tuple[str, ...] = ()
    resolved: str = ""  # "ip:port" the connection reached (the socket's peer); "" when not known
    run_id: str = ""  # INFO server run_id: one server process, whatever the spelling of its address
    # The table read off the node when no bundled table is named command_table (not in live.json).
    table: CommandTable | None = field(default=None, compare=False, repr=False)

    def acl_table(self) -> CommandTable:
        """The command table this node's rules are judged with: the one read off the node, else
        the bundled table named command_table. KeyError when neither exists."""
        return self.table if self.table is not None else CommandTable.bundled(self.command_table)

    @property
    def capabilities(self) -> NodeCapabilities:
        return NodeCapabilities.for_version(self.server, self.version, self.tls)

    @property
    def label(self) -> str:
        name = "Valkey" if self.server == "valkey" else "Redis"
        return f"{name} {self.version}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(replace(self, table=None))
        del d["table"]
        if not d["lock_impostors"]:
            del d["lock_impostors"]  # only when something impersonates the apply lock
        d["users"] = [u.to_json() for u in sorted(self.users.values(), key=lambda u: u.name)]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "NodeState":
        users = {u["name"]: LiveUser.from_json(u) for u in d.get("users", [])}
        return cls(
            address=d["address"],
            server=d.get("server", "redis"),
            version=d["version"],
            role=d.get("role", "primary"),
            users=users,
            command_table=d.get("command_table", ""),
            aclfile=d.get("aclfile"),
            aclfile_known=bool(d.get("aclfile_known", True)),
            config_file=bool(d.get("config_file", False)),
            tls_auth_clients=d.get("tls_auth_clients"),
            tls_auth_clients_user=d.get("tls_auth_clients_user"),
            admin_user=d.get("admin_user", "default"),
            admin_hash=d.get("admin_hash"),
            tls=bool(d.get("tls", False)),
            lock_impostors=tuple(str(x) for x in d.get("lock_impostors", ())),
            resolved=str(d.get("resolved", "")),
            run_id=str(d.get("run_id", "")),
        )


@dataclass(frozen=True)
class InstanceState:
    name: str
    nodes: tuple[NodeState, ...]
    topology: str = "standalone"  # standalone | replicated | cluster | sentinel

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "topology": self.topology, "nodes": [n.to_json() for n in self.nodes]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "InstanceState":
        return cls(
            name=d["name"],
            topology=d.get("topology", "standalone"),
            nodes=tuple(NodeState.from_json(n) for n in d["nodes"]),
        )


@dataclass(frozen=True)
class LiveState:
    instances: dict[str, InstanceState]

    def to_json(self) -> dict[str, Any]:
        return {"instances": [i.to_json() for i in self.instances.values()]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LiveState":
        insts = [InstanceState.from_json(i) for i in d["instances"]]
        return cls(instances={i.name: i for i in insts})
