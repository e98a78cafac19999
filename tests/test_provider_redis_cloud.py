"""provider: redis-cloud against the loopback contract server (tests/fake_redis_cloud.py), through
the CLI: create from empty -> no-op -> zero-downtime rotation with a rotation pair (asserted on the
server's credential timeline) -> prune; the default user's password (explicit consent, announced);
client certificate rotation (add new, keep old); 429s and a failed task; and no secret in any
output, saved plan, record or audit log. The contract server provisions every change for a while
(`provisioning`): an apply returns only when what the plan promised can be used, and nothing the
reconciler made is left behind unseen."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fake_redis_cloud import FakeRedisCloud
from fake_redis_software import Fault
from servers import tls_material
from support.cli import Cli

ACCOUNT = "acct-key-0123456789"
SECRET = "user-secret-key-ABCDEF-0123"
OLD = "Old-Cloud-Token-0123456789!"
NEW = "New-Cloud-Token-0123456789?"
DEFAULT_NEW = "Default-Pass-2026-11#x"
INITIAL_DEFAULT = "Initial-Default-1!"
SECRETS = (ACCOUNT, SECRET, OLD, NEW, DEFAULT_NEW, INITIAL_DEFAULT)


@pytest.fixture
def fake() -> Iterator[FakeRedisCloud]:
    f = FakeRedisCloud(account_key=ACCOUNT, secret_key=SECRET, default_password=INITIAL_DEFAULT)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RC_ACCOUNT": ACCOUNT, "RC_SECRET": SECRET, "OLD": OLD, "NEW": NEW, "DEFPW": DEFAULT_NEW}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("RECONCILER_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")
    monkeypatch.delenv("RECONCILER_CLOUD_RATE", raising=False)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys=capsys)


def access(fake: FakeRedisCloud, users: str, *, api_extra: str = "", instance_extra: str = "") -> str:
    return f"""version: 1
audit_log: audit.jsonl
instances:
  rc:
    provider: redis-cloud
    api: {{url: "{fake.url}", subscription: {fake.subscription}, database: {fake.database}, ca_file: "{fake.ca_file}"{api_extra}}}
    admin: {{account_key: {{env: RC_ACCOUNT}}, secret: {{env: RC_SECRET}}}}
    prune: true
{instance_extra}roles:
  reader: "~* +@read"
users:
{users}"""


def orders(*tokens: str) -> str:
    return '  app-orders:\n    roles: [reader]\n    acl: "+@write"\n    tokens:\n' + "".join(tokens)


def tok(tid: str, env: str, username: str = "") -> str:
    return f"      - id: {tid}\n        secret: {{env: {env}}}\n" + (f"        username: {username}\n" if username else "")


def no_secret_in(run: Cli, *paths: Path) -> None:
    blob = "\n".join(run.outputs) + "".join(p.read_text() for p in paths if p.exists())
    leaked = [s for s in SECRETS if s in blob or s[-12:] in blob]
    assert not leaked, f"{len(leaked)} secret(s) in outputs or files"


def test_create_noop_rotation_pair_prune(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    one = access(fake, orders(tok("2026-08", "OLD")))
    rc, out, _ = run.plan(one)
    assert rc == 2 and "+ user app-orders" in out and "+ Cloud user app-orders (token 2026-08, role reconciler-app-orders)" in out
    rc, out, err = run.apply(one)
    assert rc == 0, err
    rule, role, user = fake.rule_by_name("reconciler-app-orders"), fake.role_by_name("reconciler-app-orders"), fake.by_name("app-orders")
    assert rule is not None and "+@write" in rule["acl"] and "+@read" in rule["acl"]
    assert role is not None and role["redisRules"][0]["databases"][0]["databaseId"] == fake.database
    assert user is not None and user["role"] == "reconciler-app-orders" and fake.can_auth("app-orders", OLD)
    record = tmp_path / "access.redis-cloud.json"
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert json.loads(record.read_text())["rc"]["users"]["app-orders"]["token_id"] == "2026-08"
    rc, out, _ = run.plan(one)
    assert rc == 0, out  # no-op
    created = time.monotonic()

    # 1. the rotation pair: the new token goes to a second Cloud user with the same role
    two = access(fake, orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b")))
    rc, out, _ = run.plan(two)
    assert rc == 2 and "+ Cloud user app-orders-b (token 2026-11" in out and "old connections fail" not in out
    assert run.apply(two)[0] == 0
    assert fake.by_name("app-orders-b")["role"] == "reconciler-app-orders"
    assert fake.can_auth("app-orders", OLD) and fake.can_auth("app-orders-b", NEW)
    assert run.plan(two)[0] == 0
    moved = time.monotonic()
    # 2. the apps move to app-orders-b / NEW; 3. the old token leaves the file: its Cloud user goes
    three = access(fake, orders(tok("2026-11", "NEW", "app-orders-b")))
    rc, out, _ = run.plan(three)
    assert rc == 2 and "- Cloud user app-orders (after the new ones exist)" in out
    assert run.apply(three)[0] == 0
    assert fake.by_name("app-orders") is None and fake.can_auth("app-orders-b", NEW)
    assert run.plan(three)[0] == 0
    # At every state the service went through, the credential the app held then was valid.
    for at, valid, _ in fake.timeline:
        if at >= created:
            held = ("app-orders", OLD) if at < moved else ("app-orders-b", NEW)
            assert held in valid, f"{at - created:.3f} s after the first apply: {held[0]} could not log in"
    assert {("app-orders", OLD), ("app-orders-b", NEW)} <= fake.state_at(moved)[0]

    # prune: the user leaves the file; its Cloud user, role and rule go; the built-in rules stay
    rest = access(fake, '  app-reports:\n    enabled: false\n    acl: "+get ~r:*"\n    tokens:\n' + tok("1", "OLD"))
    rc, out, _ = run.plan(rest)
    assert rc == 2 and "- user app-orders" in out
    assert run.apply(rest)[0] == 0
    assert fake.by_name("app-orders-b") is None and fake.role_by_name("reconciler-app-orders") is None
    assert fake.rule_by_name("reconciler-app-orders") is None and fake.rule_by_name("Read-Only") is not None
    assert run.plan(rest)[0] == 0
    assert run("plan", "-f", str(run.file), "--out", str(tmp_path / "plan.json"))[0] == 0
    audit = tmp_path / "audit.jsonl"
    assert audit.read_text().count("\n") >= 4
    no_secret_in(run, record, audit, tmp_path / "plan.json")


def test_unmanaged_users_are_findings_never_pruned(fake: FakeRedisCloud, run: Cli) -> None:
    text = access(fake, orders(tok("2026-08", "OLD")))
    assert run.apply(text)[0] == 0
    # someone adds a role + user by hand in the console
    fake.roles[1] = {"id": 1, "name": "ops", "status": "active",
                     "redisRules": [{"ruleName": "Read-Only", "databases": [{"subscriptionId": fake.subscription, "databaseId": fake.database}]}]}
    fake.users[2] = {"id": 2, "name": "ops-user", "role": "ops", "status": "active"}
    fake.passwords[2] = "Ops-Password-1!"
    rc, out, _ = run("drift", "-f", str(run.file))
    assert rc == 2 and "ops-user" in out and "did not create" in out
    assert run.apply(text)[0] == 0 and fake.by_name("ops-user") is not None


def test_default_user_password_needs_consent_and_is_announced(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    default = "  default:\n    tokens:\n" + tok("2026-11", "DEFPW")
    text = access(fake, orders(tok("2026-08", "OLD")) + default)
    rc, _, err = run.plan(text)
    assert rc == 1 and "old connections fail after rotation" in err and "api.allow_password_replace: true" in err
    assert run.apply(text)[0] == 1
    assert fake.can_auth("default", INITIAL_DEFAULT) and fake.by_name("app-orders") is None  # nothing changed
    allowed = access(fake, orders(tok("2026-08", "OLD")) + default, api_extra=", allow_password_replace: true")
    rc, out, _ = run.plan(allowed)
    assert rc == 2 and f"database password (PUT .../databases/{fake.database}): old connections fail after rotation" in out
    assert run.apply(allowed)[0] == 0
    assert fake.can_auth("default", DEFAULT_NEW) and not fake.can_auth("default", INITIAL_DEFAULT)
    assert run.plan(allowed)[0] == 0  # GET's security.password is compared as a hash in memory
    # turning the default user off: enableDefaultUser false
    off = allowed.replace("  default:\n    tokens:", "  default:\n    enabled: false\n    tokens:")
    rc, out, _ = run.plan(off)
    assert rc == 2 and "enableDefaultUser: false" in out
    assert run.apply(off)[0] == 0 and not fake.can_auth("default", DEFAULT_NEW)
    assert run.plan(off)[0] == 0
    no_token = access(fake, orders(tok("2026-08", "OLD")) + "  default:\n    enabled: false\n    tokens: []\n")
    assert run.plan(no_token)[0] == 0  # off is off: the password it would need is not compared
    rc, out, _ = run.plan(allowed)
    assert rc == 2 and "enableDefaultUser: true" in out
    assert run.apply(allowed)[0] == 0 and fake.can_auth("default", DEFAULT_NEW) and run.plan(allowed)[0] == 0
    no_secret_in(run, tmp_path / "access.redis-cloud.json", tmp_path / "audit.jsonl")


def test_client_certificate_rotation_adds_new_keeps_old(
    fake: FakeRedisCloud, run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The certificates are issued against the real clock, so expiry is judged by it too: with the
    # pinned day, "3 days left" turned into "15 days left" twelve days later and the warning vanished.
    monkeypatch.delenv("RECONCILER_TODAY")
    mat = tls_material()
    old, _ = mat.client_cert("rc-client-old", days=200)
    new, _ = mat.client_cert("rc-client-new", days=3)  # within expiry_warning_days (14)
    key = (fake.subscription, fake.database)

    def certs(*paths: Path) -> str:
        return "    client_certificates:\n" + "".join(f"      - cert_file: {p}\n" for p in paths) if paths else "    client_certificates: []\n"

    users = orders(tok("2026-08", "OLD"))
    first = access(fake, users, instance_extra=certs(old))
    rc, out, _ = run.plan(first)
    assert rc == 2 and "~ config clientTlsCertificates" in out
    assert run.apply(first)[0] == 0
    assert len(fake.client_certs[key]) == 1 and fake.databases[key]["security"]["tlsClientAuthentication"] is True
    assert fake.databases[key]["security"]["enableTls"] is True
    assert run.plan(first)[0] == 0
    both = access(fake, users, instance_extra=certs(old, new))
    assert run.apply(both)[0] == 0
    assert len(fake.client_certs[key]) == 2  # the old one stays valid while clients move
    rc, out, _ = run("drift", "-f", str(run.file))
    assert rc == 2 and "client certificate CN=rc-client-new" in out and "expires in" in out
    only_new = access(fake, users, instance_extra=certs(new))
    assert run.apply(only_new)[0] == 0
    assert len(fake.client_certs[key]) == 1 and "rc-client-new" not in fake.client_certs[key][0]  # PEM, not names
    assert run.plan(only_new)[0] == 0
    off = access(fake, users, instance_extra=certs())
    rc, out, _ = run.plan(off)
    assert rc == 2 and "(mTLS off)" in out
    assert run.apply(off)[0] == 0
    assert fake.client_certs[key] == [] and fake.databases[key]["security"]["tlsClientAuthentication"] is False
    assert run.plan(off)[0] == 0
    record = json.loads((tmp_path / "access.redis-cloud.json").read_text())
    assert record["rc"]["certificates"] == []


def test_rate_limit_429_is_waited_out(fake: FakeRedisCloud, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.rate_limit, fake.rate_window = 8, 1.0
    text = access(fake, orders(tok("2026-08", "OLD")))
    monkeypatch.setenv("RECONCILER_HTTP_BACKOFF", "0.1")
    rc, _, err = run.apply(text)
    assert rc == 0, err
    assert fake.throttled > 0 and fake.can_auth("app-orders", OLD)
    assert fake.early == 0  # every retry waited the delay the 429 announced
    # with the client's budget under the service's limit, nothing is throttled
    fake.throttled = 0
    time.sleep(fake.rate_window)  # the first apply's requests leave the service's window
    monkeypatch.setenv("RECONCILER_CLOUD_RATE", "7/1.0")
    two = access(fake, orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b")))
    assert run.apply(two)[0] == 0
    assert fake.throttled == 0 and fake.can_auth("app-orders-b", NEW)


def test_failed_task_stops_with_its_error_and_rerun_converges(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    fake.fail_next_task("createUser", "ACL_USER_CREATION_FAILURE", "the service could not create the user")
    text = access(fake, orders(tok("2026-08", "OLD")))
    rc, _, err = run.apply(text)
    assert rc == 1
    assert "ACL_USER_CREATION_FAILURE: the service could not create the user" in err and "run apply again" in err
    assert err.count("\n") == 1 and fake.by_name("app-orders") is None
    assert fake.rule_by_name("reconciler-app-orders") is not None  # what ran before stays
    rc, _, err = run.apply(text)
    assert rc == 0, err
    assert fake.can_auth("app-orders", OLD) and run.plan(text)[0] == 0
    no_secret_in(run, tmp_path / "access.redis-cloud.json", tmp_path / "audit.jsonl")


def test_in_place_replacement_needs_consent(fake: FakeRedisCloud, run: Cli) -> None:
    assert run.apply(access(fake, orders(tok("2026-08", "OLD"))))[0] == 0
    swapped = access(fake, orders(tok("2026-11", "NEW")))  # same Cloud user, new password
    rc, _, err = run.plan(swapped)
    assert rc == 1 and "replace the one password of Redis Cloud user app-orders in place" in err and "username:" in err
    allowed = access(fake, orders(tok("2026-11", "NEW")), api_extra=", allow_password_replace: true")
    rc, out, _ = run.plan(allowed)
    assert rc == 2 and "password replaced (token 2026-11): old connections fail after rotation" in out
    assert run.apply(allowed)[0] == 0 and fake.can_auth("app-orders", NEW) and not fake.can_auth("app-orders", OLD)


@pytest.mark.parametrize(
    "users, message",
    [
        (orders("      - id: h\n        sha256: " + "a" * 64 + "\n"), "whose API takes the password itself"),
        (orders(tok("a", "OLD"), tok("b", "NEW")), "a Redis Cloud ACL user holds one password"),
        (orders(tok("a", "WEAK")), "Redis Cloud passwords need 8 to 128 characters"),
    ],
)
def test_validate_refuses_what_redis_cloud_cannot_take(fake: FakeRedisCloud, run: Cli, monkeypatch: pytest.MonkeyPatch, users: str, message: str) -> None:
    monkeypatch.setenv("WEAK", "alllowercase-but-long")
    run.file.write_text(access(fake, users))
    # the password's length needs the plaintext: validate reads secrets when asked
    resolve = ("--resolve-secrets",) if "{env: WEAK}" in users else ()
    rc, _, err = run("validate", *resolve, "-f", str(run.file))
    assert rc == 1 and message in err and "access.yaml:" in err


def test_docs_example_validates(run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shutil

    section = (Path(__file__).resolve().parents[1] / "docs" / "redis-cloud.md").read_text()
    text = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]
    (tmp_path / "certs").mkdir()
    shutil.copy(tls_material().client_cert("orders-client")[0], tmp_path / "certs" / "orders-client-2026.pem")
    for name, value in {"REDISCLOUD_ACCOUNT_KEY": ACCOUNT, "REDISCLOUD_USER_KEY": SECRET,
                        "ORDERS_TOKEN_2026_08": OLD, "ORDERS_TOKEN_2026_11": NEW}.items():
        monkeypatch.setenv(name, value)
    run.file.write_text(text)
    rc, _, err = run("validate", "-f", str(run.file))
    assert rc == 0, err
    assert "| `client_certificates:` | `clientTlsCertificates`" in section  # the mapping table is there


def test_slow_task_stops_at_the_deadline_and_rerun_converges(fake: FakeRedisCloud, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_CLOUD_TASK_DEADLINE", "0.3")
    fake.hold = True
    text = access(fake, orders(tok("2026-08", "OLD")))
    rc, _, err = run.apply(text)
    assert rc == 1 and "still processing-in-progress after 0.3 s" in err and "run plan again later" in err
    fake.hold = False  # the service finishes the operation (the queued one is processed next)
    rc, _, err = run.apply(text)
    assert rc == 0, err
    assert fake.can_auth("app-orders", OLD) and run.plan(text)[0] == 0


def test_disable_withdraws_the_database_and_enable_restores(fake: FakeRedisCloud, run: Cli) -> None:
    other = (fake.subscription, 777)
    fake.databases[other] = {**fake.databases[(fake.subscription, fake.database)], "databaseId": 777, "name": "other",
                             "security": dict(fake.databases[(fake.subscription, fake.database)]["security"])}
    text = access(fake, orders(tok("2026-08", "OLD")))
    assert run.apply(text)[0] == 0
    # another database in the same role (e.g. another instance of the file): disabling here keeps it
    role = fake.role_by_name("reconciler-app-orders")
    role["redisRules"][0]["databases"].append({"subscriptionId": other[0], "databaseId": other[1], "databaseName": "other"})
    off = text.replace("  app-orders:\n", "  app-orders:\n    enabled: false\n")
    rc, out, _ = run.plan(off)
    assert rc == 2 and "role reconciler-app-orders no longer lists this database" in out
    rc, _, err = run.apply(off)
    assert rc == 0, err
    assert not fake.can_auth("app-orders", OLD) and fake.can_auth("app-orders", OLD, other)
    assert run.plan(off)[0] == 0
    assert run.apply(text)[0] == 0 and fake.can_auth("app-orders", OLD)
    # the only database: the role can't be empty, so its user, role and rule go; enabling re-creates them
    role["redisRules"][0]["databases"] = [d for d in role["redisRules"][0]["databases"] if d["databaseId"] != 777]
    assert run.apply(off)[0] == 0
    assert fake.by_name("app-orders") is None and fake.role_by_name("reconciler-app-orders") is None
    assert run.plan(off)[0] == 0
    assert run.apply(text)[0] == 0 and fake.can_auth("app-orders", OLD) and run.plan(text)[0] == 0
    # prune while another database still uses the role: this database is withdrawn, the user stays there
    role = fake.role_by_name("reconciler-app-orders")
    role["redisRules"][0]["databases"].append({"subscriptionId": other[0], "databaseId": other[1], "databaseName": "other"})
    gone = access(fake, '  someone-else:\n    enabled: false\n    acl: "+get"\n    tokens:\n' + tok("1", "NEW"))
    assert run.apply(gone)[0] == 0
    assert not fake.can_auth("app-orders", OLD) and fake.can_auth("app-orders", OLD, other)
    assert run.plan(gone)[0] == 0


def test_saved_plan_and_wrong_keys(fake: FakeRedisCloud, run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = access(fake, orders(tok("2026-08", "OLD")))
    run.file.write_text(text)
    saved = tmp_path / "plan.json"
    assert run("plan", "-f", str(run.file), "--out", str(saved), "--detailed-exitcode")[0] == 2
    assert run("plan", "-f", str(run.file), "--format", "json")[0] == 0
    assert run("drift", "-f", str(run.file), "--format", "markdown")[0] == 2
    rc, _, err = run("apply", str(saved), "--auto-approve")
    assert rc == 0, err
    assert fake.can_auth("app-orders", OLD)
    monkeypatch.setenv("RC_SECRET", "wrong-" + SECRET[::-1])
    rc, _, err = run("plan", "-f", str(run.file))
    assert rc == 1 and "HTTP 401" in err and "check admin.account_key and admin.secret" in err and err.count("\n") == 1
    no_secret_in(run, saved)


def test_lost_record_is_a_finding_until_passwords_are_set_again(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    default = "  default:\n    tokens:\n" + tok("d1", "DEFPW")
    text = access(fake, orders(tok("2026-08", "OLD")) + default, api_extra=", allow_password_replace: true")
    assert run.apply(text)[0] == 0
    (tmp_path / "access.redis-cloud.json").unlink()
    strict = access(fake, orders(tok("2026-08", "OLD")) + default)
    assert run.plan(strict)[0] == 0  # nothing to change that the plan can know of
    rc, out, _ = run("drift", "-f", str(run.file), "--format", "json")
    kinds = json.loads(out)["drift"]["kinds"]
    assert rc == 2 and kinds == {"password_unknown": 1}  # app-orders; the default password is read (hashed) from GET
    rc, out, _ = run.plan(text)
    assert rc == 2 and "~ Cloud user app-orders: password replaced (token 2026-08): old connections fail after rotation" in out
    assert run.apply(text)[0] == 0 and fake.can_auth("app-orders", OLD)
    assert run.plan(strict)[0] == 0 and run("drift", "-f", str(run.file))[0] == 0
    no_secret_in(run, tmp_path / "access.redis-cloud.json")


def test_two_databases_of_one_account_share_the_user(fake: FakeRedisCloud, run: Cli) -> None:
    second = (fake.subscription, 51170942)
    base = fake.databases[(fake.subscription, fake.database)]
    fake.databases[second] = {**base, "databaseId": second[1], "name": "second", "security": dict(base["security"])}
    fake.client_certs[second] = []

    def two(*tokens: str) -> str:
        text = access(fake, orders(*tokens))
        rc2 = text.split("  rc:\n", 1)[1].split("roles:\n", 1)[0].replace(f"database: {fake.database}", f"database: {second[1]}")
        return text.replace("roles:\n", "  rc2:\n" + rc2 + "roles:\n", 1)

    one = two(tok("2026-08", "OLD"))
    assert run.apply(one)[0] == 0
    role = fake.role_by_name("reconciler-app-orders")
    assert sorted(d["databaseId"] for e in role["redisRules"] for d in e["databases"]) == [fake.database, second[1]]
    rotated = two(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b"))
    assert run.apply(rotated)[0] == 0
    assert fake.can_auth("app-orders-b", NEW) and fake.can_auth("app-orders-b", NEW, second)
    rc, out, _ = run("drift", "-f", str(run.file))
    assert rc == 0, out  # what one instance recorded about the account's users holds for the other
    done = two(tok("2026-11", "NEW", "app-orders-b"))
    assert run.apply(done)[0] == 0
    assert fake.by_name("app-orders") is None and run("drift", "-f", str(run.file))[0] == 0


def test_contract_server_processes_one_task_at_a_time(fake: FakeRedisCloud) -> None:
    import requests

    s = requests.Session()
    s.headers.update({"x-api-key": ACCOUNT, "x-api-secret-key": SECRET})
    s.trust_env = False  # no CA bundle from the environment
    s.verify = fake.ca_file
    first = s.post(fake.url + "/acl/redisRules", json={"name": "r1", "redisRule": "+get ~a:*"}).json()
    second = s.post(fake.url + "/acl/redisRules", json={"name": "r2", "redisRule": "+get ~b:*"}).json()
    assert first["status"] == second["status"] == "received"
    states = []
    for _ in range(6):
        states.append((s.get(f"{fake.url}/tasks/{first['taskId']}").json()["status"], s.get(f"{fake.url}/tasks/{second['taskId']}").json()["status"]))
    # the second task waits in `received` until the first one is done
    assert all(b == "received" for a, b in states if a != "processing-completed")
    assert states[-1] == ("processing-completed", "processing-completed")
    assert s.get(fake.url + "/acl/users", headers={"x-api-secret-key": "wrong"}).status_code == 401
    bad = s.post(fake.url + "/acl/users", json={"name": "weak", "role": "nope", "password": "weak"}).json()
    while (task := s.get(f"{fake.url}/tasks/{bad['taskId']}").json())["status"] not in ("processing-completed", "processing-error"):
        pass
    assert task["status"] == "processing-error" and task["response"]["error"] == "ACL_ROLE_DOES_NOT_EXISTS"


def test_default_password_known_from_the_record_when_get_hides_it(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    fake.shows_password = False
    default = "  default:\n    tokens:\n" + tok("d1", "DEFPW")
    strict = access(fake, orders(tok("2026-08", "OLD")) + default)
    rc, out, _ = run.plan(strict)  # unknown and not to be replaced: taken as the file's, said in a finding
    assert rc == 2 and "+ user app-orders" in out and "~ user default" not in out
    assert "the password of Redis Cloud user default is not in" in out
    allowed = access(fake, orders(tok("2026-08", "OLD")) + default, api_extra=", allow_password_replace: true")
    rc, out, _ = run.plan(allowed)
    assert rc == 2 and "~ user default" in out and "old connections fail after rotation" in out
    assert run.apply(allowed)[0] == 0 and fake.can_auth("default", DEFAULT_NEW)
    assert json.loads((tmp_path / "access.redis-cloud.json").read_text())["rc"]["default"]["token_id"] == "d1"
    assert run.plan(allowed)[0] == 0 and run.plan(strict)[0] == 0  # the record knows it now
    assert run("drift", "-f", str(run.file))[0] == 0


def test_tls_keys_are_refused_on_redis_cloud(fake: FakeRedisCloud, run: Cli) -> None:
    run.file.write_text(access(fake, orders(tok("a", "OLD")), instance_extra="    tls: {ca_file: ca.pem}\n"))
    rc, _, err = run("validate", "-f", str(run.file))
    assert rc == 1 and "instances.rc.tls: tls: is not used by provider redis-cloud" in err


# -- the provisioning phase: a change is done when the service says it is usable ------------------


def writes(fake: FakeRedisCloud) -> int:
    return sum(1 for m, _, _ in fake.http.requests() if m != "GET")


def apply_converges(run: Cli, fake: FakeRedisCloud, text: str) -> tuple[float, float]:
    """ONE apply of `text` converges (exit 0), and a second apply of the same file writes nothing.
    Returns (when the first apply started, when it returned)."""
    start = time.monotonic()
    rc, _, err = run.apply(text)
    returned = time.monotonic()
    assert rc == 0, err
    sent = writes(fake)
    rc, out, err = run.apply(text)
    assert rc == 0, err
    assert writes(fake) == sent, f"the second apply wrote: {out}"
    return start, returned


def test_each_step_converges_in_one_apply_with_1s_provisioning(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    """create -> no-op -> rotation pair -> certificates add/remove -> default password -> prune, each
    against a service that provisions every change for 1 s: from the server's timeline, what the
    plan promised logs in (or is accepted) the moment apply returns."""
    fake.provisioning = 1.0
    mat = tls_material()
    old_cert, _ = mat.client_cert("rc-acc-old", days=200)
    new_cert, _ = mat.client_cert("rc-acc-new", days=200)
    fp = {p: hashlib.sha256(x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(serialization.Encoding.DER)).hexdigest()
          for p in (old_cert, new_cert)}

    def certs(*paths: Path) -> str:
        return "    client_certificates:\n" + "".join(f"      - cert_file: {p}\n" for p in paths) if paths else "    client_certificates: []\n"

    def text(users: str, pems: tuple[Path, ...] | None = None, default: str = "") -> str:
        extra = "" if pems is None else certs(*pems)
        return access(fake, users + default, api_extra=", allow_password_replace: true", instance_extra=extra)

    one = text(orders(tok("2026-08", "OLD")))
    _, returned = apply_converges(run, fake, one)  # create, then the no-op
    creds, _ = fake.state_at(returned)
    assert ("app-orders", OLD) in creds

    pair = text(orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b")))
    start, returned = apply_converges(run, fake, pair)
    assert {("app-orders", OLD), ("app-orders-b", NEW)} <= fake.state_at(returned)[0]
    assert returned - start >= fake.provisioning  # it waited for the new user, not only for the task
    moved = text(orders(tok("2026-11", "NEW", "app-orders-b")))
    _, returned = apply_converges(run, fake, moved)
    creds, _ = fake.state_at(returned)
    assert ("app-orders-b", NEW) in creds and ("app-orders", OLD) not in creds
    assert fake.by_name("app-orders") is None  # gone, not `deleting`

    for pems in ((old_cert,), (old_cert, new_cert), (new_cert,), ()):
        _, returned = apply_converges(run, fake, text(orders(tok("2026-11", "NEW", "app-orders-b")), pems))
        assert fake.state_at(returned)[1] == {fp[p] for p in pems}, f"certificates {[p.name for p in pems]}"

    default = "  default:\n    tokens:\n" + tok("d1", "DEFPW")
    _, returned = apply_converges(run, fake, text(orders(tok("2026-11", "NEW", "app-orders-b")), default=default))
    creds, _ = fake.state_at(returned)
    assert ("default", DEFAULT_NEW) in creds and ("default", INITIAL_DEFAULT) not in creds

    rest = text('  app-reports:\n    enabled: false\n    acl: "+get ~r:*"\n    tokens:\n' + tok("1", "OLD"), default=default)
    _, returned = apply_converges(run, fake, rest)
    assert fake.leftovers() == []  # no reconciler-* rule, role or user, not even one being deleted
    assert not {c for c in fake.state_at(returned)[0] if c[0].startswith("app-orders")}
    assert run.plan(rest)[0] == 0
    no_secret_in(run, tmp_path / "access.redis-cloud.json", tmp_path / "audit.jsonl")


def test_a_partly_deleted_user_is_finished_by_the_next_apply(fake: FakeRedisCloud, run: Cli) -> None:
    assert run.apply(access(fake, orders(tok("2026-08", "OLD"))))[0] == 0
    gone = access(fake, '  app-reports:\n    enabled: false\n    acl: "+get"\n    tokens:\n' + tok("1", "OLD"))
    fake.fail_next_task("deleteRole", "ACL_GENERAL_ERROR", "injected")
    rc, _, err = run.apply(gone)
    assert rc == 1 and "ACL_GENERAL_ERROR" in err
    assert fake.by_name("app-orders") is None and sorted(fake.leftovers()) == [
        "role reconciler-app-orders (active)", "rule reconciler-app-orders (active)"]
    # without prune: a finding that names them, not a silent no-op
    kept = gone.replace("    prune: true\n", "    prune: false\n")
    rc, out, _ = run.plan(kept)
    assert rc == 0 and "role and Redis rule reconciler-app-orders were made by the reconciler for user app-orders" in out
    rc, out, _ = run("drift", "-f", str(run.file))
    assert rc == 2 and "prune: true deletes them" in out
    # with prune: a planned deletion that finishes the job
    rc, out, _ = run.plan(gone)
    assert rc == 2 and "- user app-orders" in out and "left by an earlier run: role and Redis rule reconciler-app-orders" in out
    assert run.apply(gone)[0] == 0
    assert fake.leftovers() == [] and run.plan(gone)[0] == 0


def test_a_rule_no_role_names_is_deleted_with_prune(fake: FakeRedisCloud, run: Cli) -> None:
    fake.fail_next_task("createRole", "ACL_GENERAL_ERROR", "injected")
    assert run.apply(access(fake, orders(tok("2026-08", "OLD"))))[0] == 1
    assert fake.leftovers() == ["rule reconciler-app-orders (active)"]
    gone = access(fake, '  app-reports:\n    enabled: false\n    acl: "+get"\n    tokens:\n' + tok("1", "OLD"))
    rc, out, _ = run.plan(gone.replace("    prune: true\n", "    prune: false\n"))
    assert rc == 0 and "Redis rule reconciler-app-orders was made by the reconciler for user app-orders" in out
    rc, out, _ = run.plan(gone)
    assert rc == 2 and "- user app-orders" in out and "left by an earlier run: Redis rule reconciler-app-orders" in out
    assert run.apply(gone)[0] == 0
    assert fake.leftovers() == [] and run.plan(gone)[0] == 0


def test_what_an_earlier_change_left_provisioning_is_waited_for(fake: FakeRedisCloud, run: Cli) -> None:
    pair = access(fake, orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b")))
    assert run.apply(pair)[0] == 0
    # app-orders-b is being deleted (by the console, or a run that was stopped): the plan says so
    # and re-creates it; apply waits for the name to be free, and returns when it logs in again.
    fake.provisioning = 0.5
    fake.begin("users", fake.by_name("app-orders-b")["id"], deleting=True)
    rc, out, _ = run.plan(pair)
    assert rc == 2 and "+ Cloud user app-orders-b" in out
    assert "Redis Cloud user app-orders-b is deleting: still provisioning on the service" in out
    rc, _, err = run.apply(pair)
    assert rc == 0, err
    assert ("app-orders-b", NEW) in fake.state_at(time.monotonic())[0] and run.plan(pair)[0] == 0


def test_contract_server_provisioning_phase(fake: FakeRedisCloud) -> None:
    """The documented errors for a request that depends on a resource still provisioning, and the
    states a resource goes through (pending -> active; deleting -> 404)."""
    import requests

    fake.provisioning = 0.3
    s = requests.Session()
    s.headers.update({"x-api-key": ACCOUNT, "x-api-secret-key": SECRET})
    s.trust_env = False
    s.verify = fake.ca_file

    def task(method: str, path: str, body: dict | None = None) -> dict:
        answer = s.request(method, fake.url + path, json=body).json()
        while (t := s.get(f"{fake.url}/tasks/{answer['taskId']}").json())["status"] not in ("processing-completed", "processing-error"):
            pass
        return t

    def status(path: str, key: str, rid: int) -> str | None:
        return next((x["status"] for x in s.get(fake.url + path).json()[key] if x["id"] == rid), None)

    db = [{"subscriptionId": fake.subscription, "databaseId": fake.database}]
    rule = task("POST", "/acl/redisRules", {"name": "r", "redisRule": "+get ~a:*"})["response"]["resourceId"]
    assert status("/acl/redisRules", "redisRules", rule) == "pending"
    early = task("POST", "/acl/roles", {"name": "ro", "redisRules": [{"ruleName": "r", "databases": db}]})
    assert early["status"] == "processing-error" and early["response"]["error"] == "ACL_REDIS_RULE_NOT_ACTIVE"
    time.sleep(fake.provisioning)
    assert status("/acl/redisRules", "redisRules", rule) == "active"
    role = task("POST", "/acl/roles", {"name": "ro", "redisRules": [{"ruleName": "r", "databases": db}]})["response"]["resourceId"]
    again = task("PUT", f"/acl/roles/{role}", {"name": "ro", "redisRules": [{"ruleName": "r", "databases": db}]})
    assert again["response"]["error"] == "ACL_ROLE_IS_IN_PENDING_STATUS_AND_CANNOT_BE_UPDATED"
    assert task("DELETE", f"/acl/roles/{role}")["response"]["error"] == "ACL_ROLE_IS_IN_PENDING_STATUS_AND_CANNOT_BE_DELETED"
    time.sleep(fake.provisioning)
    user = task("POST", "/acl/users", {"name": "u", "role": "ro", "password": OLD})["response"]["resourceId"]
    assert s.get(f"{fake.url}/acl/users/{user}").json()["status"] == "pending" and not fake.can_auth("u", OLD)
    time.sleep(fake.provisioning)
    assert s.get(f"{fake.url}/acl/users/{user}").json()["status"] == "active" and fake.can_auth("u", OLD)
    task("DELETE", f"/acl/users/{user}")
    assert s.get(f"{fake.url}/acl/users/{user}").json()["status"] == "deleting" and not fake.can_auth("u", OLD)
    busy = task("DELETE", f"/acl/roles/{role}")
    assert busy["response"]["error"] == "ACL_ROLE_HAS_ACTIVE_USERS_AND_CANNOT_BE_DELETED"  # the deleting user still holds it
    time.sleep(fake.provisioning)
    assert s.get(f"{fake.url}/acl/users/{user}").status_code == 404
    assert task("DELETE", f"/acl/roles/{role}")["status"] == "processing-completed"
    assert task("DELETE", f"/acl/redisRules/{rule}")["response"]["error"] == "ACL_REDIS_RULE_CANNOT_DELETE_WHEN_ASSOCIATED_WITH_ROLES"
    time.sleep(fake.provisioning)
    assert status("/acl/roles", "roles", role) is None
    put = task("PUT", f"/subscriptions/{fake.subscription}/databases/{fake.database}", {"password": DEFAULT_NEW})
    assert put["status"] == "processing-completed"
    path = f"/subscriptions/{fake.subscription}/databases/{fake.database}"
    assert s.get(fake.url + path).json()["status"] == "active-change-pending" and fake.can_auth("default", INITIAL_DEFAULT)
    assert task("PUT", path, {"enableDefaultUser": True})["response"]["error"] == "DATABASE_IS_NOT_ACTIVE"
    time.sleep(fake.provisioning)
    assert s.get(fake.url + path).json()["status"] == "active" and fake.can_auth("default", DEFAULT_NEW)


def test_provisioning_past_the_deadline_is_one_line_and_reruns_converge(fake: FakeRedisCloud, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each change gets the task deadline for processing and provisioning together. One that is
    still pending then stops the apply with one line; what was processed is recorded (no
    `password_unknown` later), and runs after the service caught up converge."""
    monkeypatch.setenv("RECONCILER_CLOUD_TASK_DEADLINE", "0.3")
    fake.provisioning = 0.6
    text = access(fake, orders(tok("2026-08", "OLD")))
    rc, _, err = run.apply(text)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "Redis rule reconciler-app-orders still pending after 0.3 s" in err and "run plan again later" in err
    for _ in range(4):  # the rule, the role, the user: each outlasts one run
        time.sleep(fake.provisioning)
        if (rc := run.apply(text)[0]) == 0:
            break
    assert rc == 0 and fake.can_auth("app-orders", OLD)
    rc, out, _ = run("drift", "-f", str(run.file))
    assert rc == 0, out


def test_hostile_names_from_the_api_are_shown_escaped(fake: FakeRedisCloud, run: Cli) -> None:
    """Names someone gave Cloud users and roles in the console reach the plan escaped: no terminal
    control sequence, no line that looks like the plan's own."""
    text = access(fake, orders(tok("2026-08", "OLD")))
    assert run.apply(text)[0] == 0
    fake_line = "\x1b[2J\r\nPlan: 0 to add, 0 to change, 0 to destroy."
    for name, role, status in (("evil" + fake_line, "reconciler-app-orders", "active"), ("pend\x1b[33m\n", "reconciler-app-orders", "pending")):
        uid = max(fake.users) + 1
        fake.users[uid] = {"id": uid, "name": name, "role": role, "status": status}
    rid = max(fake.roles) + 1
    here = [{"subscriptionId": fake.subscription, "databaseId": fake.database, "databaseName": "x"}]
    fake.roles[rid] = {"id": rid, "name": "ops-role", "status": "active", "redisRules": [{"ruleName": "Full-Access", "databases": here}]}
    fake.users[rid + 1] = {"id": rid + 1, "name": "ops\x1b[31m\nnext", "role": "ops-role", "status": "active"}
    for rc, out, _ in (run.plan(text), run.drift()):
        assert rc == 2
        assert "\x1b" not in out and "\r" not in out and "\nPlan: 0 to add, 0 to change" not in out and "\nnext" not in out
        assert '- Cloud user "evil\\u001b[2J' in out and 'Redis Cloud user "pend\\u001b[33m\\u000a" is pending' in out
        assert 'Redis Cloud user "ops\\u001b[31m\\u000anext" reaches this database' in out


@pytest.mark.parametrize(
    "path, body, expected",
    [
        ("/v1/acl/users", "<html>sign in</html>", "GET /acl/users: the answer is not what the API documents (expected a JSON object)"),
        ("/v1/acl/users", {"users": [{"id": "abc", "name": "app-orders", "role": "reconciler-app-orders"}]}, "GET /acl/users: the answer is not what the API documents (expected `users`: a list of objects with id: number"),
        ("/v1/acl/roles", {"roles": [{"id": 7, "name": "reconciler-app-orders", "redisRules": [{"ruleName": "r", "databases": [5]}]}]}, "GET /acl/roles: the answer is not what the API documents (expected `redisRules`"),
        ("/v1/subscriptions", {"status": "active", "security": "open"}, "the answer is not what the API documents (expected `security`: an object)"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_one_line(fake: FakeRedisCloud, run: Cli, path: str, body: object, expected: str) -> None:
    """A 200 whose body is not what the API documents (a proxy's login page, another service, a
    lying server) is one line naming the instance and the request: no internal error."""
    text = access(fake, orders(tok("2026-08", "OLD")))
    assert run.apply(text)[0] == 0
    fake.http.faults.append(Fault("GET", path, 200, times=99, body=body))
    for rc, _, err in (run.plan(text), run.apply(access(fake, orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b"))))):
        assert rc == 1 and err.count("\n") == 1, err
        assert "internal error" not in err and expected in err and err.startswith("reconciler: rc ")
    fake.http.faults.clear()
    assert run.plan(text)[0] == 0


def _interrupted_apply(run: Cli, tmp_path: Path, ready: Callable[[], bool]) -> tuple[str, str]:
    """`apply` in its own process, SIGINT once `ready()`: (stdout, stderr) after it answered
    within 2.5 s with exit 130."""
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli", "apply", "-f", str(run.file), "--auto-approve"],
                            cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready()
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert time.monotonic() - sent < 2.5, "the wait went on after Ctrl-C"
    assert proc.returncode == 130, err
    run.outputs.append(out + err)
    return out, err


def test_ctrl_c_during_a_wait_stops_at_once_and_reruns_converge(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    """SIGINT while apply waits for the service: the wait ends at once (not when provisioning
    does), one line says what was left, exit 130; the next apply converges."""
    fake.provisioning = 3.0
    text = access(fake, orders(tok("2026-08", "OLD")))
    run.write(text)
    _, err = _interrupted_apply(run, tmp_path, lambda: (fake.rule_by_name("reconciler-app-orders") or {}).get("status") == "pending")
    assert err.count("\n") == 1 and "still pending when the run was interrupted" in err and "0 of 1 changes applied; run apply again" in err
    assert "Traceback" not in err and fake.by_name("app-orders") is None
    fake.provisioning = 0.02
    rc, _, err = run.apply(text)  # waits for what the stopped run left pending, then goes on
    assert rc == 0, err
    assert fake.can_auth("app-orders", OLD) and run.plan(text)[0] == 0
    no_secret_in(run, tmp_path / "access.redis-cloud.json", tmp_path / "audit.jsonl")


def test_ctrl_c_while_a_429_is_waited_out_stops_at_once(fake: FakeRedisCloud, run: Cli, tmp_path: Path) -> None:
    """A 429 asking for a long wait does not hold a Ctrl-C back: nothing more is sent."""
    fake.http.faults.append(Fault("POST", "/v1/acl/redisRules", 429, times=99, headers={"x-rate-limit-retry-after-seconds": "30"}))
    run.write(access(fake, orders(tok("2026-08", "OLD"))))
    _, err = _interrupted_apply(run, tmp_path, lambda: any(p.startswith("/v1/acl/redisRules") for m, p, _ in fake.http.log if m == "POST"))
    assert err.count("\n") == 1 and "POST /acl/redisRules: interrupted while waiting to send it again" in err
    assert sum(m == "POST" for m, _, _ in fake.http.log) == 1 and fake.rule_by_name("reconciler-app-orders") is None


def test_a_status_outside_the_documented_set_is_waited_for_and_shown_inert(fake: FakeRedisCloud, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    text = access(fake, orders(tok("2026-08", "OLD")))
    assert run.apply(text)[0] == 0
    fake.by_name("app-orders")["status"] = "exploded\x1b[31m\nok"
    monkeypatch.setenv("RECONCILER_CLOUD_TASK_DEADLINE", "0.5")
    rc, out, err = run.apply(access(fake, orders(tok("2026-08", "OLD"), tok("2026-11", "NEW", "app-orders-b"))))
    assert rc == 1 and err.count("\n") == 1 and "\x1b" not in out + err, err
    assert 'Redis Cloud user app-orders (left "exploded\\u001b[31m\\u000aok" by an earlier change) still "exploded\\u001b[31m\\u000aok" after 0.5 s' in err
