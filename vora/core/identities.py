"""What an identity may look like: the one pattern the spec, the CLI and the publisher share."""

from __future__ import annotations

import re

# `(?!\n)` because Python's `$` also matches before a final newline (ECMA-262's does not): with it,
# the pattern means the same in both, so Connexion's re.search and any JavaScript client agree.
IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}(?!\n)$"
_IDENTITY = re.compile(IDENTITY_PATTERN)


def is_identity(value: str) -> bool:
    """Tell whether a value is a well-formed identity."""
    return bool(_IDENTITY.fullmatch(value))
