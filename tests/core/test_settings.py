"""Tests of the settings read from VORA_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from vora.core.settings import Settings, SettingsError


def test_defaults_need_no_environment() -> None:
    """With no VORA_* variables the defaults apply."""
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.max_body_bytes == 64 * 1024
    assert settings.cors_origins == ()


def test_reads_each_variable() -> None:
    """Each variable maps to its field with its type."""
    settings = Settings.from_env(
        {
            "VORA_REDIS_URL": "redis+sentinel://127.0.0.1:26379/vora/0",
            "VORA_MAX_SESSIONS_PER_IDENTITY": "3",
            "VORA_CORS_ORIGINS": "https://a.example, https://b.example",
            "VORA_READINESS_TIMEOUT": "0.25",
            "VORA_LOG_LEVEL": "debug",
        }
    )
    assert settings.max_sessions_per_identity == 3
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.readiness_timeout == 0.25
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("VORA_MAX_BODY_BYTES", "lots", "whole number"),
        ("VORA_SESSION_TTL", "0", "greater than zero"),
        ("VORA_READINESS_TIMEOUT", "-1", "greater than zero"),
        ("VORA_REDIS_URL", "http://127.0.0.1:6379", "must start with"),
        ("VORA_LOG_LEVEL", "chatty", "DEBUG"),
        ("VORA_SPEC_DIR", "/nonexistent", "vora.yaml"),
        ("VORA_HTTP_READ_TIMEOUT", "0", "greater than zero"),
        ("VORA_MAX_SESSIONS_PER_IDENTITY_TOTAL", "2", "must not be below"),
        ("VORA_REDIS_BATCHING", "sometimes", "on or off"),
        ("VORA_SSE_PADDING", "65537", "at most 65536"),
        ("VORA_SSE_PADDING", "-1", "greater than zero"),
    ],
)
def test_bad_values_fail_fast(name: str, value: str, fragment: str) -> None:
    """A bad value raises SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("0", False), (" Off ", False), ("TRUE", True)])
def test_switches_read_on_and_off_words(value: str, expected: bool) -> None:
    """A switch takes 1/0, true/false, on/off and yes/no in any case."""
    assert Settings.from_env({"VORA_REDIS_BATCHING": value}).redis_batching is expected


def test_cross_field_checks() -> None:
    """A max session age shorter than the idle TTL is refused."""
    with pytest.raises(SettingsError, match="MAX_AGE"):
        Settings.from_env({"VORA_SESSION_TTL": "600", "VORA_SESSION_MAX_AGE": "60"})


def test_settings_are_frozen() -> None:
    """Settings cannot be changed in place."""
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.redis_url = "redis://elsewhere:6379/0"  # type: ignore[misc] # the test checks that the frozen dataclass refuses it


def test_every_variable_is_listed() -> None:
    """variables() lists each field once as VORA_<FIELD>."""
    names = [name for name, _ in Settings.variables()]
    assert "VORA_REDIS_URL" in names
    assert len(names) == len(set(names))


def test_every_variable_is_documented() -> None:
    """The configuration table of docs/configuration.md names every VORA_* variable."""
    table = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert [name for name, _ in Settings.variables() if name not in table] == []


GOOD_KEY = "k" * 32


def test_server_api_is_off_without_a_key() -> None:
    """With no server API key configured the server API does not listen."""
    assert Settings.from_env({}).server_api_enabled is False
    assert Settings.from_env({"VORA_SERVER_API_KEYS": GOOD_KEY}).server_api_enabled is True
    assert (
        Settings.from_env({"VORA_SERVER_API_KEYS": GOOD_KEY, "VORA_SERVER_API_PORT": "0"}).server_api_enabled is False
    )


def test_server_api_keys_are_read_and_never_shown() -> None:
    """Several comma-separated keys are kept, and the settings' repr does not print them."""
    settings = Settings.from_env({"VORA_SERVER_API_KEYS": f"{GOOD_KEY}, {'m' * 40}", "VORA_SERVER_API_HOST": "::1"})
    assert settings.server_api_keys == (GOOD_KEY, "m" * 40)
    assert GOOD_KEY not in repr(settings)
    assert settings.server_api_bind == "[::1]:18086"


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"VORA_SERVER_API_KEYS": "short"}, "shorter than 32"),
        ({"VORA_SERVER_API_KEYS": "k" * 31 + " x"}, "characters a bearer value cannot carry"),
        ({"VORA_SERVER_API_KEYS_FILE": "/nonexistent/keys"}, "cannot read"),
        ({"VORA_SERVER_API_PORT": "70000"}, "TCP port"),
        ({"VORA_SERVER_API_MAX_BATCH": "1001"}, "at most 1000"),
        ({"VORA_SERVER_API_KEYS": GOOD_KEY, "VORA_SERVER_API_PORT": "9102"}, "differ from VORA_METRICS_PORT"),
        ({"VORA_SERVER_API_IDEMPOTENCY_WINDOW": "0"}, "greater than zero"),
    ],
)
def test_bad_server_api_settings_fail_fast(variables: dict[str, str], fragment: str) -> None:
    """A weak or malformed key, an unreadable key file or an impossible limit stops VORA at start."""
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(variables)


def test_publish_replicas_are_read_and_checked() -> None:
    """VORA_PUBLISH_MIN_REPLICAS and its timeout are read; Cluster and a timeout past the socket's are refused."""
    settings = Settings.from_env({"VORA_PUBLISH_MIN_REPLICAS": "1", "VORA_PUBLISH_REPLICA_TIMEOUT": "250"})
    assert (settings.publish_min_replicas, settings.publish_replica_timeout) == (1, 250)
    assert Settings.from_env({}).publish_replicas == 0


SENTINEL_URL = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/vora/0"


@pytest.mark.parametrize(
    ("variables", "replicas"),
    [
        ({}, 0),
        ({"VORA_REDIS_URL": SENTINEL_URL}, 1),
        ({"VORA_REDIS_URL": SENTINEL_URL, "VORA_PUBLISH_MIN_REPLICAS": "auto"}, 1),
        ({"VORA_REDIS_URL": SENTINEL_URL, "VORA_PUBLISH_MIN_REPLICAS": "0"}, 0),
        ({"VORA_REDIS_URL": SENTINEL_URL, "VORA_PUBLISH_MIN_REPLICAS": "2"}, 2),
        ({"VORA_REDIS_URL": "redis+cluster://127.0.0.1:7000"}, 0),
    ],
)
def test_publishes_wait_for_a_replica_by_default_on_sentinel(variables: dict[str, str], replicas: int) -> None:
    """Unset (or auto), VORA_PUBLISH_MIN_REPLICAS is 1 on Sentinel and 0 elsewhere; an explicit value wins."""
    assert Settings.from_env(variables).publish_replicas == replicas


def test_auto_replicas_on_sentinel_need_a_replica_timeout_under_the_socket_timeout() -> None:
    """The Sentinel default brings the timeout check with it."""
    with pytest.raises(SettingsError, match="shorter than VORA_REDIS_TIMEOUT"):
        Settings.from_env({"VORA_REDIS_URL": SENTINEL_URL, "VORA_PUBLISH_REPLICA_TIMEOUT": "2000"})
    with pytest.raises(SettingsError, match="not supported on Redis Cluster"):
        Settings.from_env({"VORA_PUBLISH_MIN_REPLICAS": "1", "VORA_REDIS_URL": "redis+cluster://127.0.0.1:7000"})
    with pytest.raises(SettingsError, match="shorter than VORA_REDIS_TIMEOUT"):
        Settings.from_env({"VORA_PUBLISH_MIN_REPLICAS": "1", "VORA_PUBLISH_REPLICA_TIMEOUT": "2000"})
    with pytest.raises(SettingsError, match="greater than zero"):
        Settings.from_env({"VORA_PUBLISH_MIN_REPLICAS": "-1"})


class TestPushSettings:
    """VORA_PUSH_* and VORA_HOLDUP_* checks."""

    SECRET = "k" * 32

    def test_pushes_are_off_without_a_gateway(self) -> None:
        """No gateway URL: pushes are off."""
        assert not Settings.from_env({}).push_enabled

    @pytest.mark.parametrize(
        "url", ["https://push.example.com/vora", "http://127.0.0.1:8080/hook", "http://[::1]:9/x", "http://localhost/"]
    )
    def test_https_or_loopback_http_gateways_are_accepted(self, url: str) -> None:
        """An https URL, or http to a loopback host, turns pushes on."""
        settings = Settings.from_env({"VORA_PUSH_GATEWAY_URL": url, "VORA_PUSH_SECRET": self.SECRET})
        assert settings.push_enabled
        assert self.SECRET not in repr(settings)

    @pytest.mark.parametrize(
        ("env", "fragment"),
        [
            ({"VORA_PUSH_GATEWAY_URL": "http://push.example.com/x", "VORA_PUSH_SECRET": SECRET}, "https"),
            ({"VORA_PUSH_GATEWAY_URL": "ftp://push.example.com/x", "VORA_PUSH_SECRET": SECRET}, "https"),
            ({"VORA_PUSH_GATEWAY_URL": "https://push.example.com/x"}, "VORA_PUSH_SECRET"),
            ({"VORA_PUSH_GATEWAY_URL": "https://push.example.com/x", "VORA_PUSH_SECRET": "short"}, "32"),
            ({"VORA_HOLDUP_CALLBACK_URL": "https://tel.example.com/x", "VORA_HOLDUP_CALLBACK_SECRET": SECRET}, "needs"),
            (
                {
                    "VORA_PUSH_GATEWAY_URL": "https://push.example.com/x",
                    "VORA_PUSH_SECRET": SECRET,
                    "VORA_HOLDUP_CALLBACK_URL": "https://tel.example.com/x",
                },
                "VORA_HOLDUP_CALLBACK_SECRET",
            ),
            ({"VORA_PUSH_MAX_ATTEMPTS": "0"}, "greater than zero"),
            ({"VORA_HOLDUP_TIMEOUT": "soon"}, "number"),
        ],
    )
    def test_bad_push_settings_fail_fast(self, env: dict[str, str], fragment: str) -> None:
        """A plain-http remote gateway, a missing or short secret, or a callback without a gateway is refused."""
        with pytest.raises(SettingsError, match=fragment):
            Settings.from_env(env)


def test_reconnect_window_settings_are_read_and_their_bounds_checked() -> None:
    """VORA_RECONNECT_RATE and the window's bounds are read; a minimum above the maximum stops VORA at start."""
    defaults = Settings.from_env({})
    assert (defaults.reconnect_rate, defaults.reconnect_window_min, defaults.reconnect_window_max) == (800, 1.0, 20.0)
    settings = Settings.from_env(
        {"VORA_RECONNECT_RATE": "2", "VORA_RECONNECT_WINDOW_MIN": "0.5", "VORA_RECONNECT_WINDOW_MAX": "5"}
    )
    assert (settings.reconnect_rate, settings.reconnect_window_min, settings.reconnect_window_max) == (2, 0.5, 5.0)
    with pytest.raises(SettingsError, match="VORA_RECONNECT_WINDOW_MIN must not be above"):
        Settings.from_env({"VORA_RECONNECT_WINDOW_MIN": "21"})
    with pytest.raises(SettingsError, match="greater than zero"):
        Settings.from_env({"VORA_RECONNECT_RATE": "0"})
