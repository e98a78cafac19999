"""`--since DURATION`: how far back a denials report looks (`90m`, `24h`, `7d`, `1h30m`)."""

from __future__ import annotations

import re

from ..errors import ReconcilerError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Nine digits a part: a window of centuries still parses, and a number too long for a float
# (or for Python's int parsing) is one clear error, not an internal one.
_PART = re.compile(r"(\d{1,9})([smhdw])")


def parse(text: str) -> float:
    """Seconds in `text`; one clear error for anything else."""
    s = text.strip().lower()
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ReconcilerError(f"--since {text!r}: expected a duration such as 30m, 24h, 7d or 1h30m (units s, m, h, d, w)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ReconcilerError(f"--since {text!r}: the window must be longer than 0 s")
    return float(seconds)
