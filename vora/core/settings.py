"""Read the one frozen settings object from VORA_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vora.core.server_keys import KeyFileError, check_keys, read_key_file

DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"
# The TypeScript SDK bundled for browsers (`make sdk` builds it from clients/typescript); the console imports it.
DEFAULT_CONSOLE_SDK = Path(__file__).resolve().parents[2] / "build" / "console" / "vora-client.js"
DEFAULT_ASYNCAPI_PAGE = Path(__file__).resolve().parents[2] / "build" / "asyncapi-page"
# The batch publish's maxItems in spec/vora-server.yaml; VORA_SERVER_API_MAX_BATCH may only lower it.
MAX_BATCH_CEILING = 1000
MAX_CLIENT_FRAME_HEADER = 14  # RFC 6455: 2 bytes, 8 of extended length, 4 of mask
MIN_SECRET_LENGTH = 32  # an HMAC key of at least 256 bits written as text


@dataclass(frozen=True)
class SettingInEffect:
    """One variable as `vora config` shows it: its value written as it would be set, and where it came from."""

    name: str
    written: str
    source: str  # "environment" or "default"
    note: str = ""


def written_form(value: Any) -> str:
    """Write a setting's value the way its VORA_* variable would be set."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)


def _masked(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, tuple):
        return f"[{len(value)} masked]"
    return "[masked]"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}[masked]@{parts.hostname}{f':{parts.port}' if parts.port else ''}").geturl()


class SettingsError(ValueError):
    """A VORA_* variable holds a value VORA cannot use."""


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than zero, got {value}")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than zero, got {value}")
    return value


def _non_negative_int(name: str, raw: str) -> int:
    if raw.strip() == "0":
        return 0
    return _positive_int(name, raw)


# A comment of this many bytes opens each event stream, for gateways that hold a response's first bytes.
SSE_PADDING_MAX = 65_536


def _sse_padding(name: str, raw: str) -> int:
    value = _non_negative_int(name, raw)
    if value > SSE_PADDING_MAX:
        raise SettingsError(f"{name} must be at most {SSE_PADDING_MAX} bytes, got {value}")
    return value


def _non_negative_float(name: str, raw: str) -> float:
    if raw.strip() == "0":
        return 0.0
    return _positive_float(name, raw)


_SWITCH_VALUES = dict.fromkeys(("1", "true", "on", "yes"), True) | dict.fromkeys(("0", "false", "off", "no"), False)


def _switch(name: str, raw: str) -> bool:
    value = _SWITCH_VALUES.get(raw.strip().lower())
    if value is None:
        raise SettingsError(f"{name} must be on or off (1/0, true/false, yes/no), got {raw!r}")
    return value


def _csv(_name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _text(_name: str, raw: str) -> str:
    return raw.strip()


def _optional_path(_name: str, raw: str) -> Path | None:
    return Path(raw).expanduser() if raw.strip() else None


def _optional_http_url(name: str, raw: str) -> str:
    url = raw.strip()
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http:// or https:// URL; got {raw!r}")
    return url


def _replicas(name: str, raw: str) -> int | None:
    """Read a replica count, or `auto` (None): the default for the Redis topology."""
    return None if raw.strip().lower() == "auto" else _non_negative_int(name, raw)


def _port(name: str, raw: str) -> int:
    value = _non_negative_int(name, raw)
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port (0-65535), got {value}")
    return value


def _redis_url(name: str, raw: str) -> str:
    schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")
    if not raw.startswith(schemes):
        raise SettingsError(f"{name} must start with one of {', '.join(schemes)}; got {raw!r}")
    return raw


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _webhook_url(name: str, raw: str) -> str:
    """Accept an https:// URL, or http:// to a loopback host (development and tests), or nothing."""
    url = raw.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in {"https", "http"}:
        raise SettingsError(f"{name} must be an https:// URL; got {raw!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise SettingsError(f"{name} must use https:// (http:// only to a loopback address); got {raw!r}")
    return url


def _log_format(name: str, raw: str) -> str:
    log_format = raw.strip().lower()
    if log_format not in {"json", "text"}:
        raise SettingsError(f"{name} must be json or text; got {raw!r}")
    return log_format


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"{name} must be DEBUG, INFO, WARNING or ERROR; got {raw!r}")
    return level


@dataclass(frozen=True)
class Settings:
    """Everything VORA can be told from outside; each field maps to VORA_<FIELD>."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata={"parse": _redis_url})
    redis_timeout: float = field(default=2.0, metadata={"parse": _positive_float})
    redis_pool_size: int = field(default=32, metadata={"parse": _positive_int})
    redis_pool_timeout: float = field(default=0.5, metadata={"parse": _positive_float})
    redis_batching: bool = field(default=True, metadata={"parse": _switch})
    readiness_timeout: float = field(default=0.5, metadata={"parse": _positive_float})
    oauth_jwks: str = field(default="", metadata={"parse": _text})
    oauth_issuer: str = field(default="vora-dev", metadata={"parse": _text})
    oauth_audience: str = field(default="vora", metadata={"parse": _text})
    oauth_leeway: float = field(default=30.0, metadata={"parse": _non_negative_float})
    oauth_max_token_lifetime: float = field(default=86_400.0, metadata={"parse": _positive_float})
    oauth_require_low_s: bool = field(default=False, metadata={"parse": _switch})
    oauth_authorization_url: str = field(default="", metadata={"parse": _optional_http_url})
    oauth_token_url: str = field(default="", metadata={"parse": _optional_http_url})
    oauth_web_client_id: str = field(default="vora-web", metadata={"parse": _text})
    jwks_refresh_interval: float = field(default=30.0, metadata={"parse": _positive_float})
    dev_key: Path | None = field(default=None, metadata={"parse": _optional_path})
    session_ttl: int = field(default=3600, metadata={"parse": _positive_int})
    session_max_age: int = field(default=86400, metadata={"parse": _positive_int})
    max_sessions_per_identity: int = field(default=5, metadata={"parse": _positive_int})
    max_sessions_per_identity_total: int = field(default=50, metadata={"parse": _positive_int})
    setup_rate_per_user: int = field(default=30, metadata={"parse": _non_negative_int})
    setup_rate_per_identity: int = field(default=120, metadata={"parse": _non_negative_int})
    setup_rate_window: int = field(default=60, metadata={"parse": _positive_int})
    max_body_bytes: int = field(default=64 * 1024, metadata={"parse": _positive_int})
    http_read_timeout: float = field(default=10.0, metadata={"parse": _positive_float})
    http_body_timeout: float = field(default=30.0, metadata={"parse": _positive_float})
    cors_origins: tuple[str, ...] = field(default=(), metadata={"parse": _csv})
    log_level: str = field(default="INFO", metadata={"parse": _log_level})
    log_format: str = field(default="json", metadata={"parse": _log_format})
    # Development (make run sets it): an operation without a finished handler answers 501 instead of failing the start.
    development: bool = field(default=False, metadata={"parse": _switch})
    # Development (make run sets it): the console's telephony simulator (/vora/console/simulator) publishes
    # events for the logged-in user's own identities; off, its routes answer 404 like any unknown path.
    console_simulator: bool = field(default=False, metadata={"parse": _switch})
    spec_dir: Path = field(default=DEFAULT_SPEC_DIR, metadata={"parse": _optional_path})
    console_sdk: Path | None = field(default=DEFAULT_CONSOLE_SDK, metadata={"parse": _optional_path})
    # The AsyncAPI page's renderer (@asyncapi/react-component's bundle and stylesheet), copied by `make install`.
    asyncapi_page: Path | None = field(default=DEFAULT_ASYNCAPI_PAGE, metadata={"parse": _optional_path})
    stream_max_length: int = field(default=10_000, metadata={"parse": _positive_int})
    stream_max_age: int = field(default=86_400, metadata={"parse": _positive_int})
    # None (`auto`): 1 on Sentinel, where a planned failover otherwise loses acknowledged events; else 0.
    publish_min_replicas: int | None = field(default=None, metadata={"parse": _replicas, "default_text": "auto"})
    publish_replica_timeout: int = field(default=500, metadata={"parse": _positive_int})
    ws_ping_interval: float = field(default=20.0, metadata={"parse": _positive_float})
    ws_send_timeout: float = field(default=10.0, metadata={"parse": _positive_float})
    ws_accept_timeout: float = field(default=5.0, metadata={"parse": _positive_float})
    ws_heartbeat_interval: float = field(default=30.0, metadata={"parse": _positive_float})
    ws_queue_size: int = field(default=1000, metadata={"parse": _positive_int})
    ws_lease_interval: float = field(default=15.0, metadata={"parse": _positive_float})
    ws_max_message_bytes: int = field(default=4096, metadata={"parse": _positive_int})
    ws_client_frames_per_minute: int = field(default=60, metadata={"parse": _positive_int})
    ws_client_bytes_per_minute: int = field(default=65536, metadata={"parse": _positive_int})
    ws_send_buffer: int = field(default=0, metadata={"parse": _non_negative_int})
    ws_max_sockets_per_session: int = field(default=10, metadata={"parse": _positive_int})
    ws_max_pending_handshakes: int = field(default=512, metadata={"parse": _positive_int})
    sse_retry_window: float = field(default=20.0, metadata={"parse": _positive_float})
    sse_padding: int = field(default=0, metadata={"parse": _sse_padding})
    # The reconnect window announced to clients (channelOpened, heartbeat): the sockets this instance holds
    # divided by the admissions per second the rest of the fleet absorbs from its crowd, within these bounds.
    reconnect_rate: int = field(default=800, metadata={"parse": _positive_int})
    reconnect_window_min: float = field(default=1.0, metadata={"parse": _positive_float})
    reconnect_window_max: float = field(default=20.0, metadata={"parse": _positive_float})
    metrics_port: int = field(default=9102, metadata={"parse": _non_negative_int})
    metrics_host: str = field(default="127.0.0.1", metadata={"parse": _text})
    worker_connections: int = field(default=20_000, metadata={"parse": _positive_int})
    listen_backlog: int = field(default=4096, metadata={"parse": _positive_int})
    graceful_timeout: int = field(default=20, metadata={"parse": _positive_int})
    server_api_host: str = field(default="127.0.0.1", metadata={"parse": _text})
    server_api_port: int = field(default=18086, metadata={"parse": _port})
    server_api_keys: tuple[str, ...] = field(default=(), repr=False, metadata={"parse": _csv})
    server_api_keys_file: Path | None = field(default=None, metadata={"parse": _optional_path})
    server_api_max_batch: int = field(default=1000, metadata={"parse": _positive_int})
    server_api_max_body_bytes: int = field(default=4 * 1024 * 1024, metadata={"parse": _positive_int})
    server_api_idempotency_window: int = field(default=600, metadata={"parse": _positive_int})
    push_gateway_url: str = field(default="", metadata={"parse": _webhook_url})
    push_secret: str = field(default="", repr=False, metadata={"parse": _text})
    push_timeout: float = field(default=5.0, metadata={"parse": _positive_float})
    push_max_attempts: int = field(default=4, metadata={"parse": _positive_int})
    push_backoff: float = field(default=0.5, metadata={"parse": _positive_float})
    push_concurrency: int = field(default=4, metadata={"parse": _positive_int})
    push_rate_limit: int = field(default=10, metadata={"parse": _positive_int})
    push_rate_window: int = field(default=60, metadata={"parse": _positive_int})
    holdup_timeout: float = field(default=30.0, metadata={"parse": _positive_float})
    holdup_callback_url: str = field(default="", metadata={"parse": _webhook_url})
    holdup_callback_secret: str = field(default="", repr=False, metadata={"parse": _text})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from VORA_* variables, failing on the first bad value."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = f"VORA_{spec.name.upper()}"
            if name in env:
                values[spec.name] = spec.metadata["parse"](name, env[name])
        return cls(**values).checked()

    def checked(self) -> Settings:
        """Return these settings after the checks that span several fields."""
        if self.spec_dir is None or not (self.spec_dir / "vora.yaml").is_file():
            raise SettingsError(f"VORA_SPEC_DIR must hold vora.yaml; {self.spec_dir} does not")
        if self.session_max_age < self.session_ttl:
            raise SettingsError("VORA_SESSION_MAX_AGE must not be shorter than VORA_SESSION_TTL")
        if self.max_sessions_per_identity_total < self.max_sessions_per_identity:
            raise SettingsError("VORA_MAX_SESSIONS_PER_IDENTITY_TOTAL must not be below VORA_MAX_SESSIONS_PER_IDENTITY")
        if self.ws_lease_interval * 2 >= self.session_ttl:
            raise SettingsError("VORA_WS_LEASE_INTERVAL must be under half of VORA_SESSION_TTL")
        if self.ws_client_bytes_per_minute < self.ws_max_message_bytes + MAX_CLIENT_FRAME_HEADER:
            # Else a socket sending one message of the largest size would be closed for it.
            raise SettingsError(
                "VORA_WS_CLIENT_BYTES_PER_MINUTE must be at least "
                f"VORA_WS_MAX_MESSAGE_BYTES + {MAX_CLIENT_FRAME_HEADER}"
            )
        if self.reconnect_window_min > self.reconnect_window_max:
            raise SettingsError("VORA_RECONNECT_WINDOW_MIN must not be above VORA_RECONNECT_WINDOW_MAX")
        if self.publish_min_replicas and self.redis_url.startswith("redis+cluster"):
            # WAIT counts the replicas of the connection's own writes: on Cluster it would have
            # to follow each identity's slot to its node, which the cluster client does not do.
            raise SettingsError("VORA_PUBLISH_MIN_REPLICAS is not supported on Redis Cluster; set it to 0")
        if self.publish_replicas and self.publish_replica_timeout >= self.redis_timeout * 1000:
            # A WAIT that outlasts the socket timeout would be retried, and the retry would
            # publish the event a second time.
            raise SettingsError("VORA_PUBLISH_REPLICA_TIMEOUT (ms) must be shorter than VORA_REDIS_TIMEOUT (s)")
        if bool(self.oauth_authorization_url) != bool(self.oauth_token_url):
            raise SettingsError("VORA_OAUTH_AUTHORIZATION_URL and VORA_OAUTH_TOKEN_URL must be set together")
        if self.server_api_max_batch > MAX_BATCH_CEILING:
            raise SettingsError(f"VORA_SERVER_API_MAX_BATCH must be at most {MAX_BATCH_CEILING}, the spec's maxItems")
        if self.server_api_enabled and self.server_api_port == self.metrics_port:
            raise SettingsError("VORA_SERVER_API_PORT must differ from VORA_METRICS_PORT")
        try:
            check_keys("VORA_SERVER_API_KEYS", self.server_api_keys)
            if self.server_api_keys_file is not None:
                read_key_file(self.server_api_keys_file)
        except KeyFileError as exc:
            raise SettingsError(str(exc)) from None
        if self.push_gateway_url and len(self.push_secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"VORA_PUSH_SECRET must hold at least {MIN_SECRET_LENGTH} characters with a gateway URL"
            )
        if self.holdup_callback_url and len(self.holdup_callback_secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"VORA_HOLDUP_CALLBACK_SECRET must hold at least {MIN_SECRET_LENGTH} characters with a callback URL"
            )
        if self.holdup_callback_url and not self.push_gateway_url:
            raise SettingsError(
                "VORA_HOLDUP_CALLBACK_URL needs VORA_PUSH_GATEWAY_URL: without pushes nothing is held up"
            )
        return self

    @property
    def publish_replicas(self) -> int:
        """Return how many replicas must confirm each publish: VORA_PUBLISH_MIN_REPLICAS, or its topology default."""
        if self.publish_min_replicas is not None:
            return self.publish_min_replicas
        return 1 if self.redis_url.startswith("redis+sentinel") else 0

    @property
    def server_api_enabled(self) -> bool:
        """Tell whether the server API listens: it needs a port and at least one configured key."""
        return bool(self.server_api_port) and (bool(self.server_api_keys) or self.server_api_keys_file is not None)

    @property
    def server_api_bind(self) -> str:
        """Return the gunicorn bind address of the server API listener."""
        host = self.server_api_host
        return f"[{host}]:{self.server_api_port}" if ":" in host else f"{host}:{self.server_api_port}"

    @property
    def push_enabled(self) -> bool:
        """Tell whether holdUpMode sessions are woken by pushes (a gateway is configured)."""
        return bool(self.push_gateway_url)

    def with_changes(self, **changes: Any) -> Settings:
        """Return a checked copy with some fields changed."""
        return replace(self, **changes).checked()

    def in_effect(self, environ: Mapping[str, str]) -> list[SettingInEffect]:
        """List every variable's value in effect as it is written, with its source; secrets and passwords masked."""
        shown = []
        for spec in fields(self):
            name = f"VORA_{spec.name.upper()}"
            value = getattr(self, spec.name)
            written = written_form(value) if spec.repr else _masked(value)
            if spec.name == "redis_url":
                written = _without_password(written)
            note = ""
            if spec.name == "server_api_keys_file" and value is not None:
                note = f"{len(read_key_file(value))} keys read from the file"
            shown.append(SettingInEffect(name, written, "environment" if name in environ else "default", note))
        return shown

    @staticmethod
    def variables() -> list[tuple[str, str]]:
        """List each VORA_* variable with its default, for docs and `vora config`."""
        return [
            (f"VORA_{spec.name.upper()}", spec.metadata.get("default_text", str(spec.default)))
            for spec in fields(Settings)
        ]
