"""The pure refinement of the planner's plan for Redis Cloud: which Cloud users a token change
creates or deletes (one per token: the rotation pair), what cuts open connections (refused unless
api.allow_password_replace), the database's client certificates, and findings for what an
earlier run left or the service is still provisioning."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from ...errors import PlanError
from ...model import DesiredState, Instance, User
from ...names import shown
from ...plan import Action, ConfigChange, Finding, FindingKind, InstancePlan, Severity, TokenAction, TokenChange, UserChange
from ...state import InstanceState
from .. import managed
from .accounts import CERTS, NAME, PREFIX, wanted_accounts
from .read import RULE_ONLY, RCNode

CUTS = "old connections fail after rotation"


def refine(inst: InstancePlan, state: InstanceState, desired: DesiredState, today: date) -> InstancePlan:
    """Provider rules on the planner's changes: which Cloud users a token change creates or deletes,
    what cuts connections (refused unless api.allow_password_replace), certificates, findings."""
    users = managed.users_here(desired, inst.name)
    instance = desired.instances[inst.name]
    allow = bool(instance.api and instance.api.allow_password_replace)
    (node_plan,), (node,) = inst.nodes, state.nodes
    assert isinstance(node, RCNode)
    where = f"{inst.name} {node.address}"
    changes: list[UserChange] = []
    seen = set()
    for c in node_plan.changes:
        seen.add(c.user)
        changed = _refine_change(where, c, users.get(c.user), node, allow)
        if changed is not None:
            changes.append(changed)
    # A token moved to another Cloud username keeps its hash: the planner can't see it.
    for name, user in sorted(users.items()):
        if name in seen or name == "default" or name not in node.accounts:
            continue
        live = {a.name: a.sha256 for a in node.accounts[name]}
        if live != wanted_accounts(user):
            lu = node.users[name]
            c = UserChange(action=Action.UPDATE, user=name, enabled=user.enabled, hashes=lu.hashes, rules=lu.rules,
                           tokens=tuple(TokenChange(TokenAction.KEEP, t.sha256, t.id) for t in user.tokens))
            changed = _refine_change(where, c, user, node, allow)
            if changed is not None:
                changes.append(changed)
    findings = [_leftover_finding(f, node) for f in inst.findings] + [
        Finding(FindingKind.PENDING, f"{what}: still provisioning on the service (apply waits for it to be usable)"
                if not what.endswith(" is error") else f"{what}: its provisioning failed on the service",
                inst.name, severity=Severity.ERROR if what.endswith(" is error") else Severity.WARNING)
        for what in node.unsettled
    ] + [
        Finding(FindingKind.UNMANAGED_USER, f"Redis Cloud user {shown(n)} reaches this database through a role the reconciler did not create "
                "(left alone, also by prune)", inst.name, user=n)
        for n in node.others
    ] + [
        Finding(FindingKind.PASSWORD_UNKNOWN, f"the password of Redis Cloud user {n} is not in {managed.record_path(desired.source, NAME)}: "
                f"taken to be token {tid}; set api.allow_password_replace: true to set it again (old connections fail)",
                inst.name, user=n, token_id=tid)
        for n, tid in node.unrecorded
    ]
    config = list(node_plan.config)
    if instance.client_certificates is not None:
        want = tuple(c.info.sha256 for c in instance.client_certificates if c.info is not None)
        if node.certificates is None or set(node.certificates) != set(want):
            before = "unknown (mTLS on; not readable through the API)" if node.certificates is None else _fps(node.certificates)
            after = _fps(want) if want else "[] (mTLS off)"
            config.append(ConfigChange(CERTS, before, after, via=f"PUT /v1/subscriptions/{node.subscription}/databases/{node.database}"))
        findings += _cert_findings(desired, inst.name, instance, today)
    nodes = (replace(node_plan, changes=tuple(changes), config=tuple(config), persist="none"),)
    return replace(inst, nodes=nodes, findings=tuple(findings), inventory=())


def _fps(fps: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"sha256:{f[:8]}…" for f in sorted(fps)) + "]"


def _cert_findings(desired: DesiredState, instance: str, inst: Instance, today: date) -> list[Finding]:
    warn = desired.policies.expiry_warning_days
    out = []
    for cert in inst.client_certificates or ():
        info = cert.info
        if info is None:
            continue
        ends = info.not_after.date()
        ref = f"client certificate {info.subject} (sha256:{info.sha256[:8]}…, {cert.cert_file})"
        if ends < today:
            out.append(Finding(FindingKind.CERT_EXPIRED, f"{ref} expired on {ends.isoformat()}", instance, severity=Severity.ERROR))
        elif (ends - today).days <= warn:
            out.append(Finding(FindingKind.CERT_EXPIRING, f"{ref} expires in {(ends - today).days} days ({ends.isoformat()}, warning at {warn})", instance))
    return out


def _leftover_finding(f: Finding, node: RCNode) -> Finding:
    """The planner's "not in the file" finding, for what an earlier run made and no Cloud user holds."""
    if f.kind != FindingKind.UNMANAGED_USER or f.user not in node.leftovers:
        return f
    what = node.leftovers[f.user]
    made, them = ("was", "it") if what == RULE_ONLY else ("were", "them")
    return replace(f, message=f"{what} {shown(PREFIX + f.user)} {made} made by the reconciler for user {shown(f.user)}, who is not in the file, "
                   f"and no Redis Cloud user holds {them}: prune: true deletes {them}")


def _refine_change(where: str, c: UserChange, user: User | None, node: RCNode, allow: bool) -> UserChange | None:
    if (c.action == "delete" or user is None) and c.user in node.leftovers:
        what = node.leftovers[c.user]
        return replace(c, note=f"prune: true; left by an earlier run: {what} {shown(PREFIX + c.user)}, which no Redis Cloud user holds "
                       "(a role other databases use only stops listing this one)")
    if c.action == "delete" or user is None:
        n = len(node.accounts.get(c.user, ()))
        what = (f"role {PREFIX}{c.user} no longer lists this database; its {n} Redis Cloud user{'s' if n != 1 else ''}, "
                "role and rule are deleted when no other database uses them")
        return replace(c, note="; ".join(x for x in (c.note, what) if x))
    who = f"{where}: user {c.user}"
    if user.certificates:
        raise PlanError(
            f"{who}: Redis Cloud maps no certificate to an ACL user (mTLS is per database): "
            "list the certificates under the instance's client_certificates: and give the user a token"
        )
    if c.user == "default":
        return _refine_default(who, c, user, node, allow)
    if c.action == "create" and not user.enabled:
        return None  # nothing to create: a disabled user has no role on this database
    if user.enabled and not user.tokens:
        raise PlanError(f"{who}: a Redis Cloud ACL user needs a password (AclUserCreateRequest: name, role, password); declare a token")
    live = {a.name: a.sha256 for a in node.accounts.get(c.user, ())}
    want = wanted_accounts(user)
    ids = {t.sha256: t.id for t in user.tokens}
    notes = []
    replaced = []
    for name, sha in sorted(want.items()):
        if name not in live:
            notes.append(f"+ Cloud user {shown(name)} (token {ids[sha]}, role {PREFIX}{c.user})")
        elif live[name] != sha:
            replaced.append(name)
            notes.append(f"~ Cloud user {shown(name)}: password replaced (token {ids[sha]}): {CUTS}")
    for name in sorted(set(live) - set(want)):
        notes.append(f"- Cloud user {shown(name)} (after the new ones exist)")
    if replaced and not allow:
        raise PlanError(
            f"{who}: token {ids[want[replaced[0]]]} would replace the one password of Redis Cloud user {replaced[0]} in place: "
            f"{CUTS}. For zero downtime give the new token its own username: (the rotation pair); "
            "to replace it anyway set api.allow_password_replace: true"
        )
    if not user.enabled and c.enabled_before:
        notes.append(f"role {PREFIX}{c.user} no longer lists this database (a role that lists no other database is "
                     "deleted with its Cloud users; enabled: true re-creates them from the file's tokens)")
    note = "; ".join(([c.note] if c.note else []) + notes)
    return replace(c, note=note)


def _refine_default(who: str, c: UserChange, user: User, node: RCNode, allow: bool) -> UserChange:
    if user.acl.strip() or user.roles:
        raise PlanError(f"{who}: the default user's permissions are not set through the Redis Cloud API; leave out acl: and roles:")
    if len(user.tokens) > 1:
        raise PlanError(f"{who}: a Redis Cloud database has one default user password; use named users for zero-downtime rotation")
    if user.enabled and not user.tokens:
        raise PlanError(f"{who}: the enabled default user needs its password as a token (or enabled: false to turn it off)")
    changes_password = any(t.action in ("add", "remove") for t in c.tokens) and user.enabled
    note = ""
    if changes_password:
        if not allow:
            raise PlanError(
                f"{who}: changing the database's default user password: {CUTS} (one password at a time). "
                "Set api.allow_password_replace: true to do it"
            )
        note = f"database password (PUT .../databases/{node.database}): {CUTS}"
    live = node.users.get("default")
    if live is not None and user.enabled != live.enabled:
        note = "; ".join(x for x in (note, f"enableDefaultUser: {'true' if user.enabled else 'false'}") if x)
    return replace(c, note=note or c.note)
