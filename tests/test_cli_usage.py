"""Usage errors exit 1 on every command (2 means only "changes" or "drift"); help text with
examples and the environment; help on every option; shell completion."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
RECONCILER = str(Path(sys.executable).parent / "reconciler")


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subparsers(sub, (*path, name))


COMMANDS = [path for path, _ in _subparsers(build_parser())]

USAGE_ERRORS = [
    [],
    ["bogus"],
    ["--bogus"],
    ["validate"],
    ["plan"],
    ["plan", "-f", "x.yaml", "--format", "yaml"],
    ["plan", "-f"],
    ["drift"],
    ["drift", "-f", "x.yaml", "--format", "html"],
    ["import"],
    ["import", "-f", "x.yaml"],
    ["explain"],
    ["explain", "app"],
    ["token"],
    ["token", "new"],
    ["token", "new", "app"],
    ["token", "new", "app", "--id", "1", "--length", "many"],
    ["token", "bogus"],
    ["completion"],
    ["completion", "tcsh"],
    ["apply", "a.json", "b.json"],
]


def test_commands_are_all_covered() -> None:
    assert set(COMMANDS) >= {("validate",), ("plan",), ("apply",), ("drift",), ("import",), ("explain",),
                             ("token",), ("token", "new"), ("completion",)}


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "(none)")
def test_usage_error_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: reconciler" in err and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_unknown_flag_exits_1_on_every_command(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--no-such-flag"]) == 1
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err or "required" in err or "invalid choice" in err


def test_console_script_usage_errors_exit_1() -> None:
    """The installed entry point, as a scheduler runs it: `reconciler drift; echo $?` is 1, not 2."""
    for argv in (["drift"], ["plan", "--nope"], []):
        r = subprocess.run(check=False, args=[RECONCILER, *argv], capture_output=True, text=True)
        assert r.returncode == 1, (argv, r.stderr)
        assert "error:" in r.stderr


def test_apply_without_file_or_plan_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply"]) == 1
    assert "apply needs -f FILE or a saved PLAN.json" in capsys.readouterr().err


def test_help_has_examples_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    for needle in ("examples:", "apply -f access.yaml --bootstrap", "environment:", "NO_COLOR", "TERM=dumb",
                   "RECONCILER_TODAY", "RECONCILER_DEBUG", "exit codes:"):
        assert needle in out, needle
    for path in COMMANDS:
        assert main([*path, "-h"]) == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: reconciler " + " ".join(path))
        if path != ("token",):
            assert "examples:" in text, path


def test_every_option_has_help() -> None:
    hidden = {"--allow-expired"}  # accepted on plan/apply for symmetry with validate; a no-op there
    missing = []
    for path, sub in [((), build_parser()), *_subparsers(build_parser())]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if action.help == argparse.SUPPRESS and name in hidden:
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {name}")
    assert missing == []


def test_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("reconciler ")


def test_bash_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    for word in ("plan", "apply", "drift", "--detailed-exitcode", "--bootstrap", "--no-color"):
        assert word in script
    path = tmp_path / "reconciler.bash"
    path.write_text(script)
    assert subprocess.run(check=False, args=["bash", "-n", str(path)]).returncode == 0
    # Completing `reconciler pl<TAB>` in a real bash offers `plan`.
    probe = f'source {path}; COMP_WORDS=(reconciler pl); COMP_CWORD=1; COMP_LINE="reconciler pl"; ' \
            f'COMP_POINT=${{#COMP_LINE}}; _shtab_reconciler reconciler pl reconciler; printf "%s\\n" "${{COMPREPLY[@]}}"'
    r = subprocess.run(check=False, args=["bash", "--noprofile", "--norc", "-c", probe], capture_output=True, text=True)
    assert "plan" in r.stdout.split(), r.stdout + r.stderr


def test_zsh_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef reconciler") and "--detailed-exitcode" in script
    if shutil.which("zsh"):
        assert subprocess.run(check=False, args=["zsh", "-n"], input=script, text=True).returncode == 0


# The least each command needs before an unknown flag is the only problem left.
MINIMAL_ARGS = {("plan",): ["-f", "x"], ("drift",): ["-f", "x"], ("validate",): ["-f", "x"], ("explain",): ["u", "-f", "x"],
                ("import",): ["--node", "h:1"], ("token", "new"): ["u", "--id", "1"], ("completion",): ["bash"],
                ("schema",): [], ("apply",): [], ("local-server", "start"): [], ("local-server", "stop"): [],
                ("local-server", "status"): [], ("denials",): ["-f", "x"], ("rotate",): ["-f", "x"]}


def test_minimal_args_cover_every_command() -> None:
    leaves = {path for path, sub in _subparsers(build_parser())
              if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)}
    assert leaves <= set(MINIMAL_ARGS), sorted(leaves - set(MINIMAL_ARGS))


@pytest.mark.parametrize("path", list(MINIMAL_ARGS), ids=" ".join)
def test_unknown_flag_prints_the_subcommands_usage(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """`reconciler plan -f x --bogus` shows plan's usage, not the list of commands."""
    assert main([*path, *MINIMAL_ARGS[path], "--bogus"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"usage: reconciler {' '.join(path)} "), err
    assert f"reconciler {' '.join(path)}: error: unrecognized arguments: --bogus" in err


def test_fish_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 0
    script = capsys.readouterr().out
    assert "complete -c reconciler -n '__fish_use_subcommand' -a plan" in script and "-l detailed-exitcode" in script
    fish = shutil.which("fish")
    if fish is None:
        assert not os.environ.get("CI"), "fish is missing (scripts/setup-servers.sh installs it)"
        pytest.skip("fish is not installed")
    path = tmp_path / "reconciler.fish"
    path.write_text(script)
    assert subprocess.run([fish, "-n", str(path)], check=False).returncode == 0

    def complete(line: str) -> list[str]:
        r = subprocess.run([fish, "--no-config", "-c", f"source {path}; complete -C {line!r}"],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
        return [entry.split("\t")[0] for entry in r.stdout.splitlines()]

    # What a user gets at <TAB> in a real fish.
    assert "plan" in complete("reconciler pl")
    assert complete("reconciler plan --form") == ["--format"]
    assert sorted(complete("reconciler plan --format ")) == ["json", "markdown", "text"]
    assert complete("reconciler token ") == ["new"]
    assert "--id" in complete("reconciler token new --")
    assert sorted(complete("reconciler completion ")) == ["bash", "fish", "zsh"]
    assert "--target" in complete("reconciler apply --ta")


def test_help_names_the_supported_shells(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "-h"]) == 0
    assert "bash, zsh or fish" in capsys.readouterr().out
