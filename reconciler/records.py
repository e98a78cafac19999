"""The JSON files the reconciler keeps next to the desired-state file (certificate inventory,
managed providers' records): read whole, written atomically and private (0600)."""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(path: str) -> Any:
    """The document at `path`, or None when there is no such file. Raises OSError or
    ValueError (invalid JSON) for the caller to word."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def write_json(path: str, doc: Any) -> None:
    """Replace `path` with `doc` in one step (a crash leaves the old file), readable by the owner only."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
