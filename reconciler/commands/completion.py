"""`reconciler completion bash|zsh|fish`: a completion script generated from the argument
parser, so it always knows every command and option of this version. bash and zsh come from
shtab; fish (which shtab does not write) from the same parser, here."""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh", "fish")
# Options whose value is a path: fish completes file names there (and nowhere else).
_PATH_METAVARS = {"FILE", "PLAN.json", "PATH", "DIR"}


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _help(action: argparse.Action) -> str:
    text = action.help if action.help and action.help != argparse.SUPPRESS else ""
    return " ".join(text.split())


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _fish_options(parser: argparse.ArgumentParser, condition: str) -> list[str]:
    lines = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if not action.option_strings:
            if action.choices:  # a positional with fixed values (`completion SHELL`)
                words = " ".join(str(c) for c in action.choices)
                lines.append(f"complete -c reconciler -n {_quote(condition)} -a {_quote(words)}")
            elif action.metavar in _PATH_METAVARS:
                lines.append(f"complete -c reconciler -n {_quote(condition)} -F")
            continue
        parts = ["complete -c reconciler", f"-n {_quote(condition)}"]
        for opt in action.option_strings:
            parts.append(f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}")
        if action.nargs != 0:
            if action.choices:
                parts.append(f"-x -a {_quote(' '.join(str(c) for c in action.choices))}")
            elif action.metavar in _PATH_METAVARS:
                parts.append("-r -F")
            else:
                parts.append("-x")
        if _help(action):
            parts.append(f"-d {_quote(_help(action))}")
        lines.append(" ".join(parts))
    return lines


def fish(parser: argparse.ArgumentParser) -> str:
    """complete(1) lines for fish: commands, their subcommands, options and fixed values."""
    lines = [
        "# fish completion for reconciler; install: reconciler completion fish > ~/.config/fish/completions/reconciler.fish",
        "complete -c reconciler -e",
        "complete -c reconciler -f",
    ]
    lines += _fish_options(parser, "__fish_use_subcommand")
    top = _subparsers(parser)
    assert top is not None
    helps = {a.dest: a.help or "" for a in top._choices_actions}
    for name, sub in top.choices.items():
        lines.append(f"complete -c reconciler -n '__fish_use_subcommand' -a {name} -d {_quote(helps.get(name, ''))}")
        inner = _subparsers(sub)
        if inner is None:
            lines += _fish_options(sub, f"__fish_seen_subcommand_from {name}")
            continue
        names = " ".join(inner.choices)
        inner_helps = {a.dest: a.help or "" for a in inner._choices_actions}
        for sub_name, leaf in inner.choices.items():
            lines.append(
                f"complete -c reconciler -n {_quote(f'__fish_seen_subcommand_from {name}; and not __fish_seen_subcommand_from {names}')} "
                f"-a {sub_name} -d {_quote(inner_helps.get(sub_name, ''))}"
            )
            condition = f"__fish_seen_subcommand_from {name}; and __fish_seen_subcommand_from {sub_name}"
            lines += _fish_options(leaf, condition)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..cli import build_parser

    if args.shell == "fish":
        sys.stdout.write(fish(build_parser()))
        return 0
    import shtab

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0
