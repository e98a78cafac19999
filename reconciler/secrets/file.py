"""`secret: {file: PATH}`: a file holding one line (one trailing newline stripped). Relative
paths are relative to the YAML file's folder."""

from __future__ import annotations

import os
import stat
import unicodedata
from typing import Any, Callable

from .. import files
from .base import MAX_SECRET_BYTES, Context, Fetched, SecretError, shown, single_line

KEY = "file"


def well_formed(spec: Any) -> bool:
    return isinstance(spec, str)


def describe(spec: Any) -> str:
    return f"file:{spec}"


def shape(spec: str) -> str | None:
    if not spec.strip():
        return "the secret file path is empty"
    if any(unicodedata.category(c) == "Cc" for c in spec):
        return "the secret file path has a control character"
    return None


def resolve_path(base_dir: str, path: str) -> str:
    """Relative paths are relative to the YAML file's folder (base_dir as the user gave it)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not base_dir:
        return path
    return os.path.join(base_dir, path)


def read_file(path: str, shown: str, warn: Callable[[str], None] | None = None) -> str:
    """Read a secret file; one trailing newline is stripped. `shown` is the path for messages."""
    try:
        raw, st = files.read_regular(path, MAX_SECRET_BYTES)
    except FileNotFoundError:
        raise SecretError(f"secret file {shown} not found") from None
    except OSError as exc:
        raise SecretError(f"secret file {shown}: {exc.strerror}") from None
    except files.NotRegular:
        raise SecretError(f"secret file {shown} is not a regular file") from None
    except files.TooLarge as exc:
        raise SecretError(f"secret file {shown} is too large for a secret ({exc.size} bytes)") from None
    if warn is not None and st.st_mode & 0o044:
        warn(
            f"secret file {shown} is readable by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {shown}"
        )
    return single_line(raw, f"secret file {shown}")


def read(spec: str, ctx: Context) -> Fetched:
    return Fetched(read_file(resolve_path(ctx.base_dir, spec), shown(spec), ctx.warn), shown=f"secret file {shown(spec)}")
