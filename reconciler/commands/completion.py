"""`reconciler completion bash|zsh`: a completion script generated from the argument parser,
so it always knows every command and option of this version."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    import shtab

    from ..cli import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0
