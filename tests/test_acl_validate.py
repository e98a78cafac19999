"""Command names in rules: a name no supported version knows is a validate error with file,
line and a suggestion (no server needed); a name only some versions know is a plan error that
names the file and line, the node and its version."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from servers import RunningServer

from reconciler.cli import main
from reconciler.config import load
from reconciler.errors import ConfigError

ADMIN = "Admin-token-for-name-tests-1"

HEAD = """\
version: 1
instances:
  cache:
    nodes: ["{node}"]
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
"""


def write(tmp_path: Path, users: str, node: str = "127.0.0.1:6379") -> Path:
    f = tmp_path / "access.yaml"
    f.write_text(HEAD.format(node=node) + textwrap.dedent(users))
    return f


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        load(str(path), environ={"T_ADMIN": ADMIN}, resolve_secrets=True)
    return {f"{p.line} {p.path}": p.message for p in exc.value.problems}


def test_unknown_commands_are_validate_errors_with_suggestions(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        """\
        roles:
          sel: "(~x +client|kil)"
        users:
          app-jobs:
            acl: "~jobs:* +lpusj +rpop"
          b:
            acl: "+select|0 -select|0"
          c:
            acl: "+get -config|nosuch"
          d:
            roles: [sel]
          fine:
            acl: "+sort_ro +select|0 +command -command|docs +CONFIG|GET +object|encoding"
        """,
    )
    assert problems(f) == {
        "7 roles.sel": "unknown subcommand 'client|kil' (did you mean 'client|kill'?)",
        "10 users.app-jobs.acl": "unknown command 'lpusj' (did you mean 'lpush'?)",
        "12 users.b.acl": "'-select|0': a first argument can't be denied, only allowed (select has no subcommands)",
        "14 users.c.acl": "unknown subcommand 'config|nosuch' (did you mean 'config|set'?)",
    }


def test_validate_cli_prints_file_line_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, 'users:\n  app-jobs:\n    acl: "~jobs:* +lpusj"\n')
    rc = main(["validate", "-f", str(f)])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{f}:8: users.app-jobs.acl: unknown command 'lpusj' (did you mean 'lpush'?)" in err
    assert "Traceback" not in err


@pytest.mark.server
def test_command_of_newer_versions_is_a_plan_error_naming_file_node_version(
    server_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old: RunningServer = server_factory("redis-6.2")
    old.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")
    monkeypatch.setenv("T_ADMIN", ADMIN)
    before = sorted(old.client("default", ADMIN).execute_command("ACL", "LIST"))
    cases = {
        "+get +sort_ro": "rule '+sort_ro' is not supported on redis-6.2.14: 'sort_ro' does not exist in this version",
        # 6.2 has no subcommands: the exception can't be written without changing the meaning
        "+command -command|docs": "rule '-command|docs' is not supported on redis-6.2.14",
    }
    for rules, reason in cases.items():
        f = write(tmp_path, f'users:\n  app-jobs:\n    acl: "{rules}"\n    tokens: []\n    enabled: false\n', old.address)
        rc = main(["plan", "-f", str(f), "--detailed-exitcode"])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert f"{f}:7: users.app-jobs.acl: cache {old.address}: user app-jobs: Redis 6.2.14 can't express this: " in err
        assert reason in err
    assert sorted(old.client("default", ADMIN).execute_command("ACL", "LIST")) == before
