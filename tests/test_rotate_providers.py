"""`reconciler rotate` against the managed services' contract servers and a real OpenBao: three
consecutive rotations, while an app re-reads the store's latest every 200 ms and tries to log in
every 20 ms with what it read -- Redis Software (several passwords per user), Memorystore (the
service makes each token, the sink takes it), Redis Cloud (one password per Cloud user: the
rotation pair, the username stored next to the token) -- not one login fails, and the removed
versions are refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_memorystore import INSTANCE, FakeMemorystore
from fake_redis_cloud import FakeRedisCloud
from fake_redis_software import FakeRedisSoftware
from openbao import RunningBao
from support.cli import Cli

Login = Callable[[dict], bool]  # the app's credentials as the store holds them -> does a login succeed?
RS_FIRST = "Rs-First-Version-0123456789ab!"
RS_ADMIN = "Admin-Secret-1!"
RC_ACCOUNT = "acct-key-0123456789"
RC_SECRET = "user-secret-key-ABCDEF-0123"
RC_FIRST = "Cloud-First-Version-0123456789?"
MS_TOKEN = "ya29.test-access-token-0123456789"


class App:
    """Re-reads the store's latest every 200 ms; logs in every 20 ms with what it holds."""

    def __init__(self, bao: RunningBao, path: str, login: Login):
        self.bao, self.path, self.login = bao, path, login
        self.held = self._read()
        self.attempts = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._reread, daemon=True), threading.Thread(target=self._logins, daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self) -> dict:
        return dict(self.bao.get(self.path)["data"])

    def _reread(self) -> None:
        while not self._stop.wait(0.2):
            latest = self._read()
            with self._lock:
                self.held = latest

    def _logins(self) -> None:
        while not self._stop.wait(0.02):
            with self._lock:
                creds = dict(self.held)
            self.attempts += 1
            if not self.login(creds):
                self.failures.append(f"attempt {self.attempts}: {sorted(k for k in creds if k != 'token')} refused")

    def caught_up(self, timeout: float = 10.0) -> None:
        latest = self._read()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.held == latest:
                    return
            assert time.monotonic() < deadline, "the app never re-read the latest version"
            time.sleep(0.02)

    def stop(self) -> None:
        time.sleep(0.2)
        self._stop.set()
        for t in self.threads:
            t.join(5)


def versions(bao: RunningBao, path: str) -> list[dict]:
    current = bao.get(path)["metadata"]["version"]
    return [dict(bao.get(path, v)["data"]) for v in range(1, current + 1)]


def cycle(run: Cli, bao: RunningBao, path: str, login: Login, rotations: int = 3) -> App:
    app = App(bao, path, login)
    try:
        for _ in range(rotations):
            code, out, err = run("rotate", "-f", str(run.file), "--auto-approve", "--user", "app-orders")
            assert code == 0, out + err
            assert "Rotation summary:" in out and "stopped" not in out + err, out + err
            app.caught_up()
    finally:
        app.stop()
    assert app.failures == [], app.failures[:5]
    assert app.attempts > 20
    return app


@pytest.fixture
def store(bao: RunningBao, monkeypatch: pytest.MonkeyPatch) -> RunningBao:
    for k, v in {**bao.env(), "NO_COLOR": "1", "RECONCILER_HTTP_BACKOFF": "0.01", "RECONCILER_POLL_START": "0.01",
                 "RECONCILER_POLL_CAP": "0.04"}.items():
        monkeypatch.setenv(k, v)
    return bao


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys=capsys)


def no_value_in(run: Cli, values: list[str], *also: str) -> None:
    texts = run.outputs + [p.read_text(errors="replace") for p in run.dir.iterdir() if p.is_file()]
    for v in [*values, *also]:
        assert not any(v in t for t in texts)


CURRENT_PREVIOUS = """\
      - id: current
        secret: {vault: {path: apps/orders, field: token}}
        rotate: {every_days: 30}
      - id: previous
        secret: {vault: {path: apps/orders, field: token, version: -1}}
"""


# -- Redis Software: a user holds several passwords; DELETE takes the value, the store still has it


@pytest.fixture(params=("7.4.6-77", "7.22.0-216"))
def rs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedisSoftware]:
    f = FakeRedisSoftware(version=request.param)
    monkeypatch.setenv("RS_ADMIN", RS_ADMIN)
    try:
        yield f
    finally:
        f.stop()


def rs_file(rs: FakeRedisSoftware, users: str) -> str:
    return f"""version: 1
policies: {{min_overlap_hours: 0}}
audit_log: audit.jsonl
instances:
  rs:
    provider: redis-software
    api: {{url: "{rs.url}", database: 1}}
    tls: {{ca_file: "{rs.ca_file}"}}
    admin: {{username: admin@example.com, secret: {{env: RS_ADMIN}}}}
users:
{users}"""


def test_redis_software(rs: FakeRedisSoftware, store: RunningBao, run: Cli) -> None:
    run.write(rs_file(rs, f"""  app-orders:
    acl: "~orders:* +@read"
    tokens:
{CURRENT_PREVIOUS}"""))
    store.put("apps/orders", {"token": RS_FIRST})
    assert run.apply()[0] == 0
    cycle(run, store, "apps/orders", lambda creds: rs.has_password("app-orders", creds["token"]))
    values = [v["token"] for v in versions(store, "apps/orders")]
    assert len(values) == 4
    assert [rs.has_password("app-orders", v) for v in values] == [False, False, True, True]
    assert rs.http.requests("PUT", "/v1/users/password") == []  # each removal alone, never "replace all"
    history = rs.history("app-orders")
    assert all(set(a) & set(b) for a, b in zip(history, history[1:], strict=False))  # always one password in common
    assert run.plan()[0] == 0
    no_value_in(run, values, RS_ADMIN)


# -- Memorystore: the service makes each token, the sink (the store path) takes it -----------------


@pytest.fixture
def ms(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMemorystore]:
    from reconciler.providers.memorystore import client as memorystore_client

    monkeypatch.setattr(memorystore_client, "QUOTA", (10_000, 60.0))
    monkeypatch.setenv("MS_TOKEN", MS_TOKEN)
    f = FakeMemorystore(access_token=MS_TOKEN, authorization_mode="TOKEN_AUTH", op_polls=1)
    try:
        yield f
    finally:
        f.stop()


def ms_file(ms: FakeMemorystore) -> str:
    """One user whose token the service makes, rotating into the store path apps/cache."""
    return f"""version: 1
policies: {{min_overlap_hours: 0}}
instances:
  ms:
    provider: memorystore
    api: {{url: "{ms.url}", instance: {INSTANCE}, ca_file: "{ms.ca_file}"}}
    admin: {{secret: {{env: MS_TOKEN}}}}
users:
  app-orders:
    tokens:
      - id: current
        sink: {{vault: {{path: apps/cache, field: token}}}}
        rotate: {{every_days: 30}}
"""


def test_memorystore(ms: FakeMemorystore, store: RunningBao, run: Cli) -> None:
    run.write(ms_file(ms))
    assert run.apply()[0] == 0  # the service makes the first token; the store holds it as version 1

    def login(creds: dict) -> bool:
        return any(t["token"] == creds["token"] for t in ms.users.get("app-orders", {}).values())

    cycle(run, store, "apps/cache", login)
    values = [v["token"] for v in versions(store, "apps/cache")]
    assert len(values) == 4
    assert [login({"token": v}) for v in values] == [False, False, True, True]  # the old one goes at the next rotation
    history = ms.history("app-orders")
    assert all(set(a) & set(b) for a, b in zip(history, history[1:], strict=False) if a), history
    assert run.plan()[0] == 0
    no_value_in(run, ms.generated, MS_TOKEN)


# -- Redis Cloud: one password per Cloud user, so versions alternate between a pair of them ------------


@pytest.fixture
def rc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedisCloud]:
    monkeypatch.setenv("RC_ACCOUNT", RC_ACCOUNT)
    monkeypatch.setenv("RC_SECRET", RC_SECRET)
    f = FakeRedisCloud(account_key=RC_ACCOUNT, secret_key=RC_SECRET, default_password="Initial-Default-1!")
    try:
        yield f
    finally:
        f.stop()


def test_redis_cloud_pair(rc: FakeRedisCloud, store: RunningBao, run: Cli) -> None:
    run.write(f"""version: 1
policies: {{min_overlap_hours: 0}}
instances:
  rc:
    provider: redis-cloud
    api: {{url: "{rc.url}", subscription: {rc.subscription}, database: {rc.database}, ca_file: "{rc.ca_file}"}}
    admin: {{account_key: {{env: RC_ACCOUNT}}, secret: {{env: RC_SECRET}}}}
users:
  app-orders:
    acl: "~orders:* +@read"
    tokens:
      - id: current
        secret: {{vault: {{path: apps/orders, field: token}}}}
        username: {{field: username}}
        rotate: {{every_days: 30, usernames: [app-orders-a, app-orders-b]}}
      - id: previous
        secret: {{vault: {{path: apps/orders, field: token, version: -1}}}}
        username: {{field: username}}
""")
    store.put("apps/orders", {"token": RC_FIRST, "username": "app-orders-a"})
    code, out, err = run.apply()
    assert code == 0, out + err
    assert rc.can_auth("app-orders-a", RC_FIRST)
    cycle(run, store, "apps/orders", lambda creds: rc.can_auth(creds["username"], creds["token"]))
    stored = versions(store, "apps/orders")
    assert [v["username"] for v in stored] == ["app-orders-a", "app-orders-b", "app-orders-a", "app-orders-b"]
    assert [rc.can_auth(v["username"], v["token"]) for v in stored] == [False, False, True, True]
    assert run.plan()[0] == 0
    no_value_in(run, [v["token"] for v in stored], RC_ACCOUNT, RC_SECRET)


def test_redis_software_default_user_holds_one_password(rs: FakeRedisSoftware, store: RunningBao, run: Cli) -> None:
    """The database's default user has one password: the plan says old connections fail, and asks."""
    run.write(rs_file(rs, """  default:
    tokens:
      - id: current
        secret: {vault: {path: apps/db, field: token}}
        rotate: {every_days: 30}
"""))
    store.put("apps/db", {"token": RS_FIRST})
    assert run.apply()[0] == 0 and rs.bdb_passwords[1] == [RS_FIRST]
    code, out, err = run("rotate", "-f", str(run.file), "--user", "default")  # no terminal, no --auto-approve
    assert code == 1, out + err
    assert "! user default holds one password on its provider: connections made with the current token fail after step 2" in out, err
    assert "new connections need the new token" in out  # the provider's own note on the change
    assert "refusing to apply without a terminal to confirm on; pass --auto-approve" in err
    assert "stopped at step" not in out + err  # refused before anything was written: the refusal alone
    assert len(versions(store, "apps/db")) == 1 and rs.bdb_passwords[1] == [RS_FIRST]  # nothing written
    code, out, err = run("rotate", "-f", str(run.file), "--user", "default", "--auto-approve")
    assert code == 0, out + err
    stored = versions(store, "apps/db")
    assert len(stored) == 2 and rs.bdb_passwords[1] == [stored[-1]["token"]]
    assert run.plan()[0] == 0
    no_value_in(run, [v["token"] for v in stored], RS_ADMIN)


def test_memorystore_file_sink_keeps_the_current_token_while_the_service_makes_the_next(
    ms: FakeMemorystore, store: RunningBao, run: Cli
) -> None:
    """A file sink holds the token apps read: a rotation whose new token the service fails to make
    leaves the file as it was (never emptied, never removed), and while the service works on
    the new token the file still holds the current one."""
    run.write(ms_file(ms).replace("sink: {vault: {path: apps/cache, field: token}}", "sink: {file: orders.token}"))
    assert run.apply()[0] == 0
    sink = run.dir / "orders.token"
    current = sink.read_text()
    assert current.strip() and ms.can_auth("app-orders", current.strip())
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # an app re-reading its token file
        while not stop.is_set():
            try:
                seen.append(sink.read_text())
            except FileNotFoundError:
                seen.append("(missing)")
            time.sleep(0.005)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        ms.http.stall("POST", f"/v1/{INSTANCE}/tokenAuthUsers/app-orders:addAuthToken", 0.5)
        ms.http.fail("GET", f"/v1/{INSTANCE.rsplit('/instances/', 1)[0]}/operations/", 503, times=50,
                     body={"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}})
        code, out, err = run("rotate", "-f", str(run.file), "--auto-approve", "--user", "app-orders")
    finally:
        stop.set()
        thread.join(5)
    assert code == 1 and "stopped at step 2" in out + err, out + err
    assert sink.read_text() == current  # the token apps hold is still there
    assert seen and set(seen) == {current}, sorted(set(seen) - {current})
    ms.http.faults.clear()
    code, out, err = run("rotate", "-f", str(run.file), "--auto-approve", "--user", "app-orders")
    assert code == 0, out + err
    assert sink.read_text() != current and ms.can_auth("app-orders", sink.read_text().strip())
    texts = run.outputs + [p.read_text(errors="replace") for p in run.dir.iterdir() if p.is_file() and p != sink]
    for value in [*ms.generated, MS_TOKEN]:
        assert not any(value in t for t in texts)
