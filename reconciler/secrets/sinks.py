"""Sinks: where a token that a tool or a service makes is written -- a file (mode 0600), or a new
version of a KV v2 path (check-and-set: two writers can't overwrite each other; the path's other
fields kept).

Two steps, so that a sink which can't take the value fails before the token exists anywhere:
`prepare` opens a new file beside the file (renamed over it by `commit`), or reads the path's
current version and checks that VAULT_TOKEN may write it; `commit(value)` writes; `abort()`
undoes what `prepare` did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from ..model import Sink
from . import kv
from .base import SecretError
from .file import Replacement


class Prepared(Protocol):
    def commit(self, value: str) -> str:
        """Write the value; returns where it went, for messages ("vault secret/apps/orders version 4")."""
        ...

    def abort(self) -> None: ...


class FileSink:
    """The value replaces the file by an atomic rename: a file that holds the token apps read now
    keeps it until the new one is written, and keeps it when the new one never comes."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.replacement: Replacement | None = Replacement(path)
        except OSError as exc:
            raise SecretError(f"file {path}: {exc.strerror}") from None

    def commit(self, value: str) -> str:
        assert self.replacement is not None
        try:
            self.replacement.commit(value)
        except OSError as exc:
            raise SecretError(f"file {self.path}: {exc.strerror}") from None
        self.replacement = None
        return self.path

    def abort(self) -> None:
        if self.replacement is not None:
            self.replacement.abort()
            self.replacement = None


class VaultSink:
    def __init__(self, sink: Sink, store: kv.KvStore):
        self.sink = sink
        self.store = store
        shown = store.where(sink.mount, sink.path)
        self.write = store.prepare_field(sink.mount, sink.path)
        if not store.may_write(sink.mount, sink.path, exists=self.write.cas > 0):
            raise kv.PermissionDenied(f"vault: permission denied: VAULT_TOKEN may not write {shown} (check its policies)")

    def commit(self, value: str) -> str:
        version = self.write.commit(self.sink.field, value)
        return f"vault {self.store.where(self.sink.mount, self.sink.path)} version {version} (field {self.sink.field})"

    def abort(self) -> None:
        return None  # nothing was written before commit


def prepare(sink: Sink, environ: Mapping[str, str] | None = None, *, timeout: float = kv.DEFAULT_TIMEOUT) -> Prepared:
    """Ready `sink` for one value. Raises SecretError (kv.StoreError for a store)."""
    if sink.kind == "file":
        return FileSink(sink.path)
    store = kv.KvStore.from_environ(os.environ if environ is None else environ, timeout=timeout)
    return VaultSink(sink, store)


def parse(text: str) -> Sink:
    """A sink on the command line: `vault:PATH#FIELD` (mount `secret`), `vault:MOUNT:PATH#FIELD`,
    or `file:PATH`. Raises ValueError with the expected form."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "file" and rest:
        return Sink("file", rest)
    if sep and kind == "vault":
        where, hash_, field = rest.rpartition("#")[0], "#" in rest, rest.rpartition("#")[2]
        mount, colon, path = where.partition(":")
        if not colon:
            mount, path = kv.DEFAULT_MOUNT, where
        path, mount = path.strip("/"), mount.strip("/")
        if hash_ and field and path and mount and not any(p in ("", ".", "..") for p in path.split("/")):
            return Sink("vault", path, field, mount)
    raise ValueError(f"{text!r}: expected vault:PATH#FIELD (mount secret), vault:MOUNT:PATH#FIELD or file:PATH")
