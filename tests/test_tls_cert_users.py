"""Certificate users end to end through the CLI, on real servers.

Valkey 9.1 and Redis 8.6 (TLS, tls-auth-clients-user; CERT_USER_MAPPING): a certificate-only user is applied with resetpass
(never nopass); a client presenting its certificate is that user without AUTH; no certificate,
or one whose CN is no user, falls back to `default` -- which the file protects with a token, so
such a client can do nothing; AUTH with any password as the user fails; rotation with two
certificates keeps a reconnecting client working; an expired cert_file is a drift finding.
Redis 7.0 / 8.0 and Valkey 8.1 (TLS, no mapping): a certificate-only user is a plan error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from servers import CERT_USER_MAPPING, RunningServer, no_retry
from support.cli import Cli, Result

from reconciler import certs
from reconciler.plan import Plan

ADMIN = "admin-plaintext-5d0e7b3c9a1f2468e0c2a4b6"

FILE = """\
version: 1
policies: {{expiry_warning_days: 14}}
instances:
  pay:
    nodes: [{{env: T_NODE}}]
    tls: {{ca_file: {ca}, cert_file: {admin_cert}, key_file: {admin_key}}}
    admin: {{username: default, secret: {{env: T_ADMIN}}}}
    tls_client_auth: {{required: optional, user_field: CN}}
users:
  default:                 # not nopass: a client without a matching certificate can do nothing
    acl: "~* &* +@all"
    tokens:
      - {{id: admin, secret: {{env: T_ADMIN}}}}
  app-billing:
    acl: "~billing:* +@all -@dangerous"
    certificates:
{certs}"""


WRITE_COMMANDS = {"acl|setuser", "acl|deluser", "acl|save", "config|set", "config|rewrite", "client|kill"}


class Env:
    def __init__(self, srv: RunningServer, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any):
        self.srv, self.tmp, self.capsys = srv, tmp, capsys
        self.mat = srv.tls_material
        assert self.mat is not None
        self.cli = Cli(tmp, capsys=capsys)
        self.file = self.cli.file
        monkeypatch.setenv("T_NODE", srv.address)
        monkeypatch.setenv("T_ADMIN", ADMIN)
        monkeypatch.delenv("RECONCILER_TODAY", raising=False)
        srv.admin().execute_command("ACL", "SETUSER", "default", f">{ADMIN}")

    def writes(self) -> int:
        """Write commands the server has executed so far (its own INFO commandstats)."""
        stats = self.admin().info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k.split("_", 1)[1] in WRITE_COMMANDS)

    def cert(self, cn: str = "app-billing", **kw: Any) -> tuple[Path, Path]:
        return self.mat.client_cert(cn, "payments", "Acme", c="US", **kw)

    def write(self, *cert_files: Path) -> None:
        lines = "".join(
            f'      - subject: "CN=app-billing,OU=payments,O=Acme,C=US"\n        cert_file: {p}\n' for p in cert_files
        )
        self.file.write_text(
            FILE.format(ca=self.mat.ca_file, admin_cert=self.mat.admin_cert, admin_key=self.mat.admin_key, certs=lines)
        )

    def run(self, *argv: str) -> Result:
        return self.cli(*argv)

    def apply(self) -> Result:
        return self.cli.apply()

    def admin(self) -> redis.Redis:
        return self.srv.client("default", ADMIN, cert=(self.mat.admin_cert, self.mat.admin_key), retry=no_retry())


@pytest.fixture(params=CERT_USER_MAPPING)
def env(request: pytest.FixtureRequest, server_factory: Callable[..., RunningServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Env:
    # TLS without tls-auth-clients-user: the plan has to turn the mapping on.
    return Env(server_factory(request.param, tls=True), tmp_path, monkeypatch, capsys)


def refused(client: redis.Redis) -> str:
    with pytest.raises(redis.RedisError) as exc:
        client.set("billing:x", "1")
    return str(exc.value)


def test_certificate_only_user_logs_in_with_its_certificate_only(env: Env) -> None:
    cert = env.cert()
    env.write(cert[0])
    code, out, err = env.run("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 2, err
    assert "~ config tls-auth-clients-user" in out and "off -> CN (CONFIG SET)" in out
    assert "+ user app-billing" in out and "certificate-only (resetpass)" in out
    assert "certificate: CN=app-billing,OU=payments,O=Acme,C=US  (sha256:" in out

    # Never nopass: not in the SETUSER the plan makes (apply sends exactly these), not in the live ACL.
    code, out, err = env.run("plan", "-f", str(env.file), "--format", "json")
    changes = [c for i in Plan.from_json(json.loads(out)).instances for n in i.nodes for c in n.changes]
    billing = [c.setuser_args() for c in changes if c.user == "app-billing"]
    assert len(billing) == 1 and "resetpass" in billing[0]
    assert not any("nopass" in (w.lower() for w in c.setuser_args()) for c in changes), changes

    code, out, err = env.apply()
    assert code == 0, err
    admin = env.admin()
    assert admin.config_get("tls-auth-clients-user") == {"tls-auth-clients-user": "CN"}
    line = next(x for x in admin.execute_command("ACL", "LIST") if x.split()[1] == "app-billing")
    assert " nopass" not in line and "#" not in line and ">" not in line, line
    getuser = admin.acl_getuser("app-billing")
    assert "nopass" not in getuser["flags"] and getuser["passwords"] == []

    # Its certificate logs in as the user, no AUTH; its permissions hold.
    app = env.srv.client(cert=cert, retry=no_retry())
    assert app.execute_command("ACL", "WHOAMI") == "app-billing"
    assert app.set("billing:1", "x") is True
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.get("orders:1")

    # No certificate, or a certificate whose CN is no user: `default`, which needs a token.
    assert "Authentication required" in refused(env.srv.client(retry=no_retry(), protocol=2))
    stranger = env.mat.client_cert("nobody-here", "payments", "Acme", c="US")
    assert "Authentication required" in refused(env.srv.client(cert=stranger, retry=no_retry(), protocol=2))

    # AUTH with any password as that user fails, with and without its certificate.
    for password in ("", "x", ADMIN, "app-billing"):
        with pytest.raises(redis.AuthenticationError):
            env.srv.client("app-billing", password or "p", retry=no_retry()).ping()
    with pytest.raises(redis.AuthenticationError):
        app.execute_command("AUTH", "app-billing", "anything")

    code, out, err = env.run("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out + err
    code, out, _ = env.run("drift", "-f", str(env.file))
    assert code == 0, out


def test_rotation_with_two_certificates_keeps_a_reconnecting_client_working(env: Env) -> None:
    old = env.cert(days=20)
    new = env.cert(days=400)
    old_fp, new_fp = certs.inspect(str(old[0])).sha256, certs.inspect(str(new[0])).sha256
    assert old_fp != new_fp
    env.write(old[0])
    code, out, err = env.apply()
    assert code == 0, err
    assert f"Certificate inventory recorded in {env.tmp / 'access.inventory.json'}" in out
    assert env.writes() > 0  # the count sees the first apply's writes
    app = env.srv.client(cert=old)  # default retry: reconnects after CLIENT KILL
    assert app.execute_command("ACL", "WHOAMI") == "app-billing"

    # Step 1: both certificates in the file. Same CN: the servers need nothing, the inventory grows.
    env.write(old[0], new[0])
    code, out, err = env.run("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 2, out + err
    assert f"certificate + CN=app-billing,OU=payments,O=Acme,C=US  (sha256:{new_fp[:8]}…, expires " in out
    assert "certificate inventory only" in out and "+ user" not in out and "config" not in out
    assert "Plan: 0 to add, 0 to change, 0 to destroy. Certificate inventory: 1 change to record." in out
    before = env.writes()
    code, out, err = env.apply()
    assert code == 0, err
    assert env.writes() == before  # no server command for an inventory change
    env.admin().execute_command("CLIENT", "KILL", "USER", "app-billing")
    assert app.execute_command("ACL", "WHOAMI") == "app-billing"  # reconnected with the old one
    moved = env.srv.client(cert=new)
    assert moved.execute_command("ACL", "WHOAMI") == "app-billing"

    # Step 2: the apps moved; the old certificate leaves the file. Servers unchanged, the plan says so.
    env.write(new[0])
    code, out, err = env.run("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 2, out + err
    assert f"certificate - CN=app-billing,OU=payments,O=Acme,C=US  (sha256:{old_fp[:8]}…, expires " in out
    assert "+ user" not in out and "~ user app-billing" in out
    before = env.writes()
    code, out, err = env.apply()
    assert code == 0 and env.writes() == before, err
    code, out, err = env.run("plan", "-f", str(env.file), "--detailed-exitcode")
    assert code == 0, out + err
    recorded = json.loads((env.tmp / "access.inventory.json").read_text())
    assert [e["sha256"] for e in recorded["instances"]["pay"]["app-billing"]] == [new_fp]
    env.admin().execute_command("CLIENT", "KILL", "USER", "app-billing")
    assert moved.execute_command("ACL", "WHOAMI") == "app-billing"


def test_expired_and_expiring_cert_files_are_drift_findings(env: Env) -> None:
    good = env.cert()
    env.write(good[0])
    assert env.apply()[0] == 0
    expired = env.cert(expired=True)
    soon = env.cert(days=3)
    env.write(expired[0], soon[0])
    code, out, err = env.run("drift", "-f", str(env.file))
    assert code == 2, out + err
    assert "certificate app-billing CN=app-billing,OU=payments,O=Acme,C=US (sha256:" in out
    assert f"{expired[0]}) expired on " in out
    assert f"{soon[0]}) expires in " in out and "warning at 14" in out
    code, out, err = env.run("drift", "-f", str(env.file), "--format", "json")
    kinds = sorted(f["kind"] for f in json.loads(out)["instances"][0]["findings"])
    assert kinds == ["cert_expired", "cert_expiring"]
    # The server itself refuses the expired certificate.
    with pytest.raises(redis.ConnectionError):
        env.srv.client(cert=expired, retry=no_retry()).ping()


def pay_file(srv: RunningServer, users: str, *, auth_mode: str = "", client_auth: str = "optional") -> str:
    """Instance `pay` on `srv` over TLS (admin certificate), tls_client_auth mapping CNs unless
    `client_auth` is "", then `users` (YAML under `users:`, or "{}")."""
    m = srv.tls_material
    assert m is not None
    text = (
        "version: 1\ninstances:\n  pay:\n"
        f'    nodes: ["{srv.address}"]\n'
        f"    tls: {{ca_file: {m.ca_file}, cert_file: {m.admin_cert}, key_file: {m.admin_key}}}\n"
    )
    if auth_mode:
        text += f"    auth_mode: {auth_mode}\n"
    if client_auth:
        text += f"    tls_client_auth: {{required: {client_auth}, user_field: CN}}\n"
    return text + ("users: {}\n" if users == "{}" else "users:\n" + users)


BILLING_BY_CERT = """\
  app-billing:
    acl: "~billing:* +get"
    certificates: [{{subject: "{subject}"{cert_file}}}]
"""


def billing(subject: str, cert_file: Path | None = None) -> str:
    return BILLING_BY_CERT.format(subject=subject, cert_file=f", cert_file: {cert_file}" if cert_file else "")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys=capsys)


@pytest.mark.parametrize("server_id", CERT_USER_MAPPING)
def test_default_nopass_with_certificate_users_is_a_warning(server_id: str, server_factory: Callable[..., RunningServer], cli: Cli) -> None:
    srv = server_factory(server_id, cert_user_mapping=True)
    assert srv.tls_material is not None
    cert, _ = srv.tls_material.client_cert("app-billing")
    cli.write(pay_file(srv, billing("CN=app-billing", cert)))
    code, out, err = cli("plan", "-f", str(cli.file))
    assert code == 0, err
    assert "! finding: user default is nopass: anyone can connect without a token; clients without a matching certificate fall back to it" in out


@pytest.mark.parametrize("server_id", ["redis-7.0", "redis-8.0", "valkey-8.1"])
def test_certificate_only_user_refused_where_certificates_cannot_map(
    server_id: str, server_factory: Callable[..., RunningServer], cli: Cli
) -> None:
    srv = server_factory(server_id, tls=True)
    cli.write(pay_file(srv, billing("CN=app-billing,O=Acme"), client_auth=""))
    before = srv.admin().execute_command("ACL", "LIST")
    for argv in (["plan", "-f", str(cli.file)], ["apply", "-f", str(cli.file), "--auto-approve"]):
        code, out, err = cli(*argv)
        assert code == 1
        assert (
            f"pay {srv.address}: user app-billing: certificate-only user, but {srv.server.replace('redis', 'Redis').replace('valkey', 'Valkey')} "
            f"{srv.version} can't map client certificates to users (needs Valkey >= 9.0 or Redis >= 8.6 with TLS)"
        ) in err, err
    assert srv.admin().execute_command("ACL", "LIST") == before


@pytest.mark.parametrize("server_id", ["redis-7.0", "valkey-8.1"])
def test_tls_client_auth_user_field_needs_restart_where_unsupported(
    server_id: str, server_factory: Callable[..., RunningServer], cli: Cli
) -> None:
    srv = server_factory(server_id, tls=True)
    code, out, err = cli.plan(pay_file(srv, "{}", auth_mode="none", client_auth="true"))
    assert code == 2, err
    assert "~ config tls-auth-clients" in out and "optional -> yes (CONFIG SET)" in out
    assert "! finding (error): [" in out and "needs restart with a server that supports tls-auth-clients-user CN" in out
    code, out, err = cli.apply()
    assert code == 0, err
    assert srv.admin().config_get("tls-auth-clients") == {"tls-auth-clients": "yes"}
    # Required now: a client without a certificate is refused at the TLS layer.
    with pytest.raises(redis.ConnectionError):
        srv.client(retry=no_retry()).ping()


@pytest.mark.parametrize("server_id", CERT_USER_MAPPING)
def test_tls_client_auth_survives_restart_with_a_config_file(
    server_id: str, server_factory: Callable[..., RunningServer], cli: Cli
) -> None:
    srv = server_factory(server_id, tls=True, config_file=True)
    cli.write(pay_file(srv, "{}", auth_mode="none"))
    code, out, err = cli("plan", "-f", str(cli.file))
    assert code == 0 and "off -> CN (CONFIG SET; CONFIG REWRITE)" in out, out + err
    assert cli.apply().code == 0
    assert srv.config_file is not None and "tls-auth-clients-user CN" in srv.config_file.read_text()
    srv.restart()
    assert srv.admin().config_get("tls-auth-clients-user") == {"tls-auth-clients-user": "CN"}
    assert cli.plan().code == 0
