"""ACL semantics engine. Public API used by config, planner, live reader and executor.

CONTRACT (other modules code against exactly these names; keep them stable):

    class AclSyntaxError(ValueError):  .token: str, .position: int (0-based index of the token), str() is one line
    class UnsupportedRule(ValueError): a rule a node's version cannot express; str() says which rule and why

    def parse(rules: str) -> list[Rule]
        Syntax-level parse of ACL SETUSER permission rules (no server needed). Raises AclSyntaxError.
        Identity rules (on, off, >x, <x, #x, !x, nopass, resetpass, reset) are accepted by the parser
        and marked `rule.identity == True`, so config can report them with its own message.

    KNOWN_CATEGORIES: frozenset[str]   # union over supported versions, without '@'

    class CommandTable (frozen):       # one per server version
        name: str                      # "redis-7.0.15", "valkey-9.1.2"
        server: str; version: str
        def to_json(self) -> dict; @classmethod from_json(d) -> CommandTable
        @classmethod read(client: redis.Redis, server: str, version: str) -> CommandTable  # COMMAND + ACL CAT, one read
        @classmethod bundled(name: str) -> CommandTable   # from reconciler/acl/tables/<name>.json, KeyError if missing
        @classmethod nearest(server: str, version: str) -> CommandTable   # bundled table of closest version

    class Permissions (frozen, hashable; == is the planner's "no change" test)

    def effective(rules: str, table: CommandTable) -> Permissions
        Meaning of `ACL SETUSER u reset resetchannels <rules>` on that server version (identity rules ignored).
        Also accepts the permission part of an ACL LIST line of that version.

    def describe(perms: Permissions) -> list[str]
        Short human summary for a new user: ["commands: +@all -@dangerous", "keys: billing:*", "channels: -"].

    def describe_delta(before: Permissions, after: Permissions) -> list[DeltaLine]
        DeltaLine(frozen): sign: "+" | "-" | "!" ("!" = dangerous grant), text: str, e.g.
        ("!", "grants FLUSHALL (dangerous)"), ("+", "keys orders:archive:*"), ("-", "revokes KEYS").

    def shortest_rules(rules: str, table: CommandTable) -> str
        The shortest rule string (file terms: no leading resetchannels/-@all, allkeys for ~*) the engine
        proves equal to `rules` on that version and that validates; used by `import`.

    def unknown_commands(rules: str) -> list[str]
        "unknown command 'lpusj' (did you mean 'lpush'?)" for names no bundled version knows (validate).

    def command_allowed(sel: SelectorPerms, argv: list[str], table) -> bool
        The command part of a verdict (bit, bare container call, allowed first argument).

    def glob_match(pattern: str, text: str) -> bool
        Redis glob matching of a key or channel pattern (what the server does for ~ and &).

    def rules_for(rules: str, table: CommandTable) -> str
        Canonical rule string to send after `reset resetchannels` so the node ends up with exactly
        effective(rules, table). Raises UnsupportedRule when the node's version can't express it
        (selectors or %R~/%W~ on 6.2, database rules before Valkey 9).

    def parse_acl_list_line(line: str) -> tuple[str, bool, bool, tuple[str, ...], str]
        "user app on #ab.. ~k* +get" -> (name, enabled, nopass, hashes, permission_rules)
"""

from reconciler.acl.describe import DANGEROUS_COMMANDS, describe, describe_delta
from reconciler.acl.known import known_command, unknown_commands
from reconciler.acl.permissions import Permissions, SelectorPerms, effective
from reconciler.acl.rules import canonical_rules, rules_for, shortest_rules
from reconciler.acl.syntax import (
    KNOWN_CATEGORIES,
    AclSyntaxError,
    Rule,
    UnsupportedRule,
    parse,
    parse_acl_list_line,
    split_rules,
)
from reconciler.acl.table import CommandInfo, CommandTable
from reconciler.acl.verdict import check, command_allowed, glob_match
from reconciler.plan import DeltaLine

__all__ = [
    "AclSyntaxError",
    "UnsupportedRule",
    "KNOWN_CATEGORIES",
    "Rule",
    "parse",
    "split_rules",
    "parse_acl_list_line",
    "CommandInfo",
    "CommandTable",
    "SelectorPerms",
    "Permissions",
    "effective",
    "rules_for",
    "check",
    "command_allowed",
    "glob_match",
    "known_command",
    "unknown_commands",
    "shortest_rules",
    "describe",
    "describe_delta",
    "DANGEROUS_COMMANDS",
    "canonical_rules",
    "DeltaLine",
]
