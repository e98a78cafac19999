"""A loopback HTTPS server implementing the parts of the Redis Cloud REST API the `redis-cloud`
provider uses, and enforcing the documented rules it depends on.

Sources (cited on each rule below):
  [openapi]   redis/docs content/operate/rc/api/api-reference/openapi.json, "Version 1 Redis Cloud
              API" (operations createUser, updateUser_1, deleteUser, createRole, updateRole,
              createRedisRule, updateRedisRule, getTaskById, getSubscriptionDatabaseByID,
              updateDatabase; schemas TaskStateUpdate, ProcessorResponse.error, AccountACLUsers,
              AccountACLRoles, AccountACLRedisRules, DatabaseUpdateRequest, DatabaseCertificateSpec)
  [lifecycle] content/operate/rc/api/get-started/process-lifecycle.md (tasks and their states;
              "For each account, only one operation is processed concurrently")
  [use-api]   content/operate/rc/api/get-started/use-rest-api.md (x-api-key, x-api-secret-key; "a
              request limit of 400 requests per minute per Account API key")
  [429]       Redis support, "Troubleshooting 429 Errors in Redis Cloud APIs": a 429 may carry the
              delay in `x-rate-limit-retry-after-seconds`
  [users]     content/operate/rc/security/access-control/data-access-control/create-assign-users.md
              ("ACL user passwords must be between 8 and 128 characters long")
  [default]   .../data-access-control/default-user.md ("Database passwords must be less than 50
              characters long")
  [guide]     the Redis Cloud credential-rotation guide: passwords need >= 8 characters with upper,
              lower, digit and special characters.
  [go-api]    RedisLabs/rediscloud-go-api service/access_control_lists/{redis_rules,roles,users}:
              the `status` values active, pending, deleting, error; service/databases/model.go:
              a database's `status` (active, active-change-pending, ...)
  [terraform] RedisLabs/terraform-provider-rediscloud provider/resource_rediscloud_acl_{rule,role,
              user}.go (waitForAcl*ToBeActive after create and update; after delete "Wait until it's
              really disappeared": GET until NotFound), provider/pro/resource_rediscloud_pro_database.go
              (WaitForDatabaseToBeActive before and after an update)
Where a source names no error, the code here is this fake's own and says so.

Two phases per write [lifecycle]: "Asynchronous operations have two main phases: processing and
provisioning. A resource is not available until both phases are complete."
  processing    tasks move one state per tick (every request the server receives is a tick), so
                tests need no sleeps: received -> processing-in-progress -> processing-completed |
                processing-error. Only the task at the head of the account's queue advances
                ("For each account, only one operation is processed concurrently").
  provisioning  then the resource is `pending` ("Provisioning is in progress") for `provisioning`
                seconds (the knob: small in most tests, 1 s in the acceptance test) and `active`
                ("Provisioning completed successfully"); a deleted one is `deleting`
                ("De-provisioning and deletion is in progress") for as long, then gone (404, not
                listed). Until then the change does not take effect: a new user or password can't
                log in, a new role grants nothing, a database keeps its old password and
                certificates. Provisioning runs in parallel ("The provisioning phase can be
                performed in parallel").
`timeline` records, at the moment each change took effect (task completed, provisioning ended),
which credentials could log in to the database and which client certificates it accepted, so
tests can assert what held at any instant -- e.g. the instant apply returned.
"""

from __future__ import annotations

import bisect
import collections
import copy
import hashlib
import heapq
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fake_redis_software import Loopback

PENDING, ACTIVE, DELETING = "pending", "active", "deleting"  # [lifecycle] provisioning states; [go-api] Status*
DB_CHANGING = "active-change-pending"  # [go-api] databases.StatusActiveChangePending: an update provisioning
# The resource each task acts on: the table it lives in (see FakeRedisCloud._tables).
TASK_KIND = {
    "createRedisRule": "rules", "updateRedisRule": "rules", "deleteRedisRule": "rules",
    "createRole": "roles", "updateRole": "roles", "deleteRole": "roles",
    "createUser": "users", "updateUser": "users", "deleteUser": "users",
    "updateDatabase": "databases",
}

DEFAULT_RULES = {"Full-Access": "+@all  ~*", "Read-Write": "+@all -@dangerous ~*", "Read-Only": "+@read ~*"}  # [openapi] AccountACLRedisRules example


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(status: int, message: str) -> tuple[int, Any]:
    # [openapi] errors: the HTTP status with a description; the body shape is this fake's.
    return status, {"timestamp": _now(), "status": status, "error": message, "message": message}


def _fingerprint(pem: str) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)).hexdigest()


def complex_enough(password: str) -> bool:
    """[users] 8 to 128 characters; [guide] upper, lower, digit and special."""
    return (
        8 <= len(password) <= 128
        and re.search(r"[A-Z]", password) is not None
        and re.search(r"[a-z]", password) is not None
        and re.search(r"[0-9]", password) is not None
        and re.search(r"[^A-Za-z0-9]", password) is not None
    )


class TaskError(Exception):
    def __init__(self, code: str, info: str = ""):
        super().__init__(code)
        self.code = code  # a ProcessorResponse.error enum value [openapi]
        self.info = info


@dataclass
class FakeRedisCloud:
    account_key: str = "acct-key-0123456789"
    secret_key: str = "user-secret-key-ABCDEF-0123"
    subscription: int = 120416
    database: int = 51170941
    rate_limit: int = 400  # [use-api] requests per window per account key
    rate_window: float = 60.0
    default_password: str = "Initial-Default-1!"
    users: dict[int, dict] = field(default_factory=dict)
    passwords: dict[int, str] = field(default_factory=dict)  # user id -> plaintext (never returned)
    roles: dict[int, dict] = field(default_factory=dict)
    rules: dict[int, dict] = field(default_factory=dict)
    databases: dict[tuple[int, int], dict] = field(default_factory=dict)
    client_certs: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # PEMs (GET does not return them)
    tasks: dict[str, dict] = field(default_factory=dict)
    queue: collections.deque = field(default_factory=collections.deque)
    provisioning: float = 0.02  # seconds a created or changed resource stays pending (deleted: deleting) [lifecycle]
    timeline: list[tuple[float, frozenset, frozenset]] = field(default_factory=list)  # (monotonic time, (user, password) pairs that log in, accepted certificate sha256s)
    throttled: int = 0  # requests answered 429
    early: int = 0  # requests that came before the retry delay a 429 announced had passed
    task_failures: list[tuple[str, str, str]] = field(default_factory=list)  # (commandType, error, info)
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    _seen: collections.deque = field(default_factory=collections.deque)
    _retry_at: float = 0.0
    hold: bool = False  # tests: the head task stays in processing-in-progress (a slow operation)
    # Provisioning: what was in effect before a change that is still pending, by (table, key)
    # (None: nothing -- a new resource, or one being deleted); and the scheduled ends of phases.
    _before: dict[tuple[str, Any], Any] = field(default_factory=dict)
    _events: list = field(default_factory=list)  # heap of (time, seq, table, key, generation, what)
    _generation: dict[tuple[str, Any], int] = field(default_factory=dict)
    shows_password: bool = True  # [openapi] the Database example has security.password; tests turn it off

    def __post_init__(self) -> None:
        for name, acl in DEFAULT_RULES.items():
            rid = next(self._ids)
            self.rules[rid] = {"id": rid, "name": name, "acl": acl, "isDefault": True, "status": ACTIVE}
        key = (self.subscription, self.database)
        # [openapi] Database example: security.{enableDefaultUser, password, sslClientAuthentication,
        # tlsClientAuthentication, enableTls, sourceIps} -- GET returns the default user's password.
        self.databases[key] = {
            "databaseId": self.database,
            "name": "DB-RCP-2-81-7",
            "protocol": "redis",
            "redisVersion": "7.4",
            "status": "active",
            "security": {
                "enableDefaultUser": True,
                "password": self.default_password,
                "sslClientAuthentication": False,
                "tlsClientAuthentication": False,
                "enableTls": False,
                "sourceIps": ["0.0.0.0/0"],
            },
        }
        self.client_certs[key] = []
        self.http = Loopback(self.handle)
        self.url = self.http.url + "/v1"
        self.ca_file = self.http.ca_file
        self._snapshot(time.monotonic())

    def stop(self) -> None:
        self.http.stop()

    # -- what tests look at -------------------------------------------------------------------

    def by_name(self, name: str) -> dict | None:
        return next((u for u in self.users.values() if u["name"] == name), None)

    def role_by_name(self, name: str) -> dict | None:
        return next((r for r in self.roles.values() if r["name"] == name), None)

    def rule_by_name(self, name: str) -> dict | None:
        return next((r for r in self.rules.values() if r["name"] == name), None)

    def can_auth(self, username: str, password: str, key: tuple[int, int] | None = None) -> bool:
        """Would AUTH username password succeed on the database now (key: default this fake's database)?
        Only what is provisioned counts [lifecycle]: a pending user, role or rule grants nothing yet."""
        self._settle(time.monotonic())
        return self._can_auth(username, password, key or (self.subscription, self.database))

    def accepts_certificate(self, pem: str, key: tuple[int, int] | None = None) -> bool:
        """Would the database accept a client presenting this certificate now?"""
        self._settle(time.monotonic())
        return _fingerprint(pem) in self._certificates_in_effect(key or (self.subscription, self.database))

    def state_at(self, moment: float) -> tuple[frozenset, frozenset]:
        """(credentials that logged in, certificate fingerprints accepted) at `moment` (time.monotonic())."""
        self._settle(time.monotonic())
        i = bisect.bisect_right([t for t, _, _ in self.timeline], moment) - 1
        return self.timeline[i][1], self.timeline[i][2]

    def in_effect(self, table: str, key: Any) -> dict | None:
        """The resource as it is in effect: its state before a change still pending, None while it
        is being created or deleted."""
        if (table, key) in self._before:
            return self._before[(table, key)]
        item = self._tables()[table].get(key)
        return item if item is not None and item.get("status") == ACTIVE else None

    def _can_auth(self, username: str, password: str, key: tuple[int, int]) -> bool:
        if username == "default":
            db = self.in_effect("databases", key)
            sec = (db or {}).get("security") or {}
            return bool(sec.get("enableDefaultUser")) and sec.get("password") == password
        u = next((x for uid in self.users if (x := self.in_effect("users", uid)) is not None and x["name"] == username), None)
        if u is None or u.get("password", self.passwords.get(u["id"])) != password:
            return False
        role = next((x for rid in self.roles if (x := self.in_effect("roles", rid)) is not None and x["name"] == u["role"]), None)
        ready = {x["name"] for rid in self.rules if (x := self.in_effect("rules", rid)) is not None}
        return role is not None and any(
            (d["subscriptionId"], d["databaseId"]) == key and r["ruleName"] in ready for r in role["redisRules"] for d in r["databases"]
        )

    def _certificates_in_effect(self, key: tuple[int, int]) -> set[str]:
        db = self.in_effect("databases", key)
        if db is None:
            return set()
        return {_fingerprint(p) for p in db.get("clientTlsCertificates", self.client_certs.get(key) or [])}

    def begin(self, table: str, key: Any, *, deleting: bool = False) -> None:
        """A change made elsewhere (the console, a run that was stopped) that is still provisioning:
        the resource is pending (deleting) for `provisioning` seconds from now."""
        self._settle(time.monotonic())
        self._provision(table, key, self._view(table, key), deleting=deleting)

    def leftovers(self) -> list[str]:
        """Every rule, role and user the reconciler made (`reconciler-*` names, and users holding
        such a role), whatever their status."""
        self._settle(time.monotonic())
        out = [f"rule {r['name']} ({r['status']})" for r in self.rules.values() if r["name"].startswith("reconciler-")]
        out += [f"role {r['name']} ({r['status']})" for r in self.roles.values() if r["name"].startswith("reconciler-")]
        return out + [f"user {u['name']} ({u['status']})" for u in self.users.values() if u["role"].startswith("reconciler-")]

    def fail_next_task(self, command_type: str, error: str, info: str = "") -> None:
        """The next task of `command_type` ends in processing-error (a failure the API can report)."""
        self.task_failures.append((command_type, error, info))

    def _snapshot(self, moment: float) -> None:
        key = (self.subscription, self.database)
        valid = {("default", p) for db in [self.in_effect("databases", key)] if db for p in [db["security"].get("password")]}
        valid = {c for c in valid if self._can_auth(*c, key)}
        valid |= {(u["name"], self.passwords[u["id"]]) for u in self.users.values() if self._can_auth(u["name"], self.passwords[u["id"]], key)}
        self.timeline.append((moment, frozenset(valid), frozenset(self._certificates_in_effect(key))))

    # -- provisioning [lifecycle] -------------------------------------------------------------------

    def _tables(self) -> dict[str, dict]:
        return {"rules": self.rules, "roles": self.roles, "users": self.users, "databases": self.databases}

    def _view(self, table: str, key: Any) -> Any:
        """What a resource is in effect right now (the users' passwords and the certificates, which
        GET never returns, included), to keep while a change to it is pending."""
        item = self.in_effect(table, key)
        if item is None:
            return None
        if (table, key) in self._before:
            return item
        if table == "users":
            return {**copy.deepcopy(item), "password": self.passwords.get(key)}
        if table == "databases":
            return {**copy.deepcopy(item), "clientTlsCertificates": list(self.client_certs.get(key) or [])}
        return copy.deepcopy(item)

    def _provision(self, table: str, key: Any, before: Any, *, deleting: bool = False) -> None:
        """The task is processed: the resource is pending (deleting) for `provisioning` seconds. Until
        then the state before the change stays in effect; a deleted one grants nothing any more."""
        item = self._tables()[table][key]
        self._before.setdefault((table, key), before)
        if deleting:
            self._before[(table, key)] = None
        item["status"] = DELETING if deleting else (DB_CHANGING if table == "databases" else PENDING)
        generation = self._generation.get((table, key), 0) + 1
        self._generation[(table, key)] = generation
        heapq.heappush(self._events, (time.monotonic() + self.provisioning, next(self._ids), table, key, generation, deleting))

    def _settle(self, now: float) -> None:
        """Provisioning that ended by `now` takes effect, each at the moment it ended."""
        while self._events and self._events[0][0] <= now:
            at, _, table, key, generation, deleting = heapq.heappop(self._events)
            at = max(at, self.timeline[-1][0])  # the timeline stays in time order
            if self._generation.get((table, key)) != generation:
                continue  # a later change to the same resource restarted its provisioning
            self._before.pop((table, key), None)
            rows = self._tables()[table]
            if deleting:
                rows.pop(key, None)
                if table == "users":
                    self.passwords.pop(key, None)
            elif key in rows:
                rows[key]["status"] = ACTIVE
            self._snapshot(at)

    # -- HTTP -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        lower = {k.lower(): v for k, v in headers.items()}
        # [use-api] every request carries x-api-key (account key) and x-api-secret-key (user key);
        # [openapi] 401 "Authentication failed for requested resource".
        if lower.get("x-api-key") != self.account_key or lower.get("x-api-secret-key") != self.secret_key:
            return _error(401, "Authentication failed for requested resource")
        # [use-api] 400 requests per minute per account key; [openapi] 429 Too Many Requests;
        # [429] with the delay in x-rate-limit-retry-after-seconds.
        now = time.monotonic()
        if now < self._retry_at:
            self.early += 1
        while self._seen and now - self._seen[0] > self.rate_window:
            self._seen.popleft()
        if len(self._seen) >= self.rate_limit:
            self.throttled += 1
            wait = self.rate_window - (now - self._seen[0])
            self._retry_at = now + wait
            status, body = _error(429, "Too Many Requests")
            return status, body, {"x-rate-limit-retry-after-seconds": f"{wait:.3f}"}
        self._seen.append(now)
        self._settle(now)
        self._tick()
        route = path.split("?")[0].rstrip("/")
        if not route.startswith("/v1/"):
            return _error(404, "The resource you were trying to reach was not found or does not exist")
        route = route[3:]
        m = re.fullmatch(r"/tasks/([0-9a-f-]+)", route)
        if m and method == "GET":
            task = self.tasks.get(m.group(1))
            return (200, dict(task)) if task else _error(404, "task not found")
        m = re.fullmatch(r"/acl/users/(\d+)", route)
        if m and method == "GET":
            # [openapi] getUserByID; [terraform] a deleted user is gone when this answers 404
            user = self.users.get(int(m.group(1)))
            return (200, dict(user)) if user else _error(404, "The resource you were trying to reach was not found or does not exist")
        if route == "/acl/users" and method == "GET":
            # [openapi] AccountACLUsers example: {accountId, users: [{id, name, role, status}]} (no password)
            return 200, {"accountId": 1001, "users": [dict(u) for u in self.users.values()]}
        if route == "/acl/roles" and method == "GET":
            return 200, {"accountId": 1001, "roles": [self._role_view(r) for r in self.roles.values()]}
        if route == "/acl/redisRules" and method == "GET":
            return 200, {"accountId": 1001, "redisRules": [dict(r) for r in self.rules.values()]}
        m = re.fullmatch(r"/subscriptions/(\d+)/databases/(\d+)", route)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            if key not in self.databases:
                return _error(404, "The resource you were trying to reach was not found or does not exist")
            if method == "GET":
                db = self.databases[key]
                security = {k: v for k, v in db["security"].items() if k != "password" or self.shows_password}
                return 200, {**db, "security": security}
            if method == "PUT":
                return self._submit("updateDatabase", self._update_database, key, body or {})
        writes = {
            ("POST", "/acl/users"): ("createUser", self._create_user),
            ("POST", "/acl/roles"): ("createRole", self._create_role),
            ("POST", "/acl/redisRules"): ("createRedisRule", self._create_rule),
        }
        if (method, route) in writes:
            command, fn = writes[(method, route)]
            return self._submit(command, fn, None, body or {})
        m = re.fullmatch(r"/acl/(users|roles|redisRules)/(\d+)", route)
        if m and method in ("PUT", "DELETE"):
            kind, rid = m.group(1), int(m.group(2))
            table = {"users": self.users, "roles": self.roles, "redisRules": self.rules}[kind]
            if rid not in table:
                return _error(404, "The resource you were trying to reach was not found or does not exist")
            verb = "update" if method == "PUT" else "delete"
            noun = {"users": "User", "roles": "Role", "redisRules": "RedisRule"}[kind]
            fn = getattr(self, f"_{verb}_{kind.lower()}")
            return self._submit(f"{verb}{noun}", fn, rid, body or {})
        return _error(404, "The resource you were trying to reach was not found or does not exist")

    def _role_view(self, r: dict) -> dict:
        # [openapi] AccountACLRoles example: redisRules [{ruleId, ruleName, databases: [{subscriptionId, databaseId, databaseName}]}], users
        return {
            **r,
            "redisRules": [
                {**e, "ruleId": (self.rule_by_name(e["ruleName"]) or {}).get("id"), "databases": [dict(d) for d in e["databases"]]}
                for e in r["redisRules"]
            ],
            "users": [{"id": u["id"], "name": u["name"]} for u in self.users.values() if u["role"] == r["name"]],
        }

    # -- tasks ----------------------------------------------------------------------------------

    def _submit(self, command: str, fn: Any, target: Any, body: dict) -> tuple[int, Any]:
        # [lifecycle] POST/PUT/DELETE run asynchronously: the answer is a TaskStateUpdate with a
        # taskId; the work happens when the task is processed. [openapi] 202 Accepted for creates.
        task_id = str(uuid.uuid4())
        task = {
            "taskId": task_id,
            "commandType": command,
            "status": "received",
            "description": "Task request received and is being queued for processing.",
            "timestamp": _now(),
            "links": [],
        }
        self.tasks[task_id] = task
        self.queue.append((task_id, fn, target, body))
        return (202 if command.startswith("create") else 200), dict(task)

    def _tick(self) -> None:
        """Advance the head task one state. [lifecycle] one operation processed at a time per account;
        the others wait in `received`."""
        if not self.queue:
            return
        task_id, fn, target, body = self.queue[0]
        task = self.tasks[task_id]
        if task["status"] == "received":
            task["status"] = "processing-in-progress"
            return
        if self.hold:
            return
        self.queue.popleft()
        failure = next((f for f in self.task_failures if f[0] == task["commandType"]), None)
        table = TASK_KIND.get(task["commandType"])
        before = self._view(table, target) if table and target is not None else None
        try:
            if failure is not None:
                self.task_failures.remove(failure)
                raise TaskError(failure[1], failure[2])
            resource = fn(target, body) if target is not None else fn(body)
        except TaskError as exc:
            # [lifecycle] processing-error: "A detailed cause or reason is included";
            # [openapi] ProcessorResponse {error (enum), additionalInfo}.
            task.update(status="processing-error", description="Task request failed during processing. See error information for failure details.",
                        response={"error": exc.code, "additionalInfo": exc.info})
            return
        if table:
            # [lifecycle] "processing-completed - Request processing succeeded and the request is
            # being provisioned (or de-provisioned...)": the resource is pending (deleting) until active (gone).
            self._provision(table, target if target is not None else resource, before, deleting=task["commandType"].startswith("delete"))
        # [lifecycle] processing-completed with a response holding the resourceId.
        task.update(status="processing-completed", description="Request processing completed successfully", response={"resourceId": resource})
        self._snapshot(time.monotonic())

    # -- ACL redis rules [openapi] createRedisRule / updateRedisRule / deleteRedisRule ------------

    def _check_pattern(self, pattern: Any) -> None:
        if not isinstance(pattern, str) or not pattern.strip():
            raise TaskError("ACL_REDIS_RULE_PATTERN_IS_MISSING")
        # Permission rules only: passwords and on/off belong to users (this fake's judgement of
        # ACL_REDIS_RULE_PATTERN_NOT_VALID).
        for word in pattern.split():
            if word in ("on", "off", "nopass", "resetpass", "reset") or word[0] in "><#!":
                raise TaskError("ACL_REDIS_RULE_PATTERN_NOT_VALID", f"'{word}' is not a permission rule")

    def _create_rule(self, body: dict) -> int:
        name = body.get("name")
        if not name:
            raise TaskError("ACL_REDIS_RULE_NAME_IS_MISSING")
        if self.rule_by_name(name):
            raise TaskError("ACL_REDIS_RULE_NAME_ALREADY_EXISTS")
        self._check_pattern(body.get("redisRule"))
        rid = next(self._ids)
        # GET shows the pattern as `acl` [openapi AccountACLRedisRules]; `status` [go-api] (set by _provision)
        self.rules[rid] = {"id": rid, "name": name, "acl": body["redisRule"], "isDefault": False, "status": PENDING}
        return rid

    def _update_redisrules(self, rid: int, body: dict) -> int:
        rule = self.rules[rid]
        if rule["status"] == DELETING:
            raise TaskError("ACL_REDIS_RULE_NOT_FOUND")
        if rule["isDefault"]:
            raise TaskError("ACL_REDIS_RULE_CANNOT_UPDATE_DEFAULT")
        self._check_pattern(body.get("redisRule", rule["acl"]))
        new_name = body.get("name", rule["name"])
        if new_name != rule["name"]:
            if self.rule_by_name(new_name):
                raise TaskError("ACL_REDIS_RULE_NAME_ALREADY_EXISTS")
            for r in self.roles.values():
                for e in r["redisRules"]:
                    if e["ruleName"] == rule["name"]:
                        e["ruleName"] = new_name
        rule.update(name=new_name, acl=body.get("redisRule", rule["acl"]))
        return rid

    def _delete_redisrules(self, rid: int, body: dict) -> int:
        rule = self.rules[rid]
        if rule["status"] == DELETING:
            raise TaskError("ACL_REDIS_RULE_NOT_FOUND")
        if rule["isDefault"]:
            raise TaskError("ACL_REDIS_RULE_CANNOT_DELETE_DEFAULT")
        # Roles still being deleted count: they name the rule until they are gone.
        if any(e["ruleName"] == rule["name"] for r in self.roles.values() for e in r["redisRules"]):
            raise TaskError("ACL_REDIS_RULE_CANNOT_DELETE_WHEN_ASSOCIATED_WITH_ROLES")
        return rid  # deleting until gone (_provision)

    # -- ACL roles [openapi] createRole / updateRole / deleteRole ----------------------------------

    def _check_role_rules(self, entries: Any) -> list[dict]:
        if not isinstance(entries, list) or not entries:
            raise TaskError("ACL_ROLE_REDIS_RULES_IS_MISSING")
        seen: set[tuple[int, int]] = set()
        out = []
        for e in entries:
            rule = self.rule_by_name(e.get("ruleName", ""))
            if not rule:
                raise TaskError("ACL_REDIS_RULE_DOES_NOT_EXISTS", str(e.get("ruleName")))
            # [openapi] ACL_REDIS_RULE_NOT_ACTIVE: a role may name only a provisioned rule.
            if rule["status"] != ACTIVE:
                raise TaskError("ACL_REDIS_RULE_NOT_ACTIVE", f"{rule['name']} is {rule['status']}")
            dbs = e.get("databases")
            if not isinstance(dbs, list) or not dbs:
                raise TaskError("ACL_ROLE_REDIS_RULES_DATABASES_SPEC_IS_MISSING")
            kept = []
            for d in dbs:
                if "subscriptionId" not in d:
                    raise TaskError("ACL_ROLE_REDIS_RULES_DATABASES_SUBSCRIPTION_ID_IS_MISSING")
                if "databaseId" not in d:
                    raise TaskError("ACL_ROLE_REDIS_RULES_DATABASES_DATABASE_ID_IS_MISSING")
                key = (d["subscriptionId"], d["databaseId"])
                if key not in self.databases:
                    raise TaskError("DATABASE_NOT_FOUND", f"database {key[1]} in subscription {key[0]}")
                if key in seen:
                    raise TaskError("ACL_ROLE_REDIS_RULE_MUST_BE_DEFINED_ONLY_ONCE_PER_DATABASE")
                seen.add(key)
                kept.append({"subscriptionId": key[0], "databaseId": key[1], "databaseName": self.databases[key]["name"]})
            out.append({"ruleName": e["ruleName"], "databases": kept})
        return out

    def _create_role(self, body: dict) -> int:
        name = body.get("name")
        if not name:
            raise TaskError("ACL_ROLE_NAME_IS_MISSING")
        if self.role_by_name(name):
            raise TaskError("ACL_ROLE_NAME_ALREADY_EXISTS")
        entries = self._check_role_rules(body.get("redisRules"))
        rid = next(self._ids)
        self.roles[rid] = {"id": rid, "name": name, "redisRules": entries, "status": PENDING}
        return rid

    def _update_roles(self, rid: int, body: dict) -> int:
        role = self.roles[rid]
        if role["status"] == DELETING:
            raise TaskError("ACL_ROLE_NOT_FOUND")
        if role["status"] == PENDING:
            raise TaskError("ACL_ROLE_IS_IN_PENDING_STATUS_AND_CANNOT_BE_UPDATED")  # [openapi]
        if "redisRules" in body:
            role["redisRules"] = self._check_role_rules(body["redisRules"])
        if "name" in body and body["name"] != role["name"]:
            if self.role_by_name(body["name"]):
                raise TaskError("ACL_ROLE_NAME_ALREADY_EXISTS")
            for u in self.users.values():
                if u["role"] == role["name"]:
                    u["role"] = body["name"]
            role["name"] = body["name"]
        return rid

    def _delete_roles(self, rid: int, body: dict) -> int:
        role = self.roles[rid]
        if role["status"] == DELETING:
            raise TaskError("ACL_ROLE_NOT_FOUND")
        if role["status"] == PENDING:
            raise TaskError("ACL_ROLE_IS_IN_PENDING_STATUS_AND_CANNOT_BE_DELETED")  # [openapi]
        # [openapi] ACL_ROLE_HAS_ACTIVE_USERS_AND_CANNOT_BE_DELETED: users still being deleted count
        # (they hold the role until they are gone).
        if any(u["role"] == role["name"] for u in self.users.values()):
            raise TaskError("ACL_ROLE_HAS_ACTIVE_USERS_AND_CANNOT_BE_DELETED")
        return rid  # deleting until gone (_provision)

    def _check_user_role(self, name: Any) -> None:
        role = self.role_by_name(name or "")
        if not role:
            raise TaskError("ACL_ROLE_DOES_NOT_EXISTS", str(name))
        if role["status"] != ACTIVE:
            # The reference names no error for a user given a role still provisioning; this fake
            # refuses it (its own code), the strict reading of "not available until both phases
            # are complete" [lifecycle].
            raise TaskError("ACL_ROLE_NOT_ACTIVE", f"{role['name']} is {role['status']} (this fake's code)")

    # -- ACL users [openapi] createUser {name, role, password} / updateUser_1 {role?, password?} ---

    def _check_password(self, password: Any) -> None:
        if not password:
            raise TaskError("ACL_USER_PASSWORD_IS_MISSING")
        if not complex_enough(password):
            raise TaskError("ACL_USER_PASSWORD_NOT_VALID", "8 to 128 characters with upper, lower, digit and special characters")

    def _create_user(self, body: dict) -> int:
        name = body.get("name")
        if not name:
            raise TaskError("ACL_USER_NAME_IS_MISSING")
        if self.by_name(name) or name == "default":  # a user still being deleted holds its name
            raise TaskError("ACL_USER_NAME_ALREADY_EXISTS")
        self._check_user_role(body.get("role"))
        self._check_password(body.get("password"))
        uid = next(self._ids)
        # A user has one role and one password [openapi AclUserCreateRequest].
        self.users[uid] = {"id": uid, "name": name, "role": body["role"], "status": PENDING}
        self.passwords[uid] = body["password"]
        return uid

    def _update_users(self, uid: int, body: dict) -> int:
        if self.users[uid]["status"] == DELETING:
            raise TaskError("ACL_USER_NOT_FOUND")
        if "role" in body:
            self._check_user_role(body["role"])
        if "password" in body:
            self._check_password(body["password"])
            self.passwords[uid] = body["password"]  # replaces the one password
        if "role" in body:
            self.users[uid]["role"] = body["role"]
        return uid

    def _delete_users(self, uid: int, body: dict) -> int:
        if self.users[uid]["status"] == DELETING:
            raise TaskError("ACL_USER_NOT_FOUND")
        return uid  # deleting until gone (_provision)

    # -- databases [openapi] updateDatabase (PUT; no PATCH) ----------------------------------------

    def _update_database(self, key: tuple[int, int], body: dict) -> int:
        # [openapi] DATABASE_IS_NOT_ACTIVE (the reference lists it without naming the operation;
        # this fake answers it to an update while a previous one is still provisioning).
        # [terraform] WaitForDatabaseToBeActive before every update.
        if self.databases[key]["status"] != ACTIVE:
            raise TaskError("DATABASE_IS_NOT_ACTIVE", f"database {key[1]} is {self.databases[key]['status']}")
        sec = self.databases[key]["security"]
        if "password" in body:
            # [openapi] DISABLING_THE_DEFAULT_USER_AND_UPDATING_A_NEW_PASSWORD_IS_NOT_ALLOWED,
            # NOT_ALLOWED_TO_UPDATE_A_DATABASE_PASSWORD_WHEN_DEFAULT_USER_IS_DISABLED
            if body.get("enableDefaultUser") is False:
                raise TaskError("DISABLING_THE_DEFAULT_USER_AND_UPDATING_A_NEW_PASSWORD_IS_NOT_ALLOWED")
            if not sec["enableDefaultUser"] and body.get("enableDefaultUser") is not True:
                raise TaskError("NOT_ALLOWED_TO_UPDATE_A_DATABASE_PASSWORD_WHEN_DEFAULT_USER_IS_DISABLED")
            if not body["password"]:
                raise TaskError("DATABASE_PASSWORD_IS_BLANK")
            if len(body["password"]) >= 50:  # [default] "less than 50 characters long"
                raise TaskError("DATABASE_PASSWORD_IS_TOO_LONG")
        certs = self.client_certs[key]
        enable_tls = body.get("enableTls", sec["enableTls"])
        if "clientTlsCertificates" in body:
            pems = []
            for c in body["clientTlsCertificates"]:
                pem = (c or {}).get("publicCertificatePEMString")
                if not pem:
                    raise TaskError("DATABASE_MISSING_CERT")
                try:
                    cert = x509.load_pem_x509_certificate(pem.encode())
                except ValueError:
                    raise TaskError("DATABASE_INVALID_CERT") from None
                if cert.not_valid_after_utc < datetime.now(UTC):
                    raise TaskError("DATABASE_EXPIRED_CERT")
                pems.append(pem)
            # [openapi] "If set to an empty list, TLS client certificates will be removed and mTLS will not be required."
            if pems and not enable_tls:
                raise TaskError("CLIENT_SSL_CERTIFICATE_IS_NOT_ALLOWED_WITHOUT_ENABLE_TLS_IS_TRUE")
            certs = pems
        if body.get("enableTls") is False:
            # [openapi] enableTls: "If enableTls is set to 'false' while mTLS is required, it will remove
            # the mTLS requirement and erase previously provided clientTlsCertificates."
            certs = []
        self.client_certs[key] = list(certs)
        sec["enableTls"] = bool(enable_tls)
        sec["tlsClientAuthentication"] = bool(certs)
        if "enableDefaultUser" in body:
            sec["enableDefaultUser"] = bool(body["enableDefaultUser"])
        if "password" in body:
            sec["password"] = body["password"]
        return key[1]
