"""A stop request during an apply (SIGINT, SIGTERM): providers finish the batch in flight, so
every command sent is audited and reported, instead of dying between a command and its record."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REQUESTED = threading.Event()  # providers check it between batches


@contextmanager
def handled() -> Iterator[threading.Event]:
    """While inside, SIGINT/SIGTERM set REQUESTED instead of raising; yields the event."""
    REQUESTED.clear()

    def stop(signum: int, frame: Any) -> None:
        REQUESTED.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield REQUESTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
