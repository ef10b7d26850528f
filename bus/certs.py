"""A lab certificate authority: a CA, the broker's server certificate, client certificates.

For a lab or a small site without a PKI. Keys are ECDSA P-256 (fast on a Pi, accepted
by mosquitto and OpenSSL), written with mode 0600; certificates are PEM. The server
certificate names ``localhost``, ``127.0.0.1``, ``::1`` and the given host names or
addresses (the names clients put in their ``mqtts://`` URL must be among them).

Layout under the TLS folder (``<dir>/tls``)::

    ca.crt   ca.key               the CA (ca.key never leaves this folder)
    server.crt   server.key       the broker's
    clients/<name>.crt   .key     optional client certificates
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Where :func:`init_ca` puts things."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def client_cert(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.key"


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facewire lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # services start unattended
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*DEFAULT_HOSTS, *hosts]):  # in order, no repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise ValueError(f"not a host name or address: {host!r}") from None
            names.append(x509.DNSName(host))
    return names


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    alt: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks a little behind
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not ca:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt:
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def init_ca(
    root: Path,
    hosts: Iterable[str] = (),
    clients: Iterable[str] = (),
    *,
    days: int = 825,
    force: bool = False,
) -> TlsFiles:
    """Make a CA, a server certificate for ``hosts`` (and loopback) and client
    certificates under ``root``. Refuses to replace an existing CA unless ``force``.

    825 days: the longest validity Apple's TLS clients accept for a server certificate.
    """
    files = TlsFiles(root)
    if files.ca_key.exists() and not force:
        raise FileExistsError(
            f"{files.ca_key} exists: a new CA would invalidate every certificate it signed "
            "(use --force to replace it, or add certificates with the existing one)"
        )
    alt = _alt_names(hosts)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("facewire lab CA")
    ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, days * 2, ca=True)
    _write_key(files.ca_key, ca_key)
    _write_cert(files.ca_cert, ca_cert)
    server_key = ec.generate_private_key(ec.SECP256R1())
    first = next((h for h in hosts if h), "localhost")
    server = _issue(
        _name(first),
        server_key,
        ca_name,
        ca_key,
        days,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt=alt,
    )
    _write_key(files.server_key, server_key)
    _write_cert(files.server_cert, server)
    for name in clients:
        client_cert(root, name, days=days)
    return files


def client_cert(root: Path, name: str, *, days: int = 825) -> tuple[Path, Path]:
    """A client certificate (CN ``name``) signed by the CA under ``root``: (cert, key)."""
    if not name or any(c.isspace() or c in "/\\:" for c in name) or name.startswith("."):
        raise ValueError(f"not a usable client certificate name: {name!r}")
    files = TlsFiles(root)
    if not files.ca_key.exists():
        raise FileNotFoundError(f"{files.ca_key}: no CA here (run `facewire certs init` first)")
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key}: not an EC key made by facewire certs")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        _name(name), key, ca_cert.subject, ca_key, days, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _write_key(files.client_key(name), key)
    _write_cert(files.client_cert(name), cert)
    return files.client_cert(name), files.client_key(name)


def describe(path: Path) -> str:
    """One line about a certificate: subject, names, expiry."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ", ".join(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = ""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    until = cert.not_valid_after_utc.date().isoformat()
    return f"{path.name}: CN={cn!s}{f' names={names}' if names else ''} until {until}"
