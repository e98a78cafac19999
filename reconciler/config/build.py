"""Semantic checks the schema can't express, and building the model.

Runs on data that may also have schema errors: every accessor checks types and skips what
is malformed (the schema already reported it), so one run reports every problem.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Literal

from .. import acl, providers, secrets
from ..model import (
    Admin,
    ApiSettings,
    Certificate,
    DesiredState,
    Instance,
    Policies,
    Secret,
    TLSClientAuth,
    TLSConfig,
    Token,
    User,
    server_token_ref,
)
from . import cloud
from .yamlsrc import Path, Source

HOST_PORT = re.compile(r"^(?:(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)|\[(?P<ip6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})$")
SPECIAL_RE = re.compile(r"[^A-Za-z0-9]")

# Identity rules -> what to write instead. Keys are lower-case words or the first character.
_IDENTITY_HINTS = {
    "on": "use enabled: true",
    "off": "use enabled: false",
    ">": "passwords go in tokens:",
    "<": "to revoke a password, remove its entry from tokens:",
    "#": "token hashes go in tokens: as sha256:",
    "!": "to revoke a password, remove its entry from tokens:",
    "nopass": "every user logs in with tokens: or certificates: (tokens: [] with enabled: false for none)",
    "resetpass": "passwords come from tokens: (tokens: [] for none; certificate-only users get resetpass)",
    "reset": "rules always start from reset, so leave it out",
    "sanitize-payload": "payload sanitisation flags are not managed by the reconciler",
    "skip-sanitize-payload": "payload sanitisation flags are not managed by the reconciler",
}
_REDACT = re.compile(r"""(['"])([<>!#])(?!…\1).*?\1""")


def redact(message: str) -> str:
    """A quoted '>hunter2' -> '>…': never echo something that may be a password.
    Every echoed value is quoted, so unquoted text ('must be <= 100') is left alone."""
    return _REDACT.sub(lambda m: f"{m.group(1)}{m.group(2)}…{m.group(1)}", message)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_:@+=-]+", str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"  # escaped: a newline in a key stays on one line
    return out


@dataclass
class Issue:
    path: Path
    message: str
    warning: bool = False
    line: int | None = None  # explicit line; else the line of `path`


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _bool(v: Any, default: bool) -> bool:
    return v if isinstance(v, bool) else default


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def parse_subject(subject: str) -> list[tuple[str, str]] | None:
    """'CN=app,OU=x,O=Acme' -> [('CN','app'),...]; RFC 4514 escapes (\\, \\+ ...) honoured."""
    parts: list[str] = []
    buf = ""
    i = 0
    while i < len(subject):
        c = subject[i]
        if c == "\\" and i + 1 < len(subject):
            buf += subject[i : i + 2]
            i += 2
            continue
        if c in ",+":
            parts.append(buf)
            buf = ""
        else:
            buf += c
        i += 1
    parts.append(buf)
    out = []
    for part in parts:
        if "=" not in part:
            return None
        k, v = part.split("=", 1)
        k, v = k.strip(), v.strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9.]*", k) or not v:
            return None
        out.append((k.upper(), re.sub(r"\\(.)", r"\1", v)))
    return out


@functools.lru_cache(maxsize=4096)
def _check_rules_cached(text: str, field_name: str) -> tuple[str, ...]:
    return tuple(_check_rules(text, field_name))


# A key or channel pattern of plain characters (not `*` alone, no quotes or selector parentheses).
_PLAIN_PATTERN = re.compile(r"(?<!\S)(~|%[RWrw]{1,2}~|&)(?!\*(?:\s|$))[\w:.{}/@=+-]+\*?(?!\S)")


def check_rules(text: str, field_name: str) -> list[str]:
    """Problems in a rule string (`acl` of a user or a role), identity rules first.

    Memoized: thousands of users share a few rule strings, or differ only in their key and
    channel patterns (`~app1:* +@read`, `~app2:* +@read`). A plain pattern is valid wherever a
    pattern is, so a string whose plain patterns are replaced by one stand-in and that has no
    problem stands for all of them; problems are always worded from the real string."""
    if '"' not in text and "'" not in text and "(" not in text:
        shape = _PLAIN_PATTERN.sub(r"\1p", text)
        if shape != text and not _check_rules_cached(shape, field_name):
            return []
    return list(_check_rules_cached(text, field_name))


def _check_rules(text: str, field_name: str) -> list[str]:
    problems: list[str] = []
    try:
        tokens = acl.split_rules(text)
    except acl.AclSyntaxError as exc:
        return [redact(str(exc))]
    identity: set[str] = set()
    for tok in tokens:
        low = tok.lower()
        key = low if low in _IDENTITY_HINTS else tok[0] if tok[0] in "<>#!" else None
        if key is None:
            continue
        identity.add(tok)
        shown = f"{tok[0]}…" if key in "<>#!" else tok
        problems.append(f"'{shown}' is not allowed in {field_name}: {_IDENTITY_HINTS[key]}")
    try:
        acl.parse(text)
    except acl.AclSyntaxError as exc:
        if exc.token not in identity:
            message = redact(str(exc))
            if exc.token[:2] in ("+@", "-@"):
                cats = sorted(acl.KNOWN_CATEGORIES | {"all"})
                close = difflib.get_close_matches(exc.token[2:].lower(), cats, n=1, cutoff=0.7)
                if close:
                    message += f" (did you mean '@{close[0]}'?)"
            problems.append(message)
        return problems
    problems += acl.unknown_commands(text)  # unknown to every supported version
    return problems


# Where the plaintext is known, a token shorter than this is refused unless policies.min_token_length says otherwise.
DEFAULT_MIN_TOKEN_LENGTH = 16


def complexity_ok(value: str) -> bool:
    return (
        len(value) >= 8
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
        and bool(SPECIAL_RE.search(value))
    )


def node_problem(address: str) -> str | None:
    m = HOST_PORT.match(address)
    if not m:
        return "expected host:port (e.g. 10.0.0.5:6379 or [2001:db8::5]:6379)"
    if not 1 <= int(m.group("port")) <= 65535:
        return f"port {int(m.group('port'))} is out of range (1-65535)"
    if m.group("ip6"):
        try:
            ipaddress.IPv6Address(m.group("ip6"))
        except ValueError:
            return f"'[{m.group('ip6')}]' is not an IPv6 address"
    return None


@dataclass
class Builder:
    src: Source
    base_dir: str
    today: date
    allow_expired: bool
    resolve_secrets: bool
    environ: dict[str, str] | Any = field(default_factory=lambda: os.environ)
    issues: list[Issue] = field(default_factory=list)

    # -- helpers ---------------------------------------------------------------

    def problem(self, path: Path, message: str, *, line: int | None = None) -> None:
        self.issues.append(Issue(tuple(path), message, line=line))

    def warn(self, path: Path, message: str) -> None:
        self.issues.append(Issue(tuple(path), message, warning=True))

    def line(self, path: Path) -> int:
        return self.src.line_of(path)

    def path_of(self, p: str) -> str:
        return secrets.resolve_path(self.base_dir, p)

    def resolve_secret(self, ref: Any, path: Path, what: str) -> tuple[str, secrets.Resolved | None]:
        """-> (source reference, resolved or None). Problems are recorded with `what` in front."""
        if not isinstance(ref, dict) or set(ref) not in ({"env"}, {"file"}) or not isinstance(next(iter(ref.values())), str):
            return "", None  # the schema reported it
        source = secrets.describe(ref)
        if not self.resolve_secrets:  # validate without --resolve-secrets: the form only
            shape = secrets.shape_problem(ref)
            if shape and "env" not in ref:  # env names: the schema's pattern reported it
                self.problem(path, f"{what}: {shape}")
            return source, None
        try:
            resolved = secrets.resolve(
                ref, self.base_dir, warn=lambda m: self.warn(path, m), environ=self.environ
            )
        except secrets.SecretError as exc:
            self.problem(path, f"{what}: {exc}")
            return source, None
        return source, resolved

    # -- top level ---------------------------------------------------------------

    def build(self, source_name: str) -> DesiredState:
        data = self.src.data
        policies = self.policies(_dict(data.get("policies")))
        instances = self.instances(_dict(data.get("instances")))
        roles = self.roles(_dict(data.get("roles")))
        users = self.users(_dict(data.get("users")), instances, roles, policies)
        instances = self.sentinel_users(_dict(data.get("instances")), instances, roles, policies)
        audit = _str(data.get("audit_log"))
        return DesiredState(
            source=source_name,
            version=data.get("version") if _is_int(data.get("version")) else 1,
            policies=policies,
            instances=instances,
            roles={name: rules for name, rules in roles.items() if rules is not None},
            users=users,
            audit_log=self.path_of(audit) if audit else None,
        )

    def policies(self, raw: dict) -> Policies:
        d = Policies()
        ints = {}
        for key in ("token_max_age_days", "expiry_warning_days", "min_token_length", "max_delete_percent"):
            if _is_int(raw.get(key)):
                ints[key] = raw[key]
        return Policies(
            token_max_age_days=ints.get("token_max_age_days", d.token_max_age_days),
            expiry_warning_days=ints.get("expiry_warning_days", d.expiry_warning_days),
            min_token_length=ints.get("min_token_length", d.min_token_length),
            password_complexity=_bool(raw.get("password_complexity"), d.password_complexity),
            forbid_nopass=_bool(raw.get("forbid_nopass"), d.forbid_nopass),
            max_delete_percent=ints.get("max_delete_percent", d.max_delete_percent),
        )

    # -- instances ---------------------------------------------------------------

    def instances(self, raw: dict) -> dict[str, Instance]:
        out: dict[str, Instance] = {}
        seen_nodes: dict[str, tuple[str, Path]] = {}
        seen_sentinels: dict[str, tuple[str, Path]] = {}
        for name, spec in raw.items():
            if not isinstance(name, str) or not isinstance(spec, dict):
                continue
            base: Path = ("instances", name)
            nodes = self.nodes(spec.get("nodes"), base + ("nodes",), name, seen_nodes)
            defaults = Instance(name=name)
            timeout: Any = spec.get("timeout_seconds")
            out[name] = Instance(
                name=name,
                provider=_str(spec.get("provider")) or defaults.provider,
                nodes=nodes,
                tls=self.tls(spec.get("tls")),
                admin=self.admin(spec.get("admin"), base + ("admin",), name),
                auth_mode=spec["auth_mode"] if spec.get("auth_mode") in ("token", "none") else defaults.auth_mode,
                tls_client_auth=self.tls_client_auth(spec.get("tls_client_auth")),
                persist=spec["persist"]
                if spec.get("persist") in ("auto", "acl-save", "config-rewrite", "none")
                else defaults.persist,
                prune=_bool(spec.get("prune"), defaults.prune),
                topology=spec["topology"]
                if spec.get("topology") in ("auto", "standalone", "replicated", "cluster", "sentinel")
                else defaults.topology,
                discover=_bool(spec.get("discover"), defaults.discover),
                kill_sessions_on_revoke=_bool(spec.get("kill_sessions_on_revoke"), defaults.kill_sessions_on_revoke),
                timeout_seconds=float(timeout)
                if (_is_int(timeout) or isinstance(timeout, float)) and 0 < timeout <= 3600
                else defaults.timeout_seconds,
                line=self.line(base),
                api=self.api(spec, base, name),
                client_certificates=cloud.client_certificates(self, spec, base),
                **self.sentinel_keys(spec, base, name, seen_sentinels),
            )
            if out[name].topology == "standalone" and len(nodes) > 1:
                self.problem(base + ("topology",), f"topology: standalone but {len(nodes)} nodes are listed")
        return out

    def sentinel_keys(self, spec: dict, base: Path, instance: str, seen: dict[str, tuple[str, Path]]) -> dict[str, Any]:
        """sentinels, master_name, sentinel_admin of `topology: sentinel` (sentinel_users come later,
        once roles are known). Several instances may share sentinels (one sentinel group watching
        several masters), but only one of them may manage those sentinels' users."""
        keys = ("sentinels", "master_name", "sentinel_admin", "sentinel_users")
        if spec.get("topology") != "sentinel":
            for key in keys:
                if key in spec:
                    self.problem(base + (key,), f"{key}: is for topology: sentinel")
            return {}
        provider = _str(spec.get("provider")) or providers.DEFAULT
        if providers.known(provider) and not providers.capabilities(provider).topology:
            self.problem(base + ("topology",), f"topology: sentinel is for provider {' or '.join(providers.supporting('topology'))}")
        if "nodes" in spec:
            self.problem(base + ("nodes",), "nodes: is not used with topology: sentinel: the sentinels report the primary and replicas; list the sentinels under sentinels:")
        if spec.get("discover") is False:
            self.problem(base + ("discover",), "discover: false does not apply to topology: sentinel (the nodes are the ones the sentinels report)")
        manages = "sentinel_users" in spec
        own: dict[str, tuple[str, Path]] = {}
        sentinels = self.nodes(spec.get("sentinels"), base + ("sentinels",), instance, own)
        if manages:
            for address, (_, where) in own.items():
                other = seen.get(address)
                if other is not None and other[0] != instance:
                    self.problem(
                        where,
                        f"sentinel {address} is also managed by instance '{other[0]}' (sentinel_users:, line {self.line(other[1])}); "
                        "the users of a sentinel are declared in one instance",
                    )
                else:
                    seen[address] = (instance, where)
        return {
            "sentinels": sentinels,
            "master_name": _str(spec.get("master_name")),
            "sentinel_admin": self.admin(spec.get("sentinel_admin"), base + ("sentinel_admin",), instance),
            "sentinel_users": () if manages else None,
        }

    def sentinel_users(self, raw: dict, instances: dict[str, Instance], roles: dict[str, str | None], policies: Policies) -> dict[str, Instance]:
        """Instances with their `sentinel_users:` built like top-level users (same roles, tokens, checks)."""
        from dataclasses import replace

        out = dict(instances)
        for name, inst in instances.items():
            if inst.sentinel_users is None:
                continue
            base: Path = ("instances", name, "sentinel_users")
            spec = _dict(_dict(raw.get(name)).get("sentinel_users"))
            for user, uspec in spec.items():
                if isinstance(uspec, dict) and "instances" in uspec:
                    self.problem(base + (user, "instances"), "instances: is not used in sentinel_users (they belong to this instance's sentinels)")
            users = self.users(spec, {name: inst}, roles, policies, base=base)
            out[name] = replace(inst, sentinel_users=tuple(users.values()))
        return out

    def api(self, spec: dict, base: Path, instance: str) -> ApiSettings | None:
        """`api:` of a managed-service provider; what each provider needs is checked here."""
        provider = _str(spec.get("provider")) or "redis"
        raw = spec.get("api")
        if provider == cloud.PROVIDER:
            return cloud.api(self, spec, raw, base)
        cloud.not_cloud(self, spec, raw, base)
        if provider == "redis":
            if raw is not None:
                self.problem(base + ("api",), "api: is for provider redis-software or memorystore (provider: redis uses nodes:)")
            return None
        if provider not in ("redis-software", "memorystore"):
            return None  # the schema reported it
        if "nodes" in spec and provider == "redis-software":
            self.problem(base + ("nodes",), f"nodes: is not used by provider {provider} (the service is reached through api:)")
        if not isinstance(raw, dict):
            return None  # the schema reported it
        url, database, resource = _str(raw.get("url")), raw.get("database"), _str(raw.get("instance"))
        if provider == "redis-software":
            if not url:
                self.problem(base + ("api",), "provider redis-software needs api.url (the cluster's REST API, https://HOST:9443)")
            if not _is_int(database):
                self.problem(base + ("api",), "provider redis-software needs api.database (the uid of the database whose users this file manages)")
            if resource:
                self.problem(base + ("api", "instance"), "api.instance is for provider memorystore")
        else:
            if not resource:
                self.problem(base + ("api",), "provider memorystore needs api.instance (projects/PROJECT/locations/REGION/instances/ID)")
            if "database" in raw:
                self.problem(base + ("api", "database"), "api.database is for provider redis-software")
        data_plane: Admin | None = None
        if provider == "memorystore" and isinstance(raw.get("data_plane"), dict):
            data_plane = self.admin(raw["data_plane"], base + ("api", "data_plane"), instance)
        elif "data_plane" in raw:
            self.problem(base + ("api", "data_plane"), "api.data_plane is for provider memorystore")
        if provider == "memorystore" and "nodes" in spec and data_plane is None:
            self.problem(base + ("nodes",), "nodes: on a memorystore instance are for CLIENT KILL USER and need api.data_plane (who connects)")
        ca = _str(raw.get("ca_file"))
        return ApiSettings(
            url=url,
            database=database if _is_int(database) else None,
            instance=resource,
            ca_file=self.path_of(ca) if ca else None,
            data_plane=data_plane,
        )

    def provider_tokens(self, user: str, tokens: tuple[Token, ...], path: Path, user_instances: tuple[str, ...], instances: dict[str, Instance]) -> None:
        """Token kinds each instance's provider accepts, from its Capabilities: a sha256 entry needs
        token_hashes, a secret token_secrets, a sink (the service generates the value)
        server_generated_tokens. One problem per token."""
        for i, t in enumerate(tokens):
            where = path + (i,)
            kind = {"sha256": "token_hashes", "server-generated": "server_generated_tokens"}.get(t.source, "token_secrets")
            for inst_name in user_instances:
                provider = instances[inst_name].provider
                if not providers.known(provider):
                    continue  # the schema reported it
                caps = providers.capabilities(provider)
                if caps.password_complexity and t.plaintext is not None and not complexity_ok(t.plaintext.reveal()):
                    # Checked here so the service never refuses the token half-way through an apply.
                    self.problem(
                        where + ("secret",),
                        f"token {t.id} of user {user}: instance {inst_name} uses provider {provider}, whose service "
                        "refuses passwords without 8+ characters, upper- and lower-case letters, a digit and a special character",
                    )
                    break
                if getattr(caps, kind):
                    continue
                if kind == "server_generated_tokens":
                    self.problem(
                        where + ("sink",),
                        f"token {t.id} of user {user}: sink: is for provider {' or '.join(providers.supporting(kind))}, "
                        f"but instance {inst_name} uses provider {provider}: give the token as secret: {{env|file}} or sha256",
                    )
                else:
                    why = caps.reasons.get(kind) or f"which does not take {'sha256' if kind == 'token_hashes' else 'secret'} tokens"
                    self.problem(where, f"token {t.id} of user {user}: instance {inst_name} uses provider {provider}, {why}")
                break

    def nodes(self, raw: Any, path: Path, instance: str, seen: dict[str, tuple[str, Path]]) -> tuple[str, ...]:
        out: list[str] = []
        for i, item in enumerate(_list(raw)):
            where = path + (i,)
            address: str | None = None
            if isinstance(item, str):
                if not HOST_PORT.match(item):
                    continue  # the schema reported it
                address = item
                problem = node_problem(address)
            elif isinstance(item, dict) and isinstance(item.get("env"), str) and len(item) == 1:
                name = item["env"]
                value = self.environ.get(name)
                if value is None or value.strip() == "":
                    if not self.resolve_secrets:
                        out.append(f"env:{name}")
                        continue
                    self.problem(where, f"environment variable {name} is not set (expected host:port)")
                    continue
                address = value.strip()
                problem = node_problem(address)
                if problem:
                    problem = f"environment variable {name}: {problem}"
            else:
                continue
            if problem:
                self.problem(where, problem)
                continue
            if address in out:
                self.problem(where, f"node {address} is listed twice")
                continue
            if address in seen and seen[address][0] != instance:
                other, other_path = seen[address]
                self.problem(
                    where,
                    f"node {address} is also in instance '{other}' (line {self.line(other_path)}); "
                    "a node belongs to one instance",
                )
                continue
            seen[address] = (instance, where)
            out.append(address)
        return tuple(out)

    def tls(self, raw: Any) -> TLSConfig | None:
        if not isinstance(raw, dict):
            return None

        def p(key: str) -> str | None:
            v = _str(raw.get(key))
            return self.path_of(v) if v else None

        return TLSConfig(ca_file=p("ca_file"), cert_file=p("cert_file"), key_file=p("key_file"),
                         server_name=_str(raw.get("server_name")))

    def tls_client_auth(self, raw: Any) -> TLSClientAuth | None:
        if not isinstance(raw, dict):
            return None
        req = raw.get("required")
        required: Literal["true", "false", "optional"] = "true" if req is True else "optional" if req == "optional" else "false"
        field_: Literal["CN", "none"] = raw["user_field"] if raw.get("user_field") in ("CN", "none") else "none"
        return TLSClientAuth(required=required, user_field=field_)

    def admin(self, raw: Any, path: Path, instance: str) -> Admin:
        if not isinstance(raw, dict):
            return Admin()
        username = _str(raw.get("username")) or "default"
        if "secret" not in raw:
            return Admin(username=username)
        source, resolved = self.resolve_secret(
            raw["secret"], path + ("secret",), f"admin secret of instance {instance} ({secrets.describe(_dict(raw['secret']))})"
        )
        admin = Admin(username=username, secret=resolved.secret if resolved else None, source=source)
        return cloud.account_key(self, raw, path, instance, admin)

    # -- roles ---------------------------------------------------------------------

    def roles(self, raw: dict) -> dict[str, str | None]:
        """-> role name -> resolved rules (None when the role is part of a cycle)."""
        specs: dict[str, tuple[list[str], str]] = {}
        for name, spec in raw.items():
            if not isinstance(name, str):
                continue
            base: Path = ("roles", name)
            if isinstance(spec, str):
                specs[name] = ([], spec)
                for msg in check_rules(spec, "a role"):
                    self.problem(base, msg)
            elif isinstance(spec, dict):
                own = _str(spec.get("acl")) or ""
                refs = [r for r in _list(spec.get("roles")) if isinstance(r, str)]
                specs[name] = (refs, own)
                for msg in check_rules(own, "a role"):
                    self.problem(base + ("acl",), msg)
        known = sorted(specs)
        for name in specs:
            for i, ref in enumerate(_list(_dict(raw[name]).get("roles"))):
                if isinstance(ref, str) and ref not in specs:
                    self.problem(("roles", name, "roles", i), f"unknown role '{ref}' ({_suggest(ref, known)}roles: {', '.join(known)})")

        resolved: dict[str, str | None] = {}
        state: dict[str, int] = {}  # 1 visiting, 2 done
        reported: set[frozenset[str]] = set()

        def visit(name: str, stack: list[str]) -> str | None:
            if state.get(name) == 2:
                return resolved[name]
            if state.get(name) == 1:
                cycle = stack[stack.index(name):] + [name]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    self.problem(("roles", cycle[0]), f"role cycle: {' -> '.join(cycle)}")
                return None
            state[name] = 1
            refs, own = specs[name]
            parts: list[str] = []
            ok = True
            for ref in refs:
                if ref not in specs:
                    continue
                sub = visit(ref, stack + [name])
                if sub is None:
                    ok = False
                elif sub:
                    parts.append(sub)
            if own.strip():
                parts.append(own.strip())
            state[name] = 2
            resolved[name] = " ".join(parts) if ok else None
            return resolved[name]

        for name in specs:
            visit(name, [])
        return resolved

    # -- users ---------------------------------------------------------------------

    def users(
        self, raw: dict, instances: dict[str, Instance], roles: dict[str, str | None], policies: Policies,
        base: Path = ("users",),
    ) -> dict[str, User]:
        out: dict[str, User] = {}
        hash_owner: dict[str, tuple[str, Path]] = {}
        known_instances = sorted(self.src.data.get("instances") or {}) if isinstance(self.src.data.get("instances"), dict) else []
        known_roles = sorted(roles)
        users_path = base
        for name, spec in raw.items():
            if not isinstance(name, str) or not isinstance(spec, dict):
                continue
            base = users_path + (name,)
            # instances
            if "instances" in spec and users_path == ("users",):
                names = []
                for i, inst in enumerate(_list(spec.get("instances"))):
                    if not isinstance(inst, str):
                        continue
                    if inst not in known_instances:
                        self.problem(
                            base + ("instances", i),
                            f"unknown instance '{inst}' ({_suggest(inst, known_instances)}instances: {', '.join(known_instances)})",
                        )
                    elif inst in instances:
                        names.append(inst)
                user_instances = tuple(names)
            else:
                user_instances = tuple(instances)
            # roles and rules
            role_names: list[str] = []
            parts: list[str] = []
            for i, role in enumerate(_list(spec.get("roles"))):
                if not isinstance(role, str):
                    continue
                role_names.append(role)
                if role not in roles:
                    self.problem(
                        base + ("roles", i),
                        f"unknown role '{role}' ({_suggest(role, known_roles)}roles: {', '.join(known_roles) or 'none defined'})",
                    )
                elif role_rules := roles[role]:
                    parts.append(role_rules)
            own = _str(spec.get("acl")) or ""
            for msg in check_rules(own, "acl"):
                self.problem(base + ("acl",), msg)
            if own.strip():
                parts.append(own.strip())
            tokens = self.tokens(name, spec.get("tokens"), base + ("tokens",), policies, hash_owner)
            self.provider_tokens(name, tokens, base + ("tokens",), user_instances, instances)
            cloud.tokens(self, name, tokens, base + ("tokens",), user_instances, instances)
            certificates = self.certificates(name, spec.get("certificates"), base + ("certificates",), user_instances, instances)
            if any(instances[n].provider == "redis-software" for n in user_instances):
                self.redis_software_user(name, spec, base, roles, tokens, policies)
            ksor = spec.get("kill_sessions_on_revoke")
            out[name] = User(
                name=name,
                instances=user_instances,
                enabled=_bool(spec.get("enabled"), True),
                roles=tuple(role_names),
                acl=own,
                rules=" ".join(parts),
                tokens=tokens,
                certificates=certificates,
                tokens_declared="tokens" in spec,
                kill_sessions_on_revoke=ksor if isinstance(ksor, bool) else None,
                line=self.line(base),
            )
        return out

    def redis_software_user(
        self, name: str, spec: dict, base: Path, roles: dict[str, str | None], tokens: tuple[Token, ...], policies: Policies
    ) -> None:
        """What Redis Software would refuse (providers/rs_rules.py cites the pages), before any write."""
        from ..providers import rs_rules

        # objects/user's name pattern (ASCII, no & < > ") is already within the schema's username pattern.
        for msg in rs_rules.rules_problems(_str(spec.get("acl")) or ""):
            self.problem(base + ("acl",), msg)
        for i, role in enumerate(_list(spec.get("roles"))):
            if isinstance(role, str) and roles.get(role):
                for msg in rs_rules.rules_problems(roles[role] or ""):
                    self.problem(base + ("roles", i), f"role {role}: {msg}")
        for i, t in enumerate(tokens):
            if t.plaintext is not None and name != "default":  # the default user's is the database's password
                problem = rs_rules.password_problem(t.plaintext.reveal(), name, policies.min_token_length)
                if problem:
                    self.problem(base + ("tokens", i), f"token {t.id} of user {name}: {problem}")
        for i, c in enumerate(_list(spec.get("certificates"))):
            parsed = parse_subject(c["subject"]) if isinstance(c, dict) and isinstance(c.get("subject"), str) else None
            if parsed:
                problem = rs_rules.subject_problem(parsed)
                if problem:
                    self.problem(base + ("certificates", i, "subject"), problem)

    def tokens(
        self, user: str, raw: Any, path: Path, policies: Policies, hash_owner: dict[str, tuple[str, Path]]
    ) -> tuple[Token, ...]:
        out: list[Token] = []
        ids: dict[str, Path] = {}
        hashes: dict[str, Path] = {}
        for i, spec in enumerate(_list(raw)):
            if not isinstance(spec, dict):
                continue
            where = path + (i,)
            tid_raw = spec.get("id")
            tid = str(tid_raw) if isinstance(tid_raw, str) or _is_int(tid_raw) else f"#{i}"
            label = f"token {tid} of user {user}"
            if tid in ids:
                self.problem(where + ("id",), f"duplicate token id '{tid}' (first at line {self.line(ids[tid])})")
            else:
                ids[tid] = where + ("id",)
            # value
            sha: str | None = None
            source = "sha256"
            plaintext: Secret | None = None
            sink: str | None = None
            if "secret" in spec and "sha256" not in spec:
                source, resolved = self.resolve_secret(spec["secret"], where + ("secret",), f"{label} ({secrets.describe(_dict(spec['secret']))})")
                if resolved is not None:
                    sha, plaintext = resolved.sha256, resolved.secret
                    self.token_policy(resolved, where + ("secret",), label, policies)
            elif "sha256" in spec and "secret" not in spec and isinstance(spec["sha256"], str):
                if re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]):
                    sha = spec["sha256"]
            elif "sink" in spec and "secret" not in spec and "sha256" not in spec:
                sink_file = _str(_dict(spec["sink"]).get("file"))
                if sink_file:
                    sink = self.path_of(sink_file)
                    source = "server-generated"
                    sha = server_token_ref(user, tid)
            if sha is not None:
                if sha in hashes:
                    self.problem(where, f"{label} is the same token as tokens[{hashes[sha][-1]}] (line {self.line(hashes[sha])}): listed twice")
                else:
                    hashes[sha] = where
                    other = hash_owner.get(sha)
                    if other is not None and other[0] != user:
                        self.problem(
                            where,
                            f"{label} is the same token as a token of user {other[0]} (line {self.line(other[1])}): "
                            "a token may belong to one user only",
                        )
                    else:
                        hash_owner.setdefault(sha, (user, where))
            created = self.date(spec.get("created"), where + ("created",))
            expires = self.date(spec.get("expires"), where + ("expires",))
            if created and expires and created > expires:
                self.problem(where + ("created",), f"{label}: created ({created}) is after expires ({expires})")
            if expires and expires < self.today and not self.allow_expired:
                self.problem(
                    where + ("expires",),
                    f"{label} expired on {expires} (remove it from the file, or pass --allow-expired)",
                )
            out.append(
                Token(
                    id=tid,
                    sha256=sha or "",
                    created=created,
                    expires=expires,
                    source=source or "sha256",
                    plaintext=plaintext,
                    note=_str(spec.get("note")),
                    line=self.line(where),
                    sink=sink,
                    username=_str(spec.get("username")),
                )
            )
        return tuple(out)

    def token_policy(self, resolved: secrets.Resolved, path: Path, label: str, policies: Policies) -> None:
        value = resolved.secret.reveal()
        minimum = DEFAULT_MIN_TOKEN_LENGTH if policies.min_token_length is None else policies.min_token_length
        if minimum and len(value) < minimum:
            default = "" if policies.min_token_length is not None else ", the default"
            self.problem(
                path,
                f"{label} ({resolved.source}) is shorter than policies.min_token_length ({minimum}{default})",
            )
        if policies.password_complexity and not complexity_ok(value):
            self.problem(
                path,
                f"{label} ({resolved.source}) fails policies.password_complexity "
                "(needs 8+ characters with upper- and lower-case letters, a digit and a special character)",
            )

    def date(self, raw: Any, path: Path) -> date | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
            # The schema says so too (same words, said once); a value that does not parse is never dropped.
            self.problem(path, "expected a date YYYY-MM-DD")
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            self.problem(path, f"'{raw}' is not a valid date")
            return None

    def certificates(
        self, user: str, raw: Any, path: Path, user_instances: tuple[str, ...], instances: dict[str, Instance]
    ) -> tuple[Certificate, ...]:
        out: list[Certificate] = []
        seen: dict[tuple, Path] = {}
        cn_instances = [
            n for n in user_instances
            if (auth := instances[n].tls_client_auth) is not None and auth.user_field == "CN"
        ]
        for i, spec in enumerate(_list(raw)):
            if not isinstance(spec, dict) or not isinstance(spec.get("subject"), str):
                continue
            where = path + (i,)
            subject = spec["subject"]
            parsed = parse_subject(subject)
            if parsed is None:
                self.problem(where + ("subject",), 'expected a subject like "CN=app,OU=payments,O=Acme,C=US"')
            else:
                # Rotation lists one subject twice, each with its own cert_file.
                key = (tuple(sorted(parsed)), self.path_of(spec["cert_file"]) if isinstance(spec.get("cert_file"), str) else None)
                if key in seen:
                    self.problem(where + ("subject",), f"subject listed twice (first at line {self.line(seen[key])})")
                else:
                    seen[key] = where + ("subject",)
                cns = [v for k, v in parsed if k == "CN"]
                if cn_instances:
                    if not cns:
                        self.problem(
                            where + ("subject",),
                            f"subject has no CN, but instance {cn_instances[0]} maps certificates to users by CN",
                        )
                    elif cns[0] != user:
                        self.problem(
                            where + ("subject",),
                            f"CN '{cns[0]}' must equal the username '{user}': instance {cn_instances[0]} "
                            "maps certificates to users by CN (tls_client_auth.user_field: CN)",
                        )
            cert_file = _str(spec.get("cert_file"))
            info = None
            if cert_file:  # inventory: subject, chain to each instance's CA, clientAuth (certs.check)
                from .. import certs  # imports `cryptography`: only files with cert_file pay for it

                cas = [(n, tls.ca_file) for n in user_instances if (tls := instances[n].tls) and tls.ca_file]
                info, cert_problems = certs.check(self.path_of(cert_file), parsed, cas)
                for msg in cert_problems:
                    self.problem(where + ("cert_file",), msg)
            out.append(
                Certificate(
                    subject=subject,
                    cert_file=self.path_of(cert_file) if cert_file else None,
                    line=self.line(where),
                    info=info,
                )
            )
        return tuple(out)


def emit_warnings(issues: list[Issue], line_of: Callable[[Path], int], file: str, write: Callable[[str], Any]) -> None:
    for issue in sorted((i for i in issues if i.warning), key=lambda i: line_of(i.path)):
        where = f"{file}:{issue.line or line_of(issue.path)}"
        write(f"{where}: {format_path(issue.path)}: warning: {issue.message}\n")
