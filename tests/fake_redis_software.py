"""A loopback HTTPS server implementing the parts of the Redis Software REST API the
`redis-software` provider uses, and enforcing the documented rules it depends on.

Every rule below cites the page it encodes (https://redis.io/docs/latest/operate/rs/...).
Where the docs name no error code, the code here is this fake's own and says so.

Also `Loopback`, the threaded TLS HTTP server both contract fakes run on (certificates from
tests/servers.py's throwaway CA), with fault injection: `fail(...)` answers a request with a
status, `stall(...)` delays it past the client's timeout.
"""

from __future__ import annotations

import base64
import json
import re
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


class Loopback:
    """http.server in a thread, TLS with the test CA, JSON in and out, faults on request."""

    def __init__(self, handle: Handler, *, tls: bool = True):
        self.handle = handle
        self.tls = tls
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, Any]] = []  # (method, path, body) of every request
        self._lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # quiet
                pass

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
                    fault = next((f for f in outer.faults if f.method == method and path.startswith(f.path) and f.times > 0), None)
                    if fault is not None:
                        fault.times -= 1
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.status:
                        self._send(fault.status, fault.body if fault.body is not None else {"error_code": "injected", "message": "injected fault"})
                        return
                with outer._lock:
                    answer = outer.handle(method, path, body, dict(self.headers))
                self._send(*answer)  # (status, body) or (status, body, extra headers)

            def _send(self, status: int, out: Any, extra: dict[str, str] | None = None) -> None:
                data = b"" if out is None else json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (extra or {}).items():
                        self.send_header(name, value)
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

    def fail(self, method: str, path: str, status: int, times: int = 1, body: Any = None) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, status, times, body=body))

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


def complex_enough(password: str, username: str) -> bool:
    """security/access-control/manage-passwords/password-complexity-rules: at least 8 characters,
    an upper-case letter, a lower-case letter, a digit and a special character; not the username."""
    return (
        len(password) >= 8
        and re.search(r"[A-Z]", password) is not None
        and re.search(r"[a-z]", password) is not None
        and re.search(r"[0-9]", password) is not None
        and re.search(r"[^A-Za-z0-9]", password) is not None
        and username.lower() not in password.lower()
    )


@dataclass
class FakeRedisSoftware:
    admin: tuple[str, str] = ("admin@example.com", "Admin-Secret-1!")
    password_complexity: bool = True
    version: str = "7.4.2"
    tls: bool = True
    users: dict[int, dict] = field(default_factory=dict)
    # objects/cluster: mTLS settings for certificate-based authentication
    cluster: dict[str, Any] = field(
        default_factory=lambda: {"name": "cluster.local", "mtls_certificate_authentication": False,
                                 "mtls_client_cert_subject_validation_type": "disabled"}
    )
    certificates: dict[str, str] = field(default_factory=lambda: {"mtls_trusted_ca": "-----BEGIN CERTIFICATE-----..."})
    passwords: dict[int, list[str]] = field(default_factory=dict)  # uid -> plaintexts (never returned)
    roles: dict[int, dict] = field(default_factory=dict)
    acls: dict[int, dict] = field(default_factory=dict)
    bdbs: dict[int, dict] = field(default_factory=dict)
    _next: int = 100

    def __post_init__(self) -> None:
        self.bdbs[1] = {"uid": 1, "name": "db1", "version": self.version, "roles_permissions": []}
        self._add_user("admin", self.admin[0], [self.roles_builtin("Admin", "admin")], [self.admin[1]])
        # The database's default user is listed like any user here; its password can't be rotated.
        self._add_user("default", "default@db1", [], ["Default-Pass-1!"])
        self.acls[1] = {"uid": 1, "name": "Full Access", "acl": "+@all ~*"}
        self.http = Loopback(self.handle, tls=self.tls)
        self.url = self.http.url
        self.ca_file = getattr(self.http, "ca_file", None)

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
        self.passwords[uid] = list(passwords)
        return self.users[uid]

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
        route = path.split("?")[0].rstrip("/")
        m = re.fullmatch(r"/v1/(\w+)(?:/(\d+|password|certificates))?", route)
        if not m:
            return _err(404, "not_found", "no such endpoint")
        kind, item = m.group(1), m.group(2)
        numeric = item is not None and item.isdigit()
        fn = getattr(self, f"{method.lower()}_{kind}" + ("_one" if numeric else f"_{item}" if item else ""), None)
        if fn is None:
            return _err(405, "method_not_allowed", f"{method} {route}")
        return fn(body, int(item)) if numeric else fn(body)

    def _public(self, u: dict) -> dict:
        return dict(u)  # objects/user: passwords are never returned

    # users (requests/users)
    def get_users(self, body: Any) -> tuple[int, Any]:
        return 200, [self._public(u) for u in self.users.values()]

    def get_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        return (200, self._public(self.users[uid])) if uid in self.users else _err(404, "user_not_exist", "user does not exist")

    def post_users(self, body: Any) -> tuple[int, Any]:
        name = body.get("name")
        if not name:
            return _err(400, "invalid_schema", "name is required")
        # requests/users POST: 409 Conflict when a user with the same email/name exists.
        if self.by_name(name) or any(u["email"] == body.get("email") for u in self.users.values()):
            return _err(409, "user_exists", "a user with the same name or email already exists")
        for r in body.get("role_uids") or []:
            if r not in self.roles:
                return _err(400, "invalid_role", f"role {r} does not exist")
        method = body.get("auth_method", "regular")
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
            if self.password_complexity and not complex_enough(password, name):
                return _err(400, "password_not_complex", "the given password is not complex enough")
            passwords = [password]
        extra = {"auth_method": method}
        if method == "certificate":
            extra["certificate_subject_line"] = body["certificate_subject_line"]
        u = self._add_user(name, body.get("email") or f"{name}@invalid", list(body.get("role_uids") or []), passwords, **extra)
        return 200, self._public(u)

    def put_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.users:
            return _err(404, "user_not_exist", "user does not exist")
        u = self.users[uid]
        if "password" in body:
            return _err(400, "invalid_schema", "use /v1/users/password for passwords")
        for key in ("role_uids", "auth_method", "certificate_subject_line", "email"):
            if key in body:
                u[key] = body[key]
        return 200, self._public(u)

    def delete_users_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.users:
            return _err(404, "user_not_exist", "user does not exist")
        del self.users[uid]
        del self.passwords[uid]
        return 200, None

    # passwords (requests/users/password)
    def _password_target(self, body: Any) -> tuple[dict | None, tuple[int, Any] | None]:
        u = self.by_name((body or {}).get("username", ""))
        if u is None:
            return None, _err(404, "user_not_exist", "user does not exist")
        # manage-passwords/rotate-passwords: "Password rotation does not work for the default user."
        # (error code: this fake's)
        if u["name"] == "default":
            return None, _err(400, "default_user_rotation", "password rotation does not work for the default user")
        return u, None

    def post_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        # requests/users/password POST (7.4): old_password must be an existing password of the user.
        # (error code: this fake's)
        if body.get("old_password") not in pw:
            return _err(400, "password_mismatch", "old_password is not one of the user's passwords")
        new = body.get("new_password") or ""
        # rotate-passwords: "The new password cannot already exist as a password for the user".
        if new in pw:
            return _err(400, "new_password_same_as_current", "the new password is identical to an existing one")
        # ... "and must meet the password complexity requirements, if enabled."
        if self.password_complexity and not complex_enough(new, u["name"]):
            return _err(400, "password_not_complex", "the given password is not complex enough")
        pw.append(new)
        u["password_issue_date"] = _now()
        return 200, None

    def delete_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        old = body.get("old_password")
        if old not in pw:
            return _err(400, "password_mismatch", "old_password is not one of the user's passwords")  # this fake's code
        # rotate-passwords: delete the old password only after adding the new one -- a user never
        # loses its last password this way (error code: this fake's).
        if len(pw) == 1:
            return _err(400, "cannot_delete_last_password", "cannot delete the user's last password")
        pw.remove(old)
        u["password_issue_date"] = _now()
        return 200, None

    def put_users_password(self, body: Any) -> tuple[int, Any]:
        u, error = self._password_target(body)
        if error:
            return error
        assert u is not None
        pw = self.passwords[u["uid"]]
        new = body.get("new_password") or ""
        # requests/users/password PUT error codes: new_password_same_as_current, password_not_complex.
        if new in pw:
            return _err(400, "new_password_same_as_current", "the new password is identical to an existing one")
        if self.password_complexity and not complex_enough(new, u["name"]):
            return _err(400, "password_not_complex", "the given password is not complex enough")
        # PUT "replaces the password list of the specified user with a single new password".
        self.passwords[u["uid"]] = [new]
        u["password_issue_date"] = _now()
        return 200, None

    # cluster (requests/cluster, requests/cluster/certificates)
    def get_cluster(self, body: Any) -> tuple[int, Any]:
        return 200, dict(self.cluster)

    def put_cluster(self, body: Any) -> tuple[int, Any]:
        for key in ("mtls_certificate_authentication", "mtls_client_cert_subject_validation_type"):
            if key in body:
                self.cluster[key] = body[key]
        return 200, dict(self.cluster)

    def get_cluster_certificates(self, body: Any) -> tuple[int, Any]:
        return 200, {"certificates": [{"name": n, "certificate": c} for n, c in self.certificates.items()]}

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

    def post_redis_acls(self, body: Any) -> tuple[int, Any]:
        if any(a["name"] == body.get("name") for a in self.acls.values()):
            return _err(409, "redis_acl_exists", "a Redis ACL with the same name already exists")
        uid = self.uid()
        self.acls[uid] = {"uid": uid, "name": body["name"], "acl": body.get("acl", "")}
        return 200, self.acls[uid]

    def put_redis_acls_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.acls:
            return _err(404, "redis_acl_not_found", "Redis ACL does not exist")
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
        return (200, self.bdbs[uid]) if uid in self.bdbs else _err(404, "db_not_exist", "database does not exist")

    def put_bdbs_one(self, body: Any, uid: int) -> tuple[int, Any]:
        if uid not in self.bdbs:
            return _err(404, "db_not_exist", "database does not exist")
        perms = body.get("roles_permissions", self.bdbs[uid]["roles_permissions"])
        for p in perms:
            if p["role_uid"] not in self.roles or p["redis_acl_uid"] not in self.acls:
                return _err(400, "invalid_roles_permissions", "unknown role or Redis ACL")
        self.bdbs[uid]["roles_permissions"] = list(perms)
        return 200, self.bdbs[uid]

    # what a database user effectively gets (for assertions)
    def rules_of(self, name: str) -> str | None:
        u = self.by_name(name)
        if u is None:
            return None
        bound = {p["role_uid"]: p["redis_acl_uid"] for p in self.bdbs[1]["roles_permissions"]}
        return " ".join(self.acls[bound[r]]["acl"] for r in u["role_uids"] if r in bound)
