"""`provider: redis-cloud`: ACL users, roles and Redis rules, the default user and the mTLS client
certificates of one Redis Cloud Pro database, through the Redis Cloud API (cloud_api.py).

API reference (openapi.json, "Version 1 Redis Cloud API"):
  /v1/acl/redisRules   GET {redisRules: [{id, name, acl, isDefault}]}; POST/PUT {name, redisRule}; DELETE
  /v1/acl/roles        GET {roles: [{id, name, redisRules: [{ruleName, databases: [{subscriptionId,
                       databaseId}]}]}]}; POST/PUT {name, redisRules}; DELETE
  /v1/acl/users        GET {users: [{id, name, role, status}]} (no password); POST {name, role, password};
                       PUT {role?, password?}; DELETE -- one role and one password per user
  /v1/subscriptions/{s}/databases/{d}
                       GET: the database; its `security.password` is the default user's password, so
                       this module hashes it in memory and drops it at once (never printed or kept)
                       PUT: `password`, `enableDefaultUser`, `enableTls`, `clientTlsCertificates`
                       [{publicCertificatePEMString}] (an empty list removes mTLS; enableTls: false
                       erases the list); GET does not return the certificates

How the file maps (instance = one database, `api: {subscription, database}`):
  U's rules (roles + acl) -> Redis rule `reconciler-U` (the resolved rules)
  U on this database      -> role `reconciler-U`, whose rule entry lists this database;
                             enabled: false removes the database from it
  U's tokens              -> one Cloud ACL user per token, all with role `reconciler-U`: the token's
                             `username:` (default U); two tokens are the rotation pair
  default's token         -> the database password (PUT; old connections fail after rotation, so
                             the file must say api.allow_password_replace: true)
  client_certificates     -> clientTlsCertificates (the whole list)

The API never returns passwords (except the database's, which is not kept), so apply records
which token each Cloud user holds (token id and sha256, never a secret) and the certificate
fingerprints it sent in `<file>.redis-cloud.json` next to the file (mode 0600).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from .. import acl
from ..audit import AuditLog
from ..errors import LiveError, PlanError
from ..model import DesiredState, Instance, User
from ..plan import Action, ConfigChange, Finding, FindingKind, InstancePlan, Plan, Severity, TokenAction, TokenChange, UserChange
from ..report import ApplyReport
from ..state import InstanceState, LiveState, LiveUser, NodeState
from . import common
from .base import Capabilities, Provider
from .rc_accounts import CERTS, NAME, PREFIX, known_passwords, same_account, wanted_accounts

CUTS = "old connections fail after rotation"
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


class RedisCloudProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        token_hashes=False,  # the API takes the password itself
        certificate_users=False,  # certificates are per database (client_certificates), not per user
        topology=False,
        password_complexity=True,
        reasons={"token_hashes": "whose API takes the password itself: give it as secret: {env|file}, not sha256"},
    )
    # The Cloud API's logs are account actions (/logs) and console sessions (/session-logs), not
    # denials; databases refuse ACL LOG (rs/references/compatibility/commands/server: "ACL LOG ❌").
    denials_unavailable = "Redis Cloud databases refuse ACL LOG and the Redis Cloud API has no ACL log"

    def client(self, instance: Instance) -> Any:
        # imports requests: only files with a redis-cloud instance pay for it
        from .cloud_api import CloudClient

        api, admin = instance.api, instance.admin
        assert api is not None and api.url
        if admin.account_key is None or admin.secret is None:
            raise LiveError(f"{instance.name}: admin.account_key and admin.secret are needed to reach the Redis Cloud API")
        return CloudClient(
            api.url,
            where=f"{instance.name} {_host(api.url)}",
            account_key=admin.account_key.reveal(),
            secret_key=admin.secret.reveal(),
            ca_file=api.ca_file,
            timeout=instance.timeout_seconds,
        )

    # -- read -----------------------------------------------------------------------------

    def read(self, instance: Instance) -> InstanceState:
        from .http import HttpError

        api = instance.api
        assert api is not None and api.subscription and api.database
        http = self.client(instance)
        try:
            try:
                db = http.get(f"/subscriptions/{api.subscription}/databases/{api.database}") or {}
            except HttpError as exc:
                if exc.status == 404:
                    raise LiveError(
                        f"{instance.name} {_host(api.url or '')}: database {api.database} of subscription {api.subscription} "
                        "does not exist (api.subscription, api.database)"
                    ) from None
                raise
            security = dict(db.get("security") or {})
            # Secret-bearing read: the default user's password is reduced to its sha256 here and dropped.
            password = security.pop("password", None)
            default_hash = _sha(password) if isinstance(password, str) and password else None
            del password, db["security"]
            users = (http.get("/acl/users") or {}).get("users") or []
            roles = (http.get("/acl/roles") or {}).get("roles") or []
            rules = (http.get("/acl/redisRules") or {}).get("redisRules") or []
        finally:
            http.close()
        everything = common.load_record(self.desired.source, NAME)
        record = everything.get(instance.name, {})
        known = known_passwords(self.desired, everything, instance)
        node = self._node(instance, db, security, default_hash, users, roles, rules, record, known)
        return InstanceState(name=instance.name, nodes=(node,), topology="standalone")

    def _node(
        self, instance: Instance, db: dict, security: dict, default_hash: str | None,
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
        declared = {u.name: u for u in self.desired.users_for(instance.name)}
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
        leftovers = self._leftovers(instance, declared, covering, accounts, rules, roles)
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
            address=_host(api.url or ""),
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
        self, instance: Instance, declared: Mapping[str, User], covering: set, accounts: Mapping[str, list], rules: list, roles: list,
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
        account = same_account(self.desired, instance)
        if account and account[0].name == instance.name:
            named = {e.get("ruleName") for r in roles for e in r.get("redisRules") or []}
            users = {u.name for other in account for u in self.desired.users_for(other.name)}
            for rule in rules:
                name = rule.get("name") or ""
                owner = name[len(PREFIX):]
                if name.startswith(PREFIX) and name not in named and owner not in users and owner not in out:
                    out[owner] = RULE_ONLY
        return out

    # -- plan (pure) ----------------------------------------------------------------------

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        return common.plan_with(self.desired, live, today, lambda u: u, lambda i, s, d: refine(i, s, d, today))

    # -- apply ----------------------------------------------------------------------------

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        from .redis_cloud_apply import Run

        return common.apply_each(self, plan, audit, Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        common.verify_by_replan(self, plan, today)


def _host(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).netloc or url


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
                out.append(f"{kind} {item.get('name')} is {status}")
    return tuple(sorted(out))


def _covers(role: dict, here: tuple[int, int]) -> bool:
    return any(
        (d.get("subscriptionId"), d.get("databaseId")) == here
        for entry in role.get("redisRules") or []
        for d in entry.get("databases") or []
    )


# -- the pure refinement ------------------------------------------------------------------------


def refine(inst: InstancePlan, state: InstanceState, desired: DesiredState, today: date) -> InstancePlan:
    """Provider rules on the planner's changes: which Cloud users a token change creates or deletes,
    what cuts connections (refused unless api.allow_password_replace), certificates, findings."""
    users = common.users_here(desired, inst.name)
    instance = desired.instances[inst.name]
    allow = bool(instance.api and instance.api.allow_password_replace)
    (node_plan,), (node,) = inst.nodes, state.nodes
    assert isinstance(node, RCNode)
    where = f"{inst.name} {node.address}"
    changes: list[UserChange] = []
    seen = set()
    for c in node_plan.changes:
        seen.add(c.user)
        changed = _refine_change(where, c, users.get(c.user), node, allow)
        if changed is not None:
            changes.append(changed)
    # A token moved to another Cloud username keeps its hash: the planner can't see it.
    for name, user in sorted(users.items()):
        if name in seen or name == "default" or name not in node.accounts:
            continue
        live = {a.name: a.sha256 for a in node.accounts[name]}
        if live != wanted_accounts(user):
            lu = node.users[name]
            c = UserChange(action=Action.UPDATE, user=name, enabled=user.enabled, hashes=lu.hashes, rules=lu.rules,
                           tokens=tuple(TokenChange(TokenAction.KEEP, t.sha256, t.id) for t in user.tokens))
            changed = _refine_change(where, c, user, node, allow)
            if changed is not None:
                changes.append(changed)
    findings = [_leftover_finding(f, node) for f in inst.findings] + [
        Finding(FindingKind.PENDING, f"{what}: still provisioning on the service (apply waits for it to be usable)"
                if not what.endswith(" is error") else f"{what}: its provisioning failed on the service",
                inst.name, severity=Severity.ERROR if what.endswith(" is error") else Severity.WARNING)
        for what in node.unsettled
    ] + [
        Finding(FindingKind.UNMANAGED_USER, f"Redis Cloud user {n} reaches this database through a role the reconciler did not create "
                "(left alone, also by prune)", inst.name, user=n)
        for n in node.others
    ] + [
        Finding(FindingKind.PASSWORD_UNKNOWN, f"the password of Redis Cloud user {n} is not in {common.record_path(desired.source, NAME)}: "
                f"taken to be token {tid}; set api.allow_password_replace: true to set it again (old connections fail)",
                inst.name, user=n, token_id=tid)
        for n, tid in node.unrecorded
    ]
    config = list(node_plan.config)
    if instance.client_certificates is not None:
        want = tuple(c.info.sha256 for c in instance.client_certificates if c.info is not None)
        if node.certificates is None or set(node.certificates) != set(want):
            before = "unknown (mTLS on; not readable through the API)" if node.certificates is None else _fps(node.certificates)
            after = _fps(want) if want else "[] (mTLS off)"
            config.append(ConfigChange(CERTS, before, after, via=f"PUT /v1/subscriptions/{node.subscription}/databases/{node.database}"))
        findings += _cert_findings(desired, inst.name, instance, today)
    nodes = (replace(node_plan, changes=tuple(changes), config=tuple(config), persist="none"),)
    return replace(inst, nodes=nodes, findings=tuple(findings), inventory=())


def _fps(fps: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"sha256:{f[:8]}…" for f in sorted(fps)) + "]"


def _cert_findings(desired: DesiredState, instance: str, inst: Instance, today: date) -> list[Finding]:
    warn = desired.policies.expiry_warning_days
    out = []
    for cert in inst.client_certificates or ():
        info = cert.info
        if info is None:
            continue
        ends = info.not_after.date()
        ref = f"client certificate {info.subject} (sha256:{info.sha256[:8]}…, {cert.cert_file})"
        if ends < today:
            out.append(Finding(FindingKind.CERT_EXPIRED, f"{ref} expired on {ends.isoformat()}", instance, severity=Severity.ERROR))
        elif (ends - today).days <= warn:
            out.append(Finding(FindingKind.CERT_EXPIRING, f"{ref} expires in {(ends - today).days} days ({ends.isoformat()}, warning at {warn})", instance))
    return out


def _leftover_finding(f: Finding, node: RCNode) -> Finding:
    """The planner's "not in the file" finding, for what an earlier run made and no Cloud user holds."""
    if f.kind != FindingKind.UNMANAGED_USER or f.user not in node.leftovers:
        return f
    what = node.leftovers[f.user]
    made, them = ("was", "it") if what == RULE_ONLY else ("were", "them")
    return replace(f, message=f"{what} {PREFIX}{f.user} {made} made by the reconciler for user {f.user}, who is not in the file, "
                   f"and no Redis Cloud user holds {them}: prune: true deletes {them}")


def _refine_change(where: str, c: UserChange, user: User | None, node: RCNode, allow: bool) -> UserChange | None:
    if (c.action == "delete" or user is None) and c.user in node.leftovers:
        what = node.leftovers[c.user]
        return replace(c, note=f"prune: true; left by an earlier run: {what} {PREFIX}{c.user}, which no Redis Cloud user holds "
                       "(a role other databases use only stops listing this one)")
    if c.action == "delete" or user is None:
        n = len(node.accounts.get(c.user, ()))
        what = (f"role {PREFIX}{c.user} no longer lists this database; its {n} Redis Cloud user{'s' if n != 1 else ''}, "
                "role and rule are deleted when no other database uses them")
        return replace(c, note="; ".join(x for x in (c.note, what) if x))
    who = f"{where}: user {c.user}"
    if user.certificates:
        raise PlanError(
            f"{who}: Redis Cloud maps no certificate to an ACL user (mTLS is per database): "
            "list the certificates under the instance's client_certificates: and give the user a token"
        )
    if c.user == "default":
        return _refine_default(who, c, user, node, allow)
    if c.action == "create" and not user.enabled:
        return None  # nothing to create: a disabled user has no role on this database
    if user.enabled and not user.tokens:
        raise PlanError(f"{who}: a Redis Cloud ACL user needs a password (AclUserCreateRequest: name, role, password); declare a token")
    live = {a.name: a.sha256 for a in node.accounts.get(c.user, ())}
    want = wanted_accounts(user)
    ids = {t.sha256: t.id for t in user.tokens}
    notes = []
    replaced = []
    for name, sha in sorted(want.items()):
        if name not in live:
            notes.append(f"+ Cloud user {name} (token {ids[sha]}, role {PREFIX}{c.user})")
        elif live[name] != sha:
            replaced.append(name)
            notes.append(f"~ Cloud user {name}: password replaced (token {ids[sha]}): {CUTS}")
    for name in sorted(set(live) - set(want)):
        notes.append(f"- Cloud user {name} (after the new ones exist)")
    if replaced and not allow:
        raise PlanError(
            f"{who}: token {ids[want[replaced[0]]]} would replace the one password of Redis Cloud user {replaced[0]} in place: "
            f"{CUTS}. For zero downtime give the new token its own username: (the rotation pair); "
            "to replace it anyway set api.allow_password_replace: true"
        )
    if not user.enabled and c.enabled_before:
        notes.append(f"role {PREFIX}{c.user} no longer lists this database (a role that lists no other database is "
                     "deleted with its Cloud users; enabled: true re-creates them from the file's tokens)")
    note = "; ".join(([c.note] if c.note else []) + notes)
    return replace(c, note=note)


def _refine_default(who: str, c: UserChange, user: User, node: RCNode, allow: bool) -> UserChange:
    if user.acl.strip() or user.roles:
        raise PlanError(f"{who}: the default user's permissions are not set through the Redis Cloud API; leave out acl: and roles:")
    if len(user.tokens) > 1:
        raise PlanError(f"{who}: a Redis Cloud database has one default user password; use named users for zero-downtime rotation")
    if user.enabled and not user.tokens:
        raise PlanError(f"{who}: the enabled default user needs its password as a token (or enabled: false to turn it off)")
    changes_password = any(t.action in ("add", "remove") for t in c.tokens) and user.enabled
    note = ""
    if changes_password:
        if not allow:
            raise PlanError(
                f"{who}: changing the database's default user password: {CUTS} (one password at a time). "
                "Set api.allow_password_replace: true to do it"
            )
        note = f"database password (PUT .../databases/{node.database}): {CUTS}"
    live = node.users.get("default")
    if live is not None and user.enabled != live.enabled:
        note = "; ".join(x for x in (note, f"enableDefaultUser: {'true' if user.enabled else 'false'}") if x)
    return replace(c, note=note or c.note)
