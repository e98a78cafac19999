#!/usr/bin/env python3
"""Benchmark: a 6-node cluster (3 primaries, 3 replicas) against a single node.

    .venv/bin/python bench/bench_cluster.py [SERVER_ID] [--users N] [--runs R]
        SERVER_ID: a tests/servers.py id (default valkey-9.1); N default 1000; R default 3

For each deployment, in fresh `reconciler` processes (what an operator or CI job runs):
  1. `apply -f FILE --auto-approve` creating N users (each with a token and its own key
     patterns) on every node: discovery, read, plan, parallel writes, ACL SAVE, verify;
  2. `plan -f FILE --detailed-exitcode` with nothing to change (median of R runs).
Prints both times and the cluster/single ratio; the target is under 2x, since nodes are
read and written in parallel.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from cluster_support import setup_admin, start_cluster, start_replicated  # noqa: E402

ADMIN = "bench-admin-plaintext-2b7e9c4d1a6f3058"
ROLES = [
    "+@read -@dangerous",
    "+@all -@dangerous",
    "-@all +@read -keys +set",
    "+@read +@write -flushall -flushdb",
    "+get +set +del +expire +ttl",
    "+@hash +@string -@admin",
]


def desired_yaml(users: int) -> str:
    lines = [
        "version: 1",
        "instances:",
        "  cache:",
        "    nodes: [{env: BENCH_SEED}]",
        "    admin: {username: default, secret: {env: BENCH_ADMIN}}",
        "users:",
    ]
    for i in range(users):
        digest = hashlib.sha256(f"bench-token-{i}".encode()).hexdigest()
        lines += [
            f"  app-{i:04d}:",
            f'    acl: "~app{i}:* &app{i}:* {ROLES[i % len(ROLES)]}"',
            "    tokens:",
            f"      - id: t{i}",
            f"        sha256: {digest}",
        ]
    return "\n".join(lines) + "\n"


def reconciler(*argv: str, seed: str, expect: set[int]) -> float:
    env = {**os.environ, "BENCH_SEED": seed, "BENCH_ADMIN": ADMIN, "NO_COLOR": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in expect:
        sys.exit(f"reconciler {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def measure(name: str, seed: str, file: Path, runs: int) -> tuple[float, float]:
    apply_s = reconciler("apply", "-f", str(file), "--auto-approve", seed=seed, expect={0})
    plans = [reconciler("plan", "-f", str(file), "--detailed-exitcode", seed=seed, expect={0}) for _ in range(runs)]
    plan_s = statistics.median(plans)
    print(f"  {name:<28} apply {apply_s:6.2f} s   no-op plan {plan_s:6.2f} s (median of {runs})", flush=True)
    return apply_s, plan_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server_id", nargs="?", default="valkey-9.1")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        file = root / "access.yaml"
        file.write_text(desired_yaml(args.users))
        print(f"{args.users} users, {args.server_id}; starting a single node and a 6-node cluster ...", flush=True)
        single = start_replicated(args.server_id, root / "single", replicas=0, aclfile=True)
        cluster = start_cluster(args.server_id, root / "cluster", aclfile=True)
        try:
            setup_admin(single, ADMIN)
            setup_admin(cluster, ADMIN)
            one = measure("single node", single.nodes[0].address, file, args.runs)
            six = measure("cluster (3 primaries + 3 replicas)", cluster.nodes[0].address, file, args.runs)
        finally:
            single.stop()
            cluster.stop()
    ratio_apply, ratio_plan = six[0] / one[0], six[1] / one[1]
    print(f"ratio cluster/single: apply {ratio_apply:.2f}x, no-op plan {ratio_plan:.2f}x (target < 2x)")
    return 0 if max(ratio_apply, ratio_plan) < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
