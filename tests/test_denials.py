"""`reconciler denials` and `drift --denials` against real servers, with real clients producing
each kind of denial (command, key, channel, failed AUTH) on a primary, a replica and every
member of a 3+3 cluster, on every server of the matrix and Redis 8.6.

- a tightening applied, then the application's now-refused command: marked as caused by it;
- a client still on a rotated-out token: its failed AUTH tied to that rotation ("likely");
- a name the file does not declare: probing; a wrapped ring buffer: lossy;
- exit 0 none / 2 found / 1 a node not read; every node read under the instance's deadline;
- no password in any ACL LOG entry (checked raw on every version) nor in any output.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
from servers import MATRIX, RunningServer, no_retry
from support.cli import Cli
from support.cluster import ADMIN_PASSWORD, REGISTRY, Deployment, admin, needed_keys, reset_acls, set_password

from reconciler.errors import LiveError
from reconciler.model import Admin, Instance
from reconciler.providers.redis import acllog
from reconciler.providers.redis import read as live

pytestmark = pytest.mark.server

try:  # redis-py 7+: driver_info=None sends no CLIENT SETINFO (lib_name=None is deprecated there)
    from redis.driver_info import DriverInfo  # noqa: F401

    NO_SETINFO: dict = {"driver_info": None}
except ImportError:
    NO_SETINFO = {"lib_name": None, "lib_version": None}

SERVERS = MATRIX
ORDERS = "denials-orders-plaintext-5d1e9b3a7c2f4608"
ORDERS_OLD = "denials-orders-old-plaintext-8a2c4e6f1b3d5790"
# What the clients try: none of it may appear in a log entry or an output.
TRIED = ("tried-wrong-password-1f2e3d4c5b6a7980", "tried-probe-password-0a9b8c7d6e5f4321")

FILE = """\
version: 1
audit_log: audit.jsonl
instances:
  cache:
    nodes: [{{env: T_SEED}}]
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
    timeout_seconds: 5
users:
  app-orders:
    acl: "{acl}"
    tokens:
{tokens}"""
NEW_TOKEN = "      - id: 2026-11\n        secret: {env: T_ORDERS}\n"
OLD_TOKEN = "      - id: 2026-08\n        secret: {env: T_ORDERS_OLD}\n"
ACL = "~orders:* &orders.* +get +set +publish +ping"


def file_text(acl: str = ACL, tokens: str = NEW_TOKEN) -> str:
    return FILE.format(acl=acl, tokens=tokens)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Deployment:
    dep = REGISTRY.get(tuple(request.param), needed_keys(request.session))
    reset_acls(dep)
    for s in dep.nodes:
        c = admin(s)
        try:
            c.execute_command("ACL", "LOG", "RESET")  # earlier tests' denials are not this test's
        finally:
            c.close()
    return dep


def protected(server_factory, server_id: str) -> RunningServer:
    """A fresh server whose `default` (the file's admin) has the admin password."""
    srv = server_factory(server_id)
    admin(srv).execute_command("ACL", "SETUSER", "default", "on", f">{ADMIN_PASSWORD}")
    set_password(srv, ADMIN_PASSWORD)
    return srv


def cli_for(tmp_path: Path, seed: str, admin_password: str = ADMIN_PASSWORD) -> Cli:
    env = {"T_SEED": seed, "T_ADMIN": admin_password, "T_ORDERS": ORDERS, "T_ORDERS_OLD": ORDERS_OLD, "NO_COLOR": "1"}
    return Cli(tmp_path, env=env)


def app(srv: RunningServer, password: str = ORDERS, user: str = "app-orders", **kw) -> redis.Redis:
    # No CLIENT SETINFO on connect: the apps here run only what each test means them to.
    return srv.client(user, password, retry=no_retry(), **NO_SETINFO, **kw)


def refused(call) -> None:
    with pytest.raises((redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        call()


def failed_auth(srv: RunningServer, user: str, password: str) -> None:
    c = app(srv, password, user)
    try:
        refused(c.ping)
    finally:
        c.close()


def each_kind(srv: RunningServer, tag: str) -> None:
    """A command, a key, a channel refused for app-orders, a failed AUTH of app-orders and a probe."""
    c = app(srv)
    try:
        refused(lambda: c.execute_command("KEYS", "*"))
        refused(lambda: c.get(f"billing:{tag}"))
        refused(lambda: c.publish(f"billing.{tag}", "x"))
    finally:
        c.close()
    failed_auth(srv, "app-orders", TRIED[0])
    failed_auth(srv, f"root-{tag}", TRIED[1])


def raw_log(srv: RunningServer) -> str:
    c = admin(srv)
    try:
        return json.dumps(c.execute_command("ACL", "LOG"), default=str)
    finally:
        c.close()


def report(cli: Cli, *extra: str, expect: int | tuple[int, ...] = 2) -> dict:
    rc, out, err = cli("denials", "-f", str(cli.file), "--format", "json", *extra, expect=expect)
    return json.loads(out)


def rows(doc: dict, instance: str = "cache") -> list[dict]:
    return next(i for i in doc["instances"] if i["name"] == instance)["denials"]


def row(doc: dict, reason: str, obj: str = "", user: str = "app-orders") -> dict:
    matches = [d for d in rows(doc) if d["reason"] == reason and d["user"] == user and (d["object"] == obj or reason == "auth")]
    assert len(matches) == 1, (reason, obj, user, rows(doc))
    return matches[0]


def no_secret_anywhere(cli: Cli, *more: str) -> None:
    text = "\n".join(cli.outputs + list(more))
    for secret in (*TRIED, ORDERS, ORDERS_OLD, ADMIN_PASSWORD):
        assert secret not in text
        assert secret[:12] not in text


# -- every kind, on a primary and a replica, every version --------------------------------------


@pytest.mark.parametrize("deployment", [pytest.param((s, "replicated"), id=s) for s in SERVERS], indirect=True)
def test_each_kind_on_a_primary_and_a_replica(deployment: Deployment, tmp_path: Path) -> None:
    primary, replica = deployment.primaries()[0], deployment.replicas()[0]
    cli = cli_for(tmp_path, primary.address)
    cli.apply(file_text(), expect=0)
    for s in deployment.nodes:
        admin(s).execute_command("ACL", "LOG", "RESET")  # the apply's own reads are not the subject
    cli("denials", "-f", str(cli.file), expect=0)  # nothing refused yet

    each_kind(primary, "p")
    each_kind(replica, "r")
    doc = report(cli)
    for reason, obj in (("key", "billing:p"), ("channel", "billing.p")):
        d = row(doc, reason, obj)
        assert dict(d["nodes"]) == {primary.address: 1} and d["declared"] and not d["unintended"], d
    for reason, obj in (("key", "billing:r"), ("channel", "billing.r")):
        assert dict(row(doc, reason, obj)["nodes"]) == {replica.address: 1}
    keys = row(doc, "command", "keys")  # one row for both nodes
    assert dict(keys["nodes"]) == {primary.address: 1, replica.address: 1} and keys["count"] == 2 and not keys["unintended"]
    auth = row(doc, "auth")
    assert set(dict(auth["nodes"])) == {primary.address, replica.address}
    assert auth["declared"] and auth["unintended"] and not auth["probing"] and auth["clients"] == ["127.0.0.1"]
    for tag, node in (("p", primary), ("r", replica)):
        probe = row(doc, "auth", user=f"root-{tag}")
        assert probe["probing"] and dict(probe["nodes"]) == {node.address: probe["count"]}
    assert doc["summary"]["probing"] == ["root-p", "root-r"]
    exact = primary.server == "valkey" or tuple(int(x) for x in primary.version.split(".")[:2]) >= (7, 2)
    assert keys["exact"] is exact and (keys["first"] is not None) is exact
    assert bool(doc["instances"][0]["approximate"]) is not exact

    rc, text, _ = cli("denials", "-f", str(cli.file), expect=2)
    assert "probing: not a user of the file" in text and "declared user: a wrong or old token" in text
    md = cli("denials", "-f", str(cli.file), "--format", "markdown", expect=2).out
    assert md.startswith("## reconciler denials: ") and "| cache |" in md
    # ACL LOG keeps the name tried, never the password: checked on the raw log of each version.
    for s in (primary, replica):
        log = raw_log(s)
        assert "root-" in log and not any(t in log for t in TRIED)
    no_secret_anywhere(cli)


# -- every member of a 3+3 cluster keeps its own log ------------------------------------------


@pytest.mark.parametrize("deployment", [pytest.param((s, "cluster"), id=s) for s in SERVERS], indirect=True)
def test_every_cluster_member_is_read(deployment: Deployment, tmp_path: Path) -> None:
    cli = cli_for(tmp_path, deployment.nodes[0].address)
    cli.apply(file_text(), expect=0)
    for s in deployment.nodes:
        admin(s).execute_command("ACL", "LOG", "RESET")
    for s in deployment.nodes:  # a client per member: ACL checks come before the cluster's redirect
        c = app(s)
        try:
            refused(lambda c=c: c.execute_command("KEYS", "*"))
            refused(lambda c=c, s=s: c.get(f"billing:{s.port}"))
            refused(lambda c=c, s=s: c.publish(f"billing.{s.port}", "x"))
        finally:
            c.close()
    replica = deployment.replicas()[0]
    failed_auth(replica, "app-orders", TRIED[0])
    failed_auth(replica, "intruder", TRIED[1])
    doc = report(cli)
    assert len(doc["instances"][0]["nodes"]) == 6 and not doc["summary"]["errors"]
    keys = row(doc, "command", "keys")
    assert keys["count"] == 6 and {a for a, _ in keys["nodes"]} == {s.address for s in deployment.nodes}
    for s in deployment.nodes:
        assert dict(row(doc, "key", f"billing:{s.port}")["nodes"]) == {s.address: 1}
        assert dict(row(doc, "channel", f"billing.{s.port}")["nodes"]) == {s.address: 1}
    assert set(dict(row(doc, "auth")["nodes"])) == {replica.address}
    assert row(doc, "auth", user="intruder")["probing"]
    assert "intruder" in raw_log(replica) and not any(t in raw_log(replica) for t in TRIED)
    no_secret_anywhere(cli)


# -- what a change broke -----------------------------------------------------------------------

TIE_SERVERS = [pytest.param(s, id=s) for s in ("redis-6.2", "valkey-9.1")]  # no entry ids / entry ids


@pytest.mark.parametrize("server_id", TIE_SERVERS)
def test_a_tightening_marks_the_now_refused_command_as_caused_by_it(server_factory, server_id: str, tmp_path: Path) -> None:
    srv = protected(server_factory, server_id)
    cli = cli_for(tmp_path, srv.address)
    broad = "~orders:* +@all -@dangerous"
    cli.apply(file_text(acl=broad), expect=0)
    c = app(srv)
    c.execute_command("SCAN", "0")
    c.get("orders:archive:1")
    refused(c.flushall)  # never allowed: a denial the file intends
    time.sleep(1.1)  # the tightening comes strictly after the FLUSHALL denial began
    narrow = "~orders:live:* +get +set +expire +ping"
    out = cli.apply(file_text(acl=narrow), expect=0).out
    # The plan summarises what so wide a tightening revokes ("... and N more"); the tie does not depend on it.
    assert " more\n" in out and "- keys orders:*" in out
    for _ in range(3):
        refused(lambda: c.execute_command("SCAN", "0"))
    refused(lambda: c.get("orders:archive:1"))
    c.close()

    doc = report(cli)
    scan, key, flushall = row(doc, "command", "scan"), row(doc, "key", "orders:archive:1"), row(doc, "command", "flushall")
    assert scan["count"] == 3 and scan["cause"]["words"] == "- revokes SCAN" and scan["unintended"]
    assert key["cause"]["words"] == "- keys orders:*" and key["cause"]["likely"] == ""
    assert flushall["cause"] is None and not flushall["unintended"]
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    update = next(r for r in audit if r["action"] == "update" and r["user"] == "app-orders")
    # In the plan's words (every line as the plan showed it), plus every revoked command.
    assert "- keys orders:*" in update["permissions"] and all(f"  {line}\n" in out for line in update["permissions"])
    assert not any("SCAN" in line for line in update["permissions"]) and "scan" in update["revoked_commands"]

    text = cli("denials", "-f", str(cli.file), expect=2).out
    caused, rest = text.split("\nInstance cache", 1)
    assert 'app-orders: command SCAN refused 3 times since "- revokes SCAN" at ' in caused
    assert 'app-orders: key orders:archive:1 refused 1 time since "- keys orders:*" at ' in caused
    assert "FLUSHALL" not in caused and "command FLUSHALL" in rest
    md = cli("denials", "-f", str(cli.file), "--format", "markdown", expect=2).out
    assert md.index("**Caused by a change**") < md.index("| Instance |") < md.index("<details>")

    # drift --denials: exit 2 for them though the servers match the file.
    assert cli.plan()[0] == 0
    rc, out, _ = cli("drift", "-f", str(cli.file), "--denials", "--format", "json")
    doc = json.loads(out)
    assert rc == 2 and doc["drift"]["changes"] is False and doc["drift"]["unintended_denials"] == 2
    rc, md, _ = cli("drift", "-f", str(cli.file), "--denials", "--format", "markdown", "--max-chars", "1500")
    assert rc == 2 and len(md) <= 1500 and md.startswith("## reconciler drift: no changes; 2 unintended denials\n"), md
    # The denials' head (what a change caused, the table) is whole; their details are cut to fit, like plans.
    assert "**Caused by a change**" in md and "| cache | " in md and "left out" in md and "Full report: " in md, md
    assert cli("drift", "-f", str(cli.file), "--since", "1h", expect=1).err.strip() == "reconciler: --since and --audit-log go with --denials"
    no_secret_anywhere(cli)


@pytest.mark.parametrize("server_id", TIE_SERVERS)
def test_a_client_on_a_rotated_out_token_shows_with_the_rotation(server_factory, server_id: str, tmp_path: Path) -> None:
    srv = protected(server_factory, server_id)
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(tokens=OLD_TOKEN + NEW_TOKEN), expect=0)
    app(srv, ORDERS_OLD).ping()  # the app still on 2026-08
    cli.apply(file_text(tokens=NEW_TOKEN), expect=0)  # the rotation ends: 2026-08 removed
    for _ in range(4):
        failed_auth(srv, "app-orders", ORDERS_OLD)
    failed_auth(srv, "ghost", TRIED[1])

    doc = report(cli)
    auth = row(doc, "auth")
    assert auth["count"] == 4 and auth["clients"] == ["127.0.0.1"]
    assert auth["cause"]["words"].startswith("token 2026-08 (sha256:") and auth["cause"]["words"].endswith("was removed")
    assert auth["cause"]["likely"].startswith("ACL LOG does not say which password was tried")
    assert row(doc, "auth", user="ghost")["probing"] and row(doc, "auth", user="ghost")["cause"] is None
    text = cli("denials", "-f", str(cli.file), expect=2).out
    caused = text.split("\nInstance cache", 1)[0]
    assert "app-orders: 4 failed AUTH from 127.0.0.1 since token 2026-08 (sha256:" in caused and "likely:" in caused
    no_secret_anywhere(cli)


# -- lossy logs, exit codes, deadlines, hostile input --------------------------------------------


@pytest.mark.parametrize("server_id", [pytest.param(s, id=s) for s in ("redis-6.2", "redis-8.0")])
def test_a_wrapped_ring_buffer_is_reported_lossy(server_factory, server_id: str, tmp_path: Path) -> None:
    srv = protected(server_factory, server_id)
    a = admin(srv)
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(), expect=0)
    a.execute_command("ACL", "LOG", "RESET")
    c = app(srv)
    for i in range(25):  # more than the 10 entries a bare ACL LOG answers: every one is read
        refused(lambda i=i: c.get(f"all:{i}"))
    doc = report(cli)
    # (6.2 also logs the CLIENT subcommand redis-py sends on connect: the container is checked first)
    assert sum(1 for d in rows(doc) if d["object"].startswith("all:")) == 25
    assert doc["instances"][0]["nodes"][0]["lossy"] == ""

    a.config_set("acllog-max-len", "4")
    a.execute_command("ACL", "LOG", "RESET")
    for i in range(10):  # ten distinct denials: six fall out of a four-entry log
        refused(lambda i=i: c.get(f"billing:{i}"))
    c.close()
    doc = report(cli, "--since", "1h")
    (node,) = doc["instances"][0]["nodes"]
    assert node["lossy"].startswith("log full (4 entries, acllog-max-len 4): denials last seen before ")
    assert sum(d["count"] for d in rows(doc)) == 4 and all(d["object"].startswith("billing:") for d in rows(doc))
    if server_id == "redis-8.0":  # the server's own counters say exactly how many (25 earlier ones too)
        assert "counted 31 more denials since it started than its log holds" in node["lossy"]
    text = cli("denials", "-f", str(cli.file), expect=2).out
    assert f"! {srv.address}: lossy: log full" in text and "1 lossy log" in text


def test_exit_codes_and_a_node_that_cannot_be_read(server_factory, tmp_path: Path) -> None:
    up, down = protected(server_factory, "valkey-9.1"), protected(server_factory, "valkey-9.1")
    two = file_text().replace(
        "users:",
        "  other:\n    nodes: [{env: T_OTHER}]\n    admin: {username: default, secret: {env: T_ADMIN}}\n    timeout_seconds: 2\nusers:",
    )
    cli = cli_for(tmp_path, up.address)
    cli.env["T_OTHER"] = down.address
    cli.apply(two, expect=0)
    for s in (up, down):
        admin(s).execute_command("ACL", "LOG", "RESET")
    assert cli("denials", "-f", str(cli.file), expect=0).out.startswith("reconciler denials: no denials\n")
    failed_auth(up, "nobody", TRIED[1])
    assert cli("denials", "-f", str(cli.file), "--instance", "other", expect=0)
    down.stop()
    rc, out, err = cli("denials", "-f", str(cli.file), expect=1)
    assert "Instance cache (" in out and "nobody" in out  # what could be read is still shown
    assert "Instance other: not read: " in out
    assert err.startswith("reconciler: other: ") and len(err.strip().splitlines()) == 1
    rc, out, err = cli("denials", "-f", str(cli.file), "--since", "yesterday", expect=1)
    assert "--since 'yesterday': expected a duration" in err


def test_a_stopped_node_is_cut_off_by_the_instance_deadline(server_factory) -> None:
    srv = server_factory("valkey-9.1")
    instance = Instance(name="cache", nodes=(srv.address,), admin=Admin(), timeout_seconds=1.0)
    client = live.connect(instance, srv.address)
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(LiveError, match=r"cache 127\.0\.0\.1:\d+: timed out after 1 s \(ACL LOG\)"):
            acllog.read_node(instance, srv.address, client, "primary")
        assert time.monotonic() - start < 3
    finally:
        os.kill(srv.pid, signal.SIGCONT)
        client.close()


def test_hostile_names_and_a_token_sent_as_a_user_name(server_factory, tmp_path: Path) -> None:
    srv = protected(server_factory, "redis-7.0")
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(), expect=0)
    c = app(srv, decode_responses=False)
    refused(lambda: c.get(b"\x1b[2J\x1b[31mred\nline"))
    refused(lambda: c.get(b"bin\xff\xfe"))
    refused(lambda: c.get(b"```<b>x</b>"))
    c.close()
    failed_auth(srv, ORDERS, "whatever")  # a client that swapped user name and token
    for fmt in ("text", "markdown", "json"):
        out = cli("denials", "-f", str(cli.file), "--format", fmt, expect=2).out
        assert "\x1b" not in out and ORDERS not in out
        if fmt != "json":  # JSON is data: its strings are escaped by JSON's rules
            assert "```<b>" not in out and "<b>" not in out
    text = cli("denials", "-f", str(cli.file), expect=2).out
    assert '"\\u001b[2J\\u001b[31mred\\nline"' in text and '"bin\\udcff\\udcfe"' in text
    assert "(redacted)" in text  # the token, tried as a name, is cut by value
    no_secret_anywhere(cli)


def test_managed_instances_say_in_one_line_that_they_have_no_acl_log(server_factory, tmp_path: Path) -> None:
    srv = protected(server_factory, "valkey-9.1")
    text = file_text() + """\
  app-managed:
    instances: [rs, rc]
    tokens:
      - id: t1
        secret: {env: T_MANAGED}
  app-ms:
    instances: [ms]
    tokens:
      - id: t1
        sink: {file: t1.token}
"""
    text = text.replace("users:", """\
  rs:
    provider: redis-software
    api: {url: "https://127.0.0.1:1", database: 1}
    admin: {username: admin@example.com, secret: {env: T_ADMIN}}
  rc:
    provider: redis-cloud
    api: {subscription: 1, database: 1}
    admin: {account_key: {env: T_ADMIN}, secret: {env: T_ADMIN}}
  ms:
    provider: memorystore
    api: {instance: projects/p/locations/l/instances/i}
users:""")
    text = text.replace("  app-orders:\n", "  app-orders:\n    instances: [cache]\n")
    cli = cli_for(tmp_path, srv.address)
    cli.env["T_MANAGED"] = "Managed-Token-1234!abcdEFGH"
    cli.write(text)
    rc, out, err = cli("denials", "-f", str(cli.file), expect=0)  # the redis instance read, the others said
    assert f"Instance cache (1 node: {srv.address} primary; Valkey " in out
    assert "Instance rs: ACL LOG is not available: Redis Software databases refuse ACL LOG" in out
    assert "Instance rc: ACL LOG is not available: Redis Cloud databases refuse ACL LOG" in out
    assert "Instance ms: ACL LOG is not available: Memorystore for Valkey refuses ACL commands" in out
    assert err == ""


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_a_token_with_quotes_sent_as_a_user_name_or_a_key_is_cut_whole(server_factory, tmp_path: Path) -> None:
    # Once escaped for display (`"` as `\"`, `<` as `\u003c`), a token no longer reads as itself:
    # redacting the output redacted its first characters and printed the rest.
    quoted = 'orders-token-Zx8"q<w>&`9kLmN0pQ\\tail-5d1e9b3a'
    tail = "9kLmN0pQ"
    srv = protected(server_factory, "valkey-9.1")
    cli = cli_for(tmp_path, srv.address)
    cli.env["T_ORDERS"] = quoted
    cli.apply(file_text(), expect=0)
    c = app(srv, quoted)
    refused(lambda: c.get(quoted))  # a key outside orders:*, named by the token
    c.close()
    failed_auth(srv, quoted, "whatever")  # user name and token swapped
    for fmt in ("text", "markdown", "json"):
        out = cli("denials", "-f", str(cli.file), "--format", fmt, expect=2).out
        assert tail not in out and "(redacted)" in out
        if fmt == "json":
            strings = _strings(json.loads(out))
            assert not any(tail in s or "Zx8" in s for s in strings)
            assert "(redacted)" in [d["object"] for d in json.loads(out)["instances"][0]["denials"] if d["reason"] == "key"]
    out = cli("drift", "-f", str(cli.file), "--denials", "--format", "json", expect=0).out  # nothing unintended
    assert not any(tail in s for s in _strings(json.loads(out)))


def test_an_audit_log_named_on_the_command_line_that_does_not_exist_is_an_error(server_factory, tmp_path: Path) -> None:
    # Without it no denial is tied to a change, and drift --denials would call the caused ones intended.
    srv = protected(server_factory, "valkey-9.1")
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(), expect=0)
    for command in (("denials",), ("drift", "--denials")):
        rc, out, err = cli(*command, "-f", str(cli.file), "--audit-log", "audit.jsnol", expect=1)
        assert err.strip() == "reconciler: --audit-log audit.jsnol: no such file"
    # The file's own audit_log: before any apply wrote it, it is only a note.
    (tmp_path / "audit.jsonl").unlink()
    assert "does not exist yet" in cli("denials", "-f", str(cli.file), expect=(0, 2)).out


@pytest.mark.parametrize("lie", ["count", "age", "string", "infinite", "ancient", "created"])
def test_a_node_that_answers_acl_log_with_nonsense_is_one_error_and_the_rest_is_reported(server_factory, tmp_path: Path, lie: str) -> None:
    from support.lying_redis import LyingRedis

    srv = protected(server_factory, "valkey-9.1")
    liar = LyingRedis(lie)
    try:
        two = file_text().replace(
            "users:",
            "  other:\n    nodes: [{env: T_OTHER}]\n    admin: {username: default, secret: {env: T_ADMIN}}\n    timeout_seconds: 2\nusers:",
        )
        cli = cli_for(tmp_path, srv.address)
        cli.env["T_OTHER"] = liar.address
        cli.file.write_text(two)
        failed_auth(srv, "nobody", TRIED[1])
        rc, out, err = cli("denials", "-f", str(cli.file), expect=1)
        assert "Instance cache (" in out and "nobody" in out  # the good node's log is still shown
        assert err.startswith(f"reconciler: other {liar.address}: ACL LOG reply not understood (")
        assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    finally:
        liar.close()


def test_drift_with_a_log_that_cannot_be_read_is_an_error_never_clean(server_factory, tmp_path: Path) -> None:
    srv = protected(server_factory, "valkey-9.1")
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(), expect=0)
    assert cli("drift", "-f", str(cli.file), "--denials", expect=0).out.startswith("reconciler drift: clean\n")
    admin(srv).execute_command("ACL", "SETUSER", "default", "-acl|log")  # the admin may no longer read the log
    rc, out, err = cli("drift", "-f", str(cli.file), "--denials", "--format", "json", expect=1)
    assert json.loads(out)["drift"]["status"] == "error" and json.loads(out)["drift"]["exit_code"] == 1
    assert "ACL LOG refused" in err and len(err.strip().splitlines()) == 1
    for fmt in ("text", "markdown"):
        out = cli("drift", "-f", str(cli.file), "--denials", "--format", fmt, expect=1).out
        assert "drift: clean" not in out and "drift: no changes; 1 ACL LOG not read" in out
        assert "No denials." not in out


def test_a_token_declared_by_its_hash_alone_sent_as_a_name_is_not_shown(server_factory, tmp_path: Path) -> None:
    # The run holds no plaintext of a token the file declares by sha256 (or of one an apply
    # removed), so redaction by value cannot catch it: the name's own hash does.
    import hashlib

    current, removed = "hash-only-token-7c1d9e2f4a6b8035", "rotated-out-token-3e5f7a9b1c2d4e60"

    def by_hash(token_id: str, plain: str) -> str:
        return f"      - id: {token_id}\n        sha256: {hashlib.sha256(plain.encode()).hexdigest()}\n"

    srv = protected(server_factory, "valkey-9.1")
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(tokens=by_hash("2026-11", current) + by_hash("2026-08", removed)), expect=0)
    cli.apply(file_text(tokens=by_hash("2026-11", current)), expect=0)  # the audit log records the removal
    c = app(srv, current)
    refused(lambda: c.get(current))  # a key outside orders:*, named by the token
    c.close()
    failed_auth(srv, current, "whatever")  # user name and token swapped
    failed_auth(srv, removed, "whatever")  # ... with the token rotation removed
    assert current in raw_log(srv) and removed in raw_log(srv)  # the server logged them as names
    for fmt in ("text", "markdown", "json"):
        out = cli("denials", "-f", str(cli.file), "--format", fmt, expect=2).out
        assert current not in out and removed not in out and "(redacted)" in out
    out = cli("drift", "-f", str(cli.file), "--denials", "--format", "json", expect=0).out
    assert current not in out and removed not in out


def test_a_database_a_change_took_away_is_marked_as_caused_by_it(server_factory, tmp_path: Path) -> None:
    # Valkey 9 database rules: SELECT of a database an apply revoked was listed but not tied, so
    # drift --denials called the ACLs and the denials clean.
    srv = protected(server_factory, "valkey-9.1")
    cli = cli_for(tmp_path, srv.address)
    cli.apply(file_text(ACL + " +select alldbs"), expect=0)
    cli.apply(file_text(ACL + " +select resetdbs db=0,1"), expect=0)
    c = app(srv)
    refused(lambda: c.execute_command("SELECT", "3"))
    c.execute_command("SELECT", "1")
    c.close()
    d = row(report(cli), "database", "3")
    assert d["cause"]["words"] == "- databases 0,1" and d["unintended"]
    assert cli("drift", "-f", str(cli.file), "--denials", expect=2).out.startswith("reconciler drift: no changes; 1 unintended denial\n")


def test_a_servers_error_text_stays_inert_in_the_report(server_factory, tmp_path: Path) -> None:
    # The error of an instance not read is printed outside any code fence in Markdown, and on
    # the terminal: a server (or whatever listens on that port) chooses its text.
    from support.lying_redis import LyingRedis

    srv = protected(server_factory, "valkey-9.1")
    liar = LyingRedis("html")
    try:
        cli = cli_for(tmp_path, srv.address)
        cli.env["T_OTHER"] = liar.address
        cli.file.write_text(file_text().replace(
            "users:",
            "  other:\n    nodes: [{env: T_OTHER}]\n    admin: {username: default, secret: {env: T_ADMIN}}\n    timeout_seconds: 2\nusers:",
        ))
        for fmt in ("text", "markdown"):
            rc, out, err = cli("denials", "-f", str(cli.file), "--format", fmt, expect=1)
            assert "Instance other" in out and "onerror" in out  # the error is still said
            for text in (out, err):
                assert "<img" not in text and "\x1b" not in text and "</details> " not in text
            assert out.count("```") % 2 == 0
            if fmt == "markdown":
                assert "[link](http" not in out and "**bold**" not in out
    finally:
        liar.close()
