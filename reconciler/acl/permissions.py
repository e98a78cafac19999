"""Meaning of ACL rules on one server version, computed the way the server's acl.c does it.

A selector's command permissions are a bitmap over the version's command table (subcommands
have their own bits on 7.0+). Rules are applied in order: a category rule changes the bits of
the commands that are in the category *at that moment* (and all subcommands of a command in the
category), `+@all`/`-@all` set or clear every bit and the "future commands" bit, `+cmd|arg` on a
command without subcommands records an allowed first argument that only matters while the
command's own bit is off, and any later rule touching the command drops those first arguments.

A container command (CONFIG, COMMAND, CLIENT...) has a bit of its own next to its subcommands':
it is what the server checks for the bare call (`COMMAND` with no argument), and `+command`
sets it together with every subcommand, so `+command -command|docs` keeps the bare call and
any subcommand a later version adds. The bitmaps keep it, so it is compared and written too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.acl.known import known_command
from reconciler.acl.syntax import AclSyntaxError, Rule, UnsupportedRule, parse
from reconciler.acl.table import CommandTable
from reconciler.names import split_words

__all__ = ["SelectorPerms", "Permissions", "effective", "selector_order"]


@dataclass(frozen=True, order=True)
class SelectorPerms:
    """Canonical meaning of one selector (the root one or a `(...)` one)."""

    commands: int  # bitmap over table.commands; a container's own bit is its bare call
    future: bool  # +@all/allcommands was the last word on all commands: modules loaded later allowed
    firstargs: tuple[tuple[str, str], ...]  # (command, first arg) for commands whose bit is off
    keys: tuple[tuple[str, str], ...]  # (pattern, "R"|"W"|"RW"); all keys = (("*", "RW"),)
    channels: tuple[str, ...]  # patterns; all channels = ("*",)
    dbs: tuple[int, ...] | None = None  # Valkey 9: None = all databases

    @property
    def allkeys(self) -> bool:
        return self.keys == (("*", "RW"),)

    @property
    def allchannels(self) -> bool:
        return self.channels == ("*",)


def selector_order(sel: SelectorPerms) -> tuple:
    """A total order on selectors (dbs may be None: all databases, or a tuple)."""
    return (sel.commands, sel.future, sel.firstargs, sel.keys, sel.channels, sel.dbs is not None, sel.dbs or ())


@dataclass(frozen=True)
class Permissions:
    """Effective permissions of a user on one server version. `==` is the planner's no-change test."""

    table: str  # CommandTable.name the bitmaps refer to
    root: SelectorPerms
    selectors: tuple[SelectorPerms, ...] = ()  # multiset, sorted
    _table: CommandTable | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def command_table(self) -> CommandTable:
        if self._table is None:
            return CommandTable.bundled(self.table)
        return self._table

    def allowed_commands(self, selector: SelectorPerms | None = None) -> list[str]:
        return self.command_table.names((selector or self.root).commands)


class _Sel:
    """Mutable selector state while rules are applied."""

    __slots__ = ("mask", "future", "firstargs", "allkeys", "keys", "allchannels", "channels", "dbs")

    def __init__(self) -> None:
        self.mask = 0
        self.future = False
        self.firstargs: dict[int, set[str]] = {}
        self.allkeys = False
        self.keys: dict[str, str] = {}
        self.allchannels = False
        self.channels: list[str] = []
        self.dbs: frozenset[int] | None = None

    def freeze(self, t: CommandTable) -> SelectorPerms:
        fa = (
            tuple(
                sorted(
                    (t.commands[i].name, a)
                    for i, args in self.firstargs.items()
                    if not self.mask >> i & 1
                    for a in args
                )
            )
            if self.firstargs
            else ()
        )
        if self.allkeys:
            keys: dict[str, str] = {"*": "RW"}
        else:
            keys = dict(self.keys)
            star = keys.get("*")
            if star:
                # A key passes when one pattern has every flag it needs, so `*` with flags F
                # makes any pattern whose flags are within F redundant.
                keys = {p: f for p, f in keys.items() if p == "*" or not set(f) <= set(star)}
        chans = ("*",) if self.allchannels else tuple(sorted(set(self.channels)))
        return SelectorPerms(
            commands=self.mask,
            future=self.future,
            firstargs=fa,
            keys=tuple(sorted(keys.items())),
            channels=chans,
            dbs=None if self.dbs is None else tuple(sorted(self.dbs)),
        )


def _err(rule: Rule, pos: int, msg: str) -> AclSyntaxError:
    return AclSyntaxError(msg, rule.text, pos)


def _unknown(rule: Rule, pos: int, name: str, t: CommandTable) -> ValueError:
    """Unknown here: UnsupportedRule when another supported version has it, else a syntax error."""
    if known_command(name):
        return UnsupportedRule(rule.text, t.name, f"'{name}' does not exist in this version")
    return _err(rule, pos, f"unknown command '{name}'")


def _apply(s: _Sel, r: Rule, pos: int, t: CommandTable) -> None:
    k = r.kind
    if k == "category":
        if r.name == "all":
            s.mask = t.all_mask if r.allow else 0
            s.future = r.allow
            s.firstargs.clear()
            return
        cm = t.category_masks.get(r.name)
        if cm is None:
            raise UnsupportedRule(r.text, t.name, f"category '@{r.name}' does not exist in this version")
        s.mask = s.mask | cm if r.allow else s.mask & ~cm
        if s.firstargs:
            for i in [i for i in s.firstargs if cm >> i & 1]:
                del s.firstargs[i]
    elif k == "command":
        _apply_command(s, r, pos, t)
    elif k == "keys":
        if r.perm != "RW" and not t.has_selectors:
            raise UnsupportedRule(r.text, t.name, "read/write key permissions (%R~, %W~) need Redis 7.0+")
        if r.text.startswith("%") and not t.has_selectors:
            raise UnsupportedRule(r.text, t.name, "read/write key permissions (%R~, %W~) need Redis 7.0+")
        if s.allkeys:  # only in ACL LIST output (a %RW~* pattern printed as ~*); all keys anyway
            return
        old = s.keys.get(r.name, "")
        s.keys[r.name] = "".join(c for c in "RW" if c in old or c in r.perm)
    elif k in ("allkeys", "resetkeys"):
        s.allkeys = k == "allkeys"
        s.keys.clear()
    elif k == "channel":
        if s.allchannels:
            return
        if r.name not in s.channels:
            s.channels.append(r.name)
    elif k in ("allchannels", "resetchannels"):
        s.allchannels = k == "allchannels"
        s.channels.clear()
    elif k in ("db", "alldbs", "resetdbs"):
        if not t.has_databases:
            raise UnsupportedRule(r.text, t.name, "per-database rules need Valkey 9.0+")
        s.dbs = frozenset(r.dbs) if k == "db" else (None if k == "alldbs" else frozenset())
    else:  # pragma: no cover - parse() produces no other kinds here
        raise _err(r, pos, f"unexpected rule '{r.text}'")


def _apply_command(s: _Sel, r: Rule, pos: int, t: CommandTable) -> None:
    cmd = t.lookup(r.name)
    if cmd is None or cmd.parent is not None:
        raise _unknown(r, pos, r.name, t)
    idx = t.bit_of[cmd.name]
    if r.sub is None:
        m = t.command_masks[cmd.name]
        s.mask = s.mask | m if r.allow else s.mask & ~m
        s.firstargs.pop(idx, None)
        return
    subs = t.subcommands(cmd.name)
    if not r.allow:
        # `-cmd|x` only exists for real subcommands (7.0+); first args can't be denied.
        full = t.lookup(f"{cmd.name}|{r.sub}")
        if not subs or full is None:
            raise _unknown(r, pos, f"{r.name}|{r.sub}", t)
        s.mask &= ~t.command_masks[full.name]
        return
    if t.has_subcommands:  # 7.0+: the server splits at the last '|'
        if "|" in r.sub:
            raise _err(r, pos, f"first arguments of a subcommand can't be allowed: '{r.text}'")
        if subs:
            full = t.lookup(f"{cmd.name}|{r.sub}")
            if full is None:
                raise _unknown(r, pos, f"{r.name}|{r.sub}", t)
            s.mask |= t.command_masks[full.name]
            return
        s.firstargs.setdefault(idx, set()).add(r.sub.lower())
    elif not s.mask >> idx & 1:  # 6.2 records a first arg only while the command is denied
        s.firstargs.setdefault(idx, set()).add(r.sub.lower())


def _compute(rules: str, t: CommandTable) -> Permissions:
    root = _Sel()
    selectors: list[SelectorPerms] = []
    # The root's command rules only touch its command bits and key/channel/db rules never do,
    # so the command part is computed on its own and memoized: files give each user its own
    # key patterns around a handful of command rule sets.
    cmd_rules: list[tuple[int, Rule]] = []
    for pos, r in enumerate(parse(rules, lenient=True)):
        if r.identity:
            if r.text.lower() == "reset":
                root = _Sel()
                cmd_rules.clear()
                # A `reset` inside the rules takes acl-pubsub-default: allchannels on 6.2.
                root.allchannels = not t.has_selectors
                selectors.clear()
            continue
        if r.kind == "selector":
            if not t.has_selectors:
                raise UnsupportedRule(r.text, t.name, "selectors need Redis 7.0+")
            sel = _Sel()
            for inner in r.selector:
                _apply(sel, inner, pos, t)
            selectors.append(sel.freeze(t))
        elif r.kind == "clearselectors":
            if not t.has_selectors:
                raise UnsupportedRule(r.text, t.name, "selectors need Redis 7.0+")
            selectors.clear()
        elif r.kind in ("command", "category"):
            cmd_rules.append((pos, r))
        else:
            _apply(root, r, pos, t)
    root.mask, root.future, fa = _command_part(cmd_rules, t)
    if fa:
        root.firstargs = {i: set(a) for i, a in fa}
    return Permissions(t.name, root.freeze(t), tuple(sorted(selectors, key=selector_order)), t)


def _command_part(
    cmd_rules: list[tuple[int, Rule]], t: CommandTable
) -> tuple[int, bool, tuple[tuple[int, frozenset[str]], ...]]:
    """(mask, future, first args) of a selector's command rules, memoized per table."""
    key = ("cmds", " ".join(r.text.lower() for _, r in cmd_rules))
    hit = t.cache.get(key)
    if hit is None:
        s = _Sel()
        for pos, r in cmd_rules:
            _apply(s, r, pos, t)
        hit = (s.mask, s.future, tuple((i, frozenset(a)) for i, a in s.firstargs.items()))
        t.cache[key] = hit
    return hit


def effective(rules: str, table: CommandTable) -> Permissions:
    """Meaning of `ACL SETUSER u reset resetchannels <rules>` on `table`'s server version.

    Also reads ACL LIST output, so it does not refuse `~x` after `~*` (servers print that);
    parse() without lenient does, for validating desired rules.
    """
    key = " ".join(split_words(rules))
    hit = table.cache.get(key)
    if hit is None:
        hit = _compute(key, table)
        if len(table.cache) > 200_000:
            table.cache.clear()
        table.cache[key] = hit
    return hit
