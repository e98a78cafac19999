"""The README and every page under docs/ run as written: a block that stops working fails here.

Each page runs in a fresh folder (HOME and XDG_STATE_HOME inside it), as a reader following it:
`sh` blocks in bash one after the other (exported variables and the current folder carried
from block to block; `yaml` files are saved in the current folder),
`yaml` blocks marked `<!-- doc-test: file NAME -->` saved under that name first, other
`yaml` blocks that are whole files (`version:` and `instances:`) through `reconciler
validate`, `json` blocks through a JSON parser. A block that needs what this machine lacks
(your servers, a cloud account, your certificates, PyPI) is marked
`<!-- doc-test: skip (why) -->` just above it and skipped, its reason listed in the report.
Shell blocks reach only the server `reconciler local-server start` runs; a page that starts
one must stop it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from reconciler.local_server import port_in_use

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "yaml-reference.md")]
BIN = Path(sys.executable).parent  # the environment the tests run in has `reconciler` installed
SHELL_LANGS = {"sh", "bash", "shell"}
MARKER = re.compile(r"^<!-- doc-test: (?P<kind>skip|file) (?P<arg>.+?) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
LOCAL_PORTS = (6390, 6391)  # what the pages start `local-server` on
BLOCK_TIMEOUT = 180


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    text: str
    skip: str | None = None  # the reason, for a block marked skip
    file: str | None = None  # save as, for a block marked file

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        if self.lang in SHELL_LANGS or self.lang == "json" or self.file:
            return True
        return self.lang in {"yaml", "yml"} and whole_file(self.text)


def whole_file(text: str) -> bool:
    return bool(re.search(r"(?m)^version:", text)) and bool(re.search(r"(?m)^instances:", text))


def blocks(page: Path) -> list[Block]:
    """Fenced blocks at the left margin, each with the marker on the closest line above it."""
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(above)
        skip = marker["arg"] if marker and marker["kind"] == "skip" else None
        file = marker["arg"] if marker and marker["kind"] == "file" else None
        out.append(Block(page, start + 1, m["lang"], "\n".join(body) + "\n", skip, file))
        i += 1
    return out


class Session:
    """One reader in an empty folder: a shell whose exported variables last from block to block."""

    def __init__(self, folder: Path):
        self.dir = folder / "work"
        self.dir.mkdir()
        self.state = folder / "exports.sh"
        home = folder / "home"
        home.mkdir()
        self.env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "XDG_STATE_HOME": str(folder / "state"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        }
        self.outputs: list[str] = []

    def sh(self, block: Block) -> None:
        # The reader's shell: exported variables and the current folder last from block to block.
        script = (
            f"cd {self.dir}\nsource {self.state} 2>/dev/null || true\nset -eo pipefail\n"
            f"{block.text}\nexport -p > {self.state}\nprintf 'cd %q\\n' \"$PWD\" >> {self.state}\n"
        )
        r = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], env=self.env, capture_output=True,
                           text=True, timeout=BLOCK_TIMEOUT, check=False)
        self.outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, f"{block.where}: exit {r.returncode}\n{block.text}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{block.where}: a traceback\n{r.stderr}"

    def validate(self, block: Block) -> None:
        path = self.cwd() / f"block-{block.line}.yaml"
        path.write_text(block.text)
        r = subprocess.run([str(BIN / "reconciler"), "validate", "-f", path.name], cwd=path.parent, env=self.env,
                           capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False)
        assert r.returncode == 0, f"{block.where}: the file does not validate\n{r.stderr}"

    def cwd(self) -> Path:
        """The reader's current folder, as the last shell block left it."""
        if self.state.exists():
            for line in reversed(self.state.read_text().splitlines()):
                if line.startswith("cd "):
                    r = subprocess.run(["bash", "-c", f"{line} && pwd"], capture_output=True, text=True, check=True)
                    return Path(r.stdout.strip())
        return self.dir

    def run(self, block: Block) -> None:
        if block.file:
            (self.cwd() / block.file).write_text(block.text)
        elif block.lang in SHELL_LANGS:
            self.sh(block)
        elif block.lang == "json":
            try:
                json.loads(block.text)
            except json.JSONDecodeError as exc:
                pytest.fail(f"{block.where}: not JSON: {exc}")
        else:
            self.validate(block)

    def leftover_servers(self) -> list[int]:
        """Ports of local servers this session started and did not stop; stopped here, by our tool."""
        root = Path(self.env["XDG_STATE_HOME"]) / "reconciler"
        # A server's folder is local-server-PORT; local-server-PORT.lock (start and stop take turns
        # on it) stays and is not a server.
        folders = [p for p in root.glob("local-server-*") if p.is_dir()] if root.exists() else []
        ports = [int(p.name.rsplit("-", 1)[1]) for p in folders]
        for port in ports:
            subprocess.run([str(BIN / "reconciler"), "local-server", "stop", "--port", str(port)], env=self.env,
                           capture_output=True, timeout=60, check=False)
        return ports


@pytest.fixture
def serialized() -> Iterator[None]:
    """The pages use fixed ports: one run at a time on this machine (other checkouts included)."""
    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "reconciler-doc-blocks.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = [p for p in LOCAL_PORTS if port_in_use(p)]
        assert not busy, f"127.0.0.1 ports {busy} are in use by something else; the pages need them free"
        yield


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_runs_as_written(page: Path, tmp_path: Path, serialized: None, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run the pages' shell blocks")
    session = Session(tmp_path)
    ran, skipped = 0, []
    try:
        for block in blocks(page):
            if block.skip:
                skipped.append(f"{block.where}: {block.skip}")
            elif block.runnable:
                session.run(block)
                ran += 1
    finally:
        leftover = session.leftover_servers()
    assert not leftover, f"{page.name} starts a local server on {leftover} and does not stop it"
    with capsys.disabled():
        print(f"\n{page.relative_to(ROOT)}: {ran} blocks ran, {len(skipped)} skipped" + "".join(f"\n  skipped {s}" for s in skipped))


def test_markers_are_well_formed() -> None:
    """Every marker sits right above a block, says why a block is skipped, and names a file simply."""
    problems = []
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            if not line.startswith("<!-- doc-test:"):
                continue
            m = MARKER.match(line)
            nxt = next((x for x in lines[n + 1:] if x.strip()), "")
            if m is None:
                problems.append(f"{page.name}:{n + 1}: not `<!-- doc-test: skip (why) -->` or `<!-- doc-test: file NAME -->`")
            elif not FENCE.match(nxt):
                problems.append(f"{page.name}:{n + 1}: a marker must sit right above a ``` block")
            elif m["kind"] == "skip" and not re.fullmatch(r"\(.{8,}\)", m["arg"]):
                problems.append(f"{page.name}:{n + 1}: say why the block is skipped, in parentheses")
            elif m["kind"] == "file" and not re.fullmatch(r"[\w.-]+", m["arg"]):
                problems.append(f"{page.name}:{n + 1}: a file marker names a plain file name")
    assert problems == []


def test_readme_is_a_front_page_that_links_every_doc() -> None:
    """The README stays short and every page under docs/ is reachable from docs/index.md."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "docs/index.md" in readme
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md" and f"]({p.name})" not in index]
    assert missing == [], f"add these to docs/index.md: {missing}"
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text()):
            assert (page.parent / target).resolve().exists(), f"{page.name} links to {target}, which does not exist"


def test_help_links_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import main

    assert main(["-h"]) == 0
    text = capsys.readouterr().out
    named = re.findall(r"docs/[\w-]+\.md", text)
    assert "docs/index.md" in named and len(named) >= 10
    assert [n for n in named if not (ROOT / n).exists()] == []
