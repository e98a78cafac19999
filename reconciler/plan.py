"""Plan: data first, text second. Produced by planner.plan(), rendered by reconciler.render,
carried out by the providers through the apply pipeline (pipeline.py), saved as JSON by
`plan --out` (no secret ever in here: tokens appear as id + sha256, which is what servers
store and the YAML may already hold).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, Callable

from .names import split_words

# 2: actions, finding kinds and severities are closed vocabularies; a user change says how a
# managed service sets its passwords (`passwords`) instead of implying it in its note.
FORMAT_VERSION = 2


class Action(StrEnum):
    """What happens to a user."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class TokenAction(StrEnum):
    """What happens to one token (password hash) of a user; also used for certificate inventory."""

    ADD = "add"
    REMOVE = "remove"
    KEEP = "keep"


class PasswordStrategy(StrEnum):
    """How apply changes a user's passwords where a service cannot take a hash list in one write.

    EACH: add each new token, then remove each old one (zero downtime). REPLACE_ALL: replace
    every password at once (Redis Software's PUT /v1/users/password) because a removal or an
    addition can't be authorized one by one; connections with a kept token fail for a moment.
    """

    EACH = "each"
    REPLACE_ALL = "replace-all"


class FindingKind(StrEnum):
    UNMANAGED_USER = "unmanaged_user"
    UNMANAGED_TOKEN = "unmanaged_token"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_EXPIRING = "token_expiring"
    TOKEN_AGE = "token_age"
    NOPASS = "nopass"
    PERSIST = "persist"
    CERT_EXPIRED = "cert_expired"
    CERT_EXPIRING = "cert_expiring"
    CERT_UNMAPPED = "cert_unmapped"
    TLS_CLIENT_AUTH = "tls_client_auth"
    PASSWORD_UNKNOWN = "password_unknown"
    RECORD_MISSING = "record_missing"
    PENDING = "pending"
    ROTATION_DUE = "rotation_due"
    LOCK_IMPOSTOR = "lock_impostor"


class Severity(StrEnum):
    """WARNING: the servers do what the file says, but a policy or an expiry date calls for attention.
    ERROR: the servers can't do what the file says even after apply (a restart, a CA, a new
    certificate is needed). Shown as `! finding (error):`, counted as `errors` in the plan's
    summary; like every finding it makes drift exit 2. Apply does not refuse over one: it
    carries out what it can (a restart is the operator's step) and the finding stays."""

    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class TokenChange:
    action: TokenAction
    sha256: str
    token_id: str | None = None  # None: a live hash no token in the file declares
    reason: str = ""  # "expired 2026-10-01", "not in file", "kept: remove after apps moved"
    expires: str | None = None

    @property
    def prefix(self) -> str:
        return self.sha256[:8]


@dataclass(frozen=True)
class DeltaLine:
    sign: str  # "+" | "-" | "!" (a dangerous grant)
    text: str
    # A "revokes" line: every command it takes away ("keys", "client|kill"; a whole family as its
    # container's name), which the text may summarise ("... and 73 more"). The audit log keeps
    # it, so a later refusal can be tied to the change. Left out of the plan's JSON when empty.
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserChange:
    action: Action
    user: str
    # Target state, sent as one `ACL SETUSER user reset resetchannels <on|off> <#hash..|resetpass|nopass> <rules>`:
    enabled: bool = True
    nopass: bool = False
    hashes: tuple[str, ...] = ()
    rules: str = ""  # canonical permission rules for this node's version
    # What differs, for review and audit:
    enabled_before: bool | None = None
    tokens: tuple[TokenChange, ...] = ()
    permissions: tuple[DeltaLine, ...] = ()  # update: effective delta; create: summary
    certificates: tuple[str, ...] = ()
    kill_sessions: bool = False  # CLIENT KILL USER after the write (disable, delete, revoke)
    connections: int = 0  # open connections seen for this user when planned
    note: str = ""  # for review only ("prune: true"); apply never reads it
    passwords: PasswordStrategy = PasswordStrategy.EACH

    def setuser_args(self) -> list[str]:
        """Arguments after `ACL SETUSER <user>`; no plaintext exists at this point."""
        # `reset` alone keeps Redis 6.2's default `allchannels`; rules_for() assumes both.
        args = ["reset", "resetchannels", "on" if self.enabled else "off"]
        if self.nopass:
            args.append("nopass")
        elif self.hashes:
            args.extend(f"#{h}" for h in self.hashes)
        else:
            args.append("resetpass")
        args.extend(split_words(self.rules))
        return args


@dataclass(frozen=True)
class ConfigChange:
    """A server setting the file manages (tls_client_auth), sent as `CONFIG SET parameter after`."""

    parameter: str  # "tls-auth-clients" | "tls-auth-clients-user"
    before: str
    after: str
    rewrite: bool = False  # CONFIG REWRITE afterwards (the server has a config file)
    via: str = "CONFIG SET"  # how it is applied: CONFIG SET, or a managed service's API call


@dataclass(frozen=True)
class InventoryChange:
    """A certificate (cert_file) added to or removed from the file since the last apply recorded the
    inventory. No server command: servers map certificates by CN and keep no list of them."""

    action: TokenAction  # ADD or REMOVE
    user: str
    subject: str
    sha256: str  # fingerprint of the certificate
    expires: str | None = None
    cert_file: str | None = None


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    message: str
    instance: str = ""
    node: str = ""  # "" when it holds for every node of the instance
    user: str = ""
    token_id: str = ""
    severity: Severity = Severity.WARNING


class Rail(StrEnum):
    """The safety rail that refused a plan (reconciler.safety)."""

    LOCKOUT = "lockout"  # the admin would lose its login or a command the tool sends
    ADMIN_RIGHTS = "admin_rights"  # the admin may not run a command this plan needs
    DELETE_THRESHOLD = "delete_threshold"  # more deletions than policies.max_delete_percent


FORCE_HINT = "; re-run with --force to allow it"  # ends every refusal --force lifts


@dataclass(frozen=True)
class Refusal:
    """Why apply would refuse this plan. Plan, drift and apply run the same rails, so a pull
    request shows a refusal before anyone runs apply. `waived`: `--force` lifts it (only the
    delete threshold can be forced); shown, never blocking."""

    rail: Rail
    message: str
    waived: bool = False

    @property
    def forcible(self) -> bool:
        return self.rail == Rail.DELETE_THRESHOLD

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class NodePlan:
    address: str
    role: str
    label: str  # "Valkey 9.1.2"
    fingerprint: str  # sha256 of the node's live ACL state when planned
    changes: tuple[UserChange, ...] = ()
    persist: str = "none"  # "acl-save" | "config-rewrite" | "sentinel-flushconfig" | "none" | "warn"
    config: tuple[ConfigChange, ...] = ()  # CONFIG SET, sent after the user changes, before persist
    # Work an earlier apply left unfinished on this node: "persist", "kill-sessions <user>".
    pending: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes) or bool(self.config) or bool(self.pending)


@dataclass(frozen=True)
class InstancePlan:
    name: str
    topology: str
    nodes: tuple[NodePlan, ...]
    findings: tuple[Finding, ...] = ()
    inventory: tuple[InventoryChange, ...] = ()  # certificate inventory changes (no server command)


@dataclass(frozen=True)
class Counts:
    add: int = 0
    change: int = 0
    destroy: int = 0


@dataclass(frozen=True)
class Plan:
    source: str
    instances: tuple[InstancePlan, ...]
    format_version: int = FORMAT_VERSION
    today: str = ""  # the date expiry was judged against (ISO)
    source_sha256: str = ""  # saved plans: sha256 of the desired-state file they were made from
    refusals: tuple[Refusal, ...] = ()  # the safety rails' verdict on this plan (Manager.check)
    targets: tuple[str, ...] = ()  # `--target USER`: only these users' changes; () is the whole file

    @property
    def refused(self) -> bool:
        """Apply would refuse this plan (a refusal that --force did not waive)."""
        return any(not r.waived for r in self.refusals)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for i in self.instances for f in i.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings the servers can't satisfy by an apply (Severity.ERROR)."""
        return tuple(f for f in self.findings if f.severity == Severity.ERROR)

    @property
    def has_changes(self) -> bool:
        return any(n.has_changes for i in self.instances for n in i.nodes) or any(i.inventory for i in self.instances)

    def counts(self) -> Counts:
        """Distinct (instance, user, action): a user created on 6 nodes is 1 to add."""
        seen: set[tuple[str, str, Action]] = set()
        for inst in self.instances:
            for node in inst.nodes:
                for c in node.changes:
                    seen.add((inst.name, c.user, c.action))
                for cc in node.config:
                    seen.add((inst.name, f"config {cc.parameter}", Action.UPDATE))
        return Counts(
            add=sum(1 for s in seen if s[2] == Action.CREATE),
            change=sum(1 for s in seen if s[2] == Action.UPDATE),
            destroy=sum(1 for s in seen if s[2] == Action.DELETE),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["source_sha256"]:
            del d["source_sha256"]  # only saved plans carry it
        if not d["targets"]:
            del d["targets"]  # only `--target` plans (never saved) carry it
        for r, refusal in zip(d["refusals"], self.refusals, strict=True):
            r["forcible"] = refusal.forcible  # whether `apply --force` would lift it
        for inst in d["instances"]:
            for node in inst["nodes"]:
                if not node["pending"]:
                    del node["pending"]  # only after an unfinished apply
                for change in node["changes"]:
                    for line in change["permissions"]:
                        if not line["commands"]:
                            del line["commands"]  # only on "revokes" lines
        c = self.counts()
        d["summary"] = {
            "add": c.add,
            "change": c.change,
            "destroy": c.destroy,
            "findings": len(self.findings),
            "errors": len(self.errors),
            "refusals": sum(1 for r in self.refusals if not r.waived),
        }
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Plan":
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported plan format_version {d.get('format_version')!r}")
        if not isinstance(d.get("source"), str) or not d["source"]:
            # Opened before any comparison: a number would be taken for a file descriptor (0: stdin).
            raise ValueError(f"source {d.get('source')!r} is not a file name")

        def change(c: dict[str, Any]) -> UserChange:
            return UserChange(
                **{
                    **c,
                    "action": Action(c["action"]),
                    "passwords": PasswordStrategy(c.get("passwords", PasswordStrategy.EACH)),
                    "hashes": tuple(c["hashes"]),
                    "tokens": tuple(TokenChange(**{**t, "action": TokenAction(t["action"])}) for t in c["tokens"]),
                    "permissions": tuple(DeltaLine(**{**p, "commands": tuple(p.get("commands", ()))}) for p in c["permissions"]),
                    "certificates": tuple(c["certificates"]),
                }
            )

        instances = tuple(
            InstancePlan(
                name=i["name"],
                topology=i["topology"],
                nodes=tuple(
                    NodePlan(
                        **{
                            **n,
                            "changes": tuple(change(c) for c in n["changes"]),
                            "config": tuple(ConfigChange(**cc) for cc in n.get("config", ())),
                            "pending": tuple(str(p) for p in n.get("pending", ())),
                        }
                    )
                    for n in i["nodes"]
                ),
                findings=tuple(
                    Finding(**{**f, "kind": FindingKind(f["kind"]), "severity": Severity(f["severity"])}) for f in i["findings"]
                ),
                inventory=tuple(InventoryChange(**{**c, "action": TokenAction(c["action"])}) for c in i.get("inventory", ())),
            )
            for i in d["instances"]
        )
        return cls(
            source=d["source"],
            instances=instances,
            format_version=d["format_version"],
            today=d.get("today", ""),
            source_sha256=str(d.get("source_sha256", "")),
            refusals=tuple(
                Refusal(rail=Rail(r["rail"]), message=str(r["message"]), waived=bool(r.get("waived", False)))
                for r in d.get("refusals", ())
            ),
            targets=tuple(str(t) for t in d.get("targets", ())),
        )


def fingerprint(acl_list_lines: list[str]) -> str:
    """Stable digest of a node's ACL state (sorted ACL LIST lines) for saved-plan staleness checks."""
    h = hashlib.sha256()
    for line in sorted(acl_list_lines):
        h.update(line.encode("utf-8", "surrogateescape"))  # names that are not UTF-8 hash as their bytes
        h.update(b"\n")
    return h.hexdigest()


def only_instances(plan: Plan, names: set[str]) -> Plan:
    return replace(plan, instances=tuple(i for i in plan.instances if i.name in names))


__all__ = [
    "Action",
    "ConfigChange",
    "Counts",
    "DeltaLine",
    "Finding",
    "FindingKind",
    "FORCE_HINT",
    "FORMAT_VERSION",
    "InstancePlan",
    "InventoryChange",
    "NodePlan",
    "PasswordStrategy",
    "Plan",
    "Rail",
    "Refusal",
    "Severity",
    "TokenAction",
    "TokenChange",
    "UserChange",
    "fingerprint",
    "only_changes",
    "only_instances",
]


def only_changes(plan: Plan, keep: Callable[[str, str], bool], *, findings: bool = True, config: bool = True) -> Plan:
    """The plan with only the user changes (and certificate inventory) `keep(instance, user)` accepts.

    `findings`/`config`: keep an instance's findings (user findings filtered the same way) and
    its config changes. Fingerprints stay: they describe the nodes, not the changes.
    """
    instances = []
    for inst in plan.instances:
        nodes = tuple(
            replace(
                n,
                changes=tuple(c for c in n.changes if keep(inst.name, c.user)),
                config=n.config if config else (),
            )
            for n in inst.nodes
        )
        kept_findings = tuple(f for f in inst.findings if not f.user or keep(inst.name, f.user)) if findings else ()
        inventory = tuple(c for c in inst.inventory if keep(inst.name, c.user))
        instances.append(replace(inst, nodes=nodes, findings=kept_findings, inventory=inventory))
    return replace(plan, instances=tuple(instances))
