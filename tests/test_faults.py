"""Reliability under faults, races and hostile input, with real processes: servers restarted,
killed and stopped, directories renamed away, commands renamed, a second apply racing the
first, signals to the CLI, and a proxy that trickles a server's replies. docs/guarantees.md
lists each promise with the test that keeps it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from servers import MATRIX, RunningServer, no_retry
from support.drip import DripProxy

from reconciler.cli import main
from reconciler.providers.redis import execute as executor

ADMIN = "admin-plaintext-5b0d2e7c9a1f4368b2d0e6c4"
APP_A = "app-token-a-plaintext-8c1e4f7a2b5d9036"
APP_B = "app-token-b-plaintext-1f6a3c8e5d2b7049"
REPO = Path(__file__).resolve().parent.parent


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {{username: reconciler, secret: {{env: T_ADMIN}}}}
    prune: {prune}
{instance_extra}users:
  app:
    acl: "~app:* +@read"
    tokens:
{tokens}
{more}"""


class Site:
    """One server with a `reconciler` admin user (rights chosen per test) and a file for it."""

    def __init__(self, srv: RunningServer, tmp: Path, monkeypatch: pytest.MonkeyPatch, admin_rules: str = "~* &* +@all"):
        self.srv = srv
        self.tmp = tmp
        self.file = tmp / "access.yaml"
        self.env = {
            **os.environ,
            "T_ADMIN": ADMIN,
            "T_APP_A": APP_A,
            "T_APP_B": APP_B,
            "RECONCILER_TODAY": "2026-11-23",
            "RECONCILER_NO_CACHE": "1",
        }
        for k in ("T_ADMIN", "T_APP_A", "T_APP_B", "RECONCILER_TODAY", "RECONCILER_NO_CACHE"):
            monkeypatch.setenv(k, self.env[k])
        self.root().execute_command("ACL", "SETUSER", "reconciler", "reset", "on", f">{ADMIN}", *admin_rules.split())
        self.write()

    def root(self) -> redis.Redis:
        """The test's own connection (the default user, nopass)."""
        return self.srv.client(retry=no_retry())

    def write(self, *, tokens: tuple[str, ...] = ("A",), prune: bool = False, instance_extra: str = "", more: str = "") -> None:
        lines = "\n".join(f"      - id: t{t}\n        secret: {{env: T_APP_{t}}}" for t in tokens)
        self.file.write_text(
            FILE.format(address=self.srv.address, prune=str(prune).lower(), instance_extra=instance_extra, tokens=lines, more=more)
        )

    def users(self) -> dict[str, str]:
        return {line.split()[1]: line for line in self.root().execute_command("ACL", "LIST")}

    def cli(self, *argv: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The real CLI in its own process."""
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *argv], env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=timeout, **kw
        )

    def spawn(self, *argv: str, stdout: Any = subprocess.DEVNULL, **kw: Any) -> subprocess.Popen[str]:
        """The CLI in the background; stdout discarded unless asked for (a large plan would fill the pipe)."""
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", *argv], env=self.env, cwd=self.tmp, text=True,
            stdout=stdout, stderr=subprocess.PIPE, **kw,
        )


def without(sid: str, command: str) -> str:
    """`-cmd|sub`, or `-cmd` on Redis 6.2, which can't take away one subcommand."""
    return f"-{command.split('|')[0]}" if sid == "redis-6.2" else f"-{command}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def apply(site: Site, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    return run(capsys, "apply", "-f", str(site.file), "--auto-approve", *extra)


def plan(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run(capsys, "plan", "-f", str(site.file), "--detailed-exitcode")


def logs_in(srv: RunningServer, user: str, password: str) -> bool:
    try:
        c = srv.client(user, password, retry=no_retry())
        try:
            c.ping()
        except redis.exceptions.NoPermissionError:
            pass  # logged in; the user may just not run PING
        c.close()
        return True
    except redis.AuthenticationError:
        return False


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def site(server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    return Site(server, tmp_path, monkeypatch)


# -- 1, 2: nothing lost after a restart ----------------------------------------------------------


@pytest.mark.parametrize("sid", MATRIX)
def test_persist_without_config_get_uses_acl_save_and_survives_restart(sid, server_factory, tmp_path, monkeypatch, capsys) -> None:
    """An admin without CONFIG GET can't see the aclfile: apply must not fall back to CONFIG
    REWRITE (which does not write users when an aclfile is in use) and call it saved."""
    srv = server_factory(sid, aclfile=True, config_file=True)
    site = Site(srv, tmp_path, monkeypatch, admin_rules="~* &* +@all " + without(sid, "config|get"))
    site.root().execute_command("ACL", "SAVE")  # the admin itself survives restarts
    code, out, err = apply(site, capsys)
    assert code == 0, err
    assert "saved (ACL SAVE)" in out and "saved (CONFIG REWRITE)" not in out
    srv.restart()
    assert "app" in site.users()
    assert logs_in(srv, "app", APP_A)


@pytest.mark.parametrize("sid", MATRIX)
def test_failed_persist_is_retried_and_drift_is_not_clean(sid, server_factory, tmp_path, monkeypatch, capsys) -> None:
    """ACL SAVE fails (the aclfile's directory renamed away): the next plan, drift and apply
    know the aclfile lags memory, and apply saves it even though the users already match."""
    acl_dir = tmp_path / "acl"
    acl_dir.mkdir()
    (acl_dir / "users.acl").write_text("")
    srv = server_factory(sid, extra_config=[["aclfile", str(acl_dir / "users.acl")]])
    site = Site(srv, tmp_path, monkeypatch)
    acl_dir.rename(tmp_path / "acl.away")
    code, out, err = apply(site, capsys)
    assert code == 1
    assert "persist (acl-save) failed" in err
    (tmp_path / "acl.away").rename(acl_dir)
    assert "app" not in (acl_dir / "users.acl").read_text()

    code, out, err = plan(site, capsys)
    assert code == 2, out + err
    assert "were not saved" in out
    code, out, err = run(capsys, "drift", "-f", str(site.file))
    assert code == 2 and "were not saved" in out
    code, out, err = apply(site, capsys)
    assert code == 0, err
    assert "saved (ACL SAVE)" in out
    assert "user app on" in (acl_dir / "users.acl").read_text()
    code, out, err = plan(site, capsys)
    assert code == 0 and "No changes." in out, out + err
    srv.restart()
    assert logs_in(srv, "app", APP_A)


# -- 3, 4: secrets never leave the process -----------------------------------------------------


@pytest.mark.parametrize("admin_secret", [ADMIN, "long-" + "0123456789abcdefghij" * 12], ids=["short", "longer-than-echo"])
@pytest.mark.parametrize("sid", MATRIX)
def test_server_error_echoing_the_admin_secret_is_redacted(sid, admin_secret, server_factory, tmp_path, monkeypatch) -> None:
    """With AUTH renamed away the server answers "unknown command 'AUTH', with args beginning
    with: 'reconciler' '<secret>'": every printed line is redacted by value (also a cut prefix)."""
    srv = server_factory(sid, extra_config=[["rename-command", "AUTH", ""]])
    site = Site(srv, tmp_path, monkeypatch)
    site.env["T_ADMIN"] = admin_secret
    for argv in (("plan", "-f", str(site.file)), ("apply", "-f", str(site.file), "--auto-approve", "--audit-log", "audit.jsonl")):
        r = site.cli(*argv)
        assert r.returncode == 1
        text = r.stdout + r.stderr
        assert "unknown command" in text.lower(), text  # the server did echo the arguments
        assert admin_secret[:12] not in text, text
        assert "(redacted)" in text
    audit = tmp_path / "audit.jsonl"
    assert not audit.exists() or admin_secret[:12] not in audit.read_text()


def test_rejected_large_file_never_reaches_the_parse_cache(tmp_path, monkeypatch, capsys) -> None:
    """A file big enough to be cached, with a password pasted into `acl`: validate rejects it
    and the cache directory holds no trace of it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(cache))
    monkeypatch.delenv("RECONCILER_NO_CACHE", raising=False)
    password = "pasted-password-7e3b9c1d5a"
    users = "".join(f"  u{i:05d}:\n    acl: \"~k{i}:* +get\"\n    tokens: [{{id: a, sha256: {sha(str(i))}}}]\n" for i in range(3000))
    text = (
        "version: 1\ninstances:\n  c:\n    nodes: [\"127.0.0.1:1\"]\n    admin: {username: default}\nusers:\n"
        f"  leaked:\n    acl: \"~* +get >{password}\"\n" + users
    )
    assert len(text) > 256 * 1024
    f = tmp_path / "big.yaml"
    f.write_text(text)
    code, _, err = run(capsys, "validate", "-f", str(f))
    assert code == 1 and "users.leaked.acl" in err
    assert password not in err
    stored = [p.read_bytes() for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert all(password.encode() not in blob for blob in stored)
    assert stored == []


# -- 5: saved plans execute only what the file and live state produce ----------------------------


def _saved(site: Site, capsys) -> Path:
    out = site.tmp / "plan.json"
    code, _, err = run(capsys, "plan", "-f", str(site.file), "--out", str(out))
    assert code == 0, err
    return out


def test_saved_plan_tampering_is_refused(site: Site, capsys) -> None:
    saved = _saved(site, capsys)
    data = json.loads(saved.read_text())
    node = data["instances"][0]["nodes"][0]
    evil = dict(node["changes"][0], user="evil", nopass=True, hashes=[], rules="~* &* +@all")
    node["changes"].append(evil)
    saved.write_text(json.dumps(data))
    before = site.users()
    code, _, err = run(capsys, "apply", str(saved), "--auto-approve")
    assert code == 1
    assert "is stale" in err and "evil" in err and "nothing was changed" in err
    assert site.users() == before

    node["changes"].pop()
    node["changes"][0]["hashes"] = [sha("attacker-chosen")]
    saved.write_text(json.dumps(data))
    code, _, err = run(capsys, "apply", str(saved), "--auto-approve")
    assert code == 1 and "the plan's changes for app are not what the file and live state produce" in err
    assert site.users() == before


def test_saved_plan_whose_source_is_not_a_file_name_is_refused_unread(site: Site) -> None:
    """`source` is opened before any comparison: a number used to be taken for a file
    descriptor (0 read the apply's stdin, 123 said "Bad file descriptor")."""
    saved = site.tmp / "plan.json"
    assert site.cli("plan", "-f", str(site.file), "--out", str(saved)).returncode == 0
    data = json.loads(saved.read_text())
    before = site.users()
    for source in (0, 123, None, "", ["access.yaml"]):
        saved.write_text(json.dumps({**data, "source": source}))
        r = site.cli("apply", str(saved), "--auto-approve", input="", timeout=60)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [f"reconciler: {saved}: not a saved plan (source {source!r} is not a file name)"], r.stderr
    assert site.users() == before


def test_plan_out_on_a_full_disk_leaves_no_cut_plan(site: Site) -> None:
    """`plan --out` that can't write the whole plan (a full disk; here a file-size limit) used to
    say a bare `File too large` and leave a cut plan file behind; now one line naming the file,
    exit 1, and no file."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    site.write(more=_many_users(2000))
    out = site.tmp / "plan.json"
    r = site.cli("plan", "-f", str(site.file), "--out", str(out), preexec_fn=limit)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"reconciler: --out {out}: cannot write: File too large; no plan was saved"], r.stderr
    assert not out.exists()


def test_saved_plan_refused_when_the_file_changed(site: Site, capsys) -> None:
    saved = _saved(site, capsys)
    site.write(tokens=("A", "B"))
    code, _, err = run(capsys, "apply", str(saved), "--auto-approve")
    assert code == 1
    assert f"{site.file} changed since the plan was made" in err
    assert "app" not in site.users()


def test_saved_plan_is_written_0600_and_applies_when_untouched(site: Site, capsys) -> None:
    out = site.tmp / "plan.json"
    out.write_text("{}")
    out.chmod(0o644)
    saved = _saved(site, capsys)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    code, out_text, err = run(capsys, "apply", str(saved), "--auto-approve")
    assert code == 0, err
    assert logs_in(site.srv, "app", APP_A)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_saved_plan_must_be_a_regular_file(kind: str, site: Site) -> None:
    path = {"dev-zero": "/dev/zero", "fifo": str(site.tmp / "fifo"), "directory": str(site.tmp)}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    r = site.cli("apply", path, "-f", str(site.file), "--auto-approve", timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"reconciler: {path}: not a regular file"], r.stderr


def test_saved_plan_or_record_nested_too_deep_is_one_error_line(site: Site) -> None:
    """JSON nested 200,000 deep (valid JSON, no plan) used to end in an internal RecursionError."""
    deep = site.tmp / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    r = site.cli("apply", str(deep), "-f", str(site.file), "--auto-approve", timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"reconciler: {deep}: not a saved plan (JSON nested deeper than any plan)"], r.stderr
    record = site.file.with_name(site.file.stem + ".pending.json")
    record.write_text(deep.read_text())
    r = site.cli("plan", "-f", str(site.file), timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"reconciler: {record}: cannot read the record of unfinished work: JSON nested deeper than any record"
    ], r.stderr


# -- 6: two applies never interleave; re-checked after the prompt --------------------------------


def _many_users(n: int) -> str:
    return "".join(f"  bulk-{i:05d}:\n    acl: \"~b{i}:* +get\"\n    tokens: [{{id: a, sha256: {sha(str(i))}}}]\n" for i in range(n))


def _holds_lock(site: Site) -> bool:
    return any(c.get("name", "").startswith("reconciler-apply-") for c in site.root().client_list())


def test_second_apply_refused_while_the_first_holds_the_instance(site: Site, tmp_path) -> None:
    """The first apply is frozen (SIGSTOP) while it holds the instance; a second apply of
    another file must refuse without writing; the first then finishes alone."""
    # Enough users that the lock is held for seconds (re-check, then the writes), even on a busy machine.
    # A long timeout_seconds: the frozen time would otherwise count against the first apply's deadlines.
    site.write(more=_many_users(8000), instance_extra="    timeout_seconds: 600\n")
    first = site.spawn("apply", "-f", str(site.file), "--auto-approve")
    watcher = site.root()
    try:
        wait_until(
            "the first apply to take the instance",
            lambda: first.poll() is not None or any(c.get("name", "").startswith("reconciler-apply-") for c in watcher.client_list()),
            timeout=120,
        )
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert _holds_lock(site), "the first apply finished before it could be stopped"
        other = tmp_path / "other.yaml"
        other.write_text(site.file.read_text().replace("~app:* +@read", "~app:* +@all"))
        before = site.users()
        r = site.cli("apply", "-f", str(other), "--auto-approve")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "another apply is running on this instance" in r.stderr
        assert site.users() == before
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    r = site.cli("plan", "-f", str(site.file), "--detailed-exitcode")
    assert r.returncode == 0, r.stdout + r.stderr


def test_change_made_while_the_prompt_waits_is_not_overwritten(site: Site) -> None:
    """Someone sets an emergency password and +flushall while apply waits for `yes`: apply
    re-checks live state after the answer and refuses."""
    site.root().execute_command("ACL", "SETUSER", "app", "on", f">{APP_A}", "~app:*", "+get")
    master, slave = pty.openpty()
    proc = site.spawn("apply", "-f", str(site.file), stdin=slave, stdout=subprocess.PIPE)
    os.close(slave)
    try:
        seen = ""
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while "Enter a value" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.read(1)
        assert "Enter a value" in seen, seen
        site.root().execute_command("ACL", "SETUSER", "app", ">emergency-password-1", "+flushall")
        os.write(master, b"yes\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 1, err
    assert "live state changed since the plan shown was made" in err
    assert "+flushall" in site.users()["app"]
    assert logs_in(site.srv, "app", "emergency-password-1")


# -- 7: before writing, the admin may do everything the plan needs; a revoke completes -----------


@pytest.mark.parametrize("sid", MATRIX)
def test_revoke_refused_before_any_write_when_the_admin_cannot_kill(sid, server_factory, tmp_path, monkeypatch, capsys) -> None:
    srv = server_factory(sid)
    site = Site(srv, tmp_path, monkeypatch)
    code, _, err = apply(site, capsys)
    assert code == 0, err
    site.root().execute_command("ACL", "SETUSER", "reconciler", without(sid, "client|kill"))
    victim = srv.client("app", APP_A, retry=no_retry())
    victim.get("app:x")
    site.write(tokens=("B",), instance_extra="    kill_sessions_on_revoke: true\n")
    before = site.users()
    code, _, err = apply(site, capsys)
    assert code == 1
    assert re.search(r"admin user reconciler may not run [A-Z|, ]*CLIENT\|KILL[A-Z|, ]*, which this plan needs", err), err
    assert site.users() == before  # nothing was written: the old token still works
    site.root().execute_command("ACL", "SETUSER", "reconciler", "+@all")
    code, out, err = apply(site, capsys)
    assert code == 0, err
    with pytest.raises(redis.ConnectionError):
        victim.get("app:x")


def test_revoke_whose_kill_failed_midway_is_retried(site: Site, capsys, monkeypatch) -> None:
    """The admin loses CLIENT KILL out of band between the token removal and the kill (a real
    ACL change on the server, made between the executor's batches): the apply fails, and the
    re-run -- with the users already right -- still kills the revoked token's connection."""
    assert apply(site, capsys)[0] == 0
    victim = site.srv.client("app", APP_A, retry=no_retry())
    victim.get("app:x")

    def revoke_kill(instance: str, address: str, step: str, batch: int) -> None:
        if step == "setuser":
            site.root().execute_command("ACL", "SETUSER", "reconciler", without(site.srv.id, "client|kill"))

    site.write(tokens=("B",), instance_extra="    kill_sessions_on_revoke: true\n")
    with monkeypatch.context() as m:
        m.setattr(executor, "execute", functools.partial(executor.execute, between_batches=revoke_kill))
        code, _, err = apply(site, capsys)
    assert code == 1
    assert "refused (1): kill-sessions app" in err, err
    site.root().execute_command("ACL", "SETUSER", "reconciler", "+@all")
    victim.get("app:x")  # the revoked token's session is still open

    code, out, err = plan(site, capsys)
    assert code == 2 and "did not kill its open connections" in out, out + err
    code, out, err = apply(site, capsys)
    assert code == 0, err
    with pytest.raises(redis.ConnectionError):
        victim.get("app:x")
    assert plan(site, capsys)[0] == 0


# -- 9: one unreadable live user is drift on that user -----------------------------------------


# Selectors need 7.0+: Redis 6.2 refuses the odd rule, so there is nothing odd to read there.
@pytest.mark.parametrize("sid", [s for s in MATRIX if s != "redis-6.2"])
def test_unreadable_live_rules_are_drift_on_that_user(sid, server_factory, tmp_path, monkeypatch, capsys) -> None:
    site = Site(server_factory(sid), tmp_path, monkeypatch)
    assert apply(site, capsys)[0] == 0
    site.root().execute_command("ACL", "SETUSER", "app", "(~a) +get)")
    site.root().execute_command("ACL", "SETUSER", "stray", "on", ">x", "(~a) +get)")
    code, out, err = plan(site, capsys)
    assert code == 2, err
    assert "live rules can't be read" in out and "user stray is not in the file" in out
    code, out, err = run(capsys, "drift", "-f", str(site.file))
    assert code == 2, err
    code, out, err = apply(site, capsys)
    assert code == 0, err
    assert "(" not in site.users()["app"]
    assert plan(site, capsys)[0] == 0


# -- 10: interrupts ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_after_the_batch_in_flight_and_reports(sig, server_factory, tmp_path, monkeypatch) -> None:
    """The signal lands mid-execution (after the first batch's audit lines): the CLI stops after
    the batch in flight, exits 130 with the applied / not applied report, and the audit log holds
    exactly the users that exist. One server: the behaviour is the client's."""
    site = Site(server_factory("valkey-9.1"), tmp_path, monkeypatch)
    n = 12000
    site.write(more=_many_users(n))
    audit = tmp_path / "audit.jsonl"
    proc = site.spawn("apply", "-f", str(site.file), "--auto-approve", "--audit-log", str(audit))
    wait_until("the first batch", lambda: (audit.exists() and audit.stat().st_size > 0) or proc.poll() is not None, timeout=120)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "not applied (" in err
    created = {name for name in site.users() if name.startswith("bulk-")}
    assert 0 < len(created) < n
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    audited = {r["user"] for r in records if r["action"] == "create" and r["result"] == "ok" and r["user"].startswith("bulk-")}
    assert audited == created  # every command sent is in the audit log
    r = site.cli("apply", "-f", str(site.file), "--auto-approve")
    assert r.returncode == 0, r.stderr
    assert len([u for u in site.users() if u.startswith("bulk-")]) == n


# -- 11: deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "drift", "apply"])
def test_trickling_node_hits_the_overall_deadline(command: str, server_factory, tmp_path) -> None:
    """A real server behind a proxy that passes every reply on one byte a second."""
    with DripProxy(server_factory("valkey-9.1").address, from_start=True) as srv:
        f = tmp_path / "access.yaml"
        f.write_text(
            f"version: 1\ninstances:\n  cache:\n    nodes: [\"{srv.address}\"]\n    timeout_seconds: 2\n"
            "    admin: {username: reconciler, secret: {env: T_ADMIN}}\nusers: {}\n"
        )
        argv = [command, "-f", str(f)] + (["--auto-approve"] if command == "apply" else [])
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *argv], env={**os.environ, "T_ADMIN": ADMIN},
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        took = time.monotonic() - started
    assert r.returncode == 1
    assert f"cache {srv.address}: timed out after 2 s (connect)" in r.stderr, r.stderr
    assert took < 15


# -- 13: the admin user is never exempted silently -------------------------------------------------


def test_admin_missing_from_file_with_prune_is_refused(site: Site, capsys) -> None:
    site.write(prune=True)
    code, out, err = plan(site, capsys)
    assert code == 1
    assert "prune: true, but the admin user reconciler" in err and "declare it under users.reconciler" in err
    assert "match the file" not in out
    site.write(prune=False)
    code, out, err = plan(site, capsys)
    assert "user reconciler is not in the file (prune: false) (the reconciler's admin user" in out
    site.write(prune=True, more=f"  reconciler:\n    acl: \"~* &* +@all\"\n    tokens: [{{id: admin, sha256: {sha(ADMIN)}}}]\n")
    code, out, err = apply(site, capsys)
    assert code == 0, err
    assert "reconciler" in site.users()


# -- 12: smaller holes ---------------------------------------------------------------------------


def test_token_policies_default_length_and_service_complexity(tmp_path, monkeypatch, capsys) -> None:
    """Plaintext tokens: 16 characters unless the file says otherwise; Redis Software's
    complexity rules at validate, so the service never refuses one mid-apply; a long random
    hex token stays valid on a self-hosted server."""
    monkeypatch.setenv("SHORT", "abcdefg")
    monkeypatch.setenv("HEX", "0123456789abcdef0123456789abcdef")
    f = tmp_path / "access.yaml"
    base = (
        "version: 1\ninstances:\n  self:\n    nodes: [\"127.0.0.1:6379\"]\n    admin: {username: default}\n"
        "  rs:\n    provider: redis-software\n    api: {url: \"https://rs.example:9443\", database: 1}\n"
        "    admin: {username: admin@example.com, secret: {env: HEX}}\n"
    )
    f.write_text(base + "users:\n  a:\n    instances: [self]\n    tokens: [{id: t, secret: {env: SHORT}}]\n")
    code, _, err = run(capsys, "validate", "-f", str(f), "--resolve-secrets")
    assert code == 1 and "shorter than policies.min_token_length (16, the default)" in err
    f.write_text(base + "users:\n  a:\n    instances: [self]\n    tokens: [{id: t, secret: {env: HEX}}]\n")
    code, _, err = run(capsys, "validate", "-f", str(f), "--resolve-secrets")
    assert code == 0, err
    f.write_text(base + "users:\n  a:\n    instances: [rs]\n    tokens: [{id: t, secret: {env: HEX}}]\n")
    code, _, err = run(capsys, "validate", "-f", str(f), "--resolve-secrets")
    assert code == 1 and "uses provider redis-software, whose service refuses passwords without" in err
    assert "0123456789abcdef" not in err


def test_token_new_checks_the_file_before_making_a_token(tmp_path, capsys) -> None:
    out = tmp_path / "token.txt"
    code, stdout, err = run(capsys, "token", "new", "app", "--id", "x", "-f", str(tmp_path / "missing.yaml"), "--out", str(out))
    assert code == 1 and "missing.yaml" in err
    assert stdout == "" and not out.exists()


def test_error_flood_is_capped(tmp_path, capsys) -> None:
    users = "".join(f"  u{i}:\n    acl: \"+@nosuch{i}\"\n" for i in range(5000))
    f = tmp_path / "access.yaml"
    f.write_text("version: 1\ninstances:\n  c:\n    nodes: [\"127.0.0.1:1\"]\n    admin: {username: default}\nusers:\n" + users)
    code, _, err = run(capsys, "validate", "-f", str(f))
    lines = err.splitlines()
    assert code == 1
    assert len(lines) <= 101 and "and 4900 more problems" in lines[-1]


# -- 8: a value that doesn't parse is an error, never dropped --------------------------------------


@pytest.mark.parametrize(
    "where, value, expect",
    [
        ("expires", '"2020-01-01\\n"', "users.app.tokens[0].expires: expected a date YYYY-MM-DD"),
        ("created", '"2026-01-01\\n"', "users.app.tokens[0].created: expected a date YYYY-MM-DD"),
        ("sha256", f'"{"a" * 64}\\n"', "users.app.tokens[0].sha256: expected a sha256"),
        ("id", '"t1\\n"', "users.app.tokens[0].id: expected a token id"),
        ("username", "", "invalid username"),
    ],
)
def test_trailing_newline_never_passes_a_pattern(where: str, value: str, expect: str, site: Site, capsys) -> None:
    """`$` in Python also matches before a final newline: "2020-01-01\\n" used to pass the schema,
    the builder dropped the date, and an expired token was installed with drift clean."""
    token = {"id": "t1", "sha256": f'"{sha(APP_A)}"', "expires": '"2027-01-01"', "created": '"2026-01-01"'}
    name = '"app\\n"' if where == "username" else "app"
    if where != "username":
        token[where] = value
    entry = ", ".join(f"{k}: {v}" for k, v in token.items())
    site.file.write_text(
        f"version: 1\ninstances:\n  cache:\n    nodes: [\"{site.srv.address}\"]\n"
        f"    admin: {{username: reconciler, secret: {{env: T_ADMIN}}}}\nusers:\n  {name}:\n"
        f"    acl: \"~app:* +@read\"\n    tokens: [{{{entry}}}]\n"
    )
    before = site.users()
    for argv in (("validate", "-f", str(site.file)), ("apply", "-f", str(site.file), "--auto-approve")):
        code, _, err = run(capsys, *argv)
        assert code == 1 and expect in err, err
        assert len(err.strip().splitlines()) == 1, err  # one line, even for a name with a newline
    assert site.users() == before
