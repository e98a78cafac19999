"""The fast YAML reader (libyaml events, plain files only) and the careful one (node tree) give
the same data and line marks; whatever the fast one doesn't take, the careful one reports."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
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


# -- the readers resolve every scalar exactly as PyYAML's SafeLoader does ------------------------
# (import writes with safe_dump, most tools read with SafeLoader: a bare word must mean the same)

SAFE_LOADERS = tuple(dict.fromkeys((yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))))
YAML_FILES = sorted({*ROOT.glob("tests/**/*.y*ml"), *ROOT.glob("examples/**/*.y*ml"), *ROOT.glob("plan-fixtures/**/*.y*ml")})


def _iso(value: object) -> object:
    """SafeLoader's data with dates and timestamps as ISO text, the readers' one change of form."""
    if isinstance(value, dict):
        return {_iso(k): _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def _safeloader(text: str, loader: type) -> tuple[bool, object]:
    try:
        return True, _iso(yaml.load(text, Loader=loader))  # noqa: S506 - SafeLoader / CSafeLoader only
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):  # ValueError: an impossible date
        return False, None


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _assert_like_safeloader(text: str) -> None:
    """Ours takes the file cleanly only with SafeLoader's data; what SafeLoader refuses, ours
    refuses too (an error or a problem line). Ours may also refuse what SafeLoader takes
    (duplicate or non-string keys, tags, infinity), but never read it differently."""
    try:
        ours: yamlsrc.Source | None = yamlsrc.parse(text)
    except yamlsrc.SourceError:
        ours = None
    for loader in SAFE_LOADERS:
        loaded, theirs = _safeloader(text, loader)
        if ours is not None and not ours.problems:
            assert loaded and _equal(ours.data, theirs), (loader.__name__, text, ours.data, theirs)
        if not loaded:
            assert ours is None or ours.problems, (loader.__name__, text)
    fast = yamlsrc._read_plain(text)
    if fast is not None:
        assert ours is not None and not ours.problems and _equal(fast[0], ours.data), text


def _digits(alphabet: str = "0123456789", lo: int = 1, hi: int = 6) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=lo, max_size=hi)


_SIGN = st.sampled_from(["", "-", "+"])
SCALAR_TEXT = st.one_of(
    # integers: decimal, underscores, leading zeros (1.1 octal), 0x / 0o / 0b, sexagesimal
    st.builds("".join, st.tuples(_SIGN, _digits("0123456789_"))),
    st.builds("{}0x{}".format, _SIGN, _digits("0123456789abcdefABCDEF_")),
    st.builds("{}0o{}".format, _SIGN, _digits("01234567")),
    st.builds("{}0b{}".format, _SIGN, _digits("01_")),
    st.builds("{}{}:{}".format, _SIGN, _digits(lo=1, hi=3), _digits(lo=1, hi=2)),
    # floats: dots, exponents with and without sign, infinities, NaN, 123e4567
    st.builds("{}{}.{}{}".format, _SIGN, _digits("0123456789_", 0, 4), _digits("0123456789_", 0, 4),
              st.sampled_from(["", "e5", "e+5", "E-05", "e4567"])),
    st.builds("{}{}{}{}".format, _SIGN, _digits(), st.sampled_from(["e", "E"]), _digits(lo=1, hi=4)),
    st.sampled_from([".inf", "-.inf", "+.INF", ".Inf", ".nan", ".NaN", "NaN", "inf", "1e", "e1", ".", "-", "+", "._1"]),
    # booleans and nulls, in every case YAML 1.1 knows and some it does not
    st.sampled_from(["yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N",
                     "true", "True", "TRUE", "false", "False", "FALSE", "tRUE", "yES", "~", "null", "Null", "NULL", "nULL",
                     "=", "<<", "!", "&", "*"]),
    # dates and timestamps, real and impossible
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32)),
    st.builds("{:04d}-{}-{}{}{}:{:02d}:{:02d}{}{}".format, st.integers(1, 9999), st.sampled_from(["1", "01", "12", "13"]),
              st.sampled_from(["5", "05", "31", "30"]), st.sampled_from(["T", "t", " ", "  "]),
              st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
              st.sampled_from(["", ".1", ".123456789"]), st.sampled_from(["", "Z", "+05:00", "-5", " -05:30", "+1"])),
    # anything made of the characters these forms use
    st.text("0123456789.-+_:eExXoObB~yYnNtTfFaA ", min_size=1, max_size=12),
)


@settings(max_examples=1500, deadline=None)
@given(SCALAR_TEXT, st.sampled_from(["k: {}\n", "- {}\n", "{}: v\n", "k: [{}]\n", "k: {{a: {}}}\n"]))
def test_scalars_resolve_like_safeloader(scalar: str, shape: str) -> None:
    _assert_like_safeloader(shape.format(scalar))


@pytest.mark.parametrize("text, value", [
    ("123e4567", "123e4567"), ("1e3", "1e3"), ("1.0e+3", 1000.0), ("0o17", "0o17"), ("017", 15), ("0x1F", 31),
    ("0b101", 5), ("1_000", 1000), ("20:30", 1230), ("yes", True), ("off", False), ("y", "y"), ("~", None),
    ("2026-11-01", "2026-11-01"), ("2026-11-01 10:00:00", "2026-11-01T10:00:00"), ("2026-1-5", "2026-1-5"),
])
def test_named_scalars(text: str, value: object) -> None:
    assert yamlsrc.parse(f"k: {text}\n").data == {"k": value}
    _assert_like_safeloader(f"k: {text}\n")


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_reads_like_safeloader(path: Path) -> None:
    try:
        text = yamlsrc.decode(path.read_bytes())
    except yamlsrc.SourceError:
        return  # binary or not UTF-8: refused before any YAML is read
    _assert_like_safeloader(text)


FINITE = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["yes", "no", "on", "0o17", "0x1F", "1e3", "123e4567", "~", "null",
                                           "2026-11-01", "20:30", "1_000", "=", "2026-02-30"]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.recursive(
    FINITE, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20), min_size=1, max_size=4))
def test_what_safe_dump_writes_reads_back_the_same(doc: dict) -> None:
    """`import` writes with yaml.safe_dump: every value it writes reads back as itself."""
    src = yamlsrc.parse(yaml.safe_dump(doc, sort_keys=False, allow_unicode=False))
    assert not src.problems and _equal(src.data, doc)
