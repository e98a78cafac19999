"""The YAML reference (docs/yaml-reference.md) as Markdown, generated from the JSON Schema so
the two cannot disagree: `reconciler schema --markdown` prints it, `make docs` rewrites the file,
and tests/test_docs.py fails when the committed copy is stale."""

from __future__ import annotations

import json
from typing import Any

from . import resources

REGENERATE = "make docs"
Schema = dict[str, Any]
INLINE = ("envRef", "secretRef")  # small objects shown in the Type column, without a section


def _defs(root: Schema) -> Schema:
    defs: Schema = root.get("$defs", {})
    return defs


def _resolve(node: Schema, root: Schema) -> tuple[Schema, str | None]:
    """The node with a local `$ref` followed (its own description wins), and the def's name."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
        return node, None
    name = ref.removeprefix("#/$defs/")
    target = dict(_defs(root)[name])
    if "description" in node:
        target["description"] = node["description"]
    return target, name


def _type(node: Schema, root: Schema) -> str:
    node, ref = _resolve(node, root)
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_type(branch, root) for branch in node["anyOf"])
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), root)}"
    if kind == "object" and ref in INLINE:
        return "`{" + " \\| ".join(f"{k}: …" for k in node.get("properties", {})) + "}`"
    if kind == "object" and "properties" not in node and isinstance(node.get("additionalProperties"), dict):
        return "map"
    if isinstance(kind, list):
        return " or ".join(kind)
    if ref is not None and kind == "string":
        return f"string ({ref})"
    return str(kind or "any")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _object_branch(node: Schema, root: Schema) -> Schema | None:
    """The object a key's value is (itself, its map values, its list items, an anyOf branch)."""
    node, ref = _resolve(node, root)
    if ref in INLINE:
        return None
    if node.get("type") == "object" and "properties" in node:
        return node
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        return _object_branch(node["additionalProperties"], root)
    if node.get("type") == "array":
        return _object_branch(node.get("items", {}), root)
    for branch in node.get("anyOf", []):
        found = _object_branch(branch, root)
        if found is not None:
            return found
    return None


def _child_path(path: str, key: str, node: Schema, root: Schema) -> str:
    node, _ = _resolve(node, root)
    base = f"{path}.{key}" if path else key
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        names = node.get("propertyNames", {}).get("$ref", "#/$defs/name").rsplit("/", 1)[-1]
        return f"{base}.<{names}>"
    if node.get("type") == "array":
        return f"{base}[]"
    return base


def _when(rule: Schema) -> str:
    """`then` when KEY is VALUES; otherwise ... (an `else` may hold another if/then/else)."""
    parts = []
    for key, spec in rule["if"].get("properties", {}).items():
        values = ", ".join(f"`{v}`" for v in spec.get("enum", [spec["const"]] if "const" in spec else []))
        then = ", ".join(f"`{k}`" for k in rule.get("then", {}).get("required", []))
        parts.append(f"{then} when `{key}` is {values}")
    other = rule.get("else", {})
    rest = _when(other) if "if" in other else ", ".join(f"`{k}`" for k in other.get("required", []))
    return "; ".join(parts) + (f"; otherwise {rest}" if rest else "")


def _section(path: str, node: Schema, root: Schema, out: list[str]) -> None:
    title = path or "Top level"
    out += [f"## `{title}`" if path else f"## {title}", ""]
    if node.get("description"):
        out += [_cell(node["description"]), ""]
    conditional = [r for r in node.get("allOf", []) if "if" in r]
    for rule in conditional:
        out += [f"Required: {_when(rule)}.", ""]
    required = set(node.get("required", []))
    out += ["| Key | Type | Required | Description |", "|---|---|---|---|"]
    for pattern, spec in node.get("patternProperties", {}).items():
        out.append(f"| `{pattern}` (pattern) | any | no | {_cell(spec.get('description', ''))} |")
    children: list[tuple[str, Schema]] = []
    for key, spec in node.get("properties", {}).items():
        resolved, _ = _resolve(spec, root)
        desc = _cell(resolved.get("description", ""))
        out.append(f"| `{key}` | {_type(spec, root)} | {'yes' if key in required else 'no'} | {desc} |")
        child = _object_branch(spec, root)
        if child is not None:
            children.append((_child_path(path, key, spec, root), child))
    out.append("")
    for child_path, child in children:
        _section(child_path, child, root, out)


def markdown(root: Schema | None = None) -> str:
    if root is None:
        root = json.loads(resources.read_text(resources.SCHEMA))
    out = [
        "# YAML reference",
        "",
        "<!-- Generated from schemas/desired-state.schema.json by `reconciler schema --markdown`;",
        f"     do not edit: change the schema, then run `{REGENERATE}`. -->",
        "",
        _cell(root.get("title", "")) + ".",
        "",
        "Editors that speak the YAML language server validate and complete files against the same",
        "schema: see [editors.md](editors.md). Definitions used in several places:",
        "",
    ]
    for name, spec in _defs(root).items():
        if spec.get("type") == "string" and "description" in spec:
            out.append(f"- **{name}**: {_cell(spec['description'])}")
    out.append("")
    _section("", root, root, out)
    return "\n".join(out).rstrip("\n") + "\n"
