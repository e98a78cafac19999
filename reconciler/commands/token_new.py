"""`reconciler token new`: a strong random token, written once, and the YAML entry to paste."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import string
import sys
from datetime import timedelta

from ..errors import ReconcilerError, remember_secret
from ..manager import today
from ..model import Sink
from ..secrets import SecretError, sinks

SPECIAL = set("-_")


def strong_token(nbytes: int) -> str:
    """URL-safe random token that also has upper, lower, digit and special (complexity by construction)."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        chars = set(token)
        if (
            chars & set(string.ascii_uppercase)
            and chars & set(string.ascii_lowercase)
            and chars & set(string.digits)
            and chars & SPECIAL
        ):
            return token


def _max_age_days(path: str | None) -> int | None:
    if not path:
        return None
    from ..config import load

    return load(path, allow_expired=True, resolve_secrets=False).policies.token_max_age_days


def _entry(args: argparse.Namespace, digest: str, max_age: int) -> list[str]:
    created = today()
    return [
        f"# token for user {args.user}; paste under users.{args.user}.tokens:",
        f"- id: {args.token_id}",
        f"  sha256: {digest}",
        f"  created: {created.isoformat()}",
        f"  expires: {(created + timedelta(days=max_age)).isoformat()}",
    ]


def _to_store(args: argparse.Namespace, sink: Sink, max_age: int) -> int:
    """`--sink vault:PATH#FIELD`: the token goes only to the store, as a new version written with
    check-and-set (the path's other fields kept); stdout gets the YAML entry, never the token."""
    try:
        prepared = sinks.prepare(sink)  # reads the current version and checks the write is allowed
    except SecretError as exc:
        raise ReconcilerError(f"--sink {sink.describe()}: {exc}") from None
    token = strong_token(args.length)
    remember_secret(token)  # printed nowhere; redacted should a store's error ever echo it
    try:
        where = prepared.commit(token)
    except SecretError as exc:
        raise ReconcilerError(f"--sink {sink.describe()}: {exc}") from None
    entry = _entry(args, hashlib.sha256(token.encode()).hexdigest(), max_age)
    ref = f"{{vault: {{path: {sink.path}, field: {sink.field}{'' if sink.mount == 'secret' else f', mount: {sink.mount}'}}}}}"
    entry.insert(1, f"# the token itself is in {where}; or reference it: secret: {ref}")
    print("\n".join(entry))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.length < 16:
        raise ReconcilerError("--length must be at least 16 bytes")
    sink = None
    if getattr(args, "sink", None):
        try:
            sink = sinks.parse(args.sink)
        except ValueError as exc:
            raise ReconcilerError(f"--sink {exc}") from None
        if args.out:
            raise ReconcilerError("--sink and --out both say where the token goes: give one of them")
        if sink.kind == "file":
            args.out, sink = sink.path, None
    # The file first: a token printed and then an error would be a token nobody recorded.
    max_age = _max_age_days(args.file) or 90
    if sink is not None:
        return _to_store(args, sink, max_age)
    token = strong_token(args.length)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if args.out:
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ReconcilerError(f"{args.out}: {exc.strerror} (refusing to overwrite or write there)") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
    else:
        sys.stdout.write(token + "\n")
    entry = _entry(args, digest, max_age)
    if args.out:
        entry.insert(1, f"# the token itself is in {args.out} (mode 0600); or reference it: secret: {{file: {args.out}}}")
    print("\n".join(entry), file=sys.stderr)
    return 0
