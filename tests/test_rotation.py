"""Token rotation with zero downtime, on every server of the matrix, through the real CLI.

apply [A] -> apply [A, B] -> the client switches to B -> apply [B], while a background
client opens a fresh connection every ~20 ms and authenticates with whichever token it holds:
not one authentication may fail. Then the guard rails around removing tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from servers import RunningServer, no_retry
from support.cli import Cli, Result
from support.executor import acl_users, sha

ADMIN_USER = "reconciler-admin"
ADMIN = "rot-admin-plaintext-5b2d7f91c3e8a4060d1f"
TOKEN_A = "rot-token-a-plaintext-1e9c4b7a2f5d8306"
TOKEN_B = "rot-token-b-plaintext-8a3f6d1c9e2b5704"
TOKEN_C = "rot-token-c-plaintext-4c7e0a9d2b6f1835"

INTERVAL = 0.02  # seconds between fresh connections
MIN_ATTEMPTS = 60  # the client must have been probing all along, not only for a moment

HEADER = """\
version: 1
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {admin}, secret: {{env: T_ADMIN}}}}
    auth_mode: {auth_mode}
    persist: none
{instance_extra}users:
  {admin}:
    acl: "~* &* +@all"
    tokens:
      - id: admin-1
        secret: {{env: T_ADMIN}}
"""


def token_entries(ids: list[str], indent: str = "      ") -> str:
    env = {"a": "T_TOKEN_A", "b": "T_TOKEN_B", "c": "T_TOKEN_C"}
    return "".join(f"{indent}- id: {i}\n{indent}  secret: {{env: {env[i]}}}\n" for i in ids)


def access_file(
    user: str,
    tokens: list[str] | None,
    *,
    auth_mode: str = "token",
    acl: str = "~app:* +@read +@write +ping -@dangerous",
    enabled: bool = True,
    user_extra: str = "",
    instance_extra: str = "",
) -> str:
    text = HEADER.format(admin=ADMIN_USER, auth_mode=auth_mode, instance_extra=instance_extra)
    text += f"  {user}:\n    acl: \"{acl}\"\n"
    if not enabled:
        text += "    enabled: false\n"
    text += user_extra
    if tokens is not None:
        text += "    tokens: []\n" if not tokens else "    tokens:\n" + token_entries(tokens)
    return text


class RotationCli(Cli):
    """The CLI as a subprocess, with the server and the secrets in its environment."""

    def __init__(self, srv: RunningServer, tmp: Path):
        super().__init__(
            tmp,
            env={
                "T_NODE": srv.address,
                "T_ADMIN": ADMIN,
                "T_TOKEN_A": TOKEN_A,
                "T_TOKEN_B": TOKEN_B,
                "T_TOKEN_C": TOKEN_C,
                "RECONCILER_TODAY": "2026-11-23",
                "NO_COLOR": "1",
            },
        )
        self.srv = srv

    def apply(self, text: str | None = None, *extra: str, expect: Any = 0) -> Result:
        return super().apply(text, *extra, expect=expect)


def bootstrap_admin(srv: RunningServer) -> redis.Redis:
    """The reconciler's own user, made by hand first (as an operator would), then managed by the file."""
    srv.admin().execute_command("ACL", "SETUSER", ADMIN_USER, "on", f">{ADMIN}", "~*", "&*", "+@all")
    return srv.client(ADMIN_USER, ADMIN, retry=no_retry())


@pytest.fixture
def cli(server: RunningServer, tmp_path: Path) -> RotationCli:
    bootstrap_admin(server)
    return RotationCli(server, tmp_path)


def try_auth(srv: RunningServer, username: str | None, password: str) -> bool:
    """One fresh connection; True when AUTH (sent by connect()) succeeds and a PING answers."""
    conn = redis.Connection(host=srv.host, port=srv.port, username=username, password=password, socket_timeout=2)
    try:
        conn.connect()
        conn.send_command("PING")
        return conn.read_response() in (b"PONG", "PONG", True)
    except redis.AuthenticationError:
        return False
    finally:
        conn.disconnect()


@dataclass
class Prober:
    """Background client: a fresh connection every INTERVAL, AUTH with whatever token it holds now."""

    srv: RunningServer
    username: str | None
    token: str
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    ok_with: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def switch(self, token: str, timeout: float = 5.0) -> None:
        """Hand the client a new token and wait until it has logged in with it (the app 'moved')."""
        with self._lock:
            self.token = token
            before = self.ok_with.get(token, 0)
        deadline = time.monotonic() + timeout
        while self.ok_with.get(token, 0) <= before:
            assert time.monotonic() < deadline, "the client never logged in with the new token"
            time.sleep(INTERVAL)

    def run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                token = self.token
            t0 = time.monotonic()
            try:
                ok = try_auth(self.srv, self.username, token)
                error = "" if ok else "AUTH refused"
            except (redis.ConnectionError, OSError) as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            self.attempts += 1
            if ok:
                self.ok_with[token] = self.ok_with.get(token, 0) + 1
            else:
                self.failures.append(f"attempt {self.attempts} with {sha(token)[:8]}: {error}")
            self._stop.wait(max(0.0, INTERVAL - (time.monotonic() - t0)))

    def stop(self, at_least: int = 0, timeout: float = 30.0) -> None:
        """Stop once `at_least` attempts were made in all (each still has to succeed): on a fast
        machine the applies may take less time than that many attempts do, on a loaded one more."""
        deadline = time.monotonic() + timeout
        while self.attempts < at_least and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(INTERVAL)
        self._stop.set()


@pytest.fixture
def prober_factory() -> Iterator[Callable[..., tuple[Prober, threading.Thread]]]:
    threads: list[tuple[Prober, threading.Thread]] = []

    def start(srv: RunningServer, username: str | None, token: str) -> tuple[Prober, threading.Thread]:
        p = Prober(srv, username, token)
        t = threading.Thread(target=p.run, daemon=True)
        t.start()
        threads.append((p, t))
        return p, t

    yield start
    for p, t in threads:
        p.stop()
        t.join(5)


def rotate(cli: RotationCli, prober_factory, user: str, username: str | None, **file_opts) -> Prober:
    srv = cli.srv
    cli.apply(access_file(user, ["a"], **file_opts))
    assert try_auth(srv, username, TOKEN_A)
    prober, thread = prober_factory(srv, username, TOKEN_A)
    time.sleep(0.2)
    started = time.monotonic()

    cli.apply(access_file(user, ["a", "b"], **file_opts))
    prober.switch(TOKEN_B)  # the apps move to B, and are seen using it, before A is removed
    r = cli.apply(access_file(user, ["b"], **file_opts))
    assert sha(TOKEN_A)[:8] in r.out and "not in file" in r.out  # the plan named what went
    assert "finding: " not in r.out.replace("finding: user default is nopass", "")  # a rotation is no finding
    time.sleep(0.2)
    prober.stop(at_least=MIN_ATTEMPTS)
    thread.join(5)
    prober.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    print(f"\n{srv.id}: {prober.attempts} attempts, {len(prober.failures)} failed, "
          f"{prober.ok_with.get(TOKEN_A, 0)} with A, {prober.ok_with.get(TOKEN_B, 0)} with B, "
          f"{prober.elapsed:.1f} s")  # type: ignore[attr-defined]

    assert prober.failures == [], prober.failures[:5]
    assert prober.attempts >= MIN_ATTEMPTS, f"only {prober.attempts} attempts"
    assert prober.ok_with.get(TOKEN_A, 0) > 0 and prober.ok_with.get(TOKEN_B, 0) > 0
    assert not try_auth(srv, username, TOKEN_A)
    assert try_auth(srv, username, TOKEN_B)
    return prober


def test_rotation_named_user_zero_failures(cli: RotationCli, prober_factory) -> None:
    rotate(cli, prober_factory, "app-orders", "app-orders")
    line = acl_users(cli.srv.client(ADMIN_USER, ADMIN, retry=no_retry()))["app-orders"]
    assert f"#{sha(TOKEN_B)}" in line and sha(TOKEN_A) not in line
    r = cli("plan", "-f", str(cli.file), "--detailed-exitcode")
    assert r.code == 0, r.out + r.err


def test_rotation_default_user_simple_auth(cli: RotationCli, prober_factory) -> None:
    """`AUTH <token>` (no username) against the default user, auth_mode: token."""
    srv = cli.srv
    rotate(cli, prober_factory, "default", None, acl="~* &* +@all")
    # default is no longer nopass: a client with no password can't run commands.
    with pytest.raises(redis.AuthenticationError):
        srv.client(retry=no_retry()).ping()
    # The admin user is managed by the file and still works.
    assert srv.client(ADMIN_USER, ADMIN, retry=no_retry()).ping()
    r = cli("drift", "-f", str(cli.file))
    assert r.code == 0, r.out + r.err


def test_prober_sees_a_premature_revoke(server_factory, tmp_path: Path, prober_factory) -> None:
    """Control for the tests above: removing A while the client still holds it is caught."""
    srv = server_factory("valkey-9.1")
    bootstrap_admin(srv)
    cli = RotationCli(srv, tmp_path)
    cli.apply(access_file("app-orders", ["a"]))
    prober, thread = prober_factory(srv, "app-orders", TOKEN_A)
    time.sleep(0.2)
    cli.apply(access_file("app-orders", ["b"]))  # A is the user's only token: "a" -> "b" replaces it
    time.sleep(0.2)
    prober.stop()
    thread.join(5)
    assert prober.failures and all("AUTH refused" in f for f in prober.failures)


# -- guard rails ---------------------------------------------------------------------------------


def admin_client(srv: RunningServer) -> redis.Redis:
    return srv.client(ADMIN_USER, ADMIN, retry=no_retry())


def live_acl(srv: RunningServer) -> list[str]:
    return sorted(admin_client(srv).execute_command("ACL", "LIST"))


def one_line_error(r: Result) -> str:
    assert r.code == 1, r.out + r.err
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert lines, "no error message"
    return r.err


@pytest.mark.parametrize("second", ["same user", "other user"])
def test_same_token_twice_is_invalid(tmp_path: Path, second: str) -> None:
    """One hash on two users, or twice on one user (secret and sha256 spellings of one token)."""
    cli = Cli(tmp_path, env={"T_NODE": "127.0.0.1:1", "T_ADMIN": ADMIN, "T_TOKEN_A": TOKEN_A})
    text = access_file("app-orders", ["a"])
    if second == "same user":
        text += f"      - id: a-again\n        sha256: {sha(TOKEN_A)}\n"
    else:
        text += (
            "  app-reports:\n    acl: \"~reports:* +@read\"\n    tokens:\n"
            f"      - id: r1\n        sha256: {sha(TOKEN_A)}\n"
        )
    cli.write(text)
    r = cli("validate", "--resolve-secrets", "-f", str(cli.file))  # the secret's hash is needed
    err = one_line_error(r)
    assert "same token" in err and str(cli.file) in err
    assert TOKEN_A not in r.out + r.err
    r = cli("plan", "-f", str(cli.file))  # never reaches the (unreachable) server
    assert r.code == 1 and "same token" in r.err


@pytest.mark.parametrize(
    "server_id,spelling", [("redis-6.2", "no tokens key"), ("valkey-9.1", "tokens: [] but enabled")]
)
def test_removing_the_last_token_needs_saying_so(server_factory, tmp_path: Path, server_id: str, spelling: str) -> None:
    srv = server_factory(server_id)
    bootstrap_admin(srv)
    cli = RotationCli(srv, tmp_path)
    cli.apply(access_file("app-orders", ["a"]))
    before = live_acl(srv)
    cli.write(access_file("app-orders", None if spelling == "no tokens key" else []))
    for argv in (("plan",), ("plan", "--detailed-exitcode"), ("apply", "--auto-approve"), ("drift",)):
        r = cli(*argv, "-f", str(cli.file))
        err = one_line_error(r)
        assert "user app-orders: this would remove the user's last token" in err, err
        assert "enabled: false for a user nobody logs in as" in err
    assert live_acl(srv) == before
    assert try_auth(srv, "app-orders", TOKEN_A)


def test_no_tokens_and_disabled_is_allowed(cli: RotationCli) -> None:
    srv = cli.srv
    cli.apply(access_file("app-orders", ["a"]))
    r = cli.apply(access_file("app-orders", [], enabled=False))
    assert "enabled: true -> false" in r.out and "not in file" in r.out
    line = acl_users(admin_client(srv))["app-orders"]
    assert " off " in line and "#" not in line and "nopass" not in line
    assert not try_auth(srv, "app-orders", TOKEN_A)
    r = cli("plan", "-f", str(cli.file), "--detailed-exitcode")
    assert r.code == 0, r.out + r.err


def open_conn(srv: RunningServer, username: str | None, password: str) -> redis.Connection:
    conn = redis.Connection(host=srv.host, port=srv.port, username=username, password=password, socket_timeout=5)
    conn.connect()
    return conn


def still_open(conn: redis.Connection) -> bool:
    """A raw connection never reconnects by itself, so a killed one shows as a ConnectionError."""
    try:
        conn.send_command("ECHO", "x")
        conn.read_response()
        return True
    except (redis.ConnectionError, OSError):
        return False


def test_kill_sessions_on_revoke(cli: RotationCli) -> None:
    """Per user, on every server of the matrix."""
    check_kill_sessions(cli, "user")


@pytest.mark.parametrize("where", ["instance", "off"])
def test_kill_sessions_on_revoke_instance_default(server_factory, tmp_path: Path, where: str) -> None:
    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    check_kill_sessions(RotationCli(srv, tmp_path), where)


def check_kill_sessions(cli: RotationCli, where: str) -> None:
    srv = cli.srv
    user_extra = "    kill_sessions_on_revoke: true\n" if where == "user" else ""
    instance_extra = "    kill_sessions_on_revoke: true\n" if where == "instance" else ""
    opts = dict(user_extra=user_extra, instance_extra=instance_extra, acl="~app:* +@read +ping +echo")
    cli.apply(access_file("app-orders", ["a", "b"], **opts))
    old, new = open_conn(srv, "app-orders", TOKEN_A), open_conn(srv, "app-orders", TOKEN_B)
    assert still_open(old) and still_open(new)
    # Adding a token revokes nothing: no session is touched.
    cli.apply(access_file("app-orders", ["a", "b", "c"], **opts))
    assert still_open(old) and still_open(new)

    r = cli.apply(access_file("app-orders", ["b", "c"], **opts))
    if where == "off":
        # The servers' own behaviour: removing a password leaves its sessions logged in.
        assert "sessions: every open connection" not in r.out
        assert still_open(old) and still_open(new)
    else:
        assert "sessions: every open connection of the user is closed (2 now)" in r.out, r.out
        assert not still_open(old)
        # The server can't tell which token a session logged in with: sessions on B go too.
        assert not still_open(new)
        assert not any(c.get("user") == "app-orders" for c in admin_client(srv).client_list())
        assert try_auth(srv, "app-orders", TOKEN_B)  # ... and reconnect
    assert admin_client(srv).ping()  # the reconciler's own user is untouched
    old.disconnect()
    new.disconnect()
