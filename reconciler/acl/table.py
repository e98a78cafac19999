"""Command table of one server version: commands, subcommands, ACL categories, key positions.

Read once per node (COMMAND, then ACL CAT and ACL CAT <cat> pipelined), cached per version and
bundled as JSON in reconciler/acl/tables/ so plans work offline and for many users cost one read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .. import resources

__all__ = ["CommandInfo", "CommandTable"]

FORMAT = 1


@dataclass(frozen=True)
class CommandInfo:
    name: str  # "get", "config|get" (subcommands carry their parent's name)
    categories: frozenset[str]  # ACL categories that expand over this command (ACL CAT <cat>)
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0
    key_flags: str = ""  # "R", "W", "RW" or "" from the first key spec (7.0+); "RW" on 6.2

    @property
    def parent(self) -> str | None:
        return self.name.split("|", 1)[0] if "|" in self.name else None


@dataclass(frozen=True)
class CommandTable:
    name: str  # "redis-7.0.15"
    server: str  # "redis" | "valkey"
    version: str  # "7.0.15"
    categories: tuple[str, ...]
    commands: tuple[CommandInfo, ...]
    # Derived indexes for the engine (bit i = commands[i]); not part of identity.
    bit_of: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    _subs: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False, hash=False)
    category_masks: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    command_masks: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    all_mask: int = field(init=False, repr=False, compare=False, hash=False)
    # One entry per top-level command: (name, bit of the command, bits of its subcommands),
    # so canonical forms and summaries walk families instead of rebuilding name lists.
    families: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    # effective() results by rule string: plans evaluate the same few role strings many times.
    cache: dict[Any, Any] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {c.name: i for i, c in enumerate(self.commands)}
        subs: dict[str, list[str]] = {}
        for c in self.commands:
            if c.parent:
                subs.setdefault(c.parent, []).append(c.name)
        cmd_mask: dict[str, int] = {}
        for c in self.commands:
            m = 1 << index[c.name]
            for s in subs.get(c.name, ()):
                m |= 1 << index[s]
            cmd_mask[c.name] = m
        # A category rule changes every command in the category together with all of its
        # subcommands, and every subcommand in the category (ACLSetSelectorCommandBitsForCategory).
        cat_mask = {cat: 0 for cat in self.categories}
        for c in self.commands:
            for cat in c.categories:
                cat_mask[cat] = cat_mask.get(cat, 0) | cmd_mask[c.name]
        object.__setattr__(self, "bit_of", index)
        object.__setattr__(self, "_subs", {k: tuple(v) for k, v in subs.items()})
        object.__setattr__(self, "category_masks", cat_mask)
        object.__setattr__(self, "command_masks", cmd_mask)
        object.__setattr__(self, "all_mask", (1 << len(self.commands)) - 1)
        families = tuple(
            (c.name, 1 << index[c.name], tuple((sn, 1 << index[sn]) for sn in subs.get(c.name, ())))
            for c in self.commands
            if c.parent is None
        )
        object.__setattr__(self, "families", families)
        object.__setattr__(self, "cache", {})

    # ---- facts about the version ----------------------------------------------------------

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return _vtuple(self.version)

    @property
    def has_subcommands(self) -> bool:
        return bool(self._subs)

    @property
    def has_selectors(self) -> bool:
        """Selectors and %R~/%W~ key permissions: Redis 7.0+, all Valkey."""
        return self.server == "valkey" or self.version_tuple >= (7, 0)

    @property
    def has_databases(self) -> bool:
        """Per-database rules (db=, alldbs, resetdbs): Valkey 9.0+."""
        return self.server == "valkey" and self.version_tuple >= (9, 0)

    def lookup(self, name: str) -> CommandInfo | None:
        i = self.bit_of.get(name.lower())
        return None if i is None else self.commands[i]

    def in_category(self, name: str, category: str) -> bool:
        """`name` (a command or `parent|sub`) is covered by `+@category` on this version."""
        i = self.bit_of.get(name.lower())
        return i is not None and bool(self.category_masks.get(category, 0) >> i & 1)

    def subcommands(self, name: str) -> tuple[str, ...]:
        return self._subs.get(name, ())

    def names(self, mask: int) -> list[str]:
        """Names of the commands whose bits are set, in table order (walks set bits only)."""
        out: list[str] = []
        cmds = self.commands
        while mask:
            low = mask & -mask
            out.append(cmds[low.bit_length() - 1].name)
            mask ^= low
        return out

    def dangerous_mask(self) -> int:
        return self.category_masks.get("dangerous", 0)

    # ---- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "server": self.server,
            "version": self.version,
            "categories": list(self.categories),
            # [name, "cat cat", first, last, step, key_flags]
            "commands": [
                [c.name, " ".join(sorted(c.categories)), c.first_key, c.last_key, c.key_step, c.key_flags]
                for c in self.commands
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CommandTable":
        cmds = tuple(
            CommandInfo(n, frozenset(cats.split()), first, last, s, kf) for n, cats, first, last, s, kf in d["commands"]
        )
        return cls(d["name"], d["server"], d["version"], tuple(d["categories"]), cmds)

    @classmethod
    def read(cls, client: Any, server: str, version: str) -> "CommandTable":
        """COMMAND, then ACL CAT and ACL CAT <cat> for every category in one pipeline."""
        entries = raw_command(client, "COMMAND")  # redis-py's COMMAND callback drops subcommands
        cats = [_s(c) for c in client.execute_command("ACL", "CAT")]
        pipe = client.pipeline(transaction=False)
        for cat in cats:
            pipe.execute_command("ACL", "CAT", cat)
        members = pipe.execute()
        cat_of: dict[str, set[str]] = {}
        for cat, names in zip(cats, members, strict=True):
            for n in names:
                cat_of.setdefault(_s(n).lower(), set()).add(cat)
        infos: list[CommandInfo] = []

        def add(entry: Any) -> None:
            name = _s(entry[0]).lower()
            first, last, step = int(entry[3]), int(entry[4]), int(entry[5])
            flags = "RW" if first else ""
            if len(entry) > 8 and entry[8]:
                flags = _key_flags(entry[8][0])
            infos.append(CommandInfo(name, frozenset(cat_of.get(name, ())), first, last, step, flags))
            if len(entry) > 9:
                for sub in entry[9] or ():
                    add(sub)

        for e in entries:
            add(e)
        infos.sort(key=lambda c: c.name)
        return cls(f"{server}-{version}", server, version, tuple(cats), tuple(infos))

    @classmethod
    def bundled(cls, name: str) -> "CommandTable":
        return _load_bundled(name)

    @classmethod
    def available(cls) -> list[str]:
        return resources.names(resources.TABLES, ".json")

    @classmethod
    def nearest(cls, server: str, version: str) -> "CommandTable":
        """Bundled table of the same server with the closest version (same major preferred)."""
        want = _vtuple(version)
        best: tuple[Any, str] | None = None
        for name in cls.available():
            srv, _, ver = name.partition("-")
            if srv != server:
                continue
            v = _vtuple(ver)
            key = (v[:1] != want[:1], abs(_vnum(v) - _vnum(want)))
            if best is None or key < best[0]:
                best = (key, name)
        if best is None:
            raise KeyError(f"no bundled command table for {server}")
        return cls.bundled(best[1])


_CACHE: dict[str, CommandTable] = {}


def _load_bundled(name: str) -> CommandTable:
    if name not in _CACHE:
        try:
            text = resources.read_text(f"{resources.TABLES}/{name}.json")
        except FileNotFoundError:
            raise KeyError(name) from None
        _CACHE[name] = CommandTable.from_json(json.loads(text))
    return _CACHE[name]


def raw_command(client: Any, *args: str) -> Any:
    pool = client.connection_pool
    conn = pool.get_connection("_") if _wants_name(pool) else pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        pool.release(conn)


def _wants_name(pool: Any) -> bool:
    import inspect

    params = inspect.signature(pool.get_connection).parameters
    return "command_name" in params and params["command_name"].default is inspect.Parameter.empty


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _key_flags(spec: Any) -> str:
    if isinstance(spec, dict):
        flags = {_s(k): v for k, v in spec.items()}.get("flags", [])
    else:  # RESP2 flat list: ["flags", [...], "begin_search", ...]
        d = {_s(spec[i]): spec[i + 1] for i in range(0, len(spec) - 1, 2)}
        flags = d.get("flags", [])
    flags = {_s(f).lower() for f in flags}
    out = ""
    # variable_flags: access only with an optional argument (SET .. GET); the plain form writes.
    if "access" in flags and "variable_flags" not in flags:
        out += "R"
    if flags & {"insert", "delete", "update"}:
        out += "W"
    return out


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3]) or (0,)


def _vnum(v: tuple[int, ...]) -> int:
    v = (v + (0, 0, 0))[:3]
    return v[0] * 1_000_000 + v[1] * 1_000 + v[2]
