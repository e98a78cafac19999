"""The record of unfinished work under pressure.

Two applies of one file on different instances (`--instance a`, `--instance b`, e.g. one CI
job per instance) run at the same time and both update `<file>.pending.json`: neither may fail
on the other's temporary file nor lose the other's entries. Real processes hammer the record
through the functions every apply calls (pending.begin before the first write, pending.finish
after the executor). And a record that can't be updated once the servers are written is a
warning, not a failed apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import sys
from reconciler import pending
from reconciler.plan import InstancePlan, NodePlan, Plan
from reconciler.providers.redis.node_run import NodeResult

source, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
address = f"127.0.0.1:{7000 + n}"
node = NodePlan(address=address, role="primary", label="", fingerprint="", persist="acl-save", pending=("persist",))
plan = Plan(source=source, instances=(InstancePlan(name=f"i{n}", topology="standalone", nodes=(node,)),))
for i in range(rounds):
    before = pending.begin(source, plan, {})
    if i < rounds - 1:  # the last round's persist "fails": its entry must stay
        pending.finish(source, plan, before, [NodeResult(f"i{n}", address, started=True, persisted="acl-save")], {})
"""

PROCESSES = 4
ROUNDS = 150


def test_applies_of_one_file_on_different_instances_never_lose_each_others_pending_work(tmp_path: Path) -> None:
    source = tmp_path / "access.yaml"
    source.write_text("version: 1\n")
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(source), str(n), str(ROUNDS)], stderr=subprocess.PIPE, text=True)
        for n in range(PROCESSES)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, "\n".join(errors)
    record = json.loads((tmp_path / "access.pending.json").read_text())
    assert sorted(record["nodes"]) == [f"127.0.0.1:{7000 + n}" for n in range(PROCESSES)]
    assert all(e["work"] == ["persist"] for e in record["nodes"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.pending.json", "access.yaml"]  # no temporary file left


def test_a_record_that_cannot_be_updated_after_the_writes_is_a_warning_not_a_failed_apply(server_factory, tmp_path: Path) -> None:
    """The record of unfinished work replaced (here by a directory, as a full disk or a folder
    turned read-only would refuse it) while the apply writes: the apply that wrote everything
    and saved it used to end `cannot read the record` with exit 1 and no verify; now it says
    so as a warning, verifies and exits 0."""
    import hashlib
    import os
    import time

    (tmp_path / "users.acl").write_text("")
    srv = server_factory("redis-7.0", extra_config=[["aclfile", str(tmp_path / "users.acl")]])
    admin = "pending-admin-plaintext-3c5e7a9b1d2f4068"
    srv.admin().execute_command("ACL", "SETUSER", "admin", "on", f">{admin}", "~*", "&*", "+@all")
    srv.admin().execute_command("ACL", "SAVE")
    users = "".join(f"  bulk-{i:05d}:\n    acl: \"~b{i}:* +get\"\n    tokens: [{{id: a, sha256: {hashlib.sha256(str(i).encode()).hexdigest()}}}]\n" for i in range(6000))
    access = tmp_path / "access.yaml"
    access.write_text(f"""version: 1
policies: {{forbid_nopass: false}}
instances:
  cache:
    nodes: ["{srv.address}"]
    admin: {{username: admin, secret: {{env: T_ADMIN}}}}
    persist: acl-save
users:
  admin:
    acl: "~* &* +@all"
    tokens: [{{id: a, secret: {{env: T_ADMIN}}}}]
{users}""")
    record = tmp_path / "access.pending.json"
    audit = tmp_path / "audit" / "audit.jsonl"
    audit.parent.mkdir()
    env = {**os.environ, "T_ADMIN": admin, "RECONCILER_NO_CACHE": "1"}
    argv = [sys.executable, "-m", "reconciler.cli", "apply", "-f", str(access), "--auto-approve", "--audit-log", str(audit)]
    stdout = tmp_path / "stdout"
    with stdout.open("w") as fh:  # the plan of 6,000 users would fill a pipe nobody reads yet
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while b'"attempt"' not in (audit.read_bytes() if audit.exists() else b""):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.001)
    record.unlink()  # written before the first attempt line
    record.mkdir()
    _, err = proc.communicate(timeout=300)
    out = stdout.read_text()
    assert proc.returncode == 0, err
    assert "Apply complete: 6000 added" in out
    assert f"warning: {record}: cannot read the record of unfinished work" in err, err
    assert len([u for u in srv.admin().execute_command("ACL", "USERS") if u.startswith("bulk-")]) == 6000


HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_a_process_frozen_while_updating_the_record_never_blocks_another_apply_for_ever(tmp_path: Path) -> None:
    """The record's update lock held by a process that never lets go (an apply frozen with
    SIGSTOP mid-update): another apply of the file gives up after a bounded wait with one
    line, nothing written, instead of waiting for ever."""
    from reconciler import pending
    from reconciler.errors import ReconcilerError
    from reconciler.plan import InstancePlan, NodePlan, Plan

    source = tmp_path / "access.yaml"
    source.write_text("version: 1\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(source)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        node = NodePlan(address="127.0.0.1:7000", role="primary", label="", fingerprint="", persist="acl-save", pending=("persist",))
        plan = Plan(source=str(source), instances=(InstancePlan(name="i", topology="standalone", nodes=(node,)),))
        original, pending.LOCK_WAIT_SECONDS = pending.LOCK_WAIT_SECONDS, 1
        try:
            try:
                pending.begin(str(source), plan, {})
                raise AssertionError("begin went on while another process held the record")
            except ReconcilerError as exc:
                assert "another reconciler process has been updating the record" in str(exc)
                assert str(exc).endswith("so nothing was changed")
        finally:
            pending.LOCK_WAIT_SECONDS = original
        assert not (tmp_path / "access.pending.json").exists()
    finally:
        holder.kill()
        holder.wait()
