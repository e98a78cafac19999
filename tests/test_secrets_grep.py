"""No token plaintext ever leaves the process: every command, every output channel, every file.

validate, plan (text, json, markdown, --out), apply (from the file and from a saved plan, with
--audit-log), drift, import and error paths run through the real CLI with known plaintexts from
env and file secrets; stdout, stderr, the plan file and the audit log are grepped for them, and
the sha256 prefixes are checked to be where the reader needs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import RunningServer, no_retry
from support.cli import Cli, Result
from support.executor import sha

ADMIN_USER = "reconciler-admin"
SECRETS = {
    "admin (file)": "grep-admin-file-7c1e5a93d08b4f26e1a9",
    "orders new (env)": "grep-orders-env-2b8d4f6a1c3e5079d2f4",
    "orders old (file)": "grep-orders-file-9e0a2c4d6f8b1357a9c0",
    "reports (env)": "grep-reports-env-5d7f9b1a3c5e7092b4d6",
    "out of band": "grep-by-hand-0f2e4d6c8a1b3957c0e2",
}
ADMIN = SECRETS["admin (file)"]
ORDERS_NEW = SECRETS["orders new (env)"]
ORDERS_OLD = SECRETS["orders old (file)"]
REPORTS = SECRETS["reports (env)"]
BY_HAND = SECRETS["out of band"]

FILE = """\
version: 1
policies:
  token_max_age_days: 90
  min_token_length: 16
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {admin}, secret: {{file: admin.token}}}}
    auth_mode: none
    persist: none
users:
  {admin}:
    acl: "~* &* +@all"
    tokens:
      - id: admin-1
        secret: {{file: admin.token}}
  app-orders:
    acl: "~orders:* +@read +@write -@dangerous"
    tokens:
      - id: 2026-11
        secret: {{env: T_ORDERS_NEW}}
        created: 2026-11-01
      - id: 2026-08
        secret: {{file: secrets/orders-old.token}}
        created: 2026-08-01
  app-reports:
    acl: "~reports:* +@read"
    tokens:
      - id: 2026-10
        secret: {{env: T_REPORTS}}
        created: 2026-10-01
"""


def fragments(secret: str) -> list[str]:
    """The plaintext and its random tail: a truncated echo is a leak too."""
    return [secret, secret[-20:]]


def assert_clean(text: str, where: str) -> None:
    for name, secret in SECRETS.items():
        for frag in fragments(secret):
            assert frag not in text, f"plaintext of {name} found in {where}"


class Run(Cli):
    """The CLI as a subprocess in the file's folder; every output is grepped for plaintext."""

    def __init__(self, srv: RunningServer, tmp: Path):
        super().__init__(
            tmp,
            env={"T_NODE": srv.address, "T_ORDERS_NEW": ORDERS_NEW, "T_REPORTS": REPORTS,
                 "RECONCILER_TODAY": "2026-11-23", "NO_COLOR": "1"},
        )
        self.srv = srv
        (tmp / "secrets").mkdir()
        for path, value in ((tmp / "admin.token", ADMIN), (tmp / "secrets" / "orders-old.token", ORDERS_OLD)):
            path.write_text(value + "\n")
            path.chmod(0o600)
        self.file.write_text(FILE.format(admin=ADMIN_USER))
        srv.admin().execute_command("ACL", "SETUSER", ADMIN_USER, "on", f">{ADMIN}", "~*", "&*", "+@all")

    def __call__(self, *argv: str, expect: int | tuple[int, ...] | None = 0) -> Result:
        r = super().__call__(*argv, expect=expect)
        what = " ".join(argv)
        assert_clean(r.out, f"stdout of `{what}`")
        assert_clean(r.err, f"stderr of `{what}`")
        return r


@pytest.fixture(params=[pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-6.2", "valkey-9.1")])
def run(request, server_factory, tmp_path: Path) -> Run:
    return Run(server_factory(request.param), tmp_path)


def test_no_plaintext_anywhere(run: Run) -> None:
    f = "access.yaml"
    r = run("validate", "-f", f)
    assert "ok" in r.out

    r = run("plan", "-f", f)
    for token in (ORDERS_NEW, ORDERS_OLD, REPORTS):
        assert f"(sha256:{sha(token)[:8]}…)" in r.out
    r = run("plan", "-f", f, "--format", "markdown")
    assert f"sha256:{sha(ORDERS_NEW)[:8]}…" in r.out
    r = run("plan", "-f", f, "--format", "json", "--out", "plan.json", "--detailed-exitcode", expect=2)
    doc = json.loads(r.out)
    hashes = {t["sha256"] for i in doc["instances"] for n in i["nodes"] for c in n["changes"] for t in c["tokens"]}
    assert {sha(ORDERS_NEW), sha(ORDERS_OLD), sha(REPORTS)} <= hashes
    plan_file = (run.dir / "plan.json").read_text()
    assert_clean(plan_file, "the saved plan")
    assert sha(ORDERS_OLD) in plan_file

    r = run("drift", "-f", f, expect=2)
    assert f"sha256:{sha(REPORTS)[:8]}…" in r.out
    run("drift", "-f", f, "--format", "json", expect=2)
    run("drift", "-f", f, "--format", "markdown", expect=2)

    # Apply the saved plan, then (after someone adds a password by hand) the file.
    r = run("apply", "plan.json", "-f", f, "--auto-approve", "--audit-log", "audit.jsonl")
    assert "Apply complete" in r.out
    c = run.srv.client(ADMIN_USER, ADMIN, retry=no_retry())
    c.execute_command("ACL", "SETUSER", "app-orders", f">{BY_HAND}")
    r = run("apply", "-f", f, "--auto-approve", "--audit-log", "audit.jsonl")
    assert f"sha256:{sha(BY_HAND)[:8]}…" in r.out

    audit = (run.dir / "audit.jsonl").read_text()
    assert_clean(audit, "the audit log")
    entries = [json.loads(line) for line in audit.splitlines()]
    assert entries
    prefixes = json.dumps(entries)
    for token in (ORDERS_NEW, ORDERS_OLD, REPORTS, BY_HAND):
        assert sha(token)[:8] in prefixes
        assert sha(token) not in audit  # the audit log keeps prefixes, not whole hashes

    r = run("import", "--instance", "cache", "-f", f)
    assert f"sha256: {sha(ORDERS_NEW)}" in r.out and f"sha256: {sha(ADMIN)}" in r.out
    r = run("drift", "-f", f, expect=2)  # converged; the findings remain (old token, nopass default)
    assert "No changes." in r.out and "token app-orders/2026-08 is 114 days old" in r.out
    r = run("plan", "-f", f, "--detailed-exitcode")
    assert "No changes." in r.out

    # Nothing the reconciler wrote in its folder holds a plaintext either.
    for path in run.dir.rglob("*"):
        if path.is_file() and path.name not in ("admin.token", "orders-old.token"):
            assert_clean(path.read_text(errors="replace"), str(path))


@pytest.mark.parametrize(
    "mistake",
    [
        "secret as a bare string",
        "plaintext in sha256",
        "password in acl",
        "too short",
    ],
)
def test_error_messages_never_echo_a_secret(tmp_path: Path, mistake: str) -> None:
    """Typical slips put a plaintext where it does not belong; the error must not repeat it."""
    secret = ORDERS_NEW
    short = "Short-7q"  # under min_token_length; its own text must not be echoed either
    spec = {
        "secret as a bare string": f"      - id: t1\n        secret: {secret}\n",
        "plaintext in sha256": f"      - id: t1\n        sha256: {secret}\n",
        "password in acl": None,
        "too short": "      - id: t1\n        secret: {env: T_SHORT}\n",
    }[mistake]
    acl = f"~orders:* +get >{secret}" if mistake == "password in acl" else "~orders:* +get"
    tokens = spec or "      - id: t1\n        secret: {env: T_ORDERS_NEW}\n"
    text = (
        "version: 1\npolicies:\n  min_token_length: 16\ninstances:\n  cache:\n    nodes: [\"127.0.0.1:1\"]\n"
        f"users:\n  app-orders:\n    acl: \"{acl}\"\n    tokens:\n{tokens}"
    )
    (tmp_path / "bad.yaml").write_text(text)
    cli = Cli(tmp_path, env={"T_ORDERS_NEW": secret, "T_SHORT": short})
    for cmd in ("validate", "plan", "drift"):
        resolve = ["--resolve-secrets"] if cmd == "validate" else []  # the length check needs the plaintext
        r = cli(cmd, "-f", "bad.yaml", *resolve, expect=1)
        assert "bad.yaml:" in r.err
        for frag in (*fragments(secret), short):
            assert frag not in r.out + r.err, f"{mistake}: `{cmd}` echoed a secret:\n{r.err}"
