"""`reconciler token new`'s work: a strong random token, written once, and the YAML entry to paste.

Everything that could make the entry unusable is checked before the token exists (a token
printed and then an error would be a token nobody recorded): the user name and id have the
file's form, with -f FILE the user is declared there and the id is new, and --out names a
file that can be created.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta

from .clock import today
from .errors import ReconcilerError, remember_secret
from .model import DesiredState, Sink
from .secrets import SecretError, sinks
from .tokengen import strong_token

MAX_LENGTH = 4096  # random bytes: 5462 characters, well inside what a secret reference reads


@dataclass(frozen=True)
class Request:
    user: str
    token_id: str  # --id
    length: int = 32  # random bytes
    out: str | None = None  # a new file for the token
    sink: str | None = None  # --sink vault:PATH#FIELD (or file:PATH, which is --out)
    file: str | None = None  # -f FILE: the user must be declared there, the id new


@dataclass(frozen=True)
class Issued:
    token: str | None = field(repr=False)  # for stdout; None when it went to a file or a store
    entry: list[str]  # the YAML entry to paste
    stored: bool = False  # the token went to a store: the entry is the whole result


def _check_form(value: str, definition: dict, what: str) -> None:
    """`value` matches the schema's pattern for it, or one line with the schema's own wording."""
    if not re.fullmatch(definition["pattern"], value):
        hint = definition.get("errorMessage") or definition.get("description", "")
        raise ReconcilerError(f"token new: {what} {value!r}: {hint}")


def _check_names(user: str, token_id: str) -> None:
    from .config.schema import schema

    defs = schema()["$defs"]
    _check_form(user, defs["username"], "user name")
    _check_form(token_id, defs["token"]["properties"]["id"], "--id")


def _load(path: str | None) -> DesiredState | None:
    if not path:
        return None
    from .config import load

    return load(path, allow_expired=True, resolve_secrets=False)


def _check_declared(desired: DesiredState, user: str, token_id: str) -> None:
    spec = desired.users.get(user)
    if spec is None:
        close = difflib.get_close_matches(user, list(desired.users), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else "; declare it under users: first"
        raise ReconcilerError(f"token new: user {user} is not declared in {desired.source}{hint}")
    if any(t.id == token_id for t in spec.tokens):
        raise ReconcilerError(f"token new: user {user} already has a token with id {token_id} in {desired.source}; choose a new id")


def _check_out(path: str) -> None:
    """The reason `path` can't be created as a new file, in words, before any token exists."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(path):
        raise ReconcilerError(f"token new: --out {path} already exists; refusing to overwrite it (choose a new file)")
    if not os.path.exists(folder):
        raise ReconcilerError(
            f"token new: --out {path}: folder {os.path.dirname(path) or folder} does not exist; "
            f"create it first (mkdir -p -m 700 {os.path.dirname(path) or folder}) or write the token elsewhere"
        )
    if not os.path.isdir(folder):
        raise ReconcilerError(f"token new: --out {path}: {os.path.dirname(path)} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ReconcilerError(f"token new: --out {path}: no permission to create files in {os.path.dirname(path) or folder}")


def _write(path: str, token: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ReconcilerError(f"token new: --out {path} already exists; refusing to overwrite it (choose a new file)") from None
    except OSError as exc:
        raise ReconcilerError(f"token new: --out {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")


def _from_file(out: str, file: str | None) -> str:
    """`out` as a `file:` reference in FILE: relative paths there start from FILE's folder, not
    from where `token new` ran (without -f FILE, the working directory is the best guess)."""
    if not file or os.path.isabs(out):
        return out
    return os.path.relpath(os.path.abspath(out), os.path.dirname(os.path.abspath(file)))


def _entry(req: Request, digest: str, max_age: int) -> list[str]:
    created = today()
    return [
        f"# token for user {req.user}; paste under users.{req.user}.tokens:",
        f"- id: {req.token_id}",
        f"  sha256: {digest}",
        f"  created: {created.isoformat()}",
        f"  expires: {(created + timedelta(days=max_age)).isoformat()}",
    ]


def _to_store(req: Request, sink: Sink, max_age: int) -> Issued:
    """`--sink vault:PATH#FIELD`: the token goes only to the store, as a new version written with
    check-and-set (the path's other fields kept); the result is the YAML entry, never the token."""
    try:
        prepared = sinks.prepare(sink)  # reads the current version and checks the write is allowed
    except SecretError as exc:
        raise ReconcilerError(f"--sink {sink.describe()}: {exc}") from None
    token = strong_token(req.length)
    remember_secret(token)  # printed nowhere; redacted should a store's error ever echo it
    try:
        where = prepared.commit(token)
    except SecretError as exc:
        raise ReconcilerError(f"--sink {sink.describe()}: {exc}") from None
    entry = _entry(req, hashlib.sha256(token.encode()).hexdigest(), max_age)
    ref = f"{{vault: {{path: {sink.path}, field: {sink.field}{'' if sink.mount == 'secret' else f', mount: {sink.mount}'}}}}}"
    entry.insert(1, f"# the token itself is in {where}; or reference it: secret: {ref}")
    return Issued(token=None, entry=entry, stored=True)


def issue(req: Request) -> Issued:
    """Check everything, then make the token and put it where `req` says: a store, a new file
    (mode 0600), or the caller (Issued.token, for stdout)."""
    if req.length < 16:
        raise ReconcilerError("--length must be at least 16 bytes")
    if req.length > MAX_LENGTH:
        # A longer token is more than a secret reference reads back (a file or store version of it
        # would stop the desired-state file from loading).
        raise ReconcilerError(f"--length must be at most {MAX_LENGTH} bytes")
    _check_names(req.user, req.token_id)
    # `--out "$UNSET"` is a mistake, not a request for stdout: the token would land in a log.
    for flag, value in (("--out", req.out), ("--sink", req.sink)):
        if value is not None and not value.strip():
            raise ReconcilerError(f"token new: {flag} is empty; name where the token goes (or leave {flag} out to print it)")
    out = req.out
    sink = None
    if req.sink:
        try:
            sink = sinks.parse(req.sink)
        except ValueError as exc:
            raise ReconcilerError(f"--sink {exc}") from None
        if out:
            raise ReconcilerError("--sink and --out both say where the token goes: give one of them")
        if sink.kind == "file":
            out, sink = sink.path, None
    # The file first: a token printed and then an error would be a token nobody recorded.
    desired = _load(req.file)
    if desired is not None:
        _check_declared(desired, req.user, req.token_id)
    if out:
        _check_out(out)
    max_age = (desired.policies.token_max_age_days if desired is not None else None) or 90
    if sink is not None:
        return _to_store(req, sink, max_age)
    token = strong_token(req.length)
    digest = hashlib.sha256(token.encode()).hexdigest()
    entry = _entry(req, digest, max_age)
    if not out:
        return Issued(token=token, entry=entry)
    _write(out, token)
    entry.insert(1, f"# the token itself is in {out} (mode 0600); or reference it: secret: {{file: {_from_file(out, req.file)}}}")
    return Issued(token=None, entry=entry)
