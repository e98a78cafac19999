"""A rotation stopped half-way is safe and the next run converges -- with real processes: a
`rotate` killed with SIGKILL between its steps, a store that refuses the write, another writer
first (check-and-set), two `rotate` processes at once. Throughout, a client that re-reads the
store's latest every 200 ms and reconnects every 20 ms never fails a login.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openbao import RunningBao
from servers import RunningServer
from support.cli import REPO, Cli
from support.store_proxy import StoreProxy, store_write
from test_rotate import FILE, FIRST, Reader, assert_no_value, rotate, rotate_cli, values
from test_rotation import ADMIN, prober_factory, try_auth  # noqa: F401 (fixture)

USER = "app-orders"


def hashes_on(srv: RunningServer, user: str = USER) -> set[str]:
    """The password hashes the server holds for `user` (ACL GETUSER)."""
    passwords = srv.admin().acl_getuser(user)["passwords"]
    return {p.decode() if isinstance(p, bytes) else p for p in passwords}


def sha(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


class Proc:
    """`reconciler rotate` as a separate process, its output read as it comes."""

    def __init__(self, cli: Cli, *argv: str, **env: str):
        self.cli = cli
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "rotate", "-f", str(cli.file), "--auto-approve", *argv],
            env={**os.environ, "PYTHONPATH": str(REPO), **(cli.env or {}), **env}, cwd=cli.dir, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert self.proc.poll() is None or text in self.out, f"exited {self.proc.returncode} before {text!r}:\n{self.out}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.out}"
            time.sleep(0.02)

    def finish(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(5)
        self.cli.outputs.append(self.out)  # grepped for secrets with the rest
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(5)
        self.cli.outputs.append(self.out)


@pytest.fixture
def proxy(bao: RunningBao) -> Iterator[StoreProxy]:
    p = StoreProxy(bao.addr)
    yield p
    p.close()


class Watched:
    """A server with the file applied at version 1, and an app moving with the store."""

    def __init__(self, srv: RunningServer, bao: RunningBao, tmp: Path, prober_factory, text: str = FILE):  # noqa: F811
        self.srv, self.bao = srv, bao
        self.cli = rotate_cli(srv, bao, tmp, text)
        bao.put("apps/orders", {"token": FIRST})
        self.cli.apply(expect=0)
        self.prober, self.thread = prober_factory(srv, USER, FIRST)
        self.reader = Reader(bao, self.prober)

    def stop(self) -> None:
        time.sleep(0.3)
        self.reader.stop()
        self.prober.stop()
        self.thread.join(5)
        assert self.prober.failures == [], self.prober.failures[:5]
        assert self.prober.attempts > 0

    def clean(self) -> None:
        """Converged: the plan is empty, the servers hold exactly current and previous."""
        assert self.cli("plan", "-f", str(self.cli.file), "--detailed-exitcode").code == 0
        versions = values(self.bao)
        assert hashes_on(self.srv) == {sha(v) for v in versions[-2:]}
        for old in versions[:-2]:
            assert not try_auth(self.srv, USER, old)
        assert_no_value(self.cli, versions + [ADMIN])


@pytest.fixture
def site(server_factory, bao: RunningBao, tmp_path: Path, prober_factory) -> Iterator[Watched]:  # noqa: F811
    w = Watched(server_factory("valkey-9.1"), bao, tmp_path, prober_factory)
    yield w
    w.reader.stop()


def test_killed_after_adding_the_token_next_run_removes_it_and_starts_again(site: Watched, proxy: StoreProxy) -> None:
    proxy.hold(store_write)
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()  # step 2 is done, step 3's write is at the store's door
    assert len(hashes_on(site.srv)) == 2  # the first version and the new token
    orphan = (hashes_on(site.srv) - {sha(FIRST)}).pop()
    p.kill()
    proxy.drop()
    assert len(values(site.bao)) == 1  # the store never got it
    r = rotate(site.cli, "--user", USER)
    assert f"an earlier rotation added sha256:{orphan[:8]}… but no store version holds it" in r.out, r.out
    assert len(values(site.bao)) == 2  # started again: one new version
    assert orphan not in hashes_on(site.srv)
    site.reader.caught_up()
    site.stop()
    site.clean()
    assert_no_value(site.cli, values(site.bao))


@pytest.mark.parametrize("then", ["rotate", "apply"])
def test_killed_after_the_store_write_next_run_finishes_without_another_version(site: Watched, proxy: StoreProxy, then: str) -> None:
    rotate(site.cli, "--user", USER)  # version 2: now there is a version before previous to remove
    site.reader.caught_up()
    proxy.hold(lambda method, path: len(values(site.bao)) == 3 and method == "GET")  # the first read after the write
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()
    p.kill()
    proxy.drop()
    versions = values(site.bao)
    assert len(versions) == 3 and len(hashes_on(site.srv)) == 3  # stored, and version 1 still live
    site.reader.caught_up()
    if then == "rotate":
        r = rotate(site.cli, "--user", USER)
        assert "an earlier rotation stored its token but stopped before removing" in r.out, r.out
        assert "no new version written" in r.out
    else:
        site.cli.apply(expect=0)
    assert len(values(site.bao)) == 3  # no further version
    site.stop()
    site.clean()


def test_store_refuses_the_write_then_the_next_run_converges(server_factory, bao: RunningBao, tmp_path: Path, proxy: StoreProxy,
                                                             prober_factory, request) -> None:  # noqa: F811
    policy = 'path "secret/data/apps/*" { capabilities = ["create", "read", "update"] }\npath "secret/metadata/apps/*" { capabilities = ["read"] }'
    token = bao.token_with_policy("rotator", policy)
    site = Watched(server_factory("valkey-9.1"), bao, tmp_path, prober_factory)
    request.addfinalizer(site.reader.stop)
    proxy.hold(store_write)
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr, VAULT_TOKEN=token)
    proxy.wait_held()
    # Between the permission check and the write, the token loses the right to write.
    bao.api("PUT", "sys/policies/acl/rotator", {"policy": policy.replace('"create", "read", "update"', '"read"')})
    proxy.release()
    code = p.finish()
    assert code == 1, p.out
    assert "rotation stopped at step 3" in p.out and "permission denied" in p.out, p.out
    assert "no store version" in p.out
    assert len(values(bao)) == 1 and len(hashes_on(site.srv)) == 2  # an orphan on the servers, nothing stored
    bao.api("PUT", "sys/policies/acl/rotator", {"policy": policy})
    r = site.cli("rotate", "-f", str(site.cli.file), "--auto-approve", "--user", USER, expect=0)
    assert "no store version holds it" in r.out
    assert len(values(bao)) == 2
    site.reader.caught_up()
    site.stop()
    site.clean()
    assert_no_value(site.cli, values(bao) + [ADMIN])


def test_another_writer_first_check_and_set(site: Watched, proxy: StoreProxy) -> None:
    """Someone writes the store by hand while a rotation runs. A hand write has the documented
    window (an app that reads it before an apply fails), so here the app stops re-reading until
    rotate is done: what is checked is that rotate's own token never reaches the store, and that
    it applies the hand-written version instead."""
    proxy.hold(store_write)
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()
    site.reader.stop()
    hand = "written-by-hand-meanwhile-Zq81xLm2Pn4"
    site.bao.put("apps/orders", {"token": hand})  # someone else writes version 2 first
    proxy.release()
    assert p.finish() == 0, p.out
    assert "changed while this write was prepared (check-and-set); nothing was written" in p.out, p.out
    assert "removed this run's token" in p.out
    versions = values(site.bao)
    assert versions == [FIRST, hand]  # this run wrote nothing
    assert hashes_on(site.srv) == {sha(FIRST), sha(hand)}
    site.prober.switch(hand)  # the app re-reads now: the hand-written version logs in
    site.stop()
    site.clean()


def test_two_rotations_at_once_one_writes_the_other_applies(site: Watched, proxy: StoreProxy) -> None:
    proxy.hold(store_write)
    first = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()  # the first holds the instance from step 2 to step 4
    second = Proc(site.cli, "--user", USER)
    second.wait_for("waiting for the instances")
    proxy.release()
    assert first.finish() == 0, first.out
    assert second.finish() == 0, second.out
    assert "moved to version 2 meanwhile (another run rotated it)" in second.out, second.out
    assert len(values(site.bao)) == 2  # one write
    site.reader.caught_up()
    site.stop()
    site.clean()


# -- Memorystore: the service makes the token, the sink takes it, the record names it ------------------


@pytest.mark.parametrize("store_got_it", [False, True], ids=["sink-write-lost", "sink-written"])
def test_memorystore_killed_at_the_sink_write(bao: RunningBao, proxy: StoreProxy, tmp_path: Path, store_got_it: bool) -> None:
    """Killed while the service's new token is on its way to the sink: either the store never got
    it (the next run drops the token and rotates again) or it did (the next run names it `current`
    and writes no further version). The fake service runs in this process; `rotate` in another."""
    from fake_memorystore import FakeMemorystore
    from test_rotate_providers import MS_TOKEN, ms_file

    ms = FakeMemorystore(access_token=MS_TOKEN, authorization_mode="TOKEN_AUTH", op_polls=1)
    try:
        cli = Cli(tmp_path, env={"MS_TOKEN": MS_TOKEN, **bao.env(), "NO_COLOR": "1", "RECONCILER_POLL_START": "0.01",
                                 "RECONCILER_POLL_CAP": "0.04"})
        cli.write(ms_file(ms))
        cli.apply(expect=0)
        first = str(bao.get("apps/cache")["data"]["token"])
        proxy.hold(store_write)
        p = Proc(cli, "--user", USER, VAULT_ADDR=proxy.addr)
        proxy.wait_held()
        assert len(ms.users[USER]) == 2  # the service made the new token; its value waits at the store's door
        p.kill()
        if store_got_it:
            proxy.release()  # forwarded after the process died: the store has it, the record does not name it
            deadline = time.monotonic() + 10
            while bao.get("apps/cache")["metadata"]["version"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        else:
            proxy.drop()

        def login(value: str) -> bool:
            return any(t["token"] == value for t in ms.users[USER].values())

        latest = str(bao.get("apps/cache")["data"]["token"])
        assert login(first) and login(latest)  # whatever apps read, it logs in
        r = cli("rotate", "-f", str(cli.file), "--auto-approve", "--user", USER, expect=0)
        stored = [str(bao.get("apps/cache", v)["data"]["token"]) for v in range(1, bao.get("apps/cache")["metadata"]["version"] + 1)]
        if store_got_it:
            assert "was promoted (its value is the store's latest)" in r.out, r.out
            assert "no new version written" in r.out
            assert len(stored) == 2
        else:
            assert "was dropped (its value is in no store version)" in r.out, r.out
            assert len(stored) == 2  # started again: one new version
        assert all(login(v) for v in stored[-2:]) and len(ms.users[USER]) == 2
        assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0
        assert_no_value(cli, ms.generated + [MS_TOKEN])
    finally:
        ms.stop()


def test_interrupted_during_the_store_write_says_where_and_the_next_run_converges(site: Watched, proxy: StoreProxy) -> None:
    proxy.hold(store_write)
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()
    p.proc.send_signal(signal.SIGINT)
    assert p.finish(30) == 130, p.out
    proxy.drop()
    assert "interrupted during step 3 of the rotation of user app-orders token current; run rotate again to finish" in p.out, p.out
    assert "nothing was changed" not in p.out  # step 2 had changed the servers: never claimed otherwise
    r = rotate(site.cli, "--user", USER)
    assert "no store version holds it" in r.out
    site.reader.caught_up()
    site.stop()
    site.clean()


def _metadata_garbage(method: str, path: str, body: bytes) -> bytes:
    return b'{"data": {"current_version": "abc", "versions": ["x"]}}' if "/metadata/" in path else body


def _data_garbage(method: str, path: str, body: bytes) -> bytes:
    return b'{"data": {"metadata": {"version": "x"}, "data": {"token": 5}}}' if method == "GET" and "/data/" in path else body


@pytest.mark.parametrize(("rewrite", "message"), [
    (_metadata_garbage, "vault: secret/apps/orders: the metadata answer is not KV version 2 metadata"),
    (_data_garbage, "vault: secret/apps/orders: the answer is not KV version 2 data"),
])
def test_a_store_that_answers_garbage_is_one_line_and_nothing_changes(
    server_factory, bao: RunningBao, tmp_path: Path, proxy: StoreProxy, rewrite, message: str  # noqa: ANN001
) -> None:
    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path, VAULT_ADDR=proxy.addr)
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    proxy.lie(rewrite)
    r = rotate(cli, "--user", USER, expect=1)
    assert message in r.out + r.err and "internal error" not in r.out + r.err, r.out + r.err
    assert len(values(bao)) == 1 and hashes_on(srv) == {sha(FIRST)}


def test_a_store_time_without_a_zone_is_utc(server_factory, bao: RunningBao, tmp_path: Path, proxy: StoreProxy) -> None:
    """created_time without a time zone (a store that isn't quite Vault): read as UTC, not an internal error."""
    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path, VAULT_ADDR=proxy.addr)
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    proxy.lie(lambda method, path, body: body.replace(b'Z"', b'"') if method == "GET" and "/data/" in path else body)
    r = rotate(cli)
    assert "Next rotation: user app-orders token current (vault:secret/apps/orders#token): next due" in r.out, r.out + r.err
    assert len(values(bao)) == 1 and hashes_on(srv) == {sha(FIRST)}


@pytest.mark.parametrize(("setup", "message"), [
    # `create` makes a path that has no version; a new version of an existing path needs `update`.
    ("create-only", "VAULT_TOKEN may not write secret/apps/orders (its policies need update on secret/data/apps/orders)"),
    # The new version would push out the one `version: -1` reads, which apps hold.
    ("max-versions-1", "secret/apps/orders keeps one version (max_versions 1): a rotation needs the version before the latest to stay readable"),
])
def test_a_store_the_rotation_cannot_use_stops_before_the_token_exists(
    server_factory, bao: RunningBao, tmp_path: Path, setup: str, message: str
) -> None:
    srv = server_factory("valkey-9.1")
    env: dict[str, str] = {}
    if setup == "create-only":
        env["VAULT_TOKEN"] = bao.token_with_policy("create-only", 'path "secret/data/apps/*" { capabilities = ["create", "read"] }\n'
                                                   'path "secret/metadata/apps/*" { capabilities = ["read"] }')
    cli = rotate_cli(srv, bao, tmp_path, **env)
    bao.put("apps/orders", {"token": FIRST})
    if setup == "max-versions-1":
        bao.api("POST", "secret/metadata/apps/orders", {"max_versions": 1})
    cli.apply(expect=0)
    r = rotate(cli, "--user", USER, expect=1)
    assert message in r.err and "stopped at step 1" in r.out and "nothing was changed" in r.out, r.out + r.err
    assert "Step 2" not in r.out
    assert hashes_on(srv) == {sha(FIRST)} and len(values(bao)) == 1
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0  # the file still reads


def test_an_audit_log_lost_between_the_steps_says_where_the_rotation_stopped(site: Watched, proxy: StoreProxy) -> None:
    """The audit log becomes unwritable while the rotation runs (here: a folder where the file was,
    between steps 2 and 4): one line saying step 4 stopped and what the next run does, the
    summary, exit 1; the next run finishes."""
    rotate(site.cli, "--user", USER)  # version 2: step 4 of the next rotation removes version 1
    site.reader.caught_up()
    log = site.cli.dir / "audit.jsonl"
    proxy.hold(store_write)
    p = Proc(site.cli, "--user", USER, VAULT_ADDR=proxy.addr)
    proxy.wait_held()
    log.rename(site.cli.dir / "audit.saved")
    log.mkdir()
    proxy.release()
    assert p.finish() == 1, p.out
    assert (f"user app-orders token current: rotation stopped at step 4: audit log {log}: Is a directory; "
            "the store holds the new version; run rotate or apply again to finish") in p.out, p.out
    assert "Rotation summary:" in p.out and "internal error" not in p.out
    assert len(values(site.bao)) == 3
    log.rmdir()
    site.reader.caught_up()
    r = rotate(site.cli)
    assert "Rotation summary:" in r.out, r.out
    assert len(values(site.bao)) == 3  # finished, no further version
    site.stop()
    site.clean()


def test_a_store_write_answered_with_garbage_does_not_claim_nothing_was_stored(
    server_factory, bao: RunningBao, tmp_path: Path, proxy: StoreProxy
) -> None:
    """The store took the write and answered something that is not KV v2: rotate can't know
    whether the version exists, so it says it may, and the next run finishes from what the store holds."""
    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path, VAULT_ADDR=proxy.addr)
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    rotate(cli, "--user", USER)  # version 2: the next rotation's step 4 has version 1 to remove
    proxy.lie(lambda method, path, body: b'{"data": {"version": "7"}}' if store_write(method, path) else body)
    r = rotate(cli, "--user", USER, expect=1)
    assert "rotation stopped at step 3" in r.err and "the write was answered without a version number" in r.err, r.out + r.err
    assert "in no store version" not in r.out + r.err and "the store may or may not have taken it" in r.err
    assert len(values(bao)) == 3  # it had
    proxy.lie(None)
    r = rotate(cli)
    assert "no new version written" in r.out, r.out
    assert len(values(bao)) == 3 and hashes_on(srv) == {sha(v) for v in values(bao)[-2:]}
    assert_no_value(cli, values(bao) + [ADMIN])
