"""Secret references: `{env: NAME}` and `{file: PATH}` -> Secret + sha256, at load time.

The plaintext stays inside `Secret` (whose str/repr hide it); everything else carries only
the reference ("env:NAME", "file:PATH") and the sha256. Messages never include plaintext.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import files
from .errors import ReconcilerError
from .model import Secret

MAX_SECRET_BYTES = 64 * 1024  # a bigger "secret file" is the wrong file


class SecretError(ReconcilerError):
    """A reference that can't be resolved; str() names the reference, never a value."""


@dataclass(frozen=True)
class Resolved:
    source: str  # "env:NAME" | "file:PATH" (PATH as written in the YAML)
    sha256: str
    secret: Secret = field(repr=False, compare=False)


def sha256_hex(plaintext: str) -> str:
    """What Redis/Valkey store for a password and accept as `#<sha256>`."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def describe(ref: Mapping[str, str]) -> str:
    if "env" in ref:
        return f"env:{ref['env']}"
    return f"file:{ref.get('file')}"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def shape_problem(ref: Mapping[str, str]) -> str | None:
    """What is wrong with a reference's form, without reading it (validate in CI, where the
    secrets are not set): an environment variable name, or a file path on one line."""
    if "env" in ref:
        name = ref["env"]
        if not _ENV_NAME.fullmatch(name):
            return f"'{name}' is not an environment variable name (letters, digits and _, not starting with a digit)"
        return None
    path = ref.get("file", "")
    if not path.strip():
        return "the secret file path is empty"
    if "\0" in path or "\n" in path or "\r" in path:
        return "the secret file path has a control character"
    return None


def resolve_path(base_dir: str, path: str) -> str:
    """Relative paths are relative to the YAML file's folder (base_dir as the user gave it)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not base_dir:
        return path
    return os.path.join(base_dir, path)


def read_env(name: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set")
    if value == "":
        raise SecretError(f"environment variable {name} is empty")
    return value


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
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"secret file {shown} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if text == "":
        raise SecretError(f"secret file {shown} is empty")
    if "\n" in text:
        raise SecretError(f"secret file {shown} has more than one line")
    return text


def check_one_line(value: str, shown: str) -> None:
    """Refuse a secret holding a control character (a line break from an env var, a tab, NUL):
    no server takes one as a password, and a server echoing it turns CR/LF into spaces, a form
    no exact-value redaction would find. The message names where it came from, never the value."""
    for c in value:
        if unicodedata.category(c) == "Cc":
            what = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab"}.get(c, f"control character U+{ord(c):04X}")
            raise SecretError(f"{shown} holds {what}; a secret is one line of printable text")


def resolve(
    ref: Mapping[str, str],
    base_dir: str,
    *,
    warn: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve one `{env: NAME}` / `{file: PATH}` reference. Raises SecretError."""
    if "env" in ref:
        value = read_env(ref["env"], environ)
        shown = f"environment variable {ref['env']}"
    elif "file" in ref:
        value = read_file(resolve_path(base_dir, ref["file"]), ref["file"], warn)
        shown = f"secret file {ref['file']}"
    else:
        raise SecretError("a secret reference is {env: NAME} or {file: PATH}")
    check_one_line(value, shown)
    return Resolved(describe(ref), sha256_hex(value), Secret(value))
