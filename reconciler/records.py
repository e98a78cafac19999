"""The JSON files the reconciler keeps next to the desired-state file (certificate inventory,
managed providers' records): read whole, written atomically and private (0600)."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from . import files

# Far above any real record (100,000 users' entries on a dozen nodes are a few MB); a device or
# a file swapped in beside the YAML is refused before it is read into memory.
MAX_RECORD_BYTES = 256 * 1024 * 1024


def read_json(path: str) -> Any:
    """The document at `path`, or None when there is no such file. Raises OSError or
    ValueError (invalid JSON, not a regular file, too large) for the caller to word."""
    try:
        raw, _ = files.read_regular(path, MAX_RECORD_BYTES)
    except FileNotFoundError:
        return None
    except files.NotRegular:
        raise ValueError("not a regular file (a FIFO, a device or a directory)") from None
    except files.TooLarge as exc:
        raise ValueError(f"{exc.size} bytes, more than any record ({MAX_RECORD_BYTES})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested deeper than any record") from None


def write_json(path: str, doc: Any) -> None:
    """Replace `path` with `doc` in one step (a crash leaves the old file), readable by the owner
    only. The temporary file is this process's own (applies of one file on different instances
    may write at once: neither renames the other's half-written file) and is removed when the
    write fails. Raises OSError."""
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never created (a read-only folder), or already renamed
        raise
