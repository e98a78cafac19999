"""`secret: {file: PATH}`: a file holding one line (one trailing newline stripped). Relative
paths are relative to the YAML file's folder."""

from __future__ import annotations

import os
import secrets
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


class Replacement:
    """The next content of the file `path`, written beside it and renamed over it: a reader sees
    the old value or the new one, never an empty or half-written file, and a write that fails
    leaves the old one. Opened before the value exists, so a folder that can't take it fails
    first. A symlinked `path` keeps its link: the file it points to is the one replaced. The
    new file keeps the old one's owner, group and mode (less any bits for others); a new one is 0600."""

    def __init__(self, path: str, *, follow: bool = True):
        # follow=False: a file this tool owns (PATH.previous): a link planted there is replaced, never
        # written through (a rotation run as root would overwrite whatever it names).
        self.path = os.path.realpath(path) if follow else os.path.join(os.path.realpath(os.path.dirname(path) or "."),
                                                                     os.path.basename(path))
        self.tmp = f"{self.path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        # O_EXCL | O_NOFOLLOW: never a file (or a link) someone else put there, whose mode and owner
        # the secret would take.
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            old = os.stat(self.path, follow_symlinks=follow)
            if not stat.S_ISREG(old.st_mode):
                raise OSError("not a regular file")
        except OSError:
            return  # a new file: 0600, this process's
        # The file apps read keeps its owner, group and mode (never for others): a rotation run as
        # root must not leave the app's token file readable only by root.
        try:
            os.fchown(self.fd, old.st_uid, old.st_gid)
        except PermissionError:
            pass  # not root: the file becomes this process's, as any rewrite by its user would
        os.fchmod(self.fd, (stat.S_IMODE(old.st_mode) & 0o660) | 0o600)

    def commit(self, value: str) -> None:
        if len(value.encode()) > MAX_SECRET_BYTES:
            self.abort()
            raise SecretError(f"secret file {self.path}: the value is too large")
        assert self.fd is not None
        try:
            single_line(value.encode(), f"the new value for {self.path}")
            os.write(self.fd, value.encode() + b"\n")
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        folder = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass  # renamed into place, or never made


def replace(path: str, value: str, *, follow: bool = True) -> None:
    """Write `value` as the whole of `path` by an atomic rename (Replacement)."""
    Replacement(path, follow=follow).commit(value)
