"""User names exactly as the servers hold them, and how they are shown.

A server's user name is any bytes but ASCII whitespace and NUL (Redis refuses only those), so
two names can print alike: `app` and `app` + U+00A0, or a Cyrillic `а` for a Latin `a`. The
reader keeps every name byte for byte (bytes that are not UTF-8 travel as the surrogates of
Python's `surrogateescape`, so they go back to the server unchanged), and everything shown to
a person or written to a file uses `shown()`: a name the file could declare as it is, any
other name in double quotes with every character outside printable ASCII escaped.
"""

from __future__ import annotations

import re

# The schema's `username` pattern (schemas/desired-state.schema.json `$defs.username`; a test
# keeps the two equal). Names outside it are live-only: shown escaped, never declarable.
DECLARABLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,127}\Z")
# Redis refuses names and patterns with C isspace() characters or NUL (ACLStringHasSpaces).
_ASCII_SPACE = re.compile(r"[ \t\n\v\f\r]+")


def split_words(text: str) -> list[str]:
    """`text` split on ASCII whitespace only, as servers split rules and names: a key pattern
    or name may hold any other character, Unicode spaces included, which str.split() would
    split on too."""
    if text.isascii():
        return text.split()  # the same for ASCII text, and faster
    return [w for w in _ASCII_SPACE.split(text) if w]


def declarable(name: str) -> bool:
    """Whether a desired-state file can declare this user name."""
    return DECLARABLE.match(name) is not None


def shown(name: str) -> str:
    """The name for output: as it is when the file could declare it, else quoted and escaped
    (`"app\\u00a0"`; a byte that is not UTF-8 as `\\xff`)."""
    if declarable(name):
        return name
    return '"' + "".join(_escape(ch) for ch in name) + '"'


def printable(text: str) -> str:
    """`text` with every character outside printable ASCII escaped (for a comment line, where a
    raw U+2028 would even end the line for YAML)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch if ch == " " or ch in '"\\' else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in '"\\':
        return "\\" + ch
    if 0x20 < code < 0x7F:
        return ch
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: a raw byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def why_not_declarable(name: str) -> str:
    """Why a live name can't be written in the file (for import's comments)."""
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in name):
        return "the name is not UTF-8 text, which a YAML file cannot hold"
    if len(name) > 128:
        return f"the name is {len(name)} characters long; the file allows at most 128"
    return "the file allows only letters, digits and _ . : @ + = - in user names (starting with a letter, digit or _)"
