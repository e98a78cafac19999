"""The pure refinement of the planner's plan for Redis Software: certificate users
(auth_method: certificate), the database's default user (one token, the bdb's password), what
the cluster's and the database's versions allow, and which password calls a token change
needs -- or when only "replace all" (PUT /v1/users/password) can do it."""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from ...errors import PlanError
from ...model import DesiredState, User
from ...plan import Action, ConfigChange, Finding, FindingKind, InstancePlan, PasswordStrategy, Severity, UserChange
from ...state import InstanceState
from .. import managed
from . import versions
from .read import DEFAULT, UNKNOWN, RSNode, same_subject

REPLACE_ALL = "replace all passwords (PUT /v1/users/password)"
SET_DEFAULT = "set the database password (PUT /v1/bdbs/{uid}/passwords)"
MTLS = "mtls_certificate_authentication"


def refine(inst: InstancePlan, state: InstanceState, desired: DesiredState) -> InstancePlan:
    """Provider rules on top of the planner's changes: certificates, the default user, which
    password calls a token change needs (and when only "replace all" can do it)."""
    users = managed.users_here(desired, inst.name)
    nodes = []
    for node_plan, node in zip(inst.nodes, state.nodes, strict=True):
        assert isinstance(node, RSNode)
        _check_versions(inst.name, node, users)
        if DEFAULT in users:
            _check_default(inst.name, node, users[DEFAULT])
        changes: list[UserChange] = []
        seen = set()
        for c in node_plan.changes:
            seen.add(c.user)
            changes.append(_refine_change(inst.name, c, users.get(c.user), node))
        # Certificate subject or auth method changed: the planner can't see it (no hashes, same rules).
        for name, user in sorted(users.items()):
            if name in seen or name not in node.users:
                continue
            subject = _subject(inst.name, user)
            live_subject = node.subjects.get(name, "")
            if not same_subject(live_subject, subject or "") or (node.auth_methods.get(name) == "certificate") != bool(subject):
                lu = node.users[name]
                changes.append(
                    UserChange(
                        action=Action.UPDATE,
                        user=name,
                        enabled=user.enabled,
                        hashes=lu.hashes,
                        rules=lu.rules,
                        certificates=(subject,) if subject else (),
                        note=f"certificate subject: {live_subject or '(none)'} -> {subject or '(none)'}",
                    )
                )
        config = tuple(node_plan.config)
        findings = list(inst.findings)
        if node.mtls is False:
            config += (ConfigChange(MTLS, "false", "true", via="PUT /v1/cluster"),)
        if node.trusted_ca is False:
            findings.append(
                Finding(
                    FindingKind.CERT_UNMAPPED,
                    "certificate users can't log in: the cluster has no mtls_trusted_ca certificate "
                    "(add it with PUT /v1/cluster/update_cert; the reconciler does not manage CAs)",
                    inst.name,
                    severity=Severity.ERROR,
                )
            )
        if node.database_mtls is False:
            findings.append(
                Finding(
                    FindingKind.CERT_UNMAPPED,
                    f"certificate users can't log in to database {node.database}: it needs tls_mode enabled and "
                    "client certificate authentication (enforce_client_authentication) -- set them on the database "
                    "(the reconciler does not change database TLS)",
                    inst.name,
                    severity=Severity.ERROR,
                )
            )
        nodes.append(replace(node_plan, changes=tuple(changes), config=config, persist="none"))
        inst = replace(inst, findings=tuple(findings))
    return replace(inst, nodes=tuple(nodes), inventory=())


def _check_versions(instance: str, node: RSNode, users: Mapping[str, User]) -> None:
    """What the file asks of the cluster's and the database's versions (versions.py), before any write."""
    for name, user in sorted(users.items()):
        where = f"{instance} {node.address}: user {name}"
        problem = versions.certificate_users_problem(node.software) if user.certificates else None
        problem = problem or (versions.acl_v2_problem(node.version, user.rules) if name != DEFAULT else None)
        if problem:
            raise PlanError(f"{where}: {problem}")


def _check_default(instance: str, node: RSNode, user: User) -> None:
    where = f"{instance} {node.address}: user {DEFAULT}"
    if len(user.tokens) > 1:
        raise PlanError(
            f"{where}: the default user is the database's password (/v1/bdbs/{{uid}}/passwords) and Redis Software "
            "documents that password rotation does not work for it: declare one token (or rotate with a named user)"
        )
    if not user.tokens:
        raise PlanError(f"{where}: the default user needs one token (the database password)")
    if user.rules.strip():
        raise PlanError(f"{where}: the default user's permissions are the database's, not a Redis ACL; remove acl/roles")
    if not user.enabled or user.certificates:
        raise PlanError(f"{where}: the default user can't be disabled or use certificates here; remove enabled/certificates")


def _subject(instance: str, user: User) -> str | None:
    if not user.certificates:
        return None
    if user.tokens:
        raise PlanError(
            f"{instance}: user {user.name}: a Redis Software user logs in by password or by certificate "
            "(auth_method), not both: keep tokens or certificates"
        )
    if len(user.certificates) > 1:
        raise PlanError(
            f"{instance}: user {user.name}: a Redis Software user has one certificate_subject_line; "
            f"the file lists {len(user.certificates)} certificates"
        )
    return user.certificates[0].subject


def _refine_change(instance: str, c: UserChange, user: User | None, node: RSNode) -> UserChange:
    where = f"{instance} {node.address}: user {c.user}"
    if c.action == "delete" or user is None:
        return c
    if c.user == DEFAULT:
        return replace(c, note=f"{SET_DEFAULT}: new connections need the new token; open connections stay")
    subject = _subject(instance, user)
    if subject:
        return replace(c, certificates=(subject,), note=c.note or "certificate user (auth_method: certificate)")
    adds = [t for t in c.tokens if t.action == "add"]
    removes = [t for t in c.tokens if t.action == "remove"]
    if not c.hashes:
        if c.action == "create" or removes:
            raise PlanError(f"{where}: a Redis Software user keeps at least one password (DELETE never removes the last); declare a token")
        return c
    known = {t.sha256 for t in user.tokens if t.plaintext is not None}
    kept = [t for t in c.tokens if t.action == "keep" and t.sha256 in known]
    unknown_removal = [t for t in removes if t.sha256 not in known]
    # An addition needs an existing password only where the version asks for old_password (7.4).
    needs_authorizer = adds and not kept and not node.admin_can_add
    if c.action == "update" and (unknown_removal or needs_authorizer):
        why = (
            "passwords set outside the reconciler" if any(t.sha256 == UNKNOWN for t in removes)
            else "a removed token's plaintext is no longer in the file (DELETE needs it)"
            if unknown_removal
            else f"no kept token's plaintext to authorize adding one (Redis Software {node.software} asks for old_password)"
        )
        note = f"{REPLACE_ALL}: {why}; new connections with a kept token fail for a moment until it is added back"
        return replace(c, note=note, passwords=PasswordStrategy.REPLACE_ALL)
    return c
