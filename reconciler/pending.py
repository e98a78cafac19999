"""Unfinished work, recorded next to the desired-state file so the next run finishes it.

The servers cannot say that their aclfile lags their memory, nor that a revoked token's open
connections were never killed: after a failed ACL SAVE / CONFIG REWRITE or a failed CLIENT KILL
USER, a re-plan would find the users right and say "No changes". So `apply` writes
`<file stem>.pending.json` before its first write, listing per node the persist and the session kills
it is about to do, and removes each entry once it ran. A run that dies (a failed persist, a
refused kill, SIGKILL) leaves the entries, and every later plan shows them (a finding, and work
for the node), drift is not clean, and apply runs them again.

Deterministic JSON, mode 0600, no secret: instance, node address, "persist", user names.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from .errors import ReconcilerError
from .names import shown
from .plan import Finding, FindingKind, InstancePlan, NodePlan, Plan

PERSIST = "persist"
KILL = "kill-sessions "


def path_for(source: str) -> str:
    """`access.yaml` -> `access.pending.json`, like the other records next to the file."""
    stem, _ = os.path.splitext(source)
    return f"{stem}.pending.json"


def _key(instance: str, address: str) -> str:
    return f"{instance} {address}"


def load(source: str) -> dict[str, list[str]]:
    """The recorded entries, {"instance address": ["persist", "kill-sessions user", ...]}."""
    try:
        with open(path_for(source), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Never ignored: it may be all that says the aclfile lags the servers' memory.
        raise ReconcilerError(f"{path_for(source)}: cannot read the record of unfinished work: {exc}") from None
    nodes = data.get("nodes", {}) if isinstance(data, dict) else {}
    return {str(k): sorted({str(x) for x in v}) for k, v in nodes.items() if isinstance(v, list) and v}


def _save(source: str, entries: dict[str, list[str]]) -> None:
    path = path_for(source)
    entries = {k: sorted(set(v)) for k, v in entries.items() if v}
    if not entries:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    text = json.dumps({"nodes": entries}, indent=2, sort_keys=True) + "\n"
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _work(node: NodePlan) -> list[str]:
    out = list(node.pending)
    if node.has_changes and node.persist in ("acl-save", "config-rewrite", "auto", "sentinel-flushconfig"):
        out.append(PERSIST)
    out.extend(KILL + c.user for c in node.changes if c.kill_sessions)
    return out


def begin(source: str, plan: Plan) -> dict[str, list[str]]:
    """Before the first write: record everything this apply is about to do; returns the earlier entries."""
    before = load(source)
    entries = {k: list(v) for k, v in before.items()}
    for inst in plan.instances:
        for node in inst.nodes:
            work = _work(node)
            if work:
                entries.setdefault(_key(inst.name, node.address), []).extend(work)
    _save(source, entries)
    return before


def finish(source: str, plan: Plan, before: dict[str, list[str]], nodes: list[Any]) -> None:
    """After the executor: drop what ran. `nodes` are executor.NodeResult objects."""
    from .providers.redis.execute import IN_DOUBT, OK

    results = {_key(n.instance, n.address): n for n in nodes}
    entries = load(source)
    for inst in plan.instances:
        for node in inst.nodes:
            key = _key(inst.name, node.address)
            if key not in entries:
                continue
            earlier = set(before.get(key, []))
            result = results.get(key)
            if result is None:
                continue  # no report for this node (the run broke off): keep all, redoing it is harmless
            sent = {s.user for s in result.steps if s.status in (OK, IN_DOUBT) and s.action in ("create", "update", "delete")}
            left: list[str] = []
            for item in entries[key]:
                if item == PERSIST:
                    if result.persisted in ("", "failed") and (result.started or item in earlier):
                        left.append(item)
                elif item.startswith(KILL):
                    user = item[len(KILL) :]
                    if user not in result.killed and (user in sent or item in earlier):
                        left.append(item)
                else:
                    left.append(item)
            entries[key] = left
    _save(source, entries)


def _describe(item: str) -> str:
    if item == PERSIST:
        return "an earlier apply's changes were not saved (persist failed or was cut short); apply saves them"
    user = item[len(KILL) :]
    return f"an earlier apply revoked {shown(user)} but did not kill its open connections; apply kills them"


def attach(plan: Plan, source: str, persist_mode: Any) -> Plan:
    """The plan with each node's recorded unfinished work (and a finding saying so).

    persist_mode(instance, address) -> the node's persist mode, for nodes with no other change.
    """
    entries = load(source)
    if not entries:
        return plan
    instances: list[InstancePlan] = []
    for inst in plan.instances:
        nodes: list[NodePlan] = []
        findings = list(inst.findings)
        for node in inst.nodes:
            work = tuple(entries.get(_key(inst.name, node.address), ()))
            if work:
                persist = node.persist if node.changes or node.config else persist_mode(inst.name, node.address)
                node = replace(node, pending=work, persist=persist)
                findings.extend(Finding(FindingKind.PENDING, f"node {node.address}: {_describe(w)}", inst.name, node.address) for w in work)
            nodes.append(node)
        instances.append(replace(inst, nodes=tuple(nodes), findings=tuple(findings)))
    return replace(plan, instances=tuple(instances))
