"""Markdown for pull-request comments and issues, within a size budget.

The summary table is always whole. Each instance's changes go in a collapsed ```diff block
(`+` add, `-` destroy, `!` change: the diff highlighter colors `!` lines, not `~`). When the
whole text would exceed the budget (by default one GitHub comment, 65,536 characters), each
instance keeps a fair share of the room left and its block is cut at a change boundary, with a
line saying how much was left out and where the full plan is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import jinja2

from .view import PlanView

GITHUB_COMMENT_LIMIT = 65536
# Room kept for each instance's <details> wrapper and its truncation line.
_WRAPPER = 400
_HEAD = re.compile(r"^[+!-] (user|config) ")


@dataclass(frozen=True)
class Budget:
    max_chars: int = GITHUB_COMMENT_LIMIT
    full_plan: str = ""  # where the full plan is: "plan.json", a CI artifact's URL...


@dataclass(frozen=True)
class Section:
    """One instance's collapsed block: its title line and the lines inside the code fence."""

    name: str
    header: str
    lines: list[str]


@dataclass(frozen=True)
class Layout:
    """How a document's sections are cut: the code fence language, which lines start a whole
    item (a cut never splits one), and the line that says what a cut section left out."""

    fence: str
    starts_item: Callable[[str], bool]
    omitted: Callable[[Section, int, Budget], str]
    whole: str = "Full plan"  # "<whole>: <where>" ends a line that says what was left out
    where: str = "`reconciler plan --out plan.json` saves it"  # without Budget.full_plan


def _block(section: Section, body: list[str], fence: str, omitted: str = "") -> str:
    text = (
        f"\n<details><summary>{section.header}</summary>\n\n```{fence}\n"
        + "".join(line + "\n" for line in body)
        + "```\n\n</details>\n"
    )
    if omitted:
        text += f"\n{omitted}\n"
    return text


def _cut(lines: list[str], room: int, starts_item: Callable[[str], bool]) -> tuple[list[str], int]:
    """The longest prefix of whole items that fits in `room` characters, and its line count."""
    used, keep = 0, 0
    for i, line in enumerate(lines):
        if starts_item(line):
            keep = i  # an item starts here: cutting before it leaves no item half-shown
        used += len(line) + 1
        if used > room:
            return lines[:keep], keep
    return lines, len(lines)


def _plan_item(line: str) -> bool:
    return bool(_HEAD.match(line)) or line.startswith(("#", "! finding"))


def _omitted_line(section: Section, kept: int, budget: Budget) -> str:
    lines = section.lines
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
        f"> **{section.name}: {' and '.join(parts) or 'some lines'} not shown** "
        f"({len(lines) - kept:,} lines left out to keep this comment under {budget.max_chars:,} characters). "
        f"Full plan: {where}"
    )


PLAN_LAYOUT = Layout(fence="diff", starts_item=_plan_item, omitted=_omitted_line)


def render(env: jinja2.Environment, view: PlanView, title: str, budget: Budget) -> str:
    head = env.get_template("plan.md.j2").render(view=view, title=title)
    template = env.get_template("instance.md.j2")
    sections = [
        Section(inst.name, inst.header, template.render(inst=inst).splitlines())
        for inst in view.instances
        if inst.groups or inst.findings
    ]
    return fit(head, sections, budget, PLAN_LAYOUT)


def fit(head: str, sections: list[Section], budget: Budget, layout: Layout) -> str:
    """`head` (never cut) and each section in a collapsed block; when the whole would exceed the
    budget, each section keeps a fair share of the room left, cut at an item boundary, with a
    line saying what was left out."""
    full = [_block(s, s.lines, layout.fence) for s in sections]
    if len(head) + sum(map(len, full)) <= budget.max_chars:
        return head + "".join(full)
    out = [head]
    left = budget.max_chars - len(head)
    for n, (section, whole) in enumerate(zip(sections, full, strict=True)):
        share = left // (len(sections) - n)  # unused room rolls over to the sections after
        if len(whole) <= share:
            out.append(whole)
            left -= len(whole)
            continue
        room = max(0, share - len(section.header) - _WRAPPER)
        kept_lines, kept = _cut(section.lines, room, layout.starts_item)
        text = _block(section, kept_lines, layout.fence, layout.omitted(section, kept, budget))
        if len(text) > max(share, 0):
            # Not even the wrapper fits: the line alone, outside any block.
            text = "\n" + layout.omitted(section, 0, budget) + "\n"
        out.append(text)
        left -= len(text)
    return _fit(out, budget, layout)


def _fit(parts: list[str], budget: Budget, layout: Layout) -> str:
    """Last resort when even the per-instance lines overflow (hundreds of instances): drop
    instance sections from the end, naming how many; the head (summary table) stays."""
    text = "".join(parts)
    dropped = 0
    while len(text) > budget.max_chars and len(parts) > 1:
        parts.pop()
        dropped += 1
        where = budget.full_plan or layout.where
        tail = f"\n> **{dropped:,} more instance{'s' if dropped != 1 else ''} left out here.** {layout.whole}: {where}\n"
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
