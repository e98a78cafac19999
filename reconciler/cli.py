"""Command-line entry: argument parsing and error reporting only; each command lives in
reconciler/commands/<name>.py with a `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from . import __version__
from .errors import ConfigError, ReconcilerError, forget_secrets, redacted_output

FORMATS = ("text", "markdown", "json")

# Exit codes: 0 ok, 1 error (usage errors included), 2 only "changes" (plan), "drift" or "denials found".
USAGE_EXIT = 1

ENVIRONMENT = """\
environment:
  NO_COLOR=1              no colors (also TERM=dumb, --no-color, or output not a terminal)
  RECONCILER_TODAY=DATE   judge token and certificate expiry against DATE (YYYY-MM-DD)
  RECONCILER_CACHE_DIR    where parsed large files are cached; RECONCILER_NO_CACHE=1 turns it off
  RECONCILER_DEBUG=1      show a traceback for internal errors
  {env: NAME} secrets     tokens and admin secrets are read from the variables the file names
  VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT
                          where {vault: ...} secrets are read (never from the file)
  RECONCILER_ALLOW_EXEC=1 let {exec: [...]} secrets run (like --allow-exec); RECONCILER_EXEC_TIMEOUT=30

exit codes: 0 ok or no changes, 1 error (usage errors too) or a plan the safety rails refuse,
            2 changes (plan --detailed-exitcode, rotate --dry-run) or drift or denials
"""

DOCS = """\
documentation (in the source tree; docs/index.md lists every page):
  README.md                   install, try it locally (local-server), the first run, the five keys
  docs/local-server.md        a throwaway server to try things on
  docs/secrets.md             secrets in Vault/OpenBao KV, a secret manager's CLI (exec:), SOPS
  docs/rotation.md            token rotation with zero downtime, token new, expiry, revokes; rotate on a schedule
  docs/safety.md              safety rails, refused plans, --force, --target
  docs/pull-requests.md       Markdown plans for pull requests, saved plans
  docs/drift.md               drift reports, finding kinds, JSON, scheduled runs
  docs/denials.md             what the servers refused (ACL LOG), tied to the changes that caused it
  docs/import.md              a file for what is live
  docs/certificates.md        mTLS certificate subjects as users
  docs/sentinel.md            Sentinel-managed deployments
  docs/fleets.md              many instances: globs, shards
  docs/redis-software.md, docs/redis-cloud.md, docs/memorystore.md   managed services
  docs/guarantees.md          what holds under faults, and the tests that keep it
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
  reconciler denials -f access.yaml --since 24h
  reconciler token new app-orders --id 2026-11 --out orders.token
  reconciler rotate -f access.yaml --auto-approve
  reconciler completion bash > /etc/bash_completion.d/reconciler   # or zsh, fish
  reconciler local-server start                  # a throwaway server to try things on
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


def _since_arg(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--since", metavar="DURATION", help=help_)


def _exec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-exec",
        action="store_true",
        help="let `secret: {exec: [...]}` references run their commands (RECONCILER_ALLOW_EXEC=1 does the same); "
        "never set this where the file comes from an untrusted pull request",
    )


def _examples(*lines: str) -> str:
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="reconciler",
        description="Declarative access control for Redis and Valkey: plan and apply ACL users, "
        "tokens and certificate subjects from one YAML file.",
        epilog=EXAMPLES + "\n" + ENVIRONMENT + "\n" + DOCS,
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
        help="read the secrets too (env, file, vault; exec with --allow-exec; else their form only) "
        "and check min_token_length, complexity",
    )
    _exec_arg(p)

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
        "--target",
        action="append",
        metavar="USER",
        help="plan only this user's changes (repeatable), as `apply --target` would run them; not with --out",
    )
    p.add_argument(
        "--force", action="store_true", help="preview `apply --force`: deletions beyond max_delete_percent are allowed"
    )
    _markdown_args(p)
    _terminal_args(p)
    _exec_arg(p)
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = command(
        "apply",
        "make the live servers match the file or a saved plan",
        "reconciler apply -f access.yaml",
        "reconciler apply -f access.yaml --bootstrap     # fresh server: create the admin as `default` first",
        "reconciler apply plan.json --auto-approve      # a plan saved with `plan --out`",
        "reconciler apply -f access.yaml --target app-orders   # now, only this user; the rest waits for review",
    )
    p.add_argument("plan_file", nargs="?", metavar="PLAN.json", help="a plan saved with `plan --out`")
    _file_arg(p, required=False)
    _instance_arg(p)
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="allow deleting more than max_delete_percent")
    p.add_argument(
        "--target",
        action="append",
        metavar="USER",
        help="apply only this user's changes (repeatable; with -f FILE), e.g. an urgent revoke while the "
        "file's other changes wait for review; the safety rails judge what runs",
    )
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
    _exec_arg(p)
    p.add_argument("--allow-expired", action="store_true", help=argparse.SUPPRESS)

    p = command(
        "rotate",
        "new tokens for the entries with rotate: that are due, with no failed login: add, store, apply",
        "reconciler rotate -f access.yaml --dry-run                 # what is due, and the plans",
        "reconciler rotate -f access.yaml --auto-approve            # in a scheduled job",
        "reconciler rotate -f access.yaml --user app-orders         # now, due or not",
    )
    _file_arg(p)
    p.add_argument(
        "--instance",
        action="append",
        metavar="N",
        help="only the tokens of users on this instance (a glob selects several; repeatable); a rotation "
        "still reaches every instance of the user, or apps there would fail",
    )
    p.add_argument("--user", action="append", metavar="U", help="rotate this user's tokens now, due or not (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show what would rotate and the plans; write nothing (exit 2 when something would)")
    p.add_argument("--force", action="store_true", help="rotate even sooner than policies.min_overlap_hours after the latest version")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--audit-log", metavar="PATH", help="append one JSON line per executed change and one per rotation")
    _terminal_args(p)
    _exec_arg(p)

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
    p.add_argument(
        "--denials",
        action="store_true",
        help="add what the servers refused (see `reconciler denials`); exit 2 also when a declared user failed "
        "AUTH or a change caused a denial",
    )
    _since_arg(p, "with --denials: only denials in this window (e.g. 25h for a daily run)")
    p.add_argument("--audit-log", metavar="PATH", help="with --denials: the audit log to tie denials to changes (default: the file's audit_log)")
    _exec_arg(p)

    p = command(
        "denials",
        "what the servers refused (ACL LOG of every node), per user; exit 2 when there are denials",
        "reconciler denials -f access.yaml; echo $?      # 0 none, 2 denials found, 1 error",
        "reconciler denials -f access.yaml --since 24h --format markdown > denials.md",
        "reconciler denials -f access.yaml --instance cache-prod --format json",
    )
    _file_arg(p)
    _instance_arg(p)
    _shard_arg(p)
    _format_arg(p)
    _since_arg(p, "only denials last seen in this window: 30m, 24h, 7d, 1h30m (default: the whole log)")
    p.add_argument(
        "--audit-log",
        metavar="PATH",
        help="the audit log apply wrote, to tie denials to the changes that caused them (default: the file's audit_log)",
    )
    _markdown_args(p)
    _terminal_args(p)
    _exec_arg(p)

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
    _exec_arg(p)

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
    _exec_arg(p)

    p = command(
        "schema",
        "print the desired-state JSON Schema (for editors)",
        "reconciler schema > desired-state.schema.json",
        "reconciler schema --markdown > reference.md",
    )
    p.add_argument("--markdown", action="store_true", help="print the YAML reference generated from it instead")

    p = command(
        "token",
        "token helpers",
        "reconciler token new app-orders --id 2026-11 --out orders.token",
        "reconciler token new app-orders --id 2026-11 --sink vault:apps/orders#token",
    )
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True, parser_class=UsageParser)
    t = tsub.add_parser(
        "new",
        help="make a strong random token and print its YAML entry",
        description="make a strong random token and print its YAML entry (the entry goes to stderr)",
        epilog=_examples(
            "reconciler token new app-orders --id 2026-11 --out orders.token",
            "reconciler token new app-orders --id 2026-11 --sink vault:apps/orders#token   # prints the entry only",
        ),
    )
    t.add_argument("user", metavar="USER", help="the user the token is for (names the YAML entry)")
    t.add_argument("--id", required=True, dest="token_id", metavar="ID", help="the token's id in the file, e.g. 2026-11")
    t.add_argument("--length", type=int, default=32, help="random bytes (default 32, 16 to 4096)")
    t.add_argument("--out", metavar="FILE", help="write the token here (mode 0600) instead of stdout")
    t.add_argument(
        "--sink",
        metavar="vault:PATH#FIELD",
        help="write the token to a vault KV v2 path instead (a new version, check-and-set, other fields kept; "
        "VAULT_ADDR/VAULT_TOKEN from the environment; vault:MOUNT:PATH#FIELD for a mount other than secret) "
        "and print only the YAML entry; file:PATH is --out",
    )
    t.add_argument("-f", "--file", metavar="FILE", help="desired-state file (for token_max_age_days)")

    p = command(
        "local-server",
        "a throwaway server on this machine to try reconciler on (127.0.0.1, fresh `default on nopass`)",
        "reconciler local-server start              # Valkey from the embedded extra, on 127.0.0.1:6390",
        "reconciler local-server status",
        "reconciler local-server stop               # ends it and removes its files",
    )
    lsub = p.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True, parser_class=UsageParser)
    for name, help_, example in (
        ("start", "start a fresh server (users of an earlier run are gone) and wait until it answers",
         "reconciler local-server start --port 6391"),
        ("stop", "stop the server started on this port and remove its files", "reconciler local-server stop --port 6391"),
        ("status", "say whether one is running on this port (exit 1 when none is)", "reconciler local-server status"),
    ):
        ls = lsub.add_parser(name, help=help_, description=help_, epilog=_examples(example))
        ls.add_argument(
            "--port", type=_tcp_port, default=6390, metavar="N", help="port on 127.0.0.1 (default 6390, beside a Redis on 6379)"
        )
        if name == "start":
            ls.add_argument(
                "--server",
                metavar="PATH",
                help="the server binary to run (default: the embedded extra's Valkey, else valkey-server or redis-server on PATH)",
            )

    p = command(
        "completion",
        "print a shell completion script (bash, zsh or fish)",
        "reconciler completion bash > /etc/bash_completion.d/reconciler",
        'reconciler completion zsh > "${fpath[1]}/_reconciler"',
        "reconciler completion fish > ~/.config/fish/completions/reconciler.fish",
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to complete for: bash, zsh or fish")
    return parser


def _module_for(args: argparse.Namespace) -> str:
    if args.command == "token":
        return f"token_{args.token_command}"
    return {"import": "import_", "local-server": "local_server"}.get(args.command, args.command)


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command's own parser the arguments were parsed by, e.g. `token new`'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(args, action.dest, None) or "")
            if sub is not None:
                return _chosen(sub, args)
    return parser


def _tcp_port(text: str) -> int:
    """1-65535: port 0 would make the server listen nowhere (it waited 15 s to say so)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def parse(argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when argparse stopped (-h, --version, a usage error)."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # Reported by the command that was given them, with its usage, not the top-level one.
            _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
        return args
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
    forget_secrets()  # one run, its own secrets (a caller may run several in one process)
    with redacted_output():  # no line leaves the process with a secret the process holds
        return _run_module(module, args)


def _run_module(module: object, args: argparse.Namespace) -> int:
    from . import interrupt

    interrupt.DONE.reset()
    try:
        with interrupt.terminate_as_interrupt():
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
