"""`provider: redis-software`: users, Redis ACLs, roles and passwords through the Redis Software
(Redis Enterprise) cluster REST API.

REST API references (https://redis.io/docs/latest/operate/rs/references/rest-api/):
  authentication   Basic Auth with a cluster user's username and password; 401 when wrong
                   (rest-api/#authentication); a client certificate when certificate
                   authentication is set up (security/certificates/certificate-based-authentication)
  users            GET/POST /v1/users, GET/PUT/DELETE /v1/users/{uid}   (requests/users)
                   user object: uid, name, email, auth_method ('regular' | 'certificate'),
                   certificate_subject_line (RFC 2253), role_uids, password_issue_date
                   (objects/user)
  passwords        requests/users/password (7.4 docs):
                   POST   /v1/users/password {username, old_password, new_password}
                          adds a password; old_password must be one the user has; the new one
                          must not exist already (new_password_same_as_current) and must meet
                          the complexity rules when enabled (password_not_complex)
                   DELETE /v1/users/password {username, old_password}  deletes that password
                   PUT    /v1/users/password {username, new_password}  replaces ALL passwords
                          with the single new one
                   security/access-control/manage-passwords/rotate-passwords: "Password rotation
                   does not work for the default user."
  redis_acls       GET/POST /v1/redis_acls, PUT/DELETE /v1/redis_acls/{uid}: {uid, name, acl}
                   (requests/redis_acls, objects/redis_acl)
  roles            GET/POST /v1/roles, DELETE /v1/roles/{uid}: {uid, name, management}
                   (requests/roles, objects/role)
  databases        GET/PUT /v1/bdbs/{uid}: roles_permissions [{role_uid, redis_acl_uid}] binds a
                   role to a Redis ACL on that database (objects/bdb)

How the file maps onto that model (one database per instance, `api.database`):
  user U                  -> a /v1/users user named U (auth_method regular, or certificate when
                             the user has `certificates:`; certificate_subject_line = the subject)
  U's rules (roles + acl) -> a redis_acl named `reconciler-U` holding the resolved rule string,
                             a role named `reconciler-U` (management: none) in U's role_uids,
                             and {role_uid, redis_acl_uid} in the database's roles_permissions
  enabled: false          -> that roles_permissions entry is removed (the user keeps its
                             passwords but has no access to the database)
  tokens                  -> the user's passwords (plaintext from the file's secret references)

The API never returns passwords or their hashes, so which token hashes a user has is recorded
by apply in `<file>.redis-software.json` (token ids and sha256 only, never a secret), together
with the user's `password_issue_date`. When the service reports another issue date, the
passwords were changed outside the reconciler: the plan then says "replace all" and apply uses
PUT (the only call that needs no existing password).
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlparse

from .. import acl
from ..audit import AuditLog
from ..errors import LiveError, PlanError
from ..model import DesiredState, Instance, User
from ..plan import ConfigChange, Finding, InstancePlan, Plan, UserChange
from ..state import InstanceState, LiveState, LiveUser, NodeState
from . import common
from .base import Capabilities, Provider
from .http import Client, HttpError

NAME = "redis-software"
PREFIX = "reconciler-"  # names of the redis_acl and role made for each user
UNKNOWN = "0" * 64  # stands for "passwords the reconciler did not set" in live hashes
REPLACE_ALL = "replace all passwords (PUT /v1/users/password)"
MTLS = "mtls_certificate_authentication"


@dataclass(frozen=True)
class RSNode(NodeState):
    """The database as one node, plus what the planner's NodeState has no field for."""

    database: int = 0
    subjects: Mapping[str, str] = field(default_factory=dict)  # user -> certificate_subject_line
    auth_methods: Mapping[str, str] = field(default_factory=dict)  # user -> auth_method
    # Cluster mTLS settings, read when the file has certificate users (else None):
    mtls: bool | None = None  # cluster mtls_certificate_authentication
    subject_validation: str | None = None  # cluster mtls_client_cert_subject_validation_type
    trusted_ca: bool | None = None  # an mtls_trusted_ca certificate is installed

    @property
    def label(self) -> str:
        return f"Redis Software database {self.database}, Redis {self.version}"


def _certificate_names(certs: Any) -> set[str]:
    """Names in GET /v1/cluster/certificates (a list of {name, certificate}, or an object keyed by name)."""
    if isinstance(certs, dict):
        certs = certs.get("certificates", certs)
    if isinstance(certs, dict):
        return set(certs)
    return {c.get("name", "") for c in certs or [] if isinstance(c, dict)}


def _address(url: str) -> str:
    return urlparse(url).netloc or url


class RedisSoftwareProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        token_hashes=False,  # the password API needs plaintext
        topology=False,
        saved_plans=True,
    )

    # -- connection -----------------------------------------------------------------------

    def client(self, instance: Instance) -> Client:
        api = instance.api
        assert api is not None and api.url  # config.load checked it
        basic = None
        if instance.admin.secret is not None:
            basic = (instance.admin.username, instance.admin.secret.reveal())
        tls = instance.tls
        cert = (tls.cert_file, tls.key_file) if tls and tls.cert_file and tls.key_file else None
        return Client(
            api.url,
            where=f"{instance.name} {_address(api.url)}",
            basic=basic,
            ca_file=tls.ca_file if tls else None,
            cert=cert,
            timeout=instance.timeout_seconds,
        )

    # -- read -----------------------------------------------------------------------------

    def read(self, instance: Instance) -> InstanceState:
        api = instance.api
        assert api is not None and api.url and api.database
        http = self.client(instance)
        try:
            try:
                bdb = http.get(f"/v1/bdbs/{api.database}")
            except HttpError as exc:
                if exc.status == 404:
                    raise LiveError(f"{instance.name} {_address(api.url)}: database {api.database} does not exist (api.database)") from None
                raise
            users = http.get("/v1/users")
            roles = {r["uid"]: r for r in http.get("/v1/roles")}
            acls = {a["uid"]: a for a in http.get("/v1/redis_acls")}
            mtls: dict[str, Any] = {}
            if any(u.certificates for u in self.desired.users_for(instance.name)):
                # security/certificates/certificate-based-authentication: certificate users need an
                # mtls_trusted_ca certificate and mtls_certificate_authentication on the cluster.
                cluster = http.get("/v1/cluster") or {}
                certs = http.get("/v1/cluster/certificates")
                names = _certificate_names(certs)
                mtls = {
                    "mtls": bool(cluster.get("mtls_certificate_authentication")),
                    "subject_validation": str(cluster.get("mtls_client_cert_subject_validation_type") or "disabled"),
                    "trusted_ca": "mtls_trusted_ca" in names,
                }
        finally:
            http.close()
        record = common.load_record(self.desired.source, NAME).get(instance.name, {})
        node = replace(self._node(instance, bdb, users, roles, acls, record), **mtls)
        return InstanceState(name=instance.name, nodes=(node,), topology="standalone")

    def _node(self, instance: Instance, bdb: dict, users: list, roles: dict, acls: dict, record: dict) -> RSNode:
        assert instance.api is not None and instance.api.url
        bound = {p.get("role_uid"): p.get("redis_acl_uid") for p in bdb.get("roles_permissions") or []}
        acl_by_name = {a.get("name"): a for a in acls.values()}
        wanted = {u.name for u in self.desired.users_for(instance.name)}
        admin = instance.admin.username
        live: dict[str, LiveUser] = {}
        subjects: dict[str, str] = {}
        methods: dict[str, str] = {}
        for u in users:
            name = u.get("name") or ""
            if not name or admin in (name, u.get("email")):
                continue
            role_uids = list(u.get("role_uids") or [])
            management = [roles.get(r, {}).get("management", "none") for r in role_uids]
            # Cluster-management users (admin, db_viewer, ...) are not this file's business unless named in it.
            if name not in wanted and (not role_uids or any(m != "none" for m in management)):
                continue
            own = acl_by_name.get(PREFIX + name)
            if own is not None:
                rules = own.get("acl", "")
            else:
                rules = " ".join(acls[bound[r]].get("acl", "") for r in role_uids if bound.get(r) in acls)
            enabled = any(r in bound for r in role_uids)
            method = u.get("auth_method") or "regular"
            if method == "certificate":
                hashes: tuple[str, ...] = ()
                subjects[name] = u.get("certificate_subject_line") or ""
            else:
                rec = record.get(name)
                if isinstance(rec, dict) and rec.get("issued") == u.get("password_issue_date") and rec.get("tokens"):
                    hashes = tuple(sorted(rec["tokens"]))
                else:
                    hashes = (UNKNOWN,)
            methods[name] = method
            live[name] = LiveUser(name=name, enabled=enabled, nopass=False, hashes=hashes, rules=rules)
        version = str(bdb.get("version") or "7.2.0")
        table = acl.CommandTable.nearest("redis", version)
        return RSNode(
            address=_address(instance.api.url),
            server="redis",
            version=version,
            users=live,
            command_table=table.name,
            admin_user=admin,
            tls=True,
            database=int(bdb.get("uid") or instance.api.database or 0),
            subjects=subjects,
            auth_methods=methods,
        )

    # -- plan (pure) ----------------------------------------------------------------------

    def plan(self, live: LiveState, *, today: date, inventory: Any = None) -> tuple[InstancePlan, ...]:
        def view(u: User) -> User:
            # Certificates are this provider's business (auth_method: certificate), not CONFIG mapping.
            return replace(u, certificates=()) if u.certificates else u

        return common.plan_with(self.desired, live, today, view, refine)

    # -- apply ----------------------------------------------------------------------------

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> common.Results:
        return common.apply_each(self, plan, audit, _Run)

    def verify(self, plan: Plan, *, today: date) -> None:
        common.verify_by_replan(self, plan, today)


# -- the pure refinement ------------------------------------------------------------------------


def refine(inst: InstancePlan, state: InstanceState, desired: DesiredState) -> InstancePlan:
    """Provider rules on top of the planner's changes: certificates, the default user, which
    password calls a token change needs (and when only "replace all" can do it)."""
    users = common.users_here(desired, inst.name)
    nodes = []
    for node_plan, node in zip(inst.nodes, state.nodes, strict=True):
        assert isinstance(node, RSNode)
        changes: list[UserChange] = []
        seen = set()
        for c in node_plan.changes:
            seen.add(c.user)
            changes.append(_refine_change(inst.name, c, users.get(c.user), node))
        # Certificate subject or auth method changed: the planner can't see it (no hashes, same rules).
        for name, user in sorted(users.items()):
            if name in seen or name not in node.users:
                continue
            subject = _subject(inst.name, user)
            if node.subjects.get(name, "") != (subject or "") or (node.auth_methods.get(name) == "certificate") != bool(subject):
                lu = node.users[name]
                changes.append(
                    UserChange(
                        action="update",
                        user=name,
                        enabled=user.enabled,
                        hashes=lu.hashes,
                        rules=lu.rules,
                        certificates=(subject,) if subject else (),
                        note=f"certificate subject: {node.subjects.get(name) or '(none)'} -> {subject or '(none)'}",
                    )
                )
        config = tuple(node_plan.config)
        findings = list(inst.findings)
        if node.mtls is False:
            config += (ConfigChange(MTLS, "false", "true", via="PUT /v1/cluster"),)
        if node.trusted_ca is False:
            findings.append(
                Finding(
                    "cert_unmapped",
                    "certificate users can't log in: the cluster has no mtls_trusted_ca certificate "
                    "(add it with PUT /v1/cluster/certificates; the reconciler does not manage CAs)",
                    inst.name,
                    severity="error",
                )
            )
        nodes.append(replace(node_plan, changes=tuple(changes), config=config, persist="none"))
        inst = replace(inst, findings=tuple(findings))
    return replace(inst, nodes=tuple(nodes), inventory=())


def _subject(instance: str, user: User) -> str | None:
    if not user.certificates:
        return None
    if user.tokens:
        raise PlanError(
            f"{instance}: user {user.name}: a Redis Software user logs in by password or by certificate "
            "(auth_method), not both: keep tokens or certificates"
        )
    if len(user.certificates) > 1:
        raise PlanError(
            f"{instance}: user {user.name}: a Redis Software user has one certificate_subject_line; "
            f"the file lists {len(user.certificates)} certificates"
        )
    return user.certificates[0].subject


def _refine_change(instance: str, c: UserChange, user: User | None, node: RSNode) -> UserChange:
    where = f"{instance} {node.address}: user {c.user}"
    if c.action == "delete" or user is None:
        return c
    subject = _subject(instance, user)
    if subject:
        return replace(c, certificates=(subject,), note=c.note or "certificate user (auth_method: certificate)")
    adds = [t for t in c.tokens if t.action == "add"]
    removes = [t for t in c.tokens if t.action == "remove"]
    if c.user == "default" and (adds or removes or len(user.tokens) > 1):
        raise PlanError(
            f"{where}: Redis Software can't rotate the default user's password (\"Password rotation does not work "
            "for the default user\"); use a named user for rotation"
        )
    if not c.hashes:
        if c.action == "create" or removes:
            raise PlanError(f"{where}: a Redis Software user keeps at least one password (DELETE never removes the last); declare a token")
        return c
    known = {t.sha256 for t in user.tokens if t.plaintext is not None}
    kept = [t for t in c.tokens if t.action == "keep" and t.sha256 in known]
    unknown_removal = [t for t in removes if t.sha256 not in known]
    if c.action == "update" and (unknown_removal or (adds and not kept)):
        why = (
            "passwords set outside the reconciler" if any(t.sha256 == UNKNOWN for t in removes)
            else "a removed token's plaintext is no longer in the file"
            if unknown_removal
            else "no kept token's plaintext to authorize adding one"
        )
        note = f"{REPLACE_ALL}: {why}; new connections fail for a moment until the file's tokens are added back"
        return replace(c, note=note)
    return c


def replace_all(c: UserChange) -> bool:
    return c.note.startswith(REPLACE_ALL)


# -- execution --------------------------------------------------------------------------------


class _Run(common.ApiRun):
    def __init__(self, provider: RedisSoftwareProvider, instance: Instance, plan: InstancePlan, results: common.Results, audit: AuditLog | None):
        super().__init__(provider, instance, plan, results, audit)
        assert instance.api is not None
        self.db = instance.api.database

    def run(self) -> None:
        http = self.p.client(self.instance)
        changes = list(self.plan.nodes[0].changes)
        self.part.left = [f"{c.action} {c.user}" for c in changes]
        record = common.load_record(self.p.desired.source, NAME)
        mine = record.setdefault(self.instance.name, {})
        config = list(self.plan.nodes[0].config)
        self.part.left = [f"config {cc.parameter}" for cc in config] + self.part.left
        try:
            for cc in config:
                self.part.left.pop(0)
                try:
                    # certificate-based-authentication: PUT /v1/cluster {"mtls_certificate_authentication": true}
                    http.request("PUT", "/v1/cluster", {cc.parameter: cc.after == "true"})
                except HttpError as exc:
                    common.audit(self.audit, self.part, None, "config", cc.parameter, "failed", str(exc))
                    raise common.fail(self.results, self.part, f"config {cc.parameter}", exc) from None
                common.audit(self.audit, self.part, None, "config", cc.parameter, "ok")
                self.part.done.append(f"config {cc.parameter}")
                self.part.counts["config"] = self.part.counts.get("config", 0) + 1
            for c in changes:
                self.part.left.pop(0)
                try:
                    self._one(http, c, mine)
                except HttpError as exc:
                    common.audit(self.audit, self.part, c, c.action, c.user, "failed", str(exc))
                    raise common.fail(self.results, self.part, f"{c.action} {c.user}", exc) from None
                common.audit(self.audit, self.part, c, c.action, c.user, "ok")
                self.part.done.append(f"{c.action} {c.user}")
                self.part.counts[c.action] = self.part.counts.get(c.action, 0) + 1
        finally:
            common.save_record(self.p.desired.source, NAME, record)
            http.close()

    # one user, in the order that never leaves it without a password it should have
    def _one(self, http: Client, c: UserChange, mine: dict) -> None:
        users = {u["name"]: u for u in http.get("/v1/users")}
        live = users.get(c.user)
        if c.action == "delete":
            if live is not None:
                http.request("DELETE", f"/v1/users/{live['uid']}")
            self._unbind(http, c.user, drop=True)
            mine.pop(c.user, None)
            return
        user = self.users[c.user]
        plain = {t.sha256: t.plaintext.reveal() for t in user.tokens if t.plaintext is not None}
        ids = {t.sha256: t.id for t in user.tokens}
        acl_uid, role_uid = self._ensure_acl_and_role(http, c.user, c.rules)
        if c.enabled:
            self._bind(http, role_uid, acl_uid)
        else:
            self._unbind(http, c.user, drop=False)
        subject = c.certificates[0] if c.certificates else None
        if live is None:
            body: dict[str, Any] = {"name": c.user, "email": f"{c.user}@reconciler.invalid", "role_uids": [role_uid]}
            if subject:
                body.update(auth_method="certificate", certificate_subject_line=subject)
                http.request("POST", "/v1/users", body)
                return
            first, *rest = c.hashes
            body.update(auth_method="regular", password=plain[first])
            http.request("POST", "/v1/users", body, secrets=[plain[first]])
            if rest:  # recorded now, so a failure below leaves a re-run that only adds the rest
                self._remember(http, c.user, (first,), ids, mine)
            for h in rest:
                self._add(http, c.user, plain[first], plain[h])
            self._remember(http, c.user, c.hashes, ids, mine)
            return
        update: dict[str, Any] = {}
        if role_uid not in (live.get("role_uids") or []):
            update["role_uids"] = list(live.get("role_uids") or []) + [role_uid]
        if subject and (live.get("certificate_subject_line") != subject or live.get("auth_method") != "certificate"):
            update.update(auth_method="certificate", certificate_subject_line=subject)
        if update:
            http.request("PUT", f"/v1/users/{live['uid']}", update)
        if subject or not any(t.action in ("add", "remove") for t in c.tokens):
            return
        if replace_all(c):
            # PUT leaves exactly one password: a throwaway one, used to add the file's tokens and then deleted.
            temp = _temporary_password()
            http.request("PUT", "/v1/users/password", {"username": c.user, "new_password": temp}, secrets=[temp])
            for h in c.hashes:
                self._add(http, c.user, temp, plain[h])
            http.request("DELETE", "/v1/users/password", {"username": c.user, "old_password": temp}, secrets=[temp])
        else:
            authorizer = next(plain[t.sha256] for t in c.tokens if t.action == "keep" and t.sha256 in plain) if any(
                t.action == "add" for t in c.tokens
            ) else None
            for t in c.tokens:
                if t.action == "add":
                    assert authorizer is not None
                    self._add(http, c.user, authorizer, plain[t.sha256])
            for t in c.tokens:  # removals last: never the last password
                if t.action == "remove":
                    http.request("DELETE", "/v1/users/password", {"username": c.user, "old_password": plain[t.sha256]}, secrets=[plain[t.sha256]])
        self._remember(http, c.user, c.hashes, ids, mine)

    def _add(self, http: Client, user: str, existing: str, new: str) -> None:
        http.request(
            "POST", "/v1/users/password", {"username": user, "old_password": existing, "new_password": new}, secrets=[existing, new]
        )

    def _remember(self, http: Client, user: str, hashes: tuple[str, ...], ids: dict[str, str], mine: dict) -> None:
        live = next((u for u in http.get("/v1/users") if u.get("name") == user), None)
        if live is not None:
            mine[user] = {"issued": live.get("password_issue_date"), "tokens": {h: ids.get(h) for h in hashes}}

    def _ensure_acl_and_role(self, http: Client, user: str, rules: str) -> tuple[int, int]:
        name = PREFIX + user
        acls = {a["name"]: a for a in http.get("/v1/redis_acls")}
        if name in acls:
            acl_uid = acls[name]["uid"]
            if acls[name].get("acl") != rules:
                http.request("PUT", f"/v1/redis_acls/{acl_uid}", {"name": name, "acl": rules})
        else:
            acl_uid = http.request("POST", "/v1/redis_acls", {"name": name, "acl": rules})["uid"]
        roles = {r["name"]: r for r in http.get("/v1/roles")}
        role_uid = roles[name]["uid"] if name in roles else http.request("POST", "/v1/roles", {"name": name, "management": "none"})["uid"]
        return acl_uid, role_uid

    def _bind(self, http: Client, role_uid: int, acl_uid: int) -> None:
        perms = list(http.get(f"/v1/bdbs/{self.db}").get("roles_permissions") or [])
        if {"role_uid": role_uid, "redis_acl_uid": acl_uid} in perms:
            return
        perms = [p for p in perms if p.get("role_uid") != role_uid] + [{"role_uid": role_uid, "redis_acl_uid": acl_uid}]
        http.request("PUT", f"/v1/bdbs/{self.db}", {"roles_permissions": perms})

    def _unbind(self, http: Client, user: str, *, drop: bool) -> None:
        name = PREFIX + user
        roles = {r["name"]: r for r in http.get("/v1/roles")}
        role = roles.get(name)
        if role is not None:
            perms = list(http.get(f"/v1/bdbs/{self.db}").get("roles_permissions") or [])
            kept = [p for p in perms if p.get("role_uid") != role["uid"]]
            if kept != perms:
                http.request("PUT", f"/v1/bdbs/{self.db}", {"roles_permissions": kept})
            if drop:
                http.request("DELETE", f"/v1/roles/{role['uid']}")
        if drop:
            acls = {a["name"]: a for a in http.get("/v1/redis_acls")}
            if name in acls:
                http.request("DELETE", f"/v1/redis_acls/{acls[name]['uid']}")


def _temporary_password() -> str:
    # Meets Redis Software's complexity rules (upper, lower, digit, special; 8+ characters).
    return "Tmp-" + _random.token_urlsafe(24) + "a1A!"
