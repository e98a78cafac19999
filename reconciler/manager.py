"""Manager: owns a run (octoDNS style). It loads the desired state, reads each instance through
its provider, plans, applies a plan provider by provider, verifies it and checks a saved plan
against the servers. Commands parse arguments, prompt and render; every provider, redis
included, is reached only through the Provider interface from here."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from . import config, inventory, providers
from .audit import AuditLog
from .errors import ApplyError, ReconcilerError
from .model import DesiredState
from .plan import Finding, FindingKind, InstancePlan, Plan, TokenAction, only_instances
from .planner import dedupe_findings, node_fingerprint
from .providers.base import Provider
from .report import ApplyReport
from .state import InstanceState, LiveState, NodeState


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
        return Plan(source=self.desired.source, instances=tuple(by_name[n] for n in state.instances), today=day.isoformat())

    def drift(self, only: list[str] | None = None) -> Plan:
        """The plan plus the findings only drift reports (tokens no file declares)."""
        return with_unmanaged_tokens(self.plan(self.read(only)))

    def groups(self, plan: Plan) -> list[tuple[Provider, Plan]]:
        """The plan split by each instance's provider (file order); an instance the file does
        not declare goes to redis, whose executor names it."""
        names: dict[str, set[str]] = {}
        for inst in plan.instances:
            spec = self.desired.instances.get(inst.name)
            names.setdefault(spec.provider if spec is not None else providers.DEFAULT, set()).add(inst.name)
        return [(providers.get(name, self.desired), only_instances(plan, group)) for name, group in names.items()]

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        """Each provider applies its instances. On a stop, ApplyError.report also holds what the
        providers before it did."""
        report = ApplyReport()
        for provider, sub in self.groups(plan):
            try:
                report.extend(provider.apply(sub, audit=audit))
            except ApplyError as exc:
                if exc.report is not None:
                    report.extend(exc.report)
                exc.report = report
                raise
        return report

    def verify(self, plan: Plan) -> None:
        """After an apply, saved plan or not: each provider re-reads what the plan touched and
        raises ApplyError naming what did not converge. Expiry is judged as the plan judged it."""
        day = date.fromisoformat(plan.today) if plan.today else today()
        for provider, sub in self.groups(plan):
            provider.verify(sub, today=day)

    def stale(self, plan: Plan) -> tuple[list[str], LiveState]:
        """Re-read every node of a saved plan; name each whose ACLs, role or version moved since
        (or that joined or left the instance). Returns (problems, the fresh live state)."""
        problems: list[str] = []
        instances: dict[str, InstanceState] = {}
        for inst in plan.instances:
            instance = self.desired.instances.get(inst.name)
            if instance is None:
                problems.append(f"instance {inst.name} is in the plan but not in {self.desired.source}")
                continue
            # Discovery again: a replica or cluster member that joined since would miss the changes.
            fresh = providers.get(instance.provider, self.desired).read(instance)
            by_address = {n.address: n for n in fresh.nodes}
            planned = {n.address for n in inst.nodes}
            for address in sorted(by_address.keys() - planned):
                problems.append(f"{inst.name} {address}: node joined the instance since the plan was made; make a new plan")
            states: list[NodeState] = []
            for node_plan in inst.nodes:
                state = by_address.get(node_plan.address)
                if state is None:
                    problems.append(f"{inst.name} {node_plan.address}: node is no longer part of the instance; make a new plan")
                    continue
                states.append(state)
                # The planner's own digest of the parsed ACL state: the same function made the plan's.
                if node_fingerprint(state) != node_plan.fingerprint:
                    problems.append(
                        f"{inst.name} {node_plan.address}: live ACLs changed since the plan was made "
                        "(fingerprint differs); make a new plan"
                    )
                elif state.role != node_plan.role:
                    problems.append(
                        f"{inst.name} {node_plan.address}: node is now {state.role}, the plan was made when it was "
                        f"{node_plan.role} (a failover since?); make a new plan"
                    )
                elif state.label != node_plan.label:
                    problems.append(
                        f"{inst.name} {node_plan.address}: server is now {state.label}, the plan was made for "
                        f"{node_plan.label}; make a new plan"
                    )
            instances[inst.name] = InstanceState(name=inst.name, nodes=tuple(states), topology=fresh.topology)
        return problems, LiveState(instances=instances)


def unpersisted(plan: Plan) -> list[str]:
    """A warning per instance whose changed nodes have neither an aclfile nor a config file."""
    out = []
    for inst in plan.instances:
        nodes = [n.address for n in inst.nodes if n.has_changes and n.persist == "warn"]
        if nodes:
            where = nodes[0] if len(nodes) == 1 else f"{len(nodes)} nodes ({', '.join(nodes)})"
            out.append(f"{inst.name} {where}: no aclfile and no config file; changes live in memory only and are lost on restart")
    return out


def with_unmanaged_tokens(plan: Plan) -> Plan:
    """Name each live password the file doesn't declare as an `unmanaged_token` finding.

    The plan already removes them (`token - sha256:… not in file`); drift also reports them as
    findings so schedulers can count them by kind. Kept out of `plan`, where a token just
    deleted from the file during a rotation would otherwise be reported twice.
    """
    instances = []
    for inst in plan.instances:
        extra = [
            Finding(
                FindingKind.UNMANAGED_TOKEN,
                f"user {c.user} has a token that is not in the file (sha256:{t.prefix}…); apply removes it",
                inst.name,
                node.address,
                user=c.user,
            )
            for node in inst.nodes
            for c in node.changes
            for t in c.tokens
            if t.action == TokenAction.REMOVE and t.token_id is None
        ]
        instances.append(dataclasses.replace(inst, findings=inst.findings + tuple(dedupe_findings(extra, len(inst.nodes)))))
    return dataclasses.replace(plan, instances=tuple(instances))
