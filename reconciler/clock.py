"""The date a run judges expiry, token age and rotations against."""

from __future__ import annotations

import os
from datetime import date

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
