"""`provider: redis` (the default): ACL commands on every node, via reconciler.live and
reconciler.executor. This module only wraps them; behaviour is theirs."""

from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from .. import executor, live, planner
from ..audit import AuditLog
from ..model import Instance
from ..plan import InstancePlan, Plan
from ..state import InstanceState, LiveState
from .base import Capabilities, Provider


class RedisProvider(Provider):
    name = "redis"
    capabilities = Capabilities()

    def read(self, instance: Instance) -> InstanceState:
        return live.read_instance(instance)

    def plan(
        self,
        live_state: LiveState,
        *,
        today: date,
        inventory: Mapping[str, Mapping[str, list[dict]]] | None = None,
    ) -> tuple[InstancePlan, ...]:
        # Command tables read off nodes whose version has no bundled table.
        return planner.plan(self.desired, live_state, today=today, tables=live.tables(), inventory=inventory).instances

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> Any:
        return executor.execute(plan, self.desired, audit=audit)

    def verify(self, plan: Plan, *, today: date) -> None:
        executor.verify(plan, self.desired, today=today)
