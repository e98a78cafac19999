"""Manager: loads the desired state, drives the live reader and the planner (octoDNS style)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from . import config, inventory, pending, providers
from .errors import ReconcilerError
from .model import DesiredState
from .plan import InstancePlan, Plan
from .state import LiveState


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

    def instance_names(self, only: list[str] | None = None) -> list[str]:
        names = list(self.desired.instances)
        if not only:
            return names
        unknown = [n for n in only if n not in self.desired.instances]
        if unknown:
            raise ReconcilerError(f"unknown instance {', '.join(unknown)} (the file has: {', '.join(names)})")
        return [n for n in names if n in only]

    def read(self, only: list[str] | None = None) -> LiveState:
        names = self.instance_names(only)
        # Each instance is read by its provider (`instances.<name>.provider`, redis by default).
        def read_one(n: str):
            return providers.for_instance(self.desired, n).read(self.desired.instances[n])

        with ThreadPoolExecutor(max_workers=max(1, min(4, len(names)))) as pool:
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
