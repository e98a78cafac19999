"""Manager: owns a run (octoDNS style). It loads the desired state, reads each instance through
its provider, plans, applies a plan provider by provider, verifies it and checks a saved plan
against the servers. Commands parse arguments, prompt and render; every provider, redis
included, is reached only through the Provider interface from here."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from datetime import date
from typing import Any, Callable

from . import addresses, bootstrap, config, interrupt, inventory, pending, providers, rotation, safety, saved
from .audit import AuditLog
from .clock import today
from .denials import changes as audit_changes
from .denials import merge as denials_merge
from .denials.model import DenialReport, InstanceLog
from .errors import ApplyError, ReconcilerError
from .model import DesiredState
from .names import shown
from .pipeline import Console, Options, Pipeline
from .plan import Finding, FindingKind, InstancePlan, Plan, TokenAction, only_changes, only_instances
from .planner import dedupe_findings, node_fingerprint
from .providers.base import Provider
from .report import ApplyReport
from .rotator import Request, Rotator
from .selection import Shard, select
from .state import InstanceState, LiveState, NodeState

MAX_PARALLEL_INSTANCES = 8


class Manager:
    def __init__(self, desired: DesiredState, *, allow_exec: bool = False):
        self.desired = desired
        self.allow_exec = allow_exec
        # (instance, node address) -> the address its connection reached, from the latest read:
        # the record of unfinished work is keyed by it (pending.py).
        self.where: dict[tuple[str, str], str] = {}

    def _read_done(self, state: LiveState) -> LiveState:
        """Every read ends here: no server may be in two instances, and each node's resolved
        address is remembered for the record of unfinished work."""
        problems = addresses.shared_servers(
            (inst.name, n.address, n.resolved, n.run_id) for inst in state.instances.values() for n in inst.nodes
        )
        if problems:
            raise ReconcilerError("; ".join(problems))
        self.where.update(_resolved(state))
        return state

    @classmethod
    def from_file(cls, path: str, *, allow_exec: bool = False, base_dir: str | None = None) -> "Manager":
        # Expired tokens are not a load error here: the plan removes them and says why.
        desired = config.load(path, allow_expired=True, today=today(), allow_exec=allow_exec, base_dir=base_dir)
        return cls(desired, allow_exec=allow_exec)

    def reload(self) -> "Manager":
        """The same file read again (its secrets too: a store may hold a new version by now)."""
        return Manager.from_file(self.desired.source, allow_exec=self.allow_exec)

    def derived(self, desired: DesiredState) -> "Manager":
        """A Manager for a desired state made from this one in memory (a rotation's steps)."""
        return Manager(desired, allow_exec=self.allow_exec)

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
        return self._read_done(LiveState(instances={s.name: s for s in states}))

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
        read = {name: name in state.instances for name in self.desired.instances}
        return pending.attach(
            plan, self.desired.source, lambda name, address: self._persist_mode(state, name, address), _resolved(state), instances=read
        )

    def check(self, plan: Plan, state: LiveState, *, force: bool = False) -> Plan:
        """The plan with the safety rails' verdict attached (`refusals`): the one check plan,
        drift and apply share. With `force`, what --force lifts is kept, marked waived, so
        `plan --force` shows what `apply --force` would allow."""
        refusals = safety.check(plan, state, self.desired)
        return dataclasses.replace(
            plan, refusals=tuple(dataclasses.replace(r, waived=True) if force and r.forcible else r for r in refusals)
        )

    def target(self, plan: Plan, users: list[str] | tuple[str, ...] | None) -> Plan:
        """`--target USER`: only these users' changes, findings and certificate inventory (server
        settings wait for a whole apply). A name neither declared nor in the plan is an error."""
        if not users:
            return plan
        declared = set(self.desired.users)
        present = {c.user for i in plan.instances for n in i.nodes for c in n.changes} | {
            f.user for f in plan.findings if f.user
        }
        unknown = [u for u in users if u not in declared and u not in present]
        if unknown:
            raise ReconcilerError(
                f"--target: {', '.join(map(shown, unknown))} is neither declared in {self.desired.source} nor in the plan"
            )
        wanted = set(users)
        subset = only_changes(plan, lambda _inst, user: user in wanted, config=False)
        return dataclasses.replace(subset, targets=tuple(dict.fromkeys(users)))

    def _persist_mode(self, state: LiveState, name: str, address: str) -> str:
        from .planner import persist_mode

        node = next(n for n in state.instances[name].nodes if n.address == address)
        return persist_mode(self.desired.instances[name], node)

    def drift(self, only: list[str] | None = None, shard: Shard | None = None) -> Plan:
        """The plan plus the findings only drift reports (tokens no file declares, rotations due),
        judged by the safety rails like any plan."""
        state = self.read(only, shard)
        plan = with_unmanaged_tokens(self.plan(state))
        day = today()
        plan = dataclasses.replace(plan, instances=tuple(
            dataclasses.replace(i, findings=i.findings + tuple(rotation.due_findings(self.desired, i.name, day)))
            for i in plan.instances
        ))
        return self.check(plan, state)

    def denials(
        self,
        only: list[str] | None = None,
        shard: Shard | None = None,
        *,
        since: float | None = None,
        audit_log: str | None = None,
    ) -> DenialReport:
        """What the servers refused: every node's ACL LOG (through each instance's provider, in
        parallel like read), merged per user, reason and object, and tied to the changes the
        audit log (`--audit-log`, else the file's `audit_log:`) recorded."""
        names = self.instance_names(only, shard)
        path = audit_log or self.desired.audit_log
        history = audit_changes.load(path) if path else None
        if audit_log and history is None:
            # Named on the command line, so a typo, not a log no apply wrote yet: without it no
            # denial is tied to a change and drift --denials would call caused denials intended.
            raise ReconcilerError(f"--audit-log {audit_log}: no such file")

        def read_one(n: str) -> InstanceLog:
            return providers.for_instance(self.desired, n).read_denials(self.desired.instances[n])

        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL_INSTANCES, len(names)))) as pool:
            logs = list(pool.map(read_one, names))
        if not path:
            note = "no audit log (audit_log: in the file, or --audit-log PATH), so denials are not tied to changes"
        elif history is None:
            note = f"the audit log {path} does not exist yet, so no change is recorded to tie denials to"
        else:
            note = f"read from the audit log {path} ({len(history.changes):,} recorded changes)"
        return denials_merge.build(self.desired, logs, history, now=time.time(), since=since, audit=note)

    def dryrun(self, instance: str, node: NodeState, user: str, argv: list[str]) -> str | None:
        """The server's own verdict on `argv` for `user` on one node of `instance` (`explain`), from
        the instance's provider; None where the provider can't ask the server."""
        return providers.for_instance(self.desired, instance).dryrun(node, self.desired.instances[instance], user, argv)

    def groups(self, plan: Plan) -> list[tuple[Provider, Plan]]:
        """The plan split by each instance's provider (file order); an instance the file does
        not declare goes to redis, whose executor names it."""
        names: dict[str, set[str]] = {}
        for inst in plan.instances:
            spec = self.desired.instances.get(inst.name)
            names.setdefault(spec.provider if spec is not None else providers.DEFAULT, set()).add(inst.name)
        return [(providers.get(name, self.desired), only_instances(plan, group)) for name, group in names.items()]

    def lock(self, plan: Plan) -> ExitStack:
        """Every provider's lock on the instances the plan writes, taken in file order."""
        stack = ExitStack()
        try:
            for provider, sub in self.groups(plan):
                stack.enter_context(provider.lock(sub))
        except BaseException:
            stack.close()
            raise
        return stack

    def recheck(self, plan: Plan, narrow: Callable[[Plan], Plan] | None = None) -> list[str]:
        """Under the lock, before the first write: the file and live state must still produce exactly
        this plan (nothing moved while it was reviewed, confirmed or saved). `narrow`: the part of
        a fresh plan that `plan` stands for (one user's changes in a rotation), when not the whole."""
        fresh = self.target(self.plan(self.read([i.name for i in plan.instances])), plan.targets)
        return saved.differences(plan, narrow(fresh) if narrow is not None else fresh)

    # -- the apply pipeline (pipeline.py): `apply -f`, `apply PLAN.json`, `apply --bootstrap`, `rotate` --

    def pipeline(self, console: Console, options: Options | None = None, **kw: Any) -> Pipeline:
        return Pipeline(self, console, options, **kw)

    def apply_file(self, only: list[str] | None, console: Console, options: Options,
                   targets: list[str] | None = None) -> int:
        """`apply -f`: read, plan (`--target`: those users only), judge by the rails, show, then the
        pipeline (refusals, confirm, execute)."""
        state = self.read(only)
        plan = self.check(self.target(self.plan(state), targets), state, force=options.force)
        console.present(plan)  # with no changes it says "No changes." and lists any findings
        if not plan.has_changes:
            return 0
        return self.pipeline(console, options).run(plan, state, what="the plan shown", checked=True)

    def apply_saved(self, plan: Plan, name: str, only: list[str] | None, console: Console, options: Options) -> int:
        """`apply PLAN.json` (its file's digest already checked): narrowed to `only`, refused when it
        differs from a fresh plan in anything but display fields, then the pipeline on the fresh
        plan (what runs and what is shown), judged by the rails as the live state is now."""
        if only:
            # Names or globs; one that matches nothing is an error.
            plan = only_instances(plan, set(self.instance_names(only)))
        # Checked even when the plan is empty: a plan edited down to nothing is as stale as any.
        stale, state, fresh = self.stale(plan)
        if stale:
            for p in stale:
                console.err(f"{name} is stale: {p}")
            console.err("nothing was changed")
            return 1
        if not fresh.has_changes:
            console.out(f"No changes. {name} has nothing to apply.")
            return 0
        plan = self.check(fresh, state, force=options.force)
        console.present(plan)
        return self.pipeline(console, options).run(plan, state, what=name, checked=True)

    def bootstrap(self, only: list[str] | None, console: Console, options: Options, *,
                  default_secret_env: str | None = None) -> int:
        """`apply --bootstrap` (bootstrap.py): the admin created as `default`, then the rest as the
        admin, `default` last: two pipeline steps with their own logins after one confirmation;
        an ordinary apply_file where the admin logs in everywhere already."""
        return bootstrap.run(self, only, console, options, secret_env=default_secret_env)

    def rotate(self, request: Request, console: Console, options: Options) -> int:
        """`reconciler rotate`: each due token through the four steps (rotator.py)."""
        return Rotator(self, request, console, options).run()

    @staticmethod
    def interruptible() -> AbstractContextManager[threading.Event]:
        """SIGINT/SIGTERM while applying stop the providers after the batch in flight."""
        return interrupt.handled()

    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        """Each provider applies its instances. On a stop, ApplyError.report also holds what the
        providers before it did. Persistence and kills left unfinished on redis nodes are
        recorded (pending.py) for the next apply to retry."""
        report = ApplyReport()
        own = only_instances(plan, {n for n, s in self.desired.instances.items() if s.provider == providers.DEFAULT})
        before = pending.begin(self.desired.source, own, self.where)
        try:
            for provider, sub in self.groups(plan):
                try:
                    report.extend(provider.apply(sub, audit=audit))
                except ApplyError as exc:
                    if exc.report is not None:
                        report.extend(exc.report)
                    exc.report = report
                    raise
        finally:
            # redis nodes' outcomes say what persistence did; managed instances' have nothing to persist
            nodes = [o for o in report.outcomes if hasattr(o, "persisted")]
            try:
                pending.finish(self.desired.source, own, before, nodes, self.where)
            except ReconcilerError as exc:
                # The servers are written; the record (unreadable or unwritable now) may still list
                # this run's persist and kills, which the next apply repeats. Said, without hiding
                # what the run did.
                report.warnings.append(f"{exc}; this run's persist and session kills may be repeated by the next apply")
        return report

    def verify(self, plan: Plan) -> None:
        """After an apply, saved plan or not: each provider re-reads what the plan touched and
        raises ApplyError naming what did not converge. Expiry is judged as the plan judged it."""
        day = date.fromisoformat(plan.today) if plan.today else today()
        for provider, sub in self.groups(plan):
            provider.verify(sub, today=day)

    def stale(self, plan: Plan) -> tuple[list[str], LiveState, Plan]:
        """Re-read every node of a saved plan; name each whose ACLs, role or version moved since
        (or that joined or left the instance), and every difference between the saved plan and
        a fresh one (saved.differences: the whole typed plan, every provider). Returns (problems,
        the fresh live state, the fresh plan: what apply executes and shows when there are none)."""
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
                node = by_address.get(node_plan.address)
                if node is None:
                    problems.append(f"{inst.name} {node_plan.address}: node is no longer part of the instance; make a new plan")
                    continue
                states.append(node)
                # The planner's own digest of the parsed ACL state: the same function made the plan's.
                if node_fingerprint(node) != node_plan.fingerprint:
                    problems.append(
                        f"{inst.name} {node_plan.address}: live ACLs changed since the plan was made "
                        "(fingerprint differs); make a new plan"
                    )
                elif node.role != node_plan.role:
                    problems.append(
                        f"{inst.name} {node_plan.address}: node is now {node.role}, the plan was made when it was "
                        f"{node_plan.role} (a failover since?); make a new plan"
                    )
                elif node.label != node_plan.label:
                    problems.append(
                        f"{inst.name} {node_plan.address}: server is now {node.label}, the plan was made for "
                        f"{node_plan.label}; make a new plan"
                    )
            instances[inst.name] = InstanceState(name=inst.name, nodes=tuple(states), topology=fresh.topology)
        state = self._read_done(LiveState(instances=instances))
        replanned = dataclasses.replace(self.plan(state), source_sha256=plan.source_sha256) if not problems else plan
        if not problems:
            # Executed only if the file and live state still produce exactly this plan: a hand
            # edit (a user added, a hash replaced, a certificate given) is as stale as a change on
            # a server, whichever provider the instance has.
            problems = saved.differences(plan, replanned)
        return problems, state, replanned


def _resolved(state: LiveState) -> dict[tuple[str, str], str]:
    """(instance, node address) -> the address the node's connection reached, where known."""
    return {(i.name, n.address): n.resolved for i in state.instances.values() for n in i.nodes if n.resolved}


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
