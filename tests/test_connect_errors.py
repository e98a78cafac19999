"""Connection errors that tell the operator what to do: an AUTH failure names where the secret
came from and the first-run command; a service that is not Redis on the port is said to be one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port
from support.cli import Cli

ADMIN = "connect-admin-plaintext-2c4e6a8b0d1f3957"

FILE = """\
version: 1
instances:
  cache:
    nodes: ["{address}"]
    admin: {admin}
users:
  reconciler:
    acl: "+@all ~* &*"
    tokens: [{{id: admin-1, secret: {{env: T_CONN_ADMIN}}}}]
"""
FILE_ADMIN = "{username: reconciler, secret: {env: T_CONN_ADMIN}}"

# A stand-in for any other service on a Redis port: answers every request like a web server.
HTTP_400 = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n"); c.close()
"""


@pytest.fixture
def cli(tmp_path: Path, capsys, monkeypatch) -> Cli:
    monkeypatch.setenv("T_CONN_ADMIN", ADMIN)
    return Cli(tmp_path, capsys=capsys)


def test_auth_failure_names_the_reference_and_the_first_run_command(server_factory, cli: Cli) -> None:
    srv = server_factory("valkey-9.1")  # fresh: the file's admin does not exist yet
    cli.write(FILE.format(address=srv.address, admin=FILE_ADMIN))
    for argv in (("plan",), ("drift",), ("apply", "--auto-approve")):
        code, _, err = cli(*argv, "-f", str(cli.file))
        assert code == 1
        assert err == (
            f"reconciler: cache {srv.address}: AUTH failed for user reconciler with the secret from {{env: T_CONN_ADMIN}}; "
            "on a fresh server the user does not exist yet: `reconciler apply -f FILE --bootstrap` creates it "
            "(add --bootstrap-secret-env VAR when `default` has a password)\n"
        ), err


def test_auth_failure_as_default_without_a_secret_says_what_to_set(server_factory, cli: Cli) -> None:
    srv = server_factory("redis-7.0")
    srv.admin().execute_command("ACL", "SETUSER", "default", "resetpass", ">default-password-0123456789")
    cli.write(FILE.format(address=srv.address, admin="{username: default}"))
    code, _, err = cli("plan", "-f", str(cli.file))
    assert code == 1 and f"cache {srv.address}: AUTH failed for user default (no admin secret in the file" in err, err
    assert "--bootstrap-secret-env VAR" in err and "default-password" not in err
    cli.write(FILE.format(address=srv.address, admin="{username: default, secret: {env: T_CONN_ADMIN}}"))
    code, _, err = cli("plan", "-f", str(cli.file))
    assert code == 1 and "AUTH failed for user default with the secret from {env: T_CONN_ADMIN}; check that it holds" in err


def test_a_service_that_is_not_redis_is_named_as_such(cli: Cli) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", HTTP_400, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        cli.write(FILE.format(address=f"127.0.0.1:{port}", admin=FILE_ADMIN))
        code, _, err = cli("plan", "-f", str(cli.file))
        assert code == 1
        assert err == (
            f"reconciler: cache 127.0.0.1:{port}: does not speak the Redis protocol "
            "(it answered b'HTTP/1.1 400 Bad Request'); is this the right host and port?\n"
        ), err
        code, _, err = cli("import", "--node", f"127.0.0.1:{port}", "--admin-user", "reconciler", "--admin-secret-env", "T_CONN_ADMIN")
        assert code == 1 and "does not speak the Redis protocol" in err, err
    finally:
        proc.kill()
        proc.wait()
