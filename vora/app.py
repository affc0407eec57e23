"""Build the WSGI application of one VORA instance from settings."""

from __future__ import annotations

from flask import Flask

from vora.core.settings import Settings
from vora.core.types import WsgiApp
from vora.http.bodies import BODY_GATE, BodyLimitMiddleware
from vora.http.dispatch import ListenerDispatcher, PathDispatcher
from vora.http.status_line import StandardReasonPhrases
from vora.observability.logs import RequestLogMiddleware
from vora.rest.app import create_rest_app
from vora.server_api.app import create_server_app
from vora.server_api.simulator import SIMULATOR_PATH, create_simulator_app
from vora.services import EXTENSION, Services, build_services
from vora.ws.endpoint import SocketServices


def create_app(settings: Settings, fast_path: bool = True, *, services: Services | None = None) -> Flask:
    """Build the client API's app, with the server API on its own listener when configured; nothing connects yet.

    The app is built on services (build_services(settings) when none are given), kept in its
    extensions for gunicorn's hooks.
    """
    services = services if services is not None else build_services(settings)
    sockets = SocketServices(
        settings=settings,
        lifecycle=services.lifecycle,
        sessions=services.sessions,
        streams=services.streams,
        hub=services.hub,
        hub_runner=services.hub_runner,
        reconnect_window=services.reconnect_window,
        metrics=services.metrics,
        push=services.push,
    )
    app = create_rest_app(
        settings,
        verifier=services.verifier,
        sessions=services.sessions,
        lifecycle=services.lifecycle,
        redis_problem=services.probe_redis,
        directory_state=services.directory_state,
        metrics=services.metrics,
        sockets=sockets,
        fast_path=fast_path,
    )
    app.extensions[EXTENSION] = services
    served: WsgiApp = BodyLimitMiddleware(app.wsgi_app, settings.max_body_bytes, app.extensions[BODY_GATE])
    # The console's simulator (development only): its app answers its paths whether it is on or off (then 404).
    simulator = create_simulator_app(
        settings,
        verifier=services.verifier,
        publisher=services.publisher,
        streams=services.streams,
        session_store=services.session_store,
        ownership=services.ownership,
        metrics=services.metrics,
    )
    simulated = BodyLimitMiddleware(simulator, settings.max_body_bytes, simulator.extensions[BODY_GATE])
    # RFC 9110's reason phrases ("401 Unauthorized"), as the server API writes them, not Werkzeug's upper case.
    served = StandardReasonPhrases(PathDispatcher(served, SIMULATOR_PATH, simulated))
    if services.server_keys is not None:
        server = create_server_app(
            settings,
            publisher=services.publisher,
            streams=services.streams,
            session_store=services.session_store,
            ownership=services.ownership,
            server_keys=services.server_keys,
            metrics=services.metrics,
            fast_path=fast_path,
        )
        server_api = BodyLimitMiddleware(server, settings.server_api_max_body_bytes, server.extensions[BODY_GATE])
        served = ListenerDispatcher(served, server_api, settings.server_api_port)
    # Outermost the log, so that a body refused before the app runs is logged too.
    app.wsgi_app = RequestLogMiddleware(served)  # type: ignore[method-assign] # Flask's documented middleware hook
    return app
