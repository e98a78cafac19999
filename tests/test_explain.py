"""`reconciler explain`: the engine's verdict and deciding rule, per node version, checked
against the server's own ACL DRYRUN (Redis 7.0+, Valkey) on every server of the matrix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.cli import Cli

from reconciler.acl import CommandTable
from reconciler.acl.explain import argv_for, explain

TOKEN = "explain-app-token-0123456789abcdef"

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
roles:
  reader: "~shared:* +@read -@dangerous"
users:
  app:
    roles: [reader]
    acl: "~orders:* +set -get &orders:events +publish"
    tokens:
      - id: t1
        secret: {{env: T_EXPLAIN_TOKEN}}
"""

# (command, keys, channels, further arguments): whole commands, as ACL DRYRUN wants them.
PROBES = [
    ("get", ["orders:1"], []),
    ("set", ["orders:1"], [], ["v"]),
    ("set", ["billing:1"], [], ["v"]),
    ("hgetall", ["billing:1"], []),
    ("hgetall", ["shared:1"], []),
    ("keys", ["*"], []),
    ("flushall", [], []),
    ("del", ["orders:1"], []),
    ("publish", [], ["orders:events"], ["hello"]),
    ("publish", [], ["other"], ["hello"]),
    ("ping", [], []),
]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("T_EXPLAIN_TOKEN", TOKEN)
    return Cli(tmp_path, capsys=capsys)


def test_explain_matches_acl_dryrun(server, run: Cli) -> None:
    run.file.write_text(FILE.format(address=server.address))
    assert run("apply", "-f", str(run.file), "--auto-approve")[0] == 0
    admin = server.admin()
    dryrun = server.id != "redis-6.2"
    for command, keys, channels, *rest in PROBES:
        values = rest[0] if rest else []
        argv = ["explain", "app", "-f", str(run.file), "--command", command]
        for k in keys:
            argv += ["--key", k]
        for c in channels:
            argv += ["--channel", c]
        for a in values:
            argv += ["--arg", a]
        rc, out, err = run(*argv)
        assert rc == 0, err
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(" ".join([command, *keys, *channels, *values]) + ":")]
        engine_allowed = ": allowed" in line
        if dryrun:
            reply = admin.execute_command("ACL", "DRYRUN", "app", command, *keys, *channels, *values)
            assert engine_allowed == (reply == "OK"), (line, reply)
            assert f"ACL DRYRUN on {server.address}: {'allowed' if reply == 'OK' else 'denied'}" in out
            assert "differs" not in out
        else:
            assert "ACL DRYRUN" not in out  # 6.2 has none
    rc, out, _ = run("explain", "app", "-f", str(run.file), "--command", "get", "--key", "orders:1")
    assert "get orders:1: denied: -get denies GET" in out
    rc, out, _ = run("explain", "app", "-f", str(run.file), "--command", "set", "--key", "billing:1")
    assert "set billing:1: denied: +set grants SET, but nothing covers billing:1 (~orders:*, ~shared:*; &orders:events)" in out
    rc, out, _ = run("explain", "app", "-f", str(run.file), "--command", "flushall")
    assert "flushall: denied: no rule grants FLUSHALL" in out
    rc, out, _ = run("explain", "app", "-f", str(run.file), "--command", "hgetall", "--key", "shared:1")
    assert "hgetall shared:1: allowed: +@read grants HGETALL; ~shared:* covers its keys/channels" in out


def test_explain_offline_every_version(run: Cli, tmp_path: Path) -> None:
    run.file.write_text(FILE.format(address="127.0.0.1:1"))
    rc, out, err = run("explain", "app", "-f", str(run.file), "--offline", "--command", "hgetall", "--key", "x")
    assert rc == 0, err
    for name in CommandTable.available():
        assert f"  {name} (bundled command table):" in out
    assert len(re.findall(r"hgetall x: denied: \+@read grants HGETALL, but nothing covers x", out)) == len(CommandTable.available())


def test_explain_unknown_user_is_one_line(run: Cli) -> None:
    run.file.write_text(FILE.format(address="127.0.0.1:1"))
    rc, _, err = run("explain", "nobody", "-f", str(run.file), "--offline")
    assert rc == 1 and err.strip().count("\n") == 0 and "user nobody is not declared" in err


def test_deciding_rule_is_the_last_flip() -> None:
    t = CommandTable.bundled("redis-7.0.15")
    v = explain("+@all -@dangerous +flushall ~*", t, argv_for("flushall", None, None))
    assert v.allowed and v.command_rule == "+flushall" and v.reason == "allowed: +flushall grants FLUSHALL"
    v = explain("+@all -@dangerous ~*", t, ["flushall"])
    assert not v.allowed and v.command_rule == "-@dangerous"
    v = explain("~*", t, ["get", "k"])
    assert not v.allowed and v.command_rule == "" and "no rule grants GET" in v.reason
    v = explain("+client|list", t, argv_for("client|list", None, None))
    assert v.allowed and v.command_rule == "+client|list"


def test_explain_says_when_live_differs_and_plan_target(server_factory, run: Cli) -> None:
    srv = server_factory("valkey-9.1")
    text = FILE.format(address=srv.address) + '  other:\n    acl: "+ping"\n'
    run.file.write_text(text)
    rc, out, _ = run("explain", "app", "-f", str(run.file))
    assert rc == 0 and "on the server: not yet (apply creates it)" in out
    assert run("apply", "-f", str(run.file), "--auto-approve")[0] == 0
    rc, out, _ = run("explain", "app", "-f", str(run.file))
    assert "on the server (on): the same permissions" in out
    srv.admin().execute_command("ACL", "SETUSER", "app", "+flushall")
    srv.admin().execute_command("ACL", "SETUSER", "other", "+get")
    rc, out, _ = run("explain", "app", "-f", str(run.file), "--command", "flushall")
    assert "on the server (on): different permissions" in out
    assert "flushall: denied: no rule grants FLUSHALL" in out and "ACL DRYRUN on" in out and "allowed  (differs" in out

    # plan --target: only the named user's changes.
    rc, out, _ = run("plan", "-f", str(run.file), "--detailed-exitcode", "--target", "other")
    assert rc == 2 and "~ user other" in out and "user app" not in out
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in out
    rc, out, _ = run("plan", "-f", str(run.file), "--detailed-exitcode")
    assert rc == 2 and "Plan: 0 to add, 2 to change, 0 to destroy." in out
    rc, _, err = run("plan", "-f", str(run.file), "--target", "other", "--out", str(run.dir / "p.json"))
    assert rc == 1 and "--out saves whole plans only" in err and not (run.dir / "p.json").exists()
    rc, _, err = run("plan", "-f", str(run.file), "--target", "nobody")
    assert rc == 1 and "--target: nobody is neither declared" in err
