"""The jinja2 environment every text and Markdown template renders in (templates/*.j2, shipped
inside the package and read through resources.py)."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from .. import resources


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: resources.read_text(f"{resources.TEMPLATES}/{name}")),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
