"""Push wake-up journeys: the hold-up timeout, opened sessions, ringing and what the receivers got."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jsonschema
import yaml

from testbed.webhooks import Received
from tests.harness.ws_client import Client
from vora.core.settings import DEFAULT_SPEC_DIR
from vora.events.publisher import EventPublisher, PublishedEvent
from vora.tools.spec_check import WEBHOOKS_FILE

HOLDUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class OpenedSession:
    """A session opened through the REST API: its identity, WebSocket token and id."""

    identity: str
    token: str
    session_id: str


def for_identity(identity: str, event: str | None = None) -> Callable[[Received], bool]:
    """Match webhooks about one identity (and, optionally, of one event)."""
    return lambda r: r.body.get("identity") == identity and (event is None or r.event == event)


Connect = Callable[..., Client]


OpenSession = Callable[..., OpenedSession]


WAIT = 20.0


def ring(publisher: EventPublisher, identity: str, call_id: str = "call-1") -> PublishedEvent:
    """Publish an incoming call for an identity, as the telephony side does."""
    data = {"callId": call_id, "direction": "inbound", "from": "+34602128708", "to": identity}
    return publisher.publish(identity, "callRinging", data)


def webhook_schema(name: str) -> jsonschema.Draft202012Validator:
    """Return a validator of one body schema of spec/vora-webhooks.yaml."""
    document = yaml.safe_load((DEFAULT_SPEC_DIR / WEBHOOKS_FILE).read_text())
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
