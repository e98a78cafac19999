"""Benchmark: realistic desired-state files, cold processes as CI runs them, and fleets.

Every user has its own key pattern (`~app{i}:* +@read`) and one sha256 token; the bench
writes its files itself. Each figure is the median of --runs whole `reconciler` processes,
side by side with the floor measured in the same run:

  floor   raw `redis-cli --pipe` of the same ACL SETUSER lines (users absent)
          + a fresh interpreter loading the same YAML with PyYAML's C loader

  1. 10k users on one server: apply -f (cold: users absent, empty parse cache), no-op
     plan --detailed-exitcode cold (fresh RECONCILER_CACHE_DIR) and warm, drift cold and warm;
     the same for the all-identical-rules file.
  2. scaling: 1k / 10k / 100k users, time per user and peak RSS (apply -f cold, plan cold).
  3. fleet: 50 server processes x 200 users each, cold no-op plan, vs one 10k instance.
  4. apply -f of 10k users through a loopback proxy adding --latency-ms per client->server
     chunk (bench_apply.py's proxy), vs the same apply without it.

    .venv/bin/python bench/bench_realistic.py [--runs 5] [--sizes 1000,10000,100000]
        [--server valkey-9.1] [--skip scaling,fleet,latency,identical]

Targets: apply <= 3.0x floor, plan cold <= 2.0x, warm <= 1.5x, drift as plan; 100k time
per user within 1.2x of 10k, peak RSS <= 150 MB at 10k and <= 1 GB at 100k; 50 instances
<= 2x one 10k instance; +1 ms apply within 1.5x of apply without. The machine's load average
is printed with each section: on a shared machine compare ratios, not seconds.
Not a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

ADMIN_TOKEN = "Bench-admin-token-1!"
PY = sys.executable
YAML_FLOOR = "import sys, yaml; yaml.load(open(sys.argv[1], 'rb'), Loader=yaml.CSafeLoader)"


# -- files ---------------------------------------------------------------------------------


def rules(i: int, identical: bool) -> str:
    return "~app:* +@read" if identical else f"~app{i}:* +@read"


def digest(i: int) -> str:
    return hashlib.sha256(f"bench-token-{i}".encode()).hexdigest()


def header(instances: dict[str, str]) -> list[str]:
    lines = ["version: 1", "instances:"]
    for name, address in instances.items():
        lines += [
            f"  {name}:",
            f'    nodes: ["{address}"]',
            "    admin: {username: reconciler, secret: {env: BENCH_ADMIN_TOKEN}}",
            "    persist: none",
            "    discover: false",
        ]
    lines += [
        "users:",
        "  reconciler:",
        '    acl: "~* &* +@all"',
        "    tokens:",
        "      - {id: admin, secret: {env: BENCH_ADMIN_TOKEN}}",
        "  default:",  # off and without a password: drift has no `nopass` finding
        "    enabled: false",
        "    tokens: []",
    ]
    return lines


def user_lines(i: int, identical: bool, instance: str | None = None) -> list[str]:
    out = [f"  app{i}:", f'    acl: "{rules(i, identical)}"']
    if instance:
        out.append(f"    instances: [{instance}]")
    return out + ["    tokens:", f"      - {{id: t1, sha256: {digest(i)}}}"]


def write_file(path: Path, n: int, address: str, identical: bool = False) -> Path:
    lines = header({"bench": address})
    for i in range(n):
        lines += user_lines(i, identical)
    path.write_text("\n".join(lines) + "\n")
    return path


def setuser_args(i: int, identical: bool) -> list[str]:
    from reconciler.plan import UserChange

    change = UserChange("create", f"app{i}", hashes=(digest(i),), rules=rules(i, identical))
    return ["ACL", "SETUSER", change.user, *change.setuser_args()]


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float  # wall time
    rss_mb: float = 0.0  # the process's own peak RSS
    cpu: float = 0.0  # user + system CPU time of the process (less sensitive to a busy machine)


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> Run:
    """One process: wall time, peak RSS and CPU time from wait4, or RuntimeError when it exits
    otherwise than `ok` (its output goes to a temp file, shown on failure)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            out.seek(0)
            raise RuntimeError(f"{' '.join(argv[-6:])} exited {proc.returncode}:\n{out.read().decode()[-3000:]}")
    return Run(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.seconds for r in runs),
        max(r.rss_mb for r in runs),
        statistics.median(r.cpu for r in runs),
    )


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f} ({os.cpu_count()} cores)"


def redis_cli() -> str:
    # The system's first: the downloaded newer builds may need a newer libc than the host's.
    candidates = [shutil.which("redis-cli"), shutil.which("valkey-cli")]
    candidates += [str(p) for p in sorted((REPO / ".cache/servers").glob("*/usr/bin/*-cli"))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise SystemExit("redis-cli not found (Debian package redis-tools)")


def resp(args: list[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


# -- one server with N users -----------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, base: Path):
        self.args = args
        self.base = base
        self.env = {**os.environ, "BENCH_ADMIN_TOKEN": ADMIN_TOKEN, "RECONCILER_TODAY": "2026-11-23"}
        self.env.pop("RECONCILER_NO_CACHE", None)
        self.servers: list = []
        self.cache_n = 0

    def start(self):
        from servers import start_server

        srv = start_server(self.args.server, self.base / f"srv-{len(self.servers)}")
        self.servers.append(srv)
        c = srv.admin()
        c.execute_command("ACL", "SETUSER", "reconciler", "on", f">{ADMIN_TOKEN}", "~*", "&*", "+@all")
        c.execute_command("ACL", "SETUSER", "default", "reset", "off")
        c.close()
        return srv

    def client(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, username="reconciler", password=ADMIN_TOKEN, socket_timeout=60)

    def stop_all(self) -> None:
        for srv in self.servers:
            srv.stop()
        self.servers.clear()

    def clear_users(self, port: int) -> None:
        c = self.client(port)
        names = [line.split()[1] for line in (raw.decode() for raw in c.execute_command("ACL", "LIST"))]
        names = [n for n in names if n.startswith("app")]
        pipe = c.pipeline(transaction=False)
        for k in range(0, len(names), 1000):
            pipe.execute_command("ACL", "DELUSER", *names[k : k + 1000])
        pipe.execute()
        c.close()

    def count_users(self, port: int) -> int:
        c = self.client(port)
        n = sum(1 for raw in c.execute_command("ACL", "LIST") if raw.startswith(b"user app"))
        c.close()
        return n

    def fill(self, port: int, n: int, identical: bool) -> None:
        c = self.client(port)
        pipe = c.pipeline(transaction=False)
        for i in range(n):
            pipe.execute_command(*setuser_args(i, identical))
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        c.close()

    def fresh_cache(self) -> dict[str, str]:
        self.cache_n += 1
        return {**self.env, "RECONCILER_CACHE_DIR": str(self.base / f"cache-{self.cache_n}")}

    def cli(self, *args: str) -> list[str]:
        return [PY, "-m", "reconciler.cli", *args]

    # one round of each measurement ------------------------------------------------------

    def resp_file(self, n: int, identical: bool) -> Path:
        data = self.base / f"setuser-{n}-{identical}.resp"
        if not data.exists():
            with open(data, "wb") as fh:
                for i in range(n):
                    fh.write(resp(setuser_args(i, identical)))
        return data

    def pipe(self, port: int, data: Path) -> Run:
        """The raw floor: the same ACL SETUSER lines through `redis-cli --pipe` (users absent)."""
        self.clear_users(port)
        cli = [redis_cli(), "-h", "127.0.0.1", "-p", str(port), "--user", "reconciler", "--pass", ADMIN_TOKEN, "--no-auth-warning", "--pipe"]
        with open(data, "rb") as fh:
            t0 = time.perf_counter()
            r = subprocess.run(cli, stdin=fh, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
        if r.returncode != 0 or "errors: 0" not in r.stdout:
            raise RuntimeError(f"redis-cli --pipe failed: {r.stdout} {r.stderr}")
        self.clear_users(port)
        return Run(elapsed, 0.0, elapsed)  # the server does the work: count it all

    def yaml_floor(self, path: Path) -> Run:
        return timed([PY, "-c", YAML_FLOOR, str(path)], self.env)

    def apply_cold(self, port: int, path: Path, n: int) -> Run:
        self.clear_users(port)
        run = timed(self.cli("apply", "-f", str(path), "--auto-approve"), self.fresh_cache())
        got = self.count_users(port)
        if got != n:
            raise RuntimeError(f"apply left {got} users, expected {n}")
        return run

    def noop(self, command: str, path: Path, env: dict[str, str] | None = None) -> Run:
        """A no-op plan (exit 0 expected) or drift; cold with a fresh cache dir unless `env`."""
        argv = self.cli(command, "-f", str(path)) + (["--detailed-exitcode"] if command == "plan" else [])
        return timed(argv, env or self.fresh_cache())

    def warm_env(self, path: Path) -> dict[str, str]:
        env = self.fresh_cache()
        timed(self.cli("validate", "-f", str(path)), env)  # fills the parse cache
        return env


# -- report --------------------------------------------------------------------------------


class Table:
    """Prints each figure as it is measured: wall median (and its ratio to the floor), CPU
    median (and its ratio to the floor's), peak RSS, the target on the wall ratio."""

    def add(self, step: str, run: Run, floor: Run | None = None, target: float | None = None) -> None:
        ratio = f"{run.seconds / floor.seconds:5.2f}x" if floor else ""
        cpu_ratio = f"{run.cpu / floor.cpu:5.2f}x" if floor and floor.cpu else ""
        rss = f"{run.rss_mb:5.0f} MB" if run.rss_mb else ""
        verdict = ""
        if target is not None and floor:
            verdict = f"<= {target:g}x " + ("met" if run.seconds / floor.seconds <= target else "MISSED")
            if floor.cpu:
                verdict += " (cpu " + ("met" if run.cpu / floor.cpu <= target else "MISSED") + ")"
        print(f"  {step:<50} {run.seconds:6.2f} s {ratio:>6}  cpu {run.cpu:6.2f} s {cpu_ratio:>6} {rss:>8}  {verdict}", flush=True)


def section_single(b: Bench, table: Table, n: int, identical: bool, label: str, targets: bool = True) -> dict[str, Run]:
    """Every measurement once per round, rounds repeated: a busy machine slows them alike."""
    srv = b.start()
    path = write_file(b.base / f"users-{n}-{'same' if identical else 'own'}.yaml", n, srv.address, identical)
    print(f"\n{label}: {n} users, {path.stat().st_size / 1e6:.1f} MB file, {srv.server} {srv.version}; {load()}", flush=True)
    data = b.resp_file(n, identical)
    steps: list[tuple[str, Callable[[], Run]]] = [
        ("pipe", lambda: b.pipe(srv.port, data)),
        ("yaml", lambda: b.yaml_floor(path)),
        ("apply", lambda: b.apply_cold(srv.port, path, n)),
        ("plan_cold", lambda: b.noop("plan", path)),
    ]
    if not b.args.quick:
        warm: dict[str, dict[str, str]] = {}
        steps += [
            ("plan_warm", lambda: b.noop("plan", path, warm.setdefault("env", b.warm_env(path)))),
            ("drift_cold", lambda: b.noop("drift", path)),
            ("drift_warm", lambda: b.noop("drift", path, warm.setdefault("env", b.warm_env(path)))),
        ]
    runs: dict[str, list[Run]] = {name: [] for name, _ in steps}
    for _ in range(b.args.runs):
        for name, step in steps:
            runs[name].append(step())
    out = {name: median(r) for name, r in runs.items()}
    pipe, yml = out["pipe"], out["yaml"]
    floor = Run(pipe.seconds + yml.seconds, 0.0, pipe.cpu + yml.cpu)
    out["floor"] = floor
    table.add(f"{label}: floor (pipe {pipe.seconds:.2f} s + YAML {yml.seconds:.2f} s)", floor, floor)
    # The ratio targets are for the 10k file; scaling sizes are judged by time per user.
    table.add(f"{label}: apply -f, cold", out["apply"], floor, 3.0 if targets else None)
    table.add(f"{label}: no-op plan, cold (fresh cache dir)", out["plan_cold"], floor, 2.0 if targets else None)
    if not b.args.quick:
        table.add(f"{label}: no-op plan, warm (parse cache)", out["plan_warm"], floor, 1.5)
        table.add(f"{label}: drift, cold", out["drift_cold"], floor, 2.0)
        table.add(f"{label}: drift, warm", out["drift_warm"], floor, 1.5)
    b.stop_all()
    return out


def section_fleet(b: Bench, table: Table, n_single: int, instances: int = 50, per: int = 200) -> None:
    """Cold no-op plan of one file with `instances` servers x `per` users, alternating with a
    cold no-op plan of one server holding n_single users."""
    print(f"\nfleet: {instances} server processes x {per} users vs one server with {n_single}; {load()}", flush=True)
    servers = [b.start() for _ in range(instances)]
    names = {f"fleet-{k:02d}": srv.address for k, srv in enumerate(servers)}
    lines = header(names)
    i = 0
    for name, srv in zip(names, servers, strict=True):
        c = b.client(srv.port)
        pipe = c.pipeline(transaction=False)
        for _ in range(per):
            lines += user_lines(i, False, instance=name)
            pipe.execute_command(*setuser_args(i, False))
            i += 1
        pipe.execute()
        c.close()
    fleet = b.base / "fleet.yaml"
    fleet.write_text("\n".join(lines) + "\n")
    single_srv = b.start()
    single = write_file(b.base / f"single-{n_single}.yaml", n_single, single_srv.address)
    b.fill(single_srv.port, n_single, False)
    runs: dict[str, list[Run]] = {"fleet": [], "single": []}
    for _ in range(b.args.runs):
        runs["fleet"].append(b.noop("plan", fleet))
        runs["single"].append(b.noop("plan", single))
    one = median(runs["single"])
    table.add(f"fleet: one instance, {n_single} users, no-op plan cold", one, one)
    table.add(f"fleet: {instances} instances x {per} users, no-op plan cold", median(runs["fleet"]), one, 2.0)
    b.stop_all()


def section_latency(b: Bench, table: Table, n: int) -> None:
    """apply -f cold straight to the server and through the delay proxy, alternating."""
    from bench_apply import start_proxy

    srv = b.start()
    print(f"\nlatency: apply -f of {n} users, +{b.args.latency_ms:g} ms per client->server chunk; {load()}", flush=True)
    plain = write_file(b.base / f"lat-plain-{n}.yaml", n, srv.address)
    proxy, port = start_proxy(srv.port, b.args.latency_ms)
    try:
        delayed = write_file(b.base / f"lat-proxy-{n}.yaml", n, f"127.0.0.1:{port}")
        runs: dict[str, list[Run]] = {"plain": [], "delayed": []}
        for _ in range(b.args.runs):
            runs["plain"].append(b.apply_cold(srv.port, plain, n))
            runs["delayed"].append(b.apply_cold(srv.port, delayed, n))
    finally:
        proxy.kill()
        proxy.wait()
    base_run = median(runs["plain"])
    table.add("latency: apply -f, cold, no added latency", base_run, base_run)
    table.add(f"latency: apply -f, cold, +{b.args.latency_ms:g} ms", median(runs["delayed"]), base_run, 1.5)
    b.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--server", default="valkey-9.1")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--sizes", default="1000,10000,100000", help="scaling sizes (the --users size is reused)")
    ap.add_argument("--latency-ms", type=float, default=1.0)
    ap.add_argument("--skip", default="", help="comma list of: identical,scaling,fleet,latency")
    ap.add_argument("--quick", action="store_true", help="apply and cold plan only (no warm, no drift)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    table = Table()
    print(f"medians of {args.runs} whole processes; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-realistic-") as tmp:
        b = Bench(args, Path(tmp))
        try:
            main10 = section_single(b, table, args.users, False, f"{args.users // 1000}k own rules")
            if "identical" not in skip:
                section_single(b, table, args.users, True, f"{args.users // 1000}k identical rules")
            if "scaling" not in skip:
                per_user: dict[int, tuple[Run, Run]] = {args.users: (main10["apply"], main10["plan_cold"])}
                for n in (int(s) for s in args.sizes.split(",")):
                    if n == args.users:
                        continue
                    b.args.quick = True
                    got = section_single(b, table, n, False, f"scaling {n // 1000}k", targets=False)
                    per_user[n] = (got["apply"], got["plan_cold"])
                print("\nscaling (cold): wall and CPU time per user, peak RSS", flush=True)
                for n in sorted(per_user):
                    a, p = per_user[n]
                    print(f"  {n:>7} users: apply {1e6 * a.seconds / n:6.0f} us/user (cpu {1e6 * a.cpu / n:6.0f}, {a.rss_mb:5.0f} MB), "
                          f"plan {1e6 * p.seconds / n:6.0f} us/user (cpu {1e6 * p.cpu / n:6.0f}, {p.rss_mb:5.0f} MB)", flush=True)
                big = max(per_user)
                if big != args.users:
                    for what, k in (("apply", 0), ("plan", 1)):
                        r = (per_user[big][k].seconds / big) / (per_user[args.users][k].seconds / args.users)
                        c = (per_user[big][k].cpu / big) / (per_user[args.users][k].cpu / args.users)
                        print(f"  {what}: per-user time at {big} vs {args.users}: wall {r:.2f}x, cpu {c:.2f}x (target <= 1.2x)"
                              f" {'met' if r <= 1.2 else 'MISSED'}")
            if "fleet" not in skip:
                section_fleet(b, table, args.users)
            if "latency" not in skip:
                section_latency(b, table, args.users)
        finally:
            b.stop_all()
    print(f"\ndone; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
