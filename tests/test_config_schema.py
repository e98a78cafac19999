"""The JSON Schema file itself, a full example using every key, and examples/*.yaml."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from support.cli import Cli, Result

from reconciler.config import load

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "schemas" / "desired-state.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
MODELINE = "# yaml-language-server: $schema=../schemas/desired-state.schema.json"

EXAMPLE_ENV = {
    "DEMO_NODE": "127.0.0.1:6399",
    "DEMO_ADMIN_TOKEN": "demo-Admin-token-0001",
    "DEMO_ORDERS_TOKEN": "demo-Orders-token-0002",
    "DEMO_ORDERS_TOKEN_OLD": "demo-Orders-token-0001",
    "DEMO_REPORTS_TOKEN": "demo-Reports-token-0003",
    "CLUSTER_ADMIN_TOKEN": "cluster-Admin-token-0004",
}


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"].endswith("/desired-state.schema.json")


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        target = SCHEMA
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def _walk(node, path="#"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def test_every_property_has_a_description_and_objects_are_closed() -> None:
    missing, open_objects, checked = [], [], 0
    for path, node in _walk(SCHEMA):
        if "/properties/" in path and path.rsplit("/", 2)[-2] == "properties":
            checked += 1
            if "description" not in node and "description" not in _resolve(node):
                missing.append(path)
        if node.get("type") == "object" and "additionalProperties" not in node:
            open_objects.append(path)
        if node.get("type") == "object" and node.get("additionalProperties") is True:
            open_objects.append(path)
    assert checked > 40
    assert missing == []
    assert open_objects == []


def test_error_messages_are_editor_compatible() -> None:
    # yaml-language-server shows `errorMessage` and expects a string; per-keyword wording
    # lives in `x-errorMessages`, which editors ignore.
    found = [(p, n["errorMessage"]) for p, n in _walk(SCHEMA) if "errorMessage" in n]
    assert len(found) >= 10
    assert all(isinstance(m, str) for _, m in found)


@pytest.mark.parametrize(
    "ref, good, bad",
    [
        ("sha256", ["5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"],
         ["5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8", "abc", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8a"]),
        ("hostPort", ["10.0.0.5:6379", "cache.internal:6380", "[2001:db8::5]:6379", "[::1]:1", "localhost:7000"],
         ["10.0.0.5", ":6379", "2001:db8::5:6379", "host:port", "[2001:db8::5]", "a b:1", "host:123456"]),
        ("date", ["2026-11-01"], ["2026-1-1", "01/02/2026", "2026-11-01T00:00:00"]),
    ],
)
def test_patterns(ref: str, good: list[str], bad: list[str]) -> None:
    v = Draft202012Validator({"$ref": f"#/$defs/{ref}", "$defs": SCHEMA["$defs"]})
    assert [g for g in good if not v.is_valid(g)] == []
    assert [b for b in bad if v.is_valid(b)] == []


FULL_EXAMPLE = """\
version: 1
policies:                       # all optional
  token_max_age_days: 90        # drift flags older tokens (age from `created`)
  expiry_warning_days: 14       # drift flags tokens/certs expiring sooner
  min_token_length: 32          # checked where the plaintext is known
  forbid_nopass: true
  max_delete_percent: 30        # apply refuses to delete more users than this share without --force
instances:
  cache-prod:
    provider: redis             # redis (ACL commands, default) | redis-software (REST) | memorystore (API)
    nodes: ["10.0.0.5:6379"]    # seed nodes; cluster members and replicas are discovered
    tls: {ca_file: ca.pem, cert_file: admin.pem, key_file: admin.key}   # optional
    admin: {username: reconciler, secret: {env: CACHE_ADMIN_TOKEN}}
    auth_mode: token            # token: default user must not be nopass | none
    tls_client_auth: {required: true, user_field: CN}   # mTLS subject -> user (Valkey >= 9.0, Redis >= 8.6)
    persist: auto               # auto | acl-save | config-rewrite | none
    prune: false                # true: delete live users not in this file
roles:
  reader: "~* +@read -@dangerous"
users:
  app-orders:
    instances: [cache-prod]     # default: every instance
    enabled: true
    roles: [reader]
    acl: "~orders:* +@write -flushall"   # ACL SETUSER permission rules only
    tokens:
      - id: 2026-11
        secret: {env: ORDERS_TOKEN}      # or {file: path}
        created: 2026-11-01
        expires: 2027-02-01
      - id: 2026-08
        sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
  app-billing:
    acl: "~billing:* +@all -@dangerous"
    certificates:               # cert-only user: no password can log in (resetpass)
      - subject: "CN=app-billing,OU=payments,O=Acme,C=US"
        cert_file: certs/app-billing.pem   # optional; gives expiry to drift
"""


def test_full_example_is_valid(tmp_path: Path) -> None:
    from reconciler.config.yamlsrc import parse

    # every key of the full example, cert_file included, is accepted by the schema
    assert list(Draft202012Validator(SCHEMA).iter_errors(parse(FULL_EXAMPLE).data)) == []
    f = tmp_path / "access.yaml"
    # cert_file is read at load time (certificate inventory); this example's file does not exist
    f.write_text(FULL_EXAMPLE.replace("        cert_file: certs/app-billing.pem   # optional; gives expiry to drift\n", ""))
    env = {"CACHE_ADMIN_TOKEN": "x", "ORDERS_TOKEN": "o" * 16 + "O" * 16 + "1!"}
    state = load(str(f), today=date(2026, 11, 23), environ=env)
    assert state.users["app-orders"].rules == "~* +@read -@dangerous ~orders:* +@write -flushall"
    assert state.users["app-billing"].certificate_only
    assert state.instances["cache-prod"].admin.secret.reveal() == "x"


# The examples carry real dates (a token created 2026-11-01 that expires 2027-11-01), so they are
# judged against the day they were written for: by the calendar they would fail CI one day with no
# change to the code. Moving this day forward is how to check that they still read as meant.
EXAMPLES_DAY = date(2026, 11, 23)


@pytest.mark.parametrize("name", ["quickstart", "mtls", "cluster"])
def test_example_is_valid(name: str) -> None:
    path = ROOT / "examples" / f"{name}.yaml"
    assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE
    state = load(str(path), today=EXAMPLES_DAY, environ=EXAMPLE_ENV)
    assert state.instances and state.users


def test_quickstart_shape() -> None:
    state = load(str(ROOT / "examples" / "quickstart.yaml"), today=EXAMPLES_DAY, environ=EXAMPLE_ENV)
    (inst,) = state.instances.values()
    assert inst.nodes == ("127.0.0.1:6399",)
    assert inst.admin.secret.reveal() == EXAMPLE_ENV["DEMO_ADMIN_TOKEN"]
    assert len(state.users) == 2
    rotating = [u for u in state.users.values() if len(u.tokens) == 2]
    assert len(rotating) == 1 and all(u.roles for u in state.users.values())


def test_mtls_shape() -> None:
    state = load(str(ROOT / "examples" / "mtls.yaml"), today=EXAMPLES_DAY, environ={})
    inst = state.instances["payments"]
    assert inst.tls and inst.tls.ca_file == str(ROOT / "examples" / "certs" / "ca.pem")
    assert inst.tls_client_auth.user_field == "CN"
    assert state.users["app-billing"].certificate_only


def test_cluster_shape() -> None:
    state = load(str(ROOT / "examples" / "cluster.yaml"), today=EXAMPLES_DAY, environ=EXAMPLE_ENV)
    inst = state.instances["sessions"]
    assert len(inst.nodes) == 6 and inst.prune and inst.topology == "cluster"


def test_validate_cli_on_quickstart() -> None:
    proc = Cli(ROOT, env={**EXAMPLE_ENV, "RECONCILER_TODAY": EXAMPLES_DAY.isoformat()})("validate", "-f", "examples/quickstart.yaml")
    assert proc.code == 0, proc.err
    assert proc.out == "examples/quickstart.yaml: ok (1 instances, 2 users, 3 tokens)\n"
    assert proc.err == ""
    for value in EXAMPLE_ENV.values():
        assert value not in proc.out + proc.err


def test_validate_cli_allow_expired(tmp_path: Path) -> None:
    f = tmp_path / "old.yaml"
    f.write_text(
        "version: 1\ninstances:\n  c: {nodes: ['h:1']}\nusers:\n  u:\n    tokens:\n"
        "      - {id: t, sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8, expires: 2020-01-01}\n"
    )
    cli = Cli(ROOT, env={})

    def run(*extra: str) -> Result:
        return cli("validate", "-f", str(f), *extra)

    bad = run()
    assert bad.code == 1 and "expired on 2020-01-01" in bad.err
    good = run("--allow-expired")
    assert good.code == 0 and good.out == f"{f}: ok (1 instances, 1 users, 1 tokens)\n"


# -- the fast verdict (fastjsonschema) agrees with jsonschema ------------------------------------

import copy  # noqa: E402 - the property tests below are a section of their own

from hypothesis import HealthCheck, given, settings  # noqa: E402 - the property tests below are a section of their own
from hypothesis import strategies as st  # noqa: E402 - the property tests below are a section of their own

from reconciler.config import schema as schema_module  # noqa: E402 - the property tests below are a section of their own
from reconciler.config.yamlsrc import SourceError, parse  # noqa: E402 - the property tests below are a section of their own

_REPO = Path(__file__).resolve().parent.parent
_CORPUS = sorted(
    [*(_REPO / "examples").glob("*.yaml"), *(_REPO / "tests" / "malformed").glob("*.yaml"),
     *(_REPO / "plan-fixtures").glob("*/desired.yaml")]
)


def _data(path: Path):
    try:
        return parse(path.read_text(encoding="utf-8")).data
    except (SourceError, UnicodeDecodeError, ValueError):
        return None


def _jsonschema_valid(data) -> bool:
    return not any(True for _ in schema_module.validator().iter_errors(data))


@pytest.mark.parametrize("path", _CORPUS, ids=lambda p: str(p.relative_to(_REPO)))
def test_fast_verdict_agrees_on_corpus(path: Path) -> None:
    data = _data(path)
    if data is None:  # not YAML at all: the schema never sees it
        assert path.parent.name == "malformed"
        return
    assert schema_module.is_valid_fast(data) == _jsonschema_valid(data)


_VALID = [d for d in (_data(p) for p in _CORPUS if p.parent.name != "malformed") if d is not None and _jsonschema_valid(d)]
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.text(max_size=6),
    st.sampled_from(["on", "token", "none", "CN", "optional", "true", "auto", "acl-save", "2026-13-01",
                     "127.0.0.1:6379", "[::1]:1", "h:0", "x" * 64, "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"]),
    st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.sampled_from(["env", "file", "x", "id"]), st.text(max_size=3), max_size=2),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_verdict_agrees_on_mutations(data) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(_VALID)))
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(_LEAVES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.sampled_from(["zz", "tokens", "acl", "prune", "discover", "sha256"]))] = data.draw(_LEAVES)
    assert schema_module.is_valid_fast(doc) == _jsonschema_valid(doc)


def test_fast_verdict_on_every_combination_of_token_sources() -> None:
    """The fast validator rewrites the token's oneOf (secret | sha256 | sink) without exceptions;
    every combination of the three keys gets the same verdict as jsonschema's oneOf."""
    import itertools

    values = {"secret": {"env": "T"}, "sha256": "a" * 64, "sink": {"file": "t.txt"}}
    verdicts = {}
    for n in range(4):
        for keys in itertools.combinations(values, n):
            token = {"id": "t1", **{k: values[k] for k in keys}}
            doc = {"version": 1, "instances": {"c": {"nodes": ["h:1"]}}, "users": {"u": {"tokens": [token]}}}
            verdicts[keys] = schema_module.is_valid_fast(doc)
            assert verdicts[keys] == _jsonschema_valid(doc), keys
    assert [k for k, ok in verdicts.items() if ok] == [("secret",), ("sha256",), ("sink",)]
