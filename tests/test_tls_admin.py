"""TLS admin connections (live.connect) against real TLS servers: a good connection, and each
failure named with instance, node and what failed (unknown CA, expired certificate, hostname
mismatch, refused client certificate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Callable

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from servers import RunningServer, make_tls_material, new_key, no_retry, write_pair, x509_name

from reconciler.errors import LiveError
from reconciler.model import Instance, TLSConfig
from reconciler.providers.redis import read as live


def instance(srv: RunningServer, **tls: str | None) -> Instance:
    m = srv.tls_material
    assert m is not None
    opts = {"ca_file": str(m.ca_file), "cert_file": str(m.admin_cert), "key_file": str(m.admin_key), **tls}
    return Instance(name="pay", nodes=(srv.address,), tls=TLSConfig(**opts))


def connect_error(inst: Instance, address: str) -> str:
    with pytest.raises(LiveError) as exc:
        live.connect(inst, address, timeout=5)
    return str(exc.value)


def test_connects_and_reads_the_node(tls_server: RunningServer) -> None:
    inst = instance(tls_server)
    client = live.connect(inst, tls_server.address)
    try:
        assert client.execute_command("ACL", "WHOAMI") == "default"
    finally:
        client.close()
    state = live.read_node(inst, tls_server.address)
    assert state.tls and state.tls_auth_clients == "optional"
    # Only builds that map certificates to users know tls-auth-clients-user (Valkey 9, Redis 8.6):
    # "off" when the fixture does not set it; elsewhere CONFIG GET has no such parameter.
    assert state.tls_auth_clients_user == ("off" if tls_server.maps_certificates else None)


def test_server_name_is_what_the_certificate_is_checked_against(tls_server: RunningServer) -> None:
    client = live.connect(instance(tls_server, server_name="localhost"), tls_server.address)
    client.close()
    err = connect_error(instance(tls_server, server_name="cache.example.com"), tls_server.address)
    assert err.startswith(f"pay {tls_server.address}: TLS: hostname mismatch: the server certificate is not valid for cache.example.com"), err


def test_unknown_ca(tls_server: RunningServer, tmp_path: Path) -> None:
    other = make_tls_material(tmp_path / "other")
    err = connect_error(instance(tls_server, ca_file=str(other.ca_file)), tls_server.address)
    assert err.startswith(
        f"pay {tls_server.address}: TLS: unknown CA: the server certificate is not signed by a CA in {other.ca_file}"
    ), err


def test_expired_client_certificate_is_refused_by_the_server(tls_server: RunningServer) -> None:
    m = tls_server.tls_material
    assert m is not None
    cert, key = m.client_cert("reconciler-expired", expired=True)
    err = connect_error(instance(tls_server, cert_file=str(cert), key_file=str(key)), tls_server.address)
    assert err.startswith(f"pay {tls_server.address}: TLS: our client certificate {cert} has expired (not after "), err
    # ...and the server does refuse it (what the check before connecting saves us from).
    with pytest.raises(redis.ConnectionError, match="(?i)certificate expired|EOF occurred"):
        tls_server.client(cert=(cert, key), retry=no_retry()).ping()


def test_client_certificate_from_another_ca_is_refused(tls_server: RunningServer, tmp_path: Path) -> None:
    other = make_tls_material(tmp_path / "other")
    err = connect_error(
        instance(tls_server, cert_file=str(other.admin_cert), key_file=str(other.admin_key)), tls_server.address
    )
    assert err.startswith(f"pay {tls_server.address}: TLS: ") and f"refused our client certificate {other.admin_cert}" in err, err


def test_required_client_certificate_missing(server_factory: Callable[..., RunningServer]) -> None:
    srv = server_factory("valkey-9.1", tls=True, extra_config=["tls-auth-clients yes"])
    err = connect_error(instance(srv, cert_file=None, key_file=None), srv.address)
    assert err.startswith(f"pay {srv.address}: TLS: the server requires a client certificate (tls-auth-clients yes)"), err


def test_missing_files_are_named(tls_server: RunningServer, tmp_path: Path) -> None:
    err = connect_error(instance(tls_server, ca_file=str(tmp_path / "nope.pem")), tls_server.address)
    assert err == f"pay {tls_server.address}: TLS: tls.ca_file {tmp_path / 'nope.pem'} cannot be read"


def _expired_server_cert(srv: RunningServer, directory: Path) -> tuple[Path, Path]:
    m = srv.tls_material
    assert m is not None
    now = dt.datetime.now(dt.timezone.utc)
    key = new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509_name("localhost"))
        .issuer_name(m.ca_cert_obj.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(m.ca_key_obj, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    return write_pair(directory / "expired-server", cert, key)


def test_expired_server_certificate(tls_server: RunningServer, tmp_path: Path) -> None:
    cert, key = _expired_server_cert(tls_server, tmp_path / "expired")
    # Swap the server's certificate at runtime (servers reload TLS on CONFIG SET).
    tls_server.admin().execute_command("CONFIG", "SET", "tls-cert-file", str(cert), "tls-key-file", str(key))
    err = connect_error(instance(tls_server), tls_server.address)
    assert err.startswith(f"pay {tls_server.address}: TLS: the server certificate has expired"), err
