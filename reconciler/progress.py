"""Progress on stderr while the servers are read, written and verified: one line, rewritten
in place, only on a terminal (never when stderr is piped or redirected, never with --quiet,
never under TERM=dumb). Commands switch it on; the readers and the executor only report.

Tasks run in parallel (instances, nodes), so the line shows every running task:
`reading cache: 2/3 nodes | applying sessions 10.0.0.7:6379: setuser 3000/5000`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .plan import Plan

_MIN_INTERVAL = 0.1  # seconds between two redraws


class Reporter:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tasks: dict[str, str] = {}
        self.lock = threading.Lock()
        self.last = 0.0
        self.shown = False

    def update(self, key: str, text: str, *, force: bool = False) -> None:
        with self.lock:
            self.tasks[key] = text
            now = time.monotonic()
            if force or now - self.last >= _MIN_INTERVAL:
                self._draw()
                self.last = now

    def finish(self, key: str) -> None:
        with self.lock:
            self.tasks.pop(key, None)
            self._draw()

    def clear(self) -> None:
        with self.lock:
            self.tasks.clear()
            self._draw()

    def _draw(self) -> None:
        line = " | ".join(self.tasks.values())
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 0
        width = width if width > 0 else 80  # a terminal that reports no size
        if len(line) >= width:
            line = line[: max(0, width - 2)] + "…"
        if line or self.shown:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self.shown = bool(line)


_reporter: Reporter | None = None


def configure(*, quiet: bool = False, stream: TextIO | None = None) -> None:
    """Switch progress on when `stream` (stderr) is a terminal and nothing asks for quiet."""
    global _reporter
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    _reporter = Reporter(stream) if tty and not quiet and os.environ.get("TERM", "") != "dumb" else None


def clear() -> None:
    if _reporter is not None:
        _reporter.clear()


def counter(key: str, label: str, total: int, unit: str) -> Callable[[], None]:
    """A tick function for `total` units of work: "label: 3/10 unit"; the task goes away at total."""
    done = [0]
    lock = threading.Lock()
    if _reporter is not None:
        _reporter.update(key, f"{label}: 0/{total} {unit}", force=True)

    def tick() -> None:
        with lock:
            done[0] += 1
            n = done[0]
        if _reporter is None:
            return
        if n >= total:
            _reporter.finish(key)
        else:
            _reporter.update(key, f"{label}: {n}/{total} {unit}")

    return tick


def batch_hook(plan: Plan, batch_size: int) -> Callable[[str, str, str, int], None] | None:
    """The executor's between-batches hook: "applying cache 10.0.0.5:6379: setuser 3000/5000"."""
    if _reporter is None:
        return None
    totals: dict[tuple[str, str, str], int] = {}
    for inst in plan.instances:
        for node in inst.nodes:
            totals[(inst.name, node.address, "setuser")] = sum(1 for c in node.changes if c.action in ("create", "update"))
            totals[(inst.name, node.address, "deluser")] = sum(1 for c in node.changes if c.action == "delete")
            totals[(inst.name, node.address, "kill")] = sum(1 for c in node.changes if c.kill_sessions)
    first_batch: dict[tuple[str, str, str], int] = {}

    def hook(instance: str, address: str, step: str, batch_no: int) -> None:
        reporter = _reporter
        if reporter is None:
            return
        # batch_no counts every batch of the node; this step's first one sets its origin.
        start = first_batch.setdefault((instance, address, step), batch_no - 1)
        total = totals.get((instance, address, step), 0)
        done = min(total, (batch_no - start) * batch_size)
        key = f"apply {instance} {address}"
        if done >= total:
            reporter.finish(key)
        else:
            reporter.update(key, f"applying {instance} {address}: {step} {done}/{total}", force=True)

    return hook
