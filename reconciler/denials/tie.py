"""Pure: which recorded change a denial follows.

A refused command, key, channel or (Valkey 9) database is tied to the latest change that
revoked it from that user on that instance (a `-` line of the plan's words covering it:
`- revokes @write, KEYS`, `- keys orders:*`, `- channels news.*`, `- databases 0`) and was made
before the denials began. That is a fact of the two records, so it is shown plainly.

A failed AUTH is tied to the latest removal of one of the user's tokens (or the user's disabling
or deletion) before the failures began. ACL LOG does not say which password was tried, so that
tie is only "likely", and the report says why.

The audit record lists every command a change revoked, so a command the plan's words summarise
("... and 73 more") is tied all the same; records without that list are matched on the words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..acl import glob_match
from ..acl.describe import command_label
from ..acl.table import CommandTable
from .changes import Change, History
from .model import Cause, Denial

# The audit line is written after the server took the change: a denial a moment before its
# time may already be the change's doing.
TOLERANCE = 2.0
_MORE = re.compile(r" and \d+ more$")


def _command_name(item: str) -> tuple[str, bool]:
    """A plan label back to a command name: "CLIENT KILL" -> ("client|kill", False);
    "CONFIG (bare call)" -> ("config", True); "CONFIG GET x (first argument)" -> ("config|get", False)."""
    bare = item.endswith(" (bare call)")
    if bare:
        item = item[: -len(" (bare call)")]
    if item.endswith(" (first argument)"):
        item = item[: -len(" (first argument)")].rsplit(" ", 1)[0]
    return item.lower().replace(" ", "|"), bare


def _covers(name: str, bare: bool, obj: str) -> bool:
    """Does revoking command `name` (a bare container call when `bare`) refuse logged object `obj`?"""
    obj = obj.lower()
    if bare:
        return name == obj
    if name == obj or name == obj.split("|", 1)[0]:
        return True  # the command itself, or the whole family of a refused subcommand
    return "|" in name and name.split("|", 1)[0] == obj  # Redis 6.2 logs the container ("client") for a subcommand


def _revokes_command(text: str, obj: str, table: CommandTable | None) -> bool:
    for item in _MORE.sub("", text).split(", "):
        if item == "all commands":
            return True
        if item.startswith("@"):
            if table is not None and table.in_category(obj, item[1:]):
                return True
            continue
        if _covers(*_command_name(item), obj):
            return True
    return False


def revokes(line: str, reason: str, obj: str, table: CommandTable | None) -> bool:
    """Does this plan line (as the audit log keeps it) take `obj` away?"""
    sign, _, text = line.partition(" ")
    if sign != "-":
        return False
    if reason == "command" and text.startswith("revokes "):
        return _revokes_command(text[len("revokes "):], obj, table)
    if reason == "key" and text.startswith("keys "):
        return glob_match(text[len("keys "):].split(" ", 1)[0], obj)
    if reason == "channel" and text.startswith("channels "):
        return glob_match(text[len("channels "):].split(" ", 1)[0], obj)
    if reason == "database" and text.startswith("databases "):
        # Valkey 9: the line names what is still allowed ("- databases 0,1", "- databases none").
        allowed = text[len("databases "):].split(",")
        return allowed != ["all"] and obj not in allowed
    return False


def _began(denial: Denial) -> float:
    """When the denials began, as far as the log tells (before 7.2 only the last one is known)."""
    return denial.first if denial.first is not None else denial.last


def _before(changes: Iterable[Change], denial: Denial) -> list[Change]:
    """`changes`: the user's on the denial's instance (History.of)."""
    began = _began(denial)
    return [c for c in changes if c.time <= began + TOLERANCE]


def _auth_words(change: Change, history: History) -> str:
    if change.action == "delete":
        return "the user was deleted"
    if change.removed:
        tokens = [history.token_label(change.instance, change.user, i, p) for i, p in change.removed]
        return f"token {', '.join(tokens)} {'was' if len(tokens) == 1 else 'were'} removed"
    return "the user was disabled (enabled: false)"


def _likely(denial: Denial, change: Change) -> str:
    what = (
        "the user was deleted" if change.action == "delete"
        else "a token was removed" if change.removed
        else "the user was disabled"
    )
    when = (
        "the failures began after that"
        if denial.first is not None
        else "the last failure came after that (before Redis 7.2 the log keeps no first time)"
    )
    return f"ACL LOG does not say which password was tried; {what} and {when}"


def cause(denial: Denial, history: History, table: CommandTable | None) -> Cause | None:
    """The change `denial` follows, or None."""
    candidates = _before(history.of(denial.instance, denial.user), denial)
    if denial.reason == "auth":
        for change in reversed(candidates):
            if change.action == "delete" or change.removed or change.disabled:
                return Cause(_auth_words(change, history), change.time, likely=_likely(denial, change))
        return None
    for change in reversed(candidates):
        if change.action != "update":
            continue
        if denial.reason == "command":
            # Every revoked command is listed (the words may summarise "and 73 more"): name the one.
            for name in change.revoked_commands:
                if _covers(name.rstrip("|"), name.endswith("|"), denial.object):
                    return Cause(f"- revokes {command_label(name)}", change.time)
        for line in change.permissions:
            if revokes(line, denial.reason, denial.object, table):
                return Cause(line, change.time)
    return None
