"""Audit log: JSON lines appended to a file, for every change an apply sends.

Before a batch of commands goes to a node, one `attempt` line per command in it is written and
synced to disk; after the replies, one line per command says how it ended (`ok`, `failed: ...`,
`in-doubt`). A command never sent gets one `not-applied` line. So a run killed at any moment
(SIGKILL mid-batch) never leaves a change on a server that the log does not name: at worst the
log names an attempt whose result it lacks.

A record carries what changed and how it ended, never a secret and never a full hash:
tokens appear as their id and the first 8 hex digits of their sha256, and any long hex run
in a server's error text (servers echo a refused `#<hash>` back) is cut to 8 digits.

A create or update also names what it granted and revoked in the plan's own words
(`permissions: ["- revokes KEYS", "+ keys orders:archive:*"]`), every command it revoked
(`revoked_commands`, where the words summarise: "and 73 more") and an enable or disable as
`enabled`, so `reconciler denials` can tell which change a refusal follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .errors import ReconcilerError, redact, redact_secrets
from .plan import Plan, UserChange

__all__ = ["ATTEMPT", "AuditLog", "AuditWriteError", "change_words", "plan_fingerprint", "redact", "token_refs"]

PREFIX = 8
ATTEMPT = "attempt"  # the result of a line written before the command was sent


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


def change_words(change: UserChange) -> dict[str, Any]:
    """What a create or update grants and revokes, as the plan shows it (sign and text), and an
    enable or disable; empty for a change of tokens only."""
    out: dict[str, Any] = {}
    if change.permissions:
        # Rules hold no password: only secrets by value are cut, so a hex-like key pattern stays whole.
        out["permissions"] = [redact_secrets(f"{p.sign} {p.text}") for p in change.permissions]
        revoked = [name for p in change.permissions for name in p.commands]
        if revoked:
            out["revoked_commands"] = revoked  # every one, where the words say "and N more"
    if change.enabled_before is not None:
        out["enabled"] = change.enabled
    return out


class AuditWriteError(ReconcilerError):
    """A line could not be written (a full disk, a file-size limit, a failing device): the
    executor stops the node, since it may not send what the log cannot name."""


class AuditLog:
    """Appends JSON lines to PATH (created 0600); safe to share between executor threads."""

    def __init__(self, path: str, plan: Plan, *, fields: dict[str, Any] | None = None):
        self.path = path
        self.plan_fingerprint = plan_fingerprint(plan)
        self.fields = dict(fields or {})  # on every line (a rotation's id ties its steps together)
        self._lock = threading.Lock()
        self.broken = ""  # why a write failed; every later write fails the same way
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
        line = self._line(instance=instance, node=node, action=action, user=user, result=result, change=change, detail=detail)
        self._write(line + "\n", sync=False)

    def attempt(self, *, instance: str, node: str, steps: Sequence[tuple[str, str, UserChange | None]]) -> None:
        """Before a batch is sent: an `attempt` line per (action, user, change), written together
        and synced to disk before the caller sends anything."""
        lines = "".join(
            self._line(instance=instance, node=node, action=action, user=user, result=ATTEMPT, change=change) + "\n"
            for action, user, change in steps
        )
        self._write(lines, sync=True)

    def _write(self, text: str, *, sync: bool) -> None:
        with self._lock:
            if self.broken:
                raise AuditWriteError(self.broken)
            try:
                self._file.write(text)
                self._file.flush()
                if sync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                self.broken = f"audit log {self.path}: cannot write: {exc.strerror or exc}"
                raise AuditWriteError(self.broken) from None

    def _line(
        self, *, instance: str, node: str, action: str, user: str, result: str, change: UserChange | None, detail: str = ""
    ) -> str:
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
        if change is not None and action in ("create", "update"):
            entry.update(change_words(change))
        if detail:
            entry["detail"] = redact(detail)
        entry.update(self.fields)
        # ASCII JSON: a look-alike name is escaped (`app\u00a0`), and a name that is not UTF-8
        # (surrogateescape) can be written at all.
        return json.dumps(entry, sort_keys=True)

    def event(self, action: str, **fields: Any) -> None:
        """A line that is no change of one node (a rotation's summary): `fields` as given, which
        must hold no secret (hash prefixes only)."""
        entry: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "action": action,
            **{k: redact(v) if isinstance(v, str) else v for k, v in fields.items()},
            "plan": self.plan_fingerprint,
            **self.fields,
        }
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            try:
                self._file.close()
            except OSError:
                if not self.broken:  # a failed write already said why; the rest of its buffer is lost
                    raise

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
