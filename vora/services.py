"""The composition root: every client, store, service and worker of a process, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from flask import Flask
from redis import Redis

from vora.auth.tokens import TokenVerifier
from vora.core.lifecycle import Lifecycle
from vora.core.server_keys import ServerKeys
from vora.core.settings import Settings
from vora.events.publisher import EventCatalog, EventPublisher
from vora.observability.instance import OtherWorkers
from vora.observability.metrics import Metrics
from vora.push.worker import PushWorker
from vora.sessions.ownership import DirectoryState, Ownership
from vora.sessions.service import SessionService
from vora.store.batching import batcher_for
from vora.store.bus import EventBus
from vora.store.client import connect, readiness_problem
from vora.store.directory import Directory
from vora.store.push import PushStore
from vora.store.sessions import SessionStore
from vora.store.streams import StreamStore
from vora.ws.hub import Hub
from vora.ws.leases import LeaseKeeper, presence_lease_ms
from vora.ws.runner import HubRunner
from vora.ws.window import ReconnectWindow

EXTENSION: Final = "vora"  # where create_app keeps an app's Services, for gunicorn's hooks and tests


@dataclass(frozen=True)
class Stores:
    """What a process keeps in Redis and the rules that need nothing more: what the CLI and the benchmark use."""

    settings: Settings
    client: Redis
    directory: Directory
    session_store: SessionStore
    streams: StreamStore
    ownership: Ownership
    sessions: SessionService
    publisher: EventPublisher


@dataclass(frozen=True)
class Services:
    """Everything an instance serves with: the stores, the token verifier, the hub, the workers, built once."""

    settings: Settings
    probe: Redis
    directory: Directory
    session_store: SessionStore
    streams: StreamStore
    ownership: Ownership
    sessions: SessionService
    publisher: EventPublisher
    verifier: TokenVerifier
    lifecycle: Lifecycle
    metrics: Metrics
    hub: Hub
    hub_runner: HubRunner
    reconnect_window: ReconnectWindow
    push: PushWorker
    server_keys: ServerKeys | None

    def probe_redis(self) -> str | None:
        """Return None when Redis answers PING within the readiness timeout, else why not."""
        return readiness_problem(self.probe)

    def directory_state(self) -> DirectoryState:
        """Return what Redis holds of the identity directory, read with the readiness probe's timeout."""
        return self.ownership.status(self.probe).state

    def start_workers(self) -> None:
        """Start this worker's bus reader, lease keeper and push worker (after the fork; each only once)."""
        self.hub_runner.ensure_started(timeout=0)  # subscribes in the background; sockets wait for it
        self.push.ensure_started()  # only when a push gateway is configured


def build_stores(settings: Settings, metrics: Metrics | None = None) -> Stores:
    """Build the Redis client, the stores on it, the session rules and the publisher; nothing connects yet."""
    client = connect(settings.redis_url, settings.redis_timeout, settings.redis_pool_size, settings.redis_pool_timeout)
    batcher = batcher_for(client, settings)
    directory = Directory(client, batcher)
    session_store = SessionStore.from_settings(client, settings, batcher)
    streams = StreamStore.from_settings(client, settings, batcher)
    ownership = Ownership(directory, session_store)
    sessions = SessionService(
        directory=directory, store=session_store, presence_lease_ms=presence_lease_ms(settings), ownership=ownership
    )
    publisher = EventPublisher(EventCatalog(settings.spec_dir), streams, PushStore(client), settings.holdup_timeout)
    return Stores(settings, client, directory, session_store, streams, ownership, sessions, publisher)


def build_services(settings: Settings) -> Services:
    """Build every client, store, service and worker an instance needs, once; nothing connects or starts yet."""
    stores = build_stores(settings)
    metrics = Metrics()
    lifecycle = Lifecycle()
    hub = Hub(on_metric=metrics.count, on_latency=metrics.latency)
    leases = LeaseKeeper.from_settings(hub, stores.session_store, settings, metrics.count)
    # The bus has its own client: on Cluster a failed REST command resets the client's
    # connections, and the worker's subscription must not go down with them.
    bus = EventBus(connect(settings.redis_url, settings.redis_timeout), on_metric=metrics.count)
    # Its own client too: each consumer holds a connection in a blocking read.
    push = PushWorker(settings, connect(settings.redis_url, settings.redis_timeout), stores.session_store, metrics)
    lifecycle.on_drain(hub.drain)
    lifecycle.on_drain(push.stop)
    # The other workers' connections from their metrics files; without multiprocess mode, estimated.
    other_workers = None if (reader := OtherWorkers.from_env()) is None else reader.count
    server_keys = (
        ServerKeys(settings.server_api_keys, settings.server_api_keys_file) if settings.server_api_enabled else None
    )
    return Services(
        settings=settings,
        probe=connect(settings.redis_url, settings.readiness_timeout, retry=None, retry_on_error=[]),
        directory=stores.directory,
        session_store=stores.session_store,
        streams=stores.streams,
        ownership=stores.ownership,
        sessions=stores.sessions,
        publisher=stores.publisher,
        verifier=TokenVerifier.from_settings(settings),
        lifecycle=lifecycle,
        metrics=metrics,
        hub=hub,
        hub_runner=HubRunner(bus=bus, hub=hub, leases=leases, on_metric=metrics.count),
        reconnect_window=ReconnectWindow(hub, settings, other_workers),
        push=push,
        server_keys=server_keys,
    )


def services_of(app: Flask) -> Services:
    """Return the Services create_app built an app with."""
    services = app.extensions[EXTENSION]
    if not isinstance(services, Services):
        raise TypeError(f"app.extensions[{EXTENSION!r}] is not a Services")
    return services
