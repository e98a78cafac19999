"""What every part of the Builder shares: value accessors that skip malformed data (the schema
reported it), rule and address checks, problems and warnings with their YAML path.

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
from typing import Any, Iterator

from .. import acl, secrets
from ..secrets.base import DEFAULT_STORE_DEADLINE
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


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def as_list(v: Any) -> list:
    return v if isinstance(v, list) else []


def as_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def as_bool(v: Any, default: bool) -> bool:
    return v if isinstance(v, bool) else default


def suggest(name: str, known: list[str]) -> str:
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
    return tuple(check_rules_uncached(text, field_name))


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


def check_rules_uncached(text: str, field_name: str) -> list[str]:
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


# The managed services' password rules (Redis Software, Redis Cloud) name ASCII classes.
SERVICE_CHARACTER_CLASSES = (
    ("an upper-case letter", re.compile(r"[A-Z]")),
    ("a lower-case letter", re.compile(r"[a-z]")),
    ("a digit", re.compile(r"[0-9]")),
    ("a special character", re.compile(r"[^A-Za-z0-9]")),
)


def missing_service_classes(value: str) -> list[str]:
    """The character classes a managed service requires that `value` lacks, in the docs' order."""
    return [what for what, pattern in SERVICE_CHARACTER_CLASSES if pattern.search(value) is None]


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
class BuilderCore:
    src: Source
    base_dir: str
    today: date
    allow_expired: bool
    resolve_secrets: bool
    environ: dict[str, str] | Any = field(default_factory=lambda: os.environ)
    allow_exec: bool = False  # --allow-exec or RECONCILER_ALLOW_EXEC=1
    issues: list[Issue] = field(default_factory=list)
    session: secrets.Session | None = None
    reported_once: set[str] = field(default_factory=set)
    rotated_paths: dict[str, tuple[str, Path]] = field(default_factory=dict)  # vault path -> the rotating entry that writes it

    def problem(self, path: Path, message: str, *, line: int | None = None) -> None:
        self.issues.append(Issue(tuple(path), message, line=line))

    def warn(self, path: Path, message: str) -> None:
        self.issues.append(Issue(tuple(path), message, warning=True))

    def line(self, path: Path) -> int:
        return self.src.line_of(path)

    def claim(self, owners: dict[str, tuple[str, Path]], key: str, owner: str, where: Path) -> tuple[str, int] | None:
        """`owner` declares `key` at `where`. Returns (the other owner, its line) when another owner
        declared it already (the caller words the problem); else records the first declaration."""
        other = owners.get(key)
        if other is not None and other[0] != owner:
            return other[0], self.line(other[1])
        owners.setdefault(key, (owner, where))
        return None

    def path_of(self, p: str) -> str:
        return secrets.resolve_path(self.base_dir, p)

    def resolve_secret(self, ref: Any, path: Path, what: str, *, absent_ok: bool = False) -> tuple[str, Any]:
        """-> (source reference, Resolved | None; Absent too when `absent_ok`). Problems are
        recorded with `what` in front."""
        if not secrets.well_formed(ref):
            return "", None  # the schema reported it
        source = secrets.describe(ref)
        shape = secrets.shape_problem(ref)
        if shape:
            if "env" not in ref:  # env names: the schema's pattern reported it
                self.problem(path, f"{what}: {shape}")
            return source, None
        if not self.resolve_secrets:  # validate without --resolve-secrets: the form only
            return source, None
        try:
            resolved = self.secret_session().resolve(ref, warn=lambda m: self.warn(path, m))
        except secrets.SecretError as exc:
            # A store or a command that fails for every reference is said once, at the first.
            key = exc.once_key
            if key is None or key not in self.reported_once:
                if key is not None:
                    self.reported_once.add(key)
                self.problem(path, f"{what}: {exc}")
            return source, None
        if isinstance(resolved, secrets.Absent) and not absent_ok:
            self.problem(path, f"{what}: {resolved.reason}")
            return source, None
        return source, resolved

    def store_field(self, ref: Any, field: str, path: Path, what: str) -> str | None:
        """Another field of the store version a vault reference reads (a name stored next to a
        token): plain text, not a secret, so it does not pass through secrets.accept."""
        from ..secrets import registry

        spec = {**ref["vault"], "field": field}
        try:
            got = registry.source("vault").read(spec, self.secret_session().ctx)
        except secrets.SecretError as exc:
            self.problem(path, f"{what}: {exc}")
            return None
        if isinstance(got, secrets.Absent):
            self.problem(path, f"{what}: {got.reason}")
            return None
        return str(got.value)

    def secret_session(self) -> secrets.Session:
        if self.session is None:
            self.session = secrets.Session(
                self.base_dir, environ=self.environ, allow_exec=self.allow_exec, store_deadline=self.store_deadline()
            )
        return self.session

    def store_deadline(self) -> float:
        """Store reads get the longest timeout_seconds of the file's instances (each instance's
        deadline; the default 5 s when none sets one)."""
        timeouts = [
            float(spec["timeout_seconds"])
            for spec in as_dict(self.src.data.get("instances")).values()
            if isinstance(spec, dict) and isinstance(spec.get("timeout_seconds"), (int, float))
            and not isinstance(spec.get("timeout_seconds"), bool) and spec["timeout_seconds"] > 0
        ]
        return max(timeouts, default=DEFAULT_STORE_DEADLINE)

    def prefetch_secrets(self) -> None:
        """Read every store reference of the file before the model is built: each store path once,
        concurrently (what `resolve_secret` then asks is answered from that)."""
        if self.resolve_secrets:
            self.secret_session().prefetch(secret_refs(self.src.data))

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


def secret_refs(data: Any) -> Iterator[Any]:
    """Every secret reference in the places the schema allows one: admin, sentinel_admin and
    api.data_plane secrets (and admin.account_key) of each instance, and each token's secret of
    users and sentinel_users. Only for prefetching: a reference missed here is read on its own."""

    def tokens_of(users: Any) -> Iterator[Any]:
        for spec in as_dict(users).values():
            for token in as_list(as_dict(spec).get("tokens")):
                if isinstance(token, dict) and "secret" in token:
                    yield token["secret"]

    for inst in as_dict(as_dict(data).get("instances")).values():
        inst = as_dict(inst)
        for admin in (inst.get("admin"), inst.get("sentinel_admin"), as_dict(inst.get("api")).get("data_plane")):
            for key in ("secret", "account_key"):
                if key in as_dict(admin):
                    yield as_dict(admin)[key]
        yield from tokens_of(inst.get("sentinel_users"))
    yield from tokens_of(as_dict(data).get("users"))
