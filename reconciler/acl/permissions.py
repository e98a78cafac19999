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

import re
from dataclasses import dataclass, field

from reconciler.acl.syntax import AclSyntaxError, Rule, UnsupportedRule, parse, split_rules
from reconciler.acl.table import CommandTable
from reconciler.names import split_words

__all__ = ["SelectorPerms", "Permissions", "effective", "rules_for", "check", "command_allowed", "known_command", "unknown_commands", "shortest_rules"]


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


_KNOWN: frozenset[str] | None = None

# Sentinel mode has its own command table; only SENTINEL and its subcommands are missing from
# the data nodes' tables. Names as COMMAND lists them on the sentinels of Redis 6.2-8.6 and
# Valkey 8.1-9.1 (Valkey adds the primary-spelled aliases). Known here so `sentinel_users`
# rules validate; a data user granted them gets a plan error naming node and version.
SENTINEL_COMMANDS = frozenset(
    ["sentinel"]
    + [
        f"sentinel|{sub}"
        for sub in (
            "ckquorum config debug failover flushconfig get-master-addr-by-name "
            "get-primary-addr-by-name help info-cache is-master-down-by-addr "
            "is-primary-down-by-addr master masters monitor myid pending-scripts primaries "
            "primary remove replicas reset sentinels set simulate-failure slaves"
        ).split()
    ]
)


def known_command(name: str) -> bool:
    """Is `name` ("get", "config|get") a command of any bundled server version?"""
    global _KNOWN
    if _KNOWN is None:
        names: set[str] = set(SENTINEL_COMMANDS)
        for table_name in CommandTable.available():
            names.update(c.name for c in CommandTable.bundled(table_name).commands)
        _KNOWN = frozenset(names)
    return name.lower() in _KNOWN


_CONTAINERS: frozenset[str] | None = None


def _containers() -> frozenset[str]:
    global _CONTAINERS
    if _CONTAINERS is None:
        known_command("get")
        assert _KNOWN is not None
        _CONTAINERS = frozenset(n.split("|", 1)[0] for n in _KNOWN if "|" in n)
    return _CONTAINERS


def unknown_commands(rules: str) -> list[str]:
    """Command names no supported version knows, one message each with a suggestion:
    "unknown command 'lpusj' (did you mean 'lpush'?)". Needs no server: the union of the
    bundled tables. Names only some versions know are left to the plan (node and version)."""
    # Only command words matter, and files repeat a few command parts around per-user key
    # patterns: look them up by those words alone (selector parentheses stripped).
    words = [w.strip("()") for w in split_words(rules)]
    key = " ".join(w for w in words if w[:1] in "+-" and w[1:2] != "@")
    if not key:
        return []
    hit = _UNKNOWN_MEMO.get(key)
    if hit is None:
        if len(_UNKNOWN_MEMO) > 100_000:
            _UNKNOWN_MEMO.clear()
        hit = _UNKNOWN_MEMO[key] = tuple(_unknown_commands(key))
    return list(hit)


_UNKNOWN_MEMO: dict[str, tuple[str, ...]] = {}


def _unknown_commands(rules: str) -> list[str]:
    import difflib

    known_command("get")
    assert _KNOWN is not None
    out: list[str] = []
    flat: list[Rule] = []
    for r in parse(rules, lenient=True):
        flat += r.selector if r.kind == "selector" else [r]
    for r in flat:
        if r.kind != "command":
            continue
        if r.name not in _KNOWN:
            tops = sorted(n for n in _KNOWN if "|" not in n)
            close = difflib.get_close_matches(r.name, tops, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msg = f"unknown command '{r.name}'{hint}"
        elif r.sub is None:
            continue
        elif r.name not in _containers():
            if r.allow:
                continue  # `+select|0`: a first argument, any value
            msg = f"'{r.text}': a first argument can't be denied, only allowed ({r.name} has no subcommands)"
        elif f"{r.name}|{r.sub.lower()}" not in _KNOWN:
            subs = sorted(n for n in _KNOWN if n.startswith(r.name + "|"))
            close = difflib.get_close_matches(f"{r.name}|{r.sub.lower()}", subs, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msg = f"unknown subcommand '{r.name}|{r.sub}'{hint}"
        else:
            continue
        if msg not in out:
            out.append(msg)
    return out


def _apply(s: _Sel, r: Rule, pos: int, t: CommandTable) -> None:
    k = r.kind
    if k == "category":
        if r.name == "all":
            s.mask = t._all_mask if r.allow else 0
            s.future = r.allow
            s.firstargs.clear()
            return
        cm = t._cat_mask.get(r.name)
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
    idx = t._index[cmd.name]
    if r.sub is None:
        m = t._cmd_mask[cmd.name]
        s.mask = s.mask | m if r.allow else s.mask & ~m
        s.firstargs.pop(idx, None)
        return
    subs = t.subcommands(cmd.name)
    if not r.allow:
        # `-cmd|x` only exists for real subcommands (7.0+); first args can't be denied.
        full = t.lookup(f"{cmd.name}|{r.sub}")
        if not subs or full is None:
            raise _unknown(r, pos, f"{r.name}|{r.sub}", t)
        s.mask &= ~t._cmd_mask[full.name]
        return
    if t.has_subcommands:  # 7.0+: the server splits at the last '|'
        if "|" in r.sub:
            raise _err(r, pos, f"first arguments of a subcommand can't be allowed: '{r.text}'")
        if subs:
            full = t.lookup(f"{cmd.name}|{r.sub}")
            if full is None:
                raise _unknown(r, pos, f"{r.name}|{r.sub}", t)
            s.mask |= t._cmd_mask[full.name]
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


# ---- canonical rule strings --------------------------------------------------------------


def command_ops(target: SelectorPerms, t: CommandTable) -> list[str]:
    """Short rule sequence giving exactly `target`'s command bits (bare calls of containers
    included) and first arguments; memoized per table by the command part alone."""
    return list(_ops_entry(target, t)[0])


def _ops_entry(target: SelectorPerms, t: CommandTable) -> tuple[tuple[str, ...], bool]:
    """(ops, exact): `exact` says the ops, read back by the engine, give target's command part."""
    key = ("ops", target.commands, target.future, target.firstargs)
    hit = t.cache.get(key)
    if hit is None:
        ops = tuple(_command_ops(target, t))
        back = effective(" ".join(ops), t).root
        exact = (back.commands, back.future, back.firstargs) == (target.commands, target.future, target.firstargs)
        hit = t.cache[key] = (ops, exact)
    return hit


def _command_ops(target: SelectorPerms, t: CommandTable) -> list[str]:
    """A base (+@all/-@all), then greedily the category rule that fixes most differences,
    then per command family the shortest fix (see _family_ops), then first arguments."""
    full = t._all_mask
    want = target.commands
    ops = ["+@all" if target.future else "-@all"]
    cur = full if target.future else 0
    cats = [(c, m) for c in t.categories if (m := t._cat_mask.get(c, 0))]
    while True:
        best = None
        diff = (cur ^ want).bit_count()
        for c, m in cats:
            for allow in (True, False):
                new = cur | m if allow else cur & ~m
                gain = diff - (new ^ want).bit_count()
                if gain >= 2 and (best is None or gain > best[0]):
                    best = (gain, c, allow, new)
        if best is None:
            break
        ops.append(("+@" if best[2] else "-@") + best[1])
        cur = best[3]
    wrong = cur ^ want
    fixes = [
        _family_ops(name, bit, subs, cur, want)
        for name, bit, subs in t._families
        if wrong & (bit | sum(b for _, b in subs))
    ]
    ops += [op for fix in fixes if fix[0][0] == "+" for op in fix]  # grants first, as people write
    ops += [op for fix in fixes if fix[0][0] == "-" for op in fix]
    ops += [f"+{c}|{a}" for c, a in target.firstargs]
    return ops


def _family_ops(name: str, bit: int, subs: tuple[tuple[str, int], ...], cur: int, want: int) -> list[str]:
    """Rules turning one command family from `cur` into `want`.

    A container's own bit (its bare call) moves only with `+cmd`/`-cmd`, which also move every
    subcommand; subcommands move alone with `+cmd|sub`/`-cmd|sub`. Of the exact sequences the
    shortest wins, and on a tie the one starting from the container (`+cmd -cmd|sub`), which
    also covers subcommands a later version adds.
    """
    if not subs:
        return [("+" if want & bit else "-") + name]
    on = bool(want & bit)
    # from the container: +cmd then remove the unwanted subcommands, or -cmd then add the wanted
    reset = [("+" if on else "-") + name] + [
        ("-" if on else "+") + sub for sub, b in subs if bool(want & b) != on
    ]
    if bool(cur & bit) != on:
        return reset
    single = [("+" if want & b else "-") + sub for sub, b in subs if (cur ^ want) & b]
    return single if len(single) < len(reset) else reset


def collapse(mask: int, t: CommandTable) -> list[str]:
    """Names for the bits of `mask`: a container when its whole family is in it, its
    subcommands otherwise, and `name|` for a container's bare call on its own."""
    out: list[str] = []
    for name, bit, subs in t._families:
        fam = bit | sum(b for _, b in subs)
        hit = mask & fam
        if not hit:
            continue
        if hit == fam:
            out.append(name)
            continue
        if hit & bit:
            out.append(name + "|")
        out += [sub for sub, b in subs if hit & b]
    return out


def selector_rules(sel: SelectorPerms, t: CommandTable) -> list[str]:
    out: list[str] = []
    if sel.allchannels:
        out.append("&*")
    else:
        out.append("resetchannels")
        out += [f"&{c}" for c in sel.channels]
    if sel.allkeys:
        out.append("~*")
    else:
        for p, f in sel.keys:
            out.append(f"~{p}" if f == "RW" else f"%{f}~{p}")
    if sel.dbs is not None:
        out.append(f"db={','.join(map(str, sel.dbs))}" if sel.dbs else "resetdbs")
    out += command_ops(sel, t)
    return out


def canonical_rules(perms: Permissions, t: CommandTable) -> str:
    parts = selector_rules(perms.root, t)
    for sel in perms.selectors:
        parts.append("(" + " ".join(selector_rules(sel, t)) + ")")
    return " ".join(parts)


def rules_for(rules: str, table: CommandTable) -> str:
    """Canonical rule string to send after `reset` so the node ends up with effective(rules, table).

    Starts with `resetchannels` (so Redis 6.2's `acl-pubsub-default allchannels` is not inherited).
    Raises UnsupportedRule when the node's version can't express the rules.
    """
    key = ("rules_for", " ".join(split_words(rules)))
    hit = table.cache.get(key)
    if hit is not None:
        return hit
    want = effective(rules, table)
    text = canonical_rules(want, table)
    # Guard: never send a wrong canonical form. The command part (the only non-trivial one)
    # is checked once per distinct command part; selectors are checked whole.
    exact = all(_ops_entry(sel, table)[1] for sel in (want.root, *want.selectors))
    if not exact or (want.selectors and effective(text, table) != want):  # pragma: no cover
        kept = [r.text for r in parse(rules) if not r.identity]
        text = " ".join(["resetchannels", *kept])
    table.cache[key] = text
    return text


# ---- verdicts (what ACL DRYRUN answers) ---------------------------------------------------


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
    if sel.commands >> t._index[cmd.name] & 1:
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
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        rx = _GLOB_CACHE[pattern] = re.compile(_glob_to_regex(pattern), re.DOTALL)
    return rx.fullmatch(s) is not None


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _glob_to_regex(p: str) -> str:
    """Redis stringmatchlen() glob: * ? [abc] [^a-z] and backslash escapes."""
    out = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "*":
            out.append(".*")
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
    return "".join(out)


# ---- shortest written form (import) -------------------------------------------------------


def _short_selector(sel: SelectorPerms, t: CommandTable) -> list[str]:
    """A selector in the file's own terms: a rule string starts from no command, key or channel
    (`reset resetchannels`), so the canonical form's `resetchannels` and leading `-@all` go."""
    out: list[str] = []
    if sel.allkeys:
        out.append("allkeys")
    else:
        out += [f"~{p}" if f == "RW" else f"%{f}~{p}" for p, f in sel.keys]
    if sel.allchannels:
        out.append("allchannels")
    else:
        out += [f"&{c}" for c in sel.channels]
    if sel.dbs is not None:
        out.append(f"db={','.join(map(str, sel.dbs))}" if sel.dbs else "resetdbs")
    ops = command_ops(sel, t)
    return out + (ops[1:] if ops[0] == "-@all" else ops)


def _as_written(rules: str) -> str:
    """A server's spelling in the file's terms: `allkeys`/`allchannels` for `~*`/`&*`, and the
    leading words the file implies (`resetchannels`, `resetkeys`, a first `-@all`) dropped."""
    words = ["allkeys" if w == "~*" else "allchannels" if w == "&*" else w for w in split_rules(rules)]
    while words and words[0].lower() in ("resetchannels", "resetkeys", "nocommands", "-@all"):
        words.pop(0)
    return " ".join(words)


def shortest_rules(rules: str, table: CommandTable) -> str:
    """The shortest rule string for the file that the engine proves equal to `rules` on this
    version (same Permissions) and that validates: the engine's short canonical form, or the
    server's own spelling tidied, whichever is shorter. `rules` is usually ACL LIST's text."""
    want = effective(rules, table)
    candidates = [" ".join(_short_selector(want.root, table))]
    candidates[0] = " ".join(
        [candidates[0], *("(" + " ".join(_short_selector(s, table)) + ")" for s in want.selectors)]
    ).strip()
    candidates.append(_as_written(rules))
    best: str | None = None
    for text in candidates:
        try:
            parse(text)  # strict: what validate accepts
            same = effective(text, table) == want
        except (AclSyntaxError, UnsupportedRule):
            continue
        if same and (best is None or len(text) < len(best)):
            best = text
    if best is None:  # pragma: no cover - the canonical form always reads back
        best = rules_for(rules, table)
    return best
