"""What `import` writes reads back as written: token ids are the hash's first 8 hex digits, and
some of those look like numbers (`123e4567`, `01234567`, `12345678`). The reader resolves every
bare word as PyYAML's SafeLoader (which import's writer quotes for) does, so the imported file
always validates and plans as a no-op."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import pytest
from servers import RunningServer
from support.cli import Cli

SERVERS = [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("redis-7.0", "valkey-9.1")]
ADMIN = "roundtrip-admin-plaintext-2c4e6a8b0d1f3957"

# Hash prefixes that a YAML 1.2 core-schema reader takes for numbers (1e3 style floats, some
# infinite), YAML 1.1 octal and plain integers.
LOOKS_NUMERIC = {
    "float": re.compile(r"[0-9]+e[0-9]+"),
    "octal": re.compile(r"0[0-7]{7}"),
    "integer": re.compile(r"[1-9][0-9]{7}"),
}


def _plaintext_whose_hash_prefix(pattern: re.Pattern[str]) -> str:
    for i in itertools.count():
        text = f"roundtrip-token-{i:06d}-abcdefghij"
        if pattern.fullmatch(hashlib.sha256(text.encode()).hexdigest()[:8]):
            return text
    raise AssertionError("unreachable")


@pytest.mark.parametrize("server_id", SERVERS)
def test_import_with_number_like_token_ids_validates_and_plans_clean(server_id: str, server_factory, tmp_path: Path, monkeypatch, capsys) -> None:
    srv: RunningServer = server_factory(server_id)
    admin = srv.admin()
    admin.execute_command("ACL", "SETUSER", "admin", "on", f">{ADMIN}", "~*", "&*", "+@all")
    for kind, pattern in LOOKS_NUMERIC.items():
        admin.execute_command("ACL", "SETUSER", f"app-{kind}", "on", f">{_plaintext_whose_hash_prefix(pattern)}", "~k:*", "+get")
    monkeypatch.setenv("T_ADMIN", ADMIN)
    monkeypatch.setenv("NO_COLOR", "1")
    cli = Cli(tmp_path, capsys=capsys)
    out = tmp_path / "imported.yaml"
    cli("import", "--node", srv.address, "--admin-user", "admin", "--admin-secret-env", "T_ADMIN", "--out", str(out), expect=0)
    assert cli("validate", "-f", str(out))[0] == 0
    code, text, _ = cli("plan", "-f", str(out), "--detailed-exitcode", "--format", "json")
    doc = json.loads(text)
    assert code == 0 and not [c for i in doc["instances"] for n in i["nodes"] for c in n["changes"]]
    ids = {line.split(":", 1)[1].strip().strip("'\"") for line in out.read_text().splitlines() if line.strip().startswith("- id:")}
    for pattern in LOOKS_NUMERIC.values():
        assert any(pattern.fullmatch(i) for i in ids), ids
