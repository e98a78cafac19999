#!/usr/bin/env python3
"""Benchmark: a 6-node cluster (3 primaries, 3 replicas) against a single node.

    .venv/bin/python bench/bench_cluster.py [SERVER_ID] [--users N] [--runs R]
        SERVER_ID: a tests/servers.py id (default valkey-9.1); N default 1000; R default 3

For each deployment, in fresh `reconciler` processes (what an operator or CI job runs):
  1. `apply -f FILE --auto-approve` creating N users (each with a token and its own key
     patterns) on every node: discovery, read, plan, parallel writes, ACL SAVE, verify;
  2. `plan -f FILE --detailed-exitcode` with nothing to change.
R rounds, alternating the deployments (users deleted before each apply, untimed); medians.
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

from support.cluster import Deployment, admin, setup_admin, start_cluster, start_replicated  # noqa: E402 - after the sys.path line above

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


def wipe(dep: Deployment) -> None:
    """Back to `default` only on every node (untimed), so each apply creates every user."""
    for srv in dep.nodes:
        c = admin(srv)
        try:
            names = [line.split()[1] for line in c.execute_command("ACL", "LIST") if line.split()[1] != "default"]
            for i in range(0, len(names), 500):
                c.execute_command("ACL", "DELUSER", *names[i : i + 500])
            c.execute_command("ACL", "SAVE")
        finally:
            c.close()


def measure(deployments: dict[str, Deployment], file: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Median apply and no-op plan times per deployment; runs interleave the deployments so
    load from elsewhere on the machine hits both alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in deployments}
    for _ in range(runs):
        for name, dep in deployments.items():
            seed = dep.nodes[0].address
            wipe(dep)
            times[name][0].append(reconciler("apply", "-f", str(file), "--auto-approve", seed=seed, expect={0}))
            times[name][1].append(reconciler("plan", "-f", str(file), "--detailed-exitcode", seed=seed, expect={0}))
    out = {}
    for name, (applies, plans) in times.items():
        out[name] = (statistics.median(applies), statistics.median(plans))
        print(f"  {name:<36} apply {out[name][0]:6.2f} s   no-op plan {out[name][1]:6.2f} s   (medians of {runs})", flush=True)
    return out


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
            result = measure({"single node": single, "cluster (3 primaries + 3 replicas)": cluster}, file, args.runs)
            one, six = result["single node"], result["cluster (3 primaries + 3 replicas)"]
        finally:
            single.stop()
            cluster.stop()
    ratio_apply, ratio_plan = six[0] / one[0], six[1] / one[1]
    print(f"ratio cluster/single: apply {ratio_apply:.2f}x, no-op plan {ratio_plan:.2f}x (target < 2x)")
    return 0 if max(ratio_apply, ratio_plan) < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
