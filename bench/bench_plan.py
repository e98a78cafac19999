"""Benchmark: no-op `reconciler plan` of one instance holding 10,000 users that match the file.

Reports the whole process time of `reconciler plan --detailed-exitcode` (exit 0 expected:
no changes) next to a bare `ACL LIST` round trip of the same server, and the in-process
split (load / read / plan / render).

    .venv/bin/python bench/bench_plan.py [--users 10000] [--server valkey-9.1] [--runs 3]

Targets: process time under 1.5 s, within 10x of the bare ACL LIST. Not a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

ROLES = ["~orders:{i}:* +@read +@write -@dangerous", "~reports:* +@read -keys", "~cache:{i}:* +get +set +del"]


def desired_yaml(n: int, address: str) -> str:
    lines = [
        "version: 1",
        "instances:",
        "  bench:",
        f'    nodes: ["{address}"]',
        "    admin: {username: reconciler, secret: {env: BENCH_ADMIN_TOKEN}}",
        "    persist: none",
        "users:",
        "  reconciler:",
        '    acl: "~* &* +@all"',
        "    tokens:",
        "      - {id: admin, secret: {env: BENCH_ADMIN_TOKEN}}",
    ]
    for i in range(n):
        digest = hashlib.sha256(f"bench-token-{i}".encode()).hexdigest()
        rules = ROLES[i % len(ROLES)].format(i=i % 50)
        lines += [f"  app-{i:05d}:", f'    acl: "{rules}"', "    tokens:", f"      - {{id: t1, sha256: {digest}}}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--server", default="valkey-9.1")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from servers import start_server

    from reconciler.plan import UserChange

    admin_token = "Bench-admin-token-1!"
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(args.server, Path(tmp) / "srv")
        try:
            client = srv.admin()
            client.execute_command("ACL", "SETUSER", "reconciler", "on", f">{admin_token}", "~*", "&*", "+@all")
            pipe = client.pipeline(transaction=False)
            for i in range(args.users):
                digest = hashlib.sha256(f"bench-token-{i}".encode()).hexdigest()
                rules = ROLES[i % len(ROLES)].format(i=i % 50)
                change = UserChange("create", f"app-{i:05d}", hashes=(digest,), rules=rules)
                pipe.execute_command("ACL", "SETUSER", change.user, *change.setuser_args())
            pipe.execute()
            path = Path(tmp) / "desired.yaml"
            path.write_text(desired_yaml(args.users, srv.address))
            env = {**os.environ, "BENCH_ADMIN_TOKEN": admin_token}

            acl_list = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                client.execute_command("ACL", "LIST")
                acl_list.append(time.perf_counter() - t0)

            cli = [sys.executable, "-m", "reconciler.cli", "plan", "-f", str(path), "--detailed-exitcode"]
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                r = subprocess.run(cli, env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if r.returncode != 0:
                    print(r.stdout[-2000:], r.stderr[-2000:])
                    raise SystemExit(f"plan exited {r.returncode}, expected 0 (no changes)")

            os.environ["BENCH_ADMIN_TOKEN"] = admin_token
            from reconciler.manager import Manager
            from reconciler.render import render_text

            t0 = time.perf_counter()
            manager = Manager.from_file(str(path))
            t1 = time.perf_counter()
            state = manager.read()
            t2 = time.perf_counter()
            plan = manager.plan(state)
            t3 = time.perf_counter()
            render_text(plan)
            t4 = time.perf_counter()
            assert not plan.has_changes
        finally:
            srv.stop()

    best_list, best_plan = min(acl_list), min(times)
    print(f"server {args.server}, {args.users} users")
    print(f"bare ACL LIST round trip:      {best_list * 1000:8.1f} ms")
    print(f"reconciler plan (process):     {best_plan * 1000:8.1f} ms  (best of {args.runs}; ratio {best_plan / best_list:.1f}x)")
    print(f"  in process: load {1000 * (t1 - t0):.0f} ms, read {1000 * (t2 - t1):.0f} ms, "
          f"plan {1000 * (t3 - t2):.0f} ms, render {1000 * (t4 - t3):.0f} ms")
    print("target: process < 1500 ms, ratio < 10x:", "met" if best_plan < 1.5 and best_plan / best_list < 10 else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
