"""A loopback HTTPS server implementing the parts of the Redis Software REST API the
`redis-software` provider uses, and enforcing the documented rules it depends on.

Every rule below cites the page it encodes (https://redis.io/docs/latest/operate/rs/...,
references/rest-api/ unless said otherwise) and the version it holds for. Where the docs name no
error code, the code here is this fake's own and says so.

Two modes, chosen by `version` (a node's software_version), as the password requests differ:
  "7.4.6-77"    requests/users/password (7.4): POST and PUT take username + old_password; the
                old password must be one the user has.
  "7.22.0-216"  requests/users/password (current): an admin names the user with `username` and
                needs no old password (old_password is ignored on POST/PUT).
  7.8.2 .. 7.8.6-118 and 7.22.0 builds before 216 (release notes, RS161290): the requests change
                the caller's passwords whatever `username` says -- reproduced, so refusing them
                can be tested.
Certificate users (auth_method: certificate, certificate_subject_line) and the cluster's
mtls_certificate_authentication exist from 7.8.4 (release notes 7.8.4-18, "Certificate-based
authentication"); older versions refuse them (400; the error code is this fake's own).
`timeline` records every change of a user's (or the database's default user's) password set,
so tests can assert no moment left an app without a valid credential. A database update is an
action (requests/bdbs PUT, requests/actions) that runs `action_seconds` (the provisioning knob);
its roles_permissions take effect when it completes, and `rules_of`/`can_auth` answer for any
moment from that history.

Also `Loopback`, the threaded TLS HTTP server both contract fakes run on (certificates from
tests/servers.py's throwaway CA), with fault injection: `fail(...)` answers a request with a
status, `stall(...)` delays it past the client's timeout.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from servers import tls_material

Handler = Callable[[str, str, Any, dict[str, str]], tuple[int, Any]]


@dataclass
class Fault:
    method: str
    path: str  # prefix
    status: int = 0  # 0: no status, only `delay`
    times: int = 1
    delay: float = 0.0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Loopback:
    """http.server in a thread, TLS with the test CA, JSON in and out, faults on request."""

    def __init__(self, handle: Handler, *, tls: bool = True):
        self.handle = handle
        self.tls = tls
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, Any]] = []  # (method, path, body) of every request
        self.times: list[float] = []  # time.monotonic() of every request, in log order
        self._lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without TCP_NODELAY, Nagle and the client's
                # delayed ACK add ~40 ms to every request on loopback.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    self._send(400, {"error_code": "bad_json", "message": "body is not JSON"})
                    return
                method, path = self.command, self.path
                with outer._lock:
                    outer.log.append((method, path, body))
                    outer.times.append(time.monotonic())
                    fault = next((f for f in outer.faults if f.method == method and path.startswith(f.path) and f.times > 0), None)
                    if fault is not None:
                        fault.times -= 1
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.status:
                        self._send(fault.status, fault.body if fault.body is not None else {"error_code": "injected", "message": "injected fault"}, fault.headers)
                        return
                with outer._lock:
                    answer = outer.handle(method, path, body, dict(self.headers))
                self._send(*answer)  # (status, body) or (status, body, extra headers)

            def _send(self, status: int, out: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if out is None else json.dumps(out).encode()
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client gave up (a stalled request)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        if tls:
            mat = tls_material()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(mat.server_cert), str(mat.server_key))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.ca_file = str(mat.ca_file)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, method: str, path: str, status: int, times: int = 1, body: Any = None, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, status, times, body=body, headers=dict(headers or {})))

    def stall(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, 0, times, delay=seconds))

    def requests(self, method: str | None = None, path: str | None = None) -> list[tuple[str, str, Any]]:
        with self._lock:
            return [r for r in self.log if (method is None or r[0] == method) and (path is None or r[1].startswith(path))]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _err(status: int, code: str, message: str) -> tuple[int, Any]:
    # rest-api/#response-types-and-error-codes: errors may carry a JSON object with error_code and message.
    return status, {"error_code": code, "message": message}


def _version(text: str) -> tuple[int, int, int, int]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?", text)
    assert m, text
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0))


def complex_enough(password: str, email: str, min_length: int = 8) -> bool:
    """security/access-control/manage-passwords/password-complexity-rules (7.4, 7.8, 7.22): at least
    8 characters (min_length is configurable from 7.8), an upper-case letter, a lower-case letter, a
    digit and a special character; must not contain the user's email or its reverse; no character
    repeated more than three times in a row."""
    low = password.lower()
    email = email.lower()
    return (
        len(password) >= min_length
        and re.search(r"[A-Z]", password) is not None
        and re.search(r"[a-z]", password) is not None
        and re.search(r"[0-9]", password) is not None
        and re.search(r"[^A-Za-z0-9]", password) is not None
        and not (email and (email in low or email[::-1] in low))
        and re.search(r"(.)\1\1\1", password) is None
    )


def rfc2253(subject: str) -> str:
    """How the service stores certificate_subject_line (objects/user: RFC 2253): no spaces around
    the separators. Escaped separators are kept."""
    parts, buf, i = [], "", 0
    while i < len(subject):
        if subject[i] == "\\" and i + 1 < len(subject):
            buf += subject[i:i + 2]
            i += 2
            continue
        if subject[i] == ",":
            parts.append(buf)
            buf = ""
        else:
            buf += subject[i]
        i += 1
    parts.append(buf)
    return ",".join(k.strip() + "=" + v.strip() for k, v in (p.split("=", 1) for p in parts))


@dataclass
class FakeRedisSoftware:
    admin: tuple[str, str] = ("admin@example.com", "Admin-Secret-1!")
    password_complexity: bool = True
    version: str = "7.22.0-216"  # a node's software_version: chooses the password API (module docstring)
    redis_version: str = "7.4.0"
    tls: bool = True
    action_seconds: float = 0.05  # how long a database update stays active-change-pending
    action_outcome: str = "completed"  # objects/action: how a database update's action ends (completed, failed, aborted, ...)
    users: dict[int, dict] = field(default_factory=dict)
    # objects/cluster: mTLS settings for certificate-based authentication
    cluster: dict[str, Any] = field(
        default_factory=lambda: {"name": "cluster.local", "mtls_certificate_authentication": False,
                                 "mtls_client_cert_subject_validation_type": "disabled"}
    )
    # requests/cluster/certificates (7.4, 7.22): a flat object, one key per certificate.
    certificates: dict[str, str] = field(
        default_factory=lambda: {"api_cert": "-----BEGIN CERTIFICATE-----...", "proxy_cert": "-----BEGIN CERTIFICATE-----...",
                                 "mtls_trusted_ca_cert": "-----BEGIN CERTIFICATE-----..."}
    )
    passwords: dict[int, list[str]] = field(default_factory=dict)  # uid -> plaintexts (never returned)
    roles: dict[int, dict] = field(default_factory=dict)
    acls: dict[int, dict] = field(default_factory=dict)
    bdbs: dict[int, dict] = field(default_factory=dict)
    bdb_passwords: dict[int, list[str]] = field(default_factory=dict)  # the default user's, per database
    actions: dict[str, dict] = field(default_factory=dict)
    timeline: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (user, passwords after a change)
    bindings: list[tuple[float, int, list]] = field(default_factory=list)  # (from when, bdb, roles_permissions in effect)
    _next: int = 100

    def __post_init__(self) -> None:
        # objects/bdb: tls_mode and enforce_client_authentication are what mTLS clients need.
        self.bdbs[1] = {"uid": 1, "name": "db1", "version": self.redis_version, "status": "active", "roles_permissions": [],
                        "tls_mode": "enabled", "enforce_client_authentication": "enabled", "default_user": True}
        self.bdb_passwords[1] = ["Default-Pass-1!"]
        self._add_user("admin", self.admin[0], [self.roles_builtin("Admin", "admin")], [self.admin[1]])
        # redis-acl-overview: the predefined "Full Access" ACL.
        self.acls[1] = {"uid": 1, "name": "Full Access", "acl": "+@all ~*"}
        self.http = Loopback(self.handle, tls=self.tls)
        self.url = self.http.url
        self.ca_file = getattr(self.http, "ca_file", None)

    @property
    def legacy(self) -> bool:
        """7.4: the password requests need old_password (requests/users/password, 7.4)."""
        return _version(self.version) < (7, 8, 0, 0)

    @property
    def certificate_users(self) -> bool:
        """Release notes 7.8.4-18: certificate-based authentication (auth_method: certificate)."""
        return _version(self.version) >= (7, 8, 4, 0)

    @property
    def wrong_user(self) -> bool:
        """RS161290 (release notes 7.8.6-119, 7.22.0-216): the caller's passwords change instead."""
        v = _version(self.version)
        return (7, 8, 2, 0) <= v < (7, 8, 6, 119) or (7, 22, 0, 0) <= v < (7, 22, 0, 216)

    # -- helpers ----------------------------------------------------------------------------

    def uid(self) -> int:
        self._next += 1
        return self._next

    def roles_builtin(self, name: str, management: str) -> int:
        uid = self.uid()
        self.roles[uid] = {"uid": uid, "name": name, "management": management}
        return uid

    def _add_user(self, name: str, email: str, role_uids: list[int], passwords: list[str], **extra: Any) -> dict:
        uid = self.uid()
        self.users[uid] = {
            "uid": uid,
            "name": name,
            "email": email,
            "auth_method": "regular",
            "role_uids": role_uids,
            "password_issue_date": _now(),
            "status": "active",
            **extra,
        }
        self._set(uid, list(passwords))
        return self.users[uid]

    def _set(self, uid: int, passwords: list[str]) -> None:
        self.passwords[uid] = passwords
        self.users[uid]["password_issue_date"] = _now()
        self.timeline.append((self.users[uid]["name"], tuple(passwords)))

    def _set_default(self, db: int, passwords: list[str]) -> None:
        self.bdb_passwords[db] = passwords
        self.timeline.append(("default", tuple(passwords)))

    def history(self, user: str) -> list[tuple[str, ...]]:
        return [p for u, p in self.timeline if u == user]

    def by_name(self, name: str) -> dict | None:
        return next((u for u in self.users.values() if u["name"] == name), None)

    def password_count(self, name: str) -> int:
        u = self.by_name(name)
        return len(self.passwords[u["uid"]]) if u else 0

    def has_password(self, name: str, plaintext: str) -> bool:
        u = self.by_name(name)
        return u is not None and plaintext in self.passwords[u["uid"]]

    def stop(self) -> None:
        self.http.stop()

    # -- the API ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        # rest-api/#authentication: Basic Auth; a wrong or missing password is 401 Unauthorized.
        auth = headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{self.admin[0]}:{self.admin[1]}".encode()).decode()
        if auth != expected:
            return _err(401, "unauthorized", "the user is unauthorized")
        self._settle()
        route = path.split("?")[0].rstrip("/")
        m = re.fullmatch(r"/v1/(\w+)(?:/(\d+|password|certificates|[\w-]+))?(?:/(passwords))?", route)
        if not m:
            return _err(404, "not_found", "no such endpoint")
        kind, item, sub = m.group(1), m.group(2), m.group(3)
        if kind == "actions" and item and method == "GET":
            return self.get_action(item)
        numeric = item is not None and item.isdigit()
        suffix = ("_one" if numeric else f"_{item}" if item else "") + (f"_{sub}" if sub else "")
        fn = getattr(self, f"{method.lower()}_{kind}{suffix}", None)
        if fn is None:
            return _err(405, "method_not_allowed", f"{method} {route}")
        return fn(body or {}, int(item)) if numeric else fn(body or {})

    def _public(self, u: dict) -> dict:
        return dict(u)  # objects/user: passwords are never returned

    # nodes (requests/nodes, objects/node: software_version)
    def get_nodes(self, body: Any) -> tuple[int, Any]:
        return 200, [{"uid": 1, "addr": "127.0.0.1", "software_version": self.version, "status": "active"}]

    # actions (requests/actions, objects/action: status ... 'completed')
    def get_action(self, uid: str) -> tuple[int, Any]:
        if uid not in self.actions:
            return _err(404, "action_not_exist", "action does not exist")
        return 200, dict(self.actions[uid])

    def _settle(self) -> None:
        now = time.monotonic()
        for action in self.actions.values():
            if action["status"] == "running" and now >= action["_until"]:
                # objects/action: running -> completed | failed | aborted | cancelling -> cancelled
                action["status"], action["progress"] = self.action_outcome, 100
                self.bdbs[action["bdb"]]["status"] = "active"

    # users (requests/users)
    def get_users(self, body: Any) -> tuple[int, Any]:
        return 200, [self._public(u) for u in self.users.values()]

    def get_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        return (200, self._public(self.users[uid])) if uid in self.users else _err(404, "user_not_exist", "user does not exist")

    def post_users(self, body: Any) -> tuple[int, Any]:
        name = body.get("name")
        if not name:
            return _err(400, "invalid_schema", "name is required")
        # objects/user: name "pattern does not allow non-ASCII and special characters &,<,>,\"".
        if re.search(r'[&<>"]|[^\x20-\x7e]', name):
            return _err(400, "invalid_schema", "name has characters the pattern does not allow")
        # requests/users POST: 409 Conflict when a user with the same email/name exists.
        if self.by_name(name) or any(u["email"] == body.get("email") for u in self.users.values()):
            return _err(409, "user_exists", "a user with the same name or email already exists")
        for r in body.get("role_uids") or []:
            if r not in self.roles:
                return _err(400, "invalid_role", f"role {r} does not exist")
        method = body.get("auth_method", "regular")
        email = body.get("email") or f"{name}@invalid"
        if method == "certificate" and not self.certificate_users:
            return _err(400, "invalid_schema", "auth_method: certificate is not supported (before 7.8.4)")  # this fake's code
        if method == "certificate":
            # objects/user: certificate_subject_line is used for certificate-based authentication users only;
            # such users have no password.
            if not body.get("certificate_subject_line") or body.get("password"):
                return _err(400, "invalid_schema", "certificate users need certificate_subject_line and no password")
            passwords: list[str] = []
        else:
            password = body.get("password")
            if not password:
                return _err(400, "invalid_schema", "password is required")
            if self.password_complexity and not complex_enough(password, email):
                return _err(400, "password_not_complex", "the given password is not complex enough")
            passwords = [password]
        extra = {"auth_method": method}
        if method == "certificate":
            extra["certificate_subject_line"] = rfc2253(body["certificate_subject_line"])
        u = self._add_user(name, email, list(body.get("role_uids") or []), passwords, **extra)
        return 200, self._public(u)

    def put_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.users:
            return _err(404, "user_not_exist", "user does not exist")
        if (body.get("auth_method") == "certificate" or "certificate_subject_line" in body) and not self.certificate_users:
            return _err(400, "invalid_schema", "auth_method: certificate is not supported (before 7.8.4)")  # this fake's code
        u = self.users[uid]
        if "password" in body:
            # objects/user: password (writable): setting it replaces the user's passwords.
            if self.password_complexity and not complex_enough(body["password"], u["email"]):
                return _err(400, "password_not_complex", "the given password is not complex enough")
            self._set(uid, [body["password"]])
        for key in ("role_uids", "auth_method", "email"):
            if key in body:
                u[key] = body[key]
        if "certificate_subject_line" in body:
            u["certificate_subject_line"] = rfc2253(body["certificate_subject_line"])
        return 200, self._public(u)

    def delete_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.users:
            return _err(404, "user_not_exist", "user does not exist")
        self.timeline.append((self.users[uid]["name"], ()))
        del self.users[uid]
        del self.passwords[uid]
        return 200, None

    # passwords (requests/users/password)
    def _password_target(self, body: Any, *, need_old: bool) -> tuple[dict | None, tuple[int, Any] | None]:
        if self.wrong_user:
            # RS161290 (7.8.2 .. 7.8.6-118, 7.22.0 < 216): the authenticated caller's passwords change.
            return self.by_name("admin"), None
        if self.legacy:
            # requests/users/password (7.4): username and old_password are required.
            missing = [k for k in ("username", "old_password") if (k == "username" or need_old) and not body.get(k)]
            if missing:
                return None, _err(400, "missing_field", f"missing field: {missing[0]}")
        # requests/users/password (current): username names the affected user; without it, the caller.
        u = self.by_name(body.get("username") or "admin")
        if u is None:
            return None, _err(404, "user_not_exist", "user does not exist")
        if self.legacy and need_old and body.get("old_password") not in self.passwords[u["uid"]]:
            # requests/users/password (7.4): old_password must be an existing password (error code: this fake's).
            return None, _err(400, "password_mismatch", "old_password is not one of the user's passwords")
        return u, None

    def post_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body, need_old=True)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        new = body.get("new_password") or ""
        # requests/users/password POST: new_password_same_as_current.
        if new in pw:
            return _err(400, "new_password_same_as_current", "the new password is identical to an existing one")
        # ... password_not_complex (when the password_complexity feature is enabled).
        if self.password_complexity and not complex_enough(new, u["email"]):
            return _err(400, "password_not_complex", "the given password is not complex enough")
        self._set(u["uid"], pw + [new])
        return 200, None

    def delete_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body, need_old=False)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        old = body.get("old_password")
        if old not in pw:
            return _err(400, "password_mismatch", "old_password is not one of the user's passwords")  # this fake's code
        # requests/users/password DELETE: cannot_delete_last_password.
        if len(pw) == 1:
            return _err(400, "cannot_delete_last_password", "cannot delete the user's last password")
        self._set(u["uid"], [p for p in pw if p != old])
        return 200, None

    def put_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body, need_old=True)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        new = body.get("new_password") or ""
        # requests/users/password PUT error codes: new_password_same_as_current, password_not_complex.
        if new in pw:
            return _err(400, "new_password_same_as_current", "the new password is identical to an existing one")
        if self.password_complexity and not complex_enough(new, u["email"]):
            return _err(400, "password_not_complex", "the given password is not complex enough")
        # PUT "replaces the password list of the specified user with a single new password".
        self._set(u["uid"], [new])
        return 200, None

    # cluster (requests/cluster, requests/cluster/certificates)
    def get_cluster(self, body: Any) -> tuple[int, Any]:
        if not self.certificate_users:  # the mTLS settings came with 7.8.4 (release notes 7.8.4-18)
            return 200, {k: v for k, v in self.cluster.items() if not k.startswith("mtls_")}
        return 200, dict(self.cluster)

    def put_cluster(self, body: Any) -> tuple[int, Any]:
        if any(k.startswith("mtls_") for k in body) and not self.certificate_users:
            return _err(400, "invalid_schema", "unknown field mtls_certificate_authentication (before 7.8.4)")  # this fake's code
        for key in ("mtls_certificate_authentication", "mtls_client_cert_subject_validation_type"):
            if key in body:
                self.cluster[key] = body[key]
        return 200, dict(self.cluster)

    def get_cluster_certificates(self, body: Any) -> tuple[int, Any]:
        return 200, dict(self.certificates)

    # roles (requests/roles)
    def get_roles(self, body: Any) -> tuple[int, Any]:
        return 200, list(self.roles.values())

    def post_roles(self, body: Any) -> tuple[int, Any]:
        if any(r["name"] == body.get("name") for r in self.roles.values()):
            return _err(409, "role_exists", "a role with the same name already exists")
        uid = self.uid()
        self.roles[uid] = {"uid": uid, "name": body["name"], "management": body.get("management", "none")}
        return 200, self.roles[uid]

    def delete_roles_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.roles:
            return _err(404, "role_not_found", "role does not exist")
        # a role still used by a database's roles_permissions can't be deleted (this fake's code)
        if any(p["role_uid"] == uid for b in self.bdbs.values() for p in b["roles_permissions"]):
            return _err(409, "role_in_use", "role is used by a database")
        del self.roles[uid]
        for u in self.users.values():
            u["role_uids"] = [r for r in u["role_uids"] if r != uid]
        return 200, None

    # redis ACLs (requests/redis_acls)
    def get_redis_acls(self, body: Any) -> tuple[int, Any]:
        return 200, list(self.acls.values())

    def _acl_problem(self, rule: str) -> str | None:
        """redis-acl-overview (7.4, 7.22): a Redis ACL holds permissions only -- no passwords
        (`>` `<` `#` `!`), no resetpass; selectors are not nested and patterns hold no parentheses."""
        depth = 0
        for word in rule.split():
            opened = len(word) - len(word.lstrip("("))
            depth += opened
            if depth > 1:
                return "nested selector"
            core = word[opened:]
            closed = len(core) - len(core.rstrip(")"))
            core = core[: len(core) - closed] if closed else core
            if core[:1] in "<>#!" or core.lower() == "resetpass":
                return f"'{core[:1]}…' is not allowed in a Redis ACL"
            if "(" in core or ")" in core:
                return "parentheses in a pattern"
            depth -= closed
            if depth < 0:
                return "unbalanced selector"
        return "unbalanced selector" if depth else None

    def post_redis_acls(self, body: Any) -> tuple[int, Any]:
        if any(a["name"] == body.get("name") for a in self.acls.values()):
            return _err(409, "redis_acl_exists", "a Redis ACL with the same name already exists")
        problem = self._acl_problem(body.get("acl", ""))
        if problem:
            return _err(400, "invalid_acl", problem)  # error code: this fake's
        uid = self.uid()
        self.acls[uid] = {"uid": uid, "name": body["name"], "acl": body.get("acl", "")}
        return 200, self.acls[uid]

    def put_redis_acls_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.acls:
            return _err(404, "redis_acl_not_found", "Redis ACL does not exist")
        problem = self._acl_problem(body.get("acl", ""))
        if problem:
            return _err(400, "invalid_acl", problem)  # error code: this fake's
        self.acls[uid].update({k: body[k] for k in ("name", "acl") if k in body})
        return 200, self.acls[uid]

    def delete_redis_acls_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.acls:
            return _err(404, "redis_acl_not_found", "Redis ACL does not exist")
        if any(p["redis_acl_uid"] == uid for b in self.bdbs.values() for p in b["roles_permissions"]):
            return _err(409, "redis_acl_in_use", "Redis ACL is used by a database")  # this fake's code
        del self.acls[uid]
        return 200, None

    # databases (requests/bdbs): only roles_permissions is writable here
    def get_bdbs_one(self, body: Any, uid: int) -> tuple[int, Any]:
        return (200, dict(self.bdbs[uid])) if uid in self.bdbs else _err(404, "db_not_exist", "database does not exist")

    def put_bdbs_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.bdbs:
            return _err(404, "db_not_exist", "database does not exist")
        # requests/bdbs PUT (7.4, 7.22): 409 "Database is currently busy with another action. In this
        # case, we should reattempt later" -- while a previous change is active-change-pending.
        if self.bdbs[uid]["status"] != "active":
            return _err(409, "db_busy", "database is busy with another action; reattempt later")
        perms = body.get("roles_permissions", self.bdbs[uid]["roles_permissions"])
        for p in perms:
            if p["role_uid"] not in self.roles or p["redis_acl_uid"] not in self.acls:
                return _err(400, "invalid_roles_permissions", "unknown role or Redis ACL")
        self.bdbs[uid]["roles_permissions"] = list(perms)
        # requests/bdbs PUT: asynchronous; the answer carries an action_uid (requests/actions) and
        # the database is active-change-pending until it completes -- only then do the new
        # roles_permissions hold.
        action = f"action-{self.uid()}"
        until = time.monotonic() + self.action_seconds
        self.actions[action] = {"action_uid": action, "name": "update_bdb", "status": "running", "progress": 0,
                                "bdb": uid, "_until": until}
        if self.action_outcome == "completed":
            self.bindings.append((until, uid, list(perms)))
        self.bdbs[uid]["status"] = "active-change-pending"
        return 200, {**self.bdbs[uid], "action_uid": action}

    # the default user's password (requests/bdbs/passwords, 7.4 and 7.22)
    def put_bdbs_one_passwords(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.bdbs:
            return _err(404, "db_not_exist", "database does not exist")
        if not body.get("password"):
            return _err(406, "invalid_parameters", "password is required")  # 406: invalid configuration parameters
        self._set_default(uid, [body["password"]])  # "Set a single password for the bdb's default user"
        return 200, None

    def post_bdbs_one_passwords(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.bdbs:
            return _err(404, "db_not_exist", "database does not exist")
        if not body.get("password"):
            return _err(406, "invalid_parameters", "password is required")
        self._set_default(uid, self.bdb_passwords[uid] + [body["password"]])  # "Add a password to the bdb's default user"
        return 200, None

    def delete_bdbs_one_passwords(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.bdbs:
            return _err(404, "db_not_exist", "database does not exist")
        if body.get("password") not in self.bdb_passwords[uid]:
            return _err(406, "invalid_parameters", "no such password")
        self._set_default(uid, [p for p in self.bdb_passwords[uid] if p != body["password"]])
        return 200, None

    # what a database user effectively gets (for assertions)
    def rules_of(self, name: str, at: float | None = None) -> str | None:
        """The user's rules on database 1 at `at` (time.monotonic(); default now): the
        roles_permissions of the last database update completed by then."""
        u = self.by_name(name)
        if u is None:
            return None
        moment = time.monotonic() if at is None else at
        perms = next((p for until, db, p in reversed(self.bindings) if db == 1 and until <= moment), [])
        bound = {p["role_uid"]: p["redis_acl_uid"] for p in perms}
        return " ".join(self.acls[bound[r]]["acl"] for r in u["role_uids"] if r in bound)
