"""Drive the real CLI in-process against a desired-state file the test rewrites step by step."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main


class CliRun:
    """Writes access.yaml in `tmp`, runs `reconciler` on it, keeps every output for secret greps."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]):
        self.dir = tmp
        self.file = tmp / "access.yaml"
        self.capsys = capsys
        self.outputs: list[str] = []

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        rc = main([*argv])
        out, err = self.capsys.readouterr()
        self.outputs.append(out + err)
        assert "Traceback" not in err
        return rc, out, err

    def plan(self, text: str) -> tuple[int, str, str]:
        self.file.write_text(text)
        return self("plan", "-f", str(self.file), "--detailed-exitcode")

    def apply(self, text: str, *extra: str) -> tuple[int, str, str]:
        self.file.write_text(text)
        return self("apply", "-f", str(self.file), "--auto-approve", *extra)
