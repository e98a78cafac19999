"""config.load: the model it builds and each semantic check (in-process; the CLI corpus is
in test_config_malformed.py)."""

from __future__ import annotations

import hashlib
import textwrap
from datetime import date
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.config import load
from reconciler.errors import ConfigError, Problem

TODAY = date(2026, 11, 23)
HASH_A = hashlib.sha256(b"a").hexdigest()
HASH_B = hashlib.sha256(b"b").hexdigest()

HEAD = """\
version: 1
instances:
  cache: {nodes: ["127.0.0.1:6379"]}
"""
BLOCK_HEAD = """\
version: 1
instances:
  cache:
    nodes: ["127.0.0.1:6379"]
"""


def write(tmp_path: Path, body: str, name: str = "access.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body), encoding="utf-8")
    return p


def problems(path: Path, **kw) -> list[Problem]:
    kw.setdefault("today", TODAY)
    kw.setdefault("environ", {})
    with pytest.raises(ConfigError) as exc:
        load(str(path), **kw)
    return exc.value.problems


def one(path: Path, **kw) -> Problem:
    found = problems(path, **kw)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def ok(path: Path, **kw):
    kw.setdefault("today", TODAY)
    kw.setdefault("environ", {})
    return load(str(path), **kw)


# -- the model -------------------------------------------------------------------------------


def test_full_model(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    secret_file = tmp_path / "secrets" / "admin.token"
    secret_file.write_text("admin-token-value\n")
    secret_file.chmod(0o600)
    f = write(
        tmp_path,
        f"""\
        version: 1
        policies: {{token_max_age_days: 90, min_token_length: 8, password_complexity: true, max_delete_percent: 20}}
        audit_log: audit.jsonl
        instances:
          prod:
            nodes: ["10.0.0.5:6379", "[2001:db8::5]:6380", {{env: SEED}}]
            tls: {{ca_file: certs/ca.pem, cert_file: /abs/admin.pem, key_file: certs/admin.key}}
            admin: {{username: reconciler, secret: {{file: secrets/admin.token}}}}
            tls_client_auth: {{required: optional, user_field: CN}}
            persist: acl-save
            prune: true
            topology: replicated
            discover: false
            timeout_seconds: 2.5
            kill_sessions_on_revoke: true
          staging:
            nodes: ["10.1.0.5:6379"]
            tls_client_auth: {{required: true}}
        roles:
          base: "~* +@read"
          writer: {{roles: [base], acl: "+@write"}}
          ops: {{roles: [writer, base]}}
        users:
          app:
            instances: [prod]
            roles: [ops]
            acl: "-flushall"
            kill_sessions_on_revoke: false
            tokens:
              - id: 2026-11
                secret: {{env: APP_TOKEN}}
                created: 2026-11-01
                expires: 2027-02-01
              - id: 202608
                sha256: {HASH_A}
                note: remove after apps moved
            certificates:
              - subject: "CN=app,OU=payments,O=Acme,C=US"
          off-user:
            enabled: false
            tokens: []
        """,
    )
    env = {"SEED": " 10.0.0.7:6379 ", "APP_TOKEN": "Str0ng-Token!"}
    state = ok(f, environ=env)
    d = str(tmp_path)
    assert state.source == str(f)
    assert state.version == 1
    assert state.audit_log == f"{d}/audit.jsonl"
    assert state.policies.token_max_age_days == 90
    assert state.policies.max_delete_percent == 20
    assert state.policies.expiry_warning_days == 14  # default
    prod = state.instances["prod"]
    assert prod.nodes == ("10.0.0.5:6379", "[2001:db8::5]:6380", "10.0.0.7:6379")
    assert prod.tls.ca_file == f"{d}/certs/ca.pem"
    assert prod.tls.cert_file == "/abs/admin.pem"
    assert prod.admin.username == "reconciler"
    assert prod.admin.secret.reveal() == "admin-token-value"  # trailing newline stripped
    assert prod.admin.source == "file:secrets/admin.token"
    assert prod.tls_client_auth.required == "optional" and prod.tls_client_auth.user_field == "CN"
    assert (prod.persist, prod.prune, prod.topology, prod.discover) == ("acl-save", True, "replicated", False)
    assert prod.timeout_seconds == 2.5 and prod.kill_sessions_on_revoke is True
    assert prod.line == 5
    staging = state.instances["staging"]
    assert staging.tls_client_auth.required == "true" and staging.tls_client_auth.user_field == "none"
    assert staging.admin.username == "default" and staging.admin.secret is None
    assert staging.timeout_seconds == 5.0 and staging.tls is None
    assert state.roles == {"base": "~* +@read", "writer": "~* +@read +@write", "ops": "~* +@read +@write ~* +@read"}
    app = state.users["app"]
    assert app.instances == ("prod",)
    assert app.rules == "~* +@read +@write ~* +@read -flushall"
    assert app.acl == "-flushall" and app.roles == ("ops",)
    assert app.kill_sessions_on_revoke is False
    t1, t2 = app.tokens
    assert t1.id == "2026-11" and t1.source == "env:APP_TOKEN"
    assert t1.sha256 == hashlib.sha256(b"Str0ng-Token!").hexdigest()
    assert t1.plaintext.reveal() == "Str0ng-Token!"
    assert (t1.created, t1.expires) == (date(2026, 11, 1), date(2027, 2, 1))
    assert t2.id == "202608" and t2.sha256 == HASH_A and t2.source == "sha256" and t2.plaintext is None
    assert t2.note == "remove after apps moved"
    assert (t1.line, t2.line) == (30, 34)
    assert app.certificates[0].subject == "CN=app,OU=payments,O=Acme,C=US"
    assert app.certificates[0].cert_file is None
    off = state.users["off-user"]
    assert off.instances == ("prod", "staging")  # default: every instance
    assert off.enabled is False and off.tokens == ()
    assert off.kill_sessions_on_revoke is None
    assert state.users_for("staging") == [off]


def test_minimal_defaults(tmp_path: Path) -> None:
    state = ok(write(tmp_path, HEAD + "users:\n  app: {acl: '+get'}\n"))
    inst = state.instances["cache"]
    assert (inst.provider, inst.auth_mode, inst.persist, inst.prune, inst.topology, inst.discover) == (
        "redis", "token", "auto", False, "auto", True,
    )
    app = state.users["app"]
    assert app.enabled and app.tokens == () and app.rules == "+get"
    assert state.roles == {} and state.audit_log is None


def test_relative_paths_keep_the_users_spelling(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    write(sub, HEAD.replace('"127.0.0.1:6379"]}', '"127.0.0.1:6379"], tls: {ca_file: ca.pem}}'))
    monkeypatch.chdir(tmp_path)
    state = load("conf/access.yaml", environ={}, today=TODAY)
    assert state.instances["cache"].tls.ca_file == "conf/ca.pem"
    assert state.source == "conf/access.yaml"


def test_scalars_read_as_safeloader_reads_them(tmp_path: Path) -> None:
    # `yes` is true, `20:30` is 1230 (sexagesimal), `1e3` and `0o17` are strings, dates stay
    # YYYY-MM-DD text; ids may be integers. A key SafeLoader reads as a boolean is an error.
    state = ok(
        write(
            tmp_path,
            HEAD
            + f"""\
users:
  "on":
    enabled: yes
    tokens:
      - {{id: 2026, sha256: {HASH_A}}}
      - {{id: 20:30, sha256: {HASH_B}, created: 2026-11-01}}
      - {{id: 1e3, sha256: {"c" * 64}}}
""",
        )
    )
    assert list(state.users) == ["on"] and state.users["on"].enabled
    assert [t.id for t in state.users["on"].tokens] == ["2026", "1230", "1e3"]
    assert state.users["on"].tokens[1].created == date(2026, 11, 1)
    f = write(tmp_path, HEAD + "users:\n  on: {acl: '+get'}\n")
    assert [p.message for p in problems(f)] == ["key 'on' must be a string (quote it)"]


def test_merge_keys_and_x_extensions(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        HEAD
        + """\
x-app: &app
  roles: [r]
  enabeld: true
roles:
  r: "+get"
users:
  a:
    <<: *app
    acl: "+set"
""",
    )
    p = one(f)
    # the typo lives in the anchor: the error points there
    assert (p.line, p.path) == (6, "users.a.enabeld")
    f.write_text(f.read_text().replace("  enabeld: true\n", ""))
    assert ok(f).users["a"].rules == "+get +set"


# -- schema errors ---------------------------------------------------------------------------


def test_unknown_key_lists_alternatives(tmp_path: Path) -> None:
    p = one(write(tmp_path, BLOCK_HEAD + "    prunee: true\n"))
    assert p.line == 5 and p.path == "instances.cache.prunee"
    assert p.message.startswith("unknown key 'prunee' (did you mean 'prune'? expected one of: admin, api, auth_mode,")


def test_schema_error_points_at_deepest_existing_node(tmp_path: Path) -> None:
    body = HEAD + "users:\n  app:\n    tokens:\n      - id: one\n        created: 2026-11-01\n"
    p = one(write(tmp_path, body))
    assert (p.line, p.path) == (7, "users.app.tokens[0]")
    assert "exactly one of secret" in p.message


def test_schema_messages_do_not_echo_values(tmp_path: Path) -> None:
    body = HEAD + "users:\n  app:\n    tokens:\n      - {id: one, sha256: hunter2-plaintext}\n"
    p = one(write(tmp_path, body))
    assert "hunter2" not in str(p)
    assert p.message == "expected a sha256: 64 lowercase hex characters"


def test_secret_reference_shapes(tmp_path: Path) -> None:
    body = HEAD + (
        "users:\n  app:\n    tokens:\n"
        "      - {id: a, secret: Plaintext-Pasted-Here}\n"
        "      - {id: b, secret: {env: A, file: b}}\n"
        "      - {id: c, secret: {}}\n"
        "      - {id: d, secret: {vault: x}}\n"
    )
    found = [(p.line, p.path, p.message) for p in problems(write(tmp_path, body))]
    shape = "a secret reference is {env: NAME}, {file: PATH}, {vault: {path, field}} or {exec: [argv...]} (exactly one)"
    assert found == [
        (7, "users.app.tokens[0].secret", shape),
        (8, "users.app.tokens[1].secret", shape),
        (9, "users.app.tokens[2].secret", shape),
        (10, "users.app.tokens[3].secret.vault", "expected a mapping, got a string"),
    ]
    assert "Plaintext" not in str(found)


def test_invalid_names(tmp_path: Path) -> None:
    p = one(write(tmp_path, HEAD + "users:\n  'bad name':\n    acl: '+get'\n"))
    assert p.line == 5 and p.path == 'users["bad name"]'
    assert p.message.startswith("invalid username")


def test_enum_and_range(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "version: 1\npolicies: {max_delete_percent: 150}\ninstances:\n  c: {nodes: ['h:1'], persist: always, timeout_seconds: 0}\n",
    )
    found = {p.path: p.message for p in problems(f)}
    assert found["policies.max_delete_percent"] == "must be <= 100"
    assert found["instances.c.persist"] == "'always' is not one of: auto, acl-save, config-rewrite, none"
    assert found["instances.c.timeout_seconds"] == "must be > 0"


def test_version_problems(tmp_path: Path) -> None:
    p = one(write(tmp_path, "version: '1'\ninstances: {}\nbogus: 1\n"))
    assert (p.line, p.message) == (1, "version is the string '1': write version: 1 (a number, no quotes)")
    p = one(write(tmp_path, "# v\nversion: '>Secret-ish'\n"))
    assert (p.line, p.message) == (2, "unsupported version (this reconciler reads version: 1)")


def test_values_shaped_like_passwords_are_never_echoed(tmp_path: Path) -> None:
    body = BLOCK_HEAD + "    persist: '>Hunter2-pw'\n    provider: '<Other-pw'\n"
    found = problems(write(tmp_path, body))
    assert [p.message for p in found] == [
        "'>…' is not one of: auto, acl-save, config-rewrite, none",
        "'<…' is not one of: redis, redis-software, memorystore, redis-cloud",
    ]


def test_tls_client_auth_required_values(tmp_path: Path) -> None:
    f = write(tmp_path, BLOCK_HEAD + "    tls_client_auth: {required: sometimes}\n")
    assert one(f).message == "expected true, false or optional"


# -- semantic checks ---------------------------------------------------------------------------


def test_unknown_instance_and_role(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + "roles:\n  r: '+get'\n  s: {roles: [q]}\nusers:\n  a: {instances: [cache, cahce], roles: [r, x]}\n")
    found = [(p.line, p.path, p.message) for p in problems(f)]
    assert found == [
        (6, "roles.s.roles[0]", "unknown role 'q' (roles: r, s)"),
        (8, "users.a.instances[1]", "unknown instance 'cahce' (did you mean 'cache'? instances: cache)"),
        (8, "users.a.roles[1]", "unknown role 'x' (roles: r, s)"),
    ]


def test_role_cycles_reported_once(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + "roles:\n  a: {roles: [b]}\n  b: {roles: [c]}\n  c: {roles: [a]}\n  self: {roles: [self]}\n")
    found = [(p.line, p.message) for p in problems(f)]
    assert found == [(5, "role cycle: a -> b -> c -> a"), (8, "role cycle: self -> self")]


def test_users_of_a_cyclic_role_do_not_crash(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + "roles:\n  a: {roles: [b]}\n  b: {roles: [a]}\nusers:\n  u: {roles: [a]}\n")
    assert [p.message for p in problems(f)] == ["role cycle: a -> b -> a"]


@pytest.mark.parametrize(
    "rule, message",
    [
        ("on", "'on' is not allowed in acl: use enabled: true"),
        ("OFF", "'OFF' is not allowed in acl: use enabled: false"),
        (">pw-Secret1", "'>…' is not allowed in acl: passwords go in tokens:"),
        ("<pw-Secret1", "'<…' is not allowed in acl: to revoke a password, remove its entry from tokens:"),
        ("#" + HASH_A, "'#…' is not allowed in acl: token hashes go in tokens: as sha256:"),
        ("!" + HASH_A, "'!…' is not allowed in acl: to revoke a password, remove its entry from tokens:"),
        ("nopass", "'nopass' is not allowed in acl: every user logs in with tokens: or certificates:"),
        ("resetpass", "'resetpass' is not allowed in acl: passwords come from tokens:"),
        ("reset", "'reset' is not allowed in acl: rules always start from reset"),
    ],
)
def test_identity_rules_in_acl(tmp_path: Path, rule: str, message: str) -> None:
    p = one(write(tmp_path, HEAD + f"users:\n  app:\n    acl: '~k:* {rule} +get'\n"))
    assert (p.line, p.path) == (6, "users.app.acl")
    assert p.message.startswith(message)
    assert "pw-Secret1" not in str(p) and HASH_A not in str(p)


def test_identity_rules_in_roles_and_selectors(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + "roles:\n  r: 'on +get'\n  s: {acl: '(~x >inSelector-Pw1 +get)'}\n")
    found = problems(f)
    assert [(p.path, p.message) for p in found] == [
        ("roles.r", "'on' is not allowed in a role: use enabled: true"),
        ("roles.s.acl", "'>…' is not allowed inside a selector"),
    ]
    assert "inSelector" not in "".join(map(str, found))


def test_acl_syntax_and_categories(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + "users:\n  a: {acl: '+@raed'}\n  b: {acl: 'allkeys ~x'}\n  c: {acl: 'bogus'}\n  d: {acl: '+@nosuchthing'}\n")
    found = {p.path: p.message for p in problems(f)}
    assert found == {
        "users.a.acl": "unknown category '@raed' (did you mean '@read'?)",
        "users.b.acl": "key pattern '~x' after allkeys/~* has no effect (use resetkeys first)",
        "users.c.acl": "unknown ACL rule 'bogus'",
        "users.d.acl": "unknown category '@nosuchthing'",  # no far-fetched suggestion
    }


def test_duplicate_token_ids_and_hashes(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        HEAD
        + f"""\
users:
  a:
    tokens:
      - {{id: one, sha256: {HASH_A}}}
      - {{id: one, sha256: {HASH_B}}}
      - {{id: two, secret: {{env: TOKEN_A}}}}
  b:
    tokens:
      - {{id: x, sha256: {HASH_B}}}
""",
    )
    # "a" is also shorter than the default min_token_length; this test is about duplicates.
    found = [(p.line, p.path, p.message) for p in problems(f, environ={"TOKEN_A": "a"}) if "min_token_length" not in p.message]
    assert found == [
        (8, "users.a.tokens[1].id", "duplicate token id 'one' (first at line 7)"),
        (9, "users.a.tokens[2]", "token two of user a is the same token as tokens[0] (line 7): listed twice"),
        (12, "users.b.tokens[0]", "token x of user b is the same token as a token of user a (line 8): a token may belong to one user only"),
    ]


def test_expiry(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        HEAD
        + f"""\
users:
  a:
    tokens:
      - {{id: old, sha256: {HASH_A}, expires: 2026-11-22}}
      - {{id: today, sha256: {HASH_B}, expires: 2026-11-23}}
""",
    )
    p = one(f)
    assert (p.line, p.path) == (7, "users.a.tokens[0].expires")
    assert p.message == "token old of user a expired on 2026-11-22 (remove it from the file, or pass --allow-expired)"
    state = ok(f, allow_expired=True)
    assert state.users["a"].tokens[0].expires == date(2026, 11, 22)


def test_validate_judges_expiry_by_the_pinned_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RECONCILER_TODAY moves the day every command judges by; `validate` used the real date, so a
    what-if run ("is anything expired on the 1st?") said ok, and the same file failed once that day came."""
    f = write(tmp_path, HEAD + f"users:\n  a:\n    tokens:\n      - {{id: t1, sha256: {HASH_A}, expires: 2031-01-01}}\n")
    monkeypatch.setenv("RECONCILER_TODAY", "2031-01-02")
    assert main(["validate", "-f", str(f)]) == 1
    assert "token t1 of user a expired on 2031-01-01" in capsys.readouterr().err
    monkeypatch.setenv("RECONCILER_TODAY", "2030-12-31")
    assert main(["validate", "-f", str(f)]) == 0
    assert "ok (" in capsys.readouterr().out


def test_created_after_expires_even_with_allow_expired(tmp_path: Path) -> None:
    f = write(tmp_path, HEAD + f"users:\n  a:\n    tokens:\n      - {{id: t, sha256: {HASH_A}, created: 2027-01-02, expires: 2027-01-01}}\n")
    p = one(f, allow_expired=True)
    assert p.message == "token t of user a: created (2027-01-02) is after expires (2027-01-01)"


@pytest.mark.parametrize(
    "value, ok_length, ok_complexity",
    [
        ("Aa1!Aa1!", True, True),
        ("Aa1!Aa1", False, False),  # 7 characters
        ("aa1!aa1!", True, False),  # no upper
        ("AA1!AA1!", True, False),  # no lower
        ("Aa!!Aa!!", True, False),  # no digit
        ("Aa11Aa11", True, False),  # no special
        ("Ü-ber1-lang", True, True),
    ],
)
def test_token_policies(tmp_path: Path, value: str, ok_length: bool, ok_complexity: bool) -> None:
    body = (
        "version: 1\npolicies: {min_token_length: 8, password_complexity: true}\n"
        "instances:\n  c: {nodes: ['h:1']}\n"
        "users:\n  a:\n    tokens:\n      - {id: t, secret: {env: T}}\n"
    )
    f = write(tmp_path, body)
    env = {"T": value}
    if ok_length and ok_complexity:
        assert ok(f, environ=env).users["a"].tokens[0].plaintext.reveal() == value
        return
    found = [p.message for p in problems(f, environ=env)]
    assert any("min_token_length (8)" in m for m in found) == (not ok_length)
    assert any("password_complexity" in m for m in found) == (not ok_complexity)
    assert all(value not in m for m in found)
    assert all(m.startswith("token t of user a (env:T) ") for m in found)


def test_policies_skip_sha256_tokens(tmp_path: Path) -> None:
    body = (
        "version: 1\npolicies: {min_token_length: 64, password_complexity: true}\n"
        f"instances:\n  c: {{nodes: ['h:1']}}\nusers:\n  a:\n    tokens: [{{id: t, sha256: {HASH_A}}}]\n"
    )
    assert ok(write(tmp_path, body)).users["a"].tokens[0].sha256 == HASH_A


def test_certificate_cn_must_match_username_with_cn_mapping(tmp_path: Path) -> None:
    body = """\
version: 1
instances:
  mapped: {nodes: ['h:1'], tls_client_auth: {required: true, user_field: CN}}
  plain: {nodes: ['h:2'], tls_client_auth: {required: true, user_field: none}}
users:
  app:
    instances: [plain]
    certificates: [{subject: "CN=other,O=Acme"}]
  svc:
    certificates:
      - subject: "O=Acme, CN=svc"
      - subject: "CN=svc\\\\,x,O=Acme"
      - subject: "O=Acme"
      - subject: "CN=svc,O=Acme"
      - subject: "cn=svc,o=Acme"
"""
    found = [(p.line, p.path, p.message) for p in problems(write(tmp_path, body))]
    assert found == [
        (12, "users.svc.certificates[1].subject",
         "CN 'svc,x' must equal the username 'svc': instance mapped maps certificates to users by CN (tls_client_auth.user_field: CN)"),
        (13, "users.svc.certificates[2].subject", "subject has no CN, but instance mapped maps certificates to users by CN"),
        # the same subject in another order / attribute case is the same subject
        (14, "users.svc.certificates[3].subject", "subject listed twice (first at line 11)"),
        (15, "users.svc.certificates[4].subject", "subject listed twice (first at line 11)"),
    ]


def _self_signed(path: Path, cn: str) -> None:
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=400)).sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_cert_file_is_relative_to_the_yaml(tmp_path: Path, monkeypatch) -> None:
    _self_signed(tmp_path / "conf" / "certs" / "app.pem", "app")
    write(tmp_path / "conf", HEAD + "users:\n  app:\n    certificates: [{subject: 'CN=app,O=Acme', cert_file: certs/app.pem}]\n")
    monkeypatch.chdir(tmp_path)
    state = load("conf/access.yaml", environ={}, today=TODAY)
    assert state.users["app"].certificates[0].cert_file == "conf/certs/app.pem"


def test_cert_only_user(tmp_path: Path) -> None:
    state = ok(write(tmp_path, HEAD + "users:\n  app:\n    certificates: [{subject: 'CN=app'}]\n"))
    assert state.users["app"].certificate_only


def test_nodes(tmp_path: Path) -> None:
    body = """\
version: 1
instances:
  a:
    nodes: ["h:1", "h:1", "[::1]:6379", "[1::2::3]:6379", {env: NODE}, {env: UNSET_NODE}, "h:0"]
  b:
    topology: standalone
    nodes: ["[::1]:6379", "x:2", "x:3"]
"""
    found = [(p.path, p.message) for p in problems(write(tmp_path, body), environ={"NODE": "nohost"})]
    assert found == [
        ("instances.a.nodes[1]", "node h:1 is listed twice"),
        ("instances.a.nodes[3]", "'[1::2::3]' is not an IPv6 address"),
        ("instances.a.nodes[4]", "environment variable NODE: expected host:port (e.g. 10.0.0.5:6379 or [2001:db8::5]:6379)"),
        ("instances.a.nodes[5]", "environment variable UNSET_NODE is not set (expected host:port)"),
        ("instances.a.nodes[6]", "port 0 is out of range (1-65535)"),
        ("instances.b.topology", "topology: standalone but 2 nodes are listed"),
        ("instances.b.nodes[0]", "node [::1]:6379 is also in instance 'a' (line 4); a node belongs to one instance"),
    ]


def test_resolve_secrets_false(tmp_path: Path) -> None:
    body = """\
version: 1
instances:
  a:
    nodes: [{env: NODE}]
    admin: {secret: {env: ADMIN}}
users:
  u:
    tokens: [{id: t, secret: {file: nope.token}}]
"""
    state = ok(write(tmp_path, body), resolve_secrets=False)
    assert state.instances["a"].nodes == ("env:NODE",)
    assert state.instances["a"].admin.secret is None and state.instances["a"].admin.source == "env:ADMIN"
    tok = state.users["u"].tokens[0]
    assert (tok.sha256, tok.source, tok.plaintext) == ("", "file:nope.token", None)


def test_admin_secret_problem_names_instance(tmp_path: Path) -> None:
    p = one(write(tmp_path, BLOCK_HEAD + "    admin: {username: r, secret: {env: NOPE}}\n"))
    assert (p.line, p.path) == (5, "instances.cache.admin.secret")
    assert p.message == "admin secret of instance cache (env:NOPE): environment variable NOPE is not set"


def test_every_problem_at_once(tmp_path: Path) -> None:
    body = (
        "version: 1\n"
        "instances:\n  c: {nodes: ['h:1'], prune: 1}\n"
        "users:\n"
        "  a: {acl: 'on', roles: [nope], tokens: [{id: t, secret: {env: NOPE}}], extra: 1}\n"
    )
    found = problems(write(tmp_path, body))
    assert len(found) == 5
    assert [p.line for p in found] == [3, 5, 5, 5, 5]


def test_never_a_raw_exception_on_odd_shapes(tmp_path: Path) -> None:
    shapes = [
        "version: 1\ninstances: []\n",
        "version: 1\ninstances:\n  a: null\nusers: 3\n",
        "version: 1\ninstances:\n  a: {nodes: [[1]], admin: [], tls: 'yes', tls_client_auth: 1}\n",
        "version: 1\ninstances:\n  a: {nodes: ['h:1']}\nroles: {r: {roles: 'x', acl: 3}}\nusers: {u: {roles: {}, tokens: {}, certificates: [1]}}\n",
        "version: 1\ninstances:\n  a: {nodes: ['h:1']}\nusers: {u: {tokens: [null, {id: [1]}, {id: x, secret: {env: 1}}, {id: y, secret: {}}]}}\n",
        "version: 1\ninstances:\n  a: {nodes: ['h:1']}\nusers: {u: {certificates: [{subject: 'no equals sign'}]}}\n",
        "version: 1\ninstances:\n  a: {nodes: ['h:1']}\nusers: {u: {tokens: [{id: x, sha256: 1, created: 20261101}]}}\n",
        "version: 1\nversion: 1\n? [a, b]\n: 1\n",
        "version: 1\ninstances: !!set {a}\n",
        "[unclosed\n",
        "'just a string'\n",
        "version: .inf\n",
        "version: 1\ninstances: {a: {nodes: ['h:1'], timeout_seconds: .nan}}\n",
    ]
    for i, text in enumerate(shapes):
        f = tmp_path / f"s{i}.yaml"
        f.write_text(text)
        found = problems(f)
        assert found, text
        assert all(p.file == str(f) and p.line >= 1 for p in found), (text, found)


def test_rule_check_memoized_by_pattern_shape_says_what_the_full_check_says() -> None:
    """check_rules reuses a clean verdict across strings that differ only in plain key/channel
    patterns; every verdict and message must be what checking the real string gives."""
    from reconciler.config.core import check_rules, check_rules_uncached

    patterns = ["~app1:*", "~b", "%R~r:*", "%W~w", "%RW~x{1}", "%RR~bad", "&ch:*", "~*", "&*", "allkeys", "resetkeys", "~a b"]
    rest = ["+@read", "+@raed", "on", ">pw", "-@all +get", "(~s +get)", '"~q"', "resetchannels"]
    for p1 in patterns:
        for p2 in patterns:
            for r in rest:
                text = f"{p1} {p2} {r}"
                assert check_rules(text, "acl") == check_rules_uncached(text, "acl"), text


def test_deep_role_chain_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """3,000 roles each including the next: one problem naming the chain, no RecursionError."""
    n = 3000
    roles = "".join(f"  r{i}: {{roles: [r{i + 1}], acl: '+get'}}\n" for i in range(n - 1)) + f"  r{n - 1}: '+set'\n"
    f = write(tmp_path, HEAD + "roles:\n" + roles + "users:\n  u: {roles: [r0]}\n")
    found = [(p.line, p.path, p.message) for p in problems(f)]
    assert found == [
        (5, "roles.r0", f"role chain too deep: r0 -> r1 -> r2 -> ... -> r{n - 1} ({n} roles; at most 32 may include one another)")
    ]
    assert main(["validate", "-f", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{f}:5: roles.r0: role chain too deep: r0 -> r1 -> r2 -> ... -> r{n - 1} ({n} roles; at most 32 may include one another)"]


def test_role_chain_at_the_limit_resolves(tmp_path: Path) -> None:
    roles = "".join(f"  r{i}: {{roles: [r{i + 1}], acl: '~k{i}'}}\n" for i in range(31)) + "  r31: '+get'\n"
    state = ok(write(tmp_path, HEAD + "roles:\n" + roles + "users:\n  u: {roles: [r0]}\n"))
    assert state.users["u"].rules.split() == ["+get", *(f"~k{i}" for i in reversed(range(31)))]
