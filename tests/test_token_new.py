"""`reconciler token new`: strong token written once, YAML entry with its sha256 on stderr."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

from support.cli import Cli, Result

from reconciler.commands.token_new import strong_token


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """As a subprocess: the token is printed where a shell would see it."""
    return Cli(Path.cwd(), env=env or {})(*args)


def test_token_to_file_is_private_and_bare(tmp_path):
    out = tmp_path / "app.token"
    r = run("token", "new", "app", "--id", "2026-11", "--out", str(out), env={"RECONCILER_TODAY": "2026-11-23"})
    assert r.code == 0, r.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    content = out.read_text()
    assert content.endswith("\n") and content.count("\n") == 1
    token = content.strip()
    assert r.out == ""
    assert token not in r.err
    digest = re.search(r"sha256: ([0-9a-f]{64})", r.err).group(1)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert "- id: 2026-11" in r.err
    assert "created: 2026-11-23" in r.err and "expires: 2027-02-21" in r.err


def test_token_printed_once_to_stdout():
    r = run("token", "new", "app", "--id", "x")
    assert r.code == 0
    token = r.out.strip()
    assert len(token) >= 43
    assert token not in r.err
    assert hashlib.sha256(token.encode()).hexdigest() in r.err


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "t"
    out.write_text("keep me\n")
    r = run("token", "new", "app", "--id", "x", "--out", str(out))
    assert r.code == 1
    assert "Traceback" not in r.err and str(out) in r.err
    assert out.read_text() == "keep me\n"


def test_complexity_by_construction():
    for _ in range(200):
        t = strong_token(16)
        assert re.search(r"[A-Z]", t) and re.search(r"[a-z]", t) and re.search(r"[0-9]", t) and re.search(r"[-_]", t)
