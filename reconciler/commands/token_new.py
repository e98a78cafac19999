"""`reconciler token new`: a strong random token, written once, and the YAML entry to paste.

    token new USER --id ID [--length N] [--out FILE | --sink vault:PATH#FIELD] [-f FILE]

The token goes to --out (mode 0600), to a store (--sink: then only the entry is printed, on
stdout), or to stdout with the entry on stderr. The checks and the writing are token_issue.py's.
"""

from __future__ import annotations

import argparse
import sys

from .. import token_issue
from ..tokengen import strong_token  # noqa: F401 - named here by callers of the command's module

__all__ = ["run", "strong_token"]


def run(args: argparse.Namespace) -> int:
    issued = token_issue.issue(token_issue.Request(
        user=args.user, token_id=args.token_id, length=args.length, out=args.out, sink=getattr(args, "sink", None), file=args.file,
    ))
    if issued.token is not None:
        sys.stdout.write(issued.token + "\n")
    print("\n".join(issued.entry), file=sys.stdout if issued.stored else sys.stderr)
    return 0
