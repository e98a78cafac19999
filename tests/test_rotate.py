"""`reconciler rotate` on real servers with a real OpenBao: the one order with no failed login.

A client re-reads "latest" from the store every 200 ms and opens a fresh connection every 20 ms
with what it read; across three consecutive rotations not one login fails, each old version is
refused once removed, and no token value appears in any output, plan, record or audit line.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from openbao import RunningBao
from servers import RunningServer
from support.cli import Cli
from support.prompt import until_prompt
from test_rotation import ADMIN, ADMIN_USER, MIN_ATTEMPTS, Prober, bootstrap_admin, prober_factory, try_auth  # noqa: F401 (fixture)

FIRST = "rotate-first-version-Qm4k-7Zp2vX9s1Lw3"
REREAD = 0.2  # seconds between the app's reads of "latest"

FILE = f"""\
version: 1
policies: {{min_overlap_hours: 0}}
audit_log: audit.jsonl
instances:
  cache:
    nodes: [{{env: T_NODE}}]
    admin: {{username: {ADMIN_USER}, secret: {{env: T_ADMIN}}}}
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
        rotate: {{every_days: 30}}
      - id: previous
        secret: {{vault: {{path: apps/orders, field: token, version: -1}}}}
"""


def values(bao: RunningBao, path: str = "apps/orders") -> list[str]:
    """Every version's token, oldest first (what a test may grep for)."""
    current = bao.get(path)["metadata"]["version"]
    return [str(bao.get(path, v)["data"]["token"]) for v in range(1, current + 1)]


class Reader:
    """The app's side of the store: re-reads "latest" every REREAD seconds and hands it to the client."""

    def __init__(self, bao: RunningBao, prober: Prober, path: str = "apps/orders"):
        self.bao, self.prober, self.path = bao, prober, path
        self.reads = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self._stop.wait(REREAD):
            latest = str(self.bao.get(self.path)["data"]["token"])
            with self.prober._lock:
                self.prober.token = latest
            self.reads += 1

    def caught_up(self, timeout: float = 10.0) -> None:
        """Until the client has logged in with the store's latest (the app moved on its own)."""
        latest = str(self.bao.get(self.path)["data"]["token"])
        deadline = time.monotonic() + timeout
        while self.prober.ok_with.get(latest, 0) == 0:
            assert time.monotonic() < deadline, "the client never logged in with the latest version"
            time.sleep(0.02)

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.thread.join(5)


def rotate_cli(srv: RunningServer, bao: RunningBao, tmp: Path, text: str = FILE, **env: str) -> Cli:
    bootstrap_admin(srv)
    cli = Cli(tmp, env={"T_NODE": srv.address, "T_ADMIN": ADMIN, **bao.env(), "NO_COLOR": "1", **env})
    cli.write(text)
    return cli


def rotate(cli: Cli, *extra: str, expect: int | tuple[int, ...] = 0):
    return cli("rotate", "-f", str(cli.file), "--auto-approve", *extra, expect=expect)


def assert_no_value(cli: Cli, secrets: list[str]) -> None:
    """No token value in any output, nor in any file the runs left next to the YAML."""
    # (the secret files themselves -- x.token, x.token.previous -- excepted)
    texts = list(cli.outputs) + [p.read_text(errors="replace") for p in cli.dir.iterdir() if p.is_file() and ".token" not in p.name]
    for value in secrets:
        for text in texts:
            assert value not in text


@pytest.mark.parametrize("server_id", [pytest.param(s, id=s, marks=pytest.mark.server) for s in ("valkey-9.1", "redis-7.0")])
def test_three_rotations_no_failed_login(server_factory, bao: RunningBao, tmp_path: Path, prober_factory, server_id: str) -> None:  # noqa: F811
    srv = server_factory(server_id)
    cli = rotate_cli(srv, bao, tmp_path)
    text = cli.file.read_text()
    bao.put("apps/orders", {"token": FIRST, "owner": "team-orders"})
    r = cli.apply(expect=0)
    assert "previous: none yet" in r.out
    prober, thread = prober_factory(srv, "app-orders", FIRST)
    reader = Reader(bao, prober)
    timeline = []
    for n in range(3):
        t0 = time.monotonic()
        r = rotate(cli, "--user", "app-orders")
        timeline.append(time.monotonic() - t0)
        assert "Plan of step 2 of 4" in r.out and "Step 4 of 4" in r.out, r.out
        assert f"version {n + 1} -> version {n + 2}" in r.out, r.out
        assert "Overlap: apps must have re-read secret/apps/orders since" in r.out
        reader.caught_up()
    time.sleep(0.3)
    reader.stop()
    prober.stop(at_least=MIN_ATTEMPTS)
    thread.join(5)
    print(f"\n{srv.id}: {prober.attempts} logins, {len(prober.failures)} failed, {reader.reads} store reads; "
          f"rotate runs took {', '.join(f'{t:.2f}' for t in timeline)} s")
    assert prober.failures == [], prober.failures[:5]
    assert prober.attempts >= MIN_ATTEMPTS
    versions = values(bao)
    assert len(versions) == 4
    # current = version 4, previous = version 3; versions 1 and 2 were removed and are refused
    assert [try_auth(srv, "app-orders", v) for v in versions] == [False, False, True, True]
    assert bao.get("apps/orders")["data"]["owner"] == "team-orders"  # the path's other fields kept
    assert cli.file.read_text() == text  # the YAML never changed
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode", "--out", "plan.json").code == 0
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    events = [a for a in audit if a["action"] == "rotate"]
    assert [(e["version"], e["old"], e["new"], e["token"], e["user"], e["result"]) for e in events] == [
        (n + 2, sha(versions[n])[:8], sha(versions[n + 1])[:8], "current", "app-orders", "ok") for n in range(3)
    ]
    assert [e["removed"] for e in events] == [[], [sha(versions[0])[:8]], [sha(versions[1])[:8]]]
    # The order, as the audit log and the store recorded it: the new hash on the servers, then the
    # store's version, then the removal of the version before previous.
    for e in events:
        written = _time(bao.get("apps/orders", e["version"])["metadata"]["created_time"])
        updates = sorted(_time(a["time"]) for a in audit
                         if a.get("rotation") == e["rotation"] and a["action"] == "update" and a["result"] == "ok")
        added, removed = updates[0], (updates[1] if len(updates) > 1 else None)
        assert added < written and (removed is None or written < removed), (added, written, removed)
        print(f"  rotation to version {e['version']}: hash added 0 ms, store version written {_ms(added, written)}, "
              f"removal {_ms(added, removed) if removed else '(none yet)'}, rotation recorded {_ms(added, _time(e['time']))}")
    assert all(e["by"] and e["store"] == "secret/apps/orders" for e in events)
    assert all(e["plan"] in {a["plan"] for a in audit if a["action"] == "update"} for e in events if e["removed"])  # step 4's
    for e in events:  # one record set: the steps' change lines carry the rotation's id
        steps = [a for a in audit if a.get("rotation") == e["rotation"] and a["action"] != "rotate"]
        updates = [a for a in steps if a["action"] == "update" and a["result"] != "attempt"]
        assert updates and all(a["result"] == "ok" and a["user"] == "app-orders" for a in updates)
        assert len({a["plan"] for a in updates}) == (1 if e["removed"] == [] else 2)  # step 2, and step 4 when it removed one
    assert_no_value(cli, versions + [ADMIN])


def _ms(start, end) -> str:  # noqa: ANN001 - datetimes
    return f"+{(end - start).total_seconds() * 1000:.0f} ms"


def _time(text: str):  # noqa: ANN202 - a datetime from an audit time or a store created_time
    from datetime import datetime

    text = text.replace("Z", "+00:00")
    head, _, tail = text.partition(".")
    if tail:  # the store gives nanoseconds: keep microseconds
        frac, zone = tail[: tail.index("+")], tail[tail.index("+"):]
        text = f"{head}.{frac[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text)


def sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


FILE_ENTRY = FILE.replace("""      - id: current
        secret: {vault: {path: apps/orders, field: token}}
        rotate: {every_days: 30}
      - id: previous
        secret: {vault: {path: apps/orders, field: token, version: -1}}
""", """      - id: current
        secret: {file: orders.token}
        rotate: {every_days: 30}
""")


def file_token(tmp: Path, mode: int = 0o600) -> Path:
    """orders.token beside the YAML, holding FIRST."""
    token = tmp / "orders.token"
    token.write_text(FIRST + "\n")
    token.chmod(mode)
    return token


def file_cli(srv: RunningServer, tmp: Path) -> Cli:
    """The file with a rotating `secret: {file: orders.token}`, applied."""
    cli = Cli(tmp, env={"T_NODE": srv.address, "T_ADMIN": ADMIN, "NO_COLOR": "1"})
    cli.write(FILE_ENTRY)
    cli.apply(expect=0)
    return cli


def test_a_file_rotates_its_old_value_to_previous(server_factory, tmp_path: Path, prober_factory) -> None:  # noqa: F811
    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    token = file_token(tmp_path)
    cli = file_cli(srv, tmp_path)
    prober, thread = prober_factory(srv, "app-orders", FIRST)
    seen = [FIRST]
    for _ in range(3):
        r = rotate(cli, "--user", "app-orders")
        assert "Rotation summary:" in r.out
        seen.append(token.read_text().strip())
        prober.switch(seen[-1])  # the app re-reads the file
    prober.stop()
    thread.join(5)
    assert prober.failures == [], prober.failures[:5]
    assert (tmp_path / "orders.token.previous").read_text().strip() == seen[-2]
    assert oct(token.stat().st_mode & 0o777) == "0o600" and oct((tmp_path / "orders.token.previous").stat().st_mode & 0o777) == "0o600"
    assert [try_auth(srv, "app-orders", v) for v in seen] == [False, False, True, True]
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0
    assert_no_value(cli, seen + [ADMIN])


def test_a_symlinked_secret_file_rotates_the_file_it_points_to(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """PATH a symlink (to where the apps read it): the rotation writes the file the link names and
    keeps the link; replacing the link would leave the apps' file on a value the next rotation removes."""
    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    target = secrets_dir / "orders.token"
    target.write_text(FIRST + "\n")
    target.chmod(0o600)
    (tmp_path / "orders.token").symlink_to("secrets/orders.token")
    cli = file_cli(srv, tmp_path)
    seen = [FIRST]
    for _ in range(2):
        rotate(cli, "--user", "app-orders")
        assert (tmp_path / "orders.token").is_symlink()
        seen.append(target.read_text().strip())
    assert seen[1] != seen[0] and seen[2] != seen[1]
    assert (tmp_path / "orders.token.previous").read_text().strip() == seen[1]
    assert [try_auth(srv, "app-orders", v) for v in seen] == [False, True, True]
    assert sorted(p.name for p in secrets_dir.iterdir()) == ["orders.token"]  # no temporary file left
    assert cli("plan", "-f", str(cli.file), "--detailed-exitcode").code == 0
    assert_no_value(cli, seen + [ADMIN])


def test_a_link_planted_at_path_previous_is_replaced_never_written_through(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """PATH.previous is the tool's own file: a symlink someone put there (to a one-line file the
    rotation, run as root, could overwrite) is replaced by the old value; what it named is untouched."""
    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    file_token(tmp_path)
    victim = tmp_path / "elsewhere" / "victim.conf"
    victim.parent.mkdir()
    victim.write_text("victim-content-must-stay-Zr73kQ\n")
    (tmp_path / "orders.token.previous").symlink_to(victim)
    cli = file_cli(srv, tmp_path)
    rotate(cli, "--user", "app-orders")
    assert victim.read_text() == "victim-content-must-stay-Zr73kQ\n"
    previous = tmp_path / "orders.token.previous"
    assert not previous.is_symlink() and previous.read_text().strip() == FIRST
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.conf"]


@pytest.mark.parametrize("answer", [b"no\n", b"\x04"], ids=["no", "ctrl-d"])
def test_declining_the_confirmation_changes_nothing_and_says_so(server_factory, tmp_path: Path, answer: bytes) -> None:  # noqa: F811
    """On a terminal, `no` (or Ctrl-D) at the rotation's one confirmation: nothing written, and
    the run says so -- not that a token may be left on the nodes, not an internal error."""
    import os
    import pty
    import subprocess
    import sys

    from support.cli import REPO

    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    token = file_token(tmp_path)
    cli = file_cli(srv, tmp_path)
    before = srv.client().execute_command("ACL", "GETUSER", "app-orders")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli", "rotate", "-f", str(cli.file), "--user", "app-orders"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(cli.env or {})})
    os.close(slave)
    try:
        seen = until_prompt(proc)
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 1, seen + out + err
    assert "apply cancelled; nothing was changed" in err and "user app-orders token current: not rotated; nothing was changed" in out, out + err
    assert "internal error" not in err and "stopped at step" not in out + err and "may be on some nodes" not in out + err
    assert srv.client().execute_command("ACL", "GETUSER", "app-orders") == before
    assert token.read_text() == FIRST + "\n" and not (tmp_path / "orders.token.previous").exists()


def test_a_rotated_file_keeps_its_owner_group_and_mode(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """The app reads PATH as its owner (or through its group): a rotation run as root (a scheduled
    job) must not hand the new token to root alone. Others never get a bit."""
    import os

    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    token = file_token(tmp_path, 0o644)
    owner = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())  # nobody, where we may give it away
    os.chown(token, *owner)
    cli = file_cli(srv, tmp_path)
    rotate(cli, "--user", "app-orders")
    st = token.stat()
    assert token.read_text().strip() != FIRST
    assert (st.st_uid, st.st_gid) == owner and oct(st.st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "orders.token.previous").stat().st_mode & 0o777) == "0o600"


def test_a_file_store_that_refuses_the_write_stops_before_the_token_exists(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """PATH.lock a folder (or a lock file this process may not open): rotate says so before step 2,
    one line, nothing changed on the server or on disk."""
    srv = server_factory("redis-7.0")
    bootstrap_admin(srv)
    token = file_token(tmp_path)
    (tmp_path / "orders.token.lock").mkdir()
    cli = file_cli(srv, tmp_path)
    before = srv.client().execute_command("ACL", "GETUSER", "app-orders")
    r = rotate(cli, "--user", "app-orders", expect=1)
    assert "stopped at step 1" in r.out and "orders.token.lock can't be opened (Is a directory); nothing was changed" in r.err, r.out + r.err
    assert "Step 2" not in r.out
    assert srv.client().execute_command("ACL", "GETUSER", "app-orders") == before
    assert token.read_text() == FIRST + "\n" and not (tmp_path / "orders.token.previous").exists()


def test_nothing_due_says_when(server_factory, bao: RunningBao, tmp_path: Path) -> None:
    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path)
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    r = rotate(cli)
    assert "Nothing to rotate: no token is due." in r.out
    made = bao.get("apps/orders")["metadata"]["created_time"][:10]
    assert "Next rotation: user app-orders token current (vault:secret/apps/orders#token): next due" in r.out, r.out
    assert f"next due {_days_after(made, 30)}T" in r.out  # 30 days after the store made the version
    assert len(values(bao)) == 1
    # 31 days later it is due, and drift says so too
    later = Cli(tmp_path, env={**cli.env, "RECONCILER_TODAY": _days_after(made, 31)})
    later.outputs = cli.outputs
    d = later.drift("--format", "json")
    assert d.code == 2
    kinds = json.loads(d.out)["drift"]["kinds"]
    assert kinds.get("rotation_due") == 1, d.out
    r = later("rotate", "-f", str(cli.file), "--dry-run", expect=2)
    assert "would write the next version of secret/apps/orders" in r.out
    assert len(values(bao)) == 1  # a dry run writes nothing
    later("rotate", "-f", str(cli.file), "--auto-approve", expect=0)
    assert len(values(bao)) == 2
    assert_no_value(cli, values(bao) + [ADMIN])


def _days_after(day: str, n: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=n)).isoformat()


def test_overlap_refused_unless_forced(server_factory, bao: RunningBao, tmp_path: Path) -> None:
    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path, FILE.replace("min_overlap_hours: 0", "min_overlap_hours: 24"))
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    r = rotate(cli, "--user", "app-orders", expect=1)
    assert "refusing to rotate user app-orders token current: the latest version was made 0.0 hours ago" in r.err, r.err
    assert "policies.min_overlap_hours is 24" in r.err
    assert len(values(bao)) == 1
    rotate(cli, "--user", "app-orders", "--force", expect=0)
    assert len(values(bao)) == 2


def test_scheduled_workflow_step(server_factory, bao: RunningBao, tmp_path: Path) -> None:
    """examples/rotate-schedule.yml's rotate step, run with bash as Actions runs it: weekly, what
    is due rotates, the Markdown summary says what rotated and when the next one is due."""
    import os
    import sys

    import yaml
    from support import actions
    from support.cli import REPO

    wf = yaml.safe_load((REPO / "examples" / "rotate-schedule.yml").read_text())
    assert wf[True]["schedule"][0]["cron"].split()[4] == "1"  # weekly (`on` reads as true in YAML 1.1)
    steps = wf["jobs"]["rotate"]["steps"]
    (step,) = [s for s in steps if s.get("id") == "rotate"]
    assert "--auto-approve" in step["run"]
    assert any(s.get("uses", "").startswith("hashicorp/vault-action") and s["with"]["method"] == "jwt" for s in steps)

    srv = server_factory("valkey-9.1")
    cli = rotate_cli(srv, bao, tmp_path)
    bao.put("apps/orders", {"token": FIRST})
    cli.apply(expect=0)
    made = bao.get("apps/orders")["metadata"]["created_time"][:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T_", "RECONCILER_", "VAULT_"))}
    env.update(cli.env or {}, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(REPO),
               ACCESS_FILE=str(cli.file), ROTATE_USER="", RECONCILER_TODAY=_days_after(made, 31))

    def run_step() -> tuple[int, dict[str, str], str]:
        r = actions.run_step(step["run"], env, tmp_path)
        cli.outputs.append(r.log)
        return r.code, r.outputs, r.summary

    code, outputs, summary = run_step()
    assert (code, outputs) == (0, {"exit_code": "0"}), summary
    assert summary.startswith("## Token rotation\n")
    assert "- user app-orders token current: secret/apps/orders version 1 -> version 2 (sha256:" in summary, summary
    env["RECONCILER_TODAY"] = _days_after(made, 7)  # a week after version 2 was made: nothing due
    code, outputs, summary = run_step()
    assert (code, outputs) == (0, {"exit_code": "0"})
    assert "Nothing was due." in summary and "- next: user app-orders token current" in summary, summary
    assert len(values(bao)) == 2
    assert_no_value(cli, values(bao) + [ADMIN])
