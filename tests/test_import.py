"""`reconciler import` on real servers: a server holding ~40 users with varied rules, passwords
and disabled users becomes a file that validates (no secret set), plans as a no-op and applies
without a single write; certificate users on Valkey 9.1 with TLS; one seed of a replica set and
of a cluster."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from servers import CERT_USER_MAPPING, RunningServer
from support.cli import Cli, Result
from support.cluster import ADMIN_PASSWORD, REGISTRY, Deployment, admin, needed_keys, reset_acls

from reconciler import acl

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parent.parent
ADMIN = "Admin-token-import-tests-1"

RULES = [
    "+@read +@write -@dangerous ~orders:*",
    "+@all -@dangerous ~* &*",
    "+@read -keys ~reports:*",
    "-@all +get +set +del ~cache:*",
    "+@all ~*",
    "+@read ~* -@dangerous",
    "+@hash +@string -@admin ~h:*",
    "+@pubsub &chat:* &news.*",
    "+@read +config|get +info",
    "+command -command|docs +ping",
    "+@all -@dangerous +flushdb ~tmp:*",
    "+@connection",
    "+select|0 +get ~*",
    "+@write -flushall -flushdb ~w:*",
    "+@read %R~ro:* %W~wo:* ~rw:*",
    "+get ~a (~b:* +set) (%R~c:* +@read)",
    "+@all -@dangerous -config|set ~*",
    "+@stream -xadd ~s:*",
    "+@scripting -eval ~*",
    "",
]
SHARED = "+@read -@dangerous allkeys"  # on several users: a role when that is shorter


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def populate(client, table: acl.CommandTable) -> dict[str, tuple[bool, list[str], str]]:
    """~40 users: varied rules (those this version takes), 0-2 passwords, some disabled.
    -> name: (enabled, passwords, rules)."""
    rules = []
    for r in RULES:
        try:
            acl.parse(r)
            acl.effective(r, table)
        except (acl.AclSyntaxError, acl.UnsupportedRule):
            continue
        rules.append(r)
    users: dict[str, tuple[bool, list[str], str]] = {}
    for i in range(32):
        pw = [f"pw-{i}-Secret-value-xyz"] + ([f"pw-{i}-Second-value-abc"] if i % 5 == 0 else [])
        users[f"app-{i:02d}"] = (i % 7 != 3, pw if i % 11 != 4 else [], rules[i % len(rules)])
    for i in range(6):
        users[f"reader-{i}"] = (True, [f"reader-{i}-Secret-value-q"], SHARED)
    for name, (on, pws, r) in users.items():
        client.execute_command(
            "ACL", "SETUSER", name, "reset", "resetchannels", "on" if on else "off", *(f">{p}" for p in pws), *r.split()
        )
    client.execute_command("ACL", "SETUSER", "legacy-open", "reset", "on", "nopass", "+ping")
    return users


def cli(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Result:
    """As a subprocess with no secret in its environment but the ones given."""
    return Cli(cwd, env={"RECONCILER_TODAY": "2026-11-23", "NO_COLOR": "1", **(env or {})}, inherit=False)(*argv)


def writes(client) -> dict[str, int]:
    """ACL writes counted by the server since CONFIG RESETSTAT (7.0+ count subcommands apart)."""
    stats = client.info("commandstats")
    return {k: v["calls"] for k, v in stats.items() if k.split("_", 1)[1] in ("acl|setuser", "acl|deluser", "acl|save")}


def rule_chars(doc: dict) -> int:
    roles = doc.get("roles") or {}
    return sum(len(r) for r in roles.values()) + sum(len(u.get("acl", "")) for u in doc["users"].values())


def test_import_validates_plans_and_applies_as_a_no_op(server: RunningServer, tmp_path: Path) -> None:
    client = server.admin()
    client.execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    client = server.client("default", ADMIN)
    table = acl.CommandTable.read(client, server.server, server.version)
    users = populate(client, table)
    out = tmp_path / "imported.yaml"
    env = {"T_ADMIN": ADMIN}
    r = cli("import", "--node", server.address, "--admin-secret-env", "T_ADMIN", "--out", str(out), env=env)
    assert r.code == 0, r.err
    text = out.read_text()
    doc = yaml.safe_load(text)

    # a complete file: version, instance with the admin as a reference, users with enabled
    assert doc["version"] == 1
    assert doc["instances"]["imported"]["nodes"] == [server.address]
    assert doc["instances"]["imported"]["admin"] == {"username": "default", "secret": {"env": "T_ADMIN"}}
    assert ADMIN not in text and "Secret-value" not in text
    assert "legacy-open" not in doc["users"] and "# not imported: legacy-open: nopass" in text
    for name, (on, pws, _) in users.items():
        entry = doc["users"][name]
        assert entry["enabled"] is on, name
        assert sorted(t["sha256"] for t in entry["tokens"]) == sorted(sha(p) for p in pws), name
        assert all(len(t["id"]) >= 8 for t in entry["tokens"])
    assert sorted(t["sha256"] for t in doc["users"]["default"]["tokens"]) == [sha(ADMIN)]
    readers = {doc["users"][f"reader-{i}"].get("roles", [None])[0] for i in range(6)}
    assert len(readers) == 1
    role = doc["roles"][readers.pop()]  # the shortest equal form: `+@read -keys` on 6.2
    assert role.startswith("allkeys +@read -") and acl.effective(role, table) == acl.effective(SHARED, table)
    assert "~*" not in text and "resetchannels" not in text

    # validates with no secret in the environment, plans as a no-op, applies without a write
    r = cli("validate", "-f", str(out))
    assert r.code == 0, r.err
    r = cli("plan", "-f", str(out), "--detailed-exitcode", env=env)
    assert r.code == 0, r.out + r.err
    before = sorted(client.execute_command("ACL", "LIST"))
    client.execute_command("CONFIG", "RESETSTAT")
    r = cli("apply", "-f", str(out), "--auto-approve", env=env)
    assert r.code == 0, r.out + r.err
    assert sorted(client.execute_command("ACL", "LIST")) == before
    if table.has_subcommands:
        assert writes(client) == {}
    server_chars = sum(len(acl.parse_acl_list_line(line)[4]) for line in before)
    print(f"\n{server.id}: imported rules {rule_chars(doc)} characters, ACL LIST rules {server_chars}")

    # --out refuses to overwrite, unless --force
    out.write_text("# mine\n")
    r = cli("import", "--node", server.address, "--admin-secret-env", "T_ADMIN", "--out", str(out), env=env)
    assert r.code == 1 and "--force" in r.err and out.read_text() == "# mine\n"
    r = cli("import", "--node", server.address, "--admin-secret-env", "T_ADMIN", "--out", str(out), "--force", env=env)
    assert r.code == 0 and yaml.safe_load(out.read_text()) == doc


def test_import_reuses_an_instance_of_a_file(server: RunningServer, tmp_path: Path, capsys) -> None:
    server.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    client = server.client("default", ADMIN)
    client.execute_command("ACL", "SETUSER", "app", "reset", "resetchannels", "on", ">app-Secret-value-1", "~app:*", "+@read")
    src = tmp_path / "src" / "access.yaml"
    src.parent.mkdir()
    src.write_text(
        "version: 1\ninstances:\n  cache:\n    nodes: [{env: T_NODE}]\n"
        "    admin: {username: default, secret: {env: T_ADMIN}}\n    prune: false\n"
        "users:\n  other:\n    tokens: [{id: a, secret: {env: T_NOT_SET_HERE}}]\n"  # not needed to import
    )
    env = {"T_ADMIN": ADMIN, "T_NODE": server.address}
    r = cli("import", "--instance", "cache", "-f", str(src), env=env)
    assert r.code == 0, r.err
    doc = yaml.safe_load(r.out)
    assert doc["instances"] == {
        "cache": {"nodes": [{"env": "T_NODE"}], "admin": {"username": "default", "secret": {"env": "T_ADMIN"}}, "prune": False}
    }
    assert doc["users"]["app"] == {"enabled": True, "acl": "~app:* +@read", "tokens": [{"id": sha("app-Secret-value-1")[:8], "sha256": sha("app-Secret-value-1")}]}
    r = cli("import", "--admin-secret-env", "T_ADMIN", env=env)
    assert r.code == 1 and "usage: reconciler import" in r.err and "--node" in r.err
    r = cli("import", "--instance", "cache", env=env)
    assert r.code == 1 and "import needs --node HOST:PORT --admin-secret-env VAR, or --instance N -f FILE" in r.err


@pytest.mark.parametrize("server_id", CERT_USER_MAPPING)
def test_import_certificate_users_over_tls(server_factory, tmp_path: Path, server_id: str) -> None:
    srv: RunningServer = server_factory(server_id, cert_user_mapping=True)
    srv.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    client = srv.admin(username="default", password=ADMIN)
    client.execute_command("ACL", "SETUSER", "app-billing", "reset", "on", "resetpass", "~billing:*", "+@all", "-@dangerous")
    client.execute_command("ACL", "SETUSER", "app-orders", "reset", "on", ">orders-Secret-value-1", "~orders:*", "+@read")
    tls = srv.tls_config()
    assert tls is not None
    out = tmp_path / "access.yaml"
    env = {"T_ADMIN": ADMIN}
    r = cli(
        "import", "--node", srv.address, "--tls-ca", tls["ca_file"], "--tls-cert", tls["cert_file"],
        "--tls-key", tls["key_file"], "--admin-secret-env", "T_ADMIN", "--out", str(out), env=env,
    )
    assert r.code == 0, r.err
    doc = yaml.safe_load(out.read_text())
    inst = doc["instances"]["imported"]
    assert inst["tls_client_auth"] == {"required": "optional", "user_field": "CN"}
    assert (out.parent / inst["tls"]["ca_file"]).resolve() == Path(tls["ca_file"]).resolve()
    assert doc["users"]["app-billing"] == {
        "enabled": True, "acl": "~billing:* +@all -@dangerous", "certificates": [{"subject": "CN=app-billing"}]
    }
    assert cli("validate", "-f", str(out)).code == 0
    r = cli("plan", "-f", str(out), "--detailed-exitcode", env=env)
    assert r.code == 0, r.out + r.err


KEYS = [("valkey-9.1", "replicated"), ("redis-7.0", "cluster")]


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    dep = REGISTRY.get(tuple(request.param), needed_keys(request.session))
    reset_acls(dep)
    return dep


@pytest.mark.parametrize("deployment", KEYS, indirect=True, ids=lambda k: f"{k[0]}-{k[1]}")
def test_import_from_one_seed_of_a_replica_set_or_cluster(deployment: Deployment, tmp_path: Path) -> None:
    for s in deployment.nodes:  # ACLs are per node: the same users on every node
        c = admin(s)
        c.execute_command("ACL", "SETUSER", "app", "reset", "resetchannels", "on", ">app-Secret-value-1", "~app:*", "+@read", "-keys")
        c.execute_command("ACL", "SETUSER", "batch", "reset", "off", ">batch-Secret-value-1", "~*", "+@all", "-@dangerous")
        c.close()
    seed = deployment.replicas()[0]
    out = tmp_path / "access.yaml"
    env = {"T_ADMIN": ADMIN_PASSWORD}
    r = cli("import", "--node", seed.address, "--admin-secret-env", "T_ADMIN", "--out", str(out), env=env)
    assert r.code == 0, r.err
    text = out.read_text()
    assert f"{len(deployment.nodes)} nodes" in text and "other users" not in text
    doc = yaml.safe_load(text)
    assert doc["instances"]["imported"]["nodes"] == [seed.address]
    assert doc["users"]["batch"]["enabled"] is False
    assert cli("validate", "-f", str(out)).code == 0
    r = cli("plan", "-f", str(out), "--detailed-exitcode", env=env)
    assert r.code == 0, r.out + r.err
