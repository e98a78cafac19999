"""Ctrl-C after something was written says exactly what: a real SIGINT to a real CLI process
while verify re-reads, and between the steps of `apply --bootstrap`. The moment is made by a
proxy in front of a real server that slows the reply to the command named in its trigger
(tests/support/drip.py), so the signal lands there every time. "nothing was changed" is said
only when nothing was (tests/test_faults.py: an interrupt before any write)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from servers import RunningServer, no_retry
from support.drip import DripProxy

ADMIN = "interrupt-admin-plaintext-4e6a8c0b2d1f3957"
APP = "interrupt-app-plaintext-7b9d1f3a5c2e4068"
ACCEPT = ("redis-7.0", "valkey-9.1")
pytestmark = pytest.mark.server


def spawn(tmp: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", *argv],
        env={**os.environ, "T_ADMIN": ADMIN, "T_APP": APP, "RECONCILER_NO_CACHE": "1"},
        cwd=tmp, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def interrupt_when(proxy: DripProxy, proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    """`sig` once the proxy slowed the reply it waits for; the process's (stdout, stderr)."""
    deadline = time.monotonic() + 60
    while not proxy.triggered.is_set() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.triggered.is_set() and proc.poll() is None, proc.communicate(timeout=30)
    proc.send_signal(sig)
    return proc.communicate(timeout=60)


def users(srv: RunningServer) -> dict[str, str]:
    c = srv.admin() if not _has_admin(srv) else srv.client("reconciler", ADMIN, retry=no_retry())
    try:
        return {line.split()[1]: line for line in c.execute_command("ACL", "LIST")}
    finally:
        c.close()


def _has_admin(srv: RunningServer) -> bool:
    try:
        srv.client("reconciler", ADMIN, retry=no_retry()).ping()
        return True
    except redis.AuthenticationError:
        return False


APP_USERS = """\
  app:
    acl: "~app:* +get"
    tokens:
      - id: a
        secret: {env: T_APP}
  other:
    acl: "~other:* +get"
    tokens:
      - id: a
        sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
"""


def access(address: str, *, timeout: int, more: str = "") -> str:
    return f"""\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    timeout_seconds: {timeout}
    admin: {{username: reconciler, secret: {{env: T_ADMIN}}}}
users:
  reconciler:
    acl: "~* &* +@all"
    tokens:
      - id: admin
        secret: {{env: T_ADMIN}}
{APP_USERS}{more}"""


# SIGTERM (a CI job cancelled, `kill`) is a stop request like Ctrl-C, outside the executor too.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("sid", ACCEPT)
def test_ctrl_c_during_verify_says_what_was_applied(sid: str, sig: int, server_factory, tmp_path: Path) -> None:
    srv = server_factory(sid)
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN}", "~*", "&*", "+@all")
    # The first read after the writes (WHOAMI is in every read) is verify's: it crawls.
    with DripProxy(srv.address, trigger=(b"SETUSER", b"WHOAMI")) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address, timeout=4))
        proc = spawn(tmp_path, "apply", "-f", str(f), "--auto-approve")
        out, err = interrupt_when(proxy, proc, sig)
    assert proc.returncode == 130, out + err
    assert f"reconciler: interrupted after 2 of 2 changes on cache: {proxy.address}: create app, create other; run apply again" in err, err
    assert "nothing was changed" not in err
    assert {"app", "other"} <= set(users(srv))


@pytest.mark.parametrize("sid", ACCEPT)
def test_ctrl_c_between_bootstrap_steps_says_what_step_1_did(sid: str, server_factory, tmp_path: Path) -> None:
    """Step 1 created the admin; the signal lands while step 2 takes the lock as that admin."""
    srv = server_factory(sid)
    with DripProxy(srv.address, trigger=(b"SETUSER", b"SETNAME")) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address, timeout=30, more="  default:\n    enabled: false\n"))
        proc = spawn(tmp_path, "apply", "-f", str(f), "--auto-approve", "--bootstrap")
        out, err = interrupt_when(proxy, proc)
        assert proc.returncode == 130, out + err
        assert f"reconciler: interrupted after 1 of 4 changes on cache: {proxy.address}: create reconciler; run apply again" in err, err
        assert "nothing was changed" not in err
        live = users(srv)
        assert "reconciler" in live and "app" not in live
        r = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "apply", "-f", str(f), "--auto-approve", "--bootstrap"],
            env={**os.environ, "T_ADMIN": ADMIN, "T_APP": APP}, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"app", "other"} <= set(users(srv))
    assert " off " in users(srv)["default"]
