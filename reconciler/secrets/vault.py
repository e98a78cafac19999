"""`secret: {vault: {path, field, mount?, version?}}`: a field of a HashiCorp Vault / OpenBao KV
version 2 secret. `mount` defaults to `secret`; `version` is 0 (the latest, the default) or a
negative offset from it (-1: the version before the latest).

Each distinct path is read once per run, whatever number of fields and tokens use it: one
request for the latest version, one more per older version asked for. Paths are read
concurrently (at most MAX_PARALLEL requests at a time) within the run's store deadline.

`version: -1` on a path that has a single version is Absent (nothing to read yet: the first
rotation starts there), not an error; a deleted or destroyed version is an error naming the
path and the version.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import kv
from .base import Absent, Context, Fetched, SecretError, has_control

KEY = "vault"
MAX_PARALLEL = 8
_SEGMENT = re.compile(r"[^/]+")


@dataclass(frozen=True)
class VaultRef:
    path: str
    field: str
    mount: str = kv.DEFAULT_MOUNT
    version: int = 0  # 0 latest, -1 the one before, ...

    @classmethod
    def from_spec(cls, spec: dict) -> "VaultRef":
        return cls(
            path=spec["path"].strip("/"),
            field=spec["field"],
            mount=(spec.get("mount") or kv.DEFAULT_MOUNT).strip("/"),
            version=int(spec.get("version") or 0),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.mount, self.path)

    def describe(self) -> str:
        at = f"@{self.version}" if self.version else ""
        return f"vault:{self.mount}/{self.path}#{self.field}{at}"


def well_formed(spec: Any) -> bool:
    """The schema's shape (vaultRef); anything else the schema reports."""
    if not isinstance(spec, dict) or not set(spec) <= {"path", "field", "mount", "version"}:
        return False
    version = spec.get("version", 0)
    return (
        isinstance(spec.get("path"), str)
        and isinstance(spec.get("field"), str)
        and isinstance(spec.get("mount", ""), str)
        and isinstance(version, int)
        and not isinstance(version, bool)
        and version <= 0
    )


def describe(spec: Any) -> str:
    return VaultRef.from_spec(spec).describe() if well_formed(spec) else "vault:?"


def shape(spec: dict) -> str | None:
    for name in ("mount", "path"):
        value = spec.get(name)
        if value is None:
            continue
        if not value.strip("/"):
            return f"vault {name} is empty"
        if has_control(value):
            return f"vault {name} has a control character"
        if any(part in (".", "..") for part in value.strip("/").split("/")) or "//" in value:
            return f"vault {name} '{value}' has an empty, '.' or '..' segment"
    if not spec["field"]:
        return "vault field is empty"
    if has_control(spec["field"]):
        return "vault field has a control character"
    return None


@dataclass
class _Cache:
    """The run's store and what it answered, per (mount, path) and version offset."""

    store: kv.KvStore | None = None
    error: kv.StoreError | None = None  # the store can't be used (not configured, refused)
    answers: dict[tuple[str, str], dict[int, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _cache(ctx: Context) -> _Cache:
    cache: _Cache = ctx.cache(KEY, _Cache)
    if cache.store is None and cache.error is None:
        try:
            cache.store = kv.KvStore.from_environ(ctx.environ, timeout=ctx.store_deadline)
        except kv.StoreError as exc:
            cache.error = exc
    return cache


def requests_made(ctx: Context) -> int:
    """How many requests this run sent to the store (for benchmarks and tests)."""
    cache = ctx.caches.get(KEY)
    return cache.store.requests if cache is not None and cache.store is not None else 0


def prefetch(specs: Iterable[Any], ctx: Context) -> None:
    """Read every path the specs name, concurrently, before the file's references are resolved."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for spec in specs:
        if well_formed(spec) and shape(spec) is None:
            ref = VaultRef.from_spec(spec)
            wanted.setdefault(ref.key, set()).add(ref.version)
    if not wanted:
        return
    cache = _cache(ctx)
    if cache.store is None:
        return
    store = cache.store
    store.deadline = time.monotonic() + ctx.store_deadline
    todo = {key: offsets for key, offsets in wanted.items() if key not in cache.answers}
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(todo) or 1), thread_name_prefix="vault")
    try:
        futures = {pool.submit(_read_path, store, key, offsets): key for key, offsets in todo.items()}
        # Workers stop by themselves at the deadline (each request's timeout is what is left of it).
        wait(futures, timeout=max(0.0, store.deadline - time.monotonic()) + 1.0)
        for future, key in futures.items():
            if future.done():
                answers = future.result()
            else:
                late = kv.Unavailable(f"vault at {store.conn.shown} did not answer within {ctx.store_deadline:.0f} s")
                answers = {k: late for k in todo[key]}
            with cache.lock:
                cache.answers[key] = answers
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _read_path(store: kv.KvStore, key: tuple[str, str], offsets: set[int]) -> dict[int, Any]:
    """{offset: SecretVersion | Absent | StoreError}: the latest version, then each older one asked for."""
    mount, path = key
    shown = store.where(mount, path)
    answers: dict[int, Any] = {}
    try:
        latest = store.read(mount, path)
        current = latest.version
        answers[0] = latest
    except kv.VersionGone as exc:  # the latest version itself was deleted: older ones may still be read
        current = exc.info.version
        answers[0] = exc
    except kv.StoreError as exc:
        return {k: exc for k in offsets | {0}}
    for k in sorted(offsets - {0}, reverse=True):
        target = current + k
        if target < 1:
            versions = "one version" if current == 1 else f"{current} versions"
            answers[k] = Absent(shown, f"{shown} has {versions}: no version {k} yet")
            continue
        try:
            answers[k] = store.read(mount, path, target)
        except kv.VersionGone as exc:
            answers[k] = kv.StoreError(kv.gone_message(mount, path, exc.info, store.conn.namespace, f" (version: {k})"))
        except kv.NotFound:
            answers[k] = kv.StoreError(f"version {target} (version: {k}) of {shown} no longer exists (the path keeps max_versions versions)")
        except kv.StoreError as exc:
            answers[k] = exc
    return answers


def read(spec: dict, ctx: Context) -> Fetched | Absent:
    ref = VaultRef.from_spec(spec)
    cache = _cache(ctx)
    if cache.error is not None:
        raise cache.error
    assert cache.store is not None
    with cache.lock:
        answers = cache.answers.get(ref.key)
    if answers is None or ref.version not in answers:
        # Not prefetched (a reference outside the places the loader collects): read it now.
        cache.store.deadline = time.monotonic() + ctx.store_deadline
        fresh = _read_path(cache.store, ref.key, {ref.version} | set(answers or {}))
        with cache.lock:
            answers = cache.answers[ref.key] = {**(answers or {}), **fresh}
    answer = answers[ref.version]
    if isinstance(answer, Absent):
        return Absent(ref.describe(), answer.reason)
    if isinstance(answer, SecretError):
        answer.once = answer.once or True  # its message names the path and version: said once per file
        raise answer
    return _field(ref, answer, cache.store.where(ref.mount, ref.path))


def _field(ref: VaultRef, version: kv.SecretVersion, shown: str) -> Fetched | Absent:
    value = version.data.get(ref.field)
    if ref.field not in version.data:
        if ref.version < 0:  # the field is newer than that version: nothing to read there yet
            return Absent(ref.describe(), f"version {version.version} of {shown} has no field {ref.field}")
        names = ", ".join(sorted(str(k) for k in version.data)[:10]) or "none"
        raise SecretError(f"version {version.version} of {shown} has no field '{ref.field}' (its fields: {names})")
    if not isinstance(value, str):
        kind = "null" if value is None else "a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float)) else "an object or a list"
        raise SecretError(f"field '{ref.field}' of version {version.version} of {shown} is {kind}, not a string")
    created = version.info.created.date() if version.info.created else None
    return Fetched(value, created=created)
