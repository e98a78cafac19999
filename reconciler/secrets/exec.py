"""`secret: {exec: [argv...]}`: run a command (no shell) and take what it prints on stdout, one
trailing newline stripped. One mechanism for every secret manager's CLI (aws, gcloud, op, sops,
kubectl ...).

It runs only when the operator allows it -- `--allow-exec` or RECONCILER_ALLOW_EXEC=1 -- never
because a file says so: a pull request's file must not run code in CI. The command runs in the
YAML file's folder with the reconciler's environment, gets RECONCILER_EXEC_TIMEOUT seconds
(default 30; then its whole process group is killed), and each distinct argv runs once per run.
Errors name the command (argv[0]) and never show its output: stdout may be the secret, stderr
may echo it.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .base import MAX_SECRET_BYTES, Context, Fetched, SecretError, shown, single_line

KEY = "exec"
ALLOW = "RECONCILER_ALLOW_EXEC"
TIMEOUT = "RECONCILER_EXEC_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
MAX_PARALLEL = 4

NOT_ALLOWED = (
    f"exec: secrets run a command, which happens only when the operator allows it "
    f"(--allow-exec or {ALLOW}=1), never because a file says so; nothing was run"
)


def well_formed(spec: Any) -> bool:
    return isinstance(spec, list) and bool(spec) and all(isinstance(a, str) for a in spec)


def describe(spec: Any) -> str:
    return f"exec:{spec[0]}" if well_formed(spec) else "exec:?"


def shape(spec: list[str]) -> str | None:
    if not spec[0].strip():
        return "exec needs a command: its first item is empty"
    if any(unicodedata.category(c) == "Cc" for c in spec[0]):
        return "the exec command (its first item) has a control character"
    if any("\0" in a for a in spec):
        return "an exec argument has a NUL character"
    return None


def allowed(environ: Mapping[str, str]) -> bool:
    return environ.get(ALLOW, "").strip() == "1"


def timeout(environ: Mapping[str, str]) -> float:
    text = environ.get(TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise SecretError(f"{TIMEOUT}={text!r} is not a number of seconds (0 < N <= 3600)", once=True)
    return seconds


_RUNNING: set[subprocess.Popen] = set()  # commands started and not yet waited for
_RUNNING_LOCK = threading.Lock()


def _stop_running() -> None:
    with _RUNNING_LOCK:
        for proc in _RUNNING:
            if proc.poll() is None:
                _kill_group(proc)


@dataclass
class _Cache:
    results: dict[tuple[str, ...], Fetched | SecretError] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def prefetch(specs: Iterable[Any], ctx: Context) -> None:
    if not ctx.allow_exec:
        return
    argvs = list(dict.fromkeys(tuple(s) for s in specs if well_formed(s) and shape(s) is None))
    if not argvs:
        return
    limit = timeout(ctx.environ)
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(argvs)), thread_name_prefix="exec")
    try:
        wait([pool.submit(_cached, argv, ctx, limit) for argv in argvs])
    except BaseException:
        # Ctrl-C reaches this thread only: the commands the workers run (each in a session of its
        # own, out of the terminal's reach) are stopped here, or they would outlive the run.
        _stop_running()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def read(spec: list[str], ctx: Context) -> Fetched:
    if not ctx.allow_exec:
        raise SecretError(NOT_ALLOWED, once=True)
    answer = _cached(tuple(spec), ctx, timeout(ctx.environ))
    if isinstance(answer, SecretError):
        raise answer
    return answer


def _cached(argv: tuple[str, ...], ctx: Context, limit: float) -> Fetched | SecretError:
    cache: _Cache = ctx.cache(KEY, _Cache)
    with cache.lock:
        if argv in cache.results:
            return cache.results[argv]
    try:
        answer: Fetched | SecretError = Fetched(run(list(argv), ctx.base_dir, limit, ctx.environ))
    except SecretError as exc:
        exc.once = exc.once or repr(argv)  # every entry naming this argv shares the one run's failure
        answer = exc
    with cache.lock:
        return cache.results.setdefault(argv, answer)


def run(argv: list[str], cwd: str, limit: float, environ: Mapping[str, str]) -> str:
    """The command's stdout, one trailing newline stripped. Raises SecretError naming argv[0]."""
    name = shown(argv[0])
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # never read: it may echo the secret, and it is never shown
            cwd=cwd or None,
            env=dict(environ),
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except FileNotFoundError:
        raise SecretError(f"command {name} not found") from None
    except PermissionError:
        raise SecretError(f"command {name} is not executable") from None
    except OSError as exc:
        raise SecretError(f"command {name} can't be started ({exc.strerror})") from None
    assert proc.stdout is not None
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    try:
        out = _read_bounded(proc, name, time.monotonic() + limit, limit)
    finally:
        # Whatever happened (a timeout, too much output, Ctrl-C): nothing it started outlives the
        # read, and the pipe is closed even when a process outside its group still holds it.
        if proc.poll() is None:
            _kill_group(proc)
        proc.stdout.close()
        proc.wait()
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
    if proc.returncode < 0:
        raise SecretError(f"command {name} was killed by signal {-proc.returncode} (its output is not shown)")
    if proc.returncode != 0:
        raise SecretError(f"command {name} exited with status {proc.returncode} (its output is not shown)")
    return single_line(out, f"the output of command {name}")


def _read_bounded(proc: subprocess.Popen, name: str, deadline: float, limit: float) -> bytes:
    """Stdout until it closes and the command exits, by `deadline`, at most MAX_SECRET_BYTES: a
    command printing without end, or leaving a process behind that keeps its stdout open (a
    daemon in a session of its own, out of reach of the group kill), ends in one error, not in a
    run that fills the memory or never returns."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                exited = proc.poll() is not None
                _kill_group(proc)
                if exited:
                    raise SecretError(
                        f"command {name} exited, but a process it started kept its output open past {limit:g} s "
                        f"({TIMEOUT}); its output was not used"
                    )
                raise SecretError(f"command {name} did not finish within {limit:g} s ({TIMEOUT}); it was stopped")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if len(out) > MAX_SECRET_BYTES:
                _kill_group(proc)
                raise SecretError(f"command {name} printed more than {MAX_SECRET_BYTES} bytes, too many for a secret; it was stopped")
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SecretError(f"command {name} did not finish within {limit:g} s ({TIMEOUT}); it was stopped") from None
    return bytes(out)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return  # the group ended on its own between the timeout and the kill
