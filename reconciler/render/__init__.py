"""Plan renderers: text (Terraform style), Markdown (for pull-request comments), JSON."""

from __future__ import annotations

from typing import Any

from ..plan import FORCE_HINT, Plan
from . import markdown
from .environment import environment
from .markdown import Budget
from .view import Colors, build_view

__all__ = [
    "Budget",
    "budget_from_args",
    "headline",
    "refusal_lines",
    "render",
    "render_json",
    "render_markdown",
    "render_text",
]


def render_text(plan: Plan, *, color: bool = False, title: str = "") -> str:
    view = build_view(plan, Colors(color))
    return environment().get_template("plan.txt.j2").render(view=view, title=title)


def render_markdown(plan: Plan, *, title: str = "", budget: Budget | None = None) -> str:
    view = markdown.diff_symbols(build_view(plan, Colors(False)))
    return markdown.render(environment(), view, title, budget or Budget())


def render_json(plan: Plan) -> str:
    return plan.dumps()


def render(plan: Plan, fmt: str, *, color: bool = False, title: str = "", budget: Budget | None = None) -> str:
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan, title=title, budget=budget)
    return render_text(plan, color=color, title=title)


def budget_from_args(args: Any, *, out: str | None = None) -> Budget:
    """--max-chars / --full-plan-hint; without a hint, a saved plan (--out) is where the full plan is."""
    hint = getattr(args, "full_plan_hint", None) or (f"`{out}` (JSON, from `--out`)" if out else "")
    max_chars = getattr(args, "max_chars", None) or markdown.GITHUB_COMMENT_LIMIT
    return Budget(max_chars=max_chars, full_plan=hint)


def refusal_lines(plan: Plan, refused: str) -> list[str]:
    """The safety rails' verdict as stderr lines: `<refused>: <why>` per refusal, and a warning
    per refusal --force lifted (plan and apply say the same, in their own words)."""
    return [
        f"warning: allowed by --force: {r.message.removesuffix(FORCE_HINT)}" if r.waived else f"{refused}: {r.message}"
        for r in plan.refusals
    ]


def headline(plan: Plan) -> str:
    """What a plan found, in a few words: "1 to add, 2 to change; 3 findings", or "no changes"."""
    c = plan.counts()
    parts = []
    counted = [f"{n} to {what}" for n, what in ((c.add, "add"), (c.change, "change"), (c.destroy, "destroy")) if n]
    if counted:
        parts.append(", ".join(counted))
    elif plan.has_changes:
        parts.append("changes")  # config or certificate inventory only
    n = len(plan.findings)
    if n:
        parts.append(f"{n} finding{'s' if n != 1 else ''}")
    text = "; ".join(parts) or "no changes"
    return f"refused by the safety rails; {text}" if plan.refused else text
