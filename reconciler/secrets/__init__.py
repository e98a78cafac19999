"""Secret references -> Secret + sha256, at load time: `{env: NAME}`, `{file: PATH}`,
`{vault: {path, field, mount?, version?}}`, `{exec: [argv...]}`.

The plaintext stays inside `Secret` (whose str/repr hide it); everything else carries only
the reference ("env:NAME", "vault:secret/apps/orders#token") and the sha256. Messages never
include plaintext. One module per source (registry.py); a `Session` is one run's resolver:
it reads store paths once (prefetch, concurrently), runs each command once, and passes every
value, whatever its source, through `accept` -- the one place plaintext enters the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Mapping

from ..model import Secret
from . import registry
from .base import DEFAULT_STORE_DEADLINE, MAX_SECRET_BYTES, Absent, Context, Fetched, SecretError, check_one_line
from .env import read_env
from .file import read_file, resolve_path

__all__ = [
    "MAX_SECRET_BYTES",
    "Absent",
    "Resolved",
    "SecretError",
    "Session",
    "accept",
    "check_one_line",
    "describe",
    "read_env",
    "read_file",
    "resolve",
    "resolve_path",
    "sha256_hex",
    "shape_problem",
    "well_formed",
]


@dataclass(frozen=True)
class Resolved:
    source: str  # "env:NAME" | "file:PATH" | "vault:MOUNT/PATH#FIELD[@-N]" | "exec:ARGV0"
    sha256: str
    secret: Secret = field(repr=False, compare=False)
    created: date | None = None  # when the store made this version (vault), else None


def sha256_hex(plaintext: str) -> str:
    """What Redis/Valkey store for a password and accept as `#<sha256>`."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def describe(ref: Any) -> str:
    return registry.describe(ref)


def well_formed(ref: Any) -> bool:
    """`ref` is `{KEY: spec}` of a known source with the schema's shape (else the schema said so)."""
    key = registry.kind_of(ref)
    return key is not None and bool(registry.source(key).well_formed(ref[key]))


def shape_problem(ref: Mapping[str, Any]) -> str | None:
    """What is wrong with a well-formed reference's form, without reading it (validate in CI,
    where the secrets are not set and no store is reachable)."""
    key = registry.kind_of(ref)
    if key is None:
        return "a secret reference is {env: NAME}, {file: PATH}, {vault: {path, field}} or {exec: [argv...]}"
    problem: str | None = registry.source(key).shape(ref[key])
    return problem


def accept(source: str, fetched: Fetched) -> Resolved:
    """The one place every source's plaintext passes through before it is hashed: the checks on a
    value, whatever its source, belong here."""
    value = fetched.value
    if value == "":
        raise SecretError(f"{source} is empty")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_SECRET_BYTES:  # files and commands stop reading there; a store's value or a variable is checked here
        raise SecretError(f"{fetched.shown or 'the value'} is {size} bytes, too large for a secret (at most {MAX_SECRET_BYTES})")
    check_one_line(value, fetched.shown or source)
    return Resolved(source, sha256_hex(value), Secret(value), fetched.created)


class Session:
    """One run's resolver: every reference of a file goes through `resolve`."""

    def __init__(
        self,
        base_dir: str = "",
        *,
        environ: Mapping[str, str] | None = None,
        allow_exec: bool = False,
        store_deadline: float = DEFAULT_STORE_DEADLINE,
    ):
        import os

        self.ctx = Context(
            base_dir=base_dir,
            environ=os.environ if environ is None else environ,
            allow_exec=allow_exec,
            store_deadline=store_deadline,
        )

    def prefetch(self, refs: Iterable[Any]) -> None:
        """Read what many references name at once (store paths concurrently, one request per
        path); `resolve` then answers from what was read. Errors wait for `resolve`."""
        by_key: dict[str, list[Any]] = {}
        for ref in refs:
            key = registry.kind_of(ref)
            if key is not None:
                by_key.setdefault(key, []).append(ref[key])
        for key, specs in by_key.items():
            module = registry.source(key)
            if hasattr(module, "prefetch"):
                module.prefetch(specs, self.ctx)

    def resolve(self, ref: Mapping[str, Any], warn: Callable[[str], None] | None = None) -> Resolved | Absent:
        """Resolve one reference. Raises SecretError (never with a value in its message)."""
        key = registry.kind_of(ref)
        if key is None or not well_formed(ref):
            raise SecretError("a secret reference is {env: NAME}, {file: PATH}, {vault: {path, field}} or {exec: [argv...]}")
        module = registry.source(key)
        self.ctx.warn = warn
        try:
            got = module.read(ref[key], self.ctx)
        finally:
            self.ctx.warn = None
        if isinstance(got, Absent):
            return got
        return accept(registry.describe(ref), got)


def resolve(
    ref: Mapping[str, Any],
    base_dir: str,
    *,
    warn: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
    allow_exec: bool = False,
) -> Resolved:
    """Resolve one reference on its own (no Absent: a store version that does not exist is an error)."""
    got = Session(base_dir, environ=environ, allow_exec=allow_exec).resolve(ref, warn)
    if isinstance(got, Absent):
        raise SecretError(got.reason)
    return got
