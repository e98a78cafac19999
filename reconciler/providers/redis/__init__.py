"""`provider: redis` (the default): ACL commands on every node of standalone servers,
replicas, clusters and Sentinel-managed deployments.

    topology.py   which nodes make up an instance (seeds, replicas, cluster members)
    sentinel.py   the same for `topology: sentinel`, from what the sentinels report
    read.py       connecting to a node and reading its ACL state into state.NodeState
    acllog.py     reading every node's ACL LOG (what the servers refused) for `reconciler denials`
    execute.py    carrying out a plan on every node, in order: batches.py (ACL SETUSER and
                  DELUSER, pipelined, replies checked), kills.py (the sessions of revoked
                  users), persist.py (CONFIG SET, ACL SAVE / CONFIG REWRITE); node_run.py is
                  each node's record of what it did (audit, interrupt ledger, lock checks)
    verify.py     re-reading what an apply touched: every change must hold
"""

from __future__ import annotations

from datetime import date
from typing import Mapping

from ... import planner
from ...audit import AuditLog
from ...denials.model import InstanceLog
from ...errors import LiveError
from ...lock import InstanceLock, Locks
from ...model import Instance
from ...plan import InstancePlan, Plan
from ...report import ApplyReport
from ...state import InstanceState, LiveState, NodeState
from ..base import Capabilities, Provider
from . import acllog, execute, read, verify
from .deadline import deadline, timeout_of


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

    def read_denials(self, instance: Instance) -> InstanceLog:
        """ACL LOG of every node: primaries, replicas, cluster members and sentinels."""
        return acllog.read_instance(instance)

    def dryrun(self, node: NodeState, instance: Instance, user: str, argv: list[str]) -> str | None:
        """The server's ACL DRYRUN (Redis 7.0+, Valkey): "allowed" or its refusal, None if unavailable."""
        if node.server == "redis" and tuple(int(x) for x in node.version.split(".")[:2]) < (7, 0):
            return None
        if user not in node.users:
            return None
        client = read.connect(instance, node.address, timeout=instance.timeout_seconds)
        try:
            with deadline(client, timeout_of(instance), f"{instance.name} {node.address}", "explain: ACL DRYRUN"):
                reply = client.execute_command("ACL", "DRYRUN", user, *argv)
        except LiveError:
            raise  # the deadline: no answer is not an answer
        except Exception as exc:  # noqa: BLE001 - the server's refusal text is the answer
            hint = "; give the whole command (--arg for values)" if "wrong number of arguments" in str(exc) else ""
            return f"not judged: {exc}{hint}"
        finally:
            client.close()
        return "allowed" if str(reply) == "OK" else f"denied: {reply}"

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
        verify.verify(plan, self.desired, today=today)
