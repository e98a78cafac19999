"""What an apply did, in one shape for every provider.

Each provider's apply returns an ApplyReport: one outcome per node it wrote (provider: redis)
or per managed instance, and the warnings the command shows. When an apply stops,
ApplyError.report holds what was done before the stop. Library code never prints: the
command renders the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Outcome(Protocol):
    """What one node or managed instance went through."""

    instance: str
    address: str
    error: str | None  # why it stopped; None when it completed

    def summary_lines(self) -> list[str]: ...


@dataclass
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """One line per completed node or instance: `cache 10.0.0.5:6379 (Valkey 9.1.2): 2 created, ...`."""
        return [line for o in self.outcomes if o.error is None for line in o.summary_lines()]

    def extend(self, other: ApplyReport) -> None:
        self.outcomes.extend(other.outcomes)
        self.warnings.extend(other.warnings)
