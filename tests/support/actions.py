"""A GitHub Actions `run:` step of an example workflow, run with bash as the runner runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class StepResult(NamedTuple):
    code: int
    outputs: dict[str, str]  # what the step wrote to $GITHUB_OUTPUT
    summary: str  # what it wrote to $GITHUB_STEP_SUMMARY
    log: str  # its stdout and stderr


def run_step(script: str, env: dict[str, str], cwd: Path) -> StepResult:
    out, summary = cwd / "gh_output", cwd / "gh_summary"
    out.write_text("")
    summary.write_text("")
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd,
                       env={**env, "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)},
                       capture_output=True, text=True, timeout=120)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    return StepResult(r.returncode, outputs, summary.read_text(), r.stdout + r.stderr)
