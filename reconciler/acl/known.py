"""Which command names exist on some supported server version: the union of the bundled command
tables, and the sentinels' own commands. Validation needs no server: a name no version knows is
a file error with a suggestion, a name only some versions know is left to the plan (node and
version)."""

from __future__ import annotations

from reconciler.acl.syntax import Rule, parse
from reconciler.acl.table import CommandTable
from reconciler.names import split_words

__all__ = ["SENTINEL_COMMANDS", "known_command", "unknown_commands"]


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
