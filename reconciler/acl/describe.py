"""Permissions in words, for plans: a summary of a new user and the delta of a changed one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Set as AbstractSet

from reconciler.acl.permissions import Permissions, SelectorPerms, selector_order
from reconciler.acl.rules import command_ops
from reconciler.acl.table import CommandTable
from reconciler.plan import DeltaLine

__all__ = ["command_label", "describe", "describe_delta", "DANGEROUS_COMMANDS"]

# Marked "!" when granted, on top of every member of the version's @dangerous category.
DANGEROUS_COMMANDS = frozenset({"flushall", "flushdb", "config", "debug", "acl", "module", "keys", "shutdown"})

# Above this many dangerous commands in one grant, they are listed on one line.
_ONE_LINE_EACH = 8


def _keys_text(sel: SelectorPerms) -> str:
    if sel.allkeys:
        return "*"
    if not sel.keys:
        return "-"
    return " ".join(_key_item(p, f) for p, f in sel.keys)


def _key_item(pattern: str, flags: str) -> str:
    return pattern if flags == "RW" else f"{pattern} ({'read' if flags == 'R' else 'write'})"


def _selector_lines(sel: SelectorPerms, t: CommandTable) -> list[str]:
    lines = [
        "commands: " + " ".join(command_ops(sel, t)),
        "keys: " + _keys_text(sel),
        "channels: " + (" ".join(sel.channels) if sel.channels else "-"),
    ]
    if sel.dbs is not None:
        lines.append("databases: " + (",".join(map(str, sel.dbs)) if sel.dbs else "-"))
    return lines


def describe(perms: Permissions) -> list[str]:
    """["commands: +@all -@dangerous", "keys: billing:*", "channels: -", "selector: (...)"]"""
    t = perms.command_table
    lines = _selector_lines(perms.root, t)
    for sel in perms.selectors:
        lines.append("selector: (" + "; ".join(_selector_lines(sel, t)) + ")")
    return lines


def collapse(mask: int, t: CommandTable) -> list[str]:
    """Names for the bits of `mask`: a container when its whole family is in it, its
    subcommands otherwise, and `name|` for a container's bare call on its own."""
    out: list[str] = []
    for name, bit, subs in t.families:
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


def _is_dangerous(name: str, t: CommandTable) -> bool:
    """A command, subcommand, (collapsed) container or bare call (`name|`) that is or
    contains a dangerous command."""
    bare = name.endswith("|")
    name = name.rstrip("|")
    if name.split("|", 1)[0] in DANGEROUS_COMMANDS:
        return True
    dm = t.dangerous_mask()
    family = (name,) if bare else (name, *t.subcommands(name))
    return any(dm >> t.bit_of[n] & 1 for n in family)


def command_label(name: str) -> str:
    """A command as plans write it: "client|kill" -> "CLIENT KILL"."""
    return _label(name)


def _label(name: str) -> str:
    if name.endswith("|"):
        return f"{name[:-1].upper()} (bare call)"
    return name.replace("|", " ").upper()


def _summary(mask: int, t: CommandTable, limit: int = 12, skip: AbstractSet[str] = frozenset()) -> str:
    """Names as written, or, when many, the whole categories they cover plus the rest."""
    names = collapse(mask, t)
    if len(names) - len(skip) <= limit:
        return ", ".join(_label(n) for n in names if n not in skip)
    if mask == t.all_mask:
        return "all commands"
    left = mask
    cats: list[str] = []
    for c in sorted(t.categories, key=lambda c: -t.category_masks.get(c, 0).bit_count()):
        cm = t.category_masks.get(c, 0)
        if cm and cm & left and cm & ~mask == 0:
            cats.append("@" + c)
            left &= ~cm
    rest = [n for n in collapse(left, t) if n not in skip]
    text = ", ".join(cats + [_label(n) for n in rest[:limit]])
    if len(rest) > limit:
        text += f" and {len(rest) - limit} more"
    return text


def _command_delta(before: SelectorPerms, after: SelectorPerms, t: CommandTable, where: str) -> list[DeltaLine]:
    out: list[DeltaLine] = []
    granted = after.commands & ~before.commands
    revoked = before.commands & ~after.commands
    if granted:
        names = collapse(granted, t)
        danger = [n for n in names if _is_dangerous(n, t)]
        safe = [n for n in names if n not in danger]
        if len(danger) > _ONE_LINE_EACH:
            out.append(DeltaLine("!", f"{where}grants {len(danger)} dangerous commands: "
                                      + ", ".join(_label(n) for n in danger)))
        else:
            out += [DeltaLine("!", f"{where}grants {_label(n)} (dangerous)") for n in danger]
        if safe:
            # Categories are named over the whole grant; dangerous members have their own "!" lines.
            out.append(DeltaLine("+", f"{where}grants " + _summary(granted, t, skip=set(danger))))
    if revoked:
        out.append(DeltaLine("-", f"{where}revokes " + _summary(revoked, t), commands=tuple(collapse(revoked, t))))
    if after.future and not before.future:
        out.append(DeltaLine("!", f"{where}grants commands added later by modules (+@all)"))
    elif before.future and not after.future:
        out.append(DeltaLine("-", f"{where}revokes commands added later by modules (+@all)"))
    fa_new = sorted(set(after.firstargs) - set(before.firstargs))
    fa_old = sorted(set(before.firstargs) - set(after.firstargs))
    for c, a in fa_new:
        sign = "!" if _is_dangerous(c, t) else "+"
        out.append(DeltaLine(sign, f"{where}grants {_label(c)} {a} (first argument)"))
    for c, a in fa_old:
        out.append(DeltaLine("-", f"{where}revokes {_label(c)} {a} (first argument)"))
    return out


def _pattern_delta(before: SelectorPerms, after: SelectorPerms, where: str) -> list[DeltaLine]:
    out: list[DeltaLine] = []
    bk, ak = set(before.keys), set(after.keys)
    out += [DeltaLine("+", f"{where}keys {_key_item(p, f)}") for p, f in sorted(ak - bk)]
    out += [DeltaLine("-", f"{where}keys {_key_item(p, f)}") for p, f in sorted(bk - ak)]
    bc, ac = set(before.channels), set(after.channels)
    out += [DeltaLine("+", f"{where}channels {c}") for c in sorted(ac - bc)]
    out += [DeltaLine("-", f"{where}channels {c}") for c in sorted(bc - ac)]
    if before.dbs != after.dbs:
        text = "all" if after.dbs is None else (",".join(map(str, after.dbs)) or "none")
        widened = after.dbs is None or (before.dbs is not None and bool(set(after.dbs) - set(before.dbs)))
        sign = "+" if widened else "-"
        out.append(DeltaLine(sign, f"{where}databases {text}"))
    return out


def _selector_text(sel: SelectorPerms, t: CommandTable) -> str:
    return "; ".join(_selector_lines(sel, t))


def describe_delta(before: Permissions, after: Permissions) -> list[DeltaLine]:
    """What changes from `before` (live) to `after` (desired), dangerous grants marked "!"."""
    t = after.command_table
    out = _command_delta(before.root, after.root, t, "")
    out += _pattern_delta(before.root, after.root, "")
    added = Counter(after.selectors) - Counter(before.selectors)
    removed = Counter(before.selectors) - Counter(after.selectors)
    for sel in sorted(added.elements(), key=selector_order):
        danger = any(d.sign == "!" for d in _command_delta(_EMPTY, sel, t, ""))
        out.append(DeltaLine("!" if danger else "+", f"selector ({_selector_text(sel, t)})"))
    for sel in sorted(removed.elements(), key=selector_order):
        out.append(DeltaLine("-", f"selector ({_selector_text(sel, t)})"))
    return out


_EMPTY = SelectorPerms(0, False, (), (), ())
