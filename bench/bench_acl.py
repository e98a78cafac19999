#!/usr/bin/env python3
"""Micro-benchmark: effective() and rules_for() for 10,000 users against one command table.

    .venv/bin/python bench/bench_acl.py [TABLE]     (default valkey-9.1.2)

Users get typical rule strings (role + app-specific key patterns), a few hundred distinct,
as a planner sees them: desired and live strings for every user of a node. Then the shape real
files have: every user its own key pattern around one command part (`~app{i}:* +@read`), so no
two rule strings are equal and only the memo of the command part can help.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.acl import CommandTable, effective, rules_for  # noqa: E402 - after the sys.path line above
from reconciler.acl.syntax import _LENIENT  # noqa: E402 - after the sys.path line above

ROLES = [
    "+@read -@dangerous",
    "+@all -@dangerous",
    "+@all -@dangerous +flushdb",
    "-@all +@read -keys +set",
    "+@read +@write -flushall -flushdb",
    "+@read -@dangerous +set -get",
    "+get +set +del +expire +ttl",
    "+@hash +@string -@admin",
    "+@pubsub",
    "+@read +config|get +info",
]


def rule_strings(n_apps: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(n_apps):
        role = rng.choice(ROLES)
        keys = " ".join(f"~app{i}:{k}:*" for k in range(rng.randint(1, 3)))
        chans = f"&app{i}:*" if rng.random() < 0.3 else ""
        out.append(f"{keys} {chans} {role}".strip())
    return out


def main() -> int:
    table = CommandTable.bundled(sys.argv[1] if len(sys.argv) > 1 else "valkey-9.1.2")
    rng = random.Random(5)
    distinct = rule_strings(300, rng)
    users = [rng.choice(distinct) for _ in range(10_000)]

    table.cache.clear()
    _LENIENT.clear()
    t0 = time.perf_counter()
    perms = [effective(r, table) for r in users]
    cold = time.perf_counter() - t0

    t0 = time.perf_counter()
    same = sum(1 for a, b in zip(perms, (effective(r, table) for r in users), strict=True) if a == b)
    warm = time.perf_counter() - t0
    assert same == len(users)

    all_distinct = rule_strings(10_000, random.Random(6))
    table.cache.clear()
    _LENIENT.clear()
    t0 = time.perf_counter()
    for r in all_distinct:
        effective(r, table)
    worst = time.perf_counter() - t0

    own = [f"~app{i}:* +@read" for i in range(10_000)]
    table.cache.clear()
    _LENIENT.clear()
    t0 = time.perf_counter()
    for r in own:
        rules_for(r, table)
    planning = time.perf_counter() - t0

    print(f"table {table.name}: {len(table.commands)} commands")
    print(f"effective() for {len(users)} users ({len(distinct)} distinct rule strings): {cold * 1000:.1f} ms")
    print(f"again, with the comparisons the planner makes: {warm * 1000:.1f} ms")
    print(f"worst case, 10000 users with 10000 distinct rule strings, cold caches: {worst * 1000:.1f} ms")
    print(f"rules_for() for 10000 users '~app{{i}}:* +@read' (distinct patterns), cold caches: {planning * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
