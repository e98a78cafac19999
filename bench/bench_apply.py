"""Benchmark: apply 10,000 new users (one token each) on Valkey 9.1.

Compares, each on a fresh server:
  executor      reconciler.providers.redis.execute.execute of a 10,000-create plan (pipelined batches)
  apply -f      the whole `reconciler apply -f FILE --auto-approve` (load, read, plan, execute, verify)
  redis-cli     the same 10,000 ACL SETUSER commands through `redis-cli --pipe` (raw lower bound)
  loop          one ACL SETUSER per round trip (what a naive tool does)
and the executor, redis-cli and the loop again through a loopback TCP proxy that delays every
client->server chunk by --latency-ms (default 1 ms), standing in for a network.

    .venv/bin/python bench/bench_apply.py [--users 10000] [--latency-ms 1] [--server valkey-9.1]

Not a timed test: prints the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

RULES = "~bench:{i}:* +@read +@write -@dangerous"


# -- the delay proxy (runs as its own process so it does not share the GIL) ----------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(pump())
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((loop.time() + delay, data))
            if not data:
                break
    finally:
        await task


async def _proxy_main(listen_port: int, target: tuple[str, int], delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(*target)
        sock = sw.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(cr, sw, delay), _pipe(sr, cw, 0.0), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def start_proxy(target_port: int, delay_ms: float) -> tuple[subprocess.Popen, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--proxy", str(port), str(target_port), str(delay_ms)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("delay proxy did not start")


# -- the contenders -------------------------------------------------------------------------


def make_users(n: int) -> list[tuple[str, str]]:
    """(name, sha256) pairs; the plaintext is thrown away at once, as config.load does."""
    return [(f"bench-{i:05d}", hashlib.sha256(secrets.token_urlsafe(32).encode()).hexdigest()) for i in range(n)]


def plan_for(users: list[tuple[str, str]], address: str):
    from reconciler.plan import InstancePlan, NodePlan, Plan, TokenChange, UserChange

    changes = tuple(
        UserChange(action="create", user=name, hashes=(h,), rules=RULES.format(i=i), tokens=(TokenChange("add", h, "t1"),))
        for i, (name, h) in enumerate(users)
    )
    node = NodePlan(address=address, role="primary", label="bench", fingerprint="", changes=changes, persist="none")
    return Plan(source="bench", instances=(InstancePlan(name="bench", topology="standalone", nodes=(node,)),))


def desired_for(address: str):
    from reconciler.model import DesiredState, Instance, Policies

    inst = Instance(name="bench", nodes=(address,))
    return DesiredState(source="bench", version=1, policies=Policies(), instances={"bench": inst}, roles={}, users={})


def run_executor(users, address: str) -> float:
    from reconciler.providers.redis import execute as executor

    plan = plan_for(users, address)
    desired = desired_for(address)
    t0 = time.perf_counter()
    executor.execute(plan, desired, warn=lambda m: None)
    return time.perf_counter() - t0


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def run_pipe(users, port: int, workdir: Path) -> float:
    from reconciler.plan import UserChange

    data = workdir / "setuser.resp"
    with open(data, "wb") as fh:
        for i, (name, h) in enumerate(users):
            c = UserChange(action="create", user=name, hashes=(h,), rules=RULES.format(i=i))
            fh.write(_resp("ACL", "SETUSER", name, *c.setuser_args()))
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli is None:
        raise RuntimeError("redis-cli not found (Debian package redis-tools)")
    t0 = time.perf_counter()
    with open(data, "rb") as fh:
        res = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), "--pipe"], stdin=fh, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0 or "errors: 0" not in res.stdout:
        raise RuntimeError(f"redis-cli --pipe failed: {res.stdout} {res.stderr}")
    return elapsed


def run_loop(users, port: int) -> float:
    import redis

    from reconciler.plan import UserChange

    client = redis.Redis(host="127.0.0.1", port=port)
    client.ping()
    t0 = time.perf_counter()
    for i, (name, h) in enumerate(users):
        c = UserChange(action="create", user=name, hashes=(h,), rules=RULES.format(i=i))
        client.execute_command("ACL", "SETUSER", name, *c.setuser_args())
    elapsed = time.perf_counter() - t0
    client.close()
    return elapsed


def run_apply_file(users, address: str, workdir: Path) -> float:
    """`reconciler apply -f` of a file declaring every user (tokens as sha256 entries)."""
    from reconciler.cli import main

    lines = ["version: 1", "instances:", "  bench:", f'    nodes: ["{address}"]', "    persist: none", "users:"]
    for i, (name, h) in enumerate(users):
        lines += [f"  {name}:", f'    acl: "{RULES.format(i=i)}"', "    tokens:", "      - id: t1", f"        sha256: {h}"]
    path = workdir / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    devnull = open(os.devnull, "w")
    saved = sys.stdout
    sys.stdout = devnull
    try:
        t0 = time.perf_counter()
        code = main(["apply", "-f", str(path), "--auto-approve"])
        elapsed = time.perf_counter() - t0
    finally:
        sys.stdout = saved
        devnull.close()
    if code != 0:
        raise RuntimeError(f"reconciler apply exited {code}")
    return elapsed


def count_users(port: int) -> int:
    import redis

    return len(redis.Redis(host="127.0.0.1", port=port).execute_command("ACL", "LIST"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--latency-ms", type=float, default=1.0)
    ap.add_argument("--server", default="valkey-9.1")
    ap.add_argument("--repeat", type=int, default=3, help="runs per fast contender; the best counts")
    ap.add_argument("--skip-apply-file", action="store_true", help="skip the end-to-end `apply -f` run")
    ap.add_argument("--proxy", nargs=3, metavar=("LISTEN", "TARGET", "DELAY_MS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.proxy:
        listen, target, delay = args.proxy
        asyncio.run(_proxy_main(int(listen), ("127.0.0.1", int(target)), float(delay) / 1000))
        return 0

    from servers import start_server

    users = make_users(args.users)
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        base = Path(tmp)
        runs = [
            ("executor", lambda srv, port: run_executor(users, f"127.0.0.1:{port}")),
            ("redis-cli --pipe", lambda srv, port: run_pipe(users, port, base)),
        ]
        if not args.skip_apply_file:
            runs.append(("apply -f (load+read+plan+execute+verify)", lambda srv, port: run_apply_file(users, srv.address, base)))
        delayed = [
            ("executor", lambda srv, port: run_executor(users, f"127.0.0.1:{port}")),
            ("redis-cli --pipe", lambda srv, port: run_pipe(users, port, base)),
            ("per-user round-trip loop", lambda srv, port: run_loop(users, port)),
        ]
        version = ""
        slow = ("apply -f", "per-user")
        print(f"best of {args.repeat} runs each (slow ones once), a fresh server per run", flush=True)
        for label, fn, latency in [(name, f, 0.0) for name, f in runs] + [(name, f, args.latency_ms) for name, f in delayed]:
            times = []
            for _ in range(1 if label.startswith(slow) else args.repeat):
                srv = start_server(args.server, base / f"srv-{len(results)}-{len(times)}")
                version = srv.version
                proxy = None
                port = srv.port
                try:
                    if latency:
                        proxy, port = start_proxy(srv.port, latency)
                    times.append(fn(srv, port))
                    n = count_users(srv.port) - 1
                    if n != len(users):
                        raise RuntimeError(f"{label}: {n} users on the server, expected {len(users)}")
                finally:
                    if proxy is not None:
                        proxy.kill()
                        proxy.wait()
                    srv.stop()
            elapsed = min(times)
            name = f"{label} (+{latency:g} ms)" if latency else label
            results.append((name, elapsed))
            print(f"  {name:<48} {elapsed:8.3f} s  {len(users) / elapsed:10.0f} users/s", flush=True)

    t = dict(results)
    print(f"\n{args.server} {version}, {len(users)} new users, one token each")
    print(f"  executor / redis-cli --pipe:                       {t['executor'] / t['redis-cli --pipe']:.2f}x")
    lat = f"+{args.latency_ms:g} ms"
    ex, pipe_l, loop = t[f"executor ({lat})"], t[f"redis-cli --pipe ({lat})"], t[f"per-user round-trip loop ({lat})"]
    print(f"  with {lat}: executor / redis-cli --pipe:            {ex / pipe_l:.2f}x")
    print(f"  with {lat}: per-user loop / executor:               {loop / ex:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
