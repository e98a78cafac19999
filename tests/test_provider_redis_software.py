"""provider: redis-software against the loopback contract server (tests/fake_redis_software.py):
plan -> apply -> no-op -> rotation (add token, move apps, remove old), the documented password
rules, and error paths (401, 409, 5xx retried with backoff, timeouts) with one clear line and
a re-run that converges."""

from __future__ import annotations

import json
import re
import time
from itertools import pairwise
from pathlib import Path
from typing import Iterator

import pytest
from fake_redis_software import FakeRedisSoftware, complex_enough
from support.cli import Cli

ADMIN = "Admin-Secret-1!"
OLD = "Old-Token-0123456789abcdef!"
NEW = "New-Token-0123456789abcdef!"
NEWER = "Newer-Token-0123456789abcdef!"
SECRETS = (ADMIN, OLD, NEW, NEWER)


MODES = ("7.4.6-77", "7.22.0-216")  # requests/users/password: old_password needed (7.4) or not (7.8+)


@pytest.fixture(params=MODES)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeRedisSoftware]:
    f = FakeRedisSoftware(version=request.param)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def modern() -> Iterator[FakeRedisSoftware]:
    """A cluster with certificate users (7.8.4+)."""
    f = FakeRedisSoftware(version="7.22.0-216")
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"RS_ADMIN": ADMIN, "OLD": OLD, "NEW": NEW, "NEWER": NEWER}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("RECONCILER_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("RECONCILER_POLL_START", "0.01")
    monkeypatch.setenv("RECONCILER_TODAY", "2026-11-23")


BILLING = """  app-billing:
    acl: "~billing:* +@all -@dangerous"
    certificates:
      - subject: "CN=app-billing,OU=payments,O=Acme,C=US"
"""


def access(fake: FakeRedisSoftware, tokens: str, *, extra_users: str = "", instance_extra: str = "") -> str:
    """The file: app-orders with `tokens`, and the certificate user app-billing where the cluster
    has certificate users (7.8.4+)."""
    billing = BILLING if fake.certificate_users else ""
    return f"""version: 1
instances:
  rs:
    provider: redis-software
    api: {{url: "{fake.url}", database: 1}}
    tls: {{ca_file: "{fake.ca_file}"}}
    admin: {{username: admin@example.com, secret: {{env: RS_ADMIN}}}}
{instance_extra}roles:
  reader: "~* +@read"
users:
  app-orders:
    roles: [reader]
    acl: "+@write"
    tokens:
{tokens}{billing}{extra_users}"""


def tok(tid: str, env: str, extra: str = "") -> str:
    return f"      - id: {tid}\n        secret: {{env: {env}}}\n{extra}"


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys=capsys)


def no_secret_in(texts: list[str], *paths: Path) -> None:
    blob = "\n".join(texts) + "".join(p.read_text() for p in paths if p.exists())
    for s in SECRETS:
        assert s not in blob


def no_gap(history: list[tuple[str, ...]]) -> None:
    """Every change of the user's passwords keeps one the apps may be using: consecutive password
    sets overlap, and none is empty before the user is deleted."""
    assert history, "no password change recorded"
    for before, after in pairwise(history):
        if after == ():  # the user was deleted
            continue
        assert after and set(before) & set(after), f"a moment without the credential in use: {before} -> {after}"


def test_plan_apply_noop_rotation_prune_cycle(fake: FakeRedisSoftware, run: Cli, tmp_path: Path) -> None:
    one = access(fake, tok("2026-08", "OLD"))
    rc, out, _ = run.plan(one)
    assert rc == 2 and "+ user app-orders" in out
    if fake.certificate_users:
        assert "certificate: CN=app-billing,OU=payments,O=Acme,C=US" in out
        assert "config mtls_certificate_authentication" in out  # certificate users need it on the cluster
    rc, out, _ = run.apply(one)
    assert rc == 0 and ("2 created" if fake.certificate_users else "1 created") in out
    assert fake.password_count("app-orders") == 1 and fake.has_password("app-orders", OLD)
    if fake.certificate_users:
        assert fake.cluster["mtls_certificate_authentication"] is True
        billing = fake.by_name("app-billing")
        assert billing["auth_method"] == "certificate" and billing["certificate_subject_line"] == "CN=app-billing,OU=payments,O=Acme,C=US"
        assert fake.password_count("app-billing") == 0
    assert "+@write" in fake.rules_of("app-orders") and "+@read" in fake.rules_of("app-orders")
    assert len(fake.http.requests("PUT", "/v1/bdbs/1")) == 1  # one roles_permissions update for both users
    assert run.plan(one)[0] == 0  # no-op

    # 1. add the new token next to the old one (7.4: authorized by the old one; 7.22: the admin names the user)
    two = access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD"))
    rc, out, _ = run.plan(two)
    assert rc == 2 and "token + 2026-11" in out and "kept: remove after apps moved" in out
    assert run.apply(two)[0] == 0
    assert fake.has_password("app-orders", OLD) and fake.has_password("app-orders", NEW)
    post = fake.http.requests("POST", "/v1/users/password")[-1][2]
    assert post["username"] == "app-orders" and post["new_password"] == NEW
    assert post.get("old_password") == (OLD if fake.legacy else None)
    assert not fake.http.requests("PUT", "/v1/users/password")  # never replace-all here
    assert run.plan(two)[0] == 0
    # 2. apps move to the new token; 3. the old one expires (still in the file: DELETE with its plaintext)
    three = access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD", "        expires: 2026-11-01\n"))
    rc, out, _ = run.plan(three)
    assert rc == 2 and "token - 2026-08" in out and "replace all" not in out
    assert run.apply(three)[0] == 0
    assert fake.passwords[fake.by_name("app-orders")["uid"]] == [NEW]
    assert run.plan(three)[0] == 0
    # 4. the user leaves the file: prune deletes it, its role and Redis ACL
    keep = "" if fake.certificate_users else '  svc-keep:\n    acl: "+get ~k:*"\n    tokens:\n' + tok("k", "NEWER")  # a file keeps a user
    pruned = access(fake, tok("2026-11", "NEW"), extra_users=keep, instance_extra="    prune: true\n").replace("  app-orders:\n    roles: [reader]\n    acl: \"+@write\"\n    tokens:\n" + tok("2026-11", "NEW"), "")
    rc, out, _ = run.plan(pruned)
    assert rc == 2 and "- user app-orders" in out
    assert run.apply(pruned)[0] == 0
    assert fake.by_name("app-orders") is None and run.plan(pruned)[0] == 0
    history = fake.history("app-orders")
    assert history == [(OLD,), (OLD, NEW), (NEW,), ()]
    no_gap(history)
    assert fake.http.requests("PUT", "/v1/users/password") == []
    no_secret_in(run.outputs, tmp_path / "access.redis-software.json")


def test_token_gone_from_the_file_is_replaced_all(fake: FakeRedisSoftware, run: Cli) -> None:
    assert run.apply(access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD")))[0] == 0
    # the old token leaves the file with its plaintext: only PUT can drop it, and the plan says so
    three = access(fake, tok("2026-11", "NEW"))
    rc, out, _ = run.plan(three)
    assert rc == 2 and "replace all passwords (PUT /v1/users/password)" in out
    # apply decides from the typed field, not from the note's text
    run.file.write_text(three)
    rc, out, _ = run("plan", "-f", str(run.file), "--format", "json")
    (change,) = json.loads(out)["instances"][0]["nodes"][0]["changes"]
    assert change["passwords"] == "replace-all"
    assert run.apply(three)[0] == 0
    assert fake.passwords[fake.by_name("app-orders")["uid"]] == [NEW]
    put = fake.http.requests("PUT", "/v1/users/password")[-1][2]
    assert put["username"] == "app-orders" and ("old_password" in put) == fake.legacy  # 7.4 needs old_password
    assert run.plan(three)[0] == 0


def test_removing_a_token_still_in_the_file_uses_delete(fake: FakeRedisSoftware, run: Cli) -> None:
    assert run.apply(access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD")))[0] == 0
    expired = access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD", "        expires: 2026-11-01\n"))
    rc, out, _ = run.plan(expired)
    assert rc == 2 and "token - 2026-08" in out and "replace all" not in out
    puts = len(fake.http.requests("PUT", "/v1/users/password"))
    assert run.apply(expired)[0] == 0
    assert fake.http.requests("DELETE", "/v1/users/password")[-1][2] == {"username": "app-orders", "old_password": OLD}
    assert len(fake.http.requests("PUT", "/v1/users/password")) == puts
    assert fake.passwords[fake.by_name("app-orders")["uid"]] == [NEW]


def test_passwords_changed_outside_are_replaced_all(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"))
    assert run.apply(text)[0] == 0
    # someone adds a password by hand: the issue date moves, the record no longer describes the user
    uid = fake.by_name("app-orders")["uid"]
    fake.passwords[uid].append("Hand-Made-1234!x")
    fake.users[uid]["password_issue_date"] = "2030-01-01T00:00:00.000000Z"
    rc, out, _ = run.plan(text)
    assert rc == 2 and "replace all passwords" in out and "passwords set outside the reconciler" in out
    assert run.apply(text)[0] == 0
    assert fake.passwords[uid] == [OLD]
    # 7.4: no password is known for sure, so the user object's password field sets one (objects/user)
    assert bool([b for _, _, b in fake.http.requests("PUT", f"/v1/users/{uid}") if b and "password" in b]) == fake.legacy
    assert all(fake.history("app-orders"))  # never without a password
    assert run.plan(text)[0] == 0


def test_disable_and_delete(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"), extra_users='  batch:\n    acl: "+get ~batch:*"\n    tokens:\n' + tok("a", "NEWER"))
    assert run.apply(text)[0] == 0
    off = text.replace('  batch:\n    acl:', '  batch:\n    enabled: false\n    acl:')
    assert run.apply(off)[0] == 0
    assert fake.rules_of("batch") == ""  # no roles_permissions binding: no database access
    assert run.plan(off)[0] == 0
    pruned = access(fake, tok("2026-08", "OLD"), instance_extra="    prune: true\n")
    rc, out, _ = run.plan(pruned)
    assert rc == 2 and "- user batch" in out
    assert run.apply(pruned)[0] == 0
    assert fake.by_name("batch") is None
    assert not any(r["name"] == "reconciler-batch" for r in fake.roles.values())
    assert not any(a["name"] == "reconciler-batch" for a in fake.acls.values())
    assert fake.by_name("admin") is not None and fake.bdb_passwords[1] == ["Default-Pass-1!"]  # never touched


# -- the contract server enforces the documented rules ---------------------------------------------


def _client(fake: FakeRedisSoftware):
    import requests

    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    s.auth = ("admin@example.com", ADMIN)
    s.verify = fake.ca_file
    return lambda method, path, body=None: s.request(method, fake.url + path, json=body, timeout=5)


def test_contract_password_rules(fake: FakeRedisSoftware) -> None:
    call = _client(fake)
    r = call("POST", "/v1/users", {"name": "u1", "email": "u1@x", "password": OLD, "role_uids": []})
    assert r.status_code == 200
    # duplicate password refused (new_password_same_as_current)
    r = call("POST", "/v1/users/password", {"username": "u1", "old_password": OLD, "new_password": OLD})
    assert r.status_code == 400 and r.json()["error_code"] == "new_password_same_as_current"
    # 7.4: adding needs an existing password; 7.22: old_password is ignored, the admin names the user
    r = call("POST", "/v1/users/password", {"username": "u1", "old_password": "Wrong-Pass-123!", "new_password": NEW})
    assert r.status_code == (400 if fake.legacy else 200)
    r = call("PUT", "/v1/users/password", {"username": "u1", "new_password": "Only-One-Pass-1!"})
    if fake.legacy:
        assert r.status_code == 400 and r.json()["error_code"] == "missing_field"  # PUT needs old_password on 7.4
        r = call("PUT", "/v1/users/password", {"username": "u1", "old_password": OLD, "new_password": "Only-One-Pass-1!"})
    assert r.status_code == 200 and fake.passwords[fake.by_name("u1")["uid"]] == ["Only-One-Pass-1!"]
    # complexity: the email or its reverse, four in a row
    r = call("POST", "/v1/users/password", {"username": "u1", "old_password": "Only-One-Pass-1!", "new_password": "simple"})
    assert r.status_code == 400 and r.json()["error_code"] == "password_not_complex"
    assert not complex_enough("Xx-1u1@x", "u1@x") and not complex_enough("Xx-1x@1u", "u1@x")
    assert not complex_enough("Abbbb-1234-xyz", "u1@x") and complex_enough("Abbb-1234-xyz", "u1@x")
    # the last password can't be deleted
    r = call("DELETE", "/v1/users/password", {"username": "u1", "old_password": "Only-One-Pass-1!"})
    assert r.status_code == 400 and r.json()["error_code"] == "cannot_delete_last_password"
    # the default user is the database's: /v1/bdbs/{uid}/passwords, not /v1/users
    assert not any(u["name"] == "default" for u in call("GET", "/v1/users").json())
    assert call("POST", "/v1/bdbs/1/passwords", {"password": NEW}).status_code == 200
    assert call("DELETE", "/v1/bdbs/1/passwords", {"password": "Default-Pass-1!"}).status_code == 200
    assert fake.bdb_passwords[1] == [NEW]
    # a database update is asynchronous: an action, 409 while it runs
    fake.action_seconds = 5
    r = call("PUT", "/v1/bdbs/1", {"roles_permissions": []})
    assert r.status_code == 200 and call("GET", f"/v1/actions/{r.json()['action_uid']}").json()["status"] == "running"
    assert call("PUT", "/v1/bdbs/1", {"roles_permissions": []}).status_code == 409
    # Redis ACLs hold permissions only
    assert call("POST", "/v1/redis_acls", {"name": "x", "acl": "+get ~a(b)"}).status_code == 400
    assert call("POST", "/v1/redis_acls", {"name": "x", "acl": "+get ((+set ~a))"}).status_code == 400
    assert call("POST", "/v1/redis_acls", {"name": "x", "acl": "+get ~a (+set ~b)"}).status_code == 200
    # the CA is under mtls_trusted_ca_cert in a flat object
    assert "mtls_trusted_ca_cert" in call("GET", "/v1/cluster/certificates").json()
    # passwords are never returned
    assert all("password" not in u for u in call("GET", "/v1/users").json())
    # wrong admin password: 401
    import requests

    s = requests.Session()
    s.trust_env = False
    assert s.get(fake.url + "/v1/users", auth=("admin@example.com", "nope"), verify=fake.ca_file, timeout=5).status_code == 401


@pytest.mark.parametrize("version", ["7.8.2-34", "7.8.4-18", "7.8.6-36", "7.22.0-28"])
def test_versions_with_the_wrong_user_bug_are_refused(version: str, run: Cli) -> None:
    fake = FakeRedisSoftware(version=version)
    try:
        rc, out, err = run.plan(access(fake, tok("2026-08", "OLD")))
        assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1
        assert "RS161290" in err and ("7.8.6-119" in err or "7.22.0-216" in err)
        assert fake.wrong_user and not fake.http.requests("POST") and not fake.http.requests("PUT")
        # the contract server reproduces the bug: the admin's own password would have changed
        call = _client(fake)
        call("POST", "/v1/users", {"name": "u1", "email": "u1@x", "password": OLD, "role_uids": []})
        call("POST", "/v1/users/password", {"username": "u1", "old_password": OLD, "new_password": NEW})
        assert fake.has_password("admin", NEW) and not fake.has_password("u1", NEW)
    finally:
        fake.stop()


DEFAULT_USER = "  default:\n    tokens:\n"


def test_default_user_is_the_database_password(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"), extra_users=DEFAULT_USER + tok("d1", "NEW"))
    rc, out, _ = run.plan(text)
    assert rc == 2 and "user default" in out and "new connections need the new token" in out
    assert run.apply(text)[0] == 0
    assert fake.bdb_passwords[1] == [NEW] and fake.by_name("default") is None
    assert fake.http.requests("PUT", "/v1/bdbs/1/passwords") and not fake.http.requests("POST", "/v1/users/password")
    assert run.plan(text)[0] == 0  # the record knows which token is set
    # replacing it is a planned change with the same warning, one PUT
    newer = access(fake, tok("2026-08", "OLD"), extra_users=DEFAULT_USER + tok("d2", "NEWER"))
    rc, out, _ = run.plan(newer)
    assert rc == 2 and "new connections need the new token" in out
    assert run.apply(newer)[0] == 0 and fake.bdb_passwords[1] == [NEWER]
    assert fake.history("default") == [(NEW,), (NEWER,)]
    assert run.plan(newer)[0] == 0


def test_default_user_rotation_is_a_plan_error(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"), extra_users=DEFAULT_USER + tok("a", "NEW") + tok("b", "NEWER"))
    rc, _, err = run.plan(text)
    assert rc == 1 and "password rotation does not work for it" in err and "declare one token" in err
    assert len(err.strip().splitlines()) == 1
    assert not fake.http.requests("POST") and not fake.http.requests("PUT")
    rules = access(fake, tok("2026-08", "OLD"), extra_users="  default:\n    acl: \"+@all ~*\"\n    tokens:\n" + tok("a", "NEW"))
    rc, _, err = run.plan(rules)
    assert rc == 1 and "not a Redis ACL" in err


def test_one_database_update_per_apply_waited_for_and_409_retried(fake: FakeRedisSoftware, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        monkeypatch.setenv(f"SVC{i}", f"Svc-{i}-Token-0123456789abcdef!")
    extra = "".join(f"  svc-{i}:\n    acl: \"+get ~svc{i}:*\"\n    tokens:\n" + tok("a", f"SVC{i}") for i in range(3))
    text = access(fake, tok("2026-08", "OLD"), extra_users=extra)
    fake.http.fail("PUT", "/v1/bdbs/1", 409, times=2, body={"error_code": "db_busy", "message": "reattempt later"})
    rc, _, err = run.apply(text)
    assert rc == 0, err
    puts = fake.http.requests("PUT", "/v1/bdbs/1")
    assert len(puts) == 3  # two refused with 409, then the one update for all the users
    assert len(puts[-1][2]["roles_permissions"]) == (5 if fake.certificate_users else 4)
    assert fake.http.requests("GET", "/v1/actions/")  # the action was waited for
    assert fake.bdbs[1]["status"] == "active"
    assert run.plan(text)[0] == 0


def test_409_past_the_deadline_is_one_line(fake: FakeRedisSoftware, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.providers.redis_software import apply as redis_software_apply

    monkeypatch.setattr(redis_software_apply, "ACTION_DEADLINE", 0.3)
    fake.http.fail("PUT", "/v1/bdbs/1", 409, times=1000, body={"error_code": "db_busy", "message": "reattempt later"})
    rc, _, err = run.apply(access(fake, tok("2026-08", "OLD")))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "database roles_permissions failed" in err and "HTTP 409" in err and "run apply again" in err


def test_subjects_compare_as_distinguished_names(modern: FakeRedisSoftware, run: Cli) -> None:
    fake = modern
    text = access(fake, tok("2026-08", "OLD")).replace("CN=app-billing,OU=payments,O=Acme,C=US", "CN=app-billing, OU=payments, O=Acme, C=US")
    assert run.apply(text)[0] == 0
    assert fake.by_name("app-billing")["certificate_subject_line"] == "CN=app-billing,OU=payments,O=Acme,C=US"  # stored RFC 2253
    assert run.plan(text)[0] == 0  # no perpetual diff


def test_database_without_client_certificates_is_an_error_finding(modern: FakeRedisSoftware, run: Cli) -> None:
    fake = modern
    rc, out, _ = run.plan(access(fake, tok("2026-08", "OLD")))
    assert "mtls_trusted_ca" not in out and "enforce_client_authentication" not in out  # flat object read right
    fake.bdbs[1]["enforce_client_authentication"] = "disabled"
    rc, out, _ = run.plan(access(fake, tok("2026-08", "OLD")))
    assert rc == 2 and "enforce_client_authentication" in out and "tls_mode" in out


@pytest.mark.parametrize(
    "users, where, message",
    [
        ('  app-x:\n    acl: "+get ~a(b)"\n    tokens:\n' + tok("a", "NEW"), "users.app-x.acl", "parentheses in key and channel patterns"),
        ('  app-x:\n    acl: "+get (~a (+set ~b))"\n    tokens:\n' + tok("a", "NEW"), "users.app-x.acl", "nested selectors"),
        ('  "app<x>":\n    acl: "+get ~a"\n    tokens:\n' + tok("a", "NEW"), "users[\"app<x>\"]", "invalid username"),  # objects/user name pattern: within the schema's
        ('  app-x:\n    acl: "+get ~a"\n    tokens:\n' + tok("a", "REPEAT"), "users.app-x.tokens[0]", "four times in a row"),
        ('  app-x:\n    acl: "+get ~a"\n    tokens:\n' + tok("a", "EMAIL"), "users.app-x.tokens[0]", "email or its reverse"),
        ('  app-x:\n    acl: "+get ~a"\n    certificates:\n      - subject: "OU=a,CN=app-x"\n', "users.app-x.certificates[0].subject", "starts with CN"),
        ('  app-x:\n    acl: "+get ~a"\n    certificates:\n      - subject: "CN=app-x,OU=a,OU=b"\n', "users.app-x.certificates[0].subject", "at most one OU"),
    ],
)
def test_what_redis_software_refuses_fails_validate(
    fake: FakeRedisSoftware, run: Cli, monkeypatch: pytest.MonkeyPatch, users: str, where: str, message: str
) -> None:
    monkeypatch.setenv("REPEAT", "Abcd-1111-xyz!")
    monkeypatch.setenv("EMAIL", "X1!app-x@reconciler.invalid")
    text = access(fake, tok("2026-08", "OLD"), extra_users=users)
    run.file.write_text(text)
    # validate reads secrets only when asked (--resolve-secrets); the plaintext rules need them
    validate = ("validate", "--resolve-secrets", "-f", str(run.file))
    for command in (validate, ("apply", "-f", str(run.file), "--auto-approve")):
        rc, _, err = run(*command)
        assert rc == 1 and message in err and f"{where}:" in err, err
        assert re.search(r"access\.yaml:\d+: ", err)
    assert not fake.http.requests("POST") and not fake.http.requests("PUT")


def test_selectors_redis_software_accepts_pass_validate(fake: FakeRedisSoftware, run: Cli) -> None:
    users = '  app-x:\n    acl: "+get ~a (+set ~b) (%R~c &d)"\n    tokens:\n' + tok("a", "NEWER")
    text = access(fake, tok("2026-08", "OLD"), extra_users=users)
    run.file.write_text(text)
    rc, _, err = run("validate", "-f", str(run.file))
    assert rc == 0, err
    assert run.apply(text)[0] == 0 and "+set)" in fake.rules_of("app-x")  # and the contract server takes them (canonical form)


def test_sha256_tokens_are_a_validation_error(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, "      - id: x\n        sha256: " + "a" * 64 + "\n")
    rc, _, err = run("validate", "-f", str(_write(run, text)))
    assert rc == 1 and "users.app-orders.tokens[0]" in err and "needs the plaintext" in err


def _write(run: Cli, text: str) -> Path:
    run.file.write_text(text)
    return run.file


# -- error paths ----------------------------------------------------------------------------------------


def test_wrong_admin_password_is_one_line(fake: FakeRedisSoftware, run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_ADMIN", "Wrong-Admin-1!")
    rc, out, err = run.plan(access(fake, tok("2026-08", "OLD")))
    assert rc == 1 and out == ""
    assert err.strip().count("\n") == 0
    assert "HTTP 401 Unauthorized on GET /v1/bdbs/1" in err and "admin.username and admin.secret" in err
    assert "Wrong-Admin-1!" not in err


def test_5xx_is_retried_with_backoff(fake: FakeRedisSoftware, run: Cli) -> None:
    fake.http.fail("GET", "/v1/users", 503, times=2)
    rc, out, _ = run.plan(access(fake, tok("2026-08", "OLD")))
    assert rc == 2 and "+ user app-orders" in out
    assert len(fake.http.requests("GET", "/v1/users")) == 3


def test_5xx_that_persists_fails_one_line_then_rerun_converges(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD"))
    fake.http.fail("POST", "/v1/users/password", 500, times=1)  # a write's 500 is not retried
    rc, out, err = run.apply(text)
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "run apply again" in lines[0]
    rc, out, err = run.apply(text)
    assert rc == 0, err
    assert sorted(fake.passwords[fake.by_name("app-orders")["uid"]]) == sorted([NEW, OLD])
    assert run.plan(text)[0] == 0


def test_409_conflict_is_one_line_and_rerun_converges(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"))
    fake.http.fail("POST", "/v1/users", 409, times=1, body={"error_code": "user_exists", "message": "a user with the same email already exists"})
    rc, _, err = run.apply(text)
    assert rc == 1 and "HTTP 409 Conflict on POST /v1/users: user_exists" in err and len(err.strip().splitlines()) == 1
    assert run.apply(text)[0] == 0
    assert run.plan(text)[0] == 0


def test_timeout_is_one_line(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-08", "OLD"), instance_extra="    timeout_seconds: 0.3\n")
    fake.http.stall("GET", "/v1/bdbs/1", 1.0, times=4)
    rc, _, err = run.plan(text)
    assert rc == 1 and "GET /v1/bdbs/1: no answer within 0.3 s" in err and len(err.strip().splitlines()) == 1
    assert run.plan(text)[0] == 2


def test_saved_plan_applies_and_refuses_when_stale(fake: FakeRedisSoftware, run: Cli, tmp_path: Path) -> None:
    text = access(fake, tok("2026-08", "OLD"))
    run.file.write_text(text)
    saved = tmp_path / "plan.json"
    assert run("plan", "-f", str(run.file), "--out", str(saved))[0] == 0
    assert all(s not in saved.read_text() for s in SECRETS)
    assert run("apply", str(saved), "--auto-approve")[0] == 0
    assert fake.has_password("app-orders", OLD)
    assert json.loads(saved.read_text())["instances"][0]["nodes"][0]["changes"]
    assert run("apply", str(saved), "--auto-approve")[0] == 1  # live state moved since


def test_missing_trusted_ca_is_an_error_finding(modern: FakeRedisSoftware, run: Cli) -> None:
    fake = modern
    fake.certificates.clear()
    rc, out, _ = run.plan(access(fake, tok("2026-08", "OLD")))
    assert rc == 2 and "! finding (error): certificate users can't log in: the cluster has no mtls_trusted_ca certificate" in out
    run.file.write_text(access(fake, tok("2026-08", "OLD")))
    rc, out, _ = run("drift", "-f", str(run.file), "--format", "json")
    doc = json.loads(out)
    assert rc == 2 and doc["drift"]["kinds"].get("cert_unmapped") == 1
    assert doc["summary"]["errors"] == 1 and [f["severity"] for f in doc["instances"][0]["findings"]] == ["error"]


def test_failure_mid_create_reruns_without_replacing_all(fake: FakeRedisSoftware, run: Cli) -> None:
    text = access(fake, tok("2026-11", "NEW") + tok("2026-08", "OLD"))
    fake.http.fail("POST", "/v1/users/password", 500, times=1)
    rc, _, err = run.apply(text)
    assert rc == 1 and err.count("127.0.0.1") == 1 and "attempts" not in err  # a write's 500 is not retried
    assert fake.password_count("app-orders") == 1
    rc, out, _ = run.plan(text)
    assert rc == 2 and "token + 2026-08" in out and "replace all" not in out  # the record kept the first password
    assert run.apply(text)[0] == 0
    assert sorted(fake.passwords[fake.by_name("app-orders")["uid"]]) == sorted([NEW, OLD])


def test_certificate_users_before_7_8_4_are_a_plan_error_before_any_write(run: Cli) -> None:
    """Release notes 7.8.4-18: certificate-based authentication came with 7.8.4. On a 7.4 cluster a
    certificate user is refused by plan (from GET /v1/nodes' software_version), and apply writes
    nothing -- not a failed PUT /v1/cluster halfway through."""
    fake = FakeRedisSoftware(version="7.4.6-77")
    try:
        text = access(fake, tok("2026-08", "OLD"), extra_users=BILLING)
        rc, out, err = run.plan(text)
        assert rc == 1 and len(err.strip().splitlines()) == 1
        assert "user app-billing: certificate users (auth_method: certificate) need Redis Software 7.8.4 or later" in err
        assert "release notes 7.8.4-18" in err and "7.4.6-77" in err
        rc, _, err = run.apply(text)
        assert rc == 1 and "7.8.4 or later" in err
        assert [r for r in fake.http.log if r[0] != "GET"] == []  # no write at all
        # the contract server refuses what 7.4 does not have
        call = _client(fake)
        assert call("PUT", "/v1/cluster", {"mtls_certificate_authentication": True}).status_code == 400
        assert "mtls_certificate_authentication" not in call("GET", "/v1/cluster").json()
        assert run.apply(access(fake, tok("2026-08", "OLD")))[0] == 0  # without it, the file applies
    finally:
        fake.stop()


def test_selectors_on_a_database_older_than_redis_7_2_are_a_plan_error(run: Cli) -> None:
    """Release notes 7.2.4-52: selectors and %R~/%W~ only on databases with Redis 7.2 or later."""
    for redis_version in ("6.2.13", "7.0.15"):
        fake = FakeRedisSoftware(redis_version=redis_version)
        try:
            users = '  app-x:\n    acl: "+get ~a:* (+set ~b:*)"\n    tokens:\n' + tok("a", "NEW")
            rc, _, err = run.plan(access(fake, tok("2026-08", "OLD"), extra_users=users))
            assert rc == 1 and len(err.strip().splitlines()) == 1, err
            assert "user app-x" in err and (redis_version in err)
            assert [r for r in fake.http.log if r[0] != "GET"] == []
        finally:
            fake.stop()


def test_database_changes_hold_when_apply_returns(run: Cli) -> None:
    """A database update runs for a while (action_seconds): apply returns when it is completed,
    so the access the plan promised holds the moment it returns -- and what it withdrew is gone."""
    fake = FakeRedisSoftware(action_seconds=1.0)
    try:
        text = access(fake, tok("2026-08", "OLD"))
        start = time.monotonic()
        assert run.apply(text)[0] == 0
        returned = time.monotonic()
        assert returned - start >= fake.action_seconds
        assert "+@write" in (fake.rules_of("app-orders", at=returned) or "")
        off = text.replace("  app-orders:\n", "  app-orders:\n    enabled: false\n")
        assert run.apply(off)[0] == 0
        assert fake.rules_of("app-orders", at=time.monotonic()) == ""
        assert run.plan(off)[0] == 0
    finally:
        fake.stop()


def test_an_aborted_database_update_stops_at_once_with_one_line(run: Cli) -> None:
    """objects/action: an action ends completed, failed, cancelled -- or aborted."""
    fake = FakeRedisSoftware(action_outcome="aborted")
    try:
        start = time.monotonic()
        rc, _, err = run.apply(access(fake, tok("2026-08", "OLD")))
        assert rc == 1 and len(err.strip().splitlines()) == 1
        assert "database 1 update (action" in err and "aborted" in err and "run apply again" in err
        assert time.monotonic() - start < 30  # not the 300 s deadline
    finally:
        fake.stop()


@pytest.mark.parametrize(
    "path, body, expected",
    [
        ("/v1/users", "<html>sign in</html>", "GET /v1/users: the answer is not what the API documents (expected a list of objects with uid: number, name: string)"),
        ("/v1/roles", [{"uid": "x", "name": "r"}], "GET /v1/roles: the answer is not what the API documents (expected a list of objects with uid: number"),
        ("/v1/nodes", {"software_version": "7.22.0-216"}, "GET /v1/nodes: the answer is not what the API documents (expected a list of objects)"),
        ("/v1/bdbs", [1], "GET /v1/bdbs/1: the answer is not what the API documents (expected a JSON object)"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_one_line(modern: FakeRedisSoftware, run: Cli, path: str, body: object, expected: str) -> None:
    """A 200 whose body is not what the API documents (a proxy's login page, a lying server) is
    one line naming the instance and the request, never an internal error."""
    modern.http.fail("GET", path, 200, times=99, body=body)
    rc, _, err = run.plan(access(modern, tok("2026-08", "OLD")))
    assert rc == 1 and err.count("\n") == 1, err
    assert "internal error" not in err and expected in err


def test_an_odd_software_version_is_shown_inert(run: Cli) -> None:
    """A node's software_version with control characters reaches the error line escaped."""
    f = FakeRedisSoftware(version="7.8.3\x1b[31m\nPlan: 0 to add")
    try:
        rc, _, err = run.plan(access(f, tok("2026-08", "OLD")))
    finally:
        f.stop()
    assert rc == 1 and err.count("\n") == 1 and "\x1b" not in err, err
    assert "Redis Software 7.8.3\\u001b[31m\\u000aPlan: 0 to add changes the calling admin's password" in err
