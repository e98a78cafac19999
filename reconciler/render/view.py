"""Turns a Plan into display rows: identical nodes grouped, tokens as `id (sha256:ab12cd34…)`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..names import shown
from ..plan import FORCE_HINT, ConfigChange, Finding, InstancePlan, InventoryChange, NodePlan, Plan, Severity, TokenChange, UserChange

SYMBOL = {"create": "+", "update": "~", "delete": "-"}
PERSIST = {
    "acl-save": "ACL SAVE",
    "config-rewrite": "CONFIG REWRITE",
    "auto": "ACL SAVE (the aclfile setting can't be read without CONFIG GET; CONFIG REWRITE only if the server has no aclfile)",
    "sentinel-flushconfig": "SENTINEL FLUSHCONFIG",
    "warn": "not persisted: changes live in memory only (see the warning)",
    "none": "",
}
NOTE_COLUMN = 40


@dataclass(frozen=True)
class Colors:
    enabled: bool = False

    def paint(self, sign: str, text: str) -> str:
        if not self.enabled:
            return text
        code = {"+": "32", "~": "33", "-": "31", "!": "1;31"}.get(sign, "0")
        return f"\033[{code}m{text}\033[0m"


@dataclass
class ChangeView:
    symbol: str
    head: str  # "+ user app"
    note: str
    lines: list[str] = field(default_factory=list)
    # Per line, its mark in a ```diff block: "+" added, "-" removed, "!" changed or dangerous, " " context.
    marks: list[str] = field(default_factory=list)


@dataclass
class GroupView:
    header: str  # "" when the instance has one group
    changes: list[ChangeView]
    persist: str


@dataclass
class InstanceView:
    name: str
    header: str
    groups: list[GroupView]
    findings: list[str]
    add: int
    change: int
    destroy: int


@dataclass
class PlanView:
    source: str
    instances: list[InstanceView]
    summary: str
    has_changes: bool
    findings: int
    refusals: list[str] = field(default_factory=list)  # the safety rails' refusals apply would stop on
    waived: list[str] = field(default_factory=list)  # refusals `--force` lifts, shown as allowed
    forcible: bool = False  # every refusal is one `--force` would lift
    some_forcible: bool = False  # at least one is
    targets: list[str] = field(default_factory=list)  # `--target`: the only users planned


def token_label(t: TokenChange) -> str:
    if t.token_id:
        return f"{t.token_id} (sha256:{t.prefix}…)"
    return f"sha256:{t.prefix}…"


def _token_line(t: TokenChange, colors: Colors) -> str:
    sign = {"add": "+", "remove": "-", "keep": " "}[t.action]
    extra = []
    if t.action == "add" and t.expires:
        extra.append(f"expires {t.expires}")
    if t.reason:
        extra.append(t.reason)
    text = f"token {sign} {token_label(t)}"
    if extra:
        text = f"{text:<34}  {'; '.join(extra)}"
    return colors.paint(sign, text) if sign != " " else text


def _change_view(c: UserChange, colors: Colors) -> ChangeView:
    symbol = SYMBOL[c.action]
    notes = [c.note] if c.note else []
    lines: list[str] = []
    marks: list[str] = []
    # A new user's lines are all additions; an update's lines carry their own sign.
    base = "+" if c.action == "create" else " "

    def add(line: str, mark: str = base) -> None:
        lines.append(line)
        marks.append(mark)

    if c.action != "delete":
        if c.enabled_before is not None:
            add(colors.paint("~", f"enabled: {str(c.enabled_before).lower()} -> {str(c.enabled).lower()}"), "!")
        elif c.action == "create" and not c.enabled:
            notes.append("disabled (off)")
        for t in c.tokens:
            add(_token_line(t, colors), base if c.action == "create" else {"add": "+", "remove": "-"}.get(t.action, " "))
        if c.action == "create" and not c.tokens and not c.nopass and not c.certificates:
            add("no token: nobody can log in (resetpass)")
        for subject in c.certificates:
            add(f"certificate: {subject}")
        if c.permissions:
            if c.action == "create":
                for p in c.permissions:
                    add(p.text)
            else:
                add("permissions:")
                for p in c.permissions:
                    add("  " + colors.paint(p.sign, f"{p.sign} {p.text}"), p.sign)
        if c.kill_sessions:
            n = c.connections
            add(f"sessions: every open connection of the user is closed ({n} now)")
    text = f"{symbol} user {shown(c.user)}"
    head = colors.paint(symbol, text)
    pad = max(1, NOTE_COLUMN - len(text))
    return ChangeView(
        symbol=symbol, head=head + (" " * pad if notes else ""), note="; ".join(notes), lines=lines, marks=marks
    )


def _config_view(cc: ConfigChange, colors: Colors) -> ChangeView:
    text = f"~ config {cc.parameter}"
    pad = max(1, NOTE_COLUMN - len(text))
    then = "; CONFIG REWRITE" if cc.rewrite else ""
    return ChangeView(symbol="~", head=colors.paint("~", text) + " " * pad, note=f"{cc.before} -> {cc.after} ({cc.via}{then})")


def _inventory_group(changes: tuple[InventoryChange, ...], colors: Colors) -> GroupView:
    views = []
    for user in dict.fromkeys(c.user for c in changes):
        lines = []
        for c in (c for c in changes if c.user == user):
            sign = "+" if c.action == "add" else "-"
            extra = f", expires {c.expires}" if c.expires else ""
            lines.append(colors.paint(sign, f"certificate {sign} {c.subject}  (sha256:{c.sha256[:8]}…{extra})"))
        marks = ["+" if "certificate + " in line else "-" for line in lines]
        text = f"~ user {shown(user)}"
        pad = max(1, NOTE_COLUMN - len(text))
        views.append(
            ChangeView(
                symbol="~", head=colors.paint("~", text) + " " * pad, note="certificate inventory only", lines=lines, marks=marks
            )
        )
    return GroupView(header="certificate inventory (recorded by apply; no server command)", changes=views, persist="")


class _Node(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def label(self) -> str: ...


def node_header(nodes: Sequence[_Node]) -> str:
    """`3 nodes: 10.0.0.5:6379 primary, 2 replicas; Valkey 9.1.2` (plans and denials reports)."""
    sentinels = [n for n in nodes if n.role == "sentinel"]
    nodes = [n for n in nodes if n.role != "sentinel"]
    primaries = [n for n in nodes if n.role == "primary"]
    replicas = [n for n in nodes if n.role != "primary"]
    parts = []
    if len(primaries) == 1:
        parts.append(f"{primaries[0].address} primary")
    elif primaries:
        parts.append(f"{len(primaries)} primaries")
    if len(replicas) == 1 and not primaries:
        parts.append(f"{replicas[0].address} replica")
    elif replicas:
        parts.append(f"{len(replicas)} replica{'s' if len(replicas) != 1 else ''}")
    if sentinels:
        parts.append(f"{len(sentinels)} sentinel{'s' if len(sentinels) != 1 else ''}")
    labels = sorted({n.label for n in nodes + sentinels if n.label})  # a node not read has none
    count = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    return f"{count}: {', '.join(parts)}; {', '.join(labels)}"


def _groups(inst: InstancePlan, colors: Colors) -> list[GroupView]:
    buckets: dict[tuple, list[NodePlan]] = {}
    for node in inst.nodes:
        buckets.setdefault((node.changes, node.persist, node.config), []).append(node)
    groups = []
    for (changes, persist, config), nodes in buckets.items():
        if not changes and not config:
            continue
        header = ""
        if len(buckets) > 1:
            header = "on " + ", ".join(n.address for n in nodes)
        groups.append(
            GroupView(
                header=header,
                changes=[_change_view(c, colors) for c in changes] + [_config_view(cc, colors) for cc in config],
                persist=PERSIST[persist],
            )
        )
    return groups


def _finding_line(f: Finding, colors: Colors) -> str:
    where = f"[{f.node}] " if f.node else ""
    label = "! finding (error):" if f.severity == Severity.ERROR else "! finding:"
    return colors.paint("!", label) + f" {where}{f.message}"


def build_view(plan: Plan, colors: Colors) -> PlanView:
    instances = []
    for inst in plan.instances:
        sub = Plan(source=plan.source, instances=(inst,), today=plan.today).counts()
        instances.append(
            InstanceView(
                name=inst.name,
                header=f"Instance {inst.name} ({node_header(inst.nodes)})",
                groups=_groups(inst, colors) + ([_inventory_group(inst.inventory, colors)] if inst.inventory else []),
                findings=[_finding_line(f, colors) for f in inst.findings],
                add=sub.add,
                change=sub.change,
                destroy=sub.destroy,
            )
        )
    c = plan.counts()
    if plan.has_changes:
        summary = f"Plan: {c.add} to add, {c.change} to change, {c.destroy} to destroy."
        inventory = sum(len(i.inventory) for i in plan.instances)
        if inventory:
            summary += f" Certificate inventory: {inventory} change{'s' if inventory != 1 else ''} to record."
    elif plan.targets:
        # Only the targeted users were compared: the rest of the file may well differ.
        summary = f"No changes for {', '.join(map(shown, plan.targets))}."
    else:
        summary = "No changes. The live servers match the file."
    blocking = [r for r in plan.refusals if not r.waived]
    return PlanView(
        source=plan.source,
        instances=instances,
        summary=summary,
        has_changes=plan.has_changes,
        findings=len(plan.findings),
        refusals=[r.message for r in blocking],
        waived=[r.message.removesuffix(FORCE_HINT) for r in plan.refusals if r.waived],
        forcible=bool(blocking) and all(r.forcible for r in blocking),
        some_forcible=any(r.forcible for r in blocking),
        targets=[shown(t) for t in plan.targets],  # as the changes show them: escaped when odd
    )
