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
  versions         GET /v1/nodes: software_version of each node; which password calls a version
                   takes lives in rs_versions.py (7.4: username + old_password; 7.8+: an admin
                   names the user and needs no old password; 7.8.2..7.8.6-118 and 7.22.0 builds
                   before 216 are refused: RS161290 changes the caller's password)
  passwords        requests/users/password:
                   POST   /v1/users/password  adds a password (7.4: authorized by old_password)
                   DELETE /v1/users/password {username, old_password}  deletes that password;
                          never the last one (cannot_delete_last_password)
                   PUT    /v1/users/password  replaces ALL passwords with the single new one
                   PUT    /v1/users/{uid} {password}  (objects/user: password) sets the password
                          when no existing one is known (7.4)
  default user     requests/bdbs/passwords: PUT/POST/DELETE /v1/bdbs/{uid}/passwords {password}:
                   the database's default user (AUTH <password>) -- not a /v1/users user.
                   rotate-passwords: "Password rotation does not work for the default user."
  redis_acls       GET/POST /v1/redis_acls, PUT/DELETE /v1/redis_acls/{uid}: {uid, name, acl}
                   (requests/redis_acls, objects/redis_acl)
  roles            GET/POST /v1/roles, DELETE /v1/roles/{uid}: {uid, name, management}
                   (requests/roles, objects/role)
  databases        GET/PUT /v1/bdbs/{uid}: roles_permissions [{role_uid, redis_acl_uid}] binds a
                   role to a Redis ACL on that database (objects/bdb). PUT is asynchronous: it
                   answers an action_uid, the database is active-change-pending and another PUT
                   gets 409 ("reattempt later", requests/bdbs); GET /v1/actions/{uid} tells when
                   the action is done (requests/actions). One PUT per database per apply.
  mTLS             GET /v1/cluster/certificates: a flat object, the CA under mtls_trusted_ca_cert
                   (requests/cluster/certificates); certificate users also need the database's
                   tls_mode enabled and enforce_client_authentication (objects/bdb).

How the file maps onto that model (one database per instance, `api.database`):
  user U                  -> a /v1/users user named U (auth_method regular, or certificate when
                             the user has `certificates:`; certificate_subject_line = the subject)
  U's rules (roles + acl) -> a redis_acl named `reconciler-U` holding the resolved rule string,
                             a role named `reconciler-U` (management: none) in U's role_uids,
                             and {role_uid, redis_acl_uid} in the database's roles_permissions
  enabled: false          -> that roles_permissions entry is removed (the user keeps its
                             passwords but has no access to the database)
  tokens                  -> the user's passwords (plaintext from the file's secret references)
  user `default`          -> the database's password (/v1/bdbs/{uid}/passwords): one token; setting
                             or replacing it is planned with a note that new connections need the
                             new token; more tokens, rules or enabled: false are plan errors
  certificate subjects    -> compared as parsed distinguished names (the service stores RFC 2253)

The API never returns passwords or their hashes, so which token hashes a user has is recorded
by apply in `<file>.redis-software.json` (token ids and sha256 only, never a secret), together
with the user's `password_issue_date`. When the service reports another issue date, the
passwords were changed outside the reconciler: the plan then says "replace all" and apply uses
PUT. The default user has no issue date: without a record its password is unknown and is set.
"""

from __future__ import annotations

import secrets as _random
import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlparse

from .. import acl
from ..audit import AuditLog
from ..errors import LiveError, PlanError
from ..model import DesiredState, Instance, User
from ..plan import Action, ConfigChange, Finding, FindingKind, InstancePlan, PasswordStrategy, Plan, Severity, UserChange
from ..report import ApplyReport
from ..state import InstanceState, LiveState, LiveUser, NodeState
from . import common, rs_rules, rs_versions
from .base import Capabilities, Provider
from .http import Client, Deadline, HttpError, poll_delays, poll_until
from .rs_rules import email_of

NAME = "redis-software"
PREFIX = "reconciler-"  # names of the redis_acl and role made for each user
UNKNOWN = "0" * 64  # stands for "passwords the reconciler did not set" in live hashes
REPLACE_ALL = "replace all passwords (PUT /v1/users/password)"
DEFAULT = "default"
SET_DEFAULT = "set the database password (PUT /v1/bdbs/{uid}/passwords)"
MTLS = "mtls_certificate_authentication"
TRUSTED_CA = "mtls_trusted_ca_cert"  # requests/cluster/certificates: key of the mTLS CA
ACTION_DEADLINE = 300.0  # seconds a database change may stay pending (409) or running


@dataclass(frozen=True)
class RSNode(NodeState):
    """The database as one node, plus what the planner's NodeState has no field for."""

    database: int = 0
    subjects: Mapping[str, str] = field(default_factory=dict)  # user -> certificate_subject_line
    auth_methods: Mapping[str, str] = field(default_factory=dict)  # user -> auth_method
    software: str = ""  # the cluster's (oldest node's) software_version
    admin_can_add: bool = True  # rs_versions.PasswordApi.admin_can_add
    # Cluster mTLS settings, read when the file has certificate users (else None):
    mtls: bool | None = None  # cluster mtls_certificate_authentication
    subject_validation: str | None = None  # cluster mtls_client_cert_subject_validation_type
    trusted_ca: bool | None = None  # an mtls_trusted_ca certificate is installed
    database_mtls: bool | None = None  # bdb tls_mode enabled and enforce_client_authentication

    @property
    def label(self) -> str:
        return f"Redis Software {self.software or '?'} database {self.database}, Redis {self.version}"


def same_subject(a: str, b: str) -> bool:
    """Distinguished names compared parsed (RFC 2253 / 4514): `CN=a, OU=b` is `CN=a,OU=b`."""
    from ..config.core import parse_subject

    pa, pb = parse_subject(a or ""), parse_subject(b or "")
    if pa is None or pb is None:
        return (a or "") == (b or "")
    return pa == pb


def _address(url: str) -> str:
    return urlparse(url).netloc or url


class RedisSoftwareProvider(Provider):
    name = NAME
    capabilities = Capabilities(
        token_hashes=False,  # the password API needs plaintext
        topology=False,
        password_complexity=True,
        saved_plans=True,
        reasons={
            "token_hashes": "whose password API needs the plaintext (to add a password next to an existing one and to "
            "delete one): give it as secret: {env|file}, not sha256",
        },
    )
    # The REST API's requests (rest-api/requests) have no ACL log (`logs` is the cluster's event
    # log), and databases refuse ACL LOG (references/compatibility/commands/server: "ACL LOG ❌").
    denials_unavailable = "Redis Software databases refuse ACL LOG and its REST API has no ACL log endpoint"

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
        where = f"{instance.name} {_address(api.url)}"
        try:
            bdb = http.get_existing(f"/v1/bdbs/{api.database}", f"{where}: database {api.database} does not exist (api.database)")
            # objects/node: software_version; the password calls depend on it (rs_versions).
            software = rs_versions.lowest([str(n.get("software_version") or "") for n in http.get("/v1/nodes") or []])
            passwords = rs_versions.password_api(software, where)
            users = http.get("/v1/users")
            roles = {r["uid"]: r for r in http.get("/v1/roles")}
            acls = {a["uid"]: a for a in http.get("/v1/redis_acls")}
            mtls: dict[str, Any] = {}
            if any(u.certificates for u in self.desired.users_for(instance.name)):
                # security/certificates/certificate-based-authentication: certificate users need an
                # mtls_trusted_ca certificate and mtls_certificate_authentication on the cluster,
                # and mTLS (tls_mode, enforce_client_authentication) on the database.
                cluster = http.get("/v1/cluster") or {}
                certs = http.get("/v1/cluster/certificates") or {}
                mtls = {
                    "mtls": bool(cluster.get("mtls_certificate_authentication")),
                    "subject_validation": str(cluster.get("mtls_client_cert_subject_validation_type") or "disabled"),
                    "trusted_ca": isinstance(certs, dict) and bool(certs.get(TRUSTED_CA)),
                    "database_mtls": bdb.get("tls_mode") == "enabled" and bdb.get("enforce_client_authentication") == "enabled",
                }
        finally:
            http.close()
        record = common.load_record(self.desired.source, NAME).get(instance.name, {})
        node = replace(self._node(instance, bdb, users, roles, acls, record), software=software, admin_can_add=passwords.admin_can_add, **mtls)
        return InstanceState(name=instance.name, nodes=(node,), topology="standalone")

    def _node(self, instance: Instance, bdb: dict, users: list, roles: dict, acls: dict, record: dict) -> RSNode:
        assert instance.api is not None and instance.api.url
        bound = {p.get("role_uid"): p.get("redis_acl_uid") for p in bdb.get("roles_permissions") or []}
        acl_by_name = {a.get("name"): a for a in acls.values()}
        declared = {u.name: u for u in self.desired.users_for(instance.name)}
        admin = instance.admin.username
        live: dict[str, LiveUser] = {}
        subjects: dict[str, str] = {}
        methods: dict[str, str] = {}
        for u in users:
            name = u.get("name") or ""
            if not name or name == DEFAULT or admin in (name, u.get("email")):
                continue
            role_uids = list(u.get("role_uids") or [])
            management = [roles.get(r, {}).get("management", "none") for r in role_uids]
            # Cluster-management users (admin, db_viewer, ...) are not this file's business unless named in it.
            if name not in declared and (not role_uids or any(m != "none" for m in management)):
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
        if DEFAULT in declared:
            # The database's default user (requests/bdbs/passwords): its password is the bdb's and is
            # never returned; the record says which token apply set. Its permissions are not an ACL
            # the reconciler manages (the file may not declare any: refine refuses them).
            rec = record.get(DEFAULT)
            hashes = tuple(sorted(rec["tokens"])) if isinstance(rec, dict) and rec.get("tokens") else (UNKNOWN,)
            live[DEFAULT] = LiveUser(name=DEFAULT, enabled=True, nopass=False, hashes=hashes, rules=declared[DEFAULT].rules)
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

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
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
        _check_versions(inst.name, node, users)
        if DEFAULT in users:
            _check_default(inst.name, node, users[DEFAULT])
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
            live_subject = node.subjects.get(name, "")
            if not same_subject(live_subject, subject or "") or (node.auth_methods.get(name) == "certificate") != bool(subject):
                lu = node.users[name]
                changes.append(
                    UserChange(
                        action=Action.UPDATE,
                        user=name,
                        enabled=user.enabled,
                        hashes=lu.hashes,
                        rules=lu.rules,
                        certificates=(subject,) if subject else (),
                        note=f"certificate subject: {live_subject or '(none)'} -> {subject or '(none)'}",
                    )
                )
        config = tuple(node_plan.config)
        findings = list(inst.findings)
        if node.mtls is False:
            config += (ConfigChange(MTLS, "false", "true", via="PUT /v1/cluster"),)
        if node.trusted_ca is False:
            findings.append(
                Finding(
                    FindingKind.CERT_UNMAPPED,
                    "certificate users can't log in: the cluster has no mtls_trusted_ca certificate "
                    "(add it with PUT /v1/cluster/update_cert; the reconciler does not manage CAs)",
                    inst.name,
                    severity=Severity.ERROR,
                )
            )
        if node.database_mtls is False:
            findings.append(
                Finding(
                    FindingKind.CERT_UNMAPPED,
                    f"certificate users can't log in to database {node.database}: it needs tls_mode enabled and "
                    "client certificate authentication (enforce_client_authentication) -- set them on the database "
                    "(the reconciler does not change database TLS)",
                    inst.name,
                    severity=Severity.ERROR,
                )
            )
        nodes.append(replace(node_plan, changes=tuple(changes), config=config, persist="none"))
        inst = replace(inst, findings=tuple(findings))
    return replace(inst, nodes=tuple(nodes), inventory=())


def _check_versions(instance: str, node: RSNode, users: Mapping[str, User]) -> None:
    """What the file asks of the cluster's and the database's versions (rs_versions), before any write."""
    for name, user in sorted(users.items()):
        where = f"{instance} {node.address}: user {name}"
        problem = rs_versions.certificate_users_problem(node.software) if user.certificates else None
        problem = problem or (rs_versions.acl_v2_problem(node.version, user.rules) if name != DEFAULT else None)
        if problem:
            raise PlanError(f"{where}: {problem}")


def _check_default(instance: str, node: RSNode, user: User) -> None:
    where = f"{instance} {node.address}: user {DEFAULT}"
    if len(user.tokens) > 1:
        raise PlanError(
            f"{where}: the default user is the database's password (/v1/bdbs/{{uid}}/passwords) and Redis Software "
            "documents that password rotation does not work for it: declare one token (or rotate with a named user)"
        )
    if not user.tokens:
        raise PlanError(f"{where}: the default user needs one token (the database password)")
    if user.rules.strip():
        raise PlanError(f"{where}: the default user's permissions are the database's, not a Redis ACL; remove acl/roles")
    if not user.enabled or user.certificates:
        raise PlanError(f"{where}: the default user can't be disabled or use certificates here; remove enabled/certificates")


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
    if c.user == DEFAULT:
        return replace(c, note=f"{SET_DEFAULT}: new connections need the new token; open connections stay")
    subject = _subject(instance, user)
    if subject:
        return replace(c, certificates=(subject,), note=c.note or "certificate user (auth_method: certificate)")
    adds = [t for t in c.tokens if t.action == "add"]
    removes = [t for t in c.tokens if t.action == "remove"]
    if not c.hashes:
        if c.action == "create" or removes:
            raise PlanError(f"{where}: a Redis Software user keeps at least one password (DELETE never removes the last); declare a token")
        return c
    known = {t.sha256 for t in user.tokens if t.plaintext is not None}
    kept = [t for t in c.tokens if t.action == "keep" and t.sha256 in known]
    unknown_removal = [t for t in removes if t.sha256 not in known]
    # An addition needs an existing password only where the version asks for old_password (7.4).
    needs_authorizer = adds and not kept and not node.admin_can_add
    if c.action == "update" and (unknown_removal or needs_authorizer):
        why = (
            "passwords set outside the reconciler" if any(t.sha256 == UNKNOWN for t in removes)
            else "a removed token's plaintext is no longer in the file (DELETE needs it)"
            if unknown_removal
            else f"no kept token's plaintext to authorize adding one (Redis Software {node.software} asks for old_password)"
        )
        note = f"{REPLACE_ALL}: {why}; new connections with a kept token fail for a moment until it is added back"
        return replace(c, note=note, passwords=PasswordStrategy.REPLACE_ALL)
    return c

# -- execution --------------------------------------------------------------------------------


class _Run(common.ApiRun):
    """One apply of one database: cluster settings, then every user's Redis ACL and role, then ONE
    roles_permissions update of the database (waited for), then users and passwords, then what
    is deleted."""

    def __init__(self, provider: RedisSoftwareProvider, instance: Instance, plan: InstancePlan, results: ApplyReport, audit: AuditLog | None):
        super().__init__(provider, instance, plan, results, audit)
        assert instance.api is not None and instance.api.url
        self.db = instance.api.database
        self.where = f"{instance.name} {_address(instance.api.url)}"

    def _step(self, label: str, change: UserChange | None, action: str, user: str, fn: Any) -> None:
        self.part.left.pop(0)
        try:
            fn()
        except LiveError as exc:
            common.audit(self.audit, self.part, change, action, user, "failed", str(exc))
            raise common.fail(self.results, self.part, label, exc) from None
        common.audit(self.audit, self.part, change, action, user, "ok")
        self.part.done.append(label)

    def run(self) -> None:
        http = self.p.client(self.instance)
        node = self.plan.nodes[0]
        changes = list(node.changes)
        config = list(node.config)
        record = common.load_record(self.p.desired.source, NAME)
        mine = record.setdefault(self.instance.name, {})
        bound = any(c.user != DEFAULT for c in changes)  # the default user has no role to bind
        self.part.left = [f"config {cc.parameter}" for cc in config] + (["database roles_permissions"] if bound else []) + [f"{c.action} {c.user}" for c in changes]
        try:
            software = rs_versions.lowest([str(n.get("software_version") or "") for n in http.get("/v1/nodes") or []])
            self.passwords = rs_versions.password_api(software, self.where)
            for cc in config:
                def put_cluster(cc: ConfigChange = cc) -> None:
                    # certificate-based-authentication: PUT /v1/cluster {"mtls_certificate_authentication": true}
                    http.request("PUT", "/v1/cluster", {cc.parameter: cc.after == "true"})

                self._step(f"config {cc.parameter}", None, "config", cc.parameter, put_cluster)
                self.part.counts["config"] = self.part.counts.get("config", 0) + 1
            bindings: dict[str, tuple[int, int] | None] = {}  # user -> (role, acl) to bind, None to unbind
            for c in changes:
                if c.user == DEFAULT:
                    continue
                if c.action == "delete":
                    bindings[c.user] = None
                else:
                    pair = self._ensure_acl_and_role(http, c.user, c.rules)
                    bindings[c.user] = pair if c.enabled else None
            if bound:
                self._step("database roles_permissions", None, "config", "roles_permissions", lambda: self._permissions(http, bindings))
            for c in changes:
                self._step(f"{c.action} {c.user}", c, c.action, c.user, lambda c=c: self._one(http, c, mine))
                self.part.counts[c.action] = self.part.counts.get(c.action, 0) + 1
        except LiveError as exc:  # outside a step: GET /v1/nodes, the Redis ACLs and roles
            label = self.part.left.pop(0) if self.part.left else "apply"
            raise common.fail(self.results, self.part, label, exc) from None
        finally:
            common.save_record(self.p.desired.source, NAME, record)
            http.close()

    # -- the database's roles_permissions: one PUT, waited for ------------------------------

    def _permissions(self, http: Client, bindings: dict[str, tuple[int, int] | None]) -> None:
        if not bindings:
            return
        roles = {r["name"]: r["uid"] for r in http.get("/v1/roles")}
        perms = list(http.get(f"/v1/bdbs/{self.db}").get("roles_permissions") or [])
        wanted = list(perms)
        for user, pair in bindings.items():
            role_uid = pair[0] if pair else roles.get(PREFIX + user)
            if role_uid is None:
                continue
            wanted = [p for p in wanted if p.get("role_uid") != role_uid]
            if pair:
                wanted.append({"role_uid": pair[0], "redis_acl_uid": pair[1]})
        if wanted == perms:
            return
        deadline = Deadline.after(ACTION_DEADLINE)
        # requests/bdbs PUT: 409 while the database is busy with another change ("reattempt later").
        answer = http.request("PUT", f"/v1/bdbs/{self.db}", {"roles_permissions": wanted}, conflict_deadline=deadline.at)
        action = answer.get("action_uid") if isinstance(answer, dict) else None
        if action:
            self._wait_action(http, str(action), deadline)

    def _wait_action(self, http: Client, action: str, deadline: Deadline) -> None:
        """requests/actions: GET /v1/actions/{uid} until its status is completed (objects/action:
        queued -> starting -> running -> completed; failed, cancelled and aborted end it too)."""

        def done(state: dict) -> bool:
            status = str(state.get("status") or "")
            if status in ("failed", "cancelled", "aborted"):
                raise HttpError(f"{self.where}: database {self.db} update (action {action}) {status}: {state.get('error') or state.get('message') or ''}".strip())
            return status == "completed"

        poll_until(
            lambda: http.get(f"/v1/actions/{action}") or {}, done, deadline=deadline, delays=poll_delays(),
            stalled=lambda state: f"{self.where}: database {self.db} update (action {action}) still {state.get('status') or 'running'}",
        )

    # -- one user, in the order that never leaves it without a password it should have ----------

    def _one(self, http: Client, c: UserChange, mine: dict) -> None:
        if c.user == DEFAULT:
            return self._default(http, c, mine)
        users = {u["name"]: u for u in http.get("/v1/users")}
        live = users.get(c.user)
        if c.action == "delete":
            if live is not None:
                http.request("DELETE", f"/v1/users/{live['uid']}")
            self._drop_acl_and_role(http, c.user)
            mine.pop(c.user, None)
            return
        user = self.users[c.user]
        plain = {t.sha256: t.plaintext.reveal() for t in user.tokens if t.plaintext is not None}
        ids = {t.sha256: t.id for t in user.tokens}
        role_uid = {r["name"]: r["uid"] for r in http.get("/v1/roles")}[PREFIX + c.user]
        subject = c.certificates[0] if c.certificates else None
        if live is None:
            body: dict[str, Any] = {"name": c.user, "email": email_of(c.user), "role_uids": [role_uid]}
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
        if subject and (not same_subject(live.get("certificate_subject_line") or "", subject) or live.get("auth_method") != "certificate"):
            update.update(auth_method="certificate", certificate_subject_line=subject)
        if update:
            http.request("PUT", f"/v1/users/{live['uid']}", update)
        if subject or not any(t.action in ("add", "remove") for t in c.tokens):
            return
        if c.passwords == PasswordStrategy.REPLACE_ALL:
            self._replace_all(http, c, live, plain)
        else:
            kept = [plain[t.sha256] for t in c.tokens if t.action == "keep" and t.sha256 in plain]
            for t in c.tokens:
                if t.action == "add":
                    self._add(http, c.user, kept[0] if kept else None, plain[t.sha256])
            for t in c.tokens:  # removals last: never the last password
                if t.action == "remove":
                    self._delete(http, c.user, plain[t.sha256])
        self._remember(http, c.user, c.hashes, ids, mine)

    def _replace_all(self, http: Client, c: UserChange, live: dict, plain: dict[str, str]) -> None:
        """The user's passwords become the file's. PUT leaves one password; when it can be one of the
        file's new tokens no throwaway one is needed, else a throwaway one is set, used and deleted."""
        # After passwords changed outside, an added token may be on the user already (PUT would
        # answer new_password_same_as_current): only a throwaway password is certainly new.
        outside = any(t.sha256 == UNKNOWN for t in c.tokens if t.action == "remove")
        new = [] if outside else [plain[t.sha256] for t in c.tokens if t.action == "add" and t.sha256 in plain]
        first = new[0] if new else _temporary_password()
        known = [plain[t.sha256] for t in c.tokens if t.action in ("keep", "remove") and t.sha256 in plain]
        if self.passwords.needs_old_password and (outside or not known):
            # 7.4: PUT /v1/users/password needs an existing password; none is known for sure (after
            # changes outside, a known one may be gone), so the user object's password field
            # (objects/user: password) sets it.
            http.request("PUT", f"/v1/users/{live['uid']}", {"password": first}, secrets=[first])
        else:
            body = {"username": c.user, "new_password": first}
            if self.passwords.needs_old_password:
                body["old_password"] = known[0]
            http.request("PUT", "/v1/users/password", body, secrets=[first, *known])
        for h in c.hashes:
            if plain[h] != first:
                self._add(http, c.user, first, plain[h])
        if not new:
            self._delete(http, c.user, first)

    def _add(self, http: Client, user: str, existing: str | None, new: str) -> None:
        body = {"username": user, "new_password": new}
        if self.passwords.needs_old_password:  # 7.4: an existing password of the user authorizes it
            assert existing is not None
            body["old_password"] = existing
        http.request("POST", "/v1/users/password", body, secrets=[x for x in (existing, new) if x])

    def _delete(self, http: Client, user: str, password: str) -> None:
        http.request("DELETE", "/v1/users/password", {"username": user, "old_password": password}, secrets=[password])

    def _default(self, http: Client, c: UserChange, mine: dict) -> None:
        """requests/bdbs/passwords: PUT sets the database's single password for the default user."""
        user = self.users[DEFAULT]
        token = user.tokens[0]
        assert token.plaintext is not None
        value = token.plaintext.reveal()
        # A database change still pending answers 409 here too: reattempt, as for PUT /v1/bdbs/{uid}.
        http.request(
            "PUT", f"/v1/bdbs/{self.db}/passwords", {"password": value}, secrets=[value], conflict_deadline=time.monotonic() + ACTION_DEADLINE
        )
        mine[DEFAULT] = {"tokens": {token.sha256: token.id}}

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
        return role_uid, acl_uid

    def _drop_acl_and_role(self, http: Client, user: str) -> None:
        name = PREFIX + user
        roles = {r["name"]: r for r in http.get("/v1/roles")}
        if name in roles:
            http.request("DELETE", f"/v1/roles/{roles[name]['uid']}")
        acls = {a["name"]: a for a in http.get("/v1/redis_acls")}
        if name in acls:
            http.request("DELETE", f"/v1/redis_acls/{acls[name]['uid']}")


def _temporary_password() -> str:
    # Meets Redis Software's complexity rules (upper, lower, digit, special; 8+ characters; no
    # character four times in a row).
    while True:
        value = "Tmp-" + _random.token_urlsafe(24) + "a1A!"
        if rs_rules.password_problem(value, "") is None:
            return value
