"""A real process at its confirmation prompt: read its stdout up to `Enter a value`."""

from __future__ import annotations

import subprocess
import time


def until_prompt(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """What `proc` printed up to its confirmation prompt; fails the test if it never got there."""
    seen = ""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while "Enter a value" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stdout.read(1)
    assert "Enter a value" in seen, seen
    return seen
