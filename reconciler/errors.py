"""Exceptions that the CLI turns into one clear line each, never a traceback."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO


class ReconcilerError(Exception):
    """Base: anything the CLI reports as `reconciler: <message>` with exit 1."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: `FILE:LINE: YAML.PATH: message`."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


MAX_PROBLEMS = 100  # a hostile or broken file must not print hundreds of thousands of lines


@dataclass(frozen=True)
class MoreProblems(Problem):
    """The last line of a capped list: how many problems were left out."""

    count: int = 0

    def __str__(self) -> str:
        return f"{self.file}: ... and {self.count} more problems (fix these first)"


class ConfigError(ReconcilerError):
    """The desired-state file is invalid; carries the problems found, sorted by line (the first
    MAX_PROBLEMS, then one line saying how many more)."""

    def __init__(self, problems: list[Problem]):
        omitted = sum(p.count for p in problems if isinstance(p, MoreProblems))
        ordered = sorted((p for p in problems if not isinstance(p, MoreProblems)), key=lambda p: (p.file, p.line, p.path))
        omitted += max(0, len(ordered) - MAX_PROBLEMS)
        ordered = ordered[:MAX_PROBLEMS]
        if omitted:
            file = ordered[0].file if ordered else next(p.file for p in problems)
            ordered.append(MoreProblems(file, 0, "", "", omitted))
        self.problems: list[Problem] = ordered
        super().__init__("\n".join(str(p) for p in self.problems))


class LiveError(ReconcilerError):
    """A node could not be read or written (`cache-prod 10.0.0.5:6379: AUTH failed ...`)."""


class PlanError(ReconcilerError):
    """The desired state cannot be planned against this live state (e.g. selectors on 6.2)."""


class ApplyError(ReconcilerError):
    """Execution stopped; the message says what was applied and what was not, and `report`
    (a report.ApplyReport, when anything ran) what was done before the stop."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


# -- redaction ---------------------------------------------------------------------------------
# Messages never contain secret values: they name the reference (`env:APP_TOKEN`), never the
# value. Redaction is the backstop for what a server echoes back: every plaintext secret the
# process holds (admin secrets, token plaintexts) is remembered here by value when it is read,
# and every line the tool prints, logs or audits passes redact_secrets. A server's error text
# can echo any argument it was sent (`rename-command AUTH ""` makes AUTH an unknown command whose
# arguments come back in the error, quoted and with CR/LF turned into spaces).
#
# Substring redaction only means something for values that no ordinary word contains: a
# secret of SUBSTRING_MIN characters or more is redacted wherever it occurs (and as a prefix of
# that length, since servers cut long arguments). A shorter one is redacted only where it
# stands whole between quotes, as servers echo arguments: replacing a short value inside a word
# ("is (redacted)er than" for `short`) garbles the line and tells the value by its position.

SUBSTRING_MIN = 12
_QUOTES = ("'", '"', "`")
REDACTED = "(redacted)"
_SECRETS: set[str] = set()
_ORDERED: list[str] = []  # long secrets, longest first, rebuilt when one is added
_SHORT: list[str] = []  # secrets shorter than SUBSTRING_MIN, longest first
_BY_HEAD: dict[str, list[str]] = {}  # first SUBSTRING_MIN characters -> long secrets, longest first
_STALE = [False]  # the three indexes above lag _SECRETS
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")
# Above this many (secrets x characters), one pass over the text is cheaper than one search per secret.
_SCAN_ABOVE = 20_000_000
# Names up to this long are redacted in one pass over them (redact_name).
_NAME_SCAN_MAX = 4096
# What servers do to an argument they echo in an error (Redis/Valkey rejectCommandFormat).
_ECHOED = str.maketrans({"\r": " ", "\n": " "})


def remember_secret(value: str) -> None:
    """Remember a plaintext for redaction, with the form a server echoes it in."""
    for form in {value, value.translate(_ECHOED)}:
        # Any length: an admin password of 3 characters is still the admin's password (it is
        # redacted where a server echoes it whole between quotes, like any short one).
        if form.strip() and form not in _SECRETS:
            _SECRETS.add(form)
            _STALE[0] = True


def forget_secrets() -> None:
    """Start a run with nothing remembered: a process that runs several commands (an in-process
    caller, the tests) redacts each run's output by that run's own secrets, as a new process would."""
    _SECRETS.clear()
    _STALE[0] = True


def _index() -> None:
    # Rebuilt once before the next redaction, not per secret: a file with thousands of tokens
    # would otherwise sort the whole list once per token.
    if not _STALE[0]:
        return
    _ORDERED[:] = sorted((s for s in _SECRETS if len(s) >= SUBSTRING_MIN), key=len, reverse=True)
    _SHORT[:] = sorted((s for s in _SECRETS if len(s) < SUBSTRING_MIN), key=len, reverse=True)
    _BY_HEAD.clear()
    for secret in _ORDERED:
        _BY_HEAD.setdefault(secret[:SUBSTRING_MIN], []).append(secret)
    _STALE[0] = False


def redact_secrets(text: str) -> str:
    """Every remembered secret in `text` replaced: long ones whole or as a prefix of at least
    SUBSTRING_MIN characters, short ones only where they stand whole between quotes."""
    if not _SECRETS or not text:
        return text
    _index()
    if len(_ORDERED) * len(text) > _SCAN_ABOVE:
        text = _scan(text)
    else:
        for secret in _ORDERED:
            if secret[:SUBSTRING_MIN] in text:
                text = _redact_prefixes(text, secret)
    for secret in _SHORT:
        if secret in text:
            for q in _QUOTES:
                text = text.replace(q + secret + q, q + REDACTED + q)
    return text


def _extent(text: str, i: int, candidates: list[str]) -> int:
    """How far from i the text follows the longest-matching of the secrets sharing its head."""
    longest = SUBSTRING_MIN
    for secret in candidates:
        k = SUBSTRING_MIN
        while k < len(secret) and i + k < len(text) and text[i + k] == secret[k]:
            k += 1
        longest = max(longest, k)
    return longest


def _scan(text: str) -> str:
    """One pass over the text (thousands of secrets, a large output): linear in the text."""
    out: list[str] = []
    last = i = 0
    end = len(text) - SUBSTRING_MIN + 1
    while i < end:
        candidates = _BY_HEAD.get(text[i : i + SUBSTRING_MIN])
        if candidates:
            out.append(text[last:i] + REDACTED)
            last = i = i + _extent(text, i, candidates)
            continue
        i += 1
    out.append(text[last:])
    return "".join(out)


def _redact_prefixes(text: str, secret: str) -> str:
    """Each occurrence of the secret's first SUBSTRING_MIN characters, extended as far as it
    or another secret with the same head goes on, replaced (a whole secret, or the prefix a
    server cut it to; a secret and the form a server echoes it in share their head)."""
    out: list[str] = []
    i = 0
    head = secret[:SUBSTRING_MIN]
    while True:
        j = text.find(head, i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j] + REDACTED)
        i = j + _extent(text, j, _BY_HEAD[head])


def redact_name(text: str) -> str:
    """A name a client sent (an ACL LOG user, key or channel name) with every secret cut out,
    before anything escapes or cuts it: once escaped for display (`"` as `\\"`), a secret no
    longer reads as itself and the output's redaction would miss what follows its first
    unusual character. A name that is a secret whole is redacted however short it is."""
    if not _SECRETS or not text:
        return text
    if text in _SECRETS:
        return REDACTED
    if len(text) > _NAME_SCAN_MAX:
        return redact_secrets(text)
    # A report holds thousands of names and a file may hold thousands of tokens: one pass over
    # the (short) name, not one search per secret.
    _index()
    return _scan(text) if _ORDERED else text


def redact(text: str) -> str:
    """For error text and audit records: secrets by value, and every run of 16+ hex digits (a
    hash, which servers echo back from a refused `#<hash>`) cut to its first 8."""
    return _HEX_RUN.sub(lambda m: m.group(0)[:8] + "…", redact_secrets(text))


class RedactingStream:
    """A text stream that passes everything written through redact_secrets."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_secrets(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def redacted_output() -> Iterator[None]:
    """sys.stdout and sys.stderr redacted for the duration (the CLI runs every command in it)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
