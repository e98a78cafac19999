"""Rotation done entirely in the store: write a new KV version, run apply, the file never changes
(`current` = the latest version, `previous` = the one before). A client that reconnects every
20 ms with the version it holds, and re-reads the store only after each apply, never fails a
login -- on Valkey 9.1 and Redis 7.0, with a real OpenBao."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from openbao import RunningBao
from support.cli import Cli
from test_rotation import ADMIN, ADMIN_USER, MIN_ATTEMPTS, bootstrap_admin, prober_factory, try_auth  # noqa: F401 (fixture)

VERSIONS = [
    "store-rotation-v1-5c0e2a7f9b3d1846",
    "store-rotation-v2-8b1f3d5a7c9e0264",
    "store-rotation-v3-2e4a6c8f0b1d3957",
    "store-rotation-v4-7f9b1d3e5a2c4068",
]

FILE = f"""\
version: 1
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {ADMIN_USER}, secret: {{env: T_ADMIN}}}}
    auth_mode: token
    persist: none
users:
  {ADMIN_USER}:
    acl: "~* &* +@all"
    tokens:
      - id: admin-1
        secret: {{env: T_ADMIN}}
  app-orders:
    acl: "~orders:* +@read +@write +ping -@dangerous"
    tokens:
      - id: current
        secret: {{vault: {{path: apps/orders, field: token}}}}
      - id: previous
        secret: {{vault: {{path: apps/orders, field: token, version: -1}}}}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("server_id", [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("valkey-9.1", "redis-7.0")])
def test_rotation_by_a_new_kv_version_and_apply(server_factory, bao: RunningBao, tmp_path: Path, prober_factory, server_id: str) -> None:  # noqa: F811
    srv = server_factory(server_id)
    bootstrap_admin(srv)
    cli = Cli(tmp_path, env={"T_NODE": srv.address, "T_ADMIN": ADMIN, **bao.env(), "RECONCILER_TODAY": "2026-11-23", "NO_COLOR": "1"})
    cli.write(FILE)
    text = cli.file.read_text()

    def latest() -> str:  # what an app reads from the store
        return str(bao.get("apps/orders")["data"]["token"])

    bao.put("apps/orders", {"token": VERSIONS[0]})
    r = cli.apply(expect=0)
    assert "previous: none yet" in r.out  # version -1 of a path with one version: no token yet
    assert try_auth(srv, "app-orders", VERSIONS[0])
    prober, thread = prober_factory(srv, "app-orders", latest())
    time.sleep(0.2)
    for n, value in enumerate(VERSIONS[1:], start=2):
        bao.put("apps/orders", {"token": value})  # the rotation: a new version, nothing else
        r = cli.apply(expect=0)
        assert f"token + current (sha256:{sha(value)[:8]}…)" in r.out, r.out
        if n > 2:  # the version before `previous` leaves the servers
            assert f"token - sha256:{sha(VERSIONS[n - 3])[:8]}…" in r.out, r.out
        prober.switch(latest())  # the app re-reads the store only now, after the apply
    time.sleep(0.2)
    prober.stop(at_least=MIN_ATTEMPTS)
    thread.join(5)
    print(f"\n{srv.id}: {prober.attempts} attempts, {len(prober.failures)} failed")
    assert prober.failures == [], prober.failures[:5]
    assert prober.attempts >= MIN_ATTEMPTS
    assert cli.file.read_text() == text  # the file never changed
    assert [try_auth(srv, "app-orders", v) for v in VERSIONS] == [False, False, True, True]
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0
    for out in cli.outputs:
        for value in VERSIONS:
            assert value not in out


def test_the_documented_window_reading_latest_before_apply(server_factory, bao: RunningBao, tmp_path: Path, prober_factory) -> None:  # noqa: F811
    """Control, and the window the docs describe: an app that reads the new version before the
    apply fails until the apply (`rotate` orders the steps so that this can't happen)."""
    srv = server_factory("valkey-9.1")
    bootstrap_admin(srv)
    cli = Cli(tmp_path, env={"T_NODE": srv.address, "T_ADMIN": ADMIN, **bao.env(), "RECONCILER_TODAY": "2026-11-23"})
    cli.write(FILE)
    bao.put("apps/orders", {"token": VERSIONS[0]})
    cli.apply(expect=0)
    prober, thread = prober_factory(srv, "app-orders", VERSIONS[0])
    bao.put("apps/orders", {"token": VERSIONS[1]})
    with prober._lock:
        prober.token = VERSIONS[1]  # re-read "latest" between the write and the apply
    deadline = time.monotonic() + 5
    while not prober.failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert prober.failures, "a client holding a version no apply has added yet must fail"
    cli.apply(expect=0)
    failed = len(prober.failures)
    prober.switch(VERSIONS[1])
    time.sleep(0.2)
    prober.stop()
    thread.join(5)
    assert len(prober.failures) <= failed + 1  # at most the attempt in flight during the apply
