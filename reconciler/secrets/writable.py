"""Where `rotate` reads a rotating token's versions and writes its next value: one interface over
a KV v2 path (kv.py) and a file.

    latest()        the latest version: its number, when it was made, the sha256 of the token
                    field (the value itself is hashed at once and dropped), and the plain fields
                    stored next to it (a Redis Cloud username)
    versions()      sha256 -> which version holds it (and its value, in memory only), for every
                    version still readable: a hash on the servers that no version holds is what
                    a rotation left behind; an older version's value lets a service that
                    deletes passwords by value (Redis Software) remove it
    check_writable  before a token exists: may this process write here?
    write(value, expect, extra)
                    the next version, only while the latest is still `expect` (check-and-set);
                    CasConflict otherwise, nothing written

A file keeps one value; its history is PATH.previous, where a rotation moves the old value
(written first, then PATH, each by an atomic rename, under an flock on PATH.lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from ..model import PREVIOUS, Secret, Sink
from . import kv
from .base import SecretError

MAX_VERSIONS_READ = 10  # orphan detection: the newest versions a hash may belong to


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Latest:
    version: int | None  # vault: the path's current version; a file: None (no numbers)
    created: datetime | None
    sha256: str | None  # of the token field; None when the version has no such field
    fields: Mapping[str, str] = field(default_factory=dict)  # plain fields asked for (never the token)

    def name(self) -> str:
        return f"version {self.version}" if self.version is not None else "the current value"


@dataclass(frozen=True)
class Held:
    """A value some version holds: which one, and the value (in memory only)."""

    name: str  # "version 3", "PATH.previous"
    value: Secret = field(repr=False)


class Store(Protocol):
    sink: Sink

    def where(self) -> str: ...

    def latest(self, plain: tuple[str, ...] = ()) -> Latest | None: ...

    def versions(self) -> dict[str, Held]: ...

    def check_writable(self) -> None: ...

    def write(self, value: str, expect: Latest | None, extra: Mapping[str, str]) -> Latest: ...


class VaultStore:
    def __init__(self, sink: Sink, store: kv.KvStore):
        self.sink = sink
        self.kv = store

    def where(self) -> str:
        return self.kv.where(self.sink.mount, self.sink.path)

    def latest(self, plain: tuple[str, ...] = ()) -> Latest | None:
        meta = self.kv.metadata(self.sink.mount, self.sink.path)
        if meta is None or not meta.current_version:
            return None
        info = meta.latest
        try:
            got = self.kv.read(self.sink.mount, self.sink.path, meta.current_version)
        except kv.VersionGone:
            return Latest(meta.current_version, info.created if info else None, None)
        value = got.data.get(self.sink.field)
        fields = {k: str(got.data[k]) for k in plain if isinstance(got.data.get(k), str)}
        return Latest(got.version, got.info.created, _sha(value) if isinstance(value, str) else None, fields)

    def versions(self) -> dict[str, Held]:
        meta = self.kv.metadata(self.sink.mount, self.sink.path)
        if meta is None:
            return {}
        out: dict[str, Held] = {}
        readable = [n for n, info in sorted(meta.versions.items(), reverse=True) if info.readable][:MAX_VERSIONS_READ]
        for n in readable:
            try:
                value = self.kv.read(self.sink.mount, self.sink.path, n).data.get(self.sink.field)
            except (kv.NotFound, kv.VersionGone):
                continue
            if isinstance(value, str):
                out.setdefault(_sha(value), Held(f"version {n}", Secret(value)))
        return out

    def check_writable(self) -> None:
        meta = self.kv.metadata(self.sink.mount, self.sink.path)
        if meta is not None and meta.max_versions == 1:
            # The new version would push out the one apps hold now, which `version: -1` reads.
            raise SecretError(
                f"vault: {self.where()} keeps one version (max_versions 1): a rotation needs the version before the "
                f"latest to stay readable; keep two or more (vault kv metadata put -mount={self.sink.mount} "
                f"-max-versions=10 {self.sink.path})"
            )
        exists = meta is not None and meta.current_version > 0
        if not self.kv.may_write(self.sink.mount, self.sink.path, exists=exists):
            need = "update" if exists else "create"
            raise kv.PermissionDenied(f"vault: permission denied: VAULT_TOKEN may not write {self.where()} "
                                      f"(its policies need {need} on {self.sink.mount}/data/{self.sink.path})")

    def write(self, value: str, expect: Latest | None, extra: Mapping[str, str]) -> Latest:
        prepared = self.kv.prepare_field(self.sink.mount, self.sink.path)
        wanted = expect.version if expect is not None and expect.version is not None else 0
        if prepared.cas != wanted:
            raise kv.CasConflict(
                f"vault: {self.where()} is at version {prepared.cas}, not {wanted} as read; another writer was first, nothing was written"
            )
        version = prepared.commit(self.sink.field, value, **extra)
        return Latest(version, datetime.now(timezone.utc), _sha(value), dict(extra))


class FileStore:
    def __init__(self, sink: Sink):
        self.sink = sink

    def where(self) -> str:
        return self.sink.path

    def _read(self, path: str) -> str | None:
        from .file import read_file

        if not os.path.exists(path):
            return None
        return read_file(path, path)

    def latest(self, plain: tuple[str, ...] = ()) -> Latest | None:
        value = self._read(self.sink.path)
        if value is None:
            return None
        created = datetime.fromtimestamp(os.stat(self.sink.path).st_mtime, timezone.utc)
        return Latest(None, created, _sha(value))

    def versions(self) -> dict[str, Held]:
        out: dict[str, Held] = {}
        for path, name in ((self.sink.path, "the file"), (self.sink.path + PREVIOUS, f"{self.sink.path}{PREVIOUS}")):
            value = self._read(path)
            if value is not None:
                out.setdefault(_sha(value), Held(name, Secret(value)))
        return out

    def check_writable(self) -> None:
        path = self.sink.path
        # PATH.previous and the lock go beside PATH; the new value beside the file a symlinked PATH names.
        for folder in dict.fromkeys((os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.realpath(path)))):
            if not os.access(folder, os.W_OK):
                raise SecretError(f"secret file {path}: folder {folder} is not writable (a rotation writes PATH and PATH{PREVIOUS} there)")
        try:
            os.close(self._lock())
        except OSError as exc:
            raise SecretError(f"secret file {path}: the lock {path}.lock can't be opened ({exc.strerror})") from None

    def write(self, value: str, expect: Latest | None, extra: Mapping[str, str]) -> Latest:
        from .file import replace

        try:
            lock = self._lock()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                old = self._read(self.sink.path)
                if (_sha(old) if old is not None else None) != (expect.sha256 if expect is not None else None):
                    raise kv.CasConflict(f"secret file {self.sink.path} changed since it was read; another writer was first, nothing was written")
                if old is not None:
                    replace(self.sink.path + PREVIOUS, old, follow=False)
                replace(self.sink.path, value)
            finally:
                os.close(lock)  # releases the flock
        except OSError as exc:
            raise SecretError(f"secret file {self.sink.path}: {exc.strerror} ({exc.filename})") from None
        return Latest(None, datetime.now(timezone.utc), _sha(value))

    def _lock(self) -> int:
        return os.open(self.sink.path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def open_store(sink: Sink, environ: Mapping[str, str] | None = None, *, timeout: float = kv.DEFAULT_TIMEOUT) -> Store:
    """The store behind a rotating entry (its vault path or file, or its sink)."""
    if sink.kind == "file":
        return FileStore(sink)
    return VaultStore(sink, kv.KvStore.from_environ(os.environ if environ is None else environ, timeout=timeout))
