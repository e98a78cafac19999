"""What `reconciler rotate` tells the operator and the audit log: a rotation's plans shown
before the one confirmation, what an earlier run left, the summary (and the exit code it
means), and the rotation's own audit line. The run itself is rotator.py's.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from . import rotation
from .audit import AuditLog
from .errors import ReconcilerError
from .pipeline import Console
from .plan import Plan
from .rotation import Entry, Strategy
from .secrets import writable

ACTIVE = ("rotated", "would-rotate", "finished", "would-finish", "failed", "refused")


@dataclass
class Outcome:
    entry: Entry
    status: str  # rotated | would-rotate | not-due | finished | failed | refused
    line: str  # one line for the summary
    due: datetime | None = None


def who() -> str:
    actor = os.environ.get("GITHUB_ACTOR")
    if actor:
        return f"github:{actor}"
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return f"uid {os.getuid()}@{socket.gethostname()}"


def prefix(sha: str | None) -> str:
    return f"sha256:{sha[:8]}…" if sha else "?"


def prefixes(hashes: tuple[str, ...]) -> str:
    return ", ".join(prefix(h) for h in hashes)


def summary(console: Console, outcomes: list[Outcome], *, now: datetime, dry_run: bool) -> int:
    """The summary lines; -> exit code: 1 when one failed or was refused, 2 when a dry run
    found work, else 0."""
    out = console.out
    done = [o for o in outcomes if o.status in ACTIVE]
    if done:
        out("\nRotation summary:")
        for o in done:
            out(f"  {o.line}")
    else:
        out("Nothing to rotate: no token is due.")
    for o in sorted((o for o in outcomes if o.status == "not-due"), key=lambda o: o.due or now):
        out(f"Next rotation: {o.line}")
    if any(o.status in ("failed", "refused") for o in outcomes):
        return 1
    if dry_run and any(o.status in ("would-rotate", "would-finish") for o in outcomes):
        return 2
    return 0


def explain(console: Console, entry: Entry, left: rotation.Unfinished | None, source: str) -> None:
    """What an earlier run left for this entry, and what this one does about it."""
    if left is None:
        return
    if left.orphans:
        console.out(f"{entry.label}: an earlier rotation added {prefixes(left.orphans)} but no store version holds it: "
                    "it is removed (and the rotation starts again when due)")
    elif left.stale:
        console.out(f"{entry.label}: an earlier rotation stored its token but stopped before removing {prefixes(left.stale)}")
    else:
        console.out(f"{entry.label}: the servers are not what {source} says for this user: applying it")


def show(console: Console, entry: Entry, where: str, latest: writable.Latest, plan2: Plan, expected: Plan | None,
         min_hours: int, username: str | None) -> None:
    """The rotation before its confirmation: the overlap it relies on, step 2's plan and the
    plan step 4 is expected to be."""
    out = console.out
    made = rotation.stamp(latest.created) if latest.created else "an unknown time"
    out(f"\nRotate {entry.label} ({entry.rotate.store.describe()}): {where} {latest.name()} -> the next version")
    if entry.strategy == Strategy.REPLACE:
        out(f"  ! user {entry.user} holds one password on its provider: connections made with the current token fail "
            "after step 2; new connections need the new token (apps re-read the store)")
    else:
        out(f"  Overlap: apps must have re-read {where} since {made} ({latest.name()}); the version before it is removed "
            f"(policies.min_overlap_hours: {min_hours}).")
    if entry.strategy == Strategy.PAIR:
        out(f"  Redis Cloud pair: the new version goes to Cloud user {username}, in place of the version before previous.")
    out("\nPlan of step 2 of 4 (add the new token next to the ones apps hold):")
    console.present(plan2)
    if expected is not None:
        out("\nPlan of step 4 of 4, expected once step 3 has written the store:")
        console.present(expected)
    else:
        out("\nSteps 3 and 4: the service makes the token and the sink takes it; then the token before previous is removed.")


def audit_record(path: str | None, entry: Entry, where: str, latest: writable.Latest, written: writable.Latest,
                 removed: list[str], rid: str, plan: Plan) -> None:
    """The rotation's own line in the audit log (none without one); its steps' lines carry the
    same `rotation` id."""
    if not path:
        return
    try:
        log = AuditLog(path, plan, fields={"rotation": rid})
    except OSError as exc:
        raise ReconcilerError(f"audit log {path}: {exc.strerror or exc}") from None
    with log:
        log.event(
            "rotate",
            user=entry.user,
            instances=list(entry.instances),
            token=entry.token.id,
            store=where,
            version=written.version,
            old=(latest.sha256 or "")[:8],
            new=(written.sha256 or "")[:8],
            removed=[h[:8] for h in removed],
            by=who(),
            result="ok",
        )
