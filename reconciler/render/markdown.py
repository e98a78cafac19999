"""Markdown for pull-request comments and issues, within a size budget.

The summary table is always whole. Each instance's changes go in a collapsed ```diff block
(`+` add, `-` destroy, `!` change: the diff highlighter colors `!` lines, not `~`). When the
whole text would exceed the budget (by default one GitHub comment, 65,536 characters), each
instance keeps a fair share of the room left and its block is cut at a change boundary, with a
line saying how much was left out and where the full plan is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jinja2

from .view import InstanceView, PlanView

GITHUB_COMMENT_LIMIT = 65536
# Room kept for each instance's <details> wrapper and its truncation line.
_WRAPPER = 400
_HEAD = re.compile(r"^[+!-] (user|config) ")


@dataclass(frozen=True)
class Budget:
    max_chars: int = GITHUB_COMMENT_LIMIT
    full_plan: str = ""  # where the full plan is: "plan.json", a CI artifact's URL...


def _block(inst: InstanceView, body: list[str], omitted: str = "") -> str:
    text = f"\n<details><summary>{inst.header}</summary>\n\n```diff\n" + "".join(line + "\n" for line in body) + "```\n\n</details>\n"
    if omitted:
        text += f"\n{omitted}\n"
    return text


def _cut(lines: list[str], room: int) -> tuple[list[str], int]:
    """The longest prefix of whole changes that fits in `room` characters, and its line count."""
    used, keep = 0, 0
    for i, line in enumerate(lines):
        if _HEAD.match(line) or line.startswith(("#", "! finding")):
            keep = i  # a change starts here: cutting before it leaves no change half-shown
        used += len(line) + 1
        if used > room:
            return lines[:keep], keep
    return lines, len(lines)


def _omitted_line(inst: InstanceView, lines: list[str], kept: int, budget: Budget) -> str:
    changes = sum(1 for line in lines if _HEAD.match(line))
    shown = sum(1 for line in lines[:kept] if _HEAD.match(line))
    findings = sum(1 for line in lines if line.startswith("! finding"))
    shown_findings = sum(1 for line in lines[:kept] if line.startswith("! finding"))
    parts = []
    if changes > shown:
        parts.append(f"{changes - shown:,} of {changes:,} changes")
    if findings > shown_findings:
        parts.append(f"{findings - shown_findings:,} of {findings:,} findings")
    where = budget.full_plan or "`reconciler plan --out plan.json` saves it"
    return (
        f"> **{inst.name}: {' and '.join(parts) or 'some lines'} not shown** "
        f"({len(lines) - kept:,} lines left out to keep this comment under {budget.max_chars:,} characters). "
        f"Full plan: {where}"
    )


def render(env: jinja2.Environment, view: PlanView, title: str, budget: Budget) -> str:
    head = env.get_template("plan.md.j2").render(view=view, title=title)
    template = env.get_template("instance.md.j2")
    bodies = [
        (inst, template.render(inst=inst).splitlines()) for inst in view.instances if inst.groups or inst.findings
    ]
    full = [_block(inst, lines) for inst, lines in bodies]
    if len(head) + sum(map(len, full)) <= budget.max_chars:
        return head + "".join(full)
    out = [head]
    left = budget.max_chars - len(head)
    for n, ((inst, lines), whole) in enumerate(zip(bodies, full, strict=True)):
        share = left // (len(bodies) - n)  # unused room rolls over to the instances after
        if len(whole) <= share:
            out.append(whole)
            left -= len(whole)
            continue
        room = max(0, share - len(inst.header) - _WRAPPER)
        kept_lines, kept = _cut(lines, room)
        text = _block(inst, kept_lines, _omitted_line(inst, lines, kept, budget))
        if len(text) > max(share, 0):
            # Not even the wrapper fits: the line alone, outside any block.
            text = "\n" + _omitted_line(inst, lines, 0, budget) + "\n"
        out.append(text)
        left -= len(text)
    return _fit(out, budget)


def _fit(parts: list[str], budget: Budget) -> str:
    """Last resort when even the per-instance lines overflow (hundreds of instances): drop
    instance sections from the end, naming how many; the head (summary table) stays."""
    text = "".join(parts)
    dropped = 0
    while len(text) > budget.max_chars and len(parts) > 1:
        parts.pop()
        dropped += 1
        where = budget.full_plan or "`reconciler plan --out plan.json` saves it"
        tail = f"\n> **{dropped:,} more instance{'s' if dropped != 1 else ''} left out here.** Full plan: {where}\n"
        text = "".join(parts) + tail
    return text


def diff_symbols(view: PlanView) -> PlanView:
    """`~` (change) becomes `!` in ```diff blocks, the one change marker the highlighter colors."""
    for inst in view.instances:
        for group in inst.groups:
            for c in group.changes:
                if c.symbol == "~":
                    c.symbol = "!"
                    c.head = "!" + c.head[1:]
    return view
