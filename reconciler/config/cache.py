"""Parse cache for large desired-state files, like Python's .pyc: the YAML data tree and its line
marks, stored after a file passed parsing and the JSON Schema, keyed by the sha256 of the file's
text and of the code and schema that read it. A 10,000-user file then loads without re-parsing
YAML or re-running jsonschema (the two slowest steps); semantic checks and secrets still run
every time. Only clean files are cached: the YAML holds references and sha256 digests, never a
token, and a file with any problem (e.g. a password pasted in `acl`) is never written here.

RECONCILER_CACHE_DIR overrides the location (default $XDG_CACHE_HOME/reconciler or
~/.cache/reconciler); RECONCILER_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
import tempfile
from pathlib import Path

from .. import __version__, resources
from .yamlsrc import Source

MAX_ENTRIES = 16  # oldest entries beyond this are removed on write
MIN_BYTES = 256 * 1024  # smaller files parse in well under 100 ms: not worth a cache entry
FORMAT = b"reconciler-parse-cache-1"


def _directory() -> Path | None:
    if os.environ.get("RECONCILER_NO_CACHE"):
        return None
    explicit = os.environ.get("RECONCILER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reconciler" / "parsed"


@functools.lru_cache(maxsize=1)
def _code_digest() -> bytes:
    h = hashlib.sha256(FORMAT + __version__.encode())
    for relpath in ("config/yamlsrc.py", "config/schema.py", resources.SCHEMA):
        try:
            h.update(resources.read_bytes(relpath))
        except OSError:
            h.update(b"missing")
    return h.digest()


def _entry(text: str) -> Path | None:
    if len(text) < MIN_BYTES:
        return None
    directory = _directory()
    if directory is None:
        return None
    key = hashlib.sha256(_code_digest() + text.encode("utf-8", "surrogatepass")).hexdigest()
    return directory / f"{key}.marshal"


def get(text: str) -> Source | None:
    entry = _entry(text)
    if entry is None:
        return None
    try:
        data, lines = marshal.loads(entry.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return Source(data, lines, [])


def put(text: str, src: Source) -> None:
    entry = _entry(text)
    if entry is None or src.problems:
        return
    try:
        blob = marshal.dumps((src.data, src.lines))
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, entry)
        entries = sorted(entry.parent.glob("*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[MAX_ENTRIES:]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError):
        return  # a cache that can't be written is only slower, never wrong
