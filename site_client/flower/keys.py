"""SuperNode authentication key pair: ECDSA P-384 in OpenSSH format (what flower-supernode loads)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.files import write_atomic


def generate_keypair(private_path: Path, comment: str = "fedradval-site") -> Path:
    """Write ``private_path`` (mode 600) and ``private_path.pub``; refuses to overwrite an existing key."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it or choose another --out folder")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    write_atomic(private_path, private, mode=0o600)
    write_atomic(public_path, public + b" " + comment.encode() + b"\n", mode=0o644)
    return public_path
