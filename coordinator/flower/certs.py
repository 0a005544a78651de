"""Demo / test TLS material for the SuperLink: a private CA and a server certificate signed by it.

Written with the ``cryptography`` package (installed with flwr): ``ca.crt``, ``ca.key``, ``server.pem``,
``server.key``. The server certificate's subjectAltName lists every host sites will dial (DNS names
and IP addresses). For production, use your organisation's CA instead; the SuperLink only needs
ca.crt, server.pem and server.key in the certificate folder.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.files import write_atomic


CERT_FILES = ("ca.crt", "server.pem", "server.key")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def create_certificates(folder: Path, hosts: list[str], days: int = 365, overwrite: bool = False) -> list[Path]:
    """Create the CA and a server certificate valid for ``hosts``; returns the written paths."""
    if not hosts:
        raise ValueError("give at least one host name or IP address the sites will connect to")
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / n for n in ("ca.crt", "ca.key", "server.pem", "server.key")]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; use --overwrite or another folder")
    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedradval study CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    write_atomic(targets[0], ca_cert.public_bytes(pem), 0o644)
    write_atomic(targets[1], _key_pem(ca_key), 0o600)
    write_atomic(targets[2], server_cert.public_bytes(pem), 0o644)
    write_atomic(targets[3], _key_pem(server_key), 0o600)
    return targets


def check_certificate_folder(folder: Path) -> dict[str, Path]:
    """The three files the SuperLink needs; error names every missing one."""
    paths = {name: folder / name for name in CERT_FILES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"certificate folder {folder} lacks {', '.join(missing)}; create demo certificates with "
            f"`coordinator certs {folder} --host <name>` or use --insecure (no TLS, no site authentication)"
        )
    return paths
