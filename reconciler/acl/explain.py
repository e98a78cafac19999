"""Why a user may or may not run a command: the engine's verdict and the rule that decided it.

Pure: (rules, command table, argv) -> Verdict. The deciding rule is found by replaying the
rules one by one (each prefix means what `ACL SETUSER u reset resetchannels <prefix>` gives)
and taking the last rule that flipped the verdict; nothing is allowed before the first rule.
Commands and their keys/channels are judged apart, so a denial says which of them denied it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .permissions import effective
from .syntax import parse
from .table import CommandTable
from .verdict import check


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    command_allowed: bool
    command_rule: str  # the rule that last decided the command ("" : none, nothing granted it)
    access_rule: str  # the rule that last decided keys/channels/databases, when they decided it
    reason: str  # one line for people


def argv_for(command: str, keys: list[str] | None, channels: list[str] | None) -> list[str]:
    """`client|kill` -> ["client", "kill"]; keys and channels follow as arguments."""
    return [*command.lower().split("|"), *(keys or []), *(channels or [])]


def _deciding(words: list[str], table: CommandTable, argv: list[str], suffix: str) -> str:
    """The last rule whose addition flipped the verdict of `argv` (with `suffix` appended to
    every prefix, e.g. "allkeys allchannels" to judge the command alone)."""
    verdict = check(effective(suffix, table), argv, table)
    rule = ""
    for i in range(1, len(words) + 1):
        now = check(effective(" ".join([*words[:i], suffix]), table), argv, table)
        if now != verdict:
            verdict, rule = now, words[i - 1]
    return rule


def explain(rules: str, table: CommandTable, argv: list[str]) -> Verdict:
    words = [r.text for r in parse(rules, lenient=True)]
    perms = effective(rules, table)
    allowed = check(perms, argv, table)
    command = argv[0] if len(argv) == 1 or not table.subcommands(argv[0]) else f"{argv[0]}|{argv[1]}"
    if table.lookup(argv[0]) is None:
        return Verdict(False, False, "", "", f"{argv[0].upper()} is not a command on {table.name}")
    # The command alone: every key and channel allowed after the user's rules.
    wide = "allkeys allchannels" + (" alldbs" if table.has_databases else "")
    command_allowed = check(effective(f"{rules} {wide}", table), argv, table)
    command_rule = _deciding(words, table, argv, wide)
    label = command.upper()
    if not command_allowed:
        why = f"{command_rule} denies {label}" if command_rule else f"no rule grants {label} (nothing is allowed unless granted)"
        return Verdict(False, False, command_rule, "", f"denied: {why}")
    granted = f"{command_rule} grants {label}" if command_rule else f"{label} allowed"
    if allowed:
        # The key/channel rule: replay with every command allowed, so only access rules flip it.
        access = _deciding(words, table, argv, "+@all") if len(argv) > 1 else ""
        extra = f"; {access} covers its keys/channels" if access and access != command_rule else ""
        return Verdict(True, True, command_rule, access, f"allowed: {granted}{extra}")
    args = " ".join(argv[2:] if "|" in command else argv[1:])
    patterns = ", ".join(f"~{p}" if f == "RW" else f"%{f}~{p}" for p, f in perms.root.keys) or "no key patterns"
    channels = ", ".join(f"&{c}" for c in perms.root.channels) or "no channel patterns"
    return Verdict(
        False,
        True,
        command_rule,
        "",
        f"denied: {granted}, but nothing covers {args or 'its arguments'} ({patterns}; {channels})",
    )
