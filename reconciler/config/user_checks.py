"""Semantic checks of `roles:` and `users:` -- rules, tokens (policies, dates, what each
instance's provider accepts) -- and building the User model, for the Builder."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from .. import providers, secrets
from ..model import (
    AbsentToken,
    Instance,
    Policies,
    Secret,
    Sink,
    Token,
    User,
    server_token_ref,
)
from ..secrets.vault import VaultRef
from . import cloud, rotation_checks
from .certificate_checks import CertificateChecks
from .core import (
    DEFAULT_MIN_TOKEN_LENGTH,
    as_bool,
    as_dict,
    as_list,
    as_str,
    check_rules,
    complexity_ok,
    is_int,
    parse_subject,
    suggest,
)
from .yamlsrc import Path

# Roles including roles: real files nest a few levels; a longer chain is a mistake (or an
# attack on the loader) and would build rule strings quadratic in its length.
MAX_ROLE_DEPTH = 32


class UserChecks(CertificateChecks):
    def roles(self, raw: dict) -> dict[str, str | None]:
        """-> role name -> resolved rules (None when the role is in a cycle or too deep a chain)."""
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
                own = as_str(spec.get("acl")) or ""
                refs = [r for r in as_list(spec.get("roles")) if isinstance(r, str)]
                specs[name] = (refs, own)
                for msg in check_rules(own, "a role"):
                    self.problem(base + ("acl",), msg)
        known = sorted(specs)
        for name in specs:
            for i, ref in enumerate(as_list(as_dict(raw[name]).get("roles"))):
                if isinstance(ref, str) and ref not in specs:
                    self.problem(("roles", name, "roles", i), f"unknown role '{ref}' ({suggest(ref, known)}roles: {', '.join(known)})")
        return self._resolve_roles(specs)

    def _resolve_roles(self, specs: dict[str, tuple[list[str], str]]) -> dict[str, str | None]:
        """Each role's rules with the roles it includes first, without recursion (a file may
        chain thousands of roles). None for a role in a cycle or in a chain deeper than
        MAX_ROLE_DEPTH; each cycle and each too-deep chain is one problem."""
        resolved: dict[str, str | None] = {}
        depth: dict[str, int] = {}  # roles in the longest chain from this role down
        state: dict[str, int] = {}  # 1 on the walk's stack, 2 done
        reported: set[frozenset[str]] = set()
        refs_of = {name: [r for r in refs if r in specs] for name, (refs, _) in specs.items()}
        for root in specs:
            if root in state:
                continue
            state[root] = 1
            stack: list[tuple[str, int]] = [(root, 0)]  # (role, index of its next include)
            while stack:
                name, i = stack[-1]
                refs = refs_of[name]
                if i < len(refs):
                    stack[-1] = (name, i + 1)
                    ref = refs[i]
                    if ref not in state:
                        state[ref] = 1
                        stack.append((ref, 0))
                    elif state[ref] == 1:
                        on_stack = [n for n, _ in stack]
                        cycle = on_stack[on_stack.index(ref):] + [ref]
                        if frozenset(cycle) not in reported:
                            reported.add(frozenset(cycle))
                            self.problem(("roles", cycle[0]), f"role cycle: {' -> '.join(cycle)}")
                    continue
                stack.pop()
                state[name] = 2
                depth[name] = 1 + max((depth.get(r, 0) for r in refs), default=0)
                ok = all(state[r] == 2 and resolved.get(r) is not None for r in refs) and depth[name] <= MAX_ROLE_DEPTH
                own = specs[name][1].strip()
                resolved[name] = " ".join(part for part in (*(resolved[r] for r in refs), own) if part) if ok else None
        self._too_deep(refs_of, depth)
        return resolved

    def _too_deep(self, refs_of: dict[str, list[str]], depth: dict[str, int]) -> None:
        """One problem per chain deeper than MAX_ROLE_DEPTH, at the role it starts from."""
        over = {name for name, d in depth.items() if d > MAX_ROLE_DEPTH}
        inner = {r for name in over for r in refs_of[name]}
        for top in (name for name in refs_of if name in over and name not in inner):
            chain = [top]
            while refs_of[chain[-1]] and len(chain) <= depth[top]:
                chain.append(max(refs_of[chain[-1]], key=lambda r: depth.get(r, 0)))
            named = " -> ".join(chain) if len(chain) <= 6 else f"{' -> '.join(chain[:3])} -> ... -> {chain[-1]}"
            self.problem(
                ("roles", top),
                f"role chain too deep: {named} ({depth[top]} roles; at most {MAX_ROLE_DEPTH} may include one another)",
            )

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
                for i, inst in enumerate(as_list(spec.get("instances"))):
                    if not isinstance(inst, str):
                        continue
                    if inst not in known_instances:
                        self.problem(
                            base + ("instances", i),
                            f"unknown instance '{inst}' ({suggest(inst, known_instances)}instances: {', '.join(known_instances)})",
                        )
                    elif inst in instances:
                        names.append(inst)
                user_instances = tuple(names)
            else:
                user_instances = tuple(instances)
            # roles and rules
            role_names: list[str] = []
            parts: list[str] = []
            for i, role in enumerate(as_list(spec.get("roles"))):
                if not isinstance(role, str):
                    continue
                role_names.append(role)
                if role not in roles:
                    self.problem(
                        base + ("roles", i),
                        f"unknown role '{role}' ({suggest(role, known_roles)}roles: {', '.join(known_roles) or 'none defined'})",
                    )
                elif role_rules := roles[role]:
                    parts.append(role_rules)
            own = as_str(spec.get("acl")) or ""
            for msg in check_rules(own, "acl"):
                self.problem(base + ("acl",), msg)
            if own.strip():
                parts.append(own.strip())
            tokens, absent = self.tokens(name, spec.get("tokens"), base + ("tokens",), policies, hash_owner)
            self.provider_tokens(name, tokens, base + ("tokens",), user_instances, instances)
            cloud.tokens(self, name, tokens, base + ("tokens",), user_instances, instances)
            rotation_checks.user_checks(self, name, tokens, [a.source for a in absent], spec.get("tokens"), base + ("tokens",),
                                        user_instances, instances)
            certificates = self.certificates(name, spec.get("certificates"), base + ("certificates",), user_instances, instances)
            if any(instances[n].provider == "redis-software" for n in user_instances):
                self.redis_software_user(name, spec, base, roles, tokens, policies)
            ksor = spec.get("kill_sessions_on_revoke")
            out[name] = User(
                name=name,
                instances=user_instances,
                enabled=as_bool(spec.get("enabled"), True),
                roles=tuple(role_names),
                acl=own,
                rules=" ".join(parts),
                tokens=tokens,
                certificates=certificates,
                kill_sessions_on_revoke=ksor if isinstance(ksor, bool) else None,
                line=self.line(base),
                absent_tokens=absent,
            )
        return out

    def redis_software_user(
        self, name: str, spec: dict, base: Path, roles: dict[str, str | None], tokens: tuple[Token, ...], policies: Policies
    ) -> None:
        """What Redis Software would refuse (providers/redis_software/rules.py cites the pages), before any write."""
        from ..providers.redis_software import rules as software_rules

        # objects/user's name pattern (ASCII, no & < > ") is already within the schema's username pattern.
        for msg in software_rules.rules_problems(as_str(spec.get("acl")) or ""):
            self.problem(base + ("acl",), msg)
        for i, role in enumerate(as_list(spec.get("roles"))):
            if isinstance(role, str) and roles.get(role):
                for msg in software_rules.rules_problems(roles[role] or ""):
                    self.problem(base + ("roles", i), f"role {role}: {msg}")
        for i, t in enumerate(tokens):
            if t.plaintext is not None and name != "default":  # the default user's is the database's password
                problem = software_rules.password_problem(t.plaintext.reveal(), name, policies.min_token_length)
                if problem:
                    self.problem(base + ("tokens", i), f"token {t.id} of user {name}: {problem}")
        for i, c in enumerate(as_list(spec.get("certificates"))):
            parsed = parse_subject(c["subject"]) if isinstance(c, dict) and isinstance(c.get("subject"), str) else None
            if parsed:
                problem = software_rules.subject_problem(parsed)
                if problem:
                    self.problem(base + ("certificates", i, "subject"), problem)

    def sink(self, raw: Any, path: Path, label: str) -> Sink | None:
        """`sink: {file: PATH}` or `sink: {vault: {path, field, mount?}}`; None when malformed (the
        schema reported it) or its form is wrong (reported here)."""
        raw = as_dict(raw)
        if isinstance(raw.get("file"), str) and raw["file"]:
            return Sink("file", self.path_of(raw["file"]))
        spec = raw.get("vault")
        if isinstance(spec, dict) and secrets.well_formed({"vault": spec}) and "version" not in spec:
            problem = secrets.shape_problem({"vault": spec})
            if problem:
                self.problem(path, f"{label}: {problem}")
                return None
            ref = VaultRef.from_spec(spec)
            return Sink("vault", ref.path, ref.field, ref.mount)
        return None

    def tokens(
        self, user: str, raw: Any, path: Path, policies: Policies, hash_owner: dict[str, tuple[str, Path]]
    ) -> tuple[tuple[Token, ...], tuple[AbsentToken, ...]]:
        """-> (the tokens, the entries whose store has no such version yet)."""
        absent: list[AbsentToken] = []
        out: list[Token] = []
        ids: dict[str, Path] = {}
        hashes: dict[str, Path] = {}
        for i, spec in enumerate(as_list(raw)):
            if not isinstance(spec, dict):
                continue
            where = path + (i,)
            tid_raw = spec.get("id")
            tid = str(tid_raw) if isinstance(tid_raw, str) or is_int(tid_raw) else f"#{i}"
            label = f"token {tid} of user {user}"
            if tid in ids:
                self.problem(where + ("id",), f"duplicate token id '{tid}' (first at line {self.line(ids[tid])})")
            else:
                ids[tid] = where + ("id",)
            # value
            sha: str | None = None
            source = "sha256"
            plaintext: Secret | None = None
            sink: Sink | None = None
            stored: date | None = None  # when the store made the version (vault's created_time)
            if "secret" in spec and "sha256" not in spec:
                source, resolved = self.resolve_secret(
                    spec["secret"], where + ("secret",), f"{label} ({secrets.describe(spec['secret'])})", absent_ok=True
                )
                if isinstance(resolved, secrets.Absent):
                    absent.append(AbsentToken(tid, resolved.source, resolved.reason, self.line(where)))
                    continue
                if resolved is not None:
                    sha, plaintext, stored = resolved.sha256, resolved.secret, resolved.created
                    self.token_policy(resolved, where + ("secret",), label, policies)
            elif "sha256" in spec and "secret" not in spec and isinstance(spec["sha256"], str):
                if re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]):
                    sha = spec["sha256"]
            elif "sink" in spec and "secret" not in spec and "sha256" not in spec:
                sink = self.sink(spec["sink"], where + ("sink",), label)
                if sink is not None:
                    source = "server-generated"
                    sha = server_token_ref(user, tid)
            if sha is not None:
                if sha in hashes:
                    self.problem(where, f"{label} is the same token as tokens[{hashes[sha][-1]}] (line {self.line(hashes[sha])}): listed twice")
                else:
                    hashes[sha] = where
                    if clash := self.claim(hash_owner, sha, user, where):
                        self.problem(
                            where,
                            f"{label} is the same token as a token of user {clash[0]} (line {clash[1]}): a token may belong to one user only",
                        )
            rotate = rotation_checks.rotation(self, spec, where, label, sink, stored)
            created = self.date(spec.get("created"), where + ("created",)) or stored
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
                    note=as_str(spec.get("note")),
                    line=self.line(where),
                    sink=sink,
                    username=as_str(spec.get("username")) or rotation_checks.cloud_username(self, spec, where, label),
                    rotate=rotate,
                )
            )
            previous = rotation_checks.previous_file(self, spec, where, tid, user) if rotate else None
            if previous is not None:
                # The value a rotation replaced: apps that have not re-read the file yet still log in.
                psource, presolved = self.resolve_secret(previous, where + ("secret",), f"{label} ({secrets.describe(previous)})")
                if presolved is not None and presolved.sha256 not in hashes:
                    out.append(Token(id=f"{tid}{rotation_checks.PREVIOUS}", sha256=presolved.sha256, source=psource,
                                     plaintext=presolved.secret, line=self.line(where), note="the value before the last rotation"))
        for t in out:  # a rotating file's PATH.previous is the token <id>.previous: that id is taken
            taken = ids.get(f"{t.id}{rotation_checks.PREVIOUS}") if t.rotate is not None and t.rotate.store.kind == "file" else None
            if taken is not None:
                self.problem(taken, f"token id '{t.id}{rotation_checks.PREVIOUS}' of user {user} is the value before the last "
                             f"rotation of token {t.id} (its file's .previous): choose another id")
        return tuple(out), tuple(absent)

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
