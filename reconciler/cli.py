"""Command-line entry: argument parsing and error reporting only; each command lives in
reconciler/commands/<name>.py with a `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import ConfigError, ReconcilerError, redacted_output

FORMATS = ("text", "markdown", "json")


def _file_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-f", "--file", required=required, metavar="FILE", help="desired-state YAML file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Declarative access control for Redis and Valkey: plan and apply ACL users, "
        "tokens and certificate subjects from one YAML file.",
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check the file (schema and semantics), no network")
    _file_arg(p)
    p.add_argument("--allow-expired", action="store_true", help="do not treat expired tokens as errors")

    p = sub.add_parser("plan", help="read live state and show the ordered changes")
    _file_arg(p)
    p.add_argument("--instance", action="append", metavar="N", help="only this instance (repeatable)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--out", metavar="PLAN.json", help="save the plan (with live-state fingerprints, no secrets)")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 2 changes, 1 error")
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("apply", help="make the live servers match the file or a saved plan")
    p.add_argument("plan_file", nargs="?", metavar="PLAN.json", help="a plan saved with `plan --out`")
    _file_arg(p, required=False)
    p.add_argument("--instance", action="append", metavar="N", help="only this instance (repeatable)")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="allow deleting more than max_delete_percent")
    p.add_argument("--audit-log", metavar="PATH", help="append one JSON line per executed change")
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser("drift", help="plan plus policy findings; exit 2 on drift or findings")
    _file_arg(p)
    p.add_argument("--instance", action="append", metavar="N", help="only this instance (repeatable)")
    p.add_argument("--format", choices=FORMATS, default="text")

    p = sub.add_parser("import", help="print desired-state YAML for what is live")
    p.add_argument("--instance", required=True, metavar="N")
    _file_arg(p)

    p = sub.add_parser("token", help="token helpers")
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True)
    t = tsub.add_parser("new", help="make a strong random token and print its YAML entry")
    t.add_argument("user")
    t.add_argument("--id", required=True, dest="token_id")
    t.add_argument("--length", type=int, default=32, help="random bytes (default 32)")
    t.add_argument("--out", metavar="FILE", help="write the token here (mode 0600) instead of stdout")
    t.add_argument("-f", "--file", metavar="FILE", help="desired-state file (for token_max_age_days)")
    return parser


def _module_for(args: argparse.Namespace) -> str:
    if args.command == "token":
        return f"token_{args.token_command}"
    return "import_" if args.command == "import" else args.command


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = _module_for(args)
    try:
        module = importlib.import_module(f"reconciler.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"reconciler.commands.{name}":
            raise
        print(f"reconciler {args.command}: not implemented yet", file=sys.stderr)
        return 1
    with redacted_output():  # no line leaves the process with a secret the process holds
        return _run(module, args)


def _run(module: object, args: argparse.Namespace) -> int:
    try:
        return module.run(args)  # type: ignore[attr-defined]
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reconciler: interrupted; nothing was changed", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"reconciler: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("RECONCILER_DEBUG"):
            raise
        print(f"reconciler: internal error ({type(exc).__name__}): {exc}; RECONCILER_DEBUG=1 shows details", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
