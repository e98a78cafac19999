"""The malformed corpus (tests/malformed/, expectations in tests/malformed/EXPECTED) through the
real CLI: every file exits 1 with a `FILE:LINE: ...` line carrying the expected message, and
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORPUS_")}
    env.update(CORPUS_TOKEN="abc", CORPUS_WEAK_TOKEN="alllowercase123")
    return env


def _validate(rel: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        # --resolve-secrets: the corpus has missing secret files and weak tokens
        [sys.executable, "-m", "reconciler.cli", "validate", "--resolve-secrets", "-f", rel],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    env = _env()
    names = sorted(EXPECTED)
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = pool.map(lambda n: _validate(f"tests/malformed/{n}", env), names)
        return dict(zip(names, done, strict=False))


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "EXPECTED"}
    assert files == set(EXPECTED), "every corpus file needs an EXPECTED line and vice versa"
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_file(name: str, results: dict[str, subprocess.CompletedProcess]) -> None:
    proc = results[name]
    line, fragment = EXPECTED[name]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines, "no error printed"
    prefix = f"tests/malformed/{name}:"
    assert all(ln.startswith(prefix) for ln in lines), lines
    wanted = f"{prefix}{line}: "
    assert any(ln.startswith(wanted) and fragment in ln for ln in lines), (wanted, fragment, lines)
    assert SECRET_IN_CORPUS not in proc.stderr
    assert "Sup3r" not in proc.stderr


def test_five_megabyte_file_loads(tmp_path: Path) -> None:
    # Size is not a bomb: a large inventory loads (bombs are bounded by nodes and depth).
    big = tmp_path / "big.yaml"
    with open(big, "w", encoding="utf-8") as fh:
        fh.write("version: 1\ninstances:\n  cache: {nodes: ['127.0.0.1:6379']}\nusers:\n")
        i = 0
        while fh.tell() < 5 * 1000 * 1000:
            fh.write(f"  user-{i}:\n    acl: \"~app:{i}:* +get +set\"\n")
            i += 1
    proc = _validate(str(big), _env())
    assert proc.returncode == 0, proc.stderr
    assert f"{i} users" in proc.stdout


def test_file_beyond_any_inventory_is_refused_without_reading(tmp_path: Path) -> None:
    from reconciler.config.yamlsrc import MAX_BYTES

    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_BYTES + 1)  # sparse: nothing is written or read
    proc = _validate(str(huge), _env())
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{huge}:1: file is too large"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_missing_file_names_it_as_given() -> None:
    proc = _validate("no/such/access.yaml", _env())
    assert proc.returncode == 1
    assert proc.stderr.strip() == "no/such/access.yaml: cannot read: No such file or directory"


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
    proc = _validate(str(f), _env())
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    numbers = [int(ln.split(":")[1]) for ln in lines]
    assert numbers == sorted(numbers)
    assert set(numbers) == {3, 5, 8, 9, 11}, lines
