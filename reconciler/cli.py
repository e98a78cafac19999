"""Command-line entry: argument parsing and error reporting only; each command lives in
reconciler/commands/<name>.py with a `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from . import __version__
from .errors import ConfigError, ReconcilerError, redacted_output

FORMATS = ("text", "markdown", "json")

# Exit codes: 0 ok, 1 error (usage errors included), 2 only "changes" (plan) or "drift".
USAGE_EXIT = 1

ENVIRONMENT = """\
environment:
  NO_COLOR=1              no colors (also TERM=dumb, --no-color, or output not a terminal)
  RECONCILER_TODAY=DATE   judge token and certificate expiry against DATE (YYYY-MM-DD)
  RECONCILER_CACHE_DIR    where parsed large files are cached; RECONCILER_NO_CACHE=1 turns it off
  RECONCILER_DEBUG=1      show a traceback for internal errors
  {env: NAME} secrets     tokens and admin secrets are read from the variables the file names

exit codes: 0 ok or no changes, 1 error (usage errors too), 2 changes (plan --detailed-exitcode) or drift
"""

EXAMPLES = """\
examples:
  reconciler validate -f access.yaml
  reconciler apply -f access.yaml --bootstrap      # first run on a fresh server
  reconciler plan -f access.yaml
  reconciler apply -f access.yaml
  reconciler plan -f access.yaml --format markdown > plan.md
  reconciler drift -f access.yaml --format json
  reconciler explain app-orders -f access.yaml --command set --key orders:1
  reconciler token new app-orders --id 2026-11 --out orders.token
  reconciler completion bash > /etc/bash_completion.d/reconciler
"""


class UsageParser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; here 2 means "changes" or "drift", so usage errors exit 1."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}\n")


def _file_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-f", "--file", required=required, metavar="FILE", help="desired-state YAML file")


def _instance_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instance",
        action="append",
        metavar="N",
        help="only this instance of the file; a glob such as 'cache-eu-*' (quoted) selects several (repeatable)",
    )


def _shard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard", metavar="K/N", help="only the K-th of N slices of the (selected) instances, for N parallel CI jobs"
    )


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default), markdown (for pull-request comments) or json",
    )


def _terminal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-color", action="store_true", help="no colors (NO_COLOR and TERM=dumb do the same)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr (none is shown when piped)")


def _markdown_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-chars",
        type=int,
        default=None,
        metavar="N",
        help="Markdown size budget in characters (default 65536, one GitHub comment); "
        "per-instance details are cut to fit, the summary table never is",
    )
    p.add_argument(
        "--full-plan-hint",
        metavar="TEXT",
        help="where the full plan is, named in the Markdown truncation line (e.g. a CI artifact's URL)",
    )


def _examples(*lines: str) -> str:
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="reconciler",
        description="Declarative access control for Redis and Valkey: plan and apply ACL users, "
        "tokens and certificate subjects from one YAML file.",
        epilog=EXAMPLES + "\n" + ENVIRONMENT,
    )
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=UsageParser)

    def command(name: str, help_: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=_examples(*examples) if examples else None)

    p = command(
        "validate",
        "check the file (schema and semantics), no network; secrets for their form only unless --resolve-secrets",
        "reconciler validate -f access.yaml",
        "reconciler validate -f examples/*.yaml                   # in CI, no secret set",
        "reconciler validate -f access.yaml --resolve-secrets     # also min_token_length, complexity",
    )
    p.add_argument("-f", "--file", required=True, nargs="+", metavar="FILE", help="desired-state YAML file(s)")
    p.add_argument("--allow-expired", action="store_true", help="do not treat expired tokens as errors")
    p.add_argument(
        "--resolve-secrets",
        action="store_true",
        help="read {env}/{file} secrets too (else their form only) and check min_token_length, complexity",
    )

    p = command(
        "plan",
        "read live state and show the ordered changes",
        "reconciler plan -f access.yaml",
        "reconciler plan -f access.yaml --detailed-exitcode --out plan.json   # exit 2 when there are changes",
        "reconciler plan -f access.yaml --format markdown --out plan.json > plan.md",
        "reconciler plan -f access.yaml --target app-orders",
    )
    _file_arg(p)
    _instance_arg(p)
    _shard_arg(p)
    _format_arg(p)
    p.add_argument("--out", metavar="PLAN.json", help="save the plan (with live-state fingerprints, no secrets)")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 2 changes, 1 error")
    p.add_argument(
        "--target", action="append", metavar="USER", help="plan only this user (repeatable), for review; not with --out"
    )
    _markdown_args(p)
    _terminal_args(p)
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = command(
        "apply",
        "make the live servers match the file or a saved plan",
        "reconciler apply -f access.yaml",
        "reconciler apply -f access.yaml --bootstrap     # fresh server: create the admin as `default` first",
        "reconciler apply plan.json --auto-approve      # a plan saved with `plan --out`",
    )
    p.add_argument("plan_file", nargs="?", metavar="PLAN.json", help="a plan saved with `plan --out`")
    _file_arg(p, required=False)
    _instance_arg(p)
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="allow deleting more than max_delete_percent")
    p.add_argument("--audit-log", metavar="PATH", help="append one JSON line per executed change")
    p.add_argument(
        "--bootstrap",
        action="store_true",
        help="first run: where the file's admin user cannot log in yet, connect as the server's `default` "
        "user, create the admin, then apply the rest as the admin and change `default` last",
    )
    p.add_argument(
        "--bootstrap-secret-env",
        metavar="VAR",
        help="with --bootstrap: the variable holding `default`'s current password (default: none, nopass)",
    )
    _terminal_args(p)
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = command(
        "drift",
        "plan plus policy findings; exit 2 on drift or findings",
        "reconciler drift -f access.yaml; echo $?      # 0 clean, 2 drift or findings, 1 error",
        "reconciler drift -f access.yaml --format markdown > drift.md",
    )
    _file_arg(p)
    _instance_arg(p)
    _shard_arg(p)
    _format_arg(p)
    _markdown_args(p)
    _terminal_args(p)

    p = command(
        "import",
        "write a complete desired-state file for what is live (plans as a no-op as it is)",
        "reconciler import --node 10.0.0.5:6379 --admin-secret-env CACHE_ADMIN_TOKEN --out access.yaml",
        "reconciler import --instance cache-prod -f access.yaml --out cache-prod.yaml",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--node", action="append", metavar="HOST:PORT", help="seed node (repeatable); replicas and cluster members are discovered"
    )
    source.add_argument("--instance", metavar="N", help="or: the instance N of -f FILE")
    p.add_argument("--admin-user", default="default", metavar="U", help="user to connect as (default: default)")
    p.add_argument("--admin-secret-env", metavar="VAR", help="environment variable holding the admin's token")
    p.add_argument("--tls-ca", metavar="FILE", help="CA file to verify the server with (turns TLS on)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate of the admin connection")
    p.add_argument("--tls-key", metavar="FILE", help="its key")
    p.add_argument("--tls-server-name", metavar="NAME", help="name to check the server's certificate against")
    p.add_argument("--name", metavar="N", help="instance name in the file (default: imported)")
    _file_arg(p, required=False)
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout (refuses to overwrite)")
    p.add_argument("--force", action="store_true", help="let --out overwrite an existing file")
    _terminal_args(p)

    p = command(
        "explain",
        "what a user may do on each node and which rule grants or denies it (no writes)",
        "reconciler explain app-orders -f access.yaml",
        "reconciler explain app-orders -f access.yaml --command set --key orders:1 --arg value",
        "reconciler explain app-orders -f access.yaml --offline --command flushall",
    )
    p.add_argument("user", metavar="USER", help="a user declared in the file")
    _file_arg(p)
    _instance_arg(p)
    p.add_argument("--command", dest="probe_command", metavar="CMD", help="a command to check, e.g. get or 'client|kill'")
    p.add_argument("--key", action="append", metavar="K", help="a key the command touches (repeatable)")
    p.add_argument("--channel", action="append", metavar="C", help="a channel the command touches (repeatable)")
    p.add_argument(
        "--arg", action="append", metavar="A", help="any further argument, after keys and channels (e.g. SET's value)"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not connect: judge against the bundled command tables of every supported server version",
    )
    _terminal_args(p)

    p = command(
        "schema",
        "print the desired-state JSON Schema (for editors)",
        "reconciler schema > desired-state.schema.json",
        "reconciler schema --markdown > reference.md",
    )
    p.add_argument("--markdown", action="store_true", help="print the YAML reference generated from it instead")

    p = command("token", "token helpers", "reconciler token new app-orders --id 2026-11 --out orders.token")
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True, parser_class=UsageParser)
    t = tsub.add_parser(
        "new",
        help="make a strong random token and print its YAML entry",
        description="make a strong random token and print its YAML entry (the entry goes to stderr)",
        epilog=_examples("reconciler token new app-orders --id 2026-11 --out orders.token"),
    )
    t.add_argument("user", metavar="USER", help="the user the token is for (names the YAML entry)")
    t.add_argument("--id", required=True, dest="token_id", metavar="ID", help="the token's id in the file, e.g. 2026-11")
    t.add_argument("--length", type=int, default=32, help="random bytes (default 32)")
    t.add_argument("--out", metavar="FILE", help="write the token here (mode 0600) instead of stdout")
    t.add_argument("-f", "--file", metavar="FILE", help="desired-state file (for token_max_age_days)")

    p = command(
        "completion",
        "print a shell completion script",
        "reconciler completion bash > /etc/bash_completion.d/reconciler",
        'reconciler completion zsh > "${fpath[1]}/_reconciler"',
    )
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")
    return parser


def _module_for(args: argparse.Namespace) -> str:
    if args.command == "token":
        return f"token_{args.token_command}"
    return "import_" if args.command == "import" else args.command


def parse(argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when argparse stopped (-h, --version, a usage error)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else USAGE_EXIT)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if isinstance(args, int):
        return args
    from . import progress

    progress.configure(quiet=getattr(args, "quiet", False))
    try:
        return _run(args)
    finally:
        progress.clear()


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"reconciler.commands.{_module_for(args)}")
    with redacted_output():  # no line leaves the process with a secret the process holds
        return _run_module(module, args)


def _run_module(module: object, args: argparse.Namespace) -> int:
    from . import interrupt

    interrupt.DONE.reset()
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
        # Said exactly: what this run changed before the interrupt (verify, a bootstrap step...).
        for line in interrupt.DONE.lines() or ["interrupted; nothing was changed"]:
            print(f"reconciler: {line}", file=sys.stderr)
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
