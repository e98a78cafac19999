"""Syntax of ACL SETUSER rules: tokenizing (selectors keep their inner spaces) and parsing.

No server is needed here; meaning against a command table lives in permissions.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..names import split_words

# Union of `ACL CAT` over Redis 6.2/7.0/8.0 and Valkey 8.1/9.1 (all the same set without modules).
# "all" is also accepted in rules (+@all / -@all) but is not listed by ACL CAT.
KNOWN_CATEGORIES: frozenset[str] = frozenset(
    {
        "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
        "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking",
        "dangerous", "connection", "transaction", "scripting",
    }
)

_IDENTITY_WORDS = {"on", "off", "nopass", "resetpass", "reset", "sanitize-payload", "skip-sanitize-payload"}
_DB_RE = re.compile(r"^db=(\d+(?:,\d+)*)$", re.IGNORECASE)


class AclSyntaxError(ValueError):
    """A rule the server would refuse. `token` is the offending rule, `position` its 0-based index."""

    def __init__(self, message: str, token: str = "", position: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.token = token
        self.position = position

    def __str__(self) -> str:
        return self.message


class UnsupportedRule(ValueError):
    """A rule that is valid in general but cannot be expressed on a given server version."""

    def __init__(self, rule: str, target: str, reason: str) -> None:
        super().__init__(f"rule '{rule}' is not supported on {target}: {reason}")
        self.rule = rule
        self.target = target
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    """One parsed rule.

    kind: identity | command | category | keys | allkeys | resetkeys | channel | allchannels |
          resetchannels | selector | clearselectors | db | alldbs | resetdbs
    """

    text: str
    kind: str
    allow: bool = True  # command / category: + or -
    name: str = ""  # command (lower case), category (lower case, "all" for +@all), key/channel pattern
    sub: str | None = None  # +cmd|sub: subcommand or first argument (as written)
    perm: str = ""  # keys: "R", "W" or "RW"
    selector: tuple["Rule", ...] = ()  # kind == "selector": its rules
    dbs: tuple[int, ...] = ()  # kind == "db"
    identity: bool = False


def split_rules(rules: str) -> list[str]:
    """Split a rule string on ASCII whitespace, keeping `( ... )` selectors as one token.

    Mirrors the server's merging of selector arguments: a word starting with '(' that does not end
    with ')' is joined with the following words up to one that ends with ')'.
    """
    words = split_words(rules)
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("(") and not (len(w) > 1 and w.endswith(")")):
            j = i + 1
            while j < len(words) and not words[j].endswith(")"):
                j += 1
            if j >= len(words):
                raise AclSyntaxError(f"unterminated selector '{' '.join(words[i:])}'", w, len(out))
            out.append(" ".join(words[i : j + 1]))
            i = j + 1
        else:
            out.append(w)
            i += 1
    return out


def parse(rules: str, *, lenient: bool = False) -> list[Rule]:
    """Parse permission rules (and identity rules, flagged) as ACL SETUSER would take them.

    Besides pure syntax this catches the two order errors the server reports on its own
    (`~x` after `~*`/allkeys, `&x` after `&*`/allchannels), since they need no command table.
    lenient=True skips those: servers print a `%RW~*` pattern as `~*` followed by the other
    patterns, a line ACL SETUSER itself would refuse.
    """
    tokens = split_rules(rules)
    out: list[Rule] = []
    root = _State(lenient)
    for pos, tok in enumerate(tokens):
        if lenient:
            hit = _LENIENT.get(tok)
            if hit is not None:
                out.append(hit)
                continue
        low = tok.lower()
        if low in _IDENTITY_WORDS or tok[0] in "><#!":
            if low == "reset":
                root = _State(lenient)
            out.append(Rule(tok, "identity", identity=True))
            continue
        if tok.startswith("(") and tok.endswith(")"):
            inner_state = _State(lenient)
            inner: list[Rule] = []
            for word in split_words(tok[1:-1]):
                inner.append(_parse_selector_op(word, pos, inner_state, in_selector=True))
            out.append(Rule(tok, "selector", selector=tuple(inner)))
            continue
        if low == "clearselectors":
            out.append(Rule(tok, "clearselectors"))
            continue
        rule = _parse_selector_op(tok, pos, root, in_selector=False)
        if lenient:  # without order checks a token means the same anywhere: memoize (speed)
            if len(_LENIENT) > 100_000:
                _LENIENT.clear()
            _LENIENT[tok] = rule
        out.append(rule)
    return out


_LENIENT: dict[str, Rule] = {}


_SWITCHES = {
    "allkeys": ("allkeys", "allkeys", True),
    "~*": ("allkeys", "allkeys", True),
    "resetkeys": ("resetkeys", "allkeys", False),
    "allchannels": ("allchannels", "allchannels", True),
    "&*": ("allchannels", "allchannels", True),
    "resetchannels": ("resetchannels", "allchannels", False),
}


class _State:
    __slots__ = ("allkeys", "allchannels", "lenient")  # flags _SWITCHES sets

    def __init__(self, lenient: bool = False) -> None:
        self.allkeys = False
        self.allchannels = False
        self.lenient = lenient


def _parse_selector_op(tok: str, pos: int, st: _State, *, in_selector: bool) -> Rule:
    low = tok.lower()
    where = " inside a selector" if in_selector else ""
    if tok.startswith("("):
        raise AclSyntaxError(f"nested selector '{tok}'", tok, pos)
    if low in _IDENTITY_WORDS or low == "clearselectors" or tok[0] in "><#!":
        raise AclSyntaxError(f"'{tok}' is not allowed{where}", tok, pos)
    # all/reset of keys and channels: (rule kind, the state flag it sets, to what)
    switch = _SWITCHES.get(low)
    if switch is not None:
        kind, flag, on = switch
        setattr(st, flag, on and not st.lenient)
        return Rule(tok, kind)
    if low in ("allcommands", "nocommands"):
        return Rule(tok, "category", allow=low == "allcommands", name="all")
    if low == "alldbs":
        return Rule(tok, "alldbs")
    if low == "resetdbs":
        return Rule(tok, "resetdbs")
    if low.startswith("db="):
        m = _DB_RE.match(tok)
        if not m:
            raise AclSyntaxError(f"invalid database rule '{tok}' (expected db=N[,N...])", tok, pos)
        dbs = tuple(sorted({int(x) for x in m.group(1).split(",")}))
        return Rule(tok, "db", dbs=dbs)
    if tok[0] in "~%":
        if tok[0] == "~":
            perm, pattern = "RW", tok[1:]
        else:
            perm, pattern = _parse_key_perm(tok, pos)
        if st.allkeys:
            raise AclSyntaxError(
                f"key pattern '{tok}' after allkeys/~* has no effect (use resetkeys first)", tok, pos
            )
        return Rule(tok, "keys", name=pattern, perm=perm)
    if tok[0] == "&":
        if st.allchannels:
            raise AclSyntaxError(
                f"channel pattern '{tok}' after allchannels/&* has no effect (use resetchannels first)",
                tok,
                pos,
            )
        return Rule(tok, "channel", name=tok[1:])
    if tok[0] in "+-":
        allow = tok[0] == "+"
        body = tok[1:]
        if body.startswith("@"):
            cat = body[1:].lower()
            if cat != "all" and cat not in KNOWN_CATEGORIES:
                raise AclSyntaxError(f"unknown category '@{body[1:]}'", tok, pos)
            return Rule(tok, "category", allow=allow, name=cat)
        if not body:
            raise AclSyntaxError(f"missing command name in '{tok}'", tok, pos)
        if "|" in body:
            cmd, sub = body.split("|", 1)
            if not cmd:
                raise AclSyntaxError(f"missing command name in '{tok}'", tok, pos)
            if not sub:
                raise AclSyntaxError(f"empty subcommand in '{tok}'", tok, pos)
            return Rule(tok, "command", allow=allow, name=cmd.lower(), sub=sub)
        return Rule(tok, "command", allow=allow, name=body.lower())
    raise AclSyntaxError(f"unknown ACL rule '{tok}'", tok, pos)


def _parse_key_perm(tok: str, pos: int) -> tuple[str, str]:
    flags = ""
    i = 1
    while i < len(tok):
        c = tok[i].upper()
        if c in "RW" and c not in flags:
            flags += c
        elif tok[i] == "~" and flags:
            return ("RW" if len(flags) == 2 else flags), tok[i + 1 :]
        else:
            break
        i += 1
    raise AclSyntaxError(f"invalid key permission '{tok}' (expected %R~, %W~ or %RW~)", tok, pos)


def parse_acl_list_line(line: str | bytes) -> tuple[str, bool, bool, tuple[str, ...], str]:
    """'user app on #ab.. ~k* +get' -> (name, enabled, nopass, hashes, permission_rules).

    The reply separates fields with one ASCII space; a name is everything up to the next one,
    byte for byte (`app` + U+00A0 is not `app`)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "surrogateescape")
    words = line.split(" ")
    if len(words) < 2 or words[0] != "user" or not words[1]:
        raise ValueError(f"not an ACL LIST line: {line[:60]!r}")
    name = words[1]
    enabled = False
    nopass = False
    hashes: list[str] = []
    perms: list[str] = []
    for tok in split_rules(" ".join(words[2:])):
        low = tok.lower()
        if low == "on":
            enabled = True
        elif low == "off":
            enabled = False
        elif low == "nopass":
            nopass = True
        elif low in ("sanitize-payload", "skip-sanitize-payload", "resetpass"):
            continue
        elif tok.startswith("#"):
            hashes.append(tok[1:])
        else:
            perms.append(tok)
    return name, enabled, nopass, tuple(hashes), " ".join(perms)
