"""The audit log never under-reports: an apply of thousands of users killed with SIGKILL in the
middle leaves no user on the server that the log does not name. Before each batch the executor
writes (and syncs) an `attempt` line per command; after the replies, the result lines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import RunningServer

ADMIN = "audit-crash-admin-plaintext-6a8c0e2b4d1f3957"
N = 6000  # six batches of 1000
SERVERS = [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-7.0", "valkey-9.1")]


def _file(srv: RunningServer) -> str:
    users = "".join(
        f"  bulk-{i:05d}:\n    acl: \"~b{i}:* +get\"\n    tokens: [{{id: a, sha256: {hashlib.sha256(str(i).encode()).hexdigest()}}}]\n"
        for i in range(N)
    )
    return f"""version: 1
instances:
  cache:
    nodes: ["{srv.address}"]
    admin: {{username: admin, secret: {{env: T_ADMIN}}}}
    persist: none
users:
  admin:
    acl: "~* &* +@all"
    tokens: [{{id: a, secret: {{env: T_ADMIN}}}}]
{users}"""


def _bulk_users(srv: RunningServer) -> set[str]:
    return {u for u in srv.admin().execute_command("ACL", "USERS") if u.startswith("bulk-")}


def _setup(srv: RunningServer, tmp_path: Path) -> tuple[RunningServer, Path, dict[str, str], list[str]]:
    """The admin on the server, the file of N users; -> (server, audit log, env, apply argv)."""
    srv.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
    access = tmp_path / "access.yaml"
    access.write_text(_file(srv))
    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "T_ADMIN": ADMIN, "RECONCILER_NO_CACHE": "1"}
    return srv, audit, env, [sys.executable, "-m", "reconciler.cli", "apply", "-f", str(access), "--auto-approve", "--audit-log", str(audit)]


@pytest.mark.parametrize("server_id", SERVERS)
def test_sigkill_mid_apply_leaves_no_user_the_audit_log_does_not_name(server_id: str, server_factory, tmp_path: Path) -> None:
    srv, audit, env, argv = _setup(server_factory(server_id), tmp_path)
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Kill at the first result line: the first batch has been answered, its result lines are
    # being written and the next batch is about to go (or is in flight).
    deadline = time.monotonic() + 180
    while b'"result": "ok"' not in (audit.read_bytes() if audit.exists() else b""):
        assert proc.poll() is None, f"apply ended before it could be killed: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no result line within 180 s"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    created = _bulk_users(srv)
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.endswith("}")]
    named = {r["user"] for r in records if r["action"] == "create"}
    attempted = {r["user"] for r in records if r["action"] == "create" and r["result"] == "attempt"}
    done = {r["user"] for r in records if r["action"] == "create" and r["result"] == "ok"}
    assert 0 < len(created) < N
    assert created <= named, f"{len(created - named)} users on the server that the audit log does not name"
    assert done <= attempted  # every result follows its attempt
    # A re-run converges.
    r = subprocess.run(argv[:-2], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(_bulk_users(srv)) == N


def _file_size_limit(limit: int):
    def set_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.parametrize("server_id", SERVERS[:1])
def test_audit_log_that_cannot_be_written_stops_the_apply_and_says_what_ran(
    server_id: str, server_factory, tmp_path: Path
) -> None:
    """A full disk under the audit log (here a file-size limit, EFBIG as ENOSPC would be): the
    apply stops before sending what the log could not name, exits 1 with one line naming the
    log, reports what it applied, and a re-run with room converges. It used to end with a bare
    `reconciler: File too large` after writing a batch, saying nothing of what ran."""
    srv, audit, env, argv = _setup(server_factory(server_id), tmp_path)
    # Room for the first batch's attempt lines (about 350 bytes each) but not for its results.
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       preexec_fn=_file_size_limit(400_000))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert f"audit log {audit}: cannot write: File too large" in r.stderr
    created = _bulk_users(srv)
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.endswith("}")]
    named = {r["user"] for r in records if r["action"] == "create"}
    assert created <= named, f"{len(created - named)} users on the server that the audit log does not name"
    assert len(created) < N
    assert f"applied ({len(created)})" in r.stderr if created else "applied (" not in r.stderr
    # With room, a re-run converges.
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(_bulk_users(srv)) == N
