"""Terminal conventions, tested the way a user sees them: progress on stderr only on a
terminal (a real pty) and never with --quiet or when piped; colors off with --no-color,
NO_COLOR, TERM=dumb or a pipe; the "no aclfile" warning once per command."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import Cli

RECONCILER = str(Path(sys.executable).parent / "reconciler")
REPO = Path(__file__).resolve().parent.parent
ESC = "\x1b["


def users_file(address: str, users: int, acl: str = "~k:* +get") -> str:
    lines = ["version: 1", "instances:", "  cache:", f'    nodes: ["{address}"]', "users:"]
    for i in range(users):
        lines += [f"  app-{i:05d}:", f'    acl: "{acl}"']
    return "\n".join(lines) + "\n"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM") and not k.startswith("RECONCILER_")}
    env.update({"PYTHONPATH": str(REPO), "TERM": "xterm-256color", **extra})
    return env


def run_on_pty(argv: list[str], *, stdout_tty: bool = False, **env: str) -> tuple[int, str, str]:
    """Run reconciler with stderr (and optionally stdout) on a pseudo-terminal; return
    (exit code, what stdout got, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [RECONCILER, *argv],
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_tty else subprocess.PIPE,
        stderr=slave,
        env=_env(**env),
    )
    os.close(slave)
    seen = bytearray()
    out = bytearray()
    streams = [master] + ([proc.stdout.fileno()] if proc.stdout else [])
    while streams:
        ready, _, _ = select.select(streams, [], [], 60)
        if not ready:
            break
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                chunk = b""
            if not chunk:
                streams.remove(fd)
                continue
            (seen if fd == master else out).extend(chunk)
    code = proc.wait(timeout=60)
    os.close(master)
    if proc.stdout:
        proc.stdout.close()
    return code, out.decode(), seen.decode(errors="replace")


@pytest.fixture
def valkey(server_factory):
    return server_factory("valkey-9.1")


def test_progress_on_a_terminal_only(valkey, tmp_path: Path) -> None:
    f = tmp_path / "access.yaml"
    f.write_text(users_file(valkey.address, 2500))
    code, out, term = run_on_pty(["apply", "-f", str(f), "--auto-approve"])
    assert code == 0, term
    assert "reading cache: 0/1 nodes" in term
    assert "applying cache " + valkey.address + ": setuser 1000/2500" in term
    assert "setuser 2000/2500" in term
    assert "verifying cache: 0/1 nodes" in term
    assert "\r\x1b[K" in term  # the line is rewritten in place and cleared at the end
    assert "Apply complete: 2500 added" in out and "reading" not in out

    # --quiet: nothing but the warning; piped stderr: no progress either.
    f.write_text(users_file(valkey.address, 2500, acl="~k:* +get +set"))
    code, out, term = run_on_pty(["apply", "-f", str(f), "--auto-approve", "--quiet"])
    assert code == 0 and "Apply complete: 0 added, 2500 changed" in out
    assert "reading" not in term and "applying" not in term and "\r" not in term.replace("\r\n", "\n")
    r = subprocess.run(check=False, args=[RECONCILER, "plan", "-f", str(f)], capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and "No changes." in r.stdout
    assert "reading" not in r.stderr and "\r" not in r.stderr and ESC not in r.stderr
    # TERM=dumb: no progress line even on a terminal.
    code, _, term = run_on_pty(["plan", "-f", str(f)], TERM="dumb")
    assert code == 0 and "reading" not in term


def test_colors_follow_terminal_conventions(valkey, tmp_path: Path) -> None:
    f = tmp_path / "access.yaml"
    f.write_text(users_file(valkey.address, 1))
    code, _, term = run_on_pty(["plan", "-f", str(f)], stdout_tty=True)
    assert code == 0 and ESC + "32m+ user app-00000" in term
    for argv, env in ((["--no-color"], {}), ([], {"NO_COLOR": "1"}), ([], {"TERM": "dumb"})):
        code, _, term = run_on_pty(["plan", "-f", str(f), *argv], stdout_tty=True, **env)
        assert code == 0 and "+ user app-00000" in term
        assert ESC + "32m" not in term, (argv, env)
    r = subprocess.run(check=False, args=[RECONCILER, "plan", "-f", str(f)], capture_output=True, text=True, env=_env())
    assert "+ user app-00000" in r.stdout and ESC not in r.stdout


def test_no_aclfile_warning_once_per_command(valkey, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Cli(tmp_path, capsys=capsys)
    run.file.write_text(users_file(valkey.address, 2))
    for argv in (["plan", "-f", str(run.file)], ["apply", "-f", str(run.file), "--auto-approve"]):
        rc, out, err = run(*argv)
        assert rc == 0
        assert (out + err).count("no aclfile") == 1, out + err
        assert "changes live in memory only" in err
