"""Benchmark: reading 1,000 tokens from 100 Vault KV v2 paths (10 fields each) with a real
OpenBao dev server, and running `exec:` secrets.

Reports, cold (a fresh process each run):
  - `reconciler validate --resolve-secrets` on a file with 1,000 vault tokens: wall time and
    the requests sent (one per path: 100), next to the same file's plain validate (no reads);
  - the in-process store phase alone (Session.prefetch + resolve of the 1,000 references), with
    requests counted, and with a `version: -1` sibling per path (one more request per path);
  - 20 distinct `exec:` commands (a tiny script each), run 4 at a time.

    .venv/bin/python bench/bench_secret_stores.py [--paths 100] [--fields 10] [--runs 3]

Targets: the store phase within 2 s for 1,000 tokens on a loopback store; requests = paths
(+ paths again with version -1). Not a timed test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def desired_yaml(paths: int, fields: int, previous: bool) -> str:
    lines = ["version: 1", "instances:", "  bench:", '    nodes: ["127.0.0.1:1"]', "users:"]
    for p in range(paths):
        for f in range(fields):
            lines += [f"  app-{p:03d}-{f:02d}:", '    acl: "~app:* +get"', "    tokens:",
                      f"      - {{id: current, secret: {{vault: {{path: bench/app-{p:03d}, field: f{f:02d}}}}}}}"]
            if previous:
                lines.append(f"      - {{id: previous, secret: {{vault: {{path: bench/app-{p:03d}, field: f{f:02d}, version: -1}}}}}}")
    return "\n".join(lines) + "\n"


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv[-4:])}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return statistics.median(times)


def store_phase(path: Path, environ: dict[str, str], runs: int) -> tuple[float, int, int]:
    """(median seconds, requests, references) for prefetch + resolve of every reference in the file."""
    import yaml

    from reconciler import secrets
    from reconciler.config.core import secret_refs
    from reconciler.secrets.vault import requests_made

    refs = list(secret_refs(yaml.safe_load(path.read_text())))
    times, requests = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        session = secrets.Session(str(path.parent), environ=environ)
        session.prefetch(refs)
        for ref in refs:
            session.resolve(ref)
        times.append(time.perf_counter() - t)
        requests = requests_made(session.ctx)
    return statistics.median(times), requests, len(refs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--fields", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    from openbao import start_bao

    with tempfile.TemporaryDirectory(prefix="bench-secrets-") as tmp:
        folder = Path(tmp)
        bao = start_bao(folder / "openbao")
        try:
            for p in range(args.paths):
                data = {f"f{f:02d}": f"bench-token-{p:03d}-{f:02d}-{os.urandom(8).hex()}" for f in range(args.fields)}
                bao.put(f"bench/app-{p:03d}", data)
                bao.put(f"bench/app-{p:03d}", {k: v + "-v2" for k, v in data.items()})
            env = {**os.environ, **bao.env(), "PYTHONPATH": str(REPO), "RECONCILER_NO_CACHE": "1"}
            cli = [sys.executable, "-m", "reconciler.cli"]
            tokens = args.paths * args.fields
            print(f"OpenBao {bao.addr}: {args.paths} paths x {args.fields} fields = {tokens} tokens; median of {args.runs}")
            for previous in (False, True):
                f = folder / f"access-{int(previous)}.yaml"
                f.write_text(desired_yaml(args.paths, args.fields, previous))
                refs = tokens * (2 if previous else 1)
                label = f"{refs} references ({'current + previous' if previous else 'current'})"
                plain = timed([*cli, "validate", "-f", str(f)], env, args.runs)
                full = timed([*cli, "validate", "--resolve-secrets", "-f", str(f)], env, args.runs)
                phase, requests, n = store_phase(f, bao.env(), args.runs)
                assert n == refs
                print(f"  {label}:")
                print(f"    validate (form only, no reads)   {plain:6.2f} s")
                print(f"    validate --resolve-secrets       {full:6.2f} s  (+{full - plain:.2f} s for the store)")
                print(f"    store phase in process           {phase:6.2f} s  {requests} requests ({requests / args.paths:.0f} per path)")
        finally:
            bao.stop()

        # exec: 20 distinct commands, each a tiny script.
        script = folder / "get-token"
        script.write_text('#!/bin/sh\nprintf "bench-exec-token-%s-abcdefgh\\n" "$1"\n')
        script.chmod(0o755)
        from reconciler import secrets

        refs = [{"exec": [str(script), str(i)]} for i in range(20)]
        t = time.perf_counter()
        session = secrets.Session(str(folder), allow_exec=True)
        session.prefetch(refs)
        for ref in refs:
            session.resolve(ref)
        print(f"  exec: 20 commands (4 at a time)   {time.perf_counter() - t:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
