"""A team's own certificate authority and the server certificates it signs, for the TLS proxy in
front of the team server (`make team-server TLS=1`, the tests' hosts). A real deployment may use
Let's Encrypt's instead: the proxy only needs a certificate file and its key.

Files: the authority's `ca.pem` is public (each member's clients trust it); every `*.key` is
written 0600 and never printed."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHORITY_NAME = "mnist-pipeline team CA"
AUTHORITY_DAYS = 3650
# What browsers accept as a server certificate's longest life (CA/Browser Forum, since 2020).
SERVER_DAYS = 397


@dataclass(frozen=True)
class KeyPair:
    """A certificate (PEM, public) and its private key (PEM, 0600)."""

    certificate: Path
    key: Path


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Created 0600, never widened afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(pem)


def load(pair: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    return certificate, key


def make_authority(folder: Path, name: str = AUTHORITY_NAME, days: int = AUTHORITY_DAYS) -> KeyPair:
    """A new self-signed authority in `folder` (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = KeyPair(folder / "ca.pem", folder / "ca.key")
    write_private_key(pair.key, key)
    pair.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return pair


def issue(
    authority: KeyPair,
    folder: Path,
    names: list[str],
    *,
    stem: str = "server",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> KeyPair:
    """A server certificate signed by `authority` for `names` (host names or IP addresses; the
    first is its common name), valid from now for SERVER_DAYS unless told otherwise (the tests
    make expired ones). Writes `<stem>.pem` (with the authority's certificate after it, as a
    proxy sends the chain) and `<stem>.key`."""
    if not names:
        raise ValueError("a server certificate needs at least one host name or address")
    authority_certificate, authority_key = load(authority)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = not_before or now - datetime.timedelta(minutes=5)
    not_after = not_after or now + datetime.timedelta(days=SERVER_DAYS)
    alternative_names = [subject_alternative_name(name) for name in names]
    authority_key_id = authority_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(authority_key_id),
            critical=False,
        )
        .sign(authority_key, hashes.SHA256())
    )
    pair = KeyPair(folder / f"{stem}.pem", folder / f"{stem}.key")
    write_private_key(pair.key, key)
    chain = certificate.public_bytes(serialization.Encoding.PEM)
    chain += authority_certificate.public_bytes(serialization.Encoding.PEM)
    pair.certificate.write_bytes(chain)
    return pair


def subject_alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
