"""`secret: {env: NAME}`: an environment variable of the process running the reconciler."""

from __future__ import annotations

import re
from typing import Any, Mapping

from .base import Context, Fetched, SecretError, shown

KEY = "env"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def well_formed(spec: Any) -> bool:
    return isinstance(spec, str)


def describe(spec: Any) -> str:
    return f"env:{spec}"


def shape(spec: str) -> str | None:
    if not _NAME.fullmatch(spec):
        return f"'{shown(spec)}' is not an environment variable name (letters, digits and _, not starting with a digit)"
    return None


def read_env(name: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set")
    if value == "":
        raise SecretError(f"environment variable {name} is empty")
    return value


def read(spec: str, ctx: Context) -> Fetched:
    return Fetched(read_env(spec, ctx.environ), shown=f"environment variable {spec}")
