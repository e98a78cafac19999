"""A loopback HTTPS server implementing the Memorystore for Valkey v1 REST calls the
`memorystore` provider uses (token-based auth users and their auth tokens), enforcing the
documented behaviour it relies on. References are to the Memorystore v1 REST reference
(https://docs.cloud.google.com/memorystore/docs/valkey/reference/rest/v1/, the proto
google/cloud/memorystore/v1/memorystore.proto with its field_behavior annotations),
https://docs.cloud.google.com/memorystore/docs/valkey/manage-basic-auth, and the Terraform google
provider's memorystore resources; where the docs give no error shape, Google's standard
{"error": {code, message, status}} is used (AIP-193).

Every write is a long-running Operation (google.longrunning.Operation: "If the value is `false`,
it means the operation is still in progress. If `true`, the operation is completed"); its effect
takes hold only when it is done: a new token logs in (state ACTIVE, CREATING before), a deleted
token or user stops working and leaves the lists (DELETING before). An operation is done after
`op_polls` polls and `op_seconds` seconds (the provisioning knob), and records when it was
polled, so tests can check the provider's backoff. `timeline` records, when each change took
effect, the tokens of the user that log in, so tests can assert that no moment left a user
without a token and what held the moment apply returned.
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from fake_redis_software import Loopback

INSTANCE = "projects/acme/locations/us-central1/instances/cache"
TOKEN_AUTH = "TOKEN_AUTH"


def _err(code: int, status: str, message: str) -> tuple[int, Any]:
    return code, {"error": {"code": code, "message": message, "status": status}}


@dataclass
class FakeMemorystore:
    access_token: str = "ya29.test-access-token-0123456789"
    instance: str = INSTANCE
    authorization_mode: str = "AUTH_DISABLED"
    page_size: int = 2  # small, so listing follows nextPageToken
    users: dict[str, dict[str, dict]] = field(default_factory=dict)  # user -> token id -> AuthToken (with value)
    operations: dict[str, dict] = field(default_factory=dict)
    generated: list[str] = field(default_factory=list)  # every token value the service made (for grep tests)
    op_polls: int = 1  # GETs of an operation before it is done
    authorization_mode_mutable: bool = False  # memorystore.proto: authorization_mode is IMMUTABLE
    op_seconds: float = 0.0  # an operation is not done before this many seconds
    timeline: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)  # (time, user, its ACTIVE token ids)
    polls: list[float] = field(default_factory=list)  # time.monotonic() of every operation poll
    _ops: int = 0

    def __post_init__(self) -> None:
        self.http = Loopback(self.handle)
        self.url = self.http.url
        self.ca_file = self.http.ca_file

    def stop(self) -> None:
        self.http.stop()

    def token_value(self, user: str, tid: str) -> str | None:
        t = self.users.get(user, {}).get(tid)
        return t["token"] if t else None

    def _changed(self, user: str) -> None:
        active = tuple(sorted(tid for tid, t in self.users.get(user, {}).items() if t["state"] == "ACTIVE"))
        self.timeline.append((time.monotonic(), user, active))

    def history(self, user: str) -> list[tuple[str, ...]]:
        return [names for _, u, names in self.timeline if u == user]

    def tokens_at(self, user: str, moment: float) -> tuple[str, ...]:
        """The user's tokens that logged in at `moment` (time.monotonic())."""
        return next((names for at, u, names in reversed(self.timeline) if u == user and at <= moment), ())

    def can_auth(self, user: str, value: str) -> bool:
        return any(t["token"] == value and t["state"] == "ACTIVE" for t in self.users.get(user, {}).values())

    # -- operations: every write is a long-running Operation (google.longrunning), done after op_polls polls

    def _op(self, response: Any = None, effect: Callable[[], None] | None = None) -> tuple[int, Any]:
        """An Operation for a write; `effect` is what takes hold when it is done."""
        self._ops += 1
        name = f"{self.instance.rsplit('/instances/', 1)[0]}/operations/op-{self._ops}"
        self.operations[name] = {"name": name, "done": False, "response": response, "_left": self.op_polls,
                                 "_ready": time.monotonic() + self.op_seconds, "_effect": effect}
        return 200, {"name": name, "done": False}

    def _poll(self, name: str) -> dict:
        op = self.operations[name]
        self.polls.append(time.monotonic())
        op["_left"] -= 1
        if op["_left"] <= 0 and time.monotonic() >= op["_ready"] and not op["done"]:
            op["done"] = True
            if op["_effect"] is not None:
                op["_effect"]()
        out = {k: v for k, v in op.items() if not k.startswith("_")}
        if not op["done"]:
            out.pop("response", None)
        return out

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        # Google APIs: a missing/invalid OAuth bearer token is 401 UNAUTHENTICATED.
        if headers.get("Authorization") != f"Bearer {self.access_token}":
            return _err(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        parsed = urllib.parse.urlsplit(path)
        route = urllib.parse.unquote(parsed.path)
        query = urllib.parse.parse_qs(parsed.query)
        if not route.startswith("/v1/"):
            return _err(404, "NOT_FOUND", "unknown API version")
        route = route[len("/v1/"):]
        if route in self.operations and method == "GET":
            return 200, self._poll(route)
        inst = self.instance
        if route == inst:
            if method == "GET":
                return 200, {"name": inst, "authorizationMode": self.authorization_mode, "engineVersion": "VALKEY_8_0", "state": "ACTIVE"}
            if method == "PATCH":
                if query.get("updateMask") != ["authorizationMode"]:
                    return _err(400, "INVALID_ARGUMENT", "updateMask must name authorizationMode")
                # memorystore.proto (v1): authorization_mode is [(google.api.field_behavior) = IMMUTABLE]
                # (ForceNew in the Terraform google provider): an update is refused.
                if not self.authorization_mode_mutable:
                    return _err(400, "INVALID_ARGUMENT", "field authorization_mode is immutable")
                self.authorization_mode = body.get("authorizationMode", "")
                return self._op({"name": inst, "authorizationMode": self.authorization_mode})
        if not route.startswith(inst):
            return _err(404, "NOT_FOUND", "instance not found")
        rest = route[len(inst):]
        if rest == ":addTokenAuthUser" and method == "POST":
            # manage-basic-auth: users are added to an instance with token-based auth enabled.
            if self.authorization_mode != TOKEN_AUTH:
                return _err(400, "FAILED_PRECONDITION", "token-based authentication is not enabled on the instance")
            name = (body or {}).get("tokenAuthUser", "")
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                return _err(400, "INVALID_ARGUMENT", "invalid tokenAuthUser")
            if name in self.users:
                return _err(409, "ALREADY_EXISTS", f"token auth user {name} already exists")
            self.users[name] = {}
            return self._op({"name": f"{inst}/tokenAuthUsers/{name}", "state": "ACTIVE"}, lambda: self._changed(name))
        if rest == "/tokenAuthUsers" and method == "GET":
            names = sorted(self.users)
            start = int(query.get("pageToken", ["0"])[0])
            page = names[start:start + self.page_size]
            out: dict[str, Any] = {"tokenAuthUsers": [{"name": f"{inst}/tokenAuthUsers/{n}", "state": "ACTIVE"} for n in page]}
            if start + self.page_size < len(names):
                out["nextPageToken"] = str(start + self.page_size)
            return 200, out
        m = re.fullmatch(r"/tokenAuthUsers/([^/:]+)(:addAuthToken|/authTokens(?:/([^/]+))?)?", rest)
        if not m:
            return _err(404, "NOT_FOUND", "no such resource")
        user, tail, tid = m.group(1), m.group(2) or "", m.group(3)
        if user not in self.users:
            return _err(404, "NOT_FOUND", f"token auth user {user} not found")
        user_res = f"{inst}/tokenAuthUsers/{user}"
        tokens = self.users[user]
        if tail == "" and method == "DELETE":
            # DeleteTokenAuthUser: a user that still has auth tokens is deleted only with force=true
            # (FAILED_PRECONDITION otherwise).
            if tokens and query.get("force") != ["true"]:
                return _err(400, "FAILED_PRECONDITION", f"token auth user {user} has auth tokens; set force=true")
            for t in tokens.values():
                t["state"] = "DELETING"

            def gone(user: str = user) -> None:
                del self.users[user]
                self._changed(user)

            return self._op(None, gone)
        if tail == ":addAuthToken" and method == "POST":
            spec = (body or {}).get("authToken") or {}
            # AuthToken.token is "Output only": the service generates token values.
            if "token" in spec:
                return _err(400, "INVALID_ARGUMENT", "authToken.token is output only")
            # AuthToken.name is IDENTIFIER: "for Create methods name is optional and unused" -- the
            # service assigns it, whatever the request says.
            tid = f"t-{secrets.token_hex(4)}"
            name = f"{user_res}/authTokens/{tid}"
            value = secrets.token_urlsafe(32)
            self.generated.append(value)
            tokens[tid] = {
                "name": name,
                "token": value,
                "createTime": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "state": "CREATING",
            }

            def active(user: str = user, tid: str = tid) -> None:
                self.users[user][tid]["state"] = "ACTIVE"
                self._changed(user)

            # addAuthToken's operation response is the TokenAuthUser, never the token.
            return self._op({"name": user_res, "state": "ACTIVE"}, active)
        if tail == "/authTokens" and tid is None and method == "GET":
            return 200, {"authTokens": [{k: v for k, v in t.items() if k != "token"} for _, t in sorted(tokens.items())]}
        if tid is not None:
            if tid not in tokens:
                return _err(404, "NOT_FOUND", f"auth token {tid} not found")
            if method == "GET":
                # authTokens.get: the AuthToken with its output-only `token` value (lists omit it here).
                return 200, tokens[tid]
            if method == "DELETE":
                tokens[tid]["state"] = "DELETING"

                def deleted(user: str = user, tid: str = tid) -> None:
                    self.users[user].pop(tid, None)
                    self._changed(user)

                return self._op(None, deleted)
        return _err(405, "METHOD_NOT_ALLOWED", f"{method} {route}")
