"""`secret: {exec: [argv...]}` with small real scripts: success, refusal unless the operator
allows it, one run per argv per run, non-zero exit, empty output, a hang past the timeout (its
children too), and a secret on stderr or stdout that no error may show."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.cli import Cli, Result

from reconciler import secrets

TOKEN = "exec-token-4e1a9c7d2b5f8360"
STDERR_SECRET = "exec-stderr-secret-9b3d5f7a1c2e"
OUTPUT_SECRET = "exec-stdout-secret-2c8e0a4f6b1d"
NOT_ALLOWED = "exec: secrets run a command, which happens only when the operator allows it (--allow-exec or RECONCILER_ALLOW_EXEC=1)"

FILE = """\
version: 1
instances:
  cache: {{nodes: ["127.0.0.1:1"]}}
users:
  app:
    tokens:
      - id: a
        secret: {{exec: {argv}}}
      - id: b
        secret: {{exec: {argv2}}}
"""


def script(folder: Path, name: str, body: str) -> Path:
    """A shell script the test writes; it appends a line to runs.log on every start."""
    p = folder / name
    p.write_text(f"#!/bin/sh\necho run >> '{folder}/runs.log'\n{body}\n")
    p.chmod(0o755)
    return p


def runs(folder: Path) -> int:
    log = folder / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def cli(folder: Path, **env: str) -> Cli:
    return Cli(folder, env={"RECONCILER_TODAY": "2026-11-23", **env})


def validate(c: Cli, *extra: str) -> Result:
    return c("validate", "--resolve-secrets", "-f", str(c.file), *extra)


def timed_line(c: Cli) -> tuple[str, float]:
    """`validate --resolve-secrets --allow-exec`: its one error line and the seconds it took."""
    started = time.monotonic()
    line = one_line(validate(c, "--allow-exec"))
    return line, time.monotonic() - started


def one_line(r: Result) -> str:
    assert r.code == 1, r.out + r.err
    for secret in (TOKEN, STDERR_SECRET, OUTPUT_SECRET):
        assert secret not in r.out + r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    return lines[0]


def test_success_runs_once_per_argv(tmp_path: Path) -> None:
    script(tmp_path, "get-token", f"printf '%s\\n' '{TOKEN}'")
    c = cli(tmp_path)
    # Two entries, one argv: one run. Relative to the file's folder, like file: paths.
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token", "--again"]'))
    r = validate(c, "--allow-exec")
    assert r.code == 1 and "the same token as tokens[0]" in r.err  # both print TOKEN: caught as a duplicate
    assert runs(tmp_path) == 2  # two different argvs
    (tmp_path / "runs.log").unlink()
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token"]'))
    r = validate(c, "--allow-exec")
    assert runs(tmp_path) == 1
    c.write(FILE.format(argv='["./get-token"]', argv2="[sh, -c, 'echo exec-token-second-7a0c3e5b9d21']"))
    (tmp_path / "runs.log").unlink()
    r = validate(c, "--allow-exec")
    assert r.code == 0, r.err
    assert runs(tmp_path) == 1
    session = secrets.Session(str(tmp_path), environ=dict(os.environ), allow_exec=True)
    got = session.resolve({"exec": ["./get-token"]})
    assert got.secret.reveal() == TOKEN and got.source == "exec:./get-token"  # one trailing newline stripped


def test_refused_unless_the_operator_allows_it(tmp_path: Path) -> None:
    script(tmp_path, "get-token", f'echo "{TOKEN}-$1"')
    c = cli(tmp_path)
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token", "b"]'))
    for argv in (("validate", "--resolve-secrets"), ("plan",), ("apply", "--auto-approve"), ("drift",)):
        line = one_line(c(*argv, "-f", str(c.file)))
        assert line.startswith(f"{c.file}:8: users.app.tokens[0].secret: token a of user app (exec:./get-token): {NOT_ALLOWED}"), line
    assert runs(tmp_path) == 0
    assert c("validate", "-f", str(c.file)).code == 0  # plain validate: the form only, nothing runs
    assert c("validate", "-f", str(c.file), "--allow-exec").code == 0
    assert runs(tmp_path) == 0
    allowed = cli(tmp_path, RECONCILER_ALLOW_EXEC="1")
    assert validate(allowed).code == 0
    assert runs(tmp_path) == 2


@pytest.mark.parametrize(
    "body, message",
    [
        (f"echo {OUTPUT_SECRET}; echo {STDERR_SECRET} >&2; exit 3", "command ./get-token exited with status 3 (its output is not shown)"),
        (f"echo {STDERR_SECRET} >&2", "the output of command ./get-token is empty"),
        (f"printf '%s\\n%s\\n' {OUTPUT_SECRET} {OUTPUT_SECRET}", "the output of command ./get-token has more than one line"),
        ("kill -9 $$", "command ./get-token was killed by signal 9 (its output is not shown)"),
    ],
    ids=["non-zero exit", "empty output", "two lines", "killed"],
)
def test_failures_are_one_line_naming_the_command(tmp_path: Path, body: str, message: str) -> None:
    script(tmp_path, "get-token", body)
    c = cli(tmp_path)
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token"]'))
    line = one_line(validate(c, "--allow-exec"))
    assert line == f"{c.file}:8: users.app.tokens[0].secret: token a of user app (exec:./get-token): {message}"
    assert runs(tmp_path) == 1  # the second entry's failure is the same run's, said once


def test_missing_and_not_executable(tmp_path: Path) -> None:
    c = cli(tmp_path)
    c.write(FILE.format(argv='["no-such-command-x"]', argv2='["./plain.txt"]'))
    (tmp_path / "plain.txt").write_text(TOKEN)
    r = validate(c, "--allow-exec")
    assert r.code == 1 and TOKEN not in r.err
    assert r.err.splitlines() == [
        f"{c.file}:8: users.app.tokens[0].secret: token a of user app (exec:no-such-command-x): command no-such-command-x not found",
        f"{c.file}:10: users.app.tokens[1].secret: token b of user app (exec:./plain.txt): command ./plain.txt is not executable",
    ]


def test_a_hang_is_stopped_at_the_timeout_with_its_children(tmp_path: Path) -> None:
    script(tmp_path, "get-token", f"echo {OUTPUT_SECRET}\nsleep 300 &\necho $! > '{tmp_path}/child.pid'\nsleep 300")
    c = cli(tmp_path, RECONCILER_EXEC_TIMEOUT="1")
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token"]'))
    line, elapsed = timed_line(c)
    assert line.endswith("(exec:./get-token): command ./get-token did not finish within 1 s (RECONCILER_EXEC_TIMEOUT); it was stopped")
    assert elapsed < 15, f"{elapsed:.1f} s"
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the command's own child outlived the timeout"
    bad = cli(tmp_path, RECONCILER_EXEC_TIMEOUT="soon")
    line = one_line(validate(bad, "--allow-exec"))
    assert "RECONCILER_EXEC_TIMEOUT='soon' is not a number of seconds" in line


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its parent is gone too
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_no_shell_involved(tmp_path: Path) -> None:
    """An argument with shell syntax reaches the command as it is."""
    script(tmp_path, "echo-arg", 'printf "%s\\n" "$1"')
    c = cli(tmp_path)
    c.write(FILE.format(argv="['./echo-arg', 'x-$(touch pwned)-; touch pwned2 #-long-enough']", argv2='["./echo-arg", "abcdefghijklmnopqrst"]'))
    r = validate(c, "--allow-exec")
    assert r.code == 0, r.err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_admin_secrets_from_a_command(tmp_path: Path) -> None:
    script(tmp_path, "admin-secret", f"echo {OUTPUT_SECRET}")
    (tmp_path / "access.yaml").write_text(
        "version: 1\ninstances:\n  c:\n    nodes: ['127.0.0.1:1']\n"
        "    admin: {username: reconciler, secret: {exec: [./admin-secret]}}\nusers: {}\n"
    )
    from reconciler.config import load

    state = load(str(tmp_path / "access.yaml"), environ=dict(os.environ), allow_exec=True)
    assert state.instances["c"].admin.secret.reveal() == OUTPUT_SECRET
    assert runs(tmp_path) == 1


def test_import_of_an_instance_runs_its_admin_command_from_the_files_folder(server_factory, tmp_path: Path) -> None:
    # `import --instance N -f FILE` reads the instance through a copy of its spec: a command named
    # relative to the file (./admin-secret, sops' encrypted file) must still run where the file is.
    srv = server_factory("valkey-9.1")
    srv.admin().execute_command("ACL", "SETUSER", "reconciler", "on", f">{OUTPUT_SECRET}", "~*", "&*", "+@all")
    folder = tmp_path / "conf"
    folder.mkdir()
    script(folder, "admin-secret", f"echo {OUTPUT_SECRET}")
    (folder / "access.yaml").write_text(
        f"version: 1\ninstances:\n  c:\n    nodes: ['{srv.address}']\n"
        "    admin: {username: reconciler, secret: {exec: [./admin-secret]}}\nusers: {}\n"
    )
    c = cli(tmp_path)
    r = c("import", "--instance", "c", "-f", str(folder / "access.yaml"), "--allow-exec")
    assert r.code == 0, r.err
    assert "reconciler:" in r.out and OUTPUT_SECRET not in r.out + r.err
    assert runs(folder) == 1


def test_a_daemon_keeping_the_output_open_ends_at_the_timeout(tmp_path: Path) -> None:
    # The command prints and exits, but leaves a process in a session of its own (out of reach of
    # the group kill) holding its stdout: the run must end at the timeout, not wait for ever.
    script(tmp_path, "get-token", f"setsid sleep 300 &\necho $! > '{tmp_path}/daemon.pid'\necho {OUTPUT_SECRET}")
    c = cli(tmp_path, RECONCILER_EXEC_TIMEOUT="1")
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token"]'))
    try:
        started = time.monotonic()
        r = c("validate", "--resolve-secrets", "-f", str(c.file), "--allow-exec")
        elapsed = time.monotonic() - started
    finally:
        if (tmp_path / "daemon.pid").exists():
            os.kill(int((tmp_path / "daemon.pid").read_text()), 9)
    line = one_line(r)
    assert line.endswith(
        "(exec:./get-token): command ./get-token exited, but a process it started kept its output open past 1 s "
        "(RECONCILER_EXEC_TIMEOUT); its output was not used"
    ), line
    assert elapsed < 20, f"{elapsed:.1f} s"


def test_endless_output_is_cut_at_the_secret_size_at_once(tmp_path: Path) -> None:
    # 200 MB, then a pause: the read stops at 64 KiB and the command is killed, instead of holding
    # everything it prints in memory until the timeout.
    script(tmp_path, "get-token", f"head -c 200000000 /dev/zero | tr '\\0' a\necho {OUTPUT_SECRET}\nsleep 300")
    c = cli(tmp_path, RECONCILER_EXEC_TIMEOUT="60")
    c.write(FILE.format(argv='["./get-token"]', argv2='["./get-token"]'))
    line, elapsed = timed_line(c)
    assert line.endswith(
        "(exec:./get-token): command ./get-token printed more than 65536 bytes, too many for a secret; it was stopped"
    ), line
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_hostile_references_are_shown_escaped_on_one_line(tmp_path: Path) -> None:
    # A pull request's file names a command, a path, a store path and a variable holding terminal
    # escapes and line breaks: each error stays one line, escaped, with no raw control character,
    # and nothing is run or read.
    c = cli(tmp_path, VAULT_ADDR="http://127.0.0.1:1", VAULT_TOKEN="t" * 20)
    c.write(
        'version: 1\ninstances:\n  cache: {nodes: ["127.0.0.1:1"]}\nusers:\n  app:\n    tokens:\n'
        '      - id: a\n        secret: {exec: ["./x\\e[2J\\r\\nPlan: 0 to add", "b"]}\n'
        '      - id: b\n        secret: {file: "\\e]0;title\\a\\u202ey"}\n'
        '      - id: c\n        secret: {vault: {path: "a/\\e[31m\\nb", field: f}}\n'
        '      - id: d\n        secret: {env: "A\\e[31mB"}\n'
    )
    for extra in ((), ("--resolve-secrets", "--allow-exec")):
        r = c("validate", "-f", str(c.file), *extra)
        assert r.code == 1
        lines = r.err.strip().splitlines()
        assert len(lines) == 4 and all(line.startswith(f"{c.file}:") for line in lines), r.err
        assert not any(ch in r.err for ch in "\x1b\r\a\u202e"), repr(r.err)
        assert "(exec:./x\\x1b[2J\\x0d\\x0aPlan: 0 to add): the exec command (its first item) has a control character" in lines[0]
        assert "(file:\\x1b]0;title\\x07\\u202ey): the secret file path has a control character" in lines[1]
        assert "is not set" not in r.err  # an env name the schema refused is not looked up


def test_ctrl_c_stops_the_running_commands(tmp_path: Path) -> None:
    # The commands run in sessions of their own (a timeout kills their whole group), so the
    # terminal's Ctrl-C does not reach them: the reconciler stops them itself before it exits.
    import signal
    import subprocess

    from support.cli import COMMAND, REPO

    script(tmp_path, "get-token", f"echo $$ > '{tmp_path}/cmd.pid'\nsleep 300")
    (tmp_path / "access.yaml").write_text(FILE.format(argv='["./get-token"]', argv2='["./get-token", "2"]'))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONCILER_TODAY": "2026-11-23"}
    proc = subprocess.Popen([*COMMAND, "plan", "--allow-exec", "-f", "access.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ((tmp_path / "cmd.pid").exists() and (tmp_path / "cmd.pid").read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "the command did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # both commands started
        command = int((tmp_path / "cmd.pid").read_text())
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < 10, f"the run took {elapsed:.1f} s to stop (it waited for the commands' timeout)"
    assert proc.returncode == 130 and "reconciler: interrupted; nothing was changed" in err, err
    deadline = time.monotonic() + 5
    while _alive(command) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(command)
    if alive:
        os.killpg(command, 9)
    assert not alive, "the command outlived the interrupted run"


def test_import_names_the_file_given_not_its_temporary_copy(tmp_path: Path) -> None:
    # import reads the instance through a temporary copy of its spec: a refused admin secret is
    # reported at the line of the file the operator gave (or as the command line's, for --node).
    script(tmp_path, "admin-secret", f"echo {OUTPUT_SECRET}")
    (tmp_path / "access.yaml").write_text(
        "version: 1\ninstances:\n  c:\n    nodes: ['127.0.0.1:1']\n"
        "    admin: {username: reconciler, secret: {exec: [./admin-secret]}}\nusers: {}\n"
    )
    c = cli(tmp_path, ADMIN_SECRET="two\nlines-of-secret")
    line = one_line(c("import", "--instance", "c", "-f", "access.yaml"))
    assert line == f"access.yaml:5: instances.c.admin.secret: admin secret of instance c (exec:./admin-secret): {NOT_ALLOWED}, never because a file says so; nothing was run"
    assert runs(tmp_path) == 0
    line = one_line(c("import", "--node", "127.0.0.1:1", "--admin-secret-env", "ADMIN_SECRET"))
    assert line == (
        "import --node: instances.imported.admin.secret: admin secret of instance imported (env:ADMIN_SECRET): "
        "environment variable ADMIN_SECRET holds a line break; a secret is one line of printable text"
    )
