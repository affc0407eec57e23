"""Verify OAuth2 bearer access tokens (JWTs) against a JWKS and the dev key."""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError, JWTError

from vora.core.deadline import opener_with_deadlines, within
from vora.core.settings import Settings
from vora.http.errors import InvalidToken

log = logging.getLogger("vora.auth")

# The only algorithms VORA accepts, each with the key type that must sign it, so that
# neither `none` nor an HMAC keyed with a public key can ever verify.
ALGORITHM_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
DEV_KEY_ID = "vora-dev"
# The whole JWKS exchange, not each wait: requests whose token names an unknown kid wait on the reload.
JWKS_FETCH_SECONDS = 5.0
JWKS_MAX_BYTES = 1024 * 1024
# Claims without which a token is refused: python-jose skips the check of an absent aud or iss.
REQUIRED_CLAIMS = ("exp", "aud", "iss", "sub")
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
# The names spec/vora.yaml gives its security functions (x-tokenInfoFunc, x-scopeValidateFunc).
TOKEN_INFO_FUNC = "vora.auth.tokens.token_info"  # noqa: S105 - a function name, not a secret
SCOPE_VALIDATE_FUNC = "vora.auth.tokens.validate_scope"
# The order n of P-256's base point: an ES256 signature (r, s) also verifies as (r, n - s). Issuers
# (OpenSSL, Go, Java, Node) sign with either S, so VORA reads both as the low-S one (BIP 62's form).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ES256_SIGNATURE_BYTES = 64


class DuplicateMember(ValueError):
    """A JSON object names the same member twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing one that names a member twice (RFC 7519 section 4 lets a JWT be refused)."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMember(name)
            seen.add(name)
    return members


def _segment(raw: str) -> bytes:
    """Decode one base64url segment of a compact JWS, refusing any other alphabet."""
    if raw and not (raw.isascii() and raw.replace("-", "").replace("_", "").isalnum()):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def canonical_token(token: str, require_low_s: bool = False) -> str:
    """Return the one form of a JWT that VORA keys it by, refusing one python-jose would read leniently.

    Refused: a header or claims naming a member twice (python-jose keeps the last), a signature whose
    base64url has stray trailing bits, and (with require_low_s) a high-S ES256 signature. Otherwise a
    high-S ES256 signature (r, s), which verifies exactly as (r, n - s) does, is rewritten low-S, so
    that both encodings of one signature are one token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(description="The access token is not a well-formed JWT")
    try:
        header = json.loads(_segment(parts[0]), object_pairs_hook=_unique_members)
        json.loads(_segment(parts[1]), object_pairs_hook=_unique_members)
        signature = _segment(parts[2])
    except DuplicateMember as twice:
        raise InvalidToken(
            description=f"The access token's header or claims name {str(twice)[:64]!r} more than once"
        ) from None
    except (ValueError, RecursionError):  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidToken(description="The access token is not a well-formed JWT") from None
    if _b64url(signature) != parts[2]:
        raise InvalidToken(description="The access token's signature is not canonically encoded (base64url)")
    if not isinstance(header, dict) or header.get("alg") != "ES256" or len(signature) != ES256_SIGNATURE_BYTES:
        return token
    s = int.from_bytes(signature[32:], "big")
    if s <= P256_ORDER // 2:
        return token
    if require_low_s:
        raise InvalidToken(
            description="The access token's ES256 signature is not in canonical low-S form (VORA_OAUTH_REQUIRE_LOW_S)"
        )
    low_s = signature[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return f"{parts[0]}.{parts[1]}.{_b64url(low_s)}"


@dataclass(frozen=True)
class Principal:
    """The verified caller: who it is and which scopes its token grants."""

    subject: str
    scopes: frozenset[str]
    claims: dict[str, Any]


def public_jwk_from_pem(pem: bytes, key_id: str = DEV_KEY_ID) -> dict[str, Any]:
    """Return the public JWK of a PEM private key, for the dev key."""
    private = serialization.load_pem_private_key(pem, password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(private, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        algorithm = "ES256"
    else:
        raise ValueError("the dev key must be an RSA or P-256 EC private key")
    public = jwk.construct(public_pem, algorithm).to_dict()
    public.update({"kid": key_id, "alg": algorithm, "use": "sig"})
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in public.items()}


class KeySet:
    """Hold the trusted public keys, reloading a remote JWKS when an unknown `kid` appears."""

    def __init__(
        self,
        source: str,
        extra_keys: Iterable[dict[str, Any]] = (),
        refresh_interval: float = 30.0,
        fetch_seconds: float = JWKS_FETCH_SECONDS,
    ) -> None:
        self._source = source
        self._extra = list(extra_keys)
        self._refresh_interval = refresh_interval
        self._fetch_seconds = fetch_seconds
        self._lock = threading.Lock()
        self._keys: list[dict[str, Any]] = []
        self._loaded_at = float("-inf")

    @property
    def is_remote(self) -> bool:
        """Tell whether the JWKS comes from an http(s) URL."""
        return self._source.startswith(("http://", "https://"))

    def _load(self) -> list[dict[str, Any]]:
        if not self._source:
            return []
        raw = _http_get(self._source, self._fetch_seconds) if self.is_remote else Path(self._source).read_bytes()
        document = json.loads(raw)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError(f"{self._source} is not a JWKS: it has no 'keys' list")
        return [k for k in keys if isinstance(k, dict)]

    def refresh(self, force: bool = False) -> None:
        """Reload the JWKS unless it was loaded within the refresh interval."""
        with self._lock:
            if not force and time.monotonic() - self._loaded_at < self._refresh_interval:
                return
            try:
                self._keys = self._load()
            except (OSError, ValueError) as exc:
                log.warning("jwks load failed", extra={"fields": {"source": self._source, "error": str(exc)}})
                if force:
                    raise
            self._loaded_at = time.monotonic()

    def candidates(self, key_id: str | None, key_type: str) -> list[dict[str, Any]]:
        """Return the keys that may have signed a token with this `kid` and key type."""
        found = self._match(key_id, key_type)
        if not found and self.is_remote:
            self.refresh()
            found = self._match(key_id, key_type)
        return found

    def _match(self, key_id: str | None, key_type: str) -> list[dict[str, Any]]:
        usable = [k for k in (*self._keys, *self._extra) if k.get("kty") == key_type and k.get("use", "sig") == "sig"]
        if key_id is None:
            return usable
        return [k for k in usable if k.get("kid") == key_id]


_JWKS_OPENER = opener_with_deadlines()


def _http_get(url: str, seconds: float = JWKS_FETCH_SECONDS) -> bytes:
    """Fetch a JWKS within one deadline for the whole exchange, or raise OSError saying why not."""
    # A server trickling its answer would otherwise hold the reload, and every request waiting on it, for good.
    with within(seconds) as deadline:
        try:
            with _JWKS_OPENER.open(url, timeout=seconds) as response:
                body: bytes = response.read(JWKS_MAX_BYTES)
                return body
        except (OSError, http.client.HTTPException) as exc:
            if deadline.passed:
                raise TimeoutError(f"the JWKS did not arrive within {seconds:g} s") from exc
            if isinstance(exc, OSError):
                raise
            # An answer that is not HTTP, or one cut off, is a failed load like a refused connection.
            raise OSError(f"the JWKS answer is not HTTP: {type(exc).__name__}") from exc


class TokenVerifier:
    """Turn a bearer token into a Principal, or raise InvalidToken saying why."""

    # A client repeats its access token on every call; verifying an ES256/RS256 signature
    # costs about 100 us, so verified tokens are kept, keyed by the whole token (signature
    # included), never past their own exp.
    CACHE_SIZE = 10_000
    CACHE_SECONDS = 300.0

    def __init__(
        self,
        keys: KeySet,
        issuer: str,
        audience: str,
        leeway: float,
        max_lifetime: float = 86_400.0,
        require_low_s: bool = False,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._max_lifetime = max_lifetime
        self._require_low_s = require_low_s
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        """Build the verifier the settings describe, loading keys once up front."""
        extra = []
        if settings.dev_key is not None:
            extra.append(public_jwk_from_pem(settings.dev_key.read_bytes()))
        if not settings.oauth_jwks and not extra:
            raise ValueError("no token key is configured: set VORA_OAUTH_JWKS or VORA_DEV_KEY")
        keys = KeySet(settings.oauth_jwks, extra, settings.jwks_refresh_interval)
        if settings.oauth_jwks:
            keys.refresh(force=not keys.is_remote)
        return cls(
            keys,
            settings.oauth_issuer,
            settings.oauth_audience,
            settings.oauth_leeway,
            settings.oauth_max_token_lifetime,
            settings.oauth_require_low_s,
        )

    def verify(self, token: str) -> Principal:
        """Verify a token, or return the Principal of the same token verified moments ago."""
        now = time.time()
        cached = self._cached(token, now)
        if cached is not None:
            return cached
        # A token is cached under its canonical form, so that its high-S twin is the same entry, and
        # under the form its issuer sent (half of all ES256 tokens are high-S), so that the token's
        # own next request is one lookup: at most two entries per token, never a third spelling.
        canonical = canonical_token(token, self._require_low_s)
        if canonical != token:
            cached = self._cached(canonical, now)
            if cached is not None:
                return cached
        principal = self._verify(token)
        expires = min(float(principal.claims["exp"]), now + self.CACHE_SECONDS)
        with self._cache_lock:
            self._verified[canonical] = (principal, expires)
            if canonical != token:
                self._verified[token] = (principal, expires)
            while len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)
        return principal

    def _cached(self, token: str, now: float) -> Principal | None:
        """Return the Principal of a token verified moments ago, or None."""
        with self._cache_lock:
            cached = self._verified.get(token)
            if cached is not None and now < cached[1]:
                self._verified.move_to_end(token)
                return cached[0]
        return None

    def _verify(self, token: str) -> Principal:
        """Verify signature, algorithm, issuer, audience and lifetime of a token."""
        try:
            header = jwt.get_unverified_header(token)
        except (JOSEError, RecursionError):
            raise InvalidToken(description="The access token is not a well-formed JWT") from None
        if "crit" in header:
            # RFC 7515 section 4.1.11: VORA understands no JOSE extension, so it must refuse every one.
            raise InvalidToken(description="The access token's header names extensions (crit) VORA does not support")
        algorithm = header.get("alg")
        key_type = ALGORITHM_KEY_TYPES.get(algorithm) if isinstance(algorithm, str) else None
        if key_type is None:
            raise InvalidToken(
                description=f"The access token's algorithm must be one of {', '.join(ALGORITHM_KEY_TYPES)}"
            )
        kid = header.get("kid")
        keys = self._keys.candidates(kid if isinstance(kid, str) else None, key_type)
        if not keys:
            raise InvalidToken(description="The access token was signed by a key VORA does not trust")
        claims = self._decode(token, algorithm, keys)
        for name in NUMERIC_DATE_CLAIMS:
            if name in claims and not is_numeric_date(claims[name]):
                raise InvalidToken(description=f"The access token's {name} is not a NumericDate (a finite number)")
        self._check_lifetime(claims)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken(description="The access token has no subject (sub)")
        return Principal(subject, frozenset(scopes_of(claims)), claims)

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        """Refuse an exp further ahead than the longest lifetime VORA accepts, or an iat or nbf in the future."""
        now = time.time()
        if claims["exp"] > now + self._max_lifetime + self._leeway:
            raise InvalidToken(
                description=f"The access token's exp is more than {self._max_lifetime:g} s ahead "
                "(VORA_OAUTH_MAX_TOKEN_LIFETIME)"
            )
        if claims.get("iat", 0) > now + self._leeway:
            raise InvalidToken(description="The access token's iat is in the future")
        if any(claims.get(name, 0) < 0 for name in NUMERIC_DATE_CLAIMS):
            raise InvalidToken(description="The access token's exp, nbf or iat is before 1970")

    def _decode(self, token: str, algorithm: str, keys: list[dict[str, Any]]) -> dict[str, Any]:
        options: dict[str, Any] = {f"require_{name}": True for name in REQUIRED_CLAIMS}
        options["leeway"] = self._leeway
        last_error = "The access token's signature does not verify"
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    options=options,
                )
                return claims
            except ExpiredSignatureError:
                raise InvalidToken(description="The access token has expired") from None
            except JWTClaimsError as exc:
                raise InvalidToken(description=f"The access token's claims are not accepted: {exc}") from None
            except JWTError as exc:
                if "missing required key" in str(exc):
                    raise InvalidToken(description=f"The access token is incomplete: {exc}") from None
                continue
            except (TypeError, OverflowError):
                # python-jose applies int() to exp, nbf and iat: null, [], {} or an infinite number end here.
                raise InvalidToken(description="The access token's exp, nbf or iat is not a NumericDate") from None
            except RecursionError:
                raise InvalidToken(description="The access token is not a well-formed JWT") from None
        raise InvalidToken(description=last_error)


def is_numeric_date(value: Any) -> bool:
    """Tell whether a claim is a JSON number of seconds (RFC 7519 NumericDate): finite, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """Read the scopes of a token from `scope` (space separated) or `scp`."""
    raw = claims.get("scope") or claims.get("scp") or ""
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [item for item in raw if isinstance(item, str)]
    return []


def token_info(verifier: TokenVerifier, token: str) -> dict[str, Any]:
    """Verify a bearer token for Connexion (x-tokenInfoFunc, which the app binds to its own verifier)."""
    principal = verifier.verify(token)
    return {"sub": principal.subject, "scope": sorted(principal.scopes), "principal": principal}


def validate_scope(required_scopes: list[str], token_scopes: list[str]) -> bool:
    """Tell Connexion whether the token grants every required scope (x-scopeValidateFunc)."""
    return set(required_scopes).issubset(token_scopes)
