"""Make signing keys and JWKS documents for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def ec_private_pem() -> bytes:
    """Return a new P-256 private key as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def rsa_private_pem() -> bytes:
    """Return a new 2048-bit RSA private key as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(private_pem: bytes) -> bytes:
    """Return the public half of a private PEM key as PEM."""
    private = serialization.load_pem_private_key(private_pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_jwks(path: Path, keys: list[dict[str, Any]]) -> Path:
    """Write a JWKS document and return its path."""
    path.write_text(json.dumps({"keys": keys}))
    return path
