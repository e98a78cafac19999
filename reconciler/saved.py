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
from dataclasses import fields
from operator import attrgetter
from typing import Any, Callable

from .errors import ReconcilerError
from .names import shown
from .plan import Finding, InstancePlan, NodePlan, Plan, UserChange

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


def check_destination(path: str, source: str) -> None:
    """A plan may not be saved over the file it was made from, nor over a record kept beside it."""
    what = kept_beside(path, source)
    if what is not None:
        raise ReconcilerError(f"--out {path} is {what}; save the plan under another name (e.g. plan.json)")


def kept_beside(path: str, source: str) -> str | None:
    """What `path` is when it is the desired-state file `source` or a record kept beside it (the
    certificate inventory, unfinished work, a managed provider's record), in words; else None.
    Written over, the next run would find a plan or audit lines there instead."""
    from . import inventory, pending, providers
    from .providers.managed import record_path

    kept = [inventory.inventory_path(source), pending.path_for(source), *(record_path(source, p) for p in providers.names())]
    if same_file(path, source):
        return "the desired-state file itself"
    if any(os.path.abspath(path) == os.path.abspath(k) or same_file(path, k) for k in kept):
        return f"a record reconciler keeps beside {source}"
    return None


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def write(path: str, plan: Plan) -> None:
    """Write the plan JSON with mode 0600 (it lists every user's hashes), replacing any old file."""
    text = plan.dumps()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ReconcilerError(f"--out {path}: cannot write: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
    except OSError as exc:
        # A full disk or a file-size limit: a cut plan is no plan; nothing half-written stays.
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass  # gone already
        raise ReconcilerError(f"--out {path}: cannot write: {exc.strerror or exc}; no plan was saved") from None
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
    except RecursionError:
        raise ReconcilerError(f"{path}: not a saved plan (JSON nested deeper than any plan)") from None
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
    # refusals: the rails judge the fresh plan again at apply; a saved verdict is never trusted.
    Plan: frozenset({"source", "today", "source_sha256", "format_version", "refusals"}),
    UserChange: frozenset({"connections", "note"}),
    Finding: frozenset({"message"}),
}


_COMPARED: dict[type, tuple[str, ...]] = {}
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _compared(cls: type) -> tuple[str, ...]:
    """The fields of a plan class that the comparison reads: all but DISPLAY_ONLY's."""
    if cls not in _COMPARED:
        skip = DISPLAY_ONLY.get(cls, frozenset())
        _COMPARED[cls] = tuple(f.name for f in fields(cls) if f.name not in skip)
    return _COMPARED[cls]


def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    if cls not in _GETTERS:
        names = _compared(cls)
        get = attrgetter(*names)
        _GETTERS[cls] = get if len(names) > 1 else lambda obj: (get(obj),)
    return _GETTERS[cls]


def _key(obj: Any) -> tuple[Any, ...]:
    """A change's or finding's compared fields as one tuple (made in C: a tuple per change, not a
    dict). Nested values (tokens, permission lines) compare whole."""
    return _getter(type(obj))(obj)


def _node_key(node: NodePlan) -> tuple[Any, ...]:
    return tuple(tuple(map(_key, node.changes)) if name == "changes" else getattr(node, name) for name in _compared(NodePlan))


def _instance_key(inst: InstancePlan) -> tuple[Any, ...]:
    return tuple(
        tuple(map(_key, inst.findings)) if name == "findings" else getattr(inst, name)
        for name in _compared(InstancePlan)
        if name != "nodes"
    )


def _parts(plan: Plan) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The comparable plan cut into (instance, node address) pieces; ("", "") is the plan's own
    fields and (instance, "") an instance's (topology, findings, certificate inventory). A key
    seen twice (a node listed twice in a hand-edited plan) keeps both."""
    out: dict[tuple[str, str], tuple[Any, ...]] = {}
    for inst in plan.instances:
        for node in inst.nodes:
            key = (inst.name, node.address)
            out[key] = out[key] + (_node_key(node),) if key in out else (_node_key(node),)
        key = (inst.name, "")
        out[key] = out[key] + (_instance_key(inst),) if key in out else (_instance_key(inst),)
    out[("", "")] = (tuple(getattr(plan, name) for name in _compared(Plan) if name != "instances"),)
    return out


def _find(plan: Plan, key: tuple[str, str]) -> Any:
    inst = next(i for i in plan.instances if i.name == key[0]) if key[0] else None
    if inst is None:
        return plan
    return inst if not key[1] else next(n for n in inst.nodes if n.address == key[1])


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
            problems.append(f"{where}: {_describe(_find(saved, key), _find(fresh, key), len(a[key]))}")
    return problems


def _describe(saved: Any, fresh: Any, copies: int) -> str:
    if isinstance(saved, NodePlan) and isinstance(fresh, NodePlan) and copies == 1:
        if saved.fingerprint != fresh.fingerprint:
            return "live ACLs changed since the plan was made (fingerprint differs)"
        s_changes = {c.user: _key(c) for c in saved.changes}
        f_changes = {c.user: _key(c) for c in fresh.changes}
        users = sorted(u for u in s_changes.keys() | f_changes.keys() if s_changes.get(u) != f_changes.get(u))
        if len(saved.changes) == len(s_changes) and users:
            listed = ", ".join(shown(u) for u in users[:LIST_LIMIT])
            more = f", ... and {len(users) - LIST_LIMIT} more" if len(users) > LIST_LIMIT else ""
            which = ""
            if len(users) == 1 and users[0] in s_changes and users[0] in f_changes:
                compared = _compared(UserChange)
                which = f" ({', '.join(n for n, x, y in zip(compared, s_changes[users[0]], f_changes[users[0]], strict=True) if x != y)})"
            return f"the plan's changes for {listed}{more} are not what the file and live state produce{which}"
    names = [f.name for f in fields(saved) if f.name in _compared(type(saved)) and getattr(saved, f.name) != getattr(fresh, f.name)]
    words = {"changes": "user changes", "config": "server settings", "inventory": "certificate inventory"}
    listed = ", ".join(words.get(k, k) for k in names) or "entries"
    return f"the plan's {listed} {'is' if len(names) == 1 else 'are'} not what the file and live state produce"
