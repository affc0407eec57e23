"""Everything one app holds, built once by create_app, and the one typed way to reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from flask import Flask, current_app
from redis import Redis
from redis.cluster import RedisCluster

from vora.auth import TokenVerifier
from vora.lifecycle import Lifecycle
from vora.metrics import Metrics
from vora.ownership import Ownership
from vora.push_worker import PushWorker
from vora.sessions import SessionService
from vora.settings import Settings
from vora.store.client import REDIS_ERRORS
from vora.store.directory import Directory
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore
from vora.ws.hub import Hub
from vora.ws.runner import HubRunner

EXTENSION = "vora"
T = TypeVar("T")


@dataclass(frozen=True)
class VoraState:
    """Everything a request handler needs, built once per app."""

    settings: Settings
    probe: Redis
    sessions: SessionService
    session_store: SessionStore
    directory: Directory
    ownership: Ownership
    verifier: TokenVerifier
    lifecycle: Lifecycle
    allowed_methods: dict[str, tuple[str, ...]]
    streams: StreamStore
    hub: Hub
    hub_runner: HubRunner
    metrics: Metrics
    push: PushWorker

    def probe_redis(self) -> str | None:
        """Return None when Redis answers PING within the readiness timeout, else why not."""
        try:
            self.probe.ping()
            if isinstance(self.probe, RedisCluster):
                # A PING reaches one node; the cluster may still have uncovered slots.
                state = self.probe.cluster_info().get("cluster_state")
                if state != "ok":
                    return f"Redis Cluster state is {state}"
        except REDIS_ERRORS as exc:
            return f"Redis does not answer: {type(exc).__name__}"
        return None


def extension(name: str, kind: type[T], app: Flask | None = None) -> T:
    """Return what an app (the current one by default) keeps in extensions[name], checked to be a kind."""
    value = (app if app is not None else current_app).extensions[name]
    if not isinstance(value, kind):
        raise TypeError(f"app.extensions[{name!r}] is not a {kind.__name__}")
    return value


def vora_state(app: Flask | None = None) -> VoraState:
    """Return the state of an app (the current one by default)."""
    return extension(EXTENSION, VoraState, app)
