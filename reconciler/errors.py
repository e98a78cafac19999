"""Exceptions that the CLI turns into one clear line each, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


class ConfigError(ReconcilerError):
    """The desired-state file is invalid; carries every problem found, sorted by line."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class LiveError(ReconcilerError):
    """A node could not be read or written (`cache-prod 10.0.0.5:6379: AUTH failed ...`)."""


class PlanError(ReconcilerError):
    """The desired state cannot be planned against this live state (e.g. selectors on 6.2)."""


class ApplyError(ReconcilerError):
    """Execution stopped; the message says what was applied and what was not."""

    result: Any = None  # the partial ApplyResult: what was done before the stop
