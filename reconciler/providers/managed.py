"""Pieces the managed-service providers share: outcomes, per-file records, planning helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from .. import interrupt, records
from ..audit import AuditLog, redact
from ..errors import ApplyError, PlanError
from ..model import DesiredState, Instance, User
from ..plan import InstancePlan, Plan, UserChange
from ..report import ApplyReport
from ..state import InstanceState, LiveState


def api_host(url: str) -> str:
    """`https://host:9443/v1` -> `host:9443`: how an instance's API is named in plans and errors."""
    return urlparse(url).netloc or url


@dataclass
class ProviderResult:
    """What one managed instance's apply did; the same summary/failure shape as the executor's."""

    instance: str
    address: str
    label: str
    done: list[str] = field(default_factory=list)  # "create app", "update app (token + 2026-11)"
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    left: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        words = {"create": "created", "update": "updated", "delete": "deleted"}
        parts = [f"{self.counts[a]} {words[a]}" for a in ("create", "update", "delete") if self.counts.get(a)]
        if self.counts.get("config"):
            parts.append(f"{self.counts['config']} setting{'s' if self.counts['config'] != 1 else ''} changed")
        return [f"{self.instance} {self.address} ({self.label}): " + (", ".join(parts) or "nothing to do")]


def fail(report: ApplyReport, part: ProviderResult, what: str, exc: BaseException) -> ApplyError:
    """One line: what failed, why, how much was done, and that a re-run converges."""
    part.error = str(exc)
    reason = str(exc)
    prefix = f"{part.instance} {part.address}: "
    if reason.startswith(prefix):
        reason = reason[len(prefix):]
    done = len(part.done)
    total = done + 1 + len(part.left)
    msg = (
        f"{part.instance} {part.address}: {what} failed: {reason} "
        f"({done} of {total} changes applied; {'' if interrupt.REQUESTED.is_set() else 'fix the cause and '}run apply again to converge)"
    )
    return ApplyError(redact(" ".join(msg.split())), report)


def audit(log: AuditLog | None, part: ProviderResult, change: UserChange | None, action: str, user: str, result: str, detail: str = "") -> None:
    if log is not None:
        log.record(instance=part.instance, node=part.address, action=action, user=user, result=result, change=change, detail=detail)


# -- per-file records of what a provider cannot read back ---------------------------------


def record_path(source: str, provider: str) -> str:
    """`access.yaml` -> `access.redis-software.json`, next to the file."""
    stem, _ = os.path.splitext(source)
    return f"{stem}.{provider}.json"


def load_record(source: str, provider: str) -> dict[str, Any]:
    path = record_path(source, provider)
    try:
        data = records.read_json(path)
    except (OSError, ValueError) as exc:
        raise PlanError(f"{path}: unreadable record ({exc}); delete it and run plan again (passwords are then replaced)") from None
    return data if isinstance(data, dict) else {}


def save_record(source: str, provider: str, data: dict[str, Any]) -> None:
    records.write_json(record_path(source, provider), data)


# -- planning --------------------------------------------------------------------------------


def plan_with(
    desired: DesiredState,
    live: LiveState,
    today: date,
    view: Callable[[User], User],
    refine: Callable[[InstancePlan, InstanceState, DesiredState], InstancePlan],
) -> tuple[InstancePlan, ...]:
    """The pure planner on a provider's view of the users, then the provider's pure refinement."""
    from .. import planner

    viewed = replace(desired, users={n: view(u) for n, u in desired.users.items()})
    plan = planner.plan(viewed, live, today=today)
    return tuple(refine(inst, live.instances[inst.name], desired) for inst in plan.instances)


class ApiRun:
    """What one apply of one API-managed instance needs: its result part, the file's users there,
    the audit log. Providers subclass it with their own `run()`."""

    def __init__(self, provider: Any, instance: Instance, plan: InstancePlan, results: ApplyReport, audit: AuditLog | None):
        self.p = provider
        self.instance = instance
        self.plan = plan
        self.audit = audit
        node = plan.nodes[0]
        self.part = ProviderResult(instance.name, node.address, node.label)
        results.outcomes.append(self.part)
        self.results = results
        self.users = users_here(provider.desired, instance.name)

    def run(self) -> None:
        raise NotImplementedError


def apply_each(provider: Any, plan: Plan, audit: AuditLog | None, run: type[ApiRun]) -> ApplyReport:
    """Run `run` for every instance of the plan that has changes."""
    results = ApplyReport()
    for inst_plan in plan.instances:
        if any(n.has_changes for n in inst_plan.nodes):
            run(provider, provider.desired.instances[inst_plan.name], inst_plan, results, audit).run()
    return results


def users_here(desired: DesiredState, instance: str) -> Mapping[str, User]:
    return {u.name: u for u in desired.users_for(instance)}


def verify_by_replan(provider: Any, plan: Plan, today: date) -> None:
    """Re-read every instance the plan changed through its provider and re-plan: nothing may be left."""
    names = [i.name for i in plan.instances if any(n.has_changes for n in i.nodes)]
    if not names:
        return
    live = LiveState(instances={n: provider.read(provider.desired.instances[n]) for n in names})
    problems = []
    for inst in provider.plan(live, today=today):
        for node in inst.nodes:
            left = [f"{c.action} {c.user}" for c in node.changes] + [f"{c.parameter} {c.after}" for c in node.config]
            if left:
                problems.append(f"did not converge on {inst.name} {node.address}: {', '.join(left[:10])}")
    if problems:
        raise ApplyError("\n".join(problems))
