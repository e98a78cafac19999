#!/usr/bin/env python3
"""Benchmark: the cost of `reconciler denials` on 50 nodes, each with a full ACL LOG.

    .venv/bin/python bench/bench_denials.py [SERVER_ID] [--nodes N] [--runs R] [--entries E]
        SERVER_ID: a tests/servers.py id (default valkey-9.1); N default 50; R default 5;
        E distinct denials per node (default 128 = the default acllog-max-len: a full log)

Starts N real server processes, fills each log with E distinct refusals (keys, channels,
probing names) plus repeated ones (two commands, a declared user's wrong token): with the
default E the log is full and wraps (lossy). Then times, in fresh
`reconciler` processes (what an operator or a scheduled job runs):
  1. `denials -f FILE --format json` over N standalone instances of one node each (a fleet);
  2. the same over one instance listing the N nodes (`discover: false`);
and the same two reads in-process (Manager.denials: the read and merge alone, no interpreter
start). Also reports the JSON report's size. Medians of R runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import redis  # noqa: E402 - after the sys.path lines above
from servers import RunningServer, no_retry, start_server  # noqa: E402

try:  # redis-py 7+: driver_info=None sends no CLIENT SETINFO
    from redis.driver_info import DriverInfo  # noqa: F401

    NO_SETINFO: dict = {"driver_info": None}
except ImportError:
    NO_SETINFO = {"lib_name": None, "lib_version": None}

ADMIN = "bench-admin-plaintext-6c1f9e3a7b5d2084"
APP = "bench-app-plaintext-0d8b2f6e4a1c9375"


def fill(srv: RunningServer, entries: int) -> None:
    """E distinct denials: each its own log entry (its reason, object or user name differ)."""
    a = srv.client("default", ADMIN)
    a.execute_command("ACL", "SETUSER", "app", "reset", "resetchannels", "on", f">{APP}", "~orders:*", "&orders.*", "+get", "+publish", "+ping")
    a.execute_command("ACL", "LOG", "RESET")
    app = srv.client("app", APP, retry=no_retry(), **NO_SETINFO)
    for i in range(entries):
        try:
            if i % 3 == 0:
                app.get(f"billing:{i}")
            elif i % 3 == 1:
                app.publish(f"billing.{i}", "x")
            else:  # a probe: a name nobody declared, on its own connection
                srv.client(f"probe-{i}", f"guess-{i}", retry=no_retry(), **NO_SETINFO).ping()
        except redis.RedisError:
            pass
    for command in (("KEYS", "*"), ("OBJECT", "FREQ", "orders:1")):  # the same command again: one entry each
        for _ in range(5):
            try:
                app.execute_command(*command)
            except redis.RedisError:
                pass
    # A declared user on a wrong token, many times: one more entry, a large count.
    for _ in range(20):
        try:
            srv.client("app", "an-old-token", retry=no_retry(), **NO_SETINFO).ping()
        except redis.RedisError:
            pass
    app.close()
    a.close()


def fleet_yaml(addresses: list[str]) -> str:
    lines = ["version: 1", "instances:"]
    for i, address in enumerate(addresses):
        lines += [f"  cache-{i:02d}:", f'    nodes: ["{address}"]', "    admin: {username: default, secret: {env: BENCH_ADMIN}}"]
    lines += ["users:", "  app:", '    acl: "~orders:* &orders.* +get +publish +ping"', "    tokens:", "      - id: t1", "        secret: {env: BENCH_APP}"]
    return "\n".join(lines) + "\n"


def one_instance_yaml(addresses: list[str]) -> str:
    nodes = ", ".join(f'"{a}"' for a in addresses)
    return (
        "version: 1\ninstances:\n  cache:\n"
        f"    nodes: [{nodes}]\n    discover: false\n    admin: {{username: default, secret: {{env: BENCH_ADMIN}}}}\n"
        'users:\n  app:\n    acl: "~orders:* &orders.* +get +publish +ping"\n    tokens:\n      - id: t1\n        secret: {env: BENCH_APP}\n'
    )


def cold(file: Path) -> tuple[float, int, dict]:
    env = {**os.environ, "BENCH_ADMIN": ADMIN, "BENCH_APP": APP, "NO_COLOR": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler.cli", "denials", "-f", str(file), "--format", "json"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 2:
        sys.exit(f"denials exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed, len(proc.stdout), json.loads(proc.stdout)


def warm(file: Path) -> float:
    from reconciler.manager import Manager

    os.environ.update(BENCH_ADMIN=ADMIN, BENCH_APP=APP)
    manager = Manager.from_file(str(file))
    start = time.perf_counter()
    report = manager.denials()
    elapsed = time.perf_counter() - start
    assert report.has_denials and not report.errors, report.errors
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server_id", nargs="?", default="valkey-9.1")
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--entries", type=int, default=128)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-denials-") as tmp:
        root = Path(tmp)
        print(f"starting {args.nodes} {args.server_id} processes ...", flush=True)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            servers = list(pool.map(lambda i: start_server(args.server_id, root / f"n{i:02d}"), range(args.nodes)))
        try:
            for srv in servers:
                c = srv.admin()
                c.execute_command("ACL", "SETUSER", "default", "on", f">{ADMIN}")
                c.close()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda s: fill(s, args.entries), servers))
            print(f"  started and filled in {time.perf_counter() - t0:.1f} s ({args.entries} distinct denials per node)", flush=True)
            addresses = [s.address for s in servers]
            files = {
                f"{args.nodes} instances of 1 node": (root / "fleet.yaml", fleet_yaml(addresses)),
                f"1 instance of {args.nodes} nodes": (root / "one.yaml", one_instance_yaml(addresses)),
            }
            for name, (path, text) in files.items():
                path.write_text(text)
                colds, warms, size, entries = [], [], 0, 0
                for _ in range(args.runs):
                    elapsed, size, doc = cold(path)
                    colds.append(elapsed)
                    entries = sum(len(i["denials"]) for i in doc["instances"])
                    warms.append(warm(path))
                lossy = doc["summary"]["lossy_nodes"]
                print(
                    f"  {name:<24} cold CLI {statistics.median(colds):5.2f} s   in-process read+merge "
                    f"{statistics.median(warms) * 1000:6.0f} ms   ({entries:,} merged rows, {lossy} lossy logs, "
                    f"JSON {size / 1024:,.0f} KiB; medians of {args.runs})",
                    flush=True,
                )
        finally:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda s: s.stop(), servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
