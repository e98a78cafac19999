"""Secret sources: the reference's key -> the module that reads it (in the style of the
providers registry). A new source is one module with the functions base.py lists, plus one
line here. Modules are imported when a file uses them."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .base import shown

# key -> module of this package
_SOURCES = {
    "env": "env",
    "file": "file",
    "vault": "vault",
    "exec": "exec",
}


def keys() -> list[str]:
    return list(_SOURCES)


def kind_of(ref: Any) -> str | None:
    """The source key of a reference `{KEY: spec}` (exactly one known key), else None."""
    if isinstance(ref, dict) and len(ref) == 1:
        key = next(iter(ref))
        if key in _SOURCES:
            return key
    return None


_LOADED: dict[str, ModuleType] = {}


def source(key: str) -> ModuleType:
    module = _LOADED.get(key)
    if module is None:
        module = _LOADED[key] = importlib.import_module(f"{__package__}.{_SOURCES[key]}")
    return module


def describe(ref: Any) -> str:
    """"env:NAME", "file:PATH", "vault:secret/apps/orders#token", "exec:sops"; "?" for a malformed one."""
    key = kind_of(ref)
    if key is None:
        return "?"
    return shown(str(source(key).describe(ref[key])))
