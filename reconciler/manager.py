"""Manager: loads the desired state, drives the live reader and the planner (octoDNS style)."""

from __future__ import annotations

import fnmatch
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

from . import config, inventory, pending, providers
from .errors import ReconcilerError
from .model import DesiredState
from .plan import InstancePlan, Plan
from .state import LiveState

MAX_PARALLEL_INSTANCES = 8


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


def today() -> date:
    """The date expiry is judged against; RECONCILER_TODAY=YYYY-MM-DD pins it (tests, what-if runs)."""
    pinned = os.environ.get("RECONCILER_TODAY")
    if pinned:
        try:
            return date.fromisoformat(pinned)
        except ValueError:
            raise ReconcilerError(f"RECONCILER_TODAY={pinned!r} is not a YYYY-MM-DD date") from None
    return date.today()


class Manager:
    def __init__(self, desired: DesiredState):
        self.desired = desired

    @classmethod
    def from_file(cls, path: str) -> "Manager":
        # Expired tokens are not a load error here: the plan removes them and says why.
        return cls(config.load(path, allow_expired=True, today=today()))

    def instance_names(self, only: list[str] | None = None, shard: Shard | None = None) -> list[str]:
        """The file's instances (file order), narrowed to `only` (names or shell-style globs such
        as `cache-eu-*`; each must match) and then to one shard of what is left."""
        names = select(list(self.desired.instances), only)
        return shard.pick(names) if shard is not None else names

    def read(self, only: list[str] | None = None, shard: Shard | None = None) -> LiveState:
        names = self.instance_names(only, shard)
        # Each instance is read by its provider (`instances.<name>.provider`, redis by default).
        # Instances are read in parallel, at most MAX_PARALLEL_INSTANCES at a time (each reads
        # its own nodes with a bounded pool too): a fleet of 50 small instances costs about
        # what one large instance does, without opening hundreds of connections at once.
        def read_one(n: str):
            return providers.for_instance(self.desired, n).read(self.desired.instances[n])

        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL_INSTANCES, len(names)))) as pool:
            states = list(pool.map(read_one, names))
        return LiveState(instances={s.name: s for s in states})

    def plan(self, state: LiveState) -> Plan:
        # The certificate inventory the last apply recorded (inventory.record_inventory), read here at the edge.
        recorded = inventory.load_inventory(self.desired.source)
        day = today()
        by_name: dict[str, InstancePlan] = {}
        for provider_name, names in providers.group(self.desired, list(state.instances)).items():
            provider = providers.get(provider_name, self.desired)
            scoped = LiveState(instances={n: state.instances[n] for n in names})
            for inst in provider.plan(scoped, today=day, inventory=recorded):
                by_name[inst.name] = inst
        plan = Plan(source=self.desired.source, instances=tuple(by_name[n] for n in state.instances), today=day.isoformat())
        # Work an earlier apply left unfinished (a failed persist, a kill that never ran).
        return pending.attach(plan, self.desired.source, lambda name, address: self._persist_mode(state, name, address))

    def _persist_mode(self, state: LiveState, name: str, address: str) -> str:
        from .planner import persist_mode

        node = next(n for n in state.instances[name].nodes if n.address == address)
        return persist_mode(self.desired.instances[name], node)


def warn_unpersisted(plan: Plan) -> None:
    """One stderr line per instance whose changed nodes have neither an aclfile nor a config file."""
    for inst in plan.instances:
        nodes = [n.address for n in inst.nodes if n.has_changes and n.persist == "warn"]
        if nodes:
            where = nodes[0] if len(nodes) == 1 else f"{len(nodes)} nodes ({', '.join(nodes)})"
            print(
                f"reconciler: warning: {inst.name} {where}: no aclfile and no config file; "
                "changes live in memory only and are lost on restart",
                file=sys.stderr,
            )
