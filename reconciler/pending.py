"""Unfinished work, recorded next to the desired-state file so the next run finishes it.

The servers cannot say that their aclfile lags their memory, nor that a revoked token's open
connections were never killed: after a failed ACL SAVE / CONFIG REWRITE or a failed CLIENT KILL
USER, a re-plan would find the users right and say "No changes". So `apply` writes
`<file stem>.pending.json` before its first write, listing per node the persist and the session kills
it is about to do, and removes each entry once it ran. A run that dies (a failed persist, a
refused kill, SIGKILL) leaves the entries, and every later plan shows them (a finding, and work
for the node), drift is not clean, and apply runs them again.

An entry belongs to a server, not to a spelling: it is keyed by the address the connection
reached (`NodeState.resolved`), so renaming the instance or writing `localhost` for
`127.0.0.1` still finds it. An entry that matches no node of the file is never dropped: it is
a finding (drift exits 2) until an apply runs it or the operator removes it from the record.

Deterministic JSON, mode 0600, no secret: resolved address, instance, node address as written,
"persist", user names.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from . import records
from .errors import ReconcilerError
from .names import shown
from .plan import Finding, FindingKind, InstancePlan, NodePlan, Plan, Severity

PERSIST = "persist"
LOCK_WAIT_SECONDS = 30  # for another process's update of the record (milliseconds, unless it is frozen)
KILL = "kill-sessions "

# (instance, node address as the plan spells it) -> the address its connection reached.
Where = Mapping[tuple[str, str], str]


class RecordWriteError(ReconcilerError):
    """The record could not be written (a read-only folder, a full disk)."""


@dataclass
class Entry:
    instance: str  # the instance it was recorded under (names only; matching is by `key`)
    address: str  # the node's address as that instance spelled it
    work: list[str]


def path_for(source: str) -> str:
    """`access.yaml` -> `access.pending.json`, like the other records next to the file."""
    stem, _ = os.path.splitext(source)
    return f"{stem}.pending.json"


def _key(where: Where, instance: str, address: str) -> str:
    """The entry key of a node: the address it resolved to, else its spelling."""
    return where.get((instance, address)) or address


def load(source: str) -> dict[str, Entry]:
    """The recorded entries by key (the resolved address). Records written before entries were
    keyed by address (`{"instance address": [...]}`) read as entries keyed by their spelling.
    A record that is not one (a FIFO, a device, another JSON document, an entry or work item
    of the wrong shape) is an error, never read as empty."""
    path = path_for(source)
    try:
        data = records.read_json(path)
    except (OSError, ValueError) as exc:
        # Never ignored: it may be all that says the aclfile lags the servers' memory.
        raise ReconcilerError(f"{path}: cannot read the record of unfinished work: {exc}") from None
    if data is None:
        return {}
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        raise ReconcilerError(f'{path}: not a record of unfinished work (expected {{"nodes": {{...}}}}); move it away or restore it')
    out: dict[str, Entry] = {}
    for key, value in nodes.items():
        if isinstance(value, list):  # the first format: "instance address" -> work
            instance, _, address = str(key).partition(" ")
            entry = Entry(instance, address, _work_items(path, key, value))
            key = address
        elif isinstance(value, dict) and isinstance(value.get("work"), list):
            entry = Entry(str(value.get("instance", "")), str(value.get("address", key)), _work_items(path, key, value["work"]))
        else:
            raise ReconcilerError(f'{path}: entry {key!r} is not {{"instance", "address", "work": [...]}}; move the file away or restore it')
        if entry.work:
            out.setdefault(str(key), Entry(entry.instance, entry.address, [])).work.extend(entry.work)
    for entry in out.values():
        entry.work = sorted(set(entry.work))
    return out


def _work_items(path: str, key: str, items: list[Any]) -> list[str]:
    """The entry's work: "persist" or "kill-sessions USER" each; anything else is an error."""
    for item in items:
        if not (isinstance(item, str) and (item == PERSIST or (item.startswith(KILL) and len(item) > len(KILL)))):
            raise ReconcilerError(
                f"{path}: entry {key!r}: work item {item!r} is neither {PERSIST!r} nor {KILL!r} + a user name; "
                "move the file away or restore it"
            )
    return list(items)


def _save(source: str, entries: dict[str, Entry]) -> None:
    path = path_for(source)
    doc = {
        key: {"instance": e.instance, "address": e.address, "work": sorted(set(e.work))}
        for key, e in sorted(entries.items())
        if e.work
    }
    if not doc:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    try:
        records.write_json(path, {"nodes": doc})
    except OSError as exc:
        raise RecordWriteError(f"{path}: cannot write the record of unfinished work: {exc.strerror or exc}") from None


@contextmanager
def _updating(source: str) -> Iterator[None]:
    """One process at a time reads, changes and writes the record: two applies of one file on
    different instances (`--instance a`, `--instance b`) may run at once, and neither may lose
    the other's entries. The lock is an flock on the desired-state file itself (opened for
    reading only; nothing is written to it), released when the update ends or the process dies."""
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Held for milliseconds by a running apply; for longer only by one frozen mid-update.
                if time.monotonic() > deadline:
                    raise RecordWriteError(
                        f"{path_for(source)}: another reconciler process has been updating the record of unfinished "
                        f"work for {LOCK_WAIT_SECONDS} s (stopped?); let it finish or end it, then run again"
                    ) from None
                time.sleep(0.01)
            except OSError:  # a filesystem without locks (ENOLCK): update unlocked, as one apply at a time does
                break
        yield
    finally:
        os.close(fd)


def _work(node: NodePlan) -> list[str]:
    out = list(node.pending)
    if node.has_changes and node.persist in ("acl-save", "config-rewrite", "auto", "sentinel-flushconfig"):
        out.append(PERSIST)
    out.extend(KILL + c.user for c in node.changes if c.kill_sessions)
    return out


def _find(entries: dict[str, Entry], where: Where, instance: str, address: str) -> str | None:
    """The key of the node's entry: its resolved address, or (a record from before addresses
    were resolved, a node read without one) the same instance and spelling."""
    key = _key(where, instance, address)
    if key in entries:
        return key
    return next((k for k, e in entries.items() if e.instance == instance and e.address == address), None)


def begin(source: str, plan: Plan, where: Where) -> dict[str, list[str]]:
    """Before the first write: record everything this apply is about to do; returns the earlier
    entries' work by key."""
    try:
        with _updating(source):
            return _begin(source, plan, where)
    except RecordWriteError as exc:
        # No write may happen that a crash could leave unrecorded.
        raise ReconcilerError(f"{exc}; it must be written before any change, so nothing was changed") from None


def _begin(source: str, plan: Plan, where: Where) -> dict[str, list[str]]:
    entries = load(source)
    for inst in plan.instances:
        for node in inst.nodes:
            # An entry found by spelling (an older record) moves to the resolved address.
            found, key = _find(entries, where, inst.name, node.address), _key(where, inst.name, node.address)
            if found is not None and found != key:
                moved = entries.pop(found)
                entries.setdefault(key, Entry(inst.name, node.address, [])).work.extend(moved.work)
    before = {k: list(e.work) for k, e in entries.items()}
    for inst in plan.instances:
        for node in inst.nodes:
            work = _work(node)
            if not work:
                continue
            entry = entries.setdefault(_key(where, inst.name, node.address), Entry(inst.name, node.address, []))
            entry.instance, entry.address = inst.name, node.address
            entry.work.extend(work)
    _save(source, entries)
    return before


def finish(source: str, plan: Plan, before: dict[str, list[str]], nodes: list[Any], where: Where) -> None:
    """After the executor: drop what ran. `nodes` are node_run.NodeResult objects."""
    with _updating(source):
        _finish(source, plan, before, nodes, where)


def _finish(source: str, plan: Plan, before: dict[str, list[str]], nodes: list[Any], where: Where) -> None:
    from .providers.redis.node_run import IN_DOUBT, OK

    results = {(n.instance, n.address): n for n in nodes}
    entries = load(source)
    for inst in plan.instances:
        for node in inst.nodes:
            key = _find(entries, where, inst.name, node.address)
            if key is None:
                continue
            earlier = set(before.get(key, []))
            result = results.get((inst.name, node.address))
            if result is None:
                continue  # no report for this node (the run broke off): keep all, redoing it is harmless
            sent = {s.user for s in result.steps if s.status in (OK, IN_DOUBT) and s.action in ("create", "update", "delete")}
            left: list[str] = []
            for item in entries[key].work:
                if item == PERSIST:
                    if result.persisted in ("", "failed") and (result.started or item in earlier):
                        left.append(item)
                elif item.startswith(KILL):
                    user = item[len(KILL) :]
                    if user not in result.killed and (user in sent or item in earlier):
                        left.append(item)
                else:
                    left.append(item)
            entries[key].work = left
    _save(source, entries)


def _label(item: str) -> str:
    return item if item == PERSIST else KILL + shown(item[len(KILL) :])


def _describe(item: str) -> str:
    if item == PERSIST:
        return "an earlier apply's changes were not saved (persist failed or was cut short); apply saves them"
    user = item[len(KILL) :]
    return f"an earlier apply revoked {shown(user)} but did not kill its open connections; apply kills them"


def attach(
    plan: Plan,
    source: str,
    persist_mode: Callable[[str, str], str],
    where: Where,
    *,
    instances: Mapping[str, bool],
) -> Plan:
    """The plan with each node's recorded unfinished work (and a finding saying so), and a
    finding for every entry that matches no node of the plan.

    persist_mode(instance, address) -> the node's persist mode, for nodes with no other change.
    instances: each instance of the file -> whether this plan read it (`--instance` narrows);
    an unmatched entry is reported when its instance was read or is not in the file at all
    and every instance was read (it could belong to a node of an instance not read).
    """
    entries = load(source)
    if not entries:
        return plan
    matched: set[str] = set()
    out: list[InstancePlan] = []
    for inst in plan.instances:
        nodes: list[NodePlan] = []
        findings = list(inst.findings)
        for node in inst.nodes:
            key = _find(entries, where, inst.name, node.address)
            work = tuple(entries[key].work) if key is not None else ()
            if key is not None:
                matched.add(key)
            if work:
                persist = node.persist if node.changes or node.config else persist_mode(inst.name, node.address)
                node = replace(node, pending=work, persist=persist)
                findings.extend(Finding(FindingKind.PENDING, f"node {node.address}: {_describe(w)}", inst.name, node.address) for w in work)
            nodes.append(node)
        out.append(replace(inst, nodes=tuple(nodes), findings=tuple(findings)))
    everything = all(instances.values())
    orphans = [
        (k, e) for k, e in sorted(entries.items())
        if k not in matched and (instances.get(e.instance) or (e.instance not in instances and everything))
    ]
    if orphans and out:
        by_name = {i.name: n for n, i in enumerate(out)}
        for key, entry in orphans:
            n = by_name.get(entry.instance, 0)
            message = (
                f"{path_for(source)}: unfinished work for node {entry.address} (instance {entry.instance}, "
                f"reached at {key}) matches no node of this file: {', '.join(_label(w) for w in entry.work)}; "
                "put the node back in the file so apply runs it, or do it by hand and remove the entry from the record"
            )
            finding = Finding(FindingKind.PENDING, message, out[n].name, severity=Severity.ERROR)
            out[n] = replace(out[n], findings=out[n].findings + (finding,))
    return replace(plan, instances=tuple(out))
