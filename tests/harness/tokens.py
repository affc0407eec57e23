"""The issuer, audience and key id of the tests' access tokens, and the type of the token fixture."""

from __future__ import annotations

from collections.abc import Callable

ISSUER = "https://auth.test.invalid/"


AUDIENCE = "vora-test"


RSA_KID = "rsa-test-1"


TokenFactory = Callable[..., str]
