"""Plan renderers: text (Terraform style), Markdown (for pull-request comments), JSON."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from .. import resources
from ..plan import Plan
from .view import Colors, build_view

__all__ = ["render", "render_text", "render_markdown", "render_json"]


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: resources.read_text(f"{resources.TEMPLATES}/{name}")),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_text(plan: Plan, *, color: bool = False, title: str = "") -> str:
    view = build_view(plan, Colors(color))
    return _env().get_template("plan.txt.j2").render(view=view, title=title)


def render_markdown(plan: Plan, *, title: str = "") -> str:
    view = build_view(plan, Colors(False))
    return _env().get_template("plan.md.j2").render(view=view, title=title)


def render_json(plan: Plan) -> str:
    return plan.dumps()


def render(plan: Plan, fmt: str, *, color: bool = False, title: str = "") -> str:
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan, title=title)
    return render_text(plan, color=color, title=title)
