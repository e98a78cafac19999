"""The changes applies made, from the audit log (one JSON line per change per node): what each
revoked in the plan's words, which tokens it removed, whom it disabled or deleted.

Only completed changes count (`result: ok`). The lines of one apply (one plan fingerprint) for
one user are one change, at the time of its first node. Lines that are not JSON records (a
line cut short by a crash, a hand edit, a list field that is not a list) are skipped and
counted, never fatal: the report says how many.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from ..errors import ReconcilerError


@dataclass(frozen=True)
class Change:
    time: float  # epoch seconds
    instance: str
    user: str
    action: str  # create | update | delete
    permissions: tuple[str, ...] = ()  # the plan's words, sign first: "- revokes KEYS"
    revoked_commands: tuple[str, ...] = ()  # every command a "revokes" line took away ("keys", "client|kill")
    removed: tuple[tuple[str | None, str], ...] = ()  # (token id, sha256 prefix) of tokens removed
    disabled: bool = False  # enabled: true -> false
    plan: str = ""  # plan fingerprint


@dataclass(frozen=True)
class History:
    changes: tuple[Change, ...]  # by time
    token_ids: dict[tuple[str, str, str], str]  # (instance, user, sha256 prefix) -> the id the file gave it
    skipped: int = 0  # lines that are not JSON records, or change records of the wrong shape or time
    source: str = ""

    @cached_property
    def _by_user(self) -> dict[tuple[str, str], tuple[Change, ...]]:
        out: dict[tuple[str, str], list[Change]] = {}
        for c in self.changes:
            out.setdefault((c.instance, c.user), []).append(c)
        return {k: tuple(v) for k, v in out.items()}

    def of(self, instance: str, user: str) -> tuple[Change, ...]:
        """The changes to one user on one instance, by time (a fleet's audit log holds hundreds of
        thousands of changes, and a report thousands of rows: each row looks at its user's only)."""
        return self._by_user.get((instance, user), ())

    def token_label(self, instance: str, user: str, token_id: str | None, prefix: str) -> str:
        """`2026-08 (sha256:5e884898…)`; a token removed because the file dropped it has no id in
        its own record, but the record that added it named it."""
        name = token_id or self.token_ids.get((instance, user, prefix))
        return f"{name} (sha256:{prefix}…)" if name else f"sha256:{prefix}…"


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _list(rec: dict[str, Any], key: str) -> list[Any]:
    """A list field of a record; anything else (a hand edit, another tool's line) makes the
    record one that is skipped and counted."""
    value = rec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return value


def parse(lines: Iterable[str], source: str = "") -> History:
    """Pure: audit lines -> the changes they record."""
    merged: dict[tuple[str, str, str, str], Change] = {}
    ids: dict[tuple[str, str, str], str] = {}
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(rec, dict):
            skipped += 1
            continue
        if rec.get("result") != "ok":
            continue
        when = _epoch(rec.get("time"))
        instance, user, action = str(rec.get("instance", "")), str(rec.get("user", "")), str(rec.get("action", ""))
        if not instance or action not in ("create", "update", "delete"):
            continue  # another kind of record (persist, lock...): not a change to a user
        if when is None:  # a change whose time cannot be read cannot be tied: said, not dropped
            skipped += 1
            continue
        try:
            tokens = [t for t in _list(rec, "tokens") if isinstance(t, dict)]
            permissions, revoked = _list(rec, "permissions"), _list(rec, "revoked_commands")
        except ValueError:
            skipped += 1
            continue
        for t in tokens:
            if t.get("id") and t.get("sha256"):
                ids[(instance, user, str(t["sha256"]))] = str(t["id"])
        removed = tuple((str(t["id"]) if t.get("id") else None, str(t.get("sha256", ""))) for t in tokens if t.get("change") == "remove")
        change = Change(
            time=when,
            instance=instance,
            user=user,
            action=action,
            permissions=tuple(str(p) for p in permissions),
            revoked_commands=tuple(str(c) for c in revoked),
            removed=removed,
            disabled=rec.get("enabled") is False,
            plan=str(rec.get("plan", "")),
        )
        key = (instance, user, change.plan, action)
        seen = merged.get(key)
        if seen is None:
            merged[key] = change
        else:  # the same change on another node: one change, at its first node's time
            merged[key] = Change(
                time=min(seen.time, change.time),
                instance=instance,
                user=user,
                action=action,
                permissions=tuple(dict.fromkeys(seen.permissions + change.permissions)),
                revoked_commands=tuple(dict.fromkeys(seen.revoked_commands + change.revoked_commands)),
                removed=tuple(dict.fromkeys(seen.removed + change.removed)),
                disabled=seen.disabled or change.disabled,
                plan=change.plan,
            )
    return History(changes=tuple(sorted(merged.values(), key=lambda c: c.time)), token_ids=ids, skipped=skipped, source=source)


def load(path: str) -> History | None:
    """The audit log at `path`, or None when there is none yet (no apply wrote one)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse(fh, source=path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReconcilerError(f"audit log {path}: cannot read: {exc.strerror or exc}") from None
