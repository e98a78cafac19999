"""Every wait runs under the instance's deadline (`timeout_seconds: 2`), against a real server
behind a proxy that passes its replies on one byte a second once a given command went by
(tests/support/drip.py), and a real resolver that never answers (new namespaces, a UDP socket
on 127.0.0.1:53 that reads nothing). Each error names instance, node and phase, in seconds.
Sentinel discovery and a sentinel's command table are in tests/test_sentinel.py."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import CERT_USER_MAPPING, RunningServer
from support.cli import Cli
from support.cluster import start_cluster
from support.drip import DripProxy

from reconciler.providers.redis import execute as executor

ADMIN = "deadline-admin-plaintext-6a2c8e4f0b1d3957"
APP = "deadline-app-plaintext-3f5b7d9e1a2c4068"
ACCEPT = ("redis-7.0", "valkey-9.1")
SILENT_RESOLVER = Path(__file__).resolve().parent / "support" / "silent_resolver.py"
pytestmark = pytest.mark.server


def access(address: str, *, instance: str = "", users: str = "") -> str:
    return f"""\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    timeout_seconds: 2
    admin: {{username: reconciler, secret: {{env: T_ADMIN}}}}
{instance}users:
  app:
    acl: "~app:* +get"
    tokens:
      - id: a
        secret: {{env: T_APP}}
{users}"""


def setup_admin(srv: RunningServer) -> None:
    c = srv.admin()
    c.execute_command("ACL", "SETUSER", "reconciler", "reset", "on", f">{ADMIN}", "~*", "&*", "+@all")
    c.close()


def run_cli(tmp: Path, *argv: str, prefix: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[str], float]:
    """The CLI in its own process; (result, seconds it took). A run the deadline does not stop
    fails the test through the subprocess timeout instead of hanging it."""
    started = time.monotonic()
    r = subprocess.run(
        [*prefix, sys.executable, "-m", "reconciler.cli", *argv],
        env={**os.environ, "T_ADMIN": ADMIN, "T_APP": APP, "RECONCILER_NO_CACHE": "1"},
        cwd=tmp, capture_output=True, text=True, timeout=60,
    )
    return r, time.monotonic() - started


def assert_timed_out(r: subprocess.CompletedProcess[str], took: float, where: str, phase: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{where}: timed out after 2 s ({phase})" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert took < 15, f"took {took:.1f} s"


@pytest.mark.parametrize("sid", ACCEPT)
def test_taking_the_apply_lock_has_the_deadline(sid: str, server_factory, tmp_path: Path) -> None:
    srv = server_factory(sid)
    setup_admin(srv)
    with DripProxy(srv.address, trigger=(b"SETNAME",)) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address))
        r, took = run_cli(tmp_path, "apply", "-f", str(f), "--auto-approve")
    assert_timed_out(r, took, f"cache {proxy.address}", "apply lock: CLIENT SETNAME")
    c = srv.admin()
    assert "app" not in [line.split()[1] for line in c.execute_command("ACL", "LIST")]
    c.close()


@pytest.mark.parametrize("sid", ACCEPT)
def test_cluster_discovery_has_the_deadline(sid: str, tmp_path: Path) -> None:
    cluster = start_cluster(sid, tmp_path / "cluster", shards=3, replicas=0)
    try:
        for node in cluster.nodes:
            setup_admin(node)
        with DripProxy(cluster.nodes[0].address, trigger=(b"CLUSTER",)) as proxy:
            f = tmp_path / "access.yaml"
            f.write_text(access(proxy.address))
            r, took = run_cli(tmp_path, "plan", "-f", str(f))
        assert_timed_out(r, took, f"cache {proxy.address}", "cluster discovery")
    finally:
        cluster.stop()


@pytest.mark.parametrize("sid", ACCEPT)
def test_explains_acl_dryrun_has_the_deadline(sid: str, server_factory, tmp_path: Path) -> None:
    srv = server_factory(sid)
    setup_admin(srv)
    c = srv.admin()
    c.execute_command("ACL", "SETUSER", "app", "on", f">{APP}", "~app:*", "+get")
    c.close()
    with DripProxy(srv.address, trigger=(b"DRYRUN",)) as proxy:
        f = tmp_path / "access.yaml"
        f.write_text(access(proxy.address))
        r, took = run_cli(tmp_path, "explain", "app", "-f", str(f), "--command", "get", "--key", "app:1")
    assert_timed_out(r, took, f"cache {proxy.address}", "explain: ACL DRYRUN")


@pytest.mark.parametrize("sid", CERT_USER_MAPPING)
def test_config_set_for_tls_client_auth_has_the_deadline(
    sid: str, server_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TLS bytes can't be matched, so the proxy turns slow for the executor's connection when
    the batch before CONFIG SET is done (the executor's own between-batches hook)."""
    srv = server_factory(sid, cert_user_mapping=True)
    m = srv.tls_material
    assert m is not None
    setup_admin(srv)
    with DripProxy(srv.address) as proxy:
        monkeypatch.setenv("T_ADMIN", ADMIN)
        monkeypatch.setenv("T_APP", APP)
        monkeypatch.setattr(
            executor, "execute", functools.partial(executor.execute, between_batches=lambda *a: proxy.drip_newest())
        )
        cli = Cli(tmp_path, capsys=capsys)
        tls = f"    tls: {{ca_file: {m.ca_file}, cert_file: {m.admin_cert}, key_file: {m.admin_key}}}\n"
        started = time.monotonic()
        rc, out, err = cli.apply(access(proxy.address, instance=tls + "    tls_client_auth: {required: true, user_field: CN}\n"))
        took = time.monotonic() - started
    assert rc == 1, out + err
    assert f"cache {proxy.address}: timed out after 2 s (CONFIG SET tls-auth-clients)" in err, err
    assert "sent, no reply (in doubt) (1): config tls-auth-clients yes" in err, err
    assert took < 20


def test_silent_resolver_is_cut_at_the_deadline(tmp_path: Path) -> None:
    """A resolver that takes queries and never answers (glibc waits 5 s x 3 tries per lookup):
    the plan stops at the instance's deadline and says it was the name lookup."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-Urnm", "true"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("unshare -Urnm (user, mount and network namespaces) is needed for the silent resolver")
        pytest.skip("no unshare -Urnm here")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:3\n")
    f = tmp_path / "access.yaml"
    f.write_text(access("redis-1.example.internal:6379"))
    namespace = (
        "unshare", "-Urnm", "sh", "-c", 'ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$@"',
        str(resolv), sys.executable, str(SILENT_RESOLVER),
    )
    r, took = run_cli(tmp_path, "plan", "-f", str(f), prefix=namespace)
    assert_timed_out(r, took, "cache redis-1.example.internal:6379", "name resolution")
    assert took < 8, f"took {took:.1f} s"
