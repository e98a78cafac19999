"""Certificate inventory (reconciler.certs) and its checks at load time: subject fields in any
order, chain to the instance's CA, clientAuth, CN = username, expiry findings. No servers."""

from __future__ import annotations

import datetime as dt
import hashlib
from datetime import date
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from servers import TLSMaterial, make_tls_material, new_key, write_pair

from reconciler import certs, planner
from reconciler.config import load
from reconciler.errors import ConfigError
from reconciler.state import InstanceState, LiveState, LiveUser, NodeState


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls_material(tmp_path_factory.mktemp("other-ca"))


def issue(
    mat: TLSMaterial,
    stem: Path,
    attrs: list[tuple[x509.ObjectIdentifier, str]],
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    issuer: tuple[x509.Certificate, object] | None = None,
    ca: bool = False,
    days: int = 30,
) -> tuple[Path, x509.Certificate, object]:
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    signer_cert, signer_key = issuer or (mat.ca_cert_obj, mat.ca_key_obj)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(o, v) for o, v in attrs]))
        .issuer_name(signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = b.sign(signer_key, hashes.SHA256())
    path, _ = write_pair(stem, cert, key)
    return path, cert, key


FULL = [
    (NameOID.COUNTRY_NAME, "US"),
    (NameOID.STATE_OR_PROVINCE_NAME, "CA"),
    (NameOID.LOCALITY_NAME, "Berlin"),
    (NameOID.ORGANIZATION_NAME, "Acme"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "payments"),
    (NameOID.COMMON_NAME, "app-billing"),
]


def test_inspect_reads_the_inventory(ca: TLSMaterial, tmp_path: Path) -> None:
    path, cert, _ = issue(ca, tmp_path / "a", FULL, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    info = certs.inspect(str(path))
    assert info.subject == "CN=app-billing,OU=payments,O=Acme,L=Berlin,ST=CA,C=US"
    assert info.issuer == "CN=reconciler test CA,O=reconciler tests"
    assert info.serial == format(cert.serial_number, "x")
    assert info.sha256 == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert info.not_before == cert.not_valid_before_utc and info.not_after == cert.not_valid_after_utc
    assert info.client_auth is True
    assert dict(info.attributes)["L"] == "Berlin"


def test_subject_matches_in_any_order_and_names_each_wrong_field(ca: TLSMaterial, tmp_path: Path) -> None:
    path, _, _ = issue(ca, tmp_path / "a", FULL)
    info = certs.inspect(str(path))
    assert certs.subject_mismatches([("C", "US"), ("CN", "app-billing"), ("ST", "CA"), ("L", "Berlin"), ("OU", "payments"), ("O", "Acme")], info) == []
    assert certs.subject_mismatches([("CN", "app-billing")], info) == []  # only the fields the file names
    wrong = certs.subject_mismatches([("CN", "app-billing"), ("O", "Other"), ("L", "Paris")], info)
    assert wrong == ["O=Other (the certificate has O=Acme)", "L=Paris (the certificate has L=Berlin)"]
    path2, _, _ = issue(ca, tmp_path / "b", [(NameOID.COMMON_NAME, "x")])
    assert certs.subject_mismatches([("OU", "payments")], certs.inspect(str(path2))) == ["OU=payments (the certificate has no OU)"]


def test_chain_to_ca_including_an_intermediate(ca: TLSMaterial, other_ca: TLSMaterial, tmp_path: Path) -> None:
    leaf, _, _ = issue(ca, tmp_path / "leaf", [(NameOID.COMMON_NAME, "app")])
    assert certs.chains_to(str(leaf), str(ca.ca_file)) is None
    why = certs.chains_to(str(leaf), str(other_ca.ca_file))
    assert why is not None and "not issued by a CA in" in why
    # leaf <- intermediate <- root: the file holds leaf + intermediate
    _, inter, inter_key = issue(ca, tmp_path / "inter", [(NameOID.COMMON_NAME, "intermediate")], ca=True)
    leaf2, leaf_cert, _ = issue(ca, tmp_path / "leaf2", [(NameOID.COMMON_NAME, "app")], issuer=(inter, inter_key))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM) + inter.public_bytes(serialization.Encoding.PEM))
    assert certs.chains_to(str(bundle), str(ca.ca_file)) is None
    assert certs.chains_to(str(leaf2), str(ca.ca_file)) is not None  # intermediate missing
    # same issuer name, different key: the signature decides
    assert certs.chains_to(str(leaf), str(other_ca.ca_file)) is not None


def test_check_eku_and_unreadable(ca: TLSMaterial, tmp_path: Path) -> None:
    server_only, _, _ = issue(ca, tmp_path / "s", [(NameOID.COMMON_NAME, "app")], eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    info, problems = certs.check(str(server_only), [("CN", "app")], [("pay", str(ca.ca_file))])
    assert info is not None and info.client_auth is False
    assert problems == [f"{server_only} is not a client certificate (extendedKeyUsage has no clientAuth)"]
    no_eku, _, _ = issue(ca, tmp_path / "n", [(NameOID.COMMON_NAME, "app")])
    assert certs.check(str(no_eku), [("CN", "app")], [("pay", str(ca.ca_file))])[1] == []  # EKU absent: any use
    info, problems = certs.check(str(tmp_path / "missing.pem"), [("CN", "app")], [])
    assert info is None and problems == [f"cannot read {tmp_path / 'missing.pem'}: No such file or directory"]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert certs.check(str(junk), None, [])[1] == [f"{junk} holds no PEM or DER certificate"]


def test_plain_validate_never_blocks_on_a_cert_file(tmp_path: Path) -> None:
    # Plain validate is what lints a fork's pull request: its file may name a FIFO (a read would
    # wait for a writer for ever), /dev/zero (would fill the memory) or a huge file as cert_file.
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "huge.pem").write_bytes(b"x" * (2 * 1024 * 1024))
    entries = "".join(f'      - {{subject: "CN=app-billing", cert_file: {name}}}\n' for name in ("fifo", "/dev/zero", "huge.pem"))
    f = tmp_path / "access.yaml"
    f.write_text("version: 1\ninstances:\n  pay: {nodes: ['127.0.0.1:1']}\nusers:\n  app-billing:\n    certificates:\n" + entries)
    try:
        p = subprocess.run([sys.executable, "-m", "reconciler.cli", "validate", "-f", str(f)], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("validate blocked reading a cert_file")
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        f"{f}:7: users.app-billing.certificates[0].cert_file: {tmp_path / 'fifo'} is not a regular file",
        f"{f}:8: users.app-billing.certificates[1].cert_file: /dev/zero is not a regular file",
        f"{f}:9: users.app-billing.certificates[2].cert_file: {tmp_path / 'huge.pem'} is too large for a certificate file (2097152 bytes)",
    ], p.stderr


YAML = """\
version: 1
policies: {{expiry_warning_days: 14}}
instances:
  pay:
    nodes: ["127.0.0.1:6390"]
    tls: {{ca_file: {ca}, cert_file: {ca_dir}/admin.pem, key_file: {ca_dir}/admin.key}}
    admin: {{username: default}}
    auth_mode: none
    tls_client_auth: {{required: optional, user_field: CN}}
users:
  app-billing:
    acl: "~billing:* +@all"
    certificates:
{certs}
"""


def write_yaml(tmp_path: Path, ca: TLSMaterial, certs_yaml: str) -> Path:
    admin = ca.directory / "admin.pem"
    if not admin.exists():
        admin.write_bytes(ca.admin_cert.read_bytes())
        (ca.directory / "admin.key").write_bytes(ca.admin_key.read_bytes())
    f = tmp_path / "access.yaml"
    f.write_text(YAML.format(ca=ca.ca_file, ca_dir=ca.directory, certs=certs_yaml))
    return f


def test_load_attaches_inventory(ca: TLSMaterial, tmp_path: Path) -> None:
    cert, _ = ca.client_cert("app-billing", "payments", "Acme", c="US")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "C=US,O=Acme,CN=app-billing,OU=payments", cert_file: {cert}}}\n')
    state = load(str(f))
    c = state.users["app-billing"].certificates[0]
    assert c.info is not None and c.info.subject == "CN=app-billing,OU=payments,O=Acme,C=US"
    assert c.info.sha256 == certs.inspect(str(cert)).sha256


def test_load_rejects_subject_mismatch_with_file_line_and_path(ca: TLSMaterial, tmp_path: Path) -> None:
    cert, _ = ca.client_cert("app-billing", "payments", "Acme", c="US")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "CN=app-billing,OU=ops,O=Acme", cert_file: {cert}}}\n')
    with pytest.raises(ConfigError) as exc:
        load(str(f))
    text = str(exc.value)
    assert text.startswith(f"{f}:14: users.app-billing.certificates[0].cert_file: {cert} does not match the declared subject: ")
    assert "OU=ops (the certificate has OU=payments)" in text


def test_load_rejects_cert_of_another_ca_and_cn_not_username(ca: TLSMaterial, other_ca: TLSMaterial, tmp_path: Path) -> None:
    foreign, _ = other_ca.client_cert("app-billing")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "CN=app-billing", cert_file: {foreign}}}\n      - {{subject: "CN=app-other"}}\n')
    with pytest.raises(ConfigError) as exc:
        load(str(f))
    lines = str(exc.value).splitlines()
    assert any("does not chain to instance pay's CA: not issued by a CA in" in line for line in lines), lines
    assert any(
        line.startswith(f"{f}:15: users.app-billing.certificates[1].subject: CN 'app-other' must equal the username 'app-billing'")
        for line in lines
    ), lines


def _live(cert_user: str = "CN") -> LiveState:
    node = NodeState(
        address="127.0.0.1:6390",
        server="valkey",
        version="9.1.2",
        users={"default": LiveUser("default", True, True, (), "~* &* +@all")},
        command_table="valkey-9.1.2",
        tls_auth_clients="optional",
        tls_auth_clients_user=cert_user,
        tls=True,
    )
    return LiveState(instances={"pay": InstanceState("pay", (node,))})


def test_expired_and_expiring_certificates_are_findings(ca: TLSMaterial, tmp_path: Path) -> None:
    expired, _ = ca.client_cert("app-billing", expired=True)
    soon, _ = ca.client_cert("app-billing", days=5)
    later, _ = ca.client_cert("app-billing", days=200)
    f = write_yaml(
        tmp_path,
        ca,
        "".join(f'      - {{subject: "CN=app-billing", cert_file: {p}}}\n' for p in (expired, soon, later)),
    )
    state = load(str(f))  # expiry is not a load error: drift reports it
    today = dt.datetime.now(dt.timezone.utc).date()
    plan = planner.plan(state, _live(), today=today)
    kinds = [(x.kind, x.user) for x in plan.findings if x.kind.startswith("cert_")]
    assert kinds == [("cert_expired", "app-billing"), ("cert_expiring", "app-billing")]
    msgs = [x.message for x in plan.findings if x.kind.startswith("cert_")]
    assert "expired on" in msgs[0] and str(expired) in msgs[0]
    assert "expires in 5 days" in msgs[1] or "expires in 4 days" in msgs[1]


def test_certificate_only_user_is_resetpass_never_nopass(ca: TLSMaterial, tmp_path: Path) -> None:
    cert, _ = ca.client_cert("app-billing")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "CN=app-billing", cert_file: {cert}}}\n')
    plan = planner.plan(load(str(f)), _live(), today=date.today())
    (change,) = plan.instances[0].nodes[0].changes
    args = change.setuser_args()
    assert "resetpass" in args and "nopass" not in args and not any(a.startswith((">", "#")) for a in args)
    assert change.note == "certificate-only (resetpass)"
    assert change.certificates and "expires" in change.certificates[0]
    # auth_mode: none + certificate users + default nopass: a warning
    assert any(x.kind == "nopass" and "fall back" in x.message for x in plan.findings)


def test_plan_sets_tls_client_auth_and_refuses_a_user_without_mapping(ca: TLSMaterial, tmp_path: Path) -> None:
    cert, _ = ca.client_cert("app-billing")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "CN=app-billing", cert_file: {cert}}}\n')
    plan = planner.plan(load(str(f)), _live(cert_user="off"), today=date.today())
    (cc,) = plan.instances[0].nodes[0].config
    assert (cc.parameter, cc.before, cc.after) == ("tls-auth-clients-user", "off", "CN")
    assert plan.has_changes


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mtls.yaml"


def test_mtls_example_with_its_certificate_files(tmp_path: Path) -> None:
    """examples/mtls.yaml with its commented cert_file lines switched on and the certificates it
    names generated: validate passes and the inventory (rotation: one subject, two files) loads."""
    from reconciler.cli import main

    mat = make_tls_material(tmp_path / "material")
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    (certs_dir / "ca.pem").write_bytes(mat.ca_file.read_bytes())
    admin, admin_key = mat.client_cert("reconciler", o="Acme", c="US")
    (certs_dir / "reconciler.pem").write_bytes(admin.read_bytes())
    (certs_dir / "reconciler.key").write_bytes(admin_key.read_bytes())
    for year, days in (("2026", 20), ("2027", 400)):
        cert, _ = mat.client_cert("app-billing", "payments", "Acme", c="US", days=days)
        (certs_dir / f"app-billing-{year}.pem").write_bytes(cert.read_bytes())
    text = EXAMPLE.read_text()
    on = (
        text.replace("        # cert_file:", "        cert_file:")
        .replace("      # - subject:", "      - subject:")
        .replace("      #   cert_file:", "        cert_file:")
    )
    assert on.count("cert_file: certs/app-billing-") == 2
    f = tmp_path / "mtls.yaml"
    f.write_text(on)
    assert main(["validate", "-f", str(f)]) == 0
    state = load(str(f))
    billing = state.users["app-billing"].certificates
    assert [c.info.subject for c in billing] == ["CN=app-billing,OU=payments,O=Acme,C=US"] * 2
    assert billing[0].info.sha256 != billing[1].info.sha256
    # A certificate of another subject in place of the new one: a validation error.
    other, _ = mat.client_cert("app-ledger", "payments", "Acme", c="US")
    (certs_dir / "app-billing-2027.pem").write_bytes(other.read_bytes())
    with pytest.raises(ConfigError, match="does not match the declared subject: CN=app-billing"):
        load(str(f))


def test_user_with_tokens_and_certificates_where_certificates_cannot_map(ca: TLSMaterial, tmp_path: Path) -> None:
    cert, _ = ca.client_cert("app-billing")
    f = write_yaml(tmp_path, ca, f'      - {{subject: "CN=app-billing", cert_file: {cert}}}\n    tokens:\n      - {{id: t1, sha256: "{"a" * 64}"}}\n')
    state = load(str(f))
    node = _live().instances["pay"].nodes[0]
    from dataclasses import replace

    old = replace(node, server="valkey", version="8.1.1", command_table="valkey-8.1.1", tls_auth_clients_user=None)
    plan = planner.plan(state, LiveState(instances={"pay": InstanceState("pay", (old,))}), today=date.today())
    found = [x for x in plan.findings if x.kind == "cert_unmapped"]
    assert [x.user for x in found] == ["app-billing"] and "only its tokens log in" in found[0].message
    (change,) = plan.instances[0].nodes[0].changes
    assert change.hashes == ("a" * 64,) and "resetpass" not in change.setuser_args()
    # On Valkey 9.1 with the mapping: no such finding
    plan = planner.plan(state, _live(), today=date.today())
    assert not [x for x in plan.findings if x.kind == "cert_unmapped"]
