"""The provider interface (octoDNS style): one object per way of managing users.

A provider reads an instance into the live-state dataclasses the pure planner understands,
plans (usually: the planner plus a pure, provider-specific refinement), applies the plan's
changes and verifies them. The core -- config, planner, render, safety -- stays
provider-agnostic: everything a managed service does differently lives behind this class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Mapping

from ..audit import AuditLog
from ..denials.model import InstanceLog
from ..model import DesiredState, Instance
from ..plan import InstancePlan, Plan
from ..report import ApplyReport
from ..state import InstanceState, LiveState, NodeState


@dataclass(frozen=True)
class Capabilities:
    """What a provider can express. config.load checks the file against the capabilities of each
    instance's provider (providers.capabilities), so a new provider declares what it supports
    here and validation follows; `reasons` words the validation error for a missing one."""

    rules: bool = True  # per-user permission rules (ACL SETUSER, or a Redis Software redis_acl)
    token_hashes: bool = True  # accepts `sha256:`-only tokens (the server stores hashes)
    token_secrets: bool = True  # accepts `secret:` tokens (plaintext known to the reconciler)
    server_generated_tokens: bool = False  # tokens are made by the service; declared by id with a sink
    multiple_tokens: bool = True  # zero-downtime rotation (two tokens at once)
    certificate_users: bool = True
    disable_users: bool = True  # enabled: false
    saved_plans: bool = True  # `apply PLAN.json` re-reads and compares fingerprints
    topology: bool = True  # nodes, replicas and cluster members are the reconciler's business
    password_complexity: bool = False  # the service refuses passwords without 8+ characters of four kinds
    one_default_password: bool = False  # the `default` user holds one password: rotating it cuts old connections
    password_pair: bool = False  # a login holds one password: zero-downtime rotation goes through a pair of logins
    # capability name -> why it is missing, completing "instance X uses provider P, <reason>"
    reasons: Mapping[str, str] = field(default_factory=dict)


class Provider(ABC):
    """One provider, bound to a desired state (it needs the file's folder for its records)."""

    name: str = ""
    capabilities: Capabilities = Capabilities()
    # Why this provider can't read what the servers refused (ACL LOG), completing
    # "<instance>: ACL LOG is not available: <reason>"; providers that can override read_denials.
    denials_unavailable: str = "the provider has no way to read it"

    def __init__(self, desired: DesiredState):
        self.desired = desired

    def lock(self, plan: Plan) -> AbstractContextManager[Any]:
        """Held around an apply of `plan` (only this provider's instances): no second apply writes
        the same instances meanwhile. The default holds nothing (the service serializes)."""
        return nullcontext()

    @abstractmethod
    def read(self, instance: Instance) -> InstanceState:
        """Live state of one instance. Raises LiveError with one clear line on failure."""

    def read_denials(self, instance: Instance) -> InstanceLog:
        """What the servers of one instance refused (ACL LOG of every node). The default says, in
        one line, that this provider can't tell: a report, not a failure."""
        return InstanceLog(instance.name, self.name, unavailable=self.denials_unavailable)

    def dryrun(self, node: NodeState, instance: Instance, user: str, argv: list[str]) -> str | None:
        """The server's own verdict on `argv` for `user` on `node` (ACL DRYRUN): "allowed",
        "denied: ..." or "not judged: ...". None where the provider can't ask the servers (the
        default: managed services refuse ACL commands), and `explain` gives the engine's alone."""
        return None

    @abstractmethod
    def plan(
        self,
        live: LiveState,
        *,
        today: date,
        inventory: Mapping[str, Mapping[str, list[dict]]] | None = None,
    ) -> tuple[InstancePlan, ...]:
        """Pure: the instance plans for `live` (which holds only this provider's instances)."""

    @abstractmethod
    def apply(self, plan: Plan, *, audit: AuditLog | None = None) -> ApplyReport:
        """Carry out `plan` (only this provider's instances). Raises ApplyError (with .report:
        what was done before the stop) on failure."""

    def promote(self, instance: str, user: str, token_id: str) -> None:
        """After a rotation's new token (`<id>:next`) reached its sink: it becomes `token_id`, and
        the one it replaces `<id>.previous`. Only providers whose service makes the tokens
        (server_generated_tokens) name them; elsewhere a token is its hash and nothing is renamed."""
        return None

    def settle(self, instance: Instance, user: str, token_id: str, stored_sha256: str | None) -> str | None:
        """A rotation's new token left unpromoted by a run that stopped: promote it when its value is
        what the store holds now ("promoted"), else drop its name so the next plan removes it
        ("dropped"); None when there is none."""
        return None

    @abstractmethod
    def verify(self, plan: Plan, *, today: date) -> None:
        """Re-read what `plan` touched and check it now holds (by re-planning, or by comparing the
        touched users with their changes); raise ApplyError naming what did not converge."""
