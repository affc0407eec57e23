"""The typed accessors of what an app keeps in its extensions."""

from __future__ import annotations

import pytest
from flask import Flask

from vora.core.server_keys import ServerKeys
from vora.services import extension


def test_extension_hands_back_a_kept_object_of_the_asked_kind_and_refuses_another() -> None:
    """An extension of the asked kind comes back as it was kept; one of another kind is a TypeError naming it."""
    app = Flask(__name__)
    keys = ServerKeys(["k" * 32])
    app.extensions["vora.server_keys"] = keys
    app.extensions["vora.server"] = "not a ServerApi"
    assert extension("vora.server_keys", ServerKeys, app) is keys
    with app.app_context():
        assert extension("vora.server_keys", ServerKeys) is keys
    with pytest.raises(TypeError, match=r"app.extensions\['vora.server'\] is not a ServerKeys"):
        extension("vora.server", ServerKeys, app)
