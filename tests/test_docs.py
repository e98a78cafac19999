"""The repository explains itself: the YAML reference matches the schema, and nothing points
to documents or trackers outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler import schema_doc

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "yaml-reference.md"
SKIP_DIRS = {".git", ".venv", ".cache", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".sh", ".md", ".toml", ".yaml", ".yml", ".json", ".j2", ".txt", ""}
# A design note or tracker the reader of a clone cannot open.
OUTSIDE = re.compile(r"DESIGN\.md|\bshared/|\bissues? #?\d+|\bticket #?\d+", re.IGNORECASE)


def test_yaml_reference_matches_the_schema() -> None:
    assert REFERENCE.exists(), "docs/yaml-reference.md is missing: run `make docs`"
    assert REFERENCE.read_text() == schema_doc.markdown(), (
        "docs/yaml-reference.md disagrees with schemas/desired-state.schema.json: run `make docs`"
    )


def test_reference_names_every_key_of_the_schema() -> None:
    # The generator itself: every property anywhere in the schema appears as a table row.
    import json

    schema = json.loads((ROOT / "schemas" / "desired-state.schema.json").read_text())
    keys: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "if" not in node:
                keys.update(props)
            for key, value in node.items():
                if key != "if":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in schema.items() if k != "$defs"})
    walk({k: v for k, v in schema["$defs"].items() if k not in schema_doc.INLINE})  # shown in the Type column
    text = schema_doc.markdown(schema)
    missing = sorted(k for k in keys if f"| `{k}` |" not in text)
    assert missing == []


def _repo_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            out.append(path)
    return out


def test_nothing_points_outside_the_repository() -> None:
    files = _repo_files()
    assert len(files) > 50  # the walk found the tree
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == [], "say why in the comment instead of citing a design note or ticket:\n" + "\n".join(hits)
