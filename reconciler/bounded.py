"""A blocking call that nothing can interrupt (a name lookup, a request whose answer trickles in a
byte at a time), waited for no longer than its time: it runs in a daemon thread, and the caller
stops waiting for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Abandoned(Exception):
    """The call did not return in time; its thread is left to end on its own."""


def call_within(seconds: float, fn: Callable[[], T], name: str) -> T:
    """fn()'s value, or the exception it raised, if it ends within `seconds`; else Abandoned.
    An abandoned call must hold nothing the caller goes on using (drop its connection)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller, which words it
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        raise Abandoned(name)
    if "error" in box:
        raise box["error"]
    return box["value"]
