"""Two applies of one file on different instances (`--instance a`, `--instance b`, e.g. one CI
job per instance) run at the same time and both update `<file>.pending.json`: neither may fail
on the other's temporary file nor lose the other's entries. Real processes hammer the record
through the functions every apply calls (pending.begin before the first write, pending.finish
after the executor)."""

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
