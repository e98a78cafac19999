"""Read a YAML file into plain Python data plus a map from YAML path to line number.

We compose the node tree ourselves (instead of yaml.safe_load) so that every key and item
keeps its line, duplicate keys are caught, and only plain JSON-like scalars come out.
Scalars follow YAML 1.2's core schema, as editors do: `yes`/`on`/`no`/`off` stay strings,
`2026-11-01` stays a string (dates are checked by the schema), `20:30` is not an integer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024  # a desired-state file this big is a mistake, not an inventory
MAX_DEPTH = 64  # real files nest about 6 levels; deeper is garbage (and would exhaust the stack)
MIN_NODE_BUDGET = 100_000  # alias expansion ("billion laughs") guard; grows with the file size

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
    """Composer only; implicit tags follow the YAML 1.2 core schema."""

    yaml_implicit_resolvers: dict = {}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])

_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ, _MERGE = (
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
)


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == _STR:
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return value.lower() == "true"
    if tag == _INT:
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value, 10)
    if tag == _FLOAT:
        low = value.lower()
        if low.endswith(".inf"):
            return float("-inf") if low.startswith("-") else float("inf")
        if low == ".nan":
            return float("nan")
        return float(value)
    raise ValueError(tag)


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
    builder = _Builder(max(MIN_NODE_BUDGET, len(text) // 2))
    data = builder.build(root, ())
    if not isinstance(data, dict):
        raise SourceError(root.start_mark.line + 1, f"expected a mapping (version:, instances:, users: ...), got {type_name(data)}")
    return Source(data, builder.lines, builder.problems)


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
            key = _scalar(key_node) if key_node.tag != _STR else key_node.value
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


def type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
