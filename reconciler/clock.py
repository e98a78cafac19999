"""The day and time a run judges by: expiry, token age, rotation schedules. RECONCILER_TODAY
pins the day (tests, what-if runs); everything that asks the date asks here."""

from __future__ import annotations

import os
from datetime import date, datetime, timezone

from .errors import ReconcilerError


def today() -> date:
    """The date expiry is judged against; RECONCILER_TODAY=YYYY-MM-DD pins it (tests, what-if runs)."""
    pinned = os.environ.get("RECONCILER_TODAY")
    if pinned:
        try:
            return date.fromisoformat(pinned)
        except ValueError:
            raise ReconcilerError(f"RECONCILER_TODAY={pinned!r} is not a YYYY-MM-DD date") from None
    return date.today()


def now_utc() -> datetime:
    """Now; RECONCILER_TODAY=YYYY-MM-DD moves it to that day (same time of day), as it moves expiry."""
    real = datetime.now(timezone.utc)
    day = today()
    return real if day == real.date() else datetime.combine(day, real.timetz())
