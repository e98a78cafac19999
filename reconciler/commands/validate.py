"""`reconciler validate -f FILE... [--resolve-secrets]`: schema and semantic checks, no network.

Secret references are checked for their form only (an environment variable name, a file path,
a vault path, a command line), so a pull request can be linted where the secrets are not set:
no store is read and no command runs. `--resolve-secrets` also reads them (exec: only with
--allow-exec), for the checks that need the plaintext (min_token_length, password_complexity).
"""

from __future__ import annotations

import argparse

from ..config import load
from ..errors import ConfigError


def run(args: argparse.Namespace) -> int:
    files = args.file if isinstance(args.file, list) else [args.file]
    problems = []
    for path in files:
        try:
            state = load(
                path,
                allow_expired=args.allow_expired,
                resolve_secrets=getattr(args, "resolve_secrets", False),
                allow_exec=getattr(args, "allow_exec", False),
            )
        except ConfigError as exc:
            problems += exc.problems
            continue
        tokens = sum(len(u.tokens) for u in state.users.values())
        print(f"{path}: ok ({len(state.instances)} instances, {len(state.users)} users, {tokens} tokens)")
    if problems:
        # cli.py prints each problem on its own line and exits 1.
        raise ConfigError(problems)
    return 0
