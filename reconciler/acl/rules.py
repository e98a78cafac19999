"""Rule strings from permissions: the canonical string sent to a node after `reset` so it ends up
with exactly the permissions the file means (`rules_for`), and the shortest string a file can
hold for them (`shortest_rules`, for import). Both are read back through effective() before
they are trusted."""

from __future__ import annotations

from reconciler.acl.permissions import Permissions, SelectorPerms, effective
from reconciler.acl.syntax import AclSyntaxError, UnsupportedRule, parse, split_rules
from reconciler.acl.table import CommandTable
from reconciler.names import split_words

__all__ = ["canonical_rules", "command_ops", "rules_for", "selector_rules", "shortest_rules"]


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
    full = t.all_mask
    want = target.commands
    ops = ["+@all" if target.future else "-@all"]
    cur = full if target.future else 0
    cats = [(c, m) for c in t.categories if (m := t.category_masks.get(c, 0))]
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
        for name, bit, subs in t.families
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
