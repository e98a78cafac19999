"""Certificate inventory: what a `cert_file` holds, checked against the declared subject and
the instance's CA. Runs at load time (file I/O); the planner only reads the results.

Uses `cryptography`. Chain checking walks issuer links by signature from the leaf (plus any
intermediates in the same file) to a certificate in `ca_file`; it checks what this tool can
know offline, not revocation.
"""

from __future__ import annotations

import hashlib
from datetime import date

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import files
from .errors import ReconcilerError
from .model import CertInfo

# Subject attributes a declared subject may name, by their usual short names.
SHORT_NAMES = {
    "CN": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
}
MAX_CHAIN = 8


class CertError(ReconcilerError):
    """A cert_file or ca_file cannot be used; the message names the file."""


MAX_PEM_BYTES = 1024 * 1024  # a chain of MAX_CHAIN certificates is a few KiB


def _read(path: str) -> bytes:
    """A certificate file, regular and bounded: a file naming /dev/zero or a FIFO (a pull request's,
    linted by plain validate) must not fill the memory or wait for ever."""
    try:
        data, _ = files.read_regular(path, MAX_PEM_BYTES)
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror}") from None
    except files.NotRegular:
        raise CertError(f"{path} is not a regular file") from None
    except files.TooLarge as exc:
        raise CertError(f"{path} is too large for a certificate file ({exc.size} bytes)") from None
    return data


def load_pem(path: str) -> list[x509.Certificate]:
    data = _read(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise CertError(f"{path} holds no PEM or DER certificate") from None
    if not certs:
        raise CertError(f"{path} holds no certificate")
    return certs


def _short(oid: x509.ObjectIdentifier) -> str:
    for short, known in SHORT_NAMES.items():
        if known == oid:
            return short
    return oid.dotted_string


def _attributes(name: x509.Name) -> tuple[tuple[str, str], ...]:
    return tuple((_short(a.oid), str(a.value)) for a in name)


def describe(cert: x509.Certificate, path: str = "") -> CertInfo:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth: bool | None = ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    except x509.ExtensionNotFound:
        client_auth = None
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        client_auth=client_auth,
        attributes=_attributes(cert.subject),
    )


def inspect(path: str) -> CertInfo:
    """The inventory of the first (leaf) certificate in `path`."""
    return describe(load_pem(path)[0], path)


def subject_mismatches(declared: list[tuple[str, str]], info: CertInfo) -> list[str]:
    """Every field the declared subject names must be in the certificate with that value
    (order does not matter; a field named twice must appear with each value)."""
    have: dict[str, list[str]] = {}
    for k, v in info.attributes:
        have.setdefault(k.upper(), []).append(v)
    out = []
    for key, value in declared:
        values = have.get(key.upper(), [])
        if value not in values:
            shown = ", ".join(f"{key}={v}" for v in values) if values else f"no {key}"
            out.append(f"{key}={value} (the certificate has {shown})")
    return out


def chains_to(path: str, ca_file: str) -> str | None:
    """None when the leaf of `path` chains by signature to a certificate in `ca_file`
    (intermediates may follow the leaf in `path`); else why not."""
    chain = load_pem(path)
    anchors = load_pem(ca_file)
    leaf, pool = chain[0], chain[1:]
    current = leaf
    for _ in range(MAX_CHAIN):
        for anchor in anchors:
            if _issued_by(current, anchor):
                return None
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None or parent is current:
            break
        current = parent
    return f"not issued by a CA in {ca_file} (issuer {current.issuer.rfc4514_string()})"


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False  # wrong key or an issuer that is not a CA certificate: not this issuer
    return True


def days_left(info: CertInfo, today: date) -> int:
    return (info.expires_on() - today).days


def check(
    cert_file: str, declared: list[tuple[str, str]] | None, ca_files: list[tuple[str, str]]
) -> tuple[CertInfo | None, list[str]]:
    """Inventory `cert_file` and check it against its declaration.

    declared: the parsed `subject` (None when it did not parse; that is reported elsewhere).
    ca_files: (instance name, ca_file) of every TLS instance the user is on.
    -> (inventory or None, problems). Expiry is not a problem here: drift reports it.
    """
    try:
        info = inspect(cert_file)
    except CertError as exc:
        return None, [str(exc)]
    problems: list[str] = []
    if declared is not None:
        wrong = subject_mismatches(declared, info)
        if wrong:
            problems.append(f"{cert_file} does not match the declared subject: {'; '.join(wrong)} (certificate subject {info.subject})")
    if info.client_auth is False:
        problems.append(f"{cert_file} is not a client certificate (extendedKeyUsage has no clientAuth)")
    seen: set[str] = set()
    for instance, ca_file in ca_files:
        if ca_file in seen:
            continue
        seen.add(ca_file)
        try:
            why = chains_to(cert_file, ca_file)
        except CertError as exc:
            problems.append(f"instance {instance} tls.ca_file: {exc}")
            continue
        if why:
            problems.append(f"{cert_file} does not chain to instance {instance}'s CA: {why}")
    return info, problems
