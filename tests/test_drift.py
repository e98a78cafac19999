"""`reconciler drift` against real servers: exit 2 for each kind of finding (one test per kind),
0 on a clean instance, 1 on bad input; stable JSON keys; Markdown that renders.

Dates are pinned with RECONCILER_TODAY so expiry and age are deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from servers import RunningServer, no_retry
from support import actions
from support.cli import Cli, Result
from support.executor import acl_users, sha

REPO = Path(__file__).resolve().parent.parent

ADMIN_USER = "reconciler-admin"
ADMIN = "drift-admin-plaintext-3e8b1f6a0c9d2754"
ORDERS = "drift-orders-plaintext-9a1c5e7b3d2f4086"
ORDERS_OLD = "drift-orders-old-plaintext-6f0e2d4c8b1a3957"
TODAY = "2026-11-23"

# Two servers are enough for the per-kind tests; clean/changed runs over the whole matrix.
KIND_SERVERS = [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-7.0", "valkey-9.1")]

FILE = """\
version: 1
policies:
  token_max_age_days: 90
  expiry_warning_days: 14
  forbid_nopass: {forbid_nopass}
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {admin}, secret: {{env: T_ADMIN}}}}
    auth_mode: {auth_mode}
    persist: none
    prune: false
users:
  {admin}:
    acl: "~* &* +@all"
    tokens:
      - id: admin-1
        secret: {{env: T_ADMIN}}
        created: 2026-11-01
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS}}
        created: {created}
        expires: {expires}
{more_tokens}"""

TOP_KEYS = {"drift", "format_version", "instances", "refusals", "source", "summary", "today"}
DRIFT_KEYS = {"status", "exit_code", "changes", "findings", "kinds"}
SUMMARY_KEYS = {"add", "change", "destroy", "findings", "errors", "refusals"}
INSTANCE_KEYS = {"name", "topology", "nodes", "findings", "inventory"}
NODE_KEYS = {"address", "role", "label", "fingerprint", "changes", "persist", "config"}
CHANGE_KEYS = {"action", "user", "enabled", "nopass", "hashes", "rules", "enabled_before", "tokens",
               "permissions", "certificates", "kill_sessions", "connections", "note", "passwords"}
TOKEN_KEYS = {"action", "sha256", "token_id", "reason", "expires"}
FINDING_KEYS = {"kind", "message", "instance", "node", "user", "token_id", "severity"}
REFUSAL_KEYS = {"rail", "message", "waived", "forcible"}


class DriftEnv:
    def __init__(self, srv: RunningServer, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.srv = srv
        self.cli = Cli(tmp, capsys=capsys)
        self.file = self.cli.file
        self.monkeypatch = monkeypatch
        self.env = {"T_NODE": srv.address, "T_ADMIN": ADMIN, "T_ORDERS": ORDERS, "T_ORDERS_OLD": ORDERS_OLD,
                    "RECONCILER_TODAY": TODAY, "NO_COLOR": "1"}
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        srv.admin().execute_command("ACL", "SETUSER", ADMIN_USER, "on", f">{ADMIN}", "~*", "&*", "+@all")

    def write(self, *, created: str = "2026-10-01", expires: str = "2027-06-01", auth_mode: str = "none",
              forbid_nopass: bool = False, more_tokens: str = "") -> None:
        self.file.write_text(FILE.format(admin=ADMIN_USER, created=created, expires=expires, auth_mode=auth_mode,
                                         forbid_nopass=str(forbid_nopass).lower(), more_tokens=more_tokens))

    def run(self, *argv: str, today: str = TODAY) -> Result:
        self.monkeypatch.setenv("RECONCILER_TODAY", today)
        return self.cli(*argv)

    def apply(self, today: str = TODAY) -> None:
        code, out, err = self.run("apply", "-f", str(self.file), "--auto-approve", today=today)
        assert code == 0, out + err

    def drift(self, fmt: str = "text", today: str = TODAY) -> tuple[int, str, str]:
        return self.run("drift", "-f", str(self.file), "--format", fmt, today=today)

    def drift_json(self, today: str = TODAY) -> tuple[int, dict]:
        code, out, _ = self.drift("json", today=today)
        return code, json.loads(out)

    def admin(self) -> redis.Redis:
        return self.srv.client(ADMIN_USER, ADMIN, retry=no_retry())


def make_env(srv: RunningServer, tmp_path: Path, monkeypatch, capsys) -> DriftEnv:
    return DriftEnv(srv, tmp_path, monkeypatch, capsys)


@pytest.fixture(params=KIND_SERVERS)
def denv(request, server_factory, tmp_path: Path, monkeypatch, capsys) -> DriftEnv:
    return make_env(server_factory(request.param), tmp_path, monkeypatch, capsys)


@pytest.fixture
def matrix_env(server: RunningServer, tmp_path: Path, monkeypatch, capsys) -> DriftEnv:
    return make_env(server, tmp_path, monkeypatch, capsys)


def kinds(doc: dict) -> list[str]:
    return sorted(f["kind"] for inst in doc["instances"] for f in inst["findings"])


def findings(doc: dict, kind: str) -> list[dict]:
    return [f for inst in doc["instances"] for f in inst["findings"] if f["kind"] == kind]


def changes(doc: dict) -> list[dict]:
    return [c for inst in doc["instances"] for n in inst["nodes"] for c in n["changes"]]


def check_keys(doc: dict) -> None:
    assert set(doc) == TOP_KEYS
    assert set(doc["drift"]) == DRIFT_KEYS
    assert set(doc["summary"]) == SUMMARY_KEYS
    assert doc["format_version"] == 2
    for inst in doc["instances"]:
        assert set(inst) == INSTANCE_KEYS
        for node in inst["nodes"]:
            assert set(node) == NODE_KEYS
            for c in node["changes"]:
                assert set(c) == CHANGE_KEYS
                for t in c["tokens"]:
                    assert set(t) == TOKEN_KEYS
        for f in inst["findings"]:
            assert set(f) == FINDING_KEYS
    for r in doc["refusals"]:
        assert set(r) == REFUSAL_KEYS


# -- clean and changed, over the whole matrix --------------------------------------------------


def test_clean_instance_exits_0(matrix_env: DriftEnv) -> None:
    e = matrix_env
    e.write()
    e.apply()
    code, out, err = e.drift()
    assert code == 0, out + err
    assert "reconciler drift: clean" in out and "No changes." in out and "finding" not in out
    code, doc = e.drift_json()
    assert code == 0
    check_keys(doc)
    assert doc["drift"] == {"status": "clean", "exit_code": 0, "changes": False, "findings": 0, "kinds": {}}
    assert doc["today"] == TODAY


def test_out_of_band_permission_change_exits_2(matrix_env: DriftEnv) -> None:
    e = matrix_env
    e.write()
    e.apply()
    e.admin().execute_command("ACL", "SETUSER", "app-orders", "+flushall", "~billing:*")
    edited = acl_users(e.admin())["app-orders"]
    code, out, err = e.drift()
    assert code == 2, out + err
    # the plan reverts it: the delta reads from live to the file
    assert "~ user app-orders" in out and "- revokes FLUSHALL" in out and "- keys billing:*" in out
    code, doc = e.drift_json()
    assert code == 2
    check_keys(doc)
    assert doc["drift"]["status"] == "drift" and doc["drift"]["changes"] is True and doc["drift"]["findings"] == 0
    assert [c["user"] for c in changes(doc)] == ["app-orders"]
    # drift never writes: the out-of-band change is still there
    assert acl_users(e.admin())["app-orders"] == edited


# -- one test per kind of finding ---------------------------------------------------------------


def test_expired_token(denv: DriftEnv) -> None:
    old = "      - id: 2026-08\n        secret: {env: T_ORDERS_OLD}\n        created: 2026-08-01\n        expires: 2026-12-01\n"
    denv.write(more_tokens=old)
    denv.apply(today="2026-11-10")
    code, out, _ = denv.drift(today="2026-12-05")
    assert code == 2
    assert "token app-orders/2026-08 expired on 2026-12-01: removed from servers" in out
    assert "token - 2026-08 (sha256:" in out and "expired 2026-12-01" in out
    code, doc = denv.drift_json(today="2026-12-05")
    assert code == 2 and doc["drift"]["kinds"] == {"token_expired": 1}
    (f,) = findings(doc, "token_expired")
    assert (f["user"], f["token_id"]) == ("app-orders", "2026-08")
    (c,) = changes(doc)
    assert [(t["action"], t["token_id"], t["reason"]) for t in c["tokens"] if t["action"] == "remove"] == [
        ("remove", "2026-08", "expired 2026-12-01")
    ]
    assert sha(ORDERS_OLD) in acl_users(denv.admin())["app-orders"]  # drift only reports


def test_last_token_expired_is_reported_not_an_error(denv: DriftEnv) -> None:
    """The only token lapsing is a finding and a planned removal (exit 2), not a plan error (exit 1)."""
    denv.write(expires="2026-12-01")
    denv.apply(today="2026-11-10")
    code, doc = denv.drift_json(today="2026-12-05")
    assert code == 2 and doc["drift"]["kinds"] == {"token_expired": 1}
    (c,) = changes(doc)
    assert c["hashes"] == [] and "last token expired" in c["note"]


def test_token_expiring_within_warning_days(denv: DriftEnv) -> None:
    denv.write(expires="2026-12-01")
    denv.apply()
    code, out, _ = denv.drift()
    assert code == 2
    assert "token app-orders/2026-11 expires in 8 days (2026-12-01, warning at 14)" in out
    code, doc = denv.drift_json()
    assert doc["drift"] == {"status": "drift", "exit_code": 2, "changes": False, "findings": 1, "kinds": {"token_expiring": 1}}
    # 15 days ahead is outside the window: clean
    code, doc = denv.drift_json(today="2026-11-16")
    assert code == 0, doc["drift"]


def test_token_older_than_max_age(denv: DriftEnv) -> None:
    denv.write(created="2026-06-01")
    denv.apply()
    code, out, _ = denv.drift()
    assert code == 2
    assert "token app-orders/2026-11 is 175 days old (policy 90)" in out
    code, doc = denv.drift_json()
    assert doc["drift"]["kinds"] == {"token_age": 1} and doc["drift"]["changes"] is False
    (f,) = findings(doc, "token_age")
    assert (f["user"], f["token_id"]) == ("app-orders", "2026-11")


def test_unmanaged_user_with_prune_false(denv: DriftEnv) -> None:
    denv.write()
    denv.apply()
    denv.admin().execute_command("ACL", "SETUSER", "stranger", "on", ">stranger-pw-0123456789", "~*", "+get")
    code, out, _ = denv.drift()
    assert code == 2
    assert "user stranger is not in the file (prune: false)" in out
    code, doc = denv.drift_json()
    assert doc["drift"]["kinds"] == {"unmanaged_user": 1} and doc["drift"]["changes"] is False
    assert findings(doc, "unmanaged_user")[0]["user"] == "stranger"
    # for plan it is a finding, not a change
    code, _, _ = denv.run("plan", "-f", str(denv.file), "--detailed-exitcode")
    assert code == 0
    assert "stranger" in acl_users(denv.admin())


def test_unmanaged_token_on_a_managed_user(denv: DriftEnv) -> None:
    denv.write()
    denv.apply()
    extra = "someone-added-this-by-hand-2741"
    denv.admin().execute_command("ACL", "SETUSER", "app-orders", f">{extra}")
    code, out, _ = denv.drift()
    assert code == 2
    assert f"user app-orders has a token that is not in the file (sha256:{sha(extra)[:8]}…)" in out
    assert f"token - sha256:{sha(extra)[:8]}…" in out or f"(sha256:{sha(extra)[:8]}…)" in out
    code, doc = denv.drift_json()
    assert doc["drift"]["kinds"] == {"unmanaged_token": 1} and doc["drift"]["changes"] is True
    (c,) = changes(doc)
    assert [(t["action"], t["sha256"], t["reason"]) for t in c["tokens"] if t["action"] == "remove"] == [
        ("remove", sha(extra), "not in file")
    ]


@pytest.mark.parametrize("why", ["auth_mode: token", "forbid_nopass"])
def test_nopass_default_user(denv: DriftEnv, why: str) -> None:
    """The fixture's default user is `on nopass`; the file does not declare it."""
    if why == "auth_mode: token":
        denv.write(auth_mode="token")
    else:
        denv.write(auth_mode="none", forbid_nopass=True)
    denv.apply()
    code, out, _ = denv.drift()
    assert code == 2
    assert "user default is nopass: anyone can connect without a token" in out
    code, doc = denv.drift_json()
    assert doc["drift"]["kinds"] == {"nopass": 1}


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_exits_1(denv: DriftEnv) -> None:
    denv.write()
    text = denv.file.read_text()
    denv.file.write_text(text.replace('acl: "~orders:* +@read', 'acl: "~orders:* +@raed'))
    code, out, err = denv.drift()
    assert code == 1 and out == ""
    assert f"{denv.file}:" in err and "users.app-orders.acl" in err and len(err.strip().splitlines()) == 1

    denv.write()
    code, out, err = denv.run("drift", "-f", str(denv.file), "--instance", "nope")
    assert code == 1 and "unknown instance nope" in err

    code, out, err = denv.run("drift", "-f", str(denv.file), today="23/11/2026")
    assert code == 1 and "RECONCILER_TODAY" in err

    denv.monkeypatch.setenv("T_NODE", "127.0.0.1:1")  # nothing listens there
    code, out, err = denv.drift("json")
    assert code == 1 and out == "" and err.startswith("reconciler: ") and len(err.strip().splitlines()) == 1


def test_exit_codes_through_the_real_cli(denv: DriftEnv) -> None:
    """The process exit status is what a scheduler sees: 0 clean, 2 drift, 1 error."""
    denv.write()
    denv.apply()
    cli = Cli(REPO, env=dict(denv.env))
    assert cli("drift", "-f", str(denv.file)).code == 0
    denv.admin().execute_command("ACL", "SETUSER", "app-orders", "+keys")
    r = cli("drift", "-f", str(denv.file), "--format", "json")
    assert r.code == 2 and json.loads(r.out)["drift"]["exit_code"] == 2
    r = cli("drift", "-f", str(denv.file) + ".missing")
    assert r.code == 1 and "cannot read" in r.err


# -- formats -----------------------------------------------------------------------------------


def test_json_and_markdown_with_every_kind(denv: DriftEnv) -> None:
    old = "      - id: 2026-05\n        secret: {env: T_ORDERS_OLD}\n        created: 2026-05-01\n        expires: 2026-11-30\n"
    denv.write(auth_mode="token", more_tokens=old)
    denv.apply(today="2026-11-10")
    a = denv.admin()
    a.execute_command("ACL", "SETUSER", "stranger", "on", "nopass", "~*", "+get")
    a.execute_command("ACL", "SETUSER", "app-orders", ">by-hand-token-5512", "+flushall")
    code, doc = denv.drift_json()
    assert code == 2
    check_keys(doc)
    assert doc["drift"]["kinds"] == {"nopass": 1, "token_age": 1, "token_expiring": 1, "unmanaged_token": 1, "unmanaged_user": 1}
    assert doc["summary"] == {"add": 0, "change": 1, "destroy": 0, "findings": 5, "errors": 0, "refusals": 0}
    assert json.loads(json.dumps(doc)) == doc

    code, md, _ = denv.drift("markdown")
    assert code == 2
    assert md.startswith("## reconciler drift: 1 to change; 5 findings\n")
    assert "**Plan: 0 to add, 1 to change, 0 to destroy.** 5 findings." in md
    assert "| Instance | Add | Change | Destroy | Findings |" in md and "| cache | 0 | 1 | 0 | 5 |" in md
    assert md.count("```") % 2 == 0 and "```diff" in md
    assert md.count("<details>") == md.count("</details>") == 1
    assert "! finding: [" in md and "] user stranger is not in the file (prune: false)" in md
    assert "- revokes FLUSHALL" in md


# -- the scheduled-job examples, run for real ------------------------------------------------------


def _example_env(denv: DriftEnv, tmp_path: Path) -> dict[str, str]:
    """The job's environment: secrets from the environment, `reconciler` on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T_", "RECONCILER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    return env


def test_github_workflow_drift_step(denv: DriftEnv, tmp_path: Path) -> None:
    """The workflow's `Drift report` step, run with bash as Actions runs it: exit_code output,
    Markdown report for the issue, step fails only on errors."""
    import yaml

    wf = yaml.safe_load((REPO / "examples" / "drift-schedule.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key `on` as true; GitHub reads it as "on"
    assert triggers["schedule"][0]["cron"].count(" ") == 4
    steps = wf["jobs"]["drift"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "drift"]
    issue_step = next(s for s in steps if "gh issue" in s.get("run", ""))
    assert issue_step["if"] == "steps.drift.outputs.exit_code == '2'"

    denv.write()
    denv.apply()
    env = {**_example_env(denv, tmp_path), **{k: v for k, v in denv.env.items()}, "ACCESS_FILE": str(denv.file)}

    def run_step() -> tuple[int, dict[str, str], str]:
        r = actions.run_step(step["run"], env, tmp_path)
        return r.code, r.outputs, r.summary

    code, outputs, summary = run_step()
    assert (code, outputs) == (0, {"exit_code": "0"})
    assert json.loads((tmp_path / "drift.json").read_text())["drift"]["status"] == "clean"

    # --denials: an app failing AUTH as a declared user is drift, though the ACLs match the file.
    with pytest.raises(redis.AuthenticationError):
        denv.srv.client("app-orders", ORDERS_OLD, retry=no_retry()).ping()
    code, outputs, summary = run_step()
    assert (code, outputs) == (0, {"exit_code": "2"})
    assert "declared user: a wrong or old token" in (tmp_path / "drift.md").read_text()
    assert json.loads((tmp_path / "drift.json").read_text())["drift"]["unintended_denials"] == 1
    assert ORDERS_OLD not in summary
    denv.admin().execute_command("ACL", "LOG", "RESET")

    denv.admin().execute_command("ACL", "SETUSER", "app-orders", "+flushall")
    code, outputs, summary = run_step()
    assert (code, outputs) == (0, {"exit_code": "2"})  # the issue step runs next
    assert (tmp_path / "drift.md").read_text().startswith("## reconciler drift: 1 to change")
    assert "revokes FLUSHALL" in summary
    assert json.loads((tmp_path / "drift.json").read_text())["drift"]["exit_code"] == 2

    env["T_ADMIN"] = "wrong-admin-token-0123456789"
    code, outputs, _ = run_step()
    assert (code, outputs) == (1, {"exit_code": "1"})


def test_cron_example(denv: DriftEnv, tmp_path: Path) -> None:
    """examples/drift.cron's command with its variables pointed here: silent when clean (so cron
    mails nothing), the report on drift, the error on failure; drift.json kept every time."""
    import re

    text = (REPO / "examples" / "drift.cron").read_text()
    variables = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    (line,) = [ln for ln in text.splitlines() if re.match(r"^[0-9*]", ln)]
    fields = line.split(None, 6)
    assert len(fields) == 7 and fields[5] == "reconciler"
    command = fields[6]

    denv.write()
    denv.apply()
    secrets_env = tmp_path / "secrets.env"
    secrets_env.write_text("".join(f"{k}={v}\n" for k, v in denv.env.items()))
    reports = tmp_path / "reports"
    reports.mkdir()
    variables.update(RECONCILER=str(Path(sys.executable).parent / "reconciler"), ACCESS_DIR=str(denv.file.parent),
                     SECRETS_ENV=str(secrets_env), REPORT_DIR=str(reports))
    env = {**_example_env(denv, tmp_path), **variables}

    def cron() -> str:
        r = subprocess.run([variables["SHELL"], "-c", command], env=env, capture_output=True, text=True, timeout=120)
        return r.stdout + r.stderr

    assert cron() == ""
    assert json.loads((reports / "drift.json").read_text())["drift"]["status"] == "clean"
    denv.admin().execute_command("ACL", "SETUSER", "stranger", "on", "nopass", "+ping")
    out = cron()
    assert "user stranger is not in the file (prune: false)" in out
    assert json.loads((reports / "drift.json").read_text())["drift"]["kinds"] == {"unmanaged_user": 1}
    secrets_env.write_text(secrets_env.read_text().replace(ADMIN, "wrong-admin-token-0123456789"))
    out = cron()
    assert "reconciler drift failed (exit 1)" in out and "reconciler: " in out
    assert ADMIN not in out


def test_docs_document_the_json_keys() -> None:
    """The example in docs/drift.md has exactly the keys the tests pin."""
    import re

    section = (REPO / "docs" / "drift.md").read_text()
    (block,) = re.findall(r"```json\n(.*?)```", section, re.S)
    doc = json.loads(block)
    check_keys(doc)
    assert set(doc["instances"][0]["nodes"][0]) == NODE_KEYS
    assert set(doc["instances"][0]["nodes"][0]["changes"][0]) == CHANGE_KEYS
    for kind in ("token_expired", "token_expiring", "token_age", "unmanaged_user", "unmanaged_token", "nopass"):
        assert f"| `{kind}` |" in section
