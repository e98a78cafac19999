"""JSON Schema validation with errors mapped to YAML lines and worded for people.

Messages never echo a value the user wrote (it might be a secret pasted in the wrong
place), except enum-like choices and key names.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import resources
from ..errors import ReconcilerError
from .yamlsrc import Path, type_name

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    try:
        return json.loads(resources.read_text(resources.SCHEMA))
    except OSError as exc:
        raise ReconcilerError(f"cannot read the schema reconciler/{resources.SCHEMA}: {exc.strerror} (broken installation?)") from None


@functools.lru_cache(maxsize=1)
def validator() -> "Draft202012Validator":
    # Imported here: jsonschema is the slowest import, and files that fail earlier don't need it.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(python_anchors(_inline_refs(schema())))


def python_anchors(node: Any) -> Any:
    """Every `pattern` with Python's `\\Z` for a final `$`. The schema file speaks ECMA-262, where
    `$` ends the string; Python validators use `re.search`, where `$` also matches before a final
    newline, so "2020-01-01\\n" would pass a date pattern and the builder would read no date."""
    if isinstance(node, list):
        return [python_anchors(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "pattern" and isinstance(v, str):
            v = _anchor(v)
        elif k == "patternProperties" and isinstance(v, dict):
            v = {_anchor(p): python_anchors(s) for p, s in v.items()}
        else:
            v = python_anchors(v)
        out[k] = v
    return out


def _anchor(pattern: str) -> str:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _inline_refs(root: dict) -> dict:
    """Replace local `$ref`s by their targets (the schema has no recursion): jsonschema's
    reference lookups would otherwise dominate validating a file with thousands of users."""

    def target(ref: str) -> Any:
        node: Any = root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items() if k not in ("$ref", "$defs")}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            merged = dict(walk(target(ref)))
            merged.update(out)  # siblings of $ref (a description) win
            return merged
        return out

    inlined = walk(root)
    inlined["$schema"] = root.get("$schema")
    return inlined


@dataclass(frozen=True)
class SchemaProblem:
    path: Path
    message: str
    key_line: bool = False  # path names a key (unknown key): point at the key itself


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


@functools.lru_cache(maxsize=1)
def fast_validator() -> Callable[[Any], Any]:
    """fastjsonschema's compiled validator of the same schema: a yes/no verdict about 4x faster
    than jsonschema on large files. It speaks draft 7, so 2020-12's `dependentRequired` is
    rewritten as draft 7's `dependencies`; tests/test_config_schema.py checks both validators
    agree on every example and every malformed file."""
    import fastjsonschema

    def draft7(node: Any) -> Any:
        if isinstance(node, list):
            return [draft7(v) for v in node]
        if not isinstance(node, dict):
            return node
        # Words for people don't change the verdict; fastjsonschema would copy each into every
        # error branch of the generated code, and compiling that is a cold process's cost.
        out = {
            k: ({name: draft7(sub) for name, sub in v.items()} if k in _NAME_MAPS and isinstance(v, dict) else draft7(v))
            for k, v in node.items()
            if k not in _NOT_VALIDATION
        }
        if "dependentRequired" in node:
            out["dependencies"] = node["dependentRequired"]
        keys = _one_of_keys(node.get("oneOf"))
        if keys and "anyOf" not in out and not set(keys) & set(out.get("dependencies", {})):
            # fastjsonschema tries every oneOf branch and pays an exception for each failing
            # one (two per token of a 10,000-user file). "Exactly one of these keys" is the same
            # as "each excludes the others" (no exception when valid) plus an anyOf that stops
            # at the first present key (the schema lists the most common form first).
            del out["oneOf"]
            deps = out.setdefault("dependencies", {})
            for k in keys:
                deps[k] = {"properties": {other: False for other in keys if other != k}}
            out["anyOf"] = [{"required": [k]} for k in keys]
        return out

    converted = draft7(python_anchors(_inline_refs(schema())))
    converted["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(converted)


_NOT_VALIDATION = frozenset({"dependentRequired", "description", "title", "errorMessage", "x-errorMessages", "$comment", "examples"})
_NAME_MAPS = frozenset({"properties", "patternProperties", "dependencies", "definitions"})  # keys are names, not keywords


def _one_of_keys(branches: Any) -> list[str] | None:
    """The keys of a oneOf whose branches are each `required: [one key]`, else None."""
    if not isinstance(branches, list) or not branches:
        return None
    keys = []
    for branch in branches:
        if not (isinstance(branch, dict) and set(branch) == {"required"} and len(branch["required"]) == 1):
            return None
        keys.append(branch["required"][0])
    return keys


def is_valid_fast(data: Any) -> bool:
    import fastjsonschema

    try:
        fast_validator()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def check(data: Any) -> list[SchemaProblem]:
    # Valid files (the common case) take the fast verdict; only invalid ones pay for jsonschema's
    # full list of errors, each worded for people.
    if is_valid_fast(data):
        return []
    out: list[SchemaProblem] = []
    for error in validator().iter_errors(data):
        out.extend(_explain(error))
    if not out:
        # The two validators disagree: never let that pass as valid.
        return [SchemaProblem((), "does not match the schema (run `reconciler validate` with a newer version?)")]
    # When a value has the wrong type, other complaints about the same value are noise.
    mistyped = {p.path for p in out if p.message.startswith("expected ") and ", got " in p.message}
    # Several schema branches can report the same thing; keep the first of each.
    seen: set[tuple[Path, str]] = set()
    unique = []
    for p in out:
        if p.path in mistyped and not (p.message.startswith("expected ") and ", got " in p.message):
            continue
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            unique.append(p)
    return unique


def _custom(error: "ValidationError") -> str | None:
    """The schema's own wording: `x-errorMessages` per keyword, else `errorMessage` (a string,
    as yaml-language-server shows it) for anything but unknown/missing keys."""
    if not isinstance(error.schema, dict):
        return None
    per_keyword = error.schema.get("x-errorMessages")
    if isinstance(per_keyword, dict) and error.validator in per_keyword:
        return per_keyword[error.validator]
    msg = error.schema.get("errorMessage")
    if isinstance(msg, str) and error.validator not in ("additionalProperties", "required", "dependentRequired"):
        return msg
    return None


def _explain(error: "ValidationError") -> Iterator[SchemaProblem]:
    path: Path = tuple(error.absolute_path)
    kind = error.validator
    if "propertyNames" in error.schema_path:
        # jsonschema reports a bad key at its mapping; point at the key itself.
        message = _custom(error) or "invalid name"
        yield SchemaProblem(path + (error.instance,), f"{message}: {_short(error.instance)}", key_line=True)
        return
    if kind in ("anyOf", "oneOf"):
        branch = _single_plausible_branch(error)
        if branch is not None:
            for sub in branch:
                yield from _explain(sub)
            return
    custom = _custom(error)
    if custom:
        yield SchemaProblem(path, custom)
        return
    value = error.instance
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        for key in sorted(k for k in value if k not in allowed):
            yield SchemaProblem(path + (key,), _unknown_key(key, allowed), key_line=True)
        return
    if kind == "required":
        missing = [k for k in error.validator_value if k not in value]
        for key in missing:
            yield SchemaProblem(path, f"missing required key '{key}'")
        return
    if kind == "dependentRequired":
        for key, needs in error.validator_value.items():
            if key in value:
                for other in needs:
                    if other not in value:
                        yield SchemaProblem(path, f"'{key}' needs '{other}' too")
        return
    if kind == "type":
        expected = error.validator_value
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
        hint = ""
        if expected == "boolean" and isinstance(value, str) and value.lower() in ("y", "n"):
            hint = " (write true or false; y and n are strings)"
        yield SchemaProblem(path, f"expected {words}, got {type_name(value)}{hint}")
        return
    if kind == "enum":
        yield SchemaProblem(path, f"{_short(value)} is not one of: {', '.join(map(str, error.validator_value))}")
        return
    if kind == "const":
        yield SchemaProblem(path, f"must be {error.validator_value!r}")
        return
    if kind == "minProperties":
        yield SchemaProblem(path, "must not be empty")
        return
    if kind == "minItems":
        yield SchemaProblem(path, f"needs at least {error.validator_value} item(s)")
        return
    if kind == "uniqueItems":
        yield SchemaProblem(path, "items must be unique (listed twice)")
        return
    if kind == "minLength":
        yield SchemaProblem(path, "must not be empty")
        return
    if kind in ("minimum", "exclusiveMinimum"):
        op = ">=" if kind == "minimum" else ">"
        yield SchemaProblem(path, f"must be {op} {error.validator_value}")
        return
    if kind in ("maximum", "exclusiveMaximum"):
        op = "<=" if kind == "maximum" else "<"
        yield SchemaProblem(path, f"must be {op} {error.validator_value}")
        return
    if kind == "pattern":
        yield SchemaProblem(path, "has an invalid format")
        return
    yield SchemaProblem(path, f"invalid ({kind})")


def _single_plausible_branch(error: "ValidationError") -> "list[ValidationError] | None":
    """For anyOf/oneOf: if exactly one branch matches the value's type, its errors explain best."""
    if error.validator == "oneOf" and not error.context:
        return None  # valid under several branches
    branches: "dict[int, list[ValidationError]]" = {}
    for sub in error.context or ():
        branches.setdefault(sub.schema_path[0], []).append(sub)
    n_branches = len(error.validator_value)
    plausible = [
        errs
        for errs in branches.values()
        if not any(e.validator in ("type", "const") and not e.relative_path for e in errs)
    ]
    # A branch without errors can't exist here (the value would be valid), so branches
    # missing from `branches` don't count.
    if len(plausible) == 1 and len(branches) == n_branches:
        errs = plausible[0]
        # Branches that are just `required: [x]` (oneOf of alternatives) say little on their own.
        if all(e.validator == "required" and not e.relative_path for e in errs):
            return None
        return errs
    return None


def _unknown_key(key: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key {_short(key)} ({hint}expected one of: {', '.join(allowed)})"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
