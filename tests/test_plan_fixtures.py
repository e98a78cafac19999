"""Golden tests of the pure planner: plan-fixtures/<case>/{desired.yaml, live.json} -> plan.txt, plan.json.

UPDATE_FIXTURES=1 rewrites the expected files for review. A case with `error.txt` instead
expects the planner to refuse with that message.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest

from reconciler import config, planner
from reconciler.errors import PlanError
from reconciler.plan import Plan
from reconciler.render import render_json, render_markdown, render_text
from reconciler.state import LiveState

ROOT = Path(__file__).resolve().parent.parent / "plan-fixtures"
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "desired.yaml").exists())
UPDATE = os.environ.get("UPDATE_FIXTURES") == "1"
FIXTURE_ENV = {"FIXTURE_ADMIN_TOKEN": "Fixture-admin-token-1!"}


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"{path} missing: run with UPDATE_FIXTURES=1 and review it"
    assert actual == path.read_text(), f"{path} differs from the planner's output"


def test_enough_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_fixture(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = ROOT / case
    for k, v in FIXTURE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(folder)
    raw = json.loads((folder / "live.json").read_text())
    today = date.fromisoformat(raw.get("today", "2026-11-23"))
    desired = config.load("desired.yaml", allow_expired=True, today=today)
    live = LiveState.from_json(raw)
    try:
        plan = planner.plan(desired, live, today=today)
    except PlanError as err:
        _check(folder / "error.txt", str(err) + "\n")
        assert not (folder / "plan.json").exists(), "the planner refused a case that expects a plan"
        return
    assert not (folder / "error.txt").exists(), f"expected the planner to refuse: {(folder / 'error.txt').read_text()}"
    _check(folder / "plan.txt", render_text(plan))
    _check(folder / "plan.json", render_json(plan))
    if (folder / "plan.md").exists() or UPDATE:
        _check(folder / "plan.md", render_markdown(plan))
    # data first: the JSON round-trips without loss
    assert Plan.from_json(json.loads(render_json(plan))) == plan
    # purity: the same inputs give the same plan
    assert planner.plan(desired, live, today=today) == plan
