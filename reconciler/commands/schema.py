"""`reconciler schema`: print the desired-state JSON Schema (for editors and CI), or with
`--markdown` the YAML reference generated from it (docs/yaml-reference.md)."""

from __future__ import annotations

import argparse
import sys

from .. import resources, schema_doc


def run(args: argparse.Namespace) -> int:
    text = schema_doc.markdown() if args.markdown else resources.read_text(resources.SCHEMA)
    sys.stdout.write(text)
    return 0
