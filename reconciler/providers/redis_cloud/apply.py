"""Apply for `provider: redis-cloud`: each planned change as Redis Cloud API tasks, waited for one
by one (the account processes one operation at a time anyway), in the order that never leaves an
application without a valid credential: new Cloud users before old ones are deleted, rules and
roles before the users that need them, users before the roles and rules they used.

A write is done when the service says its result is usable: its task is processing-completed,
then the rule, role, user or database it made or changed reads `active`, and a deleted one is
gone (client.CloudClient.settle). The next write that depends on it is sent only then: a
role naming a rule still `pending` fails (ACL_REDIS_RULE_NOT_ACTIVE), and so does deleting a
role whose users are still `deleting` (ACL_ROLE_HAS_ACTIVE_USERS_AND_CANNOT_BE_DELETED).
Objects a previous run left unsettled (pending, deleting) are waited for before they are used."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from ... import certs as certs_mod
from ...model import User
from ...names import shown
from ...plan import UserChange
from .. import managed
from ..http import Deadline, HttpError, check_stop
from .accounts import CERTS, NAME, PREFIX, known_passwords, wanted_accounts
from .client import ACTIVE, connect, lists, task_deadline


def _entries(role: dict, here: tuple[int, int], rule: str | None) -> list[dict]:
    """The role's rule entries without this database; with `rule`, that rule lists it again."""
    out = []
    for e in role.get("redisRules") or []:
        dbs = [{"subscriptionId": d["subscriptionId"], "databaseId": d["databaseId"], **({"regions": d["regions"]} if d.get("regions") else {})}
               for d in e.get("databases") or [] if (d.get("subscriptionId"), d.get("databaseId")) != here]
        if dbs:
            out.append({"ruleName": e.get("ruleName"), "databases": dbs})
    if rule is not None:
        entry = next((e for e in out if e["ruleName"] == rule), None)
        if entry is None:
            out.append({"ruleName": rule, "databases": []})
            entry = out[-1]
        entry["databases"].append({"subscriptionId": here[0], "databaseId": here[1]})
    return out


class Run(managed.ApiRun):
    def run(self) -> None:
        api = self.instance.api
        assert api is not None and api.subscription and api.database
        self.here = (api.subscription, api.database)
        self.db_path = f"/subscriptions/{api.subscription}/databases/{api.database}"
        node = self.plan.nodes[0]
        steps: list[tuple[str, UserChange | None, Callable[[Any], None]]] = []
        for cc in node.config:
            if cc.parameter == CERTS:
                steps.append((f"config {CERTS}", None, self._certificates))
        for c in node.changes:
            steps.append((f"{c.action} {c.user}", c, functools.partial(self._one, change=c)))
        self.part.left = [s[0] for s in steps]
        self.record = managed.load_record(self.p.desired.source, NAME)
        self.mine = self.record.setdefault(self.instance.name, {})
        http = connect(self.instance)
        try:
            for label, change, fn in steps:
                self.part.left.pop(0)
                action = change.action if change else "config"
                who = change.user if change else CERTS
                try:
                    check_stop()
                    fn(http)
                except HttpError as exc:
                    managed.audit(self.audit, self.part, change, action, who, "failed", str(exc))
                    raise managed.fail(self.results, self.part, label, exc) from None
                managed.audit(self.audit, self.part, change, action, who, "ok")
                self.part.done.append(label)
                self.part.counts[action] = self.part.counts.get(action, 0) + 1
        finally:
            managed.save_record(self.p.desired.source, NAME, self.record)
            http.close()

    # -- live lists ---------------------------------------------------------------------------

    def _lists(self, http: Any, names: Iterable[str] = ()) -> tuple[dict, dict, dict]:
        """Users, roles and rules by name. The ones named in `names` (and the Cloud users holding a
        role named there) are settled first: what a previous run left pending is waited for until
        active, what it left deleting until gone."""
        wanted = set(names)
        while True:
            users, roles, rules = ({x["name"]: x for x in items} for items in lists(http))
            unsettled = [
                (kind, item) for kind, table in (("user", users), ("role", roles), ("rule", rules)) for item in table.values()
                if item.get("status", ACTIVE) != ACTIVE and (item.get("name") in wanted or item.get("role") in wanted)
            ]
            if not unsettled:
                return users, roles, rules
            for kind, item in unsettled:
                gone = item.get("status") == "deleting"
                http.settle(kind, item["id"], f"{_label(kind, item['name'])} (left {shown(str(item.get('status')))} by an earlier change)", gone=gone)

    def _do(self, http: Any, method: str, path: str, body: Any = None, *, kind: str, name: str,
            ident: int | tuple[int, int] | None = None, secrets: Iterable[str] = (),
            processed: Callable[[], None] | None = None) -> None:
        """One write, done when the service says its result is usable: the task processed, then the
        resource it made or changed `active` (deleted: gone), all within one task deadline.
        `processed` runs once the task is processed: what it records holds even if provisioning
        then outlasts the deadline (or the run is stopped while it waits)."""
        deadline = Deadline.after(task_deadline())
        made = http.write(method, path, body, secrets=secrets, deadline=deadline)
        if processed is not None:
            processed()
        target = ident if ident is not None else made if made is not None else name
        http.settle(kind, target, _label(kind, name), gone=method == "DELETE", deadline=deadline)

    # -- one change ---------------------------------------------------------------------------

    def _one(self, http: Any, change: UserChange) -> None:
        c = change
        if c.user == "default":
            self._default(http, c)
            return
        user = self.users.get(c.user)
        if c.action == "delete" or user is None:
            self._withdraw(http, c.user, forget=True)
            return
        if not user.enabled:
            self._withdraw(http, c.user, forget=False)
            return
        name = PREFIX + c.user
        users, roles, rules = self._lists(http, [name, *wanted_accounts(user)])
        # the rule, then the role that lists this database with it
        if name not in rules:
            self._do(http, "POST", "/acl/redisRules", {"name": name, "redisRule": c.rules}, kind="rule", name=name)
        elif rules[name].get("acl") != c.rules:
            rid = rules[name]["id"]
            self._do(http, "PUT", f"/acl/redisRules/{rid}", {"name": name, "redisRule": c.rules}, kind="rule", name=name, ident=rid)
        if name not in roles:
            self._do(http, "POST", "/acl/roles", {"name": name, "redisRules": _entries({}, self.here, name)}, kind="role", name=name)
        else:
            entries = _entries(roles[name], self.here, name)
            if not _same(_plain(roles[name]), entries):
                rid = roles[name]["id"]
                self._do(http, "PUT", f"/acl/roles/{rid}", {"name": name, "redisRules": entries}, kind="role", name=name, ident=rid)
        self._accounts(http, user, users)

    def _accounts(self, http: Any, user: User, users: dict) -> None:
        """One Cloud user per token: create the missing ones first, then delete the ones the file dropped."""
        role = PREFIX + user.name
        recorded = self.mine.setdefault("users", {})
        known = known_passwords(self.p.desired, self.record, self.instance)
        allow = bool(self.instance.api and self.instance.api.allow_password_replace)
        want = wanted_accounts(user)
        tokens = {t.sha256: t for t in user.tokens}
        for cloud_name, sha in want.items():
            token = tokens[sha]
            assert token.plaintext is not None  # validate: redis-cloud tokens are secret references
            password = token.plaintext.reveal()
            live = users.get(cloud_name)
            rec = known.get(cloud_name) or {}
            entry = {"user": user.name, "sha256": sha, "token_id": token.id}
            remember = functools.partial(recorded.__setitem__, cloud_name, entry)
            if live is None:
                body = {"name": cloud_name, "role": role, "password": password}
                self._do(http, "POST", "/acl/users", body, kind="user", name=cloud_name, secrets=[password], processed=remember)
            elif (rec.get("sha256"), rec.get("user")) != (sha, user.name) and allow:
                # in place: the plan said "old connections fail" and the file allowed it
                body = {"role": role, "password": password}
                self._do(http, "PUT", f"/acl/users/{live['id']}", body, kind="user", name=cloud_name, ident=live["id"],
                         secrets=[password], processed=remember)
            else:
                if live.get("role") != role:
                    self._do(http, "PUT", f"/acl/users/{live['id']}", {"role": role}, kind="user", name=cloud_name, ident=live["id"])
                if (rec.get("sha256"), rec.get("user")) == (sha, user.name):
                    recorded[cloud_name] = entry
                # else: the password is unknown and may not be replaced: the plan's finding stands
        for cloud_name, live in sorted(users.items()):
            if live.get("role") == role and cloud_name not in want:
                forget = functools.partial(recorded.pop, cloud_name, None)
                self._do(http, "DELETE", f"/acl/users/{live['id']}", kind="user", name=cloud_name, ident=live["id"], processed=forget)

    def _withdraw(self, http: Any, owner: str, *, forget: bool) -> None:
        """The role stops listing this database (enabled: false, or the user left the file). A role
        can't list no database (ACL_ROLE_REDIS_RULES_IS_MISSING), so when this was its last one its
        Cloud users, the role and the rule are deleted, in that order, each gone before the next
        (a role with users, even deleting ones, can't be deleted; nor a rule a role names).
        `forget`: the user left the file, so this instance's record drops it even when other
        databases keep its Cloud users."""
        name = PREFIX + owner
        users, roles, rules = self._lists(http, [name])
        recorded = self.mine.setdefault("users", {})
        role = roles.get(name)
        entries = _entries(role, self.here, None) if role else []
        if role is not None and entries:
            if not _same(_plain(role), entries):
                self._do(http, "PUT", f"/acl/roles/{role['id']}", {"name": name, "redisRules": entries}, kind="role", name=name, ident=role["id"])
            if not forget:
                return  # disabled here: the Cloud users keep their passwords, the record its entries
        else:
            for cloud_name, live in sorted(users.items()):
                if live.get("role") == name:
                    self._do(http, "DELETE", f"/acl/users/{live['id']}", kind="user", name=cloud_name, ident=live["id"])
            if role is not None:
                self._do(http, "DELETE", f"/acl/roles/{role['id']}", kind="role", name=name, ident=role["id"])
            used = any(e.get("ruleName") == name for r in roles.values() if r.get("name") != name for e in r.get("redisRules") or [])
            if name in rules and not used:
                rid = rules[name]["id"]
                self._do(http, "DELETE", f"/acl/redisRules/{rid}", kind="rule", name=name, ident=rid)
        for cloud_name in [n for n, r in recorded.items() if r.get("user") == owner]:
            recorded.pop(cloud_name)

    def _database(self, http: Any, body: dict, secrets: Iterable[str] = (), *, processed: Callable[[], None]) -> None:
        """PUT the database once it is active (a change still provisioning would refuse another),
        then wait until it is active again: only then do the new settings hold."""
        http.settle("database", self.here, _label("database", str(self.here[1])))
        self._do(http, "PUT", self.db_path, body, kind="database", name=str(self.here[1]), ident=self.here, secrets=secrets, processed=processed)

    def _default(self, http: Any, c: UserChange) -> None:
        user = self.users["default"]
        body: dict[str, Any] = {"enableDefaultUser": user.enabled}
        hidden: list[str] = []
        if user.enabled and any(t.action == "add" for t in c.tokens):
            token = user.tokens[0]
            assert token.plaintext is not None
            hidden = [token.plaintext.reveal()]
            body["password"] = hidden[0]
        def remember() -> None:
            if user.tokens:
                self.mine["default"] = {"sha256": user.tokens[0].sha256, "token_id": user.tokens[0].id}

        self._database(http, body, hidden, processed=remember)

    def _certificates(self, http: Any) -> None:
        listed = self.instance.client_certificates or ()
        pems = []
        for cert in listed:
            assert cert.cert_file is not None
            leaf = certs_mod.load_pem(cert.cert_file)[0]
            from cryptography.hazmat.primitives.serialization import Encoding

            pems.append({"publicCertificatePEMString": leaf.public_bytes(Encoding.PEM).decode()})
        body: dict[str, Any] = {CERTS: pems}
        if pems:
            body["enableTls"] = True  # certificates need TLS (CLIENT_SSL_CERTIFICATE_IS_NOT_ALLOWED_WITHOUT_ENABLE_TLS_IS_TRUE)
        fingerprints = sorted(c.info.sha256 for c in listed if c.info is not None)
        self._database(http, body, processed=functools.partial(self.mine.__setitem__, "certificates", fingerprints))


def _label(kind: str, name: str) -> str:
    name = shown(name)  # a name from the API may hold control characters
    return {"rule": f"Redis rule {name}", "role": f"role {name}", "user": f"Redis Cloud user {name}", "database": f"database {name}"}[kind]


def _plain(role: dict) -> list[dict]:
    """A role's entries as the API takes them (without ruleId, databaseName)."""
    return _entries(role, (-1, -1), None)


def _same(a: list[dict], b: list[dict]) -> bool:
    """Role entries equal regardless of order (the API may list them in its own order)."""
    def norm(entries: list[dict]) -> list:
        return sorted((e["ruleName"], sorted((d["subscriptionId"], d["databaseId"]) for d in e["databases"])) for e in entries)

    return norm(a) == norm(b)
