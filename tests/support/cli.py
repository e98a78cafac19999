"""Run the real CLI against a desired-state file the test rewrites step by step.

Two modes, one interface:

- in-process (`Cli(folder, capsys=capsys)`): `reconciler.cli.main()` in the test's process,
  output captured by pytest. Fast, and `monkeypatch` (environment, spies) reaches the code.
- subprocess (`Cli(folder, env={...})`): `python -m reconciler.cli` as a separate process
  with `env` added to the environment (`inherit=False`: to PATH alone, like `env -i`), run
  in `folder`: what a user's shell sees (real exit status, real stdout and stderr), for
  secret greps and CLI behaviour.

Every call returns a `Result` (code, out, err), which unpacks as a tuple, checks that no
traceback was printed, and is kept in `outputs` so a test can grep everything it saw.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from reconciler.cli import main

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "reconciler.cli"]


class Result(NamedTuple):
    code: int
    out: str
    err: str


class Cli:
    def __init__(
        self,
        folder: Path,
        *,
        capsys: pytest.CaptureFixture[str] | None = None,
        env: dict[str, str] | None = None,
        inherit: bool = True,
    ):
        if (capsys is None) == (env is None):
            raise ValueError("give capsys (in-process) or env (subprocess), not both")
        self.dir = folder
        self.file = folder / "access.yaml"
        self.capsys = capsys
        self.env = env
        self.inherit = inherit  # subprocess: start from this process's environment, or from PATH alone
        self.outputs: list[str] = []

    def __call__(self, *argv: str, expect: int | tuple[int, ...] | None = None) -> Result:
        if self.capsys is not None:
            code = main([*argv])
            out, err = self.capsys.readouterr()
            result = Result(code, out, err)
        else:
            assert self.env is not None
            base = dict(os.environ) if self.inherit else {"PATH": os.environ["PATH"]}
            env = {**base, "PYTHONPATH": str(REPO), **self.env}
            env.pop("RECONCILER_DEBUG", None)
            p = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, env=env, cwd=self.dir, timeout=120)
            result = Result(p.returncode, p.stdout, p.stderr)
        self.outputs.append(result.out + result.err)
        assert "Traceback" not in result.err, result.err
        if expect is not None:
            codes = expect if isinstance(expect, tuple) else (expect,)
            assert result.code in codes, f"{argv}: exit {result.code}\n{result.out}\n{result.err}"
        return result

    def write(self, text: str) -> None:
        self.file.write_text(text)

    def plan(self, text: str | None = None, *extra: str) -> Result:
        """`plan --detailed-exitcode` on the file (rewritten first when `text` is given)."""
        if text is not None:
            self.write(text)
        return self("plan", "-f", str(self.file), "--detailed-exitcode", *extra)

    def apply(self, text: str | None = None, *extra: str, expect: Any = None) -> Result:
        """`apply --auto-approve` on the file (rewritten first when `text` is given)."""
        if text is not None:
            self.write(text)
        return self("apply", "-f", str(self.file), "--auto-approve", *extra, expect=expect)

    def drift(self, *extra: str) -> Result:
        return self("drift", "-f", str(self.file), *extra)
