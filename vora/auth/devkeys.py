"""Create the local development signing key and mint access tokens with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from vora.auth.tokens import DEV_KEY_ID
from vora.core.catalog import ALL_SCOPES


def create_dev_key(path: Path) -> bool:
    """Write a new P-256 private key to path unless one is there; tell whether it wrote."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return True


def mint_token(
    private_pem: bytes,
    subject: str,
    issuer: str,
    audience: str,
    scopes: Iterable[str] = ALL_SCOPES,
    lifetime: int = 3600,
    key_id: str = DEV_KEY_ID,
    algorithm: str = "ES256",
    now: float | None = None,
    extra_claims: dict[str, object] | None = None,
) -> str:
    """Sign an access token the way an OAuth2 server would."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes),
    }
    claims.update(extra_claims or {})
    token: str = jwt.encode(claims, private_pem.decode(), algorithm=algorithm, headers={"kid": key_id})
    return token
