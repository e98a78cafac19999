"""User names are read byte for byte: two names that print alike are two users.

A live `app` given a backdoor password and `+@all` out of band, next to a decoy `app` + U+00A0
that carries the file's exact rules and hash, must not read as one clean `app`: drift names
both, prune deletes the decoy, apply fixes `app`, and the backdoor stops working. Names the
file can't declare (Unicode look-alikes, symbols, bytes that are not UTF-8) are unmanaged users
shown escaped, and import leaves them out with a comment instead of writing an invalid file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from servers import RunningServer, no_retry
from support.cli import Cli
from support.executor import sha

from reconciler import names

ADMIN = "names-admin-plaintext-5b7d9f1e3a2c4068"
APP = "names-app-plaintext-8c0e2a4f6b1d3957"
BACKDOOR = "names-backdoor-plaintext-1f3e5d7c9b0a2468"

SERVERS = [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-7.0", "valkey-9.1")]

FILE = """\
version: 1
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: admin, secret: {{env: T_ADMIN}}}}
    persist: none
    prune: {prune}
users:
  admin:
    acl: "~* &* +@all"
    tokens: [{{id: admin-1, secret: {{env: T_ADMIN}}}}]
  app:
    acl: "~app:* +get"
    tokens: [{{id: app-1, secret: {{env: T_APP}}}}]
"""

DECOY = "app\u00a0"
# Names Redis accepts that the file can't declare: a Unicode space, a line separator, a Cyrillic
# look-alike, a non-ASCII letter, rule symbols, a control character, 129 characters, and a
# byte that is not UTF-8.
ODD = ["app\u2028", "\u0430pp", "\u00fcber", "a>b~c", "ctl\x01x", "x" * 129]
RAW = b"raw\xff"


@pytest.fixture(params=SERVERS)
def srv(request: pytest.FixtureRequest, server_factory) -> RunningServer:
    return server_factory(request.param)


def _setup(srv: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, prune: bool) -> Cli:
    for k, v in {"T_NODE": srv.address, "T_ADMIN": ADMIN, "T_APP": APP, "NO_COLOR": "1"}.items():
        monkeypatch.setenv(k, v)
    srv.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
    cli = Cli(tmp_path, capsys=capsys)
    cli.write(FILE.format(prune=str(prune).lower()))
    cli.apply(expect=0)
    return cli


def _logs_in(srv: RunningServer, user: str, password: str) -> bool:
    try:
        srv.client(user, password, retry=no_retry()).execute_command("GET", "app:x")
        return True
    except redis.AuthenticationError:
        return False


def _plant_backdoor(srv: RunningServer) -> None:
    """The real `app` gets a second password and every command; a decoy that prints like it
    gets exactly what the file says `app` should have."""
    admin = srv.admin()
    admin.execute_command("ACL", "SETUSER", "app", f">{BACKDOOR}", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", DECOY, "on", f"#{sha(APP)}", "~app:*", "+get")
    assert _logs_in(srv, "app", BACKDOOR)


def test_look_alike_decoy_does_not_hide_a_backdoor(srv: RunningServer, tmp_path: Path, monkeypatch, capsys) -> None:
    cli = _setup(srv, tmp_path, monkeypatch, capsys, prune=False)
    _plant_backdoor(srv)

    code, out, _ = cli.drift("--format", "json")
    doc = json.loads(out)
    assert code == 2
    changed = {c["user"]: c for i in doc["instances"] for n in i["nodes"] for c in n["changes"]}
    assert set(changed) == {"app"}  # the real one: backdoor hash and +@all go
    assert [t["action"] for t in changed["app"]["tokens"] if t["sha256"] == sha(BACKDOOR)] == ["remove"]
    unmanaged = [f for i in doc["instances"] for f in i["findings"] if f["kind"] == "unmanaged_user"]
    assert [f["user"] for f in unmanaged] == [DECOY]  # exact, in the JSON
    assert '"app\\u00a0"' in unmanaged[0]["message"]  # escaped, in the words

    code, out, _ = cli.drift()
    assert code == 2 and 'user "app\\u00a0" is not in the file' in out and DECOY not in out

    # prune: the decoy is a deletion, shown escaped; the real app is fixed.
    cli.write(FILE.format(prune="true"))
    code, out, _ = cli.plan()
    assert code == 2 and '- user "app\\u00a0"' in out and "~ user app" in out and DECOY not in out
    cli.apply(expect=0)
    users = srv.admin().execute_command("ACL", "USERS")
    assert DECOY not in users and "app" in users
    assert not _logs_in(srv, "app", BACKDOOR) and _logs_in(srv, "app", APP)
    assert cli.plan()[0] == 0


def test_odd_names_are_unmanaged_shown_escaped_and_pruned(srv: RunningServer, tmp_path: Path, monkeypatch, capsys) -> None:
    cli = _setup(srv, tmp_path, monkeypatch, capsys, prune=False)
    admin = srv.admin()
    for name in ODD:
        admin.execute_command("ACL", "SETUSER", name, "on", "nopass", "+get", "~*")
    raw = srv.client(decode_responses=False)
    raw.execute_command("ACL", "SETUSER", RAW, "on", "nopass", "+get", "~*")
    # Open connections of odd users (CLIENT LIST shows their names too).
    sessions = [srv.client(name, "x", retry=no_retry()) for name in ODD[:2]]
    for s in sessions:
        s.execute_command("GET", "k")

    code, out, err = cli.drift("--format", "json")
    assert code == 2, err
    doc = json.loads(out)
    found = sorted(f["user"] for i in doc["instances"] for f in i["findings"] if f["kind"] == "unmanaged_user")
    assert found == sorted([*ODD, RAW.decode("utf-8", "surrogateescape")])
    code, out, _ = cli.drift()
    for name in ODD:
        assert f"user {names.shown(name)} is not in the file" in out
    assert 'user "raw\\xff" is not in the file' in out
    assert not re.search(r"[^\x09\x0a\x20-\x7e]", out), "raw look-alike characters in the output"

    cli.write(FILE.format(prune="true"))
    cli("apply", "-f", str(cli.file), "--auto-approve", "--force", expect=0)
    assert sorted(raw.execute_command("ACL", "USERS")) == [b"admin", b"app", b"default"]
    assert cli.plan()[0] == 0


def test_import_writes_only_names_the_file_can_hold(srv: RunningServer, tmp_path: Path, monkeypatch, capsys) -> None:
    cli = _setup(srv, tmp_path, monkeypatch, capsys, prune=False)
    admin = srv.admin()
    for name in [DECOY, *ODD]:
        admin.execute_command("ACL", "SETUSER", name, "on", f"#{sha(APP)}", "+get", "~k")
    srv.client(decode_responses=False).execute_command("ACL", "SETUSER", RAW, "on", f"#{sha(APP)}", "+get", "~k")
    out = tmp_path / "imported.yaml"
    cli("import", "--instance", "cache", "-f", str(cli.file), "--out", str(out), expect=0)
    text = out.read_text()
    assert not re.search(r"[^\x09\x0a\x20-\x7e]", text), "raw look-alike characters in the imported file"
    for name in [DECOY, *ODD]:
        assert f"# not imported: {names.shown(name)}: " in text
    assert '# not imported: "raw\\xff": the name is not UTF-8 text' in text
    assert cli("validate", "-f", str(out))[0] == 0
    # It plans as a no-op for what it holds (the left-out users are findings, not changes).
    code, plan_out, _ = cli("plan", "-f", str(out), "--detailed-exitcode", "--format", "json")
    doc = json.loads(plan_out)
    assert code == 0 and not [c for i in doc["instances"] for n in i["nodes"] for c in n["changes"]]


def test_declarable_pattern_is_the_schemas() -> None:
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "desired-state.schema.json").read_text())
    pattern = schema["$defs"]["username"]["pattern"]
    assert pattern == "^" + names.DECLARABLE.pattern.removesuffix("\\Z") + "$"


def test_shown_escapes_everything_outside_printable_ascii() -> None:
    assert names.shown("app") == "app"
    assert names.shown("app\u00a0") == '"app\\u00a0"'
    assert names.shown("a\"b\\c") == '"a\\"b\\\\c"'
    assert names.shown("\udcffz") == '"\\xffz"'
    assert names.shown("\U0001f600") == '"\\U0001f600"'
