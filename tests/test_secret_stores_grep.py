"""No plaintext from a store or a command ever leaves the process: every value the test store
holds (the tokens, the admin secret, a field nobody references, VAULT_TOKEN itself) and every
command's output is grepped for in every command's stdout and stderr, the saved plan, the audit
log, the parse cache and every file the reconciler wrote -- on success and on error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openbao import RunningBao
from servers import RunningServer, no_retry
from support.cli import Cli, Result
from support.executor import sha

ADMIN_USER = "reconciler-admin"
STORE = {
    "admin": "grep-store-admin-3c7e1a9d5b2f",
    "current": "grep-store-current-8a2d6f0c4e1b",
    "previous": "grep-store-previous-1f5b9d3a7c0e",
    "oldest": "grep-store-oldest-6d0a4c8e2f7b",
    "unreferenced": "grep-store-unreferenced-9e3b7f1d5a4c",
}
EXEC_VALUE = "grep-exec-value-4b8f2d6a0e9c"
EXEC_STDERR = "grep-exec-stderr-7a1c5e9b3d2f"
CACHE_PAD = "x" * (300 * 1024)  # past the parse cache's threshold: this file is cached

FILE = f"""\
version: 1
x-padding: "{CACHE_PAD}"
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {ADMIN_USER}, secret: {{vault: {{path: infra/cache, field: admin}}}}}}
    auth_mode: none
    persist: none
users:
  {ADMIN_USER}:
    acl: "~* &* +@all"
    tokens:
      - id: admin-1
        secret: {{vault: {{path: infra/cache, field: admin}}}}
  app-orders:
    acl: "~orders:* +@read"
    tokens:
      - id: current
        secret: {{vault: {{path: apps/orders, field: token}}}}
      - id: previous
        secret: {{vault: {{path: apps/orders, field: token, version: -1}}}}
  app-ci:
    acl: "~ci:* +@read"
    tokens:
      - id: ci
        secret: {{exec: ["./get-ci-token"]}}
"""


class Run(Cli):
    def __init__(self, srv: RunningServer, bao: RunningBao, tmp: Path):
        super().__init__(tmp, env={"T_NODE": srv.address, **bao.env(), "EXEC_VALUE": EXEC_VALUE, "EXEC_STDERR": EXEC_STDERR,
                                   "RECONCILER_TODAY": "2026-11-23", "NO_COLOR": "1", "RECONCILER_CACHE_DIR": str(tmp / "cache")})
        self.values = [*STORE.values(), EXEC_VALUE, EXEC_STDERR, bao.root_token]

    def __call__(self, *argv: str, expect: int | tuple[int, ...] | None = 0) -> Result:
        r = super().__call__(*argv, expect=expect)
        for value in self.values:
            assert value not in r.out and value not in r.err, f"a plaintext in the output of `{' '.join(argv)}`"
        return r


@pytest.fixture
def run(server_factory, bao: RunningBao, tmp_path: Path) -> Run:
    srv = server_factory("valkey-9.1")
    srv.admin().execute_command("ACL", "SETUSER", ADMIN_USER, "on", f">{STORE['admin']}", "~*", "&*", "+@all")
    bao.put("infra/cache", {"admin": STORE["admin"], "unused": STORE["unreferenced"]})
    for key in ("oldest", "previous", "current"):
        bao.put("apps/orders", {"token": STORE[key], "unused": STORE["unreferenced"]})
    script = tmp_path / "get-ci-token"
    script.write_text('#!/bin/sh\necho "$EXEC_STDERR" >&2\nprintf "%s\\n" "$EXEC_VALUE"\n')  # no value in the file itself
    script.chmod(0o755)
    r = Run(srv, bao, tmp_path)
    r.write(FILE)
    r.srv = srv  # type: ignore[attr-defined]
    r.bao = bao  # type: ignore[attr-defined]
    return r


def test_no_store_or_command_value_anywhere(run: Run) -> None:
    f = "access.yaml"
    x = "--allow-exec"
    run("validate", "-f", f)
    run("validate", "-f", f, "--resolve-secrets", x)
    r = run("plan", "-f", f, x)
    assert f"current (sha256:{sha(STORE['current'])[:8]}…)" in r.out and f"ci (sha256:{sha(EXEC_VALUE)[:8]}…)" in r.out
    run("plan", "-f", f, x, "--format", "markdown")
    run("plan", "-f", f, x, "--format", "json", "--out", "plan.json", "--detailed-exitcode", expect=2)
    run("drift", "-f", f, x, "--format", "json", expect=2)
    r = run("apply", "plan.json", "-f", f, x, "--auto-approve", "--audit-log", "audit.jsonl")
    assert "Apply complete" in r.out
    run("apply", "-f", f, x, "--auto-approve", "--audit-log", "audit.jsonl")
    run("drift", "-f", f, x, "--format", "markdown", expect=2)  # the test server's nopass default
    run("explain", "app-orders", "-f", f, x)
    r = run("import", "--instance", "cache", "-f", f, x)
    assert f"sha256: {sha(STORE['current'])}" in r.out
    r = run("token", "new", "app-new", "--id", "n1", "--sink", "vault:apps/new#token")
    new_token = run.bao.get("apps/new")["data"]["token"]  # type: ignore[attr-defined]
    run.values.append(new_token)
    assert sha(new_token) in r.out and new_token not in r.out + r.err
    # Error paths: without --allow-exec, a hung or sealed store, a deleted version.
    r = run("plan", "-f", f, expect=1)
    assert "--allow-exec" in r.err
    run.bao.delete_versions("apps/orders", 2)  # type: ignore[attr-defined]
    r = run("plan", "-f", f, x, expect=1)
    assert "version 2 (version: -1) of secret/apps/orders was deleted" in r.err
    run.bao.seal()  # type: ignore[attr-defined]
    r = run("apply", "-f", f, x, "--auto-approve", expect=1)
    assert "is sealed" in r.err

    audit = (run.dir / "audit.jsonl").read_text()
    assert sha(STORE["current"])[:8] in audit and sha(EXEC_VALUE)[:8] in audit
    assert json.loads((run.dir / "plan.json").read_text())
    cache_files = [p for p in (run.dir / "cache").rglob("*") if p.is_file()]
    assert cache_files, "the parse cache was not used: the test would prove nothing about it"
    written = [p for p in run.dir.rglob("*") if p.is_file() and "openbao" not in p.parts and p.name != "get-ci-token"]
    for path in written:
        data = path.read_bytes()
        for value in run.values:
            assert value.encode() not in data, f"a plaintext in {path}"
    login = run.srv.client("app-ci", EXEC_VALUE, retry=no_retry())  # type: ignore[attr-defined]
    assert login.get("ci:probe") is None  # logged in with the command's value
