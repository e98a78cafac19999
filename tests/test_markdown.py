"""Markdown plans for pull requests: a heading, `!` for changes in ```diff blocks, a size budget
(one GitHub comment) that keeps the summary table whole, and examples/pr-plan.yml run for real."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import Cli

REPO = Path(__file__).resolve().parent.parent
USERS = 5000


def big_file(address: str, users: int = USERS, acl: str = "~k:* +get") -> str:
    lines = ["version: 1", "instances:", "  cache:", f'    nodes: ["{address}"]', "users:"]
    for i in range(users):
        lines += [f"  app-{i:05d}:", f'    acl: "{acl}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys=capsys)


@pytest.fixture
def valkey(server_factory):
    return server_factory("valkey-9.1")


def test_5k_user_plan_fits_one_comment(valkey, run: Cli) -> None:
    run.file.write_text(big_file(valkey.address))
    rc, md, _ = run("plan", "-f", str(run.file), "--format", "markdown", "--out", str(run.dir / "plan.json"))
    assert rc == 0
    assert len(md) <= 65536
    assert md.startswith(f"## reconciler plan: {USERS} to add; 1 finding\n")  # default is nopass
    assert "| cache | 5000 | 0 | 0 | 1 |" in md  # the summary table, whole
    assert md.count("```") == 2 and md.count("<details>") == md.count("</details>") == 1
    (line,) = [ln for ln in md.splitlines() if "not shown" in ln]
    m = re.search(r"cache: ([\d,]+) of 5,000 changes and 1 of 1 findings not shown", line)
    assert m, line
    left_out = int(m.group(1).replace(",", ""))
    shown = md.count("\n+ user app-")
    assert shown + left_out == USERS and shown > 100
    assert "under 65,536 characters" in line and f"`{run.dir / 'plan.json'}` (JSON, from `--out`)" in line
    # Cut at a change boundary: the last change shown is whole (its rules line is there).
    body = md.split("```diff\n", 1)[1].split("```", 1)[0].splitlines()
    assert body[-1].startswith("+     ") and "keys: k:*" in "\n".join(body[-4:])
    # The saved plan is the whole plan.
    saved = json.loads((run.dir / "plan.json").read_text())
    assert sum(len(n["changes"]) for i in saved["instances"] for n in i["nodes"]) == USERS

    rc, small, _ = run("plan", "-f", str(run.file), "--format", "markdown", "--max-chars", "5000",
                       "--full-plan-hint", "the CI artifact")
    assert len(small) <= 5000 and small.rstrip().endswith("Full plan: the CI artifact")


def test_markdown_heading_and_bang_for_changes(valkey, run: Cli) -> None:
    run.file.write_text(big_file(valkey.address, users=2))
    assert run("apply", "-f", str(run.file), "--auto-approve")[0] == 0
    rc, md, _ = run("plan", "-f", str(run.file), "--format", "markdown")
    assert rc == 0 and md.startswith("## reconciler plan: 1 finding\n") and "not shown" not in md

    run.file.write_text(big_file(valkey.address, users=2, acl="~k:* +get +set") + '  new:\n    acl: "+ping"\n')
    rc, md, _ = run("plan", "-f", str(run.file), "--format", "markdown")
    assert md.startswith("## reconciler plan: 1 to add, 2 to change; 1 finding\n")
    body = md.split("```diff\n", 1)[1].split("```", 1)[0].splitlines()
    assert "! user app-00000" in body and "+ user new" in body
    assert not any(line.startswith("~") for line in body)  # `~` gets no diff highlighting
    # An update's lines carry their own sign: a grant is an addition.
    assert any(line.startswith("+") and "+ grants SET" in line for line in body), body


def _fake_gh(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'fake_gh.py'} \"$@\"\n")
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_pr_workflow_posts_one_comment_updated_in_place(valkey, tmp_path: Path) -> None:
    """The workflow's Plan and Comment steps, run with bash as Actions runs them, against a real
    server with a 5,000-user file: one comment under the limit; after apply, the same comment
    now says no changes."""
    import yaml

    wf = yaml.safe_load((REPO / "examples" / "pr-plan.yml").read_text())
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as true
    steps = wf["jobs"]["plan"]["steps"]
    plan_step = next(s for s in steps if s.get("id") == "plan")
    comment_step = next(s for s in steps if "gh api" in s.get("run", ""))
    assert comment_step["if"] == "steps.plan.outcome == 'success'"
    refused_step = steps[-1]
    assert refused_step["if"] == "steps.plan.outcome == 'success' && steps.plan.outputs.exit_code == '1'"

    work = tmp_path / "checkout"
    work.mkdir()
    (work / "access.yaml").write_text(big_file(valkey.address))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env.update(
        PATH=f"{_fake_gh(tmp_path)}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        ACCESS_FILE="access.yaml",
        GITHUB_SERVER_URL="https://github.example",
        GITHUB_REPOSITORY="acme/access",
        GITHUB_RUN_ID="77",
        PR_NUMBER="12",
        FAKE_GH_STATE=str(tmp_path / "gh.json"),
    )

    def step(script: str) -> tuple[int, dict[str, str], str]:
        out, summary = tmp_path / "gh_output", tmp_path / "gh_summary"
        out.write_text("")
        summary.write_text("")
        r = subprocess.run(check=False, args=["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work,
                           env={**env, "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)},
                           capture_output=True, text=True, timeout=300)
        assert "Traceback" not in r.stderr
        return r.returncode, dict(line.split("=", 1) for line in out.read_text().splitlines()), r.stderr

    code, outputs, err = step(plan_step["run"])
    assert (code, outputs) == (0, {"exit_code": "2"}), err
    assert json.loads((work / "plan.json").read_text())["instances"][0]["name"] == "cache"
    code, _, err = step(comment_step["run"])
    assert code == 0, err
    state = json.loads((tmp_path / "gh.json").read_text())
    (comment,) = state["comments"]
    assert comment["issue"] == 12 and len(comment["body"]) <= 65536
    assert comment["body"].startswith("<!-- reconciler-plan -->\n## reconciler plan: 5000 to add; 1 finding\n")
    assert "Full plan: plan.json in the `access-plan` artifact of [this run](https://github.example/acme/access/actions/runs/77)" in comment["body"]

    subprocess.run([str(Path(sys.executable).parent / "reconciler"), "apply", "-f", "access.yaml", "--auto-approve"],
                   cwd=work, env=env, check=True, capture_output=True, timeout=300)
    code, outputs, err = step(plan_step["run"])
    assert (code, outputs) == (0, {"exit_code": "0"}), err
    assert step(comment_step["run"])[0] == 0
    state = json.loads((tmp_path / "gh.json").read_text())
    (comment,) = state["comments"]  # updated in place, not a second comment
    assert comment["body"].startswith("<!-- reconciler-plan -->\n## reconciler plan: 1 finding\n")
    assert [c[0] for c in state["calls"]] == ["GET", "POST", "GET", "PATCH"]

    # A plan the safety rails refuse (prune would delete 4,990 of 5,001 users): the comment says
    # so at the top, then the last step fails the job.
    (work / "access.yaml").write_text(big_file(valkey.address, users=10).replace("users:\n", "    prune: true\nusers:\n", 1))
    saved_before = (work / "plan.json").read_text()
    code, outputs, err = step(plan_step["run"])
    assert (code, outputs) == (0, {"exit_code": "1"}), err
    assert (work / "plan.json").read_text() == saved_before  # a refused plan is not saved
    assert step(comment_step["run"])[0] == 0
    (comment,) = json.loads((tmp_path / "gh.json").read_text())["comments"]
    assert comment["body"].startswith("<!-- reconciler-plan -->\n## reconciler plan: refused by the safety rails; 4990 to destroy")
    assert "> [!CAUTION]" in comment["body"] and "`reconciler apply --force` would allow these deletions" in comment["body"]
    assert step(refused_step["run"])[0] == 1

    # A failing plan (wrong server address) fails the step with exit_code 1; no comment step.
    (work / "access.yaml").write_text(big_file("127.0.0.1:1", users=1))
    code, outputs, _ = step(plan_step["run"])
    assert (code, outputs) == (1, {"exit_code": "1"})


def test_budget_holds_with_many_instances() -> None:
    """Pure renderer: 300 instances with 20 changes each in 4,000 characters: the table is
    whole only if it fits; the text never exceeds the budget and says what it left out."""
    from reconciler.plan import InstancePlan, NodePlan, Plan, UserChange
    from reconciler.render import Budget, render_markdown

    def inst(i: int) -> InstancePlan:
        changes = tuple(UserChange(action="create", user=f"u{j}", rules="+get") for j in range(20))
        node = NodePlan(address=f"10.0.{i // 250}.{i % 250}:6379", role="primary", label="Valkey 9.1.2",
                        fingerprint="0" * 64, changes=changes)
        return InstancePlan(name=f"cache-{i:03d}", topology="standalone", nodes=(node,))

    plan = Plan(source="access.yaml", instances=tuple(inst(i) for i in range(300)))
    whole = render_markdown(plan, title="t", budget=Budget(max_chars=10**7))
    assert len(whole) > 100_000 and "not shown" not in whole
    md = render_markdown(plan, title="t", budget=Budget(max_chars=40_000, full_plan="the artifact"))
    assert len(md) <= 40_000
    assert md.count("| cache-") == 300  # the summary table, whole
    assert md.rstrip().endswith("more instances left out here.** Full plan: the artifact")
    assert "cache-000: 20 of 20 changes not shown" in md
