"""Read a YAML file into plain Python data plus a map from YAML path to line number.

Two readers give the same result. The fast one builds the data straight from libyaml's event
stream (no node tree, no constructor) and accepts only the plain subset real files use:
no anchors or aliases, no explicit tags, no merge keys, no duplicate or non-string keys.
Anything else makes it step aside for the careful one, which composes the node tree so
that every oddity is reported with its line (duplicate keys, tags, alias bombs, recursion).
Plain scalars resolve exactly as PyYAML's SafeLoader resolves them (YAML 1.1: `yes`/`no`/`on`/
`off` are booleans, `1_000` and `0x1F` integers, `123e4567` and `0o17` strings), because that
is how `import` writes them and how most tools read them: a value one of them writes as a bare
word must not mean something else here. The one change of form: SafeLoader's dates and
timestamps come out as their ISO text (`2026-11-01`), since the data must stay JSON-shaped for
the schema; an impossible date (`2026-02-30`) is an error, as it is for SafeLoader.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

# Bombs are bounded by what they expand to (nodes, depth), not by a small byte limit: a
# 100,000-user inventory is about 15 MB and must load. The byte limit only refuses files that
# could not be a desired-state file at all (about 850,000 users).
MAX_BYTES = 128 * 1024 * 1024
MAX_DEPTH = 64  # real files nest about 6 levels; deeper is garbage (and would exhaust the stack)
MIN_NODE_BUDGET = 100_000  # alias expansion ("billion laughs") guard; grows with the file size
MAX_NODES = 20_000_000  # whatever the file size, no more values than this after alias expansion

Path = tuple[str | int, ...]


class SourceError(Exception):
    """A problem that stops reading the file; line is 1-based."""

    def __init__(self, line: int, message: str, path: Path = ()):
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path


@dataclass
class Source:
    data: Any
    lines: dict[Path, int]
    problems: list[SourceError] = field(default_factory=list)  # non-fatal (duplicate keys, odd tags)

    def line_of(self, path: Path) -> int:
        """Line of the deepest node of `path` that exists in the file."""
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]  # base picked at run time: libyaml's when built in
    """Composer only; implicit tags are SafeLoader's own (its resolver table, inherited)."""


_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE, _TIMESTAMP = (
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp")
)

# SafeLoader's own scalar constructors, so a value means what it means to SafeLoader by
# construction. They read only the node (no constructor state), so one instance serves all.
_SAFE = yaml.constructor.SafeConstructor()
_CONSTRUCT = {
    _NULL: _SAFE.construct_yaml_null,
    _BOOL: _SAFE.construct_yaml_bool,
    _INT: _SAFE.construct_yaml_int,
    _FLOAT: _SAFE.construct_yaml_float,
    _TIMESTAMP: _SAFE.construct_yaml_timestamp,
}


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


class BadDate(ValueError):
    """A scalar SafeLoader reads as a date or time that does not exist (2026-02-30)."""


def _scalar(node: yaml.ScalarNode) -> Any:
    """The value SafeLoader gives this scalar; dates and timestamps as ISO text. ValueError for a
    tag SafeLoader has no constructor for (`=` is `!!value`), BadDate for an impossible date."""
    if node.tag == _STR:
        return node.value
    construct = _CONSTRUCT.get(node.tag)
    if construct is None:
        raise ValueError(node.tag)
    if node.tag == _TIMESTAMP and _DATE.match(node.value):
        # YYYY-MM-DD (every `created:` / `expires:`): the same check, without the regex.
        try:
            return datetime.date.fromisoformat(node.value).isoformat()
        except ValueError:
            raise BadDate(node.value) from None
    try:
        value = construct(node)
    except (ValueError, AttributeError):  # AttributeError: `!!timestamp` on text that is no timestamp
        if node.tag == _TIMESTAMP:
            raise BadDate(node.value) from None
        raise ValueError(node.value) from None
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def _describe_yaml_error(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    if mark is not None:
        lines = text.splitlines()
        here = lines[mark.line] if mark.line < len(lines) else ""
        indent = here[: len(here) - len(here.lstrip(" \t"))]
        if "\t" in indent or here[mark.column : mark.column + 1] == "\t":
            return line, "tab character: YAML indentation must use spaces"
    if "\t" in problem or "'\\t'" in problem:
        return line, "tab character: YAML indentation must use spaces"
    if "expected a single document" in (context or ""):
        return line, "a second YAML document (---): put everything in one document"
    message = f"YAML syntax error: {problem}"
    if context:
        message += f" ({context}"
        cmark = getattr(exc, "context_mark", None)
        if cmark is not None and cmark.line + 1 != line:
            message += f" at line {cmark.line + 1}"
        message += ")"
    return line, message


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode(raw: bytes) -> str:
    """Bytes -> text, or SourceError for binary / non-UTF-8 / oversized input."""
    if len(raw) > MAX_BYTES:
        raise SourceError(1, f"file is too large ({len(raw) / 1e6:.1f} MB; the limit is {MAX_BYTES // (1024 * 1024)} MiB)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise SourceError(raw.count(b"\n", 0, nul) + 1, "binary data (NUL byte): expected a YAML text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SourceError(line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): expected a YAML text file") from None
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise SourceError(line, f"control character U+{ord(bad.group()):04X}: expected a YAML text file")
    return text


def parse(text: str) -> Source:
    """Text -> Source. Raises SourceError for anything that prevents a data tree."""
    fast = _read_plain(text)
    if fast is not None:
        return Source(fast[0], fast[1])
    return parse_careful(text)


def parse_careful(text: str) -> Source:
    """The node-tree reader: slower, and says exactly what is wrong with odd files."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        line, message = _describe_yaml_error(exc, text)
        raise SourceError(line, message) from None
    except RecursionError:
        raise SourceError(1, "nesting too deep") from None
    finally:
        loader.dispose()
    if root is None:
        raise SourceError(1, "empty file: expected a mapping starting with `version: 1`")
    builder = _Builder(min(MAX_NODES, max(MIN_NODE_BUDGET, len(text) // 2)))
    data = builder.build(root, ())
    if not isinstance(data, dict):
        raise SourceError(root.start_mark.line + 1, f"expected a mapping (version:, instances:, users: ...), got {type_name(data)}")
    if "!" in text:
        builder.problems.extend(_nonspecific_tags(text))
    return Source(data, builder.lines, builder.problems)


def _nonspecific_tags(text: str) -> list[SourceError]:
    """A problem per `!` (the non-specific tag). The node tree can't show it (the composer
    resolves it away), and libyaml and PyYAML resolve an empty `!` scalar differently."""
    loader = _Loader(text)
    out: list[SourceError] = []
    try:
        while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
            if getattr(event, "tag", None) == "!":
                out.append(SourceError(event.start_mark.line + 1, "unsupported YAML tag ! (remove it; quote a value that must stay text)"))
    finally:
        loader.dispose()
    return out


class _NotPlain(Exception):
    """The fast reader met something only the careful reader handles (or reports)."""


_SCALAR_EV, _MAP_START, _SEQ_START = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
_MAP_END, _SEQ_END, _DOC_END = yaml.MappingEndEvent, yaml.SequenceEndEvent, yaml.DocumentEndEvent


def _plain_resolvers() -> dict[str, list[tuple[str, re.Pattern]]]:
    table = _Loader.yaml_implicit_resolvers
    wildcard = table.get(None, [])
    return {first: list(pairs) + list(wildcard) for first, pairs in table.items() if first is not None}


_RESOLVERS = _plain_resolvers()


def _plain_value(event: yaml.ScalarEvent) -> Any:
    if event.anchor is not None or event.tag is not None:
        raise _NotPlain
    value = event.value
    if not event.implicit[0]:
        return value  # quoted or block scalar: a string
    for tag, regexp in _RESOLVERS.get(value[:1], ()):
        if regexp.match(value):
            if tag == _STR:
                return value
            if tag == _MERGE:
                raise _NotPlain
            try:
                out = _scalar(yaml.ScalarNode(tag, value))
            except (ValueError, OverflowError):
                raise _NotPlain from None
            if isinstance(out, float) and not math.isfinite(out):
                raise _NotPlain
            return out
    return value


def _read_plain(text: str) -> tuple[Any, dict[Path, int]] | None:
    """Data and line marks from the event stream, or None when the file needs the careful
    reader (anything unusual, including every YAML error: it reports them)."""
    loader = _Loader(text)
    try:
        return _from_events(loader.get_event)
    except (_NotPlain, yaml.YAMLError):
        return None
    finally:
        loader.dispose()


def _from_events(next_event: Callable[[], Any]) -> tuple[Any, dict[Path, int]]:
    if not isinstance(next_event(), yaml.StreamStartEvent) or not isinstance(next_event(), yaml.DocumentStartEvent):
        raise _NotPlain
    lines: dict[Path, int] = {}
    # One frame per open collection: (container, its path, is_mapping). `key` is the pending
    # key of the innermost mapping; None means the next scalar is a key (after a value, and
    # after a nested collection closes, a mapping always expects its next key).
    stack: list[tuple[Any, Path, bool]] = []
    key: Any = None
    root: Any = None
    count = 0
    while True:
        event = next_event()
        kind = type(event)
        if kind is _MAP_END or kind is _SEQ_END:
            stack.pop()
            continue
        if kind is _DOC_END:
            break
        count += 1
        if count > MAX_NODES:
            raise _NotPlain
        if stack:
            container, path, is_map = stack[-1]
            if is_map and key is None:
                if kind is not _SCALAR_EV:
                    raise _NotPlain  # a list or mapping as a key
                name = _plain_value(event)
                if not isinstance(name, str) or name in container:
                    raise _NotPlain  # non-string or duplicate key
                key = name
                lines[path + (name,)] = event.start_mark.line + 1
                continue
            if is_map:
                here = path + (key,)
            else:
                here = path + (len(container),)
                lines[here] = event.start_mark.line + 1
        else:
            container, here, is_map = None, (), False
            lines[()] = event.start_mark.line + 1
        if kind is _SCALAR_EV:
            value = _plain_value(event)
        elif kind is _MAP_START or kind is _SEQ_START:
            if event.anchor is not None or event.tag is not None or len(here) >= MAX_DEPTH:
                raise _NotPlain
            value = {} if kind is _MAP_START else []
        else:
            raise _NotPlain  # an alias
        if container is None:
            root = value
        elif is_map:
            container[key] = value
            key = None
        else:
            container.append(value)
        if kind is not _SCALAR_EV:
            stack.append((value, here, kind is _MAP_START))
    if stack or not isinstance(root, dict) or not isinstance(next_event(), yaml.StreamEndEvent):
        raise _NotPlain
    return root, lines


class _Builder:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lines: dict[Path, int] = {}
        self.problems: list[SourceError] = []
        self.count = 0
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > self.budget:
            raise SourceError(node.start_mark.line + 1, "too many nodes (alias expansion?)")
        if len(path) > MAX_DEPTH:
            raise SourceError(node.start_mark.line + 1, f"nesting too deep (more than {MAX_DEPTH} levels)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = _scalar(node)
                if isinstance(value, float) and not math.isfinite(value):
                    self.problems.append(SourceError(node.start_mark.line + 1, "infinite or NaN numbers are not allowed", path))
                return value
            except BadDate:
                self.problems.append(SourceError(node.start_mark.line + 1, f"no such date or time: {node.value} (quote it if it is not a date)", path))
                return node.value
            except (ValueError, OverflowError):
                self.problems.append(SourceError(node.start_mark.line + 1, f"unsupported YAML tag {_short_tag(node.tag)}", path))
                return node.value
        if id(node) in self.active:
            raise SourceError(node.start_mark.line + 1, "recursive alias: a node contains itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self._tag_problem(node, path)
                out = []
                for i, item in enumerate(node.value):
                    self.lines[path + (i,)] = item.start_mark.line + 1
                    out.append(self.build(item, path + (i,)))
                return out
            assert isinstance(node, yaml.MappingNode)  # the composer makes only three node kinds
            if node.tag != _MAP:
                self._tag_problem(node, path)
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _tag_problem(self, node: yaml.Node, path: Path) -> None:
        self.problems.append(SourceError(node.start_mark.line + 1, f"unsupported YAML tag {_short_tag(node.tag)}", path))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        out: dict = {}
        explicit: dict[str, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(SourceError(line, "a key must be a plain string, not a list or mapping", path))
                continue
            try:
                key = _scalar(key_node) if key_node.tag != _STR else key_node.value
            except (ValueError, OverflowError):  # `=`, an impossible date: not a string either
                key = None
            if not isinstance(key, str):
                self.problems.append(
                    SourceError(line, f"key {key_node.value!r} must be a string (quote it)", path)
                )
                key = key_node.value
            if key in explicit:
                self.problems.append(
                    SourceError(line, f"duplicate key '{key}' (first at line {explicit[key]})", path + (key,))
                )
                continue
            explicit[key] = line
            self.lines[path + (key,)] = line
            out[key] = self.build(value_node, path + (key,))
        # `<<: *anchor` entries: explicit keys win; earlier merges win over later ones.
        for source in merged:
            if not isinstance(source, yaml.MappingNode):
                self.problems.append(SourceError(source.start_mark.line + 1, "`<<` merges mappings only", path))
                continue
            prefix = path + ("<<",)
            outer, self.lines = self.lines, {}
            try:
                data = self.build(source, prefix)
            finally:
                inner, self.lines = self.lines, outer
            n = len(prefix)
            for key, value in data.items():
                if key not in out:
                    out[key] = value
                    for sub, ln in inner.items():
                        if len(sub) > n and sub[n] == key:
                            self.lines.setdefault(path + sub[n:], ln)
        return out


def _short_tag(tag: str) -> str:
    tag = tag.replace("tag:yaml.org,2002:", "!!")
    return tag if len(tag) <= 40 else tag[:37] + "..."


# In the order they are tried: bool before int (a bool is an int).
_TYPE_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"), (dict, "a mapping"))


def type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)
