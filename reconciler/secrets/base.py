"""What every secret source shares: the error it raises, what a read returns, and the run's
context (where relative paths start, the environment, what the operator allowed, deadlines).

A source is one module of this package (env.py, file.py, vault.py, exec.py) with:

    KEY                       the reference's key: `secret: {KEY: spec}`
    well_formed(spec) -> bool the spec has the schema's shape (else the schema reported it)
    describe(spec) -> str     the reference in messages and plans ("vault:secret/apps/orders#token")
    shape(spec) -> str|None   what is wrong with its form, without reading it (plain validate)
    prefetch(specs, ctx)      optional: read many references at once (one request per store path)
    read(spec, ctx)           -> Fetched | Absent; raises SecretError (never with a value in it)

registry.py maps KEY -> module; __init__.Session runs them and passes every value through one
place (`accept`), whatever its source.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Mapping

from ..errors import ReconcilerError

MAX_SECRET_BYTES = 64 * 1024  # a bigger "secret" is the wrong file or the wrong command

DEFAULT_STORE_DEADLINE = 5.0  # seconds; the instances' timeout_seconds default


class SecretError(ReconcilerError):
    """A reference that can't be resolved; str() names the reference, never a value.

    once: the cause is shared by other references (the store is unreachable, exec is not
    allowed, the same command or store version fails for every entry that names it): a file with
    many such references reports it at the first one only. True: references with the same
    message share it; a string: those with the same string (e.g. the same argv) do."""

    def __init__(self, message: str, *, once: bool | str = False):
        super().__init__(message)
        self.once = once

    @property
    def once_key(self) -> str | None:
        if not self.once:
            return None
        return self.once if isinstance(self.once, str) else str(self)


@dataclass(frozen=True)
class Fetched:
    """A plaintext as a source read it, before the common checks (`accept`)."""

    value: str = field(repr=False)
    created: date | None = None  # when the store made this version (vault's created_time)
    shown: str | None = None  # where it came from, in words ("environment variable X"); else the reference


@dataclass(frozen=True)
class Absent:
    """A reference to a version the store does not have yet: vault `version: -1` on a path that
    has one version. Not an error: the first rotation starts there; plans say "none yet"."""

    source: str
    reason: str


@dataclass
class Context:
    """One run's view of the world, shared by every source (and their caches)."""

    base_dir: str = ""  # the YAML file's folder as the user named it ("" = the working directory)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    warn: Callable[[str], None] | None = None
    allow_exec: bool = False  # --allow-exec or RECONCILER_ALLOW_EXEC=1, never the file
    store_deadline: float = DEFAULT_STORE_DEADLINE  # seconds a run's store reads may take, all together
    caches: dict[str, Any] = field(default_factory=dict)  # source KEY -> that source's cache

    def cache(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self.caches:
            self.caches[key] = factory()
        return self.caches[key]


def one_line(text: str) -> str:
    """`text` with one trailing newline (LF or CRLF) stripped, as files and commands end lines."""
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    return text


def single_line(raw: bytes, shown: str) -> str:
    """A file's or a command's bytes as one line of text (one trailing newline stripped);
    SecretError naming `shown` ("secret file x.token", "the output of command sops") otherwise."""
    try:
        text = one_line(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretError(f"{shown} is not UTF-8 text") from None
    if text == "":
        raise SecretError(f"{shown} is empty")
    if "\n" in text:
        raise SecretError(f"{shown} has more than one line")
    return text


def check_one_line(value: str, shown: str) -> None:
    """Refuse a secret holding a control character (a line break from an env var, a tab, NUL):
    no server takes one as a password, and a server echoing it turns CR/LF into spaces, a form
    no exact-value redaction would find. The message names where it came from, never the value."""
    for c in value:
        if unicodedata.category(c) == "Cc":
            what = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab"}.get(c, f"control character U+{ord(c):04X}")
            raise SecretError(f"{shown} holds {what}; a secret is one line of printable text")


def has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


_UNSEEN = ("Cc", "Cf", "Cs", "Zl", "Zp")  # controls (C0, DEL, C1), format (bidi overrides), lone surrogates, line/paragraph separators


def shown(text: str) -> str:
    """A reference's text (a command, a path) for a message: every control, format or separator
    character escaped (`\\x1b`, `\\u202e`), so a file can't put a terminal escape or a line
    break into the one line an error is, or make a name print as another."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSEEN else c for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
