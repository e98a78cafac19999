"""A node is a server, not a spelling.

- The record of unfinished work (`<file>.pending.json`) finds its node again when the instance
  is renamed or the node is written `localhost` instead of `127.0.0.1`; an entry that matches
  no node of the file is a finding (drift exits 2) until the operator removes it.
- One server listed by two instances is refused: at validate when the spellings can only name
  one server (`localhost` / `127.0.0.1`), at plan when the servers say so (`127.1` resolves to
  the same address and the server has one run_id), with one line and nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from servers import RunningServer, no_retry
from support.cli import Cli

ADMIN = "identity-admin-plaintext-4d6f8a0c2e1b3957"
APP = "identity-app-plaintext-7e9a1c3b5d0f2468"
SERVERS = [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-7.0", "valkey-9.1")]


def doc(instances: dict[str, str], *, user_instances: str = "") -> str:
    """instances: name -> node address as written."""
    blocks = "".join(
        f"  {name}:\n    nodes: [\"{node}\"]\n    auth_mode: none\n    admin: {{username: admin, secret: {{env: T_ADMIN}}}}\n"
        for name, node in instances.items()
    )
    scope = f"    instances: [{user_instances}]\n" if user_instances else ""
    return f"""version: 1
policies: {{forbid_nopass: false}}
instances:
{blocks}users:
  admin:
    acl: "~* &* +@all"
    tokens: [{{id: a, secret: {{env: T_ADMIN}}}}]
  app:
{scope}    acl: "~app:* +get"
    tokens: [{{id: app-1, secret: {{env: T_APP}}}}]
"""


@pytest.fixture(params=SERVERS)
def srv(request: pytest.FixtureRequest, server_factory, tmp_path: Path) -> RunningServer:
    acl_dir = tmp_path / "acl"
    acl_dir.mkdir()
    (acl_dir / "users.acl").write_text("")
    s = server_factory(request.param, extra_config=[["aclfile", str(acl_dir / "users.acl")]])
    s.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
    s.admin().execute_command("ACL", "SAVE")
    return s


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Cli:
    for k, v in {"T_ADMIN": ADMIN, "T_APP": APP, "NO_COLOR": "1", "RECONCILER_TODAY": "2026-11-23"}.items():
        monkeypatch.setenv(k, v)
    return Cli(tmp_path, capsys=capsys)


def _failed_save(srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    """An apply whose ACL SAVE fails (the aclfile's folder renamed away): the work is recorded."""
    acl_dir = tmp_path / "acl"
    acl_dir.rename(tmp_path / "acl.away")
    code, _, err = cli.apply(doc({"cache": srv.address}))
    assert code == 1 and "persist (acl-save) failed" in err
    (tmp_path / "acl.away").rename(acl_dir)


def test_pending_record_is_keyed_by_the_address_reached(srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    _failed_save(srv, cli, tmp_path)
    record = json.loads((tmp_path / "access.pending.json").read_text())
    assert record == {"nodes": {srv.address: {"address": srv.address, "instance": "cache", "work": ["persist"]}}}
    # Written from `localhost`, the entry is the same server's: still one entry, under its address.
    cli.write(doc({"cache": f"localhost:{srv.port}"}, user_instances="cache"))
    (tmp_path / "acl").rename(tmp_path / "acl.away")
    cli.write(cli.file.read_text().replace("~app:* +get", "~app:* +get +set"))
    assert cli.apply()[0] == 1
    (tmp_path / "acl.away").rename(tmp_path / "acl")
    record = json.loads((tmp_path / "access.pending.json").read_text())
    assert record == {"nodes": {srv.address: {"address": f"localhost:{srv.port}", "instance": "cache", "work": ["persist"]}}}


def _saved(srv: RunningServer, tmp_path: Path) -> bool:
    return "user app " in (tmp_path / "acl" / "users.acl").read_text()


@pytest.mark.parametrize("respelled", ["localhost", "renamed", "both"])
def test_pending_work_follows_the_node_under_another_spelling(respelled: str, srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    _failed_save(srv, cli, tmp_path)
    node = f"localhost:{srv.port}" if respelled in ("localhost", "both") else srv.address
    name = "cache-prod" if respelled in ("renamed", "both") else "cache"
    cli.write(doc({name: node}))
    code, out, _ = cli.drift()
    assert code == 2 and "were not saved" in out, out
    assert cli.plan()[0] == 2
    code, out, err = cli.apply()
    assert code == 0 and "saved (ACL SAVE)" in out, out + err
    assert _saved(srv, tmp_path)
    assert not (tmp_path / "access.pending.json").exists()
    code, out, _ = cli.drift()
    assert code == 0, out
    srv.restart()
    assert srv.client("app", APP, retry=no_retry()).execute_command("GET", "app:x") is None


def test_pending_work_for_a_node_no_longer_in_the_file_is_a_finding(srv: RunningServer, server_factory, cli: Cli, tmp_path: Path) -> None:
    _failed_save(srv, cli, tmp_path)
    other = server_factory("valkey-9.1")
    other.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
    cli.write(doc({"elsewhere": other.address}))  # the failed node left the file
    cli.apply(expect=0)
    code, out, _ = cli.drift()
    assert code == 2 and "access.pending.json: unfinished work for node " + srv.address in out and "matches no node" in out
    code, text, _ = cli.drift("--format", "json")
    pending = [f for i in json.loads(text)["instances"] for f in i["findings"] if f["kind"] == "pending"]
    assert len(pending) == 1 and pending[0]["severity"] == "error"
    assert cli.plan()[0] == 0  # an error finding: no change for apply to make, and apply keeps it
    cli.apply(expect=0)
    assert cli.drift()[0] == 2
    # Under --instance, an entry of an instance no longer in the file is not this instance's.
    # The operator saves by hand and removes the entry: clean.
    srv.admin().execute_command("ACL", "SAVE")
    (tmp_path / "access.pending.json").unlink()
    code, out, _ = cli.drift()
    assert code == 0, out


def test_one_server_in_two_instances_is_refused(srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    # Spellings that can only name one server: validate says so, naming both.
    cli.write(doc({"a": srv.address, "b": f"localhost:{srv.port}"}, user_instances="a"))
    code, _, err = cli("validate", "-f", str(cli.file))
    assert code == 1 and f"node localhost:{srv.port} is also in instance 'a' as {srv.address}" in err
    assert len(err.strip().splitlines()) == 1
    # Spellings only the network can equate (127.1 is 127.0.0.1): plan and apply refuse, one line.
    cli.write(doc({"a": srv.address, "b": f"127.1:{srv.port}"}, user_instances="a"))
    assert cli("validate", "-f", str(cli.file))[0] == 0
    before = sorted(srv.admin().execute_command("ACL", "LIST"))
    for argv in (("plan", "-f", str(cli.file)), ("apply", "-f", str(cli.file), "--auto-approve"), ("drift", "-f", str(cli.file))):
        code, out, err = cli(*argv)
        assert code == 1 and out == "", (argv, out, err)
        lines = err.strip().splitlines()
        assert lines == [f"reconciler: instances a ({srv.address}) and b (127.1:{srv.port}) both reach {srv.address}: "
                         "a node belongs to one instance; list it in one of them"], lines
        assert "another apply" not in err
    assert sorted(srv.admin().execute_command("ACL", "LIST")) == before
    with pytest.raises(redis.AuthenticationError):
        srv.client("app", APP, retry=no_retry()).ping()


def test_record_in_the_first_format_is_still_read(srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    """Records written before entries were keyed by address ("instance address": [work])."""
    cli.apply(doc({"cache": srv.address}), expect=0)
    (tmp_path / "access.pending.json").write_text(json.dumps({"nodes": {f"cache {srv.address}": ["persist"]}}))
    code, out, _ = cli.plan()
    assert code == 2 and "were not saved" in out
    code, out, err = cli.apply()
    assert code == 0 and "saved (ACL SAVE)" in out, out + err
    assert _saved(srv, tmp_path) and not (tmp_path / "access.pending.json").exists()


@pytest.mark.parametrize("record", [
    {"nodes": {"ADDR": {"instance": "cache", "address": "ADDR", "work": "persist"}}},  # work not a list
    {"nodes": {"ADDR": {"instance": "cache", "address": "ADDR", "work": ["persist", "rm -rf /", 5]}}},  # unknown work
    {"nodes": {"ADDR": {"instance": "cache", "address": "ADDR", "work": ["kill-sessions "]}}},  # no user
    {"nodes": ["persist"]},
    ["persist"],
], ids=["work-not-a-list", "unknown-work", "kill-without-user", "nodes-a-list", "not-a-mapping"])
def test_a_tampered_pending_record_is_one_error_line_never_read_as_empty(
    srv: RunningServer, cli: Cli, tmp_path: Path, record: object
) -> None:
    """A record of unfinished work of the wrong shape used to read as 'nothing pending' (the
    aclfile lag it may be all that reports forgotten: "No changes", drift clean) or to show an
    unknown item as a revoke of user \"\" that no apply ever finishes."""
    cli.apply(doc({"cache": srv.address}), expect=0)
    text = json.dumps(record).replace("ADDR", srv.address)
    (tmp_path / "access.pending.json").write_text(text)
    for argv in (("plan", "-f", str(cli.file)), ("drift", "-f", str(cli.file)), ("apply", "-f", str(cli.file), "--auto-approve")):
        code, out, err = cli(*argv)
        assert code == 1, (argv, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"reconciler: {tmp_path / 'access.pending.json'}: "), lines
    assert (tmp_path / "access.pending.json").read_text() == text  # left as it was for the operator


def test_a_pending_record_that_is_a_fifo_or_a_device_never_blocks(srv: RunningServer, cli: Cli, tmp_path: Path) -> None:
    """`plan` in a cron job must not wait for ever on a FIFO, nor read /dev/zero into memory."""
    import os
    import subprocess
    import sys

    cli.apply(doc({"cache": srv.address}), expect=0)
    record = tmp_path / "access.pending.json"
    for make in (lambda: os.mkfifo(record), lambda: record.symlink_to("/dev/zero")):
        make()
        env = {**os.environ, "T_ADMIN": ADMIN, "T_APP": APP, "RECONCILER_NO_CACHE": "1"}
        r = subprocess.run([sys.executable, "-m", "reconciler.cli", "plan", "-f", str(cli.file)], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert r.stderr.strip() == (f"reconciler: {record}: cannot read the record of unfinished work: "
                                    "not a regular file (a FIFO, a device or a directory)"), r.stderr
        record.unlink()
