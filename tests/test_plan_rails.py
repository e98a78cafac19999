"""`plan`, `plan --out` and `drift` run the safety rails apply runs: a plan apply would refuse is
shown whole, each refusal is an error line, the Markdown opens with a block saying so, the
JSON carries `refusals`, and the exit code is 1. `plan --force` previews `apply --force`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import RunningServer
from support.cli import Cli
from support.executor import acl_users, sha

ADMIN = "rails-admin-plaintext-5b7d9f1a3c5e7092"
APP = "rails-app-plaintext-0d2f4a6c8e1b3d5f"

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_RAILS_ADMIN}}}}
    prune: {prune}
users:
  reconciler:
    acl: "{admin_acl}"
    tokens: [{{id: admin-1, secret: {{env: T_RAILS_ADMIN}}}}]
{users}"""


def app_users(names: list[str]) -> str:
    return "".join(f'  {n}:\n    acl: "~{n}:* +@read"\n    tokens: [{{id: t1, sha256: {sha(APP + n)}}}]\n' for n in names)


class Rails:
    def __init__(self, srv: RunningServer, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.srv = srv
        self.cli = Cli(tmp, capsys=capsys)
        monkeypatch.setenv("T_RAILS_ADMIN", ADMIN)
        srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN}", "+@all", "~*", "&*")

    def write(self, users: list[str], *, prune: bool = False, admin_acl: str = "+@all ~* &*") -> None:
        self.cli.write(FILE.format(address=self.srv.address, prune=str(prune).lower(), admin_acl=admin_acl, users=app_users(users)))

    def live(self) -> dict[str, str]:
        return acl_users(self.srv.client("reconciler", ADMIN))


@pytest.fixture(params=["redis-7.0", "valkey-9.1"])
def rails(request: pytest.FixtureRequest, server_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Rails:
    return Rails(server_factory(request.param), tmp_path, monkeypatch, capsys)


def test_lockout_is_refused_by_plan_drift_and_apply(rails: Rails, tmp_path: Path) -> None:
    rails.write(["app"])
    assert rails.cli.apply()[0] == 0
    before = rails.live()
    rails.write(["app"], admin_acl="+@read ~* &*")  # the admin would lose ACL SETUSER and more
    cause = f"cache {rails.srv.address}: admin user reconciler: the plan revokes commands the reconciler needs: ACL|SETUSER"

    code, out, err = rails.cli("plan", "-f", str(rails.cli.file))
    assert code == 1
    assert "~ user reconciler" in out and "Plan: 0 to add, 1 to change, 0 to destroy." in out  # shown whole
    assert "Apply would refuse this plan: 1 refusal by the safety rails" in out
    assert f"reconciler: error: apply would refuse this plan: {cause}" in err

    # --detailed-exitcode: 1 (an error), not 2 (changes); --out: nothing saved.
    saved = tmp_path / "plan.json"
    code, _, err = rails.cli("plan", "-f", str(rails.cli.file), "--detailed-exitcode", "--out", str(saved))
    assert code == 1 and not saved.exists() and f"plan not saved to {saved}: apply would refuse it" in err

    code, out, _ = rails.cli("plan", "-f", str(rails.cli.file), "--format", "markdown")
    assert code == 1
    head = out.split("| Instance |")[0]
    assert out.startswith("## reconciler plan: refused by the safety rails; 1 to change; 1 finding\n")
    assert "> [!CAUTION]" in head and "**Apply would refuse this plan.**" in head and f"> error: {cause}" in head
    assert "apply --force` would allow" not in out  # a lockout has no override

    code, out, _ = rails.cli("plan", "-f", str(rails.cli.file), "--format", "json")
    doc = json.loads(out)
    assert code == 1
    [refusal] = doc["refusals"]
    assert refusal["rail"] == "lockout" and refusal["message"].startswith(cause) and refusal["forcible"] is False
    assert refusal["waived"] is False and doc["summary"]["refusals"] == 1

    code, out, err = rails.cli("drift", "-f", str(rails.cli.file), "--format", "json")
    assert code == 1 and json.loads(out)["drift"]["exit_code"] == 1
    assert f"apply would refuse this plan: {cause}" in err

    code, _, err = rails.cli.apply()
    assert code == 1 and f"reconciler: refusing to apply: {cause}" in err
    assert rails.live() == before


def test_delete_threshold_is_refused_by_plan_and_previewed_with_force(rails: Rails) -> None:
    names = [f"app{i}" for i in range(11)]  # 12 live users with the admin (default is not listed: it stays)
    rails.write(names)
    assert rails.cli.apply()[0] == 0
    rails.write(names[:3], prune=True)  # 8 of 13 live users gone from the file (default included)
    gone = ", ".join(sorted(set(names) - set(names[:3])))

    code, out, err = rails.cli("plan", "-f", str(rails.cli.file), "--detailed-exitcode")
    assert code == 1, err
    assert out.count("- user app") == 8 and "Plan: 0 to add, 0 to change, 8 to destroy." in out
    assert "the plan deletes 8 of 13 users (61%), more than max_delete_percent 30; re-run with --force to allow it" in err

    code, out, _ = rails.cli("plan", "-f", str(rails.cli.file), "--format", "markdown")
    assert code == 1 and "`reconciler apply --force` would allow these deletions" in out.split("| Instance |")[0]

    # plan --force previews apply --force: exit as for any plan, the waived refusal shown as a warning.
    code, out, err = rails.cli("plan", "-f", str(rails.cli.file), "--detailed-exitcode", "--force")
    assert code == 2, err
    assert "--force allows 1 refusal of the safety rails" in out
    assert "reconciler: warning: allowed by --force: cache" in err and "error:" not in err
    code, out, _ = rails.cli("plan", "-f", str(rails.cli.file), "--format", "json", "--force")
    assert code == 0
    [refusal] = json.loads(out)["refusals"]
    assert refusal["rail"] == "delete_threshold" and refusal["waived"] is True and refusal["forcible"] is True
    assert json.loads(out)["summary"]["refusals"] == 0
    code, out, _ = rails.cli("plan", "-f", str(rails.cli.file), "--format", "markdown", "--force")
    assert "> [!WARNING]" in out and "**Allowed by `--force`:**" in out and "[!CAUTION]" not in out

    assert rails.cli.apply()[0] == 1
    assert set(rails.live()) >= set(names)
    code, out, err = rails.cli.apply(None, "--force")
    assert code == 0, err
    assert not set(rails.live()) & set(gone.split(", "))


def test_saved_plan_made_with_force_needs_force_to_apply(rails: Rails, tmp_path: Path) -> None:
    names = [f"app{i}" for i in range(11)]
    rails.write(names)
    assert rails.cli.apply()[0] == 0
    rails.write(names[:3], prune=True)
    saved = tmp_path / "plan.json"
    code, _, err = rails.cli("plan", "-f", str(rails.cli.file), "--force", "--out", str(saved))
    assert code == 0 and saved.exists(), err
    # The hint names the command that will run it (without --force it is refused).
    assert f"plan saved to {saved}; apply it with `reconciler apply {saved} --force`" in err
    code, _, err = rails.cli("apply", str(saved), "--auto-approve")
    assert code == 1 and "refusing to apply" in err and "re-run with --force" in err
    code, out, err = rails.cli("apply", str(saved), "--auto-approve", "--force")
    assert code == 0, err
    assert "Apply complete: 0 added, 0 changed, 8 destroyed." in out
