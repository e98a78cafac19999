"""The confirmation prompt of `apply`, answered on a real terminal (a pty) by a real process:
anything but `yes` (a `no`, Ctrl-D, Ctrl-C) changes nothing and says so in one line, never an
internal error."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from servers import RunningServer

ADMIN = "prompt-admin-plaintext-6c1e3a5b7d9f2048"
REPO = Path(__file__).resolve().parents[1]
PROMPT = b"Enter a value:"

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_PROMPT_ADMIN}}}}
users:
  reconciler:
    acl: "+@all ~* &*"
    tokens: [{{id: admin, secret: {{env: T_PROMPT_ADMIN}}}}]
  app:
    acl: "~app:* +get"
"""


def on_a_terminal(tmp: Path, keys: bytes | signal.Signals, *argv: str) -> tuple[int, str]:
    """Run the CLI on a pty, type `keys` (or send that signal) once the prompt shows; (exit
    code, everything it printed)."""
    env = {**os.environ, "T_PROMPT_ADMIN": ADMIN, "PYTHONPATH": str(REPO), "RECONCILER_NO_CACHE": "1"}
    env.pop("RECONCILER_DEBUG", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, its stdin/stdout/stderr the pty
        os.chdir(tmp)
        os.execve(sys.executable, [sys.executable, "-m", "reconciler.cli", *argv], env)
    seen = b""
    typed = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the pty: it has exited
                    break
                if not chunk:
                    break
                seen += chunk
            if not typed and PROMPT in seen and waiting(pid):
                if isinstance(keys, bytes):
                    os.write(fd, keys)
                else:
                    os.kill(pid, keys)
                typed = True
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert typed, seen.decode(errors="replace")
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace").replace("\r\n", "\n")


def waiting(pid: int) -> bool:
    """The child sleeps (in the read of its answer): a signal sent a microsecond after the
    prompt was written, before the read began, would wait for the next key, in any program."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state != "S":
        return False
    time.sleep(0.05)
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"


@pytest.mark.parametrize(
    ("keys", "code", "said"),
    [
        (b"no\n", 1, "reconciler: apply cancelled; nothing was changed"),
        (b"\x04", 1, "reconciler: apply cancelled; nothing was changed"),  # Ctrl-D: end of input
        (b"\x03", 130, "reconciler: interrupted; nothing was changed"),  # Ctrl-C
        (signal.SIGTERM, 130, "reconciler: interrupted; nothing was changed"),  # `kill`, a CI job cancelled
    ],
    ids=["no", "ctrl-d", "ctrl-c", "sigterm"],
)
def test_anything_but_yes_changes_nothing(keys: bytes | signal.Signals, code: int, said: str, server_factory, tmp_path: Path) -> None:
    srv: RunningServer = server_factory("valkey-9.1")
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN}", "+@all", "~*", "&*")
    (tmp_path / "access.yaml").write_text(FILE.format(address=srv.address))
    before = sorted(srv.admin().execute_command("ACL", "LIST"))
    got, printed = on_a_terminal(tmp_path, keys, "apply", "-f", "access.yaml")
    assert got == code, printed
    assert said in printed, printed
    assert "internal error" not in printed and "Traceback" not in printed, printed
    assert sorted(srv.admin().execute_command("ACL", "LIST")) == before
