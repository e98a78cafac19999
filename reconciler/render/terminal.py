"""Terminal conventions: when to color, when to show progress."""

from __future__ import annotations

import argparse
import os
from typing import TextIO


def plain_terminal() -> bool:
    """NO_COLOR (any non-empty value, no-color.org) or TERM=dumb: no escape sequences at all."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM", "") == "dumb"


def use_color(args: argparse.Namespace | None, stream: TextIO) -> bool:
    if args is not None and getattr(args, "no_color", False):
        return False
    return _isatty(stream) and not plain_terminal()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
