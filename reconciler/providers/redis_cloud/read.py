"""One Redis Cloud Pro database as the planner's live state (RCNode): the Cloud ACL users whose
role the reconciler made (`reconciler-U`), which token each holds (the record: the API never
returns passwords), the default user (its password hashed in memory and dropped at once), the
client certificates apply sent, and what is still provisioning."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ... import acl
from ...errors import LiveError
from ...model import DesiredState, Instance, User
from ...names import shown
from ...state import InstanceState, LiveUser, NodeState
from .. import managed
from .accounts import NAME, PREFIX, known_passwords, same_account

DELETING = "deleting"  # a deleted resource's status until it is gone (get-started/process-lifecycle)
ROLE_AND_RULE = "role and Redis rule"  # what a leftover is (RCNode.leftovers)
RULE_ONLY = "Redis rule"


def unknown(cloud_user: str) -> str:
    """Stands for a password the reconciler did not set (no record): unique per Cloud user."""
    return hashlib.sha256(f"unknown password of {cloud_user}".encode()).hexdigest()


@dataclass(frozen=True)
class Account:
    """One Cloud ACL user of a file user: its name, id, and the token hash apply recorded."""

    name: str
    id: int
    sha256: str


@dataclass(frozen=True)
class RCNode(NodeState):
    subscription: int = 0
    database: int = 0
    accounts: Mapping[str, tuple[Account, ...]] = field(default_factory=dict)  # file user -> Cloud users
    others: tuple[str, ...] = ()  # Cloud users with access here through roles the reconciler did not make
    unrecorded: tuple[tuple[str, str], ...] = ()  # (Cloud user, token id) taken as the file says: no record
    certificates: tuple[str, ...] | None = None  # fingerprints in force (None: mTLS on, list unknown)
    mtls: bool = False
    leftovers: Mapping[str, str] = field(default_factory=dict)  # owner not in the file -> ROLE_AND_RULE | RULE_ONLY
    unsettled: tuple[str, ...] = ()  # "role reconciler-x is pending", ...: provisioning still under way

    @property
    def label(self) -> str:
        return f"Redis Cloud subscription {self.subscription} database {self.database}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_database(desired: DesiredState, instance: Instance) -> InstanceState:
    # imports requests: only files with a redis-cloud instance pay for it
    from ..http import HttpError
    from .client import connect, lists

    api = instance.api
    assert api is not None and api.subscription and api.database
    http = connect(instance)
    try:
        try:
            db = http.get_object(f"/subscriptions/{api.subscription}/databases/{api.database}")
        except HttpError as exc:
            if exc.status == 404:
                raise LiveError(
                    f"{instance.name} {managed.api_host(api.url or '')}: database {api.database} of subscription {api.subscription} "
                    "does not exist (api.subscription, api.database)"
                ) from None
            raise
        security = db.get("security") or {}
        if not isinstance(security, dict):
            raise http.misshapen("GET", f"/subscriptions/{api.subscription}/databases/{api.database}", "`security`: an object")
        security = dict(security)
        # Secret-bearing read: the default user's password is reduced to its sha256 here and dropped.
        password = security.pop("password", None)
        default_hash = _sha(password) if isinstance(password, str) and password else None
        del password, db["security"]
        users, roles, rules = lists(http)
    finally:
        http.close()
    everything = managed.load_record(desired.source, NAME)
    record = everything.get(instance.name, {})
    known = known_passwords(desired, everything, instance)
    node = _node(desired, instance, db, security, default_hash, users, roles, rules, record, known)
    return InstanceState(name=instance.name, nodes=(node,), topology="standalone")


def _node(
    desired: DesiredState, instance: Instance, db: dict, security: dict, default_hash: str | None,
    users: list, roles: list, rules: list, record: dict, known: dict,
) -> RCNode:
    api = instance.api
    assert api is not None and api.subscription and api.database
    here = (api.subscription, api.database)
    # What is being deleted is gone already as far as the plan goes (the apply that deleted it
    # waits for it, or the next one does before it reuses a name); what is still provisioning
    # is there, with a finding.
    unsettled = _unsettled(db, users, roles, rules, here)
    users = [u for u in users if u.get("status") != DELETING]
    roles = [r for r in roles if r.get("status") != DELETING]
    rules = [r for r in rules if r.get("status") != DELETING]
    rule_text = {r.get("name"): r.get("acl", "") for r in rules}
    covering = {r.get("name") for r in roles if _covers(r, here)}
    role_names = {r.get("name") for r in roles}
    recorded = record.get("users") or {}
    declared = {u.name: u for u in desired.users_for(instance.name)}
    # A file user's Cloud users are this instance's business when its role lists this database,
    # the file puts the user here, or the last apply here recorded them.
    ours = {r[len(PREFIX):] for r in covering if r and r.startswith(PREFIX)} | set(declared)
    ours |= {v.get("user") for v in recorded.values() if isinstance(v, dict)}
    live: dict[str, LiveUser] = {}
    accounts: dict[str, list[Account]] = {}
    others = []
    # Without a record entry the API can't tell a Cloud user's password. Unless the file allows
    # replacing passwords, it is taken to be the file's token and a finding says so.
    allow = bool(api.allow_password_replace)
    want = {tk.username or u.name: (u.name, tk.sha256, tk.id) for u in declared.values() for tk in u.tokens}
    unrecorded: list[tuple[str, str]] = []
    for u in users:
        role = u.get("role") or ""
        name = u.get("name") or ""
        if role.startswith(PREFIX) and role in role_names:
            owner = role[len(PREFIX):]
            if owner not in ours:
                continue
            rec = known.get(name) or {}
            kept = rec.get("sha256")
            if rec.get("user") == owner and isinstance(kept, str):
                sha = kept
            elif not allow and name in want and want[name][0] == owner:
                sha = want[name][1]
                unrecorded.append((name, want[name][2]))
            else:
                sha = unknown(name)
            accounts.setdefault(owner, []).append(Account(name, int(u.get("id") or 0), sha))
        elif role in covering:
            others.append(name)
    for owner, accs in accounts.items():
        role_name = PREFIX + owner
        live[owner] = LiveUser(
            name=owner,
            enabled=role_name in covering,
            nopass=False,
            hashes=tuple(sorted(a.sha256 for a in accs)),
            rules=rule_text.get(role_name, ""),
        )
    leftovers = _leftovers(desired, instance, declared, covering, accounts, rules, roles)
    for owner, what in leftovers.items():
        user = declared.get(owner)
        # Declared here but disabled: as if enabled with its tokens, so the plan withdraws it.
        held = tuple(sorted(t.sha256 for t in user.tokens)) if user is not None else ()
        live[owner] = LiveUser(name=owner, enabled=what != RULE_ONLY, nopass=False, hashes=held, rules=rule_text.get(PREFIX + owner, ""))
    if "default" in declared:
        rec = record.get("default") or {}
        kept = rec.get("sha256")
        hashes: tuple[str, ...] = (default_hash or (kept if isinstance(kept, str) else unknown("default")),)
        if default_hash is None and not isinstance(kept, str) and not allow and "default" in want:
            hashes = (want["default"][1],)
            unrecorded.append(("default", want["default"][2]))
        enabled = bool(security.get("enableDefaultUser", True))
        if not enabled and not declared["default"].enabled:
            # Off in the file and on the service: its password can't be used, so it is not compared.
            hashes = tuple(tk.sha256 for tk in declared["default"].tokens)
        live["default"] = LiveUser(
            name="default", enabled=enabled, nopass=False,
            hashes=hashes, rules=declared["default"].rules,
        )
    mtls = bool(security.get("tlsClientAuthentication"))
    certs: tuple[str, ...] | None = ()
    if mtls:
        rec_certs = record.get("certificates")
        certs = tuple(rec_certs) if isinstance(rec_certs, list) and rec_certs else None
    version = str(db.get("redisVersion") or db.get("redisVersionCompliance") or "7.2")
    version = ".".join((version.split(".") + ["0", "0"])[:3])
    table = acl.CommandTable.nearest("redis", version)
    return RCNode(
        address=managed.api_host(api.url or ""),
        server="redis",
        version=version,
        users=live,
        command_table=table.name,
        admin_user="(api key)",  # the API key is no data user: never planned, never pruned
        tls=True,
        subscription=api.subscription,
        database=api.database,
        accounts={k: tuple(sorted(v, key=lambda a: a.name)) for k, v in accounts.items()},
        others=tuple(sorted(others)),
        unrecorded=tuple(sorted(unrecorded)),
        certificates=certs,
        mtls=mtls,
        leftovers={k: v for k, v in sorted(leftovers.items()) if k not in declared},
        unsettled=unsettled,
    )


def _leftovers(
    desired: DesiredState, instance: Instance, declared: Mapping[str, User], covering: set, accounts: Mapping[str, list], rules: list, roles: list,
) -> dict[str, str]:
    """What the reconciler made that no Cloud user holds, by owner: a role `reconciler-U` listing
    this database (a user withdrawn or pruned part way, or one whose creation stopped), and --
    on the first instance of the file on this account, as rules belong to the account -- a rule
    `reconciler-U` no role names, for a U no instance of the file on the account declares. A
    user declared and enabled here is left out: its next apply completes it."""
    out: dict[str, str] = {}
    for role in sorted(covering):
        owner = role[len(PREFIX):] if role and role.startswith(PREFIX) else None
        if owner and owner not in accounts and (owner not in declared or not declared[owner].enabled):
            out[owner] = ROLE_AND_RULE
    account = same_account(desired, instance)
    if account and account[0].name == instance.name:
        named = {e.get("ruleName") for r in roles for e in r.get("redisRules") or []}
        users = {u.name for other in account for u in desired.users_for(other.name)}
        for rule in rules:
            name = rule.get("name") or ""
            owner = name[len(PREFIX):]
            if name.startswith(PREFIX) and name not in named and owner not in users and owner not in out:
                out[owner] = RULE_ONLY
    return out


def _unsettled(db: dict, users: list, roles: list, rules: list, here: tuple[int, int]) -> tuple[str, ...]:
    """What this database depends on that is not `active`: the database itself, the reconciler's
    roles listing it, their rules, and the Cloud users holding them."""
    mine = {r.get("name") for r in roles if _covers(r, here) and str(r.get("name") or "").startswith(PREFIX)}
    mine |= {e.get("ruleName") for r in roles if r.get("name") in mine for e in r.get("redisRules") or []}
    out = [f"database {here[1]} is {db['status']}"] if db.get("status", "active") != "active" else []
    for kind, items, names in (("Redis rule", rules, "name"), ("role", roles, "name"), ("Redis Cloud user", users, "role")):
        for item in items:
            status = item.get("status", "active")
            if status != "active" and item.get(names) in mine:
                out.append(f"{kind} {shown(str(item.get('name')))} is {shown(str(status))}")
    return tuple(sorted(out))


def _covers(role: dict, here: tuple[int, int]) -> bool:
    return any(
        (d.get("subscriptionId"), d.get("databaseId")) == here
        for entry in role.get("redisRules") or []
        for d in entry.get("databases") or []
    )


