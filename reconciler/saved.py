"""Saved plans (`plan --out`, `apply PLAN.json`): written 0600, read with the same care as the
YAML, and never trusted as written.

A saved plan is a review artifact, not a script: it carries the sha256 of the desired-state file
it was made from, and `apply` re-plans from that file and the live state and executes only when
the fresh plan's executable content (every command it would send) equals the saved one. A hand
edit, a change to the file, a change on a server or a node that joined or left all refuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Any

from .errors import ReconcilerError
from .plan import Plan

# A plan for 100,000 users on a handful of nodes stays well below this; anything larger (or a
# device such as /dev/zero) is refused before it is read into memory.
MAX_PLAN_BYTES = 512 * 1024 * 1024
LIST_LIMIT = 10


def file_digest(path: str) -> str:
    """sha256 of the desired-state file's bytes, as the plan binds to it."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def write(path: str, plan: Plan) -> None:
    """Write the plan JSON with mode 0600 (it lists every user's hashes), replacing any old file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(plan.dumps())
    finally:
        if fd >= 0:
            os.close(fd)


def load(path: str) -> Plan:
    """Read a saved plan: a regular file under MAX_PLAN_BYTES, valid JSON, the current format."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot read: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ReconcilerError(f"{path}: not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > MAX_PLAN_BYTES:
            raise ReconcilerError(f"{path}: file is too large for a saved plan ({st.st_size / 1e6:.0f} MB)")
        raw = fh.read(MAX_PLAN_BYTES + 1)
    if len(raw) > MAX_PLAN_BYTES:
        raise ReconcilerError(f"{path}: file is too large for a saved plan")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ReconcilerError(f"{path}: not a saved plan (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ReconcilerError(f"{path}:{exc.lineno}: not a saved plan (invalid JSON: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ReconcilerError(f"{path}: not a saved plan (the JSON is not an object)")
    try:
        return Plan.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReconcilerError(f"{path}: not a saved plan ({exc})") from None


def executable(plan: Plan) -> dict[tuple[str, str], Any]:
    """What executing the plan would send, per (instance, node): display-only fields (notes, deltas,
    connection counts, findings) left out, so a re-plan moments later compares equal."""
    out: dict[tuple[str, str], Any] = {}
    for inst in plan.instances:
        for node in inst.nodes:
            out[(inst.name, node.address)] = (
                node.fingerprint,
                node.persist if node.has_changes else "none",
                tuple(node.pending),
                tuple(
                    (c.action, c.user, c.enabled, c.nopass, tuple(c.hashes), c.rules, c.kill_sessions)
                    for c in node.changes
                ),
                tuple((cc.parameter, cc.after, cc.rewrite) for cc in node.config),
            )
        out[(inst.name, "")] = tuple((c.action, c.user, c.subject, c.sha256) for c in inst.inventory)
    return out


def differences(saved: Plan, fresh: Plan) -> list[str]:
    """Where the saved plan and a fresh plan of the same file and live state disagree."""
    a, b = executable(saved), executable(fresh)
    problems: list[str] = []
    for key in sorted(a.keys() | b.keys()):
        inst, node = key
        where = f"{inst} {node}" if node else f"{inst} (certificate inventory)"
        if key not in b:
            problems.append(f"{where}: in the plan, but not in a fresh plan")
        elif key not in a:
            problems.append(f"{where}: a fresh plan has changes for it that the saved plan lacks")
        elif a[key] != b[key]:
            problems.append(f"{where}: {_describe(a[key], b[key]) if node else 'certificate inventory differs'}")
    return problems


def _describe(saved: Any, fresh: Any) -> str:
    if saved[0] != fresh[0]:
        return "live ACLs changed since the plan was made (fingerprint differs)"
    s_changes = {c[1]: c for c in saved[3]}
    f_changes = {c[1]: c for c in fresh[3]}
    users = sorted(u for u in s_changes.keys() | f_changes.keys() if s_changes.get(u) != f_changes.get(u))
    if users:
        shown = ", ".join(users[:LIST_LIMIT]) + (f", ... and {len(users) - LIST_LIMIT} more" if len(users) > LIST_LIMIT else "")
        return f"the plan's changes for {shown} are not what the file and live state produce"
    return "the plan's persist or server settings are not what the file and live state produce"
