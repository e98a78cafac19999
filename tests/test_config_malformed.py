"""The malformed corpus (tests/malformed/, expectations in tests/malformed/EXPECTED) through the
real CLI: every file exits 1 with a `FILE:LINE: ...` line carrying the expected message, and
never a traceback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.cli import Cli, Result

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "malformed"
SECRET_IN_CORPUS = "Sup3r-Secret-Passw0rd"  # in identity-in-acl.yaml; must never be echoed


def _expected() -> dict[str, tuple[int, str]]:
    out = {}
    for raw in (CORPUS / "EXPECTED").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        name, line, fragment = raw.split(":", 2)
        out[name] = (int(line), fragment.strip())
    return out


EXPECTED = _expected()


def _validate(rel: str) -> Result:
    # --resolve-secrets: the corpus has missing secret files and weak tokens
    return Cli(ROOT, env={"CORPUS_TOKEN": "abc", "CORPUS_WEAK_TOKEN": "alllowercase123"})("validate", "--resolve-secrets", "-f", rel)


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    names = sorted(EXPECTED)
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = pool.map(lambda n: _validate(f"tests/malformed/{n}"), names)
        return dict(zip(names, done, strict=False))


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "EXPECTED"}
    assert files == set(EXPECTED), "every corpus file needs an EXPECTED line and vice versa"
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_file(name: str, results: dict[str, Result]) -> None:
    proc = results[name]
    line, fragment = EXPECTED[name]
    assert proc.code == 1, proc.err
    assert "Traceback" not in proc.err + proc.out
    assert proc.out == ""
    lines = proc.err.splitlines()
    assert lines, "no error printed"
    prefix = f"tests/malformed/{name}:"
    assert all(ln.startswith(prefix) for ln in lines), lines
    wanted = f"{prefix}{line}: "
    assert any(ln.startswith(wanted) and fragment in ln for ln in lines), (wanted, fragment, lines)
    assert SECRET_IN_CORPUS not in proc.err
    assert "Sup3r" not in proc.err


def test_five_megabyte_file_loads(tmp_path: Path) -> None:
    # Size is not a bomb: a large inventory loads (bombs are bounded by nodes and depth).
    big = tmp_path / "big.yaml"
    with open(big, "w", encoding="utf-8") as fh:
        fh.write("version: 1\ninstances:\n  cache: {nodes: ['127.0.0.1:6379']}\nusers:\n")
        i = 0
        while fh.tell() < 5 * 1000 * 1000:
            fh.write(f"  user-{i}:\n    acl: \"~app:{i}:* +get +set\"\n")
            i += 1
    proc = _validate(str(big))
    assert proc.code == 0, proc.err
    assert f"{i} users" in proc.out


def test_file_beyond_any_inventory_is_refused_without_reading(tmp_path: Path) -> None:
    from reconciler.config.yamlsrc import MAX_BYTES

    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_BYTES + 1)  # sparse: nothing is written or read
    proc = _validate(str(huge))
    assert proc.code == 1
    assert "Traceback" not in proc.err
    assert proc.err.startswith(f"{huge}:1: file is too large"), proc.err
    assert len(proc.err.splitlines()) == 1


def test_a_file_bigger_than_it_measured_is_too_large_too() -> None:
    """The size is checked on what was opened, and again on what was read: a file that grew after
    it was measured (or, like /proc's, measures 0) is refused by the same rule, for every reader."""
    from reconciler import files

    maps = "/proc/self/maps"  # a regular file whose st_size is 0 and whose content is not
    with pytest.raises(files.TooLarge) as exc:
        files.read_regular(maps, 16)
    assert exc.value.size == 17  # read one byte past the limit, no more
    data, _ = files.read_regular(maps, 1024 * 1024)
    assert 16 < len(data) <= 1024 * 1024


def test_missing_file_names_it_as_given() -> None:
    proc = _validate("no/such/access.yaml")
    assert proc.code == 1
    assert proc.err.strip() == "no/such/access.yaml: cannot read: No such file or directory"


def test_all_problems_reported_sorted_by_line(tmp_path: Path) -> None:
    f = tmp_path / "many.yaml"
    f.write_text(
        "version: 1\n"
        "instances:\n"
        "  cache: {nodes: ['127.0.0.1:6379'], prune: maybe}\n"  # 3
        "roles:\n"
        "  r: '+@raed'\n"  # 5
        "users:\n"
        "  a:\n"
        "    roles: [nope]\n"  # 8
        "    acl: 'off'\n"  # 9
        "    tokens:\n"
        "      - {id: x, sha256: abc}\n"  # 11
    )
    proc = _validate(str(f))
    assert proc.code == 1
    lines = proc.err.splitlines()
    numbers = [int(ln.split(":")[1]) for ln in lines]
    assert numbers == sorted(numbers)
    assert set(numbers) == {3, 5, 8, 9, 11}, lines
