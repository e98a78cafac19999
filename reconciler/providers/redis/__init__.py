"""`provider: redis` (the default): ACL commands on every node of standalone servers,
replicas, clusters and Sentinel-managed deployments.

    topology.py   which nodes make up an instance (seeds, replicas, cluster members)
    sentinel.py   the same for `topology: sentinel`, from what the sentinels report
    read.py       connecting to a node and reading its ACL state into state.NodeState
    execute.py    pipelined, verified ACL writes and their persistence
"""

from __future__ import annotations

from datetime import date
from typing import Mapping

from ... import planner
from ...audit import AuditLog
from ...lock import InstanceLock, Locks
from ...model import Instance
from ...plan import InstancePlan, Plan
from ...report import ApplyReport
from ...state import InstanceState, LiveState
from ..base import Capabilities, Provider
from . import execute, read


class RedisProvider(Provider):
    name = "redis"
    capabilities = Capabilities()

    def lock(self, plan: Plan) -> Locks:
        """Every node of each instance the plan writes; the lock lives on the servers (lock.py)."""
        locks = Locks()
        try:
            for inst in plan.instances:
                spec = self.desired.instances.get(inst.name)
                if spec is None or not any(n.has_changes for n in inst.nodes):
                    continue
                data = [n.address for n in inst.nodes if n.role != "sentinel"]
                sentinels = [n.address for n in inst.nodes if n.role == "sentinel"]
                if data:
                    locks.add(InstanceLock(spec, data, read.connect))
                if sentinels:  # sentinels are reached as the sentinel admin
                    locks.add(InstanceLock(spec.for_role("sentinel"), sentinels, read.connect))
        except BaseException:
            locks.release()
            raise
        return locks

    def read(self, instance: Instance) -> InstanceState:
        return read.read_instance(instance)

    def plan(
        self,
        live_state: LiveState,
        *,
        today: date,
        inventory: Mapping[str, Mapping[str, list[dict]]] | None = None,
    ) -> tuple[InstancePlan, ...]:
        return planner.plan(self.desired, live_state, today=today, inventory=inventory).instances

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        return execute.execute(plan, self.desired, audit=audit)

    def verify(self, plan: Plan, *, today: date) -> None:
        execute.verify(plan, self.desired, today=today)
