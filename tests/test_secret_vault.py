"""`secret: {vault: {...}}` against a real OpenBao server (the Vault API): KV v2 reads, versions,
deleted and destroyed versions, permissions, namespaces, a sealed, unreachable or hung store,
the connection coming only from VAULT_* variables, each path read once per run, and the store
API rotation builds on (metadata, check-and-set writes, two writers racing)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
import requests
from openbao import READ_ONLY_POLICY, RunningBao
from support.cli import Cli, Result

from reconciler import secrets
from reconciler.config import load
from reconciler.errors import ConfigError
from reconciler.secrets import kv
from reconciler.secrets.vault import requests_made

CURRENT = "vault-orders-current-7d2c9a41e5b3"
PREVIOUS = "vault-orders-previous-3f8e1b6a0c92"
OLDEST = "vault-orders-oldest-5a1d7e3c9b04"
OTHER = "vault-orders-other-field-8c2f4a6e1d37"
ADMIN = "vault-admin-token-1b9d5f3a7c2e"
VALUES = (CURRENT, PREVIOUS, OLDEST, OTHER, ADMIN)

FILE = """\
version: 1
instances:
  cache:
    nodes: ["127.0.0.1:1"]
    timeout_seconds: {timeout}
    admin: {{username: reconciler, secret: {{vault: {{path: infra/cache, field: admin}}}}}}
users:
  app-orders:
    tokens:
      - id: current
        secret: {{vault: {{path: apps/orders, field: token}}}}
      - id: previous
        secret: {{vault: {{path: apps/orders, field: token, version: -1}}}}
"""


def write(tmp_path: Path, text: str | None = None, timeout: float = 5) -> Path:
    f = tmp_path / "access.yaml"
    f.write_text(text if text is not None else FILE.format(timeout=timeout))
    return f


def problems(f: Path, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(str(f), environ=environ, allow_expired=True)
    lines = [str(p) for p in exc.value.problems]
    for line in lines:
        for value in VALUES:
            assert value not in line
    return lines


def seed(bao: RunningBao) -> None:
    bao.put("infra/cache", {"admin": ADMIN})
    bao.put("apps/orders", {"token": OLDEST, "note": OTHER})
    bao.put("apps/orders", {"token": PREVIOUS, "note": OTHER})
    bao.put("apps/orders", {"token": CURRENT, "note": OTHER})


def test_latest_and_previous_versions_one_request_per_version(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    f = write(tmp_path)
    session = secrets.Session(str(tmp_path), environ=bao.env())
    refs = [{"vault": {"path": "apps/orders", "field": "token"}},
            {"vault": {"path": "apps/orders", "field": "note"}},
            {"vault": {"path": "apps/orders", "field": "token", "version": -1}},
            {"vault": {"path": "apps/orders", "field": "token", "version": 0, "mount": "secret"}}]
    session.prefetch(refs)
    assert requests_made(session.ctx) == 2  # the latest (both fields), then version 2
    got = [session.resolve(r) for r in refs]
    assert requests_made(session.ctx) == 2  # answered from what was read
    assert [g.secret.reveal() for g in got] == [CURRENT, OTHER, PREVIOUS, CURRENT]
    assert got[0].source == "vault:secret/apps/orders#token" and got[2].source == "vault:secret/apps/orders#token@-1"
    assert got[0].created == date.today()

    state = load(str(f), environ=bao.env(), allow_expired=True)
    tokens = {t.id: t for t in state.users["app-orders"].tokens}
    assert tokens["current"].sha256 == secrets.sha256_hex(CURRENT)
    assert tokens["previous"].sha256 == secrets.sha256_hex(PREVIOUS)
    assert tokens["current"].created == date.today()  # the store's created_time, for token age
    assert state.instances["cache"].admin.secret.reveal() == ADMIN
    assert not state.users["app-orders"].absent_tokens


def test_a_path_with_one_version_has_no_previous_token_yet(bao: RunningBao, tmp_path: Path) -> None:
    bao.put("infra/cache", {"admin": ADMIN})
    bao.put("apps/orders", {"token": CURRENT})
    state = load(str(write(tmp_path)), environ=bao.env(), allow_expired=True)
    user = state.users["app-orders"]
    assert [t.id for t in user.tokens] == ["current"]
    assert [(a.id, a.source) for a in user.absent_tokens] == [("previous", "vault:secret/apps/orders#token@-1")]
    assert "has one version" in user.absent_tokens[0].reason
    # The field is newer than the version before the latest: no previous token there either.
    bao.put("apps/orders", {"token": PREVIOUS})
    bao.put("apps/orders", {"renamed": PREVIOUS})
    bao.put("apps/orders", {"token": CURRENT})
    state = load(str(write(tmp_path)), environ=bao.env(), allow_expired=True)
    user = state.users["app-orders"]
    assert [t.sha256 for t in user.tokens] == [secrets.sha256_hex(CURRENT)]
    assert user.absent_tokens[0].reason == "version 3 of secret/apps/orders has no field token"


def test_other_mount_and_a_missing_field(bao: RunningBao, tmp_path: Path) -> None:
    bao.api("POST", "sys/mounts/kv-apps", {"type": "kv", "options": {"version": "2"}})
    bao.put("orders", {"token": CURRENT, "count": "1"}, mount="kv-apps")
    text = ("version: 1\ninstances:\n  c: {nodes: ['127.0.0.1:1']}\nusers:\n  app:\n    tokens:\n"
            "      - {id: a, secret: {vault: {path: orders, field: token, mount: kv-apps}}}\n")
    state = load(str(write(tmp_path, text)), environ=bao.env())
    assert state.users["app"].tokens[0].sha256 == secrets.sha256_hex(CURRENT)
    f = write(tmp_path, text.replace("field: token", "field: tokn"))
    assert problems(f, bao.env()) == [
        f"{f}:7: users.app.tokens[0].secret: token a of user app (vault:kv-apps/orders#tokn): "
        "version 1 of kv-apps/orders has no field 'tokn' (its fields: count, token)"
    ]
    f = write(tmp_path, text.replace("mount: kv-apps", "mount: nowhere"))
    [line] = problems(f, bao.env())
    assert line.endswith("vault: no secrets engine is mounted at nowhere/ (path nowhere/orders)")


def test_values_that_are_not_a_secret(bao: RunningBao, tmp_path: Path) -> None:
    # A field holding JSON null is there (not "no field ... (its fields: ..., it)"); a number, an
    # object, or 10 MB of text is not a secret either: one line each, as for files and commands.
    bao.put("apps/odd", {"nul": None, "num": 12345678901234567, "obj": {"a": "b"}, "big": "x" * 10_000_000})
    text = ("version: 1\ninstances:\n  c: {nodes: ['127.0.0.1:1']}\nusers:\n  app:\n    tokens:\n"
            "      - {id: a, secret: {vault: {path: apps/odd, field: FIELD}}}\n")
    expected = {
        "nul": "field 'nul' of version 1 of secret/apps/odd is null, not a string",
        "num": "field 'num' of version 1 of secret/apps/odd is a number, not a string",
        "obj": "field 'obj' of version 1 of secret/apps/odd is an object or a list, not a string",
        "big": "the value is 10000000 bytes, too large for a secret (at most 65536)",
    }
    for name, message in expected.items():
        f = write(tmp_path, text.replace("FIELD", name))
        assert problems(f, bao.env()) == [f"{f}:7: users.app.tokens[0].secret: token a of user app (vault:secret/apps/odd#{name}): {message}"]


def test_deleted_and_destroyed_versions_name_path_and_version(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    f = write(tmp_path)
    bao.delete_versions("apps/orders", 2)
    [line] = problems(f, bao.env())
    assert line.startswith(f"{f}:13: users.app-orders.tokens[1].secret: token previous of user app-orders (vault:secret/apps/orders#token@-1): ")
    assert "version 2 (version: -1) of secret/apps/orders was deleted on " in line
    assert "vault kv undelete -mount=secret -versions=2 apps/orders" in line
    bao.destroy_versions("apps/orders", 2)
    [line] = problems(f, bao.env())
    assert line.endswith("version 2 (version: -1) of secret/apps/orders was destroyed; it can't be read "
                         "(point the file at another version, or write a new one)")
    bao.delete_versions("apps/orders", 3)  # the latest itself
    lines = problems(f, bao.env())
    assert "version 3 of secret/apps/orders was deleted on " in lines[0] and "tokens[0]" in lines[0]


def test_missing_path_says_namespace_and_namespace_works(bao: RunningBao, tmp_path: Path) -> None:
    bao.put("infra/cache", {"admin": ADMIN})
    bao.namespace("team-a")
    bao.put("infra/cache", {"admin": ADMIN}, namespace="team-a")
    bao.put("apps/orders", {"token": CURRENT}, namespace="team-a")
    f = write(tmp_path)
    [line] = problems(f, bao.env())  # two references to one path: said once
    assert line.endswith("(vault:secret/apps/orders#token): no secret at secret/apps/orders (VAULT_NAMESPACE is not set: a secret in a namespace needs it)")
    state = load(str(f), environ=bao.env(VAULT_NAMESPACE="team-a"), allow_expired=True)
    assert state.users["app-orders"].tokens[0].sha256 == secrets.sha256_hex(CURRENT)


def test_permission_denied_and_an_invalid_token(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    f = write(tmp_path)
    only_infra = bao.token_with_policy("infra", 'path "secret/data/infra/*" { capabilities = ["read"] }')
    [line] = problems(f, bao.env(token=only_infra))
    assert line.endswith("vault: permission denied: VAULT_TOKEN may not read secret/apps/orders (check the token and its policies)")
    [line] = problems(f, bao.env(token="s.not-a-token"))  # said once, at the first reference
    assert line.endswith(f"vault: VAULT_TOKEN is not valid at {bao.addr} (expired, revoked or mistyped)")
    assert "s.not-a-token" not in line


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "vault: VAULT_ADDR is not set (the store's address comes from the environment, never from the file)"),
        ({"VAULT_ADDR": "ADDR"}, "vault: VAULT_TOKEN is not set (e.g. export VAULT_TOKEN=$(vault print token) after vault login)"),
        ({"VAULT_ADDR": "ADDR", "VAULT_TOKEN": "TOKEN", "VAULT_SKIP_VERIFY": "true"}, "vault: VAULT_SKIP_VERIFY is set: refusing"),
        ({"VAULT_ADDR": "ftp://x", "VAULT_TOKEN": "TOKEN"}, "vault: VAULT_ADDR must start with https:// or http://"),
    ],
    ids=["no address", "no token", "skip verify", "not http"],
)
def test_connection_only_from_the_environment(bao: RunningBao, tmp_path: Path, environ: dict, message: str) -> None:
    seed(bao)
    environ = {k: v.replace("ADDR", bao.addr).replace("TOKEN", bao.root_token) for k, v in environ.items()}
    [line] = problems(write(tmp_path), environ)  # one line for the three references
    assert message in line


def test_skip_verify_only_when_allowed(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    environ = bao.env(VAULT_SKIP_VERIFY="1", RECONCILER_ALLOW_VAULT_SKIP_VERIFY="1")
    assert load(str(write(tmp_path)), environ=environ, allow_expired=True).instances["cache"].admin.secret.reveal() == ADMIN


def test_the_file_cannot_choose_the_address(tmp_path: Path) -> None:
    for key in ("addr", "address", "url", "token"):
        f = write(tmp_path, FILE.format(timeout=5).replace("field: admin}", f"field: admin, {key}: 'http://evil:8200'}}"))
        lines = problems(f, {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "x"})
        assert any(f"unknown key '{key}'" in x for x in lines), lines


def test_sealed_store(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    bao.seal()
    [line] = problems(write(tmp_path), bao.env())
    assert line.endswith(f"vault at {bao.addr} is sealed")


def test_unreachable_store(tmp_path: Path) -> None:
    from servers import free_port

    addr = f"http://127.0.0.1:{free_port()}"
    [line] = problems(write(tmp_path), {"VAULT_ADDR": addr, "VAULT_TOKEN": "t"})
    assert line.endswith(f"vault at {addr} can't be reached (connection refused)")


def test_a_password_in_the_address_is_never_shown(tmp_path: Path) -> None:
    # VAULT_ADDR=https://user:password@proxy/ (basic auth to a proxy in front of the store): the
    # address in messages hides the password, long or short.
    from servers import free_port

    port = free_port()
    for password in ("proxy-pass-7c1e9a3f5b", "pw9"):
        addr = f"http://proxyuser:{password}@127.0.0.1:{port}"
        r = Cli(tmp_path, env={"VAULT_ADDR": addr, "VAULT_TOKEN": "t" * 20})("validate", "--resolve-secrets", "-f", str(write(tmp_path)), expect=1)
        assert password not in r.out + r.err, r.err
        assert f"vault at http://proxyuser:***@127.0.0.1:{port} can't be reached (connection refused)" in r.err, r.err


def test_a_missing_ca_file_or_a_broken_address_is_one_line_at_the_reference(tmp_path: Path) -> None:
    f = write(tmp_path)
    for env, message in (
        ({"VAULT_ADDR": "https://127.0.0.1:1", "VAULT_CACERT": str(tmp_path / "no-ca.pem")},
         f"vault: VAULT_CACERT={tmp_path / 'no-ca.pem'} is not a file (the CA that signed the store's certificate)"),
        ({"VAULT_ADDR": "http://user:pw@[::1"}, "vault: VAULT_ADDR is not a URL (e.g. https://vault.example.com:8200)"),
    ):
        r = Cli(tmp_path, env={"VAULT_TOKEN": "t" * 20, **env})("validate", "--resolve-secrets", "-f", str(f), expect=1)
        [line] = r.err.strip().splitlines()
        assert line == f"{f}:6: instances.cache.admin.secret: admin secret of instance cache (vault:secret/infra/cache#admin): {message}"


def test_hung_store_fails_within_the_instance_deadline(bao: RunningBao, tmp_path: Path) -> None:
    seed(bao)
    f = write(tmp_path, timeout=1)
    bao.pause()
    try:
        started = time.monotonic()
        [line] = problems(f, bao.env())
        elapsed = time.monotonic() - started
    finally:
        bao.resume()
    assert line.endswith(f"vault at {bao.addr} did not answer within 1 s"), line
    assert elapsed < 4, f"took {elapsed:.1f} s with timeout_seconds: 1"


def test_a_store_trickling_its_answer_fails_within_the_deadline(tmp_path: Path) -> None:
    # A lying server: headers at once, then one byte of body every 0.2 s. requests' timeout is per
    # socket read, so each byte restarts it; the run must still end at the instance's deadline,
    # and the process must exit then (its read threads do not hold it).
    import socket

    from servers import free_port

    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        f = write(tmp_path, timeout=1)
        cli = Cli(tmp_path, env={"VAULT_ADDR": f"http://127.0.0.1:{port}", "VAULT_TOKEN": "t" * 20})
        started = time.monotonic()
        r = cli("validate", "--resolve-secrets", "-f", str(f), expect=1)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    [line] = r.err.strip().splitlines()
    assert line.endswith(f"vault at http://127.0.0.1:{port} did not answer within 1 s"), line
    assert elapsed < 15, f"took {elapsed:.1f} s with timeout_seconds: 1"


@pytest.mark.parametrize(
    "metadata, data",
    [({"version": "abc"}, {"token": CURRENT}), ({"version": [1]}, {"token": CURRENT}), ({"version": -5}, {"token": CURRENT}),
     ({"version": 1}, ["x"])],
    ids=["version-a-string", "version-a-list", "version-negative", "data-a-list"],
)
def test_a_store_lying_about_its_answer_is_one_line(tmp_path: Path, metadata: dict, data: object) -> None:
    # A server answering 200 with a KV v2 shape whose version number or data is of the wrong
    # kind: one line at the reference, not an internal error, and nothing taken from it.
    import http.server
    import json

    body = json.dumps({"data": {"data": data, "metadata": metadata}}).encode()

    class Lying(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        addr = f"http://127.0.0.1:{server.server_address[1]}"
        f = write(tmp_path)
        r = Cli(tmp_path, env={"VAULT_ADDR": addr, "VAULT_TOKEN": "t" * 20})("validate", "--resolve-secrets", "-f", str(f), expect=1)
    finally:
        server.shutdown()
        server.server_close()
    lines = r.err.strip().splitlines()
    assert lines and all(line.startswith(f"{f}:") for line in lines), r.err
    assert lines[0].endswith("vault: secret/infra/cache: the answer is not KV version 2 data (a version number and a map of fields)"), r.err


def test_each_path_is_read_once_concurrently(bao: RunningBao, tmp_path: Path) -> None:
    for i in range(20):
        bao.put(f"apps/a{i}", {"t1": f"token-{i}-one-aaaaaaaaaaaa", "t2": f"token-{i}-two-bbbbbbbbbbbb"})
    refs = [{"vault": {"path": f"apps/a{i}", "field": fld}} for i in range(20) for fld in ("t1", "t2")]
    session = secrets.Session(environ=bao.env())
    threads_before = threading.active_count()
    session.prefetch(refs)
    assert requests_made(session.ctx) == 20
    values = {session.resolve(r).secret.reveal() for r in refs}
    assert len(values) == 40 and requests_made(session.ctx) == 20
    assert threading.active_count() <= threads_before + 8


def test_plain_validate_reads_nothing(bao: RunningBao, tmp_path: Path) -> None:
    """No VAULT_* needed, no request made, even with a hung store behind VAULT_ADDR."""
    seed(bao)
    f = write(tmp_path)
    bao.pause()
    try:
        cli = Cli(tmp_path, env={"VAULT_ADDR": bao.addr, "VAULT_TOKEN": bao.root_token})
        started = time.monotonic()
        r = cli("validate", "-f", str(f), expect=0)
        assert time.monotonic() - started < 10 and "ok" in r.out
        r = Cli(tmp_path, env={}, inherit=False)("validate", "-f", str(f), expect=0)
    finally:
        bao.resume()
    r = Cli(tmp_path, env=bao.env())("validate", "--resolve-secrets", "-f", str(f), expect=0)
    assert "1 users, 2 tokens" in r.out
    bao.delete_versions("apps/orders", 2)  # the one before the latest
    r = Cli(tmp_path, env=bao.env())("validate", "--resolve-secrets", "-f", str(f), expect=1)
    assert len(r.err.strip().splitlines()) == 1 and "version 2 (version: -1) of secret/apps/orders was deleted" in r.err


# -- the store API rotation builds on --------------------------------------------------------------


def test_store_api_metadata_and_check_and_set(bao: RunningBao) -> None:
    store = kv.KvStore.from_environ(bao.env())
    assert store.metadata("secret", "apps/new") is None
    assert store.write("secret", "apps/new", {"token": OLDEST}, cas=0) == 1
    with pytest.raises(kv.CasConflict):
        store.write("secret", "apps/new", {"token": PREVIOUS}, cas=0)  # someone wrote version 1 first
    assert store.set_field("secret", "apps/new", "note", OTHER) == 2
    latest = store.read("secret", "apps/new")
    assert latest.version == 2 and dict(latest.data) == {"token": OLDEST, "note": OTHER}  # the other field kept
    meta = store.metadata("secret", "apps/new")
    assert meta is not None and meta.current_version == 2 and sorted(meta.versions) == [1, 2]
    assert meta.versions[1].created is not None and meta.versions[1].created <= meta.versions[2].created
    assert store.read("secret", "apps/new", 1).data["token"] == OLDEST
    bao.delete_versions("apps/new", 1)
    with pytest.raises(kv.VersionGone) as exc:
        store.read("secret", "apps/new", 1)
    assert exc.value.info.version == 1 and exc.value.info.deleted is not None
    assert OLDEST not in str(exc.value) and "version 1 of secret/apps/new was deleted" in str(exc.value)


def test_two_writers_racing_one_wins(bao: RunningBao) -> None:
    bao.put("apps/race", {"token": OLDEST, "keep": OTHER})
    a = kv.KvStore.from_environ(bao.env()).prepare_field("secret", "apps/race")
    b = kv.KvStore.from_environ(bao.env()).prepare_field("secret", "apps/race")
    assert a.commit("token", CURRENT) == 2
    with pytest.raises(kv.CasConflict) as exc:
        b.commit("token", PREVIOUS)
    assert "changed while this write was prepared" in str(exc.value) and PREVIOUS not in str(exc.value)
    assert dict(bao.get("apps/race")["data"]) == {"token": CURRENT, "keep": OTHER}


# -- token new --sink --------------------------------------------------------------------------------


def token_new(tmp_path: Path, bao: RunningBao, *argv: str, token: str | None = None) -> Result:
    return Cli(tmp_path, env={**bao.env(token=token), "RECONCILER_TODAY": "2026-11-23"})("token", "new", *argv)


def test_token_new_to_vault_keeps_other_fields_and_prints_only_the_entry(bao: RunningBao, tmp_path: Path) -> None:
    bao.put("apps/orders", {"token": OLDEST, "note": OTHER})
    r = token_new(tmp_path, bao, "app-orders", "--id", "2026-11", "--sink", "vault:apps/orders#token")
    assert r.code == 0, r.err
    stored = bao.get("apps/orders")
    token = stored["data"]["token"]
    assert stored["metadata"]["version"] == 2 and stored["data"]["note"] == OTHER and token != OLDEST
    assert token not in r.out + r.err and OTHER not in r.out + r.err
    assert f"  sha256: {secrets.sha256_hex(token)}" in r.out.splitlines()
    assert "- id: 2026-11" in r.out and "expires: 2027-02-21" in r.out
    assert "vault secret/apps/orders version 2 (field token)" in r.out
    assert "secret: {vault: {path: apps/orders, field: token}}" in r.out
    # A path that does not exist yet is created (check-and-set 0); another mount by MOUNT:PATH.
    bao.api("POST", "sys/mounts/kv2", {"type": "kv", "options": {"version": "2"}})
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:kv2:teams/app#password")
    assert r.code == 0, r.err
    assert secrets.sha256_hex(bao.get("teams/app", mount="kv2")["data"]["password"]) in r.out


def test_token_new_errors_are_one_line(bao: RunningBao, tmp_path: Path) -> None:
    bao.put("apps/orders", {"token": OLDEST})
    read_only = bao.token_with_policy("ro", READ_ONLY_POLICY)
    cases = {
        ("--sink", "vault:apps/orders"): "expected vault:PATH#FIELD",
        ("--sink", "s3:bucket"): "expected vault:PATH#FIELD",
        ("--sink", "vault:apps/orders#token", "--out", "x.token"): "give one of them",
    }
    for argv, message in cases.items():
        r = token_new(tmp_path, bao, "app", "--id", "x", *argv)
        assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and message in r.err, r.err
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:apps/orders#token", token=read_only)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and r.out == ""
    assert "permission denied: VAULT_TOKEN may not write secret/apps/orders" in r.err
    assert bao.get("apps/orders")["metadata"]["version"] == 1  # nothing written
    bao.seal()
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:apps/orders#token")
    assert r.code == 1 and r.err.strip() == f"reconciler: --sink vault:secret/apps/orders#token: vault at {bao.addr} is sealed"


def test_token_new_to_a_kv_version_1_mount_writes_nothing(bao: RunningBao, tmp_path: Path) -> None:
    """KV v1 takes a write to kv1/data/PATH as a key of that name: the token would sit where
    nothing reads it, and there is no version to check-and-set on. Refused first, nothing written."""
    bao.api("POST", "sys/mounts/kv1", {"type": "kv", "options": {"version": "1"}})
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:kv1:apps/x#token")
    assert r.code == 1 and r.out == "" and len(r.err.strip().splitlines()) == 1, r.err
    assert "kv1/ is a KV version 1 mount; tokens go to a KV version 2 mount (versions, check-and-set): nothing was written" in r.err
    listed = requests.request("LIST", f"{bao.addr}/v1/kv1/data/apps", headers={"X-Vault-Token": bao.root_token}, timeout=10)
    assert listed.status_code == 404, listed.text  # no key under data/ at all


def test_token_new_on_a_destroyed_latest_version_says_what_can_be_done(bao: RunningBao, tmp_path: Path) -> None:
    """A deleted latest version can be undeleted; a destroyed one can't: the message says which."""
    bao.put("apps/gone", {"token": OLDEST, "note": OTHER})
    bao.destroy_versions("apps/gone", 1)
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:apps/gone#token")
    assert r.code == 1 and "undelete" not in r.err, r.err
    assert ("version 1 of secret/apps/gone was destroyed, and its other fields with it: write the next version by hand "
            "(vault kv put -mount=secret apps/gone ...)") in r.err, r.err
    bao.put("apps/deleted", {"token": OLDEST})
    bao.delete_versions("apps/deleted", 1)
    r = token_new(tmp_path, bao, "app", "--id", "x", "--sink", "vault:apps/deleted#token")
    assert r.code == 1 and "undelete it first" in r.err, r.err


def test_token_new_processes_racing_never_overwrite(bao: RunningBao, tmp_path: Path) -> None:
    """Four `token new --sink` at once: each one that succeeded printed the hash of its own
    version; the others failed on check-and-set with one line; no version was overwritten."""
    bao.put("apps/race", {"token": OLDEST})
    env = {**bao.env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [sys.executable, "-m", "reconciler.cli", "token", "new", "app", "--id", "x", "--sink", "vault:apps/race#token"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(4)]
    results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    won = [out for code, out, _ in results if code == 0]
    lost = [err for code, _, err in results if code != 0]
    assert won
    for err in lost:
        assert len(err.strip().splitlines()) == 1 and "check-and-set" in err, err
    current = bao.get("apps/race")["metadata"]["version"]
    assert current == 1 + len(won)
    stored = {secrets.sha256_hex(bao.get("apps/race", v)["data"]["token"]) for v in range(2, current + 1)}
    printed = {line.split()[-1] for out in won for line in out.splitlines() if line.startswith("  sha256: ")}
    assert printed == stored


def test_hvac_is_loaded_only_when_a_store_is_read(bao: RunningBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_packaging import _probe

    seed(bao)
    f = write(tmp_path)
    for key, value in bao.env().items():
        monkeypatch.setenv(key, value)
    plain = _probe("validate", "-f", str(f), cwd=tmp_path)  # the form only: no store, no client library
    assert plain["rc"] == 0 and "hvac" not in plain["loaded"], plain
    resolved = _probe("validate", "--resolve-secrets", "-f", str(f), cwd=tmp_path)
    assert resolved["rc"] == 0 and "hvac" in resolved["loaded"], resolved


def test_the_vault_example_reads_from_a_store(bao: RunningBao) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "vault.yaml"
    assert example.read_text().startswith("# yaml-language-server: $schema=../schemas/desired-state.schema.json\n")
    assert load(str(example), environ={}, resolve_secrets=False).users  # plain validate: nothing read
    bao.put("infra/cache-prod", {"admin": "example-admin-token-0123456789abcdef"})
    bao.put("apps/orders", {"token": "example-orders-v1-0123456789abcdef"})
    bao.put("apps/orders", {"token": "example-orders-v2-0123456789abcdef"})
    bao.put("apps/reports", {"token": "example-reports-v1-0123456789abcdef"})
    state = load(str(example), environ={**bao.env(), "CACHE_NODE": "127.0.0.1:6379"})
    assert [t.id for t in state.users["app-orders"].tokens] == ["current", "previous"]
    assert [t.id for t in state.users["app-reports"].tokens] == ["current"]
    assert [a.id for a in state.users["app-reports"].absent_tokens] == ["previous"]
