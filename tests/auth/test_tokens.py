"""Tests of bearer-token verification: every hostile token kind is refused with a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from flask.testing import FlaskClient
from jose import jws, jwt

from tests.harness.assertions import assert_no_traceback
from tests.harness.keys import ec_private_pem, public_pem
from tests.harness.tokens import AUDIENCE, ISSUER, RSA_KID, TokenFactory
from vora.auth.devkeys import mint_token
from vora.auth.tokens import P256_ORDER, KeySet, TokenVerifier, public_jwk_from_pem, scopes_of
from vora.core.catalog import ALL_SCOPES
from vora.core.settings import Settings
from vora.http.errors import InvalidToken

Provision = Callable[[str, list[str]], None]


def b64(data: dict[str, Any]) -> str:
    """Encode a JSON object as unpadded base64url."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    """Return valid claims for alice, with overrides."""
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "scope": " ".join(ALL_SCOPES)}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def get_identity(client: FlaskClient, token: str) -> Any:
    """Call GET /identity with a bearer token."""
    return client.get("/vora/identity", headers={"Authorization": f"Bearer {token}"})


def assert_invalid_token(response: Any, fragment: str) -> None:
    """Check a 401 with an invalid_token challenge and a message naming the problem."""
    assert response.status_code == 401
    body = response.get_json()
    assert fragment in body["message"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="vora"')
    assert 'error="invalid_token"' in challenge


@pytest.fixture
def alice(provision: Provision) -> str:
    """Provision alice with one identity."""
    provision("alice", ["910111000"])
    return "alice"


class TestAccepted:
    """Tokens VORA must accept."""

    def test_es256_dev_token(self, client: FlaskClient, make_token: TokenFactory, alice: str) -> None:
        """An ES256 token signed by the dev key is accepted."""
        assert get_identity(client, make_token(alice)).status_code == 200

    def test_rs256_token_from_jwks(self, client: FlaskClient, rsa_key_pem: bytes, alice: str) -> None:
        """An RS256 token signed by a key in the JWKS is accepted."""
        token = jwt.encode(claims(), rsa_key_pem.decode(), algorithm="RS256", headers={"kid": RSA_KID})
        assert get_identity(client, token).status_code == 200

    def test_scp_list_grants_scopes(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """Scopes given as an `scp` list are honoured."""
        token = mint_token(
            dev_key_pem, alice, ISSUER, AUDIENCE, (), extra_claims={"scp": ["scope.vora.identities"], "scope": None}
        )
        assert get_identity(client, token).status_code == 200

    def test_scopes_of_reads_scope_then_scp(self) -> None:
        """`scope` is split on spaces; `scp` may be a list or a string."""
        assert scopes_of({"scope": "a b"}) == ["a", "b"]
        assert scopes_of({"scp": ["a", 3, "b"]}) == ["a", "b"]
        assert scopes_of({"scp": "a"}) == ["a"]
        assert scopes_of({}) == []


class TestRefused:
    """Every hostile token kind gets a 401 with an invalid_token challenge."""

    def test_malformed(self, client: FlaskClient) -> None:
        """A bearer value that is not a JWT is refused."""
        assert_invalid_token(get_identity(client, "not-a-jwt"), "well-formed")

    def test_expired(self, client: FlaskClient, make_token: TokenFactory, alice: str) -> None:
        """A token past its exp is refused."""
        token = make_token(alice, now=time.time() - 7200, lifetime=60)
        assert_invalid_token(get_identity(client, token), "expired")

    def test_not_yet_valid(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token whose nbf is in the future is refused."""
        token = mint_token(dev_key_pem, alice, ISSUER, AUDIENCE, extra_claims={"nbf": int(time.time()) + 600})
        assert_invalid_token(get_identity(client, token), "nbf")

    def test_without_exp(self, client: FlaskClient, rsa_key_pem: bytes, alice: str) -> None:
        """A token with no exp is refused."""
        token = jwt.encode(claims(exp=None), rsa_key_pem.decode(), algorithm="RS256", headers={"kid": RSA_KID})
        assert_invalid_token(get_identity(client, token), "exp")

    def test_badly_signed(self, client: FlaskClient, alice: str) -> None:
        """A token signed by an untrusted key under the dev key's kid is refused."""
        token = mint_token(ec_private_pem(), alice, ISSUER, AUDIENCE)
        assert_invalid_token(get_identity(client, token), "signature")

    def test_tampered_payload(self, client: FlaskClient, make_token: TokenFactory, alice: str) -> None:
        """A valid token whose payload was changed after signing is refused."""
        header, _, signature = make_token(alice).split(".")
        forged = f"{header}.{b64(claims(sub='mallory'))}.{signature}"
        assert_invalid_token(get_identity(client, forged), "signature")

    def test_alg_none(self, client: FlaskClient, alice: str) -> None:
        """An unsigned token (alg none) is refused."""
        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
        assert_invalid_token(get_identity(client, token), "algorithm")

    def test_hs256_keyed_with_the_public_key(self, client: FlaskClient, rsa_key_pem: bytes, alice: str) -> None:
        """An HS256 token whose HMAC key is the server's public RSA key is refused."""
        public = public_pem(rsa_key_pem).decode()
        header = {"alg": "HS256", "typ": "JWT", "kid": RSA_KID}

        signing_input = f"{b64(header)}.{b64(claims())}"
        mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        assert_invalid_token(get_identity(client, token), "algorithm")

    def test_rs256_header_on_an_ec_key(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token that claims RS256 under the EC dev key's kid finds no usable key."""
        header = {"alg": "RS256", "typ": "JWT", "kid": "vora-dev"}
        token = f"{b64(header)}.{b64(claims())}.AAAA"
        assert_invalid_token(get_identity(client, token), "does not trust")

    def test_wrong_issuer(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token from another issuer is refused."""
        token = mint_token(dev_key_pem, alice, "https://other.invalid/", AUDIENCE)
        assert_invalid_token(get_identity(client, token), "issuer")

    def test_wrong_audience(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token for another audience is refused."""
        token = mint_token(dev_key_pem, alice, ISSUER, "someone-else")
        assert_invalid_token(get_identity(client, token), "audience")

    def test_unknown_kid(self, client: FlaskClient, rsa_key_pem: bytes, alice: str) -> None:
        """A token naming a key id the JWKS does not have is refused."""
        token = jwt.encode(claims(), rsa_key_pem.decode(), algorithm="RS256", headers={"kid": "rotated-away"})
        assert_invalid_token(get_identity(client, token), "does not trust")

    @pytest.mark.parametrize("missing", ["sub", "aud", "iss", "exp"])
    def test_without_a_required_claim(self, client: FlaskClient, rsa_key_pem: bytes, alice: str, missing: str) -> None:
        """A token lacking sub, aud, iss or exp is refused, whatever else it carries."""
        token = jwt.encode(claims(**{missing: None}), rsa_key_pem.decode(), algorithm="RS256", headers={"kid": RSA_KID})
        assert_invalid_token(get_identity(client, token), missing)

    @pytest.mark.parametrize("critical", [["exp"], ["b64"], [], "x"])
    def test_with_a_crit_header(self, client: FlaskClient, rsa_key_pem: bytes, alice: str, critical: Any) -> None:
        """A token whose JOSE header has crit, whatever it names, is refused (RFC 7515 section 4.1.11)."""
        token = jwt.encode(
            claims(), rsa_key_pem.decode(), algorithm="RS256", headers={"kid": RSA_KID, "crit": critical}
        )
        assert_invalid_token(get_identity(client, token), "crit")

    @pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
    @pytest.mark.parametrize(
        "literal", ["null", "[]", "{}", '"Infinity"', "1e400", "-1e400", "NaN", "true", '"99999999999"']
    )
    def test_numeric_date_of_the_wrong_type(
        self,
        client: FlaskClient,
        rsa_key_pem: bytes,
        alice: str,
        claim: str,
        literal: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A signed token whose exp, nbf or iat is not a finite number is a 401, never a 500 with a traceback."""
        placeholder = "__numeric_date__"
        payload = json.dumps(claims(**{claim: placeholder})).replace(f'"{placeholder}"', literal)
        token = jws.sign(payload.encode(), rsa_key_pem.decode(), headers={"kid": RSA_KID}, algorithm="RS256")
        assert_invalid_token(get_identity(client, token), "")
        assert_no_traceback(caplog)

    def test_deeply_nested_header(self, client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
        """A token whose header nests thousands of JSON arrays is refused as malformed, not a 500."""
        header = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
        assert_invalid_token(get_identity(client, f"{header}.{b64(claims())}.AAAA"), "well-formed")
        assert_no_traceback(caplog)

    def test_deeply_nested_signed_payload(
        self, client: FlaskClient, rsa_key_pem: bytes, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A correctly signed token whose claims nest thousands of JSON arrays is refused, not a 500."""
        payload = json.dumps(claims()).replace('"scope"', '"deep": ' + "[" * 5000 + "]" * 5000 + ', "scope"')
        token = jws.sign(payload.encode(), rsa_key_pem.decode(), headers={"kid": RSA_KID}, algorithm="RS256")
        assert_invalid_token(get_identity(client, token), "well-formed")
        assert_no_traceback(caplog)

    def test_non_bearer_scheme(self, client: FlaskClient, make_token: TokenFactory) -> None:
        """A token sent with another scheme counts as no token."""
        response = client.get("/vora/identity", headers={"Authorization": f"Basic {make_token()}"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="vora"'

    def test_bearer_without_value(self, client: FlaskClient) -> None:
        """An Authorization header without a value is an invalid_request."""
        response = client.get("/vora/identity", headers={"Authorization": "Bearer"})
        assert response.status_code == 401
        assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


TRICKLE_SECONDS = 20.0  # how long a trickling JWKS server keeps sending, a byte every TRICKLE_PAUSE
TRICKLE_PAUSE = 0.2


class JwksHandler(BaseHTTPRequestHandler):
    """Serve the JWKS held by the server object, counting requests; or misbehave as the server's mode says."""

    def do_GET(self) -> None:
        """Answer with the current JWKS, a byte at a time (trickle), or with something that is not HTTP (garbled)."""
        server: Any = self.server
        server.hits += 1
        if server.mode == "garbled":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            return
        if server.mode == "trickle":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            ends = time.monotonic() + TRICKLE_SECONDS
            while time.monotonic() < ends and not server.stopping.is_set():
                self.wfile.write(b"x")  # raises once the client has cut the connection
                self.wfile.flush()
                server.stopping.wait(TRICKLE_PAUSE)
            return
        body = json.dumps({"keys": server.keys}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Stay quiet."""


@pytest.fixture
def jwks_server() -> Iterator[Any]:
    """Serve a JWKS over HTTP on loopback."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    server.keys = []
    server.hits = 0
    server.mode = "serve"
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


class TestRemoteJwks:
    """A JWKS fetched from an http(s) URL."""

    def test_refreshes_on_unknown_kid_after_rotation(self, jwks_server: Any) -> None:
        """A token signed by a newly published key verifies once the JWKS is reloaded."""
        old, new = ec_private_pem(), ec_private_pem()
        jwks_server.keys = [public_jwk_from_pem(old, "old")]
        url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
        verifier = TokenVerifier(KeySet(url, refresh_interval=0.0), ISSUER, AUDIENCE, 0)
        assert verifier.verify(mint_token(old, "alice", ISSUER, AUDIENCE, key_id="old")).subject == "alice"
        jwks_server.keys = [public_jwk_from_pem(new, "new")]
        assert verifier.verify(mint_token(new, "bob", ISSUER, AUDIENCE, key_id="new")).subject == "bob"
        assert jwks_server.hits == 2

    def test_caches_between_refreshes(self, jwks_server: Any) -> None:
        """Unknown kids within the refresh interval do not hammer the JWKS URL."""
        key = ec_private_pem()
        jwks_server.keys = [public_jwk_from_pem(key, "k1")]
        url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
        verifier = TokenVerifier(KeySet(url, refresh_interval=3600.0), ISSUER, AUDIENCE, 0)
        for _ in range(5):
            verifier.verify(mint_token(key, "alice", ISSUER, AUDIENCE, key_id="k1"))
            with pytest.raises(InvalidToken):
                verifier.verify(mint_token(key, "alice", ISSUER, AUDIENCE, key_id="unknown"))
        assert jwks_server.hits == 1

    def test_a_trickling_jwks_server_holds_the_reload_no_longer_than_its_deadline(self, jwks_server: Any) -> None:
        """A JWKS answer sent a byte at a time fails the reload at its deadline, and the token is refused then."""
        jwks_server.mode = "trickle"
        url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
        verifier = TokenVerifier(KeySet(url, refresh_interval=0.0, fetch_seconds=1.0), ISSUER, AUDIENCE, 0)
        started = time.monotonic()
        with pytest.raises(InvalidToken):
            verifier.verify(mint_token(ec_private_pem(), "alice", ISSUER, AUDIENCE, key_id="k1"))
        # Each wait is short (a byte every 0.2 s), so only a deadline on the whole exchange ends it this soon.
        assert time.monotonic() - started < TRICKLE_SECONDS / 4

    def test_a_jwks_answer_that_is_not_http_is_a_failed_reload(self, jwks_server: Any) -> None:
        """A JWKS server answering something that is not HTTP fails the reload: the token is refused, nothing raises."""
        jwks_server.mode = "garbled"
        url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
        verifier = TokenVerifier(KeySet(url, refresh_interval=0.0), ISSUER, AUDIENCE, 0)
        with pytest.raises(InvalidToken):
            verifier.verify(mint_token(ec_private_pem(), "alice", ISSUER, AUDIENCE, key_id="k1"))
        assert jwks_server.hits == 1


class TestConfiguration:
    """How the verifier is configured."""

    def test_refuses_to_start_without_any_key(self, settings: Settings) -> None:
        """With neither VORA_OAUTH_JWKS nor VORA_DEV_KEY, building the verifier fails."""
        with pytest.raises(ValueError, match="VORA_OAUTH_JWKS or VORA_DEV_KEY"):
            TokenVerifier.from_settings(settings.with_changes(oauth_jwks="", dev_key=None))

    def test_refuses_a_jwks_file_that_is_not_a_jwks(self, settings: Settings, tmp_path: Path) -> None:
        """A JWKS file without a keys list fails at start, not at the first request."""
        bad = tmp_path / "jwks.json"
        bad.write_text("{}")
        with pytest.raises(ValueError, match="not a JWKS"):
            TokenVerifier.from_settings(settings.with_changes(oauth_jwks=str(bad)))


class TestCache:
    """Verified tokens are remembered, never past their expiry."""

    def test_same_token_is_verified_once(self, jwks_server: Any) -> None:
        """A repeated token is served from the cache: the JWKS is not needed again."""
        key = ec_private_pem()
        jwks_server.keys = [public_jwk_from_pem(key, "k1")]
        url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks.json"
        verifier = TokenVerifier(KeySet(url, refresh_interval=0.0), ISSUER, AUDIENCE, 0)
        token = mint_token(key, "alice", ISSUER, AUDIENCE, key_id="k1")
        first = verifier.verify(token)
        jwks_server.keys = []  # were the token checked again, its key would now be unknown
        assert verifier.verify(token) is first

    def test_cached_token_expires_with_its_exp(self, dev_key_pem: bytes) -> None:
        """A cached token stops being accepted once its exp passes."""
        verifier = TokenVerifier(KeySet("", [public_jwk_from_pem(dev_key_pem)]), ISSUER, AUDIENCE, 0)
        issued = time.time() - 59
        token = mint_token(dev_key_pem, "alice", ISSUER, AUDIENCE, now=issued, lifetime=60)
        assert verifier.verify(token).subject == "alice"
        # The awaited event is the token's own exp: wait exactly until it has passed.
        time.sleep(max(0.0, int(issued) + 61 - time.time()) + 0.05)  # python-jose compares whole seconds
        with pytest.raises(InvalidToken, match="expired"):
            verifier.verify(token)

    def test_tampered_copy_of_a_cached_token_is_refused(self, dev_key_pem: bytes) -> None:
        """The cache is keyed by the whole token, so a changed signature is verified and refused."""
        verifier = TokenVerifier(KeySet("", [public_jwk_from_pem(dev_key_pem)]), ISSUER, AUDIENCE, 0)
        token = mint_token(dev_key_pem, "alice", ISSUER, AUDIENCE)
        verifier.verify(token)
        header, payload, signature = token.split(".")
        forged = f"{header}.{payload}.{signature[:-4]}AAAA"
        with pytest.raises(InvalidToken):
            verifier.verify(forged)


def es256_signature(token: str) -> tuple[str, int, int]:
    """Split an ES256 token into its signed part and its signature's r and s."""
    signed, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return signed, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def with_s(token: str, s: int) -> str:
    """Return the token with its ES256 signature's s replaced (n - s forges the other valid form)."""
    signed, r, _ = es256_signature(token)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signed}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


def signed_es256(dev_key_pem: bytes, payload: str, header: str | None = None) -> str:
    """Sign raw header and payload JSON texts with the dev key, exactly as given (duplicates kept)."""
    header = header or json.dumps({"alg": "ES256", "typ": "JWT", "kid": "vora-dev"})
    signing_input = (
        base64.urlsafe_b64encode(header.encode()).rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    )
    key = serialization.load_pem_private_key(dev_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


class TestHostileButSigned:
    """Tokens signed for real by a trusted key, that a lenient reader would take for more than they are."""

    def test_exp_of_1e308_is_refused(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token whose exp is 1e308 (it would never expire) is refused."""
        payload = json.dumps(claims()).replace('"exp": ', '"exp": 1e308, "was": ')
        assert_invalid_token(get_identity(client, signed_es256(dev_key_pem, payload)), "exp is more than")

    def test_exp_beyond_the_longest_lifetime_is_refused(
        self, client: FlaskClient, dev_key_pem: bytes, alice: str
    ) -> None:
        """A token that expires two days from now is over the default 24 h lifetime and refused."""
        token = mint_token(dev_key_pem, alice, ISSUER, AUDIENCE, lifetime=2 * 86_400)
        assert_invalid_token(get_identity(client, token), "VORA_OAUTH_MAX_TOKEN_LIFETIME")

    def test_a_day_long_token_is_accepted(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token with exactly the default longest lifetime still works."""
        token = mint_token(dev_key_pem, alice, ISSUER, AUDIENCE, lifetime=86_400)
        assert get_identity(client, token).status_code == 200

    def test_iat_in_the_future_is_refused(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token issued an hour from now is refused."""
        token = mint_token(dev_key_pem, alice, ISSUER, AUDIENCE, extra_claims={"iat": int(time.time()) + 3600})
        assert_invalid_token(get_identity(client, token), "iat is in the future")

    def test_nbf_in_the_far_future_is_refused(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A token not valid before 1e300 is refused."""
        payload = json.dumps(claims(nbf="__nbf__")).replace('"__nbf__"', "1e300")
        assert_invalid_token(get_identity(client, signed_es256(dev_key_pem, payload)), "nbf")

    @pytest.mark.parametrize("claim", ["sub", "exp", "aud", "scope"])
    def test_duplicate_claim_is_refused(self, client: FlaskClient, dev_key_pem: bytes, alice: str, claim: str) -> None:
        """A signed token naming a claim twice is refused, whichever value would win."""
        valid = claims()
        doubled = {"sub": '"mallory"', "exp": "1e308", "aud": '"other"', "scope": '"identities"'}[claim]
        payload = json.dumps(valid)[:-1] + f', "{claim}": {doubled}}}'
        token = signed_es256(dev_key_pem, payload)
        assert_invalid_token(get_identity(client, token), f"name '{claim}' more than once")

    def test_duplicate_header_member_is_refused(self, client: FlaskClient, dev_key_pem: bytes, alice: str) -> None:
        """A signed token whose header names alg twice is refused."""
        header = '{"alg": "RS256", "typ": "JWT", "kid": "vora-dev", "alg": "ES256"}'
        token = signed_es256(dev_key_pem, json.dumps(claims()), header)
        assert_invalid_token(get_identity(client, token), "name 'alg' more than once")

    def test_stray_signature_bits_are_refused(self, client: FlaskClient, make_token: TokenFactory, alice: str) -> None:
        """A signature whose base64url ends in non-zero spare bits (another spelling of the same bytes) is refused."""
        token = make_token(alice)
        last = token[-1]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        # 64 bytes in base64url leave 4 spare bits in the last character: flip the lowest.
        twin = token[:-1] + alphabet[alphabet.index(last) ^ 1]
        assert_invalid_token(get_identity(client, twin), "canonically encoded")


class TestMalleableSignature:
    """A high-S ES256 signature is the same token as its low-S twin, or refused when low-S is required."""

    def test_high_and_low_s_twins_share_one_cache_entry(self, dev_key_pem: bytes) -> None:
        """Both forms of one signature verify once, as one token."""
        verifier = TokenVerifier(KeySet("", [public_jwk_from_pem(dev_key_pem)]), ISSUER, AUDIENCE, 0)
        token = mint_token(dev_key_pem, "alice", ISSUER, AUDIENCE)
        s = es256_signature(token)[2]
        twin = with_s(token, P256_ORDER - s)
        first = verifier.verify(token)
        assert verifier.verify(twin) is first  # not verified again: the same Principal
        assert verifier.verify(token) is first
        assert len(verifier._verified) <= 2  # the canonical form, and the issuer's if that was high-S

    def test_high_s_is_refused_when_low_s_is_required(
        self, settings: Settings, client: FlaskClient, dev_key_pem: bytes
    ) -> None:
        """With VORA_OAUTH_REQUIRE_LOW_S on, the high-S form of a signature is refused and the low-S form accepted."""
        verifier = TokenVerifier.from_settings(settings.with_changes(oauth_require_low_s=True))
        token = mint_token(dev_key_pem, "alice", ISSUER, AUDIENCE)
        s = es256_signature(token)[2]
        low, high = with_s(token, min(s, P256_ORDER - s)), with_s(token, max(s, P256_ORDER - s))
        assert verifier.verify(low).subject == "alice"
        with pytest.raises(InvalidToken, match="low-S"):
            verifier.verify(high)

    def test_high_s_twin_over_http_is_the_same_caller(
        self, client: FlaskClient, make_token: TokenFactory, alice: str
    ) -> None:
        """By default (issuers sign with either S) both forms of a real signature are accepted as one token."""
        token = make_token(alice)
        s = es256_signature(token)[2]
        assert get_identity(client, with_s(token, P256_ORDER - s)).status_code == 200
        assert get_identity(client, token).status_code == 200
