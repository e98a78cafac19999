"""Files the code reads at run time, shipped inside the package: the JSON Schema, the plan
templates and the bundled command tables. Read through importlib.resources so they are found
the same way in an installed wheel, an editable checkout or a zipped install.

The schema's single source is schemas/desired-state.schema.json at the top of the repository
(editors and the docs point there); reconciler/schemas/desired-state.schema.json is a symlink
to it, which the wheel and sdist builds turn into a regular file.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

SCHEMA = "schemas/desired-state.schema.json"
TEMPLATES = "render/templates"
TABLES = "acl/tables"


def resource(relpath: str) -> Traversable:
    node = files("reconciler")
    for part in relpath.split("/"):
        node = node / part
    return node


def read_text(relpath: str) -> str:
    return resource(relpath).read_text(encoding="utf-8")


def read_bytes(relpath: str) -> bytes:
    return resource(relpath).read_bytes()


def names(relpath: str, suffix: str) -> list[str]:
    """Names (without `suffix`) of the files in a resource folder that end with `suffix`."""
    return sorted(e.name[: -len(suffix)] for e in resource(relpath).iterdir() if e.name.endswith(suffix))
