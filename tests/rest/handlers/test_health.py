"""Tests of the Health probes."""

from __future__ import annotations

import redis
from flask import Flask
from flask.testing import FlaskClient

from testbed.ports import free_port
from tests.harness.rest import assert_error
from vora.app import create_app
from vora.core.settings import Settings
from vora.services import services_of


def test_readiness_is_204_while_redis_answers(client: FlaskClient) -> None:
    """Readiness answers 204 with no body while Redis answers PING."""
    response = client.get("/vora/health/readiness")
    assert response.status_code == 204
    assert response.get_data() == b""


def test_readiness_is_503_when_redis_is_unreachable(settings: Settings, redisdb: redis.Redis) -> None:
    """Readiness answers 503 in the error shape when Redis does not answer."""
    app = create_app(settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert_error(app.test_client().get("/vora/health/readiness"), 503, "Redis")


def test_readiness_is_503_when_redis_hangs(settings: Settings, redisdb: redis.Redis) -> None:
    """Readiness gives up after its short timeout when Redis is paused, and answers 503."""
    app = create_app(settings.with_changes(readiness_timeout=0.2))
    redisdb.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    try:
        assert_error(app.test_client().get("/vora/health/readiness"), 503, "Timeout")
    finally:
        redisdb.execute_command("CLIENT", "UNPAUSE")


def test_liveness_needs_no_redis(settings: Settings, redisdb: redis.Redis) -> None:
    """Liveness answers 204 even when Redis is unreachable: the worker itself is fine."""
    app = create_app(settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert app.test_client().get("/vora/health/liveness").status_code == 204


def test_both_probes_are_503_once_draining(app: Flask, client: FlaskClient) -> None:
    """Once the worker drains, liveness and readiness answer 503."""
    assert client.get("/vora/health/liveness").status_code == 204
    services_of(app).lifecycle.drain()
    assert_error(client.get("/vora/health/liveness"), 503, "draining")
    assert_error(client.get("/vora/health/readiness"), 503, "draining")
