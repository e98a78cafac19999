"""Audit log: one JSON line per executed change, appended to a file.

A record carries what changed and how it ended, never a secret and never a full hash:
tokens appear as their id and the first 8 hex digits of their sha256, and any long hex run
in a server's error text (servers echo a refused `#<hash>` back) is cut to 8 digits.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from typing import Any

from .errors import redact
from .plan import Plan, UserChange

__all__ = ["AuditLog", "plan_fingerprint", "redact", "token_refs"]

PREFIX = 8


def plan_fingerprint(plan: Plan) -> str:
    """sha256 of the plan's JSON form: ties every audit line to the exact plan executed."""
    return hashlib.sha256(plan.dumps().encode()).hexdigest()


def token_refs(change: UserChange) -> list[dict[str, Any]]:
    """Token ids and 8-hex prefixes the change touches (declared tokens, then bare live hashes)."""
    refs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in change.tokens:
        refs.append({"id": t.token_id, "sha256": t.sha256[:PREFIX], "change": t.action})
        seen.add(t.sha256)
    for h in change.hashes:
        if h not in seen:
            refs.append({"id": None, "sha256": h[:PREFIX], "change": "set"})
    return refs


class AuditLog:
    """Appends JSON lines to PATH (created 0600); safe to share between executor threads."""

    def __init__(self, path: str, plan: Plan):
        self.path = path
        self.plan_fingerprint = plan_fingerprint(plan)
        self._lock = threading.Lock()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def record(
        self,
        *,
        instance: str,
        node: str,
        action: str,
        user: str,
        result: str,
        change: UserChange | None = None,
        detail: str = "",
    ) -> None:
        entry: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "instance": instance,
            "node": node,
            "action": action,
            "user": user,
            "tokens": token_refs(change) if change is not None and action != "delete" else [],
            "result": redact(result),
            "plan": self.plan_fingerprint,
        }
        if detail:
            entry["detail"] = redact(detail)
        # ASCII JSON: a look-alike name is escaped (`app\u00a0`), and a name that is not UTF-8
        # (surrogateescape) can be written at all.
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
