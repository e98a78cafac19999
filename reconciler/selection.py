"""Which instances a run covers: `--instance` names or shell-style globs, then `--shard K/N`."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .errors import ReconcilerError


def select(names: list[str], only: list[str] | None) -> list[str]:
    """`names` narrowed to those matching any of `only` (exact names or fnmatch globs), in
    their original order; a name or glob that matches nothing is an error."""
    if not only:
        return names
    unknown = [p for p in only if p not in names and not fnmatch.filter(names, p)]
    if unknown:
        raise ReconcilerError(f"unknown instance {', '.join(unknown)} (the file has: {', '.join(names)})")
    return [n for n in names if any(n == p or fnmatch.fnmatchcase(n, p) for p in only)]


@dataclass(frozen=True)
class Shard:
    """`--shard K/N`: the K-th of N slices of the instances, so N CI jobs can split a fleet.

    The instances are sorted by name and dealt round-robin: the one at sorted position i
    (0-based) belongs to shard i mod N + 1. The slices depend only on the set of names (not
    file order, not the machine), differ in size by at most one, and together cover every
    instance exactly once.
    """

    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        k, sep, n = text.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise ReconcilerError(f"--shard {text!r}: expected K/N with 1 <= K <= N (e.g. 2/4)")
        return cls(int(k), int(n))

    def pick(self, names: list[str]) -> list[str]:
        mine = {name for i, name in enumerate(sorted(names)) if i % self.n == self.k - 1}
        return [n for n in names if n in mine]
