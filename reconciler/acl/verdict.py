"""A command's verdict: would a user with these permissions be allowed to run argv -- its command
or subcommand, keys, channels and databases judged the way the server does (what ACL DRYRUN
answers). Used by `explain` (`explain.py` finds the rule that decided it), the safety rails
(the admin's rights) and `denials` (which granted pattern a denied key or channel falls under)."""

from __future__ import annotations

import re

from reconciler.acl.permissions import Permissions, SelectorPerms
from reconciler.acl.table import CommandTable

__all__ = ["check", "command_allowed", "glob_match"]


def check(perms: Permissions, argv: list[str], table: CommandTable | None = None) -> bool:
    """Would a user with `perms` be allowed to run argv (keys and channels included)?

    Key positions come from the table's first-key/last-key/step; good for simple commands.
    """
    t = table or perms.command_table
    for sel in (perms.root, *perms.selectors):
        if _check_selector(sel, argv, t):
            return True
    return False


# Commands flagged no-auth: the server runs them for any user (ACLSelectorCheckCmd).
_NO_AUTH = frozenset({"auth", "hello", "quit", "reset"})


def command_allowed(sel: SelectorPerms, argv: list[str], t: CommandTable) -> bool:
    """The command part of a verdict: the command's (or subcommand's, or for a bare container
    call the container's) bit, or an allowed first argument. Keys and channels aside."""
    name = argv[0].lower()
    cmd = t.lookup(name)
    if cmd is None:
        return False
    if name in _NO_AUTH:
        return True
    if t.subcommands(name) and len(argv) > 1:
        sub = t.lookup(f"{name}|{argv[1].lower()}")
        if sub is not None:
            cmd = sub
    if sel.commands >> t.bit_of[cmd.name] & 1:
        return True
    return len(argv) > 1 and (cmd.name, argv[1].lower()) in sel.firstargs


def _check_selector(sel: SelectorPerms, argv: list[str], t: CommandTable) -> bool:
    if not command_allowed(sel, argv, t):
        return False
    name = argv[0].lower()
    cmd = t.lookup(name)
    assert cmd is not None
    if t.subcommands(name) and len(argv) > 1:
        cmd = t.lookup(f"{name}|{argv[1].lower()}") or cmd
    if cmd.first_key and not sel.allkeys:
        last = cmd.last_key if cmd.last_key >= 0 else len(argv) + cmd.last_key
        need = set(cmd.key_flags)
        for i in range(cmd.first_key, last + 1, max(cmd.key_step, 1)):
            if i >= len(argv):
                break
            if not any(need <= set(f) and _match(p, argv[i]) for p, f in sel.keys):
                return False
    if sel.dbs is not None and not _db_allowed(sel.dbs, cmd, argv):
        return False
    if name in ("publish", "spublish") and len(argv) > 1 and not sel.allchannels:
        if not any(_match(p, argv[1]) for p in sel.channels):
            return False
    if name in ("subscribe", "ssubscribe") and not sel.allchannels:
        for ch in argv[1:]:
            if not any(_match(p, ch) for p in sel.channels):
                return False
    return True


_DB_SCRIPTS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


def _db_allowed(dbs: tuple[int, ...], cmd, argv: list[str], current: int = 0) -> bool:
    """Valkey 9 database rules as ACL DRYRUN applies them (measured on 9.1.2): keyspace commands
    need the current database, SELECT/MOVE/SWAPDB/COPY..DB the ones they name, FLUSHALL all."""
    name = cmd.name
    allowed = set(dbs)

    def num(i: int) -> int | None:
        try:
            return int(argv[i])
        except (IndexError, ValueError):
            return None

    if name == "flushall":
        return False  # needs alldbs
    if name == "select":
        return num(1) in allowed
    if name == "swapdb":
        return num(1) in allowed and num(2) in allowed
    if name == "move":
        return current in allowed and num(2) in allowed
    if name == "copy":
        up = [a.upper() for a in argv]
        if "DB" in up and up.index("DB") + 1 < len(argv):
            return current in allowed and num(up.index("DB") + 1) in allowed
    if cmd.categories & {"read", "write", "keyspace"} or name in _DB_SCRIPTS:
        return current in allowed
    return True


def glob_match(pattern: str, text: str) -> bool:
    """Redis glob matching (stringmatchlen) of a key or channel pattern against a name."""
    return _match(pattern, text)


def _match(pattern: str, s: str) -> bool:
    glob = _GLOB_CACHE.get(pattern)
    if glob is None:
        glob = _GLOB_CACHE[pattern] = _Glob(pattern)
    return glob.match(s)


class _Glob:
    """A glob as the fixed-length pieces between its stars. Matched piece by piece, each at its
    leftmost place (which is never worse for the pieces after it): linear in the name. A
    backtracking regex of `a*:*:*:b` takes minutes on a key of a few thousand `:`, and key
    names come from whoever talks to the server (the denials report matches them)."""

    def __init__(self, pattern: str):
        self.pieces: list[tuple[re.Pattern[str], int]] = []
        tokens: list[str] = []
        every = _glob_tokens(pattern)
        if "[]" in every or "[^]" in every:
            # An empty class is not one character to Python's regex (it reads on to the next
            # `]`): kept as the one regex it always was.
            whole = "".join(".*" if t is None else t for t in every)
            self.pieces, self.starred = [(re.compile(whole, re.DOTALL), 0)], False
            return
        for token in every + [None]:
            if token is None:
                self.pieces.append((re.compile("".join(tokens), re.DOTALL), len(tokens)))
                tokens = []
            else:
                tokens.append(token)
        self.starred = len(self.pieces) > 1

    def match(self, s: str) -> bool:
        if not self.starred:
            rx, _ = self.pieces[0]
            return rx.fullmatch(s) is not None
        (first, n_first), (last, n_last) = self.pieces[0], self.pieces[-1]
        end = len(s) - n_last
        if end < n_first or not first.fullmatch(s, 0, n_first) or not last.fullmatch(s, end):
            return False
        pos = n_first
        for rx, _ in self.pieces[1:-1]:
            found = rx.search(s, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True


_GLOB_CACHE: dict[str, _Glob] = {}


def _glob_tokens(p: str) -> list[str | None]:
    """Redis stringmatchlen() glob: * ? [abc] [^a-z] and backslash escapes, as one regex per
    character it matches (None for a star)."""
    out: list[str | None] = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "*":
            out.append(None)
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < len(p):
            i += 1
            out.append(re.escape(p[i]))
        elif c == "[":
            j = p.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = p[i + 1 : j]
                neg = body.startswith("^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("]", "\\]")
                out.append(f"[{'^' if neg else ''}{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return out
