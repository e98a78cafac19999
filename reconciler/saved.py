"""Saved plans (`plan --out`, `apply PLAN.json`): written 0600, read with the same care as the
YAML, and never trusted as written.

A saved plan is a review artifact, not a script: it carries the sha256 of the desired-state file
it was made from, and `apply` re-plans from that file and the live state and executes only when
the fresh plan equals the saved one in every field (DISPLAY_ONLY aside), for every provider. A
hand edit, a change to the file, a change on a server or a node that joined or left all refuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from .errors import ReconcilerError
from .names import shown
from .plan import Finding, Plan, UserChange

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


# Fields no apply reads, left out of the comparison; everything else in the typed plan is
# compared, so a field added to any plan class is bound to the live state without a change here
# (tests/test_saved_plans.py checks this list and edits every other field). Each is either bound
# on its own (the file's digest binds `source`; `source_sha256`, `format_version` are checked
# when the file is read) or moves between a plan and a re-plan moments later without changing
# what apply does: the date, open-connection counts and the words of notes and findings (their
# kind, user, token and severity are compared). Apply executes and shows the fresh plan, so not
# even these reach the servers or the screen from the saved file.
DISPLAY_ONLY: dict[type, frozenset[str]] = {
    Plan: frozenset({"source", "today", "source_sha256", "format_version"}),
    UserChange: frozenset({"connections", "note"}),
    Finding: frozenset({"message"}),
}


def _fields(value: Any) -> Any:
    """The plan as plain data, every field but DISPLAY_ONLY's."""
    if is_dataclass(value) and not isinstance(value, type):
        skip = DISPLAY_ONLY.get(type(value), frozenset())
        return {f.name: _fields(getattr(value, f.name)) for f in fields(value) if f.name not in skip}
    if isinstance(value, (list, tuple)):
        return [_fields(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


def _parts(plan: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    """The comparable plan cut into (instance, node address) pieces; ("", "") is the plan's own
    fields and (instance, "") an instance's (topology, findings, certificate inventory)."""
    whole = _fields(plan)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for inst in whole.pop("instances"):
        for node in inst.pop("nodes"):
            out[(inst["name"], node["address"])] = node
        out[(inst["name"], "")] = inst
    out[("", "")] = whole
    return out


def differences(saved: Plan, fresh: Plan) -> list[str]:
    """Where the saved plan and a fresh plan of the same file and live state disagree: any field
    (DISPLAY_ONLY aside) of any change, node, instance or of the plan itself."""
    a, b = _parts(saved), _parts(fresh)
    problems: list[str] = []
    for key in sorted(a.keys() | b.keys()):
        inst, node = key
        where = f"{inst} {node}" if node else inst or "the plan"
        if key not in b:
            problems.append(f"{where}: in the plan, but not in a fresh plan")
        elif key not in a:
            problems.append(f"{where}: a fresh plan has changes for it that the saved plan lacks")
        elif a[key] != b[key]:
            problems.append(f"{where}: {_describe(a[key], b[key]) if node else _describe_fields(a[key], b[key])}")
    return problems


def _describe(saved: dict[str, Any], fresh: dict[str, Any]) -> str:
    if saved["fingerprint"] != fresh["fingerprint"]:
        return "live ACLs changed since the plan was made (fingerprint differs)"
    s_changes = {c["user"]: c for c in saved["changes"]}
    f_changes = {c["user"]: c for c in fresh["changes"]}
    users = sorted(u for u in s_changes.keys() | f_changes.keys() if s_changes.get(u) != f_changes.get(u))
    if len(saved["changes"]) == len(s_changes) and users:
        listed = ", ".join(shown(u) for u in users[:LIST_LIMIT])
        more = f", ... and {len(users) - LIST_LIMIT} more" if len(users) > LIST_LIMIT else ""
        return f"the plan's changes for {listed}{more} are not what the file and live state produce{_which(s_changes, f_changes, users)}"
    return _describe_fields(saved, fresh)


def _which(saved: dict[str, Any], fresh: dict[str, Any], users: list[str]) -> str:
    """` (certificates, tokens)`: the fields that differ, when one user's change is in both."""
    if len(users) != 1 or users[0] not in saved or users[0] not in fresh:
        return ""
    a, b = saved[users[0]], fresh[users[0]]
    return f" ({', '.join(k for k in a if a[k] != b.get(k))})"


def _describe_fields(saved: dict[str, Any], fresh: dict[str, Any]) -> str:
    names = [k for k in saved.keys() | fresh.keys() if saved.get(k) != fresh.get(k)]
    words = {"changes": "user changes", "config": "server settings", "inventory": "certificate inventory"}
    listed = ", ".join(words.get(k, k) for k in sorted(names))
    return f"the plan's {listed} {'is' if len(names) == 1 else 'are'} not what the file and live state produce"
