"""A stop request during an apply (SIGINT, SIGTERM): providers finish the batch in flight, so
every command sent is audited and reported, instead of dying between a command and its record.

Outside the executor (verify, the steps of `apply --bootstrap`, taking a lock, the prompt) Ctrl-C
raises KeyboardInterrupt as usual, and so does SIGTERM (terminate_as_interrupt); the line the CLI then prints comes from DONE, the record of what
this run has changed on servers: "nothing was changed" only when nothing was.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Plan

REQUESTED = threading.Event()  # providers check it between batches
SHOWN = 8  # labels listed per node in the interrupt line


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


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside (a whole CLI command), SIGTERM is a stop request like Ctrl-C: it raises
    KeyboardInterrupt outside the executor too (verify, between bootstrap steps, at the
    prompt), so the CLI says what was done instead of dying silently. Only the main thread
    can set handlers; a SIGTERM the caller ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Ledger:
    """What this run changed on servers so far (thread-safe: nodes run in parallel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.planned: dict[str, int] = {}  # instance -> changes the run means to make (per node)
        self.done: dict[str, dict[str, list[str]]] = {}  # instance -> node -> what was done there
        self.changes: dict[str, int] = {}  # instance -> changes done

    def reset(self) -> None:
        with self._lock:
            self.planned.clear()
            self.done.clear()
            self.changes.clear()

    def expect(self, plan: "Plan") -> None:
        """The whole run's plan (for `apply --bootstrap`, all three steps): the "of N" count."""
        with self._lock:
            for inst in plan.instances:
                self.planned[inst.name] = sum(len(n.changes) + len(n.config) for n in inst.nodes)

    def record(self, instance: str, node: str, what: str, *, change: bool) -> None:
        with self._lock:
            self.done.setdefault(instance, {}).setdefault(node, []).append(what)
            if change:
                self.changes[instance] = self.changes.get(instance, 0) + 1

    def lines(self) -> list[str]:
        """`interrupted after 3 of 5 changes on cache: ...; run apply again` per instance touched."""
        with self._lock:
            out = []
            for instance, nodes in self.done.items():
                total = self.planned.get(instance)
                count = self.changes.get(instance, 0)
                of = f"{count} of {total}" if total is not None else str(count)
                parts = []
                for node, what in nodes.items():
                    more = f", and {len(what) - SHOWN} more" if len(what) > SHOWN else ""
                    parts.append(f"{node}: {', '.join(what[:SHOWN])}{more}")
                out.append(
                    f"interrupted after {of} change{'s' if (total or count) != 1 else ''} on {instance}: "
                    f"{'; '.join(parts)}; run apply again to finish"
                )
            return out


DONE = Ledger()
