"""The planner: a pure function (DesiredState, LiveState, today) -> Plan. No I/O here.

Desired and live users are compared on effective permissions (reconciler.acl), on the
set of password hashes, and on on/off and nopass -- never on rule text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date
from typing import Any

from . import acl
from .errors import PlanError
from .model import Certificate, DesiredState, Instance, Token, User
from .names import shown
from .plan import (
    Action,
    ConfigChange,
    DeltaLine,
    Finding,
    FindingKind,
    InstancePlan,
    InventoryChange,
    NodePlan,
    Plan,
    Severity,
    TokenAction,
    TokenChange,
    UserChange,
    fingerprint,
)
from .state import LiveState, LiveUser, NodeState

TableLookup = Callable[[str], "acl.CommandTable"]


def _table(node: NodeState) -> "acl.CommandTable":
    try:
        return node.acl_table()
    except KeyError:
        raise PlanError(f"no command table '{node.command_table}' (read it from the node or add it to reconciler/acl/tables)") from None


def plan(
    desired: DesiredState,
    live: LiveState,
    *,
    today: date,
    inventory: Mapping[str, Mapping[str, list[dict]]] | None = None,
) -> Plan:
    """inventory: the certificate inventory the last apply recorded (instance -> user -> entries
    with sha256), or None to leave certificate inventory out of the plan."""
    instances = []
    for name, inst_live in live.instances.items():
        inst = desired.instances[name]
        users = desired.users_for(name)
        nodes = tuple(
            _plan_node(desired, inst, inst.users_for_role(node.role, users), node, _table(node), today)
            for node in inst_live.nodes
        )
        findings = _node_findings_all(desired, inst, users, inst_live.nodes)
        findings += _token_findings(desired, inst, users, today) + _cert_findings(desired, inst, users, today)
        if inst.sentinel_users:
            findings += [
                replace(f, message=f"sentinels: {f.message}") for f in _token_findings(desired, inst, list(inst.sentinel_users), today)
            ]
        inv = () if inventory is None else _inventory_changes(users, inventory.get(name, {}))
        instances.append(
            InstancePlan(name=name, topology=inst_live.topology, nodes=nodes, findings=tuple(findings), inventory=inv)
        )
    return Plan(source=desired.source, instances=tuple(instances), today=today.isoformat())


def _node_findings_all(desired: DesiredState, inst: Instance, users: list[User], nodes: tuple[NodeState, ...]) -> list[Finding]:
    """Findings per node, each said once for the nodes of one role (sentinels hold other users,
    and their findings say they are about the sentinels)."""
    data = tuple(n for n in nodes if n.role != "sentinel")
    sentinels = tuple(n for n in nodes if n.role == "sentinel")
    out = dedupe_findings([f for node in data for f in _node_findings(desired, inst, users, node)], len(data))
    if sentinels:
        wanted = inst.users_for_role("sentinel", users)
        found = dedupe_findings([f for node in sentinels for f in _node_findings(desired, inst, wanted, node)], len(sentinels))
        out += [replace(f, message=f"sentinel{'s' if not f.node else ''}: {f.message}") for f in found]
    return out


def node_fingerprint(node: NodeState) -> str:
    """Fingerprint from live data, equal to live.acl_fingerprint() of the same ACL LIST."""
    return fingerprint([_acl_line(u) for u in node.users.values()])


def _acl_line(u: LiveUser) -> str:
    parts = ["user", u.name, "on" if u.enabled else "off"]
    if u.nopass:
        parts.append("nopass")
    parts.extend(f"#{h}" for h in u.hashes)
    if u.rules:
        parts.append(u.rules)
    return " ".join(parts)


def _expired(t: Token, today: date) -> bool:
    return t.expires is not None and t.expires < today


def _wants_nopass(inst: Instance, user: User) -> bool:
    return user.name == "default" and inst.auth_mode == "none"


def _target_hashes(user: User, today: date) -> tuple[str, ...]:
    return tuple(t.sha256 for t in user.tokens if not _expired(t, today))


def persist_mode(inst: Instance, node: NodeState) -> str:
    where = f"{inst.name} {node.address}"
    if inst.persist == "none":
        return "none"
    if node.role == "sentinel":  # a sentinel always has a config file; FLUSHCONFIG writes its users there
        return "acl-save" if node.aclfile else "sentinel-flushconfig"
    if inst.persist == "acl-save":
        if not node.aclfile:
            raise PlanError(f"{where}: persist: acl-save but the server has no aclfile")
        return "acl-save"
    if inst.persist == "config-rewrite":
        if not node.aclfile_known:
            # CONFIG REWRITE does not write users when an aclfile is in use: they would be lost on restart.
            raise PlanError(
                f"{where}: persist: config-rewrite, but the admin user may not run CONFIG GET, so whether the "
                "server uses an aclfile is unknown; grant +config|get"
            )
        if node.aclfile:
            raise PlanError(f"{where}: persist: config-rewrite but the server uses an aclfile (use acl-save or auto)")
        if not node.config_file:
            raise PlanError(f"{where}: persist: config-rewrite but the server was started without a config file")
        return "config-rewrite"
    if node.aclfile:
        return "acl-save"
    if not node.aclfile_known:
        return "auto"  # the executor tries ACL SAVE and falls back only when the server says it has no aclfile
    if node.config_file:
        return "config-rewrite"
    return "warn"


# describe() results by (what, table name, rule string): nodes of one version share them, so a
# 6-node cluster costs about what one node does instead of 6x (bench/bench_cluster.py).
_MEMO: dict[tuple[str, str, str], Any] = {}
_MEMO_LIMIT = 100_000


def _memo(kind: str, table: "acl.CommandTable", rules: str, compute: Callable[[], Any]) -> Any:
    key = (kind, table.name, rules)
    hit = _MEMO.get(key)
    if hit is None:
        hit = compute()  # exceptions (UnsupportedRule) are not cached
        if len(_MEMO) > _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[key] = hit
    return hit


def _plan_node(
    desired: DesiredState, inst: Instance, users: list[User], node: NodeState, table: "acl.CommandTable", today: date
) -> NodePlan:
    changes: list[UserChange] = []
    for user in sorted(users, key=lambda u: u.name):
        change = _plan_user(inst, user, node.users.get(user.name), node, table, today, desired.source)
        if change is not None:
            changes.append(change)
    wanted = {u.name for u in users}
    if inst.prune:
        for name in sorted(set(node.users) - wanted):
            if name == node.admin_user and name != "default":
                # Never exempted silently: "the servers match the file" would be false.
                raise PlanError(
                    f"{inst.name} {node.address}: prune: true, but the admin user {shown(name)} (the user the reconciler "
                    f"logs in as) is not in the file; declare it under users.{name} with the rules it needs and its "
                    "token as a sha256 entry (`reconciler import` prints both), or set prune: false"
                )
            if name == "default":
                continue
            lu = node.users[name]
            conns = f"; {lu.connections} open connection{'s' if lu.connections != 1 else ''} will be killed" if lu.connections else ""
            changes.append(
                UserChange(action=Action.DELETE, user=name, enabled=False, kill_sessions=True, connections=lu.connections, note=f"prune: true{conns}")
            )
    persist = persist_mode(inst, node) if changes else "none"
    # tls-auth-clients* are data-node settings; a sentinel has no CONFIG SET.
    config = [] if node.role == "sentinel" else _tls_client_auth(inst, users, node)[0]
    return NodePlan(
        address=node.address,
        role=node.role,
        label=node.label,
        fingerprint=node_fingerprint(node),
        changes=tuple(changes),
        persist=persist,
        config=tuple(config),
    )


def _plan_user(
    inst: Instance,
    user: User,
    live: LiveUser | None,
    node: NodeState,
    table: "acl.CommandTable",
    today: date,
    source: str = "",
) -> UserChange | None:
    where = f"{inst.name} {node.address}: user {user.name}"
    try:
        rules = acl.rules_for(user.rules, table)  # memoized per table by the engine
    except (acl.UnsupportedRule, acl.AclSyntaxError) as exc:
        # The rule is in the file: say where (the user's line; `roles` when a role brought it).
        own = isinstance(exc, acl.UnsupportedRule) and exc.rule in user.acl.split()
        field = "acl" if own or not user.roles else "roles"
        at = f"{source}:{user.line}: users.{user.name}.{field}: " if source and user.line else ""
        if isinstance(exc, acl.UnsupportedRule):
            raise PlanError(f"{at}{where}: {node.label} can't express this: {exc}") from None
        raise PlanError(f"{at}{where}: {exc}") from None
    if user.certificate_only and not node.capabilities.cert_user_mapping:
        raise PlanError(
            f"{where}: certificate-only user, but {node.label} can't map client certificates to users "
            "(needs Valkey >= 9.0 or Redis >= 8.6 with TLS)"
        )
    if user.certificate_only and not node.tls:
        raise PlanError(f"{where}: certificate-only user, but instance {inst.name} has no tls: (certificates log in over TLS only)")
    if user.certificate_only and _mapping_after(inst, node) != "CN":
        raise PlanError(
            f"{where}: certificate-only user, but tls-auth-clients-user is {node.tls_auth_clients_user or 'off'} on the node "
            "and the file does not set tls_client_auth.user_field: CN, so no certificate could log in as this user"
        )
    nopass = _wants_nopass(inst, user)
    hashes = () if nopass else _target_hashes(user, today)
    wanted = acl.effective(user.rules, table)
    by_hash = {t.sha256: t for t in user.tokens}
    certs = tuple(_cert_label(c) for c in user.certificates)
    note = "certificate-only (resetpass)" if user.certificate_only else ""
    if nopass:
        note = "nopass (auth_mode: none)"

    # The target state, the same for a create and an update.
    change = functools.partial(UserChange, user=user.name, enabled=user.enabled, nopass=nopass, hashes=hashes, rules=rules)
    if live is None:
        tokens = tuple(
            TokenChange(TokenAction.ADD, h, by_hash[h].id, expires=_iso(by_hash[h].expires)) for h in hashes
        )
        return change(
            action=Action.CREATE,
            tokens=tokens,
            permissions=_memo("describe", table, user.rules, lambda: tuple(DeltaLine("+", line) for line in acl.describe(wanted))),
            certificates=certs,
            note=_with_absent(note, user),
        )

    live_hashes = set(live.hashes)
    target = set(hashes)
    added = [h for h in hashes if h not in live_hashes]
    removed = sorted(live_hashes - target)
    # An `expires` date is the file saying when a token stops working, so a last token that
    # expired goes like any other expired token (drift warned for expiry_warning_days before).
    lapsed = bool(removed) and not target and all(h in by_hash and _expired(by_hash[h], today) for h in removed)
    if removed and not target and not nopass:
        # The rule keeps a user able to log in. A user the file disables can't log in anyway,
        # so its tokens going with it locks nobody out (a fresh server's `default` with a password).
        explicit = user.certificate_only or lapsed or not user.enabled
        if not explicit:
            raise PlanError(
                f"{where}: this would remove the user's last token; say so explicitly "
                "(enabled: false for a user nobody logs in as, or certificates for a certificate-only user)"
            )
    unreadable = ""
    try:
        live_perms = acl.effective(live.rules, table)
    except (acl.AclSyntaxError, acl.UnsupportedRule, ValueError) as exc:
        # An odd out-of-band rule (or a module command the table lacks) on this one user: it is
        # drift on this user, reset to the file's rules by apply, not an error for the instance.
        live_perms = None
        unreadable = f"live rules can't be read ({exc}); apply replaces them with the file's"
    same = (
        live.enabled == user.enabled
        and live.nopass == nopass
        and live_hashes == target
        and live_perms == wanted
    )
    if same:
        return None

    token_changes: list[TokenChange] = []
    if added or removed or live.nopass != nopass:
        for h in hashes:
            t = by_hash[h]
            if h in live_hashes:
                reason = f"kept: {t.note}" if t.note else "kept: remove after apps moved" if added else "kept"
                token_changes.append(TokenChange(TokenAction.KEEP, h, t.id, reason=reason, expires=_iso(t.expires)))
            else:
                token_changes.append(TokenChange(TokenAction.ADD, h, t.id, expires=_iso(t.expires)))
        for h in removed:
            gone = by_hash.get(h)
            if gone is not None and _expired(gone, today):
                token_changes.append(TokenChange(TokenAction.REMOVE, h, gone.id, reason=f"expired {gone.expires}", expires=_iso(gone.expires)))
            else:
                token_changes.append(TokenChange(TokenAction.REMOVE, h, None, reason="not in file"))
    disabled = live.enabled and not user.enabled
    revoke_kill = bool(removed) and (
        user.kill_sessions_on_revoke if user.kill_sessions_on_revoke is not None else inst.kill_sessions_on_revoke
    )
    if live_perms is None:
        perms: tuple[DeltaLine, ...] = (DeltaLine("-", unreadable),)
    else:
        perms = tuple(acl.describe_delta(live_perms, wanted)) if live_perms != wanted else ()
    if live.nopass and not nopass and not note:
        note = "nopass removed"
    if lapsed and not user.certificate_only:
        note = "last token expired: nobody can log in until a new token is added"
    note = _with_absent(note, user)
    return change(
        action=Action.UPDATE,
        enabled_before=live.enabled if live.enabled != user.enabled else None,
        tokens=tuple(token_changes),
        permissions=perms,
        certificates=certs,
        kill_sessions=disabled or revoke_kill,
        connections=live.connections,
        note=note,
    )


def _with_absent(note: str, user: User) -> str:
    """"previous: none yet" for each token whose store has no such version yet (the first rotation starts there)."""
    parts = [note] if note else []
    parts += [f"{t.id}: none yet" for t in user.absent_tokens]
    return "; ".join(parts)


def _cert_label(cert: "Certificate") -> str:
    """`CN=app,O=Acme  (sha256:ab12cd34…, expires 2027-03-01)`: the inventory shown in the plan."""
    if cert.info is None:
        return cert.subject
    return f"{cert.subject}  (sha256:{cert.info.sha256[:8]}…, expires {cert.info.not_after.date().isoformat()})"


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


# tls_client_auth in the file -> the server's CONFIG values.
_TLS_REQUIRED = {"true": "yes", "false": "no", "optional": "optional"}
_TLS_USER_FIELD = {"CN": "CN", "none": "off"}


def _mapping_after(inst: Instance, node: NodeState) -> str:
    """tls-auth-clients-user once this plan is applied ("off" when unknown)."""
    if inst.tls_client_auth is not None and node.capabilities.cert_user_mapping and node.tls_auth_clients_user is not None:
        return _TLS_USER_FIELD[inst.tls_client_auth.user_field]
    return node.tls_auth_clients_user or "off"


def _tls_client_auth(inst: Instance, users: list[User], node: NodeState) -> tuple[list[ConfigChange], list[Finding]]:
    """CONFIG SET changes for tls_client_auth, and findings where the server can't take them at runtime."""
    tca = inst.tls_client_auth
    if tca is None:
        return [], []
    where = f"{inst.name} {node.address}"
    want_req, want_user = _TLS_REQUIRED[tca.required], _TLS_USER_FIELD[tca.user_field]
    changes: list[ConfigChange] = []
    findings: list[Finding] = []

    def restart(what: str, why: str) -> None:
        findings.append(
            Finding(FindingKind.TLS_CLIENT_AUTH, f"needs restart with {what}: {why}", inst.name, node.address, severity=Severity.ERROR)
        )

    if not node.tls:
        restart(f"tls-port and tls-auth-clients {want_req}", "tls_client_auth is set but the instance has no tls: settings")
        return [], findings
    if node.tls_auth_clients is None:
        restart(f"tls-auth-clients {want_req}", f"{node.label} does not report tls-auth-clients (built without TLS?)")
    elif node.tls_auth_clients != want_req:
        if want_req == "yes" and (inst.tls is None or not inst.tls.cert_file):
            raise PlanError(
                f"{where}: tls_client_auth.required: true, but tls.cert_file is not set: "
                "the reconciler could not connect to this node afterwards"
            )
        changes.append(ConfigChange("tls-auth-clients", node.tls_auth_clients, want_req, rewrite=node.config_file))
    if want_user == "CN" and (not node.capabilities.cert_user_mapping or node.tls_auth_clients_user is None):
        restart(
            "a server that supports tls-auth-clients-user CN (Valkey >= 9.0, Redis >= 8.6)",
            f"{node.label} can't map client certificates to users",
        )
    elif node.tls_auth_clients_user is not None and node.tls_auth_clients_user != want_user:
        changes.append(ConfigChange("tls-auth-clients-user", node.tls_auth_clients_user, want_user, rewrite=node.config_file))
    return changes, findings


def _node_findings(desired: DesiredState, inst: Instance, users: list[User], node: NodeState) -> list[Finding]:
    out: list[Finding] = []
    wanted = {u.name for u in users}
    declared_default = "default" in wanted
    out.extend(_tls_client_auth(inst, users, node)[1])
    maps = node.capabilities.cert_user_mapping and node.tls and _mapping_after(inst, node) == "CN"
    for u in users:
        if u.certificates and u.tokens and not maps:  # certificate-only users are a plan error instead
            out.append(
                Finding(
                    FindingKind.CERT_UNMAPPED,
                    f"user {u.name} has certificates, but {node.label} on this node does not map certificates "
                    "to users (tls-auth-clients-user CN over TLS): only its tokens log in",
                    inst.name,
                    node.address,
                    user=u.name,
                )
            )
    cert_users = any(u.certificates for u in users)
    if declared_default and cert_users and node.tls:
        d = next(u for u in users if u.name == "default")
        if d.enabled and _wants_nopass(inst, d):
            out.append(
                Finding(
                    FindingKind.NOPASS,
                    "user default is nopass (auth_mode: none) on an instance with certificate users: "
                    "clients without a matching certificate fall back to it",
                    inst.name,
                    user="default",
                )
            )
    for who in node.lock_impostors:
        out.append(
            Finding(
                FindingKind.LOCK_IMPOSTOR,
                f"a connection of {who} is named like the apply lock but is not authenticated as the admin user "
                f"{node.admin_user}: apply ignores it (any user may name its connection); something impersonates the reconciler",
                inst.name,
                node.address,
            )
        )
    for name, lu in sorted(node.users.items()):
        if name == "default" and not declared_default:
            if lu.enabled and lu.nopass and (inst.auth_mode == "token" or desired.policies.forbid_nopass):
                certs = any(u.certificates for u in users)
                why = "; clients without a matching certificate fall back to it" if certs else ""
                out.append(
                    Finding(FindingKind.NOPASS, f"user default is nopass: anyone can connect without a token{why}", inst.name, user="default")
                )
            continue
        if name not in wanted and not inst.prune:
            admin = " (the reconciler's admin user: declare it to manage it)" if name == node.admin_user else ""
            out.append(Finding(FindingKind.UNMANAGED_USER, f"user {shown(name)} is not in the file (prune: false){admin}", inst.name, node.address, user=name))
    return out


def _token_findings(desired: DesiredState, inst: Instance, users: list[User], today: date) -> list[Finding]:
    pol = desired.policies
    out: list[Finding] = []
    for user in sorted(users, key=lambda u: u.name):
        for t in user.tokens:
            ref = f"token {user.name}/{t.id}"
            if _expired(t, today):
                out.append(Finding(FindingKind.TOKEN_EXPIRED, f"{ref} expired on {t.expires}: removed from servers", inst.name, user=user.name, token_id=t.id))
                continue
            if t.expires is not None and (t.expires - today).days <= pol.expiry_warning_days:
                days = (t.expires - today).days
                out.append(
                    Finding(FindingKind.TOKEN_EXPIRING, f"{ref} expires in {days} days ({t.expires.isoformat()}, warning at {pol.expiry_warning_days})", inst.name, user=user.name, token_id=t.id)
                )
            if pol.token_max_age_days is not None and t.created is not None:
                age = (today - t.created).days
                if age > pol.token_max_age_days:
                    out.append(
                        Finding(FindingKind.TOKEN_AGE, f"{ref} is {age} days old (policy {pol.token_max_age_days})", inst.name, user=user.name, token_id=t.id)
                    )
    return out


def _cert_findings(desired: DesiredState, inst: Instance, users: list[User], today: date) -> list[Finding]:
    """Expiry of every inventoried cert_file (read at load; see reconciler.certs)."""
    warn_days = desired.policies.expiry_warning_days
    out: list[Finding] = []
    for user in sorted(users, key=lambda u: u.name):
        for cert in user.certificates:
            info = cert.info
            if info is None:
                continue
            ref = f"certificate {user.name} {info.subject} (sha256:{info.sha256[:8]}…, {cert.cert_file})"
            ends = info.not_after.date()
            if ends < today:
                out.append(
                    Finding(FindingKind.CERT_EXPIRED, f"{ref} expired on {ends.isoformat()}", inst.name, user=user.name, severity=Severity.ERROR)
                )
            elif (ends - today).days <= warn_days:
                out.append(
                    Finding(
                        FindingKind.CERT_EXPIRING,
                        f"{ref} expires in {(ends - today).days} days ({ends.isoformat()}, warning at {warn_days})",
                        inst.name,
                        user=user.name,
                    )
                )
    return out


def _inventory_changes(users: list[User], recorded: Mapping[str, list[dict]]) -> tuple[InventoryChange, ...]:
    """Certificates added to / removed from the file since the recorded inventory (by fingerprint)."""
    out: list[InventoryChange] = []
    names = sorted({u.name for u in users if any(c.info for c in u.certificates)} | set(recorded))
    by_name = {u.name: u for u in users}
    for name in names:
        user = by_name.get(name)
        now = {c.info.sha256: c for c in (user.certificates if user else ()) if c.info is not None}
        before = {e.get("sha256", ""): e for e in recorded.get(name, []) if isinstance(e, dict)}
        for fp, c in now.items():
            if fp not in before:
                assert c.info is not None
                out.append(InventoryChange(TokenAction.ADD, name, c.info.subject, fp, c.info.not_after.date().isoformat(), c.cert_file))
        for fp, e in before.items():
            if fp not in now:
                out.append(InventoryChange(TokenAction.REMOVE, name, str(e.get("subject", "")), fp, e.get("expires"), e.get("cert_file")))
    return tuple(out)


def dedupe_findings(findings: list[Finding], node_count: int) -> list[Finding]:
    """A finding that holds on every node of an instance is reported once, without a node."""
    groups: dict[tuple, list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.kind, f.message, f.user, f.token_id), []).append(f)
    out: list[Finding] = []
    for group in groups.values():
        if len(group) == node_count and node_count > 1:
            f = group[0]
            out.append(Finding(f.kind, f.message, f.instance, "", f.user, f.token_id, f.severity))
        else:
            out.extend(group)
    return out
