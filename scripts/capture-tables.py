#!/usr/bin/env python3
"""Capture the command tables bundled in reconciler/acl/tables/ from real servers.

    .venv/bin/python scripts/capture-tables.py [SERVER_ID ...]   (default: the whole test matrix)

Starts each server with tests/servers.py, reads COMMAND + ACL CAT once and writes
reconciler/acl/tables/<server>-<version>.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
TABLES_DIR = REPO / "reconciler" / "acl" / "tables"  # the source tree, not an installed copy

from servers import MATRIX, is_available, start_server  # noqa: E402 - after the sys.path lines above

from reconciler.acl.table import CommandTable  # noqa: E402 - after the sys.path lines above


def capture(server_id: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(server_id, Path(tmp) / server_id)
        try:
            table = CommandTable.read(srv.admin(), srv.server, srv.version)
        finally:
            srv.stop()
    path = TABLES_DIR / f"{table.name}.json"
    TABLES_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table.to_json(), separators=(",", ":")) + "\n")
    return path


def main(argv: list[str]) -> int:
    ids = argv or list(MATRIX)
    failed = 0
    for sid in ids:
        if not is_available(sid):
            print(f"{sid}: not installed (scripts/setup-servers.sh)", file=sys.stderr)
            failed += 1
            continue
        path = capture(sid)
        print(f"{sid}: {path.relative_to(REPO)} ({path.stat().st_size // 1024} KB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
