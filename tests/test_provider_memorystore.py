"""provider: memorystore against the loopback contract server (tests/fake_memorystore.py):
authorization mode, token-auth users, server-generated tokens written to their sinks (0600),
plan -> apply -> no-op -> rotation, and error paths."""

from __future__ import annotations

import json
import stat
import time
from itertools import pairwise
from pathlib import Path
from typing import Iterator

import pytest
from fake_memorystore import INSTANCE, FakeMemorystore
from support.cli import Cli

ACCESS_TOKEN = "ya29.test-access-token-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeMemorystore]:
    # Token auth is chosen when the instance is created (authorization_mode is immutable).
    f = FakeMemorystore(access_token=ACCESS_TOKEN, authorization_mode="TOKEN_AUTH", op_polls=2)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TOKEN", ACCESS_TOKEN)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("RECONCILER_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("RECONCILER_POLL_START", "0.01")
    monkeypatch.setenv("RECONCILER_POLL_CAP", "0.04")
    from reconciler.providers.memorystore import client as memorystore_client

    monkeypatch.setattr(memorystore_client, "QUOTA", (10_000, 60.0))  # test_requests_stay_within_the_quota scales it down
    monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")


def access(fake: FakeMemorystore, tokens: str, *, extra_users: str = "", instance_extra: str = "") -> str:
    return f"""version: 1
instances:
  ms:
    provider: memorystore
    api: {{url: "{fake.url}", instance: {INSTANCE}, ca_file: "{fake.ca_file}"}}
    admin: {{secret: {{env: MS_TOKEN}}}}
{instance_extra}users:
  app-orders:
    tokens:
{tokens}{extra_users}"""


def tok(tid: str) -> str:
    return f"      - id: {tid}\n        sink: {{file: secrets/app-orders-{tid}.token}}\n"


class Run(Cli):
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]):
        super().__init__(tmp, capsys=capsys)
        (tmp / "secrets").mkdir()

    def sink(self, tid: str) -> Path:
        return self.dir / "secrets" / f"app-orders-{tid}.token"

    def service_name(self, tid: str, user: str = "app-orders") -> str:
        """The name the service gave the file's token `tid` (the provider's record)."""
        return json.loads((self.dir / "access.memorystore.json").read_text())["ms"][user][tid]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(tmp_path, capsys)


def test_plan_apply_noop_rotation_prune_cycle(fake: FakeMemorystore, run: Run, tmp_path: Path) -> None:
    one = access(fake, tok("2026-08"))
    rc, out, _ = run.plan(one)
    assert rc == 2 and "+ user app-orders" in out and "token + 2026-08" in out and "authorizationMode" not in out
    audit = tmp_path / "audit.jsonl"
    rc, out, _ = run.apply(one, "--audit-log", str(audit))
    assert rc == 0, out
    first = run.service_name("2026-08")
    assert first != "2026-08" and first in fake.users["app-orders"]  # the service named it
    value = fake.token_value("app-orders", first)
    assert value and run.sink("2026-08").read_text() == value + "\n"
    assert stat.S_IMODE(run.sink("2026-08").stat().st_mode) == 0o600
    assert run.plan(one)[0] == 0

    # 1. add the new token: the service makes and names it, apply writes it to its sink; the old one stays
    two = access(fake, tok("2026-11") + tok("2026-08"))
    rc, out, _ = run.plan(two)
    assert rc == 2 and "token + 2026-11" in out and "kept: remove after apps moved" in out
    assert run.apply(two, "--audit-log", str(audit))[0] == 0
    second = run.service_name("2026-11")
    assert set(fake.users["app-orders"]) == {first, second}
    assert run.sink("2026-11").read_text() == fake.token_value("app-orders", second) + "\n"
    assert run.sink("2026-08").read_text() == value + "\n"  # not rewritten
    assert run.plan(two)[0] == 0
    # 2. apps move to the new token; 3. the old one leaves the file and the service
    three = access(fake, tok("2026-11"))
    rc, out, _ = run.plan(three)
    assert rc == 2 and "token - " in out and "not in file" in out
    assert run.apply(three, "--audit-log", str(audit))[0] == 0
    assert set(fake.users["app-orders"]) == {second}
    assert run.plan(three)[0] == 0
    # 4. the user leaves the file: prune deletes it although it still has a token (force=true)
    pruned = access(fake, tok("k"), instance_extra="    prune: true\n").replace("  app-orders:\n", "  svc-keep:\n")
    rc, out, _ = run.plan(pruned)
    assert rc == 2 and "- user app-orders" in out
    assert run.apply(pruned, "--audit-log", str(audit))[0] == 0
    assert "app-orders" not in fake.users and run.plan(pruned)[0] == 0
    # the timeline: the user never had no token between creation and deletion
    history = fake.history("app-orders")
    assert history == [(), (first,), tuple(sorted((first, second))), (second,), ()]
    for before, after in pairwise(history[1:-1]):
        assert set(before) & set(after), f"a moment without the token in use: {before} -> {after}"
    # no generated value in any output, plan or audit record
    blob = "\n".join(run.outputs) + audit.read_text() + (tmp_path / "access.memorystore.json").read_text()
    assert fake.generated and not any(v in blob for v in fake.generated)
    assert ACCESS_TOKEN not in blob


def test_requests_stay_within_the_quota(fake: FakeMemorystore, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.providers.memorystore import client as memorystore_client

    monkeypatch.setattr(memorystore_client, "QUOTA", (8, 0.4))  # stands for 60 per minute, scaled down
    assert run.apply(access(fake, tok("2026-11") + tok("2026-08")))[0] == 0
    times = fake.http.times
    assert len(times) > 16
    # any 9 consecutive requests span at least the window, across plan, apply and verify
    windows = [b - a for a, b in zip(times, times[8:], strict=False)]
    assert min(windows) >= 0.38


def test_a_lost_record_is_a_finding_not_a_crash(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-08"))
    assert run.apply(text)[0] == 0
    (run.dir / "access.memorystore.json").unlink()
    rc, out, _ = run.plan(text)
    assert rc == 2 and "access.memorystore.json names none of the service's tokens" in out


def test_authorization_mode_is_immutable(fake: FakeMemorystore, run: Run) -> None:
    fake.authorization_mode = "AUTH_DISABLED"
    text = access(fake, tok("2026-08"))
    rc, out, _ = run.plan(text)
    assert rc == 2 and "config authorizationMode" in out and "TOKEN_AUTH" in out  # the update is tried
    assert "immutable in the v1 API" in out
    rc, _, err = run.apply(text)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "immutable" in err and "recreate the instance with token-based authentication" in err
    assert fake.http.requests("PATCH") and not fake.users  # nothing after the refusal
    fake.authorization_mode_mutable = True  # a service that accepts the update: apply converges
    assert run.apply(text)[0] == 0 and fake.authorization_mode == "TOKEN_AUTH"


def test_operations_are_polled_with_backoff_and_retry_after(fake: FakeMemorystore, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_POLL_START", "0.05")
    monkeypatch.setenv("RECONCILER_POLL_CAP", "0.2")
    fake.op_polls = 5
    fake.http.fail("GET", f"/v1/{INSTANCE.rsplit('/instances/', 1)[0]}/operations/", 429, times=1, headers={"Retry-After": "0.3"},
                   body={"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}})
    assert run.apply(access(fake, tok("2026-08")))[0] == 0
    ops = [(t, p) for t, (m, p, _) in zip(fake.http.times, fake.http.log, strict=True) if m == "GET" and "/operations/" in p]
    first_op = [t for t, p in ops if p == ops[0][1]]
    gaps = [b - a for a, b in pairwise(first_op)]
    assert gaps[0] >= 0.3  # the 429's Retry-After was honoured
    later = gaps[1:]
    assert later and all(g >= 0.05 for g in later) and max(later) >= 0.19  # doubling up to the cap
    # a whole create stays far below the instance API quota (60 requests per minute)
    assert len(fake.http.log) < 60


def test_prune_deletes_user_and_paginated_listing(fake: FakeMemorystore, run: Run) -> None:
    extra = "".join(f"  svc-{i}:\n    tokens:\n      - id: a\n        sink: {{file: secrets/svc-{i}.token}}\n" for i in range(3))
    assert run.apply(access(fake, tok("2026-08"), extra_users=extra))[0] == 0
    assert set(fake.users) == {"app-orders", "svc-0", "svc-1", "svc-2"}  # listed over 2 pages
    assert run.plan(access(fake, tok("2026-08"), extra_users=extra))[0] == 0
    pruned = access(fake, tok("2026-08"), instance_extra="    prune: true\n", extra_users=extra.split("  svc-2:")[0])
    rc, out, _ = run.plan(pruned)
    assert rc == 2 and "- user svc-2" in out
    assert run.apply(pruned)[0] == 0
    assert "svc-2" not in fake.users


def test_rules_are_a_plan_error(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-08")).replace("  app-orders:\n", "  app-orders:\n    acl: \"+@read ~*\"\n")
    rc, _, err = run.plan(text)
    assert rc == 1 and "no per-user permission rules" in err and len(err.strip().splitlines()) == 1


def test_secret_tokens_are_a_validation_error(fake: FakeMemorystore, run: Run) -> None:
    run.file.write_text(access(fake, "      - id: x\n        secret: {env: MS_TOKEN}\n"))
    rc, _, err = run("validate", "-f", str(run.file))
    assert rc == 1 and "generates token values itself" in err


def test_contract_tokens_are_server_generated(fake: FakeMemorystore) -> None:
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = fake.ca_file
    s.headers["Authorization"] = f"Bearer {ACCESS_TOKEN}"
    base = f"{fake.url}/v1/{INSTANCE}"

    def done(op: dict) -> dict:
        while not op.get("done"):
            op = s.get(f"{fake.url}/v1/{op['name']}").json()
        return op

    # users need token-based auth on the instance first, and the mode can't be changed afterwards
    fake.authorization_mode = "AUTH_DISABLED"
    assert s.post(f"{base}:addTokenAuthUser", json={"tokenAuthUser": "u"}).json()["error"]["status"] == "FAILED_PRECONDITION"
    r = s.patch(f"{base}?updateMask=authorizationMode", json={"authorizationMode": "TOKEN_AUTH"})
    assert r.status_code == 400 and "immutable" in r.json()["error"]["message"]
    fake.authorization_mode = "TOKEN_AUTH"
    op = s.post(f"{base}:addTokenAuthUser", json={"tokenAuthUser": "u"}).json()
    assert op["done"] is False and done(op)["done"] is True
    assert s.post(f"{base}:addTokenAuthUser", json={"tokenAuthUser": "u"}).status_code == 409
    # a client can't choose the value (AuthToken.token is output only) nor the name (IDENTIFIER, unused on create)
    r = s.post(f"{base}/tokenAuthUsers/u:addAuthToken", json={"authToken": {"token": "mine"}})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    op = done(s.post(f"{base}/tokenAuthUsers/u:addAuthToken", json={"authToken": {"name": f"{INSTANCE}/tokenAuthUsers/u/authTokens/a"}}).json())
    assert op["response"] == {"name": f"{INSTANCE}/tokenAuthUsers/u", "state": "ACTIVE"}  # the user, never the token
    assert s.get(f"{base}/tokenAuthUsers/u/authTokens/a").status_code == 404
    listed = s.get(f"{base}/tokenAuthUsers/u/authTokens").json()["authTokens"]
    assert len(listed) == 1 and "token" not in listed[0]
    made = s.get(f"{fake.url}/v1/{listed[0]['name']}").json()
    assert made["token"] == fake.token_value("u", listed[0]["name"].rsplit("/", 1)[-1]) and len(made["token"]) >= 32
    # a user with tokens is deleted only with force=true
    r = s.delete(f"{base}/tokenAuthUsers/u")
    assert r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert done(s.delete(f"{base}/tokenAuthUsers/u?force=true").json())["done"] and "u" not in fake.users
    assert requests.get(f"{base}/tokenAuthUsers", verify=fake.ca_file).status_code == 401


def test_a_token_whose_value_cannot_be_kept_is_deleted_again(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-08"))
    assert run.apply(text)[0] == 0
    two = access(fake, tok("2026-11") + tok("2026-08"))
    fake.http.fail("GET", f"/v1/{INSTANCE}/tokenAuthUsers/app-orders/authTokens/t-", 500, times=10)  # reading the value fails
    rc, _, err = run.apply(two)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "HTTP 500" in err
    assert len(fake.users["app-orders"]) == 1 and not run.sink("2026-11").exists()  # created, then deleted again
    fake.http.faults.clear()
    assert run.apply(two)[0] == 0 and len(fake.users["app-orders"]) == 2
    assert run.sink("2026-11").read_text() == fake.token_value("app-orders", run.service_name("2026-11")) + "\n"


def test_expired_access_token_is_one_line(fake: FakeMemorystore, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TOKEN", "ya29.expired")
    rc, out, err = run.plan(access(fake, tok("2026-08")))
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "HTTP 401 Unauthorized" in err and "UNAUTHENTICATED" in err and "ya29.expired" not in err


def test_5xx_retried_and_failed_write_reruns_to_convergence(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-11") + tok("2026-08"))
    fake.http.fail("GET", f"/v1/{INSTANCE}/tokenAuthUsers", 503, times=2)
    assert run.plan(text)[0] == 2  # retried
    fake.http.fail("POST", f"/v1/{INSTANCE}/tokenAuthUsers/app-orders:addAuthToken", 500, times=1)
    rc, _, err = run.apply(text)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "HTTP 500" in err and "run apply again" in err
    assert not run.sink("2026-11").exists() or run.sink("2026-11").read_text()  # never an empty sink left behind
    rc, _, err = run.apply(text)
    assert rc == 0, err
    assert set(fake.users["app-orders"]) == {run.service_name("2026-08"), run.service_name("2026-11")}
    for tid in ("2026-08", "2026-11"):
        assert run.sink(tid).read_text() == fake.token_value("app-orders", run.service_name(tid)) + "\n"
    assert run.plan(text)[0] == 0


def test_409_on_create_is_one_line(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-08"))
    fake.http.fail("POST", f"/v1/{INSTANCE}:addTokenAuthUser", 409, body={"error": {"code": 409, "status": "ALREADY_EXISTS", "message": "exists"}})
    rc, _, err = run.apply(text)
    assert rc == 1 and "HTTP 409 Conflict" in err and "ALREADY_EXISTS" in err and len(err.strip().splitlines()) == 1
    assert run.apply(text)[0] == 0 and run.plan(text)[0] == 0


def test_timeout_is_one_line(fake: FakeMemorystore, run: Run) -> None:
    text = access(fake, tok("2026-08"), instance_extra="    timeout_seconds: 0.3\n")
    fake.http.stall("GET", f"/v1/{INSTANCE}", 1.0, times=4)
    rc, _, err = run.plan(text)
    assert rc == 1 and "no answer within 0.3 s" in err and len(err.strip().splitlines()) == 1


@pytest.mark.server
def test_deleted_user_sessions_are_killed_on_data_plane_nodes(
    fake: FakeMemorystore, run: Run, server_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Valkey stands in for the instance's data plane: deleting a token-auth user through
    the API is followed by CLIENT KILL USER there, so its open connections go too."""
    import redis

    srv = server_factory("valkey-9.1")
    srv.admin().execute_command("ACL", "SETUSER", "ops", "on", ">ops-data-plane-token-0123", "~*", "&*", "+@all")
    srv.admin().execute_command("ACL", "SETUSER", "svc-old", "on", ">svc-old-data-plane-0123", "~*", "+@all")
    monkeypatch.setenv("DP_TOKEN", "ops-data-plane-token-0123")
    monkeypatch.setenv("DP_NODE", srv.address)
    extra = "  svc-old:\n    tokens:\n      - id: a\n        sink: {file: secrets/svc-old.token}\n"
    base = access(fake, tok("2026-08"), extra_users=extra).replace(
        f', ca_file: "{fake.ca_file}"}}', f', ca_file: "{fake.ca_file}", data_plane: {{username: ops, secret: {{env: DP_TOKEN}}}}}}\n    nodes: [{{env: DP_NODE}}]'
    )
    assert run.apply(base)[0] == 0
    victim = redis.Redis(host=srv.host, port=srv.port, username="svc-old", password="svc-old-data-plane-0123")
    assert victim.ping()
    before = int(srv.admin().info("clients")["connected_clients"])
    pruned = base.replace("    admin: {secret: {env: MS_TOKEN}}\n", "    admin: {secret: {env: MS_TOKEN}}\n    prune: true\n").replace(extra, "")
    rc, out, _ = run.plan(pruned)
    assert rc == 2 and "- user svc-old" in out
    assert run.apply(pruned)[0] == 0
    assert "svc-old" not in fake.users
    clients = srv.admin().execute_command("CLIENT", "LIST")
    assert "user=svc-old" not in (clients.decode() if isinstance(clients, bytes) else clients)
    assert int(srv.admin().info("clients")["connected_clients"]) < before


def test_without_data_plane_the_plan_says_connections_stay(fake: FakeMemorystore, run: Run) -> None:
    extra = "  svc-old:\n    tokens:\n      - id: a\n        sink: {file: secrets/svc-old.token}\n"
    assert run.apply(access(fake, tok("2026-08"), extra_users=extra))[0] == 0
    rc, out, _ = run.plan(access(fake, tok("2026-08"), instance_extra="    prune: true\n"))
    assert rc == 2 and "- user svc-old" in out and "open connections stay" in out


def test_apply_returns_when_operations_are_done_and_tokens_log_in(fake: FakeMemorystore, run: Run) -> None:
    """Operations that take a while (op_seconds): apply returns only when each is done, so the
    tokens the plan promised log in the moment it returns, and the ones it removed no longer do."""
    fake.op_seconds = 0.5
    one = access(fake, tok("2026-08"))
    start = time.monotonic()
    assert run.apply(one)[0] == 0
    returned = time.monotonic()
    first = run.service_name("2026-08")
    assert returned - start >= 2 * fake.op_seconds  # the user, then its token
    assert fake.tokens_at("app-orders", returned) == (first,)
    assert fake.can_auth("app-orders", run.sink("2026-08").read_text().strip())
    two = access(fake, tok("2026-11"))  # the new token in, the old one out, in one apply
    assert run.apply(two)[0] == 0
    returned = time.monotonic()
    assert fake.tokens_at("app-orders", returned) == (run.service_name("2026-11"),)
    assert run.plan(two)[0] == 0
    pruned = access(fake, tok("k"), instance_extra="    prune: true\n").replace("  app-orders:\n", "  svc-keep:\n")
    assert run.apply(pruned)[0] == 0
    assert fake.tokens_at("app-orders", time.monotonic()) == () and "app-orders" not in fake.users


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (f"/v1/{INSTANCE}/tokenAuthUsers", {"tokenAuthUsers": [], "nextPageToken": "again"}, "(expected a nextPageToken not given before)"),
        (f"/v1/{INSTANCE}/tokenAuthUsers", {"tokenAuthUsers": [{"name": 7}]}, "(expected `tokenAuthUsers`: a list of objects with name: string)"),
        (f"/v1/{INSTANCE}", ["not", "an", "instance"], "(expected an Instance object)"),
    ],
)
def test_a_lying_listing_is_one_line_and_never_endless(fake: FakeMemorystore, run: Run, path: str, body: object, expected: str) -> None:
    """A listing whose page token comes back again would be read forever; a body of the wrong
    shape would be an internal error: both are one line naming the request."""
    fake.http.fail("GET", path, 200, times=10**6, body=body)
    rc, _, err = run.plan(access(fake, tok("2026-08")))
    assert rc == 1 and err.count("\n") == 1, err
    assert "internal error" not in err and f"GET {path}: the answer is not what the API documents {expected}" in err


def test_an_operation_error_that_is_not_an_object_is_one_inert_line(fake: FakeMemorystore, run: Run) -> None:
    fake.http.fail("GET", "/v1/projects/acme/locations/us-central1/operations", 200, times=99, body={"done": True, "error": "boom\x1b[31m"})
    rc, _, err = run.apply(access(fake, tok("2026-08")))
    assert rc == 1 and err.count("\n") == 1, err
    assert "operation failed: error: boom\\u001b[31m" in err and "\x1b" not in err
    fake.http.faults.clear()
    assert run.apply(access(fake, tok("2026-08")))[0] == 0 and run.plan(access(fake, tok("2026-08")))[0] == 0
