"""The fast YAML reader (libyaml events, plain files only) and the careful one (node tree) give
the same data and line marks; whatever the fast one doesn't take, the careful one reports."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config import yamlsrc

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted({*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("tests/malformed/*.yaml"), *ROOT.glob("tests/plan-fixtures/**/*.yaml")})


def _both(text: str) -> tuple[object, object]:
    fast = yamlsrc._read_plain(text)
    try:
        careful: object = yamlsrc.parse_careful(text)
    except yamlsrc.SourceError as exc:
        careful = exc
    return fast, careful


def _assert_agree(text: str) -> bool:
    """True when the fast reader took the file."""
    fast, careful = _both(text)
    if fast is None:
        return False
    assert isinstance(careful, yamlsrc.Source), careful
    assert not careful.problems, careful.problems
    assert fast[0] == careful.data
    assert fast[1] == careful.lines
    return True


def test_readers_agree_on_every_example_and_corpus_file() -> None:
    taken = 0
    for f in FILES:
        try:
            text = yamlsrc.decode(f.read_bytes())
        except yamlsrc.SourceError:
            continue
        taken += _assert_agree(text)
    assert taken >= 10  # the examples are plain YAML: the fast reader must take them


def test_odd_files_go_to_the_careful_reader() -> None:
    odd = {
        "duplicate key": "version: 1\nusers:\n  a: {}\n  a: {}\n",
        "alias": "version: 1\nx-r: &r '+get'\nroles: {a: *r}\n",
        "merge": "version: 1\nx-u: &u {acl: '+get'}\nusers: {a: {<<: *u}}\n",
        "tag": "version: 1\nusers: !!python/object:os.system {}\n",
        "int key": "version: 1\n123: x\n",
        "infinity": "version: 1\nx: .inf\n",
        "list root": "- 1\n",
        "two documents": "version: 1\n---\nversion: 1\n",
        "syntax error": "version: 1\nusers: [\n",
        "deep": "version: 1\nx: " + "[" * 70 + "]" * 70 + "\n",
    }
    for name, text in odd.items():
        assert yamlsrc._read_plain(text) is None, name
    src = yamlsrc.parse(odd["duplicate key"])
    assert [(p.line, p.message) for p in src.problems] == [(4, "duplicate key 'a' (first at line 3)")]


def test_the_careful_reader_bounds_alias_expansion() -> None:
    bomb = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]\n"
    try:
        yamlsrc.parse(bomb)
    except yamlsrc.SourceError as exc:
        assert "too many nodes" in exc.message
    else:
        raise AssertionError("a billion-laughs file loaded")


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False),
    st.text(max_size=12), st.sampled_from(["yes", "no", "on", "0o17", "0x1F", "1e3", "~", "null", "2026-11-01", "20:30", "<<"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), VALUES, min_size=1, max_size=4), st.sampled_from([None, False, True]))
def test_readers_agree_on_generated_documents(doc: dict, flow: bool | None) -> None:
    _assert_agree(yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True))
