"""`reconciler validate -f FILE`: schema and semantic checks, no network."""

from __future__ import annotations

import argparse

from ..config import load


def run(args: argparse.Namespace) -> int:
    # A ConfigError propagates: cli.py prints each problem on its own line and exits 1.
    state = load(args.file, allow_expired=args.allow_expired)
    tokens = sum(len(u.tokens) for u in state.users.values())
    print(f"{args.file}: ok ({len(state.instances)} instances, {len(state.users)} users, {tokens} tokens)")
    return 0
