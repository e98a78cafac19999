"""The test-server fixture itself, and the server behaviour the executor relies on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import redis
from servers import (
    CERT_USER_MAPPING,
    MATRIX,
    SPECS,
    TLS_MATRIX,
    RunningServer,
    ServerStartError,
    no_retry,
)

PASSWORD = "fixture-test-password-0123456789"


def _wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _client_ids(admin: redis.Redis, user: str) -> set[int]:
    return {int(c["id"]) for c in admin.client_list() if c.get("user") == user}


def _session(srv: RunningServer, user: str) -> tuple[redis.Redis, int]:
    """One held connection logged in as `user`, that never reconnects."""
    c = srv.client(user, PASSWORD, single_connection_client=True, retry=no_retry())
    assert c.acl_whoami() == user
    return c, int(c.client_id())


def _dropped(admin: redis.Redis, user: str, cid: int) -> bool:
    return _wait_until(lambda: cid not in _client_ids(admin, user))


# --- the fixture -------------------------------------------------------------


def test_server_answers_and_reports_version(server: RunningServer) -> None:
    spec = SPECS[server.id]
    c = server.admin()
    assert c.ping() is True
    assert c.acl_whoami() == "default"
    assert server.server == spec.server
    assert server.version.startswith(spec.major_minor + "."), server.version
    assert server.address == f"127.0.0.1:{server.port}"
    c.set("k", "v")
    assert c.get("k") == "v"


@pytest.mark.server
def test_embedded_valkey_starts(server_factory) -> None:
    srv = server_factory("valkey-9.1-embedded")
    assert srv.server == "valkey" and srv.version.startswith("9.1.")
    assert srv.admin().ping() is True


def test_fresh_server_defaults(server: RunningServer) -> None:
    c = server.admin()
    assert c.config_get("save")["save"] == ""
    assert c.config_get("appendonly")["appendonly"] == "no"
    default = c.acl_getuser("default")
    assert "on" in default["flags"] and "nopass" in default["flags"]


def test_stop_and_kill(server_factory) -> None:
    a = server_factory("redis-7.0")
    b = server_factory("redis-7.0")
    assert a.port != b.port
    a.stop()
    assert not a.alive()
    with pytest.raises(redis.ConnectionError):
        a.client(retry=no_retry()).ping()
    b.kill()
    assert not b.alive()


def test_aclfile_and_acl_save_survive_restart(server_factory) -> None:
    srv = server_factory("redis-7.0", aclfile=True)
    assert srv.aclfile is not None and srv.aclfile.read_text() == ""
    c = srv.admin()
    c.acl_setuser("keeper", enabled=True, passwords=["+" + PASSWORD], commands=["+ping"])
    c.execute_command("ACL", "SAVE")
    assert "user keeper" in srv.aclfile.read_text()
    srv.restart()
    assert "keeper" in srv.admin().acl_users()


def test_config_file_allows_config_rewrite(server_factory) -> None:
    srv = server_factory("redis-7.0", config_file=True)
    assert srv.config_file is not None and srv.config_file.exists()
    c = srv.admin()
    c.acl_setuser("rewritten", enabled=True, passwords=["+" + PASSWORD], commands=["+ping"])
    c.config_rewrite()
    assert "user rewritten" in srv.config_file.read_text()
    srv.restart()
    assert "rewritten" in srv.admin().acl_users()


def test_without_config_file_config_rewrite_fails(server_factory) -> None:
    srv = server_factory("redis-7.0")
    assert srv.config_file is None
    with pytest.raises(redis.ResponseError, match="(?i)config file"):
        srv.admin().config_rewrite()


def test_extra_config(server_factory) -> None:
    srv = server_factory("redis-7.0", extra_config=["maxmemory 10mb", ("maxclients", "123")])
    assert srv.admin().config_get("maxmemory")["maxmemory"] == str(10 * 1024 * 1024)
    assert srv.admin().config_get("maxclients")["maxclients"] == "123"


def test_startup_error_shows_log_tail(server_factory) -> None:
    with pytest.raises(ServerStartError) as info:
        server_factory("redis-7.0", extra_config=["no-such-directive yes"])
    assert "no-such-directive" in str(info.value)


# --- TLS ---------------------------------------------------------------------


def test_tls_admin_whoami(tls_server: RunningServer) -> None:
    assert tls_server.tls
    tls = tls_server.tls_config()
    assert tls is not None and all(Path(p).exists() for p in tls.values())
    assert tls_server.admin().acl_whoami() == "default"
    assert tls_server.admin().config_get("port")["port"] == "0"


def test_tls_rejects_plaintext(tls_server: RunningServer) -> None:
    plain = redis.Redis(host=tls_server.host, port=tls_server.port, socket_timeout=3, retry=no_retry())
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()


def test_tls_rejects_untrusted_or_expired_client_cert(server_factory) -> None:
    srv = server_factory("redis-7.0", tls=True)
    mat = srv.tls_material
    assert mat is not None
    for cert in (mat.client_cert("stranger", ca_signed=False), mat.client_cert("old", expired=True)):
        with pytest.raises(redis.ConnectionError):
            srv.client(cert=cert, retry=no_retry()).ping()
    assert srv.client(cert=mat.client_cert("fresh", ou="team", o="Acme")).ping()


# --- ACL facts the executor relies on ----------------------------------------


def _make_user(srv: RunningServer, name: str) -> None:
    ok = srv.admin().execute_command(
        "ACL", "SETUSER", name, "reset", "on", ">" + PASSWORD, "~*", "+@all"
    )
    assert ok in ("OK", b"OK", True)


def test_acl_deluser_drops_connections(server: RunningServer) -> None:
    _make_user(server, "u")
    admin = server.admin()
    c, cid = _session(server, "u")
    assert cid in _client_ids(admin, "u")
    assert admin.acl_deluser("u") == 1
    assert _dropped(admin, "u", cid)
    with pytest.raises(redis.ConnectionError):
        c.ping()


def test_acl_setuser_off_keeps_connections(server: RunningServer) -> None:
    _make_user(server, "u")
    admin = server.admin()
    c, cid = _session(server, "u")
    admin.execute_command("ACL", "SETUSER", "u", "off")
    time.sleep(0.1)
    assert cid in _client_ids(admin, "u")
    assert c.ping() is True and int(c.client_id()) == cid
    with pytest.raises(redis.AuthenticationError):
        server.client("u", PASSWORD, retry=no_retry()).ping()


def test_resetpass_keeps_connections(server: RunningServer) -> None:
    _make_user(server, "u")
    admin = server.admin()
    c, cid = _session(server, "u")
    admin.execute_command("ACL", "SETUSER", "u", "resetpass")
    time.sleep(0.1)
    assert cid in _client_ids(admin, "u")
    assert c.ping() is True and int(c.client_id()) == cid
    with pytest.raises(redis.AuthenticationError):
        server.client("u", PASSWORD, retry=no_retry()).ping()


def test_client_kill_user_drops_connections(server: RunningServer) -> None:
    _make_user(server, "u")
    admin = server.admin()
    c1, id1 = _session(server, "u")
    c2, id2 = _session(server, "u")
    killed = admin.execute_command("CLIENT", "KILL", "USER", "u")
    assert int(killed) == 2
    assert _dropped(admin, "u", id1) and _dropped(admin, "u", id2)
    with pytest.raises(redis.ConnectionError):
        c1.ping()
    assert admin.ping()


# --- certificate -> user mapping (Valkey 9, Redis 8.6) -----------------------------


@pytest.mark.server
@pytest.mark.parametrize("server_id", CERT_USER_MAPPING)
def test_cert_cn_maps_to_user(server_factory, server_id: str) -> None:
    srv = server_factory(server_id, cert_user_mapping=True)
    mat = srv.tls_material
    assert mat is not None
    admin = srv.admin()
    assert admin.acl_whoami() == "default"
    admin.execute_command("ACL", "SETUSER", "app", "reset", "on", "resetpass", "+acl", "+ping")
    as_app = srv.client(cert=mat.client_cert("app", ou="payments", o="Acme"))
    assert as_app.acl_whoami() == "app"
    nobody = srv.client(cert=mat.client_cert("nobody-by-that-name"))
    assert nobody.acl_whoami() == "default"
    assert srv.client().acl_whoami() == "default"


@pytest.mark.server
@pytest.mark.parametrize("server_id", [s for s in TLS_MATRIX if s not in CERT_USER_MAPPING])
def test_cert_user_mapping_refused_where_unsupported(server_factory, server_id: str) -> None:
    with pytest.raises(ServerStartError, match="tls-auth-clients-user"):
        server_factory(server_id, cert_user_mapping=True)


def test_matrix_is_the_designed_one() -> None:
    assert MATRIX == ("redis-6.2", "redis-7.0", "redis-8.0", "redis-8.6", "valkey-8.1", "valkey-9.1")
    assert set(TLS_MATRIX) <= set(MATRIX)
    assert all(SPECS[s].tls for s in TLS_MATRIX)
