"""One apply of one Redis Software database: cluster settings, then every user's Redis ACL and
role, then ONE roles_permissions update of the database (waited for), then users and
passwords, then what is deleted -- in the order that never leaves a user without a password it
should have."""

from __future__ import annotations

import secrets as _random
import time
from typing import Any

from ...audit import AuditLog
from ...errors import LiveError
from ...model import Instance
from ...plan import ConfigChange, InstancePlan, PasswordStrategy, UserChange
from ...report import ApplyReport
from .. import managed
from ..base import Provider
from ..http import Client, Deadline, check_stop
from . import rules, versions
from .client import connect, wait_action
from .read import DEFAULT, NAME, PREFIX, UNKNOWN, listed, same_subject, software_version

ACTION_DEADLINE = 300.0  # seconds a database change may stay pending (409) or running


class Run(managed.ApiRun):
    """One apply of one database, in the order the module docstring gives."""

    def __init__(self, provider: Provider, instance: Instance, plan: InstancePlan, results: ApplyReport, audit: AuditLog | None):
        super().__init__(provider, instance, plan, results, audit)
        assert instance.api is not None and instance.api.url
        self.db = instance.api.database
        self.where = f"{instance.name} {managed.api_host(instance.api.url)}"

    def _step(self, label: str, change: UserChange | None, action: str, user: str, fn: Any) -> None:
        self.part.left.pop(0)
        try:
            check_stop()
            fn()
        except LiveError as exc:
            managed.audit(self.audit, self.part, change, action, user, "failed", str(exc))
            raise managed.fail(self.results, self.part, label, exc) from None
        managed.audit(self.audit, self.part, change, action, user, "ok")
        self.part.done.append(label)

    def run(self) -> None:
        http = connect(self.instance)
        node = self.plan.nodes[0]
        changes = list(node.changes)
        config = list(node.config)
        record = managed.load_record(self.p.desired.source, NAME)
        mine = record.setdefault(self.instance.name, {})
        bound = any(c.user != DEFAULT for c in changes)  # the default user has no role to bind
        self.part.left = [f"config {cc.parameter}" for cc in config] + (["database roles_permissions"] if bound else []) + [f"{c.action} {c.user}" for c in changes]
        try:
            self.passwords = versions.password_api(software_version(http), self.where)
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
            raise managed.fail(self.results, self.part, label, exc) from None
        finally:
            managed.save_record(self.p.desired.source, NAME, record)
            http.close()

    # -- the database's roles_permissions: one PUT, waited for ------------------------------

    def _permissions(self, http: Client, bindings: dict[str, tuple[int, int] | None]) -> None:
        if not bindings:
            return
        roles = {r["name"]: r["uid"] for r in listed(http, "/v1/roles")}
        perms = list(http.get_object(f"/v1/bdbs/{self.db}").get("roles_permissions") or [])
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
            wait_action(http, str(action), deadline, f"{self.where}: database {self.db} update (action {action})")

    # -- one user, in the order that never leaves it without a password it should have ----------

    def _one(self, http: Client, c: UserChange, mine: dict) -> None:
        if c.user == DEFAULT:
            return self._default(http, c, mine)
        users = {u["name"]: u for u in listed(http, "/v1/users")}
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
        role_uid = {r["name"]: r["uid"] for r in listed(http, "/v1/roles")}[PREFIX + c.user]
        subject = c.certificates[0] if c.certificates else None
        if live is None:
            body: dict[str, Any] = {"name": c.user, "email": rules.email_of(c.user), "role_uids": [role_uid]}
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
        live = next((u for u in listed(http, "/v1/users") if u.get("name") == user), None)
        if live is not None:
            mine[user] = {"issued": live.get("password_issue_date"), "tokens": {h: ids.get(h) for h in hashes}}

    def _ensure_acl_and_role(self, http: Client, user: str, rules: str) -> tuple[int, int]:
        name = PREFIX + user
        acls = {a["name"]: a for a in listed(http, "/v1/redis_acls")}
        if name in acls:
            acl_uid = acls[name]["uid"]
            if acls[name].get("acl") != rules:
                http.request("PUT", f"/v1/redis_acls/{acl_uid}", {"name": name, "acl": rules})
        else:
            acl_uid = http.request("POST", "/v1/redis_acls", {"name": name, "acl": rules})["uid"]
        roles = {r["name"]: r for r in listed(http, "/v1/roles")}
        role_uid = roles[name]["uid"] if name in roles else http.request("POST", "/v1/roles", {"name": name, "management": "none"})["uid"]
        return role_uid, acl_uid

    def _drop_acl_and_role(self, http: Client, user: str) -> None:
        name = PREFIX + user
        roles = {r["name"]: r for r in listed(http, "/v1/roles")}
        if name in roles:
            http.request("DELETE", f"/v1/roles/{roles[name]['uid']}")
        acls = {a["name"]: a for a in listed(http, "/v1/redis_acls")}
        if name in acls:
            http.request("DELETE", f"/v1/redis_acls/{acls[name]['uid']}")


def _temporary_password() -> str:
    # Meets Redis Software's complexity rules (upper, lower, digit, special; 8+ characters; no
    # character four times in a row).
    while True:
        value = "Tmp-" + _random.token_urlsafe(24) + "a1A!"
        if rules.password_problem(value, "") is None:
            return value
