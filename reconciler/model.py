"""Desired state: frozen dataclasses produced by `config.load`, consumed by the planner.

Nothing here does I/O. Plaintext secrets live only inside `Secret`, whose str/repr
never show the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from .errors import remember_secret

SENSITIVE = "(sensitive value)"


class Secret:
    """A plaintext secret held in memory only. Never printed, never serialised."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        remember_secret(value)  # every printed or logged line is redacted of it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return SENSITIVE

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # refuse pickling/copy into files by accident
        raise TypeError("Secret values cannot be pickled")

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


@dataclass(frozen=True)
class Sink:
    """Where a token that a tool or a service makes is written: a file (mode 0600), or a new
    version of a KV path (check-and-set, the path's other fields kept)."""

    kind: Literal["file", "vault"]
    path: str  # file: the resolved path; vault: the path inside the mount
    field: str = ""  # vault: the field that holds the token
    mount: str = "secret"  # vault: the KV v2 mount

    def describe(self) -> str:
        return f"file:{self.path}" if self.kind == "file" else f"vault:{self.mount}/{self.path}#{self.field}"


@dataclass(frozen=True)
class Rotation:
    """`rotate:` on a token entry: how `reconciler rotate` makes its next value and where it goes."""

    every_days: int
    store: Sink  # where the new value is written: the entry's vault path (version 0), its file, or its sink
    since: date | None = None  # when the store's latest version was made (vault created_time, file mtime), if read
    usernames: tuple[str, ...] = ()  # redis-cloud: the pair of Cloud users new versions alternate through
    username_field: str | None = None  # redis-cloud: the store field holding the version's Cloud username

    def due_on(self) -> date | None:
        return self.since + timedelta(days=self.every_days) if self.since else None


@dataclass(frozen=True)
class Token:
    id: str
    sha256: str  # 64 lowercase hex; what servers store and what we send as `#<sha256>`
    created: date | None = None
    expires: date | None = None
    source: str = "sha256"  # "env:NAME" | "file:PATH" | "vault:..." | "exec:..." | "sha256" -- a reference, never the value
    plaintext: Secret | None = field(default=None, repr=False, compare=False)
    line: int = 0
    note: str | None = None  # free text from the file, shown next to the token in plans
    sink: Sink | None = None  # provider: memorystore: where the service-generated value goes
    username: str | None = None  # provider: redis-cloud: the Cloud ACL user holding this token (default: the user's name)
    rotate: Rotation | None = None  # `reconciler rotate` makes this entry's next value
    succeeds: str | None = None  # a rotation's new token: it takes over this token id once made (memorystore's record)

    @property
    def prefix(self) -> str:
        return self.sha256[:8]


@dataclass(frozen=True)
class AbsentToken:
    """A token entry whose store has no such version yet (vault `version: -1` on a path with one
    version): nothing goes to the servers, and plans say "<id>: none yet"."""

    id: str
    source: str  # the reference ("vault:secret/apps/orders#token@-1")
    reason: str  # "secret/apps/orders has one version: no version -1 yet"
    line: int = 0


@dataclass(frozen=True)
class CertInfo:
    """The inventory of one certificate file (its first certificate, the leaf)."""

    path: str
    subject: str  # RFC 4514, as cryptography prints it ("CN=app,OU=payments,O=Acme,C=US")
    issuer: str
    serial: str  # hex, lower case
    sha256: str  # fingerprint of the DER encoding, hex lower case
    not_before: datetime
    not_after: datetime
    client_auth: bool | None  # EKU clientAuth: True/False, None when the EKU extension is absent
    attributes: tuple[tuple[str, str], ...] = ()  # (SHORT NAME, value) of the subject

    def expires_on(self) -> date:
        return self.not_after.date()

    def to_json(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "sha256": self.sha256,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


@dataclass(frozen=True)
class Certificate:
    subject: str  # "CN=app,OU=payments,O=Acme,C=US"
    cert_file: str | None = None  # resolved path (relative paths already joined to the YAML's folder)
    line: int = 0
    info: CertInfo | None = field(default=None, compare=False)  # inventory of cert_file, read at load


@dataclass(frozen=True)
class User:
    name: str
    instances: tuple[str, ...]  # resolved: every instance when the file omits `instances`
    enabled: bool = True
    roles: tuple[str, ...] = ()
    acl: str = ""  # the user's own permission rules as written
    rules: str = ""  # resolved: rules of every role (in order, recursively) then `acl`
    tokens: tuple[Token, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    kill_sessions_on_revoke: bool | None = None  # None: inherit from the instance
    line: int = 0
    absent_tokens: tuple[AbsentToken, ...] = ()  # declared, but the store has no such version yet

    @property
    def certificate_only(self) -> bool:
        return bool(self.certificates) and not self.tokens


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class TLSClientAuth:
    required: Literal["true", "false", "optional"] = "false"  # normalised to strings
    user_field: Literal["CN", "none"] = "none"


@dataclass(frozen=True)
class Admin:
    username: str = "default"
    secret: Secret | None = field(default=None, repr=False, compare=False)
    source: str = ""  # "env:NAME" | "file:PATH"
    account_key: Secret | None = field(default=None, repr=False, compare=False)  # redis-cloud: x-api-key


@dataclass(frozen=True)
class ApiSettings:
    """Where a managed service's API is (provider: redis-software / memorystore)."""

    url: str | None = None  # redis-software: https://HOST:9443; memorystore: default https://memorystore.googleapis.com
    database: int | None = None  # redis-software: bdb uid whose roles_permissions bind roles to redis ACLs
    instance: str | None = None  # memorystore: projects/P/locations/L/instances/I
    ca_file: str | None = None  # memorystore: CA for the API (tls: is the data plane's)
    data_plane: "Admin | None" = None  # memorystore: who runs CLIENT KILL USER on `nodes`
    subscription: int | None = None  # redis-cloud: the Pro subscription holding `database`
    allow_password_replace: bool = False  # redis-cloud: consent to changes that cut existing connections


# Token ids a rotation gives the values around a rotating entry `<id>`: its new value until the
# store names it (`<id>:next`), and the value it replaced where the store keeps no versions (a
# file's PATH.previous, a memorystore token the record names `<id>.previous`).
NEXT = ":next"
PREVIOUS = ".previous"


def server_token_ref(user: str, token_id: str) -> str:
    """The stand-in "sha256" of a token whose value the service generates (memorystore): a digest of
    user and token id, so plans compare such tokens by id. It is not the token's hash."""
    import hashlib

    return hashlib.sha256(f"server-generated:{user}/{token_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Instance:
    name: str
    provider: str = "redis"
    nodes: tuple[str, ...] = ()  # "host:port"
    tls: TLSConfig | None = None
    admin: Admin = field(default_factory=Admin)
    auth_mode: Literal["token", "none"] = "token"
    tls_client_auth: TLSClientAuth | None = None
    persist: Literal["auto", "acl-save", "config-rewrite", "none"] = "auto"
    prune: bool = False
    topology: Literal["auto", "standalone", "replicated", "cluster", "sentinel"] = "auto"
    discover: bool = True
    kill_sessions_on_revoke: bool = False
    line: int = 0
    timeout_seconds: float = 5.0  # connect and command timeout per node
    api: ApiSettings | None = None  # provider: redis-software / memorystore / redis-cloud
    client_certificates: tuple[Certificate, ...] | None = None  # redis-cloud: clientTlsCertificates (None: unmanaged)
    # topology: sentinel -- the data nodes are the ones these sentinels report for master_name
    sentinels: tuple[str, ...] = ()  # "host:port"
    master_name: str | None = None
    sentinel_admin: Admin = field(default_factory=Admin)
    sentinel_users: tuple[User, ...] | None = None  # the sentinels' own users; None: sentinels' ACLs not managed
    # Not from the file: other users whose connections named like the apply lock count as one
    # (`apply --bootstrap` sets the file's admin while its step 1 connects as `default`).
    lock_users: tuple[str, ...] = ()

    def for_role(self, role: str) -> "Instance":
        """The instance as seen by a node of this role: sentinels are reached as sentinel_admin."""
        if role != "sentinel":
            return self
        from dataclasses import replace

        return replace(self, admin=self.sentinel_admin)

    def users_for_role(self, role: str, users: list[User]) -> list[User]:
        """The desired users of a node: sentinel_users on a sentinel, the file's users elsewhere."""
        return list(self.sentinel_users or ()) if role == "sentinel" else users


@dataclass(frozen=True)
class Policies:
    token_max_age_days: int | None = None
    expiry_warning_days: int = 14
    min_token_length: int | None = None
    password_complexity: bool = False
    forbid_nopass: bool = True
    max_delete_percent: int = 30
    min_overlap_hours: int = 24  # rotate: hours the latest store version must have existed before the next rotation


@dataclass(frozen=True)
class DesiredState:
    source: str  # the file as the user named it on the command line
    version: int
    policies: Policies
    instances: dict[str, Instance]
    roles: dict[str, str]  # role name -> resolved rule string
    users: dict[str, User]
    audit_log: str | None = None

    def users_for(self, instance: str) -> list[User]:
        return [u for u in self.users.values() if instance in u.instances]
