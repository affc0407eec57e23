"""Scenario 6, holdUpMode push wake-up: the publish-time hook's cost, and how fast VORA pushes and signals ready.

Publish cost: PUBLISHES inbound callRinging events (each also queues a push job) against as many
outbound ones (the same event, no job) on the same publisher, in alternating blocks, timed one
by one in this process; the outbound figure is the same-run baseline. Wake-up path: ROUNDS times,
a holdUpMode session with no socket gets an inbound call; timed from the publish call to the push
arriving at a push gateway receiver in this process, then from the socket's handshake to
holdUpReady arriving at the callback receiver. Both receivers answer 200 at once, so these are
VORA's own delays (queue, worker, HTTP), not a real gateway's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import websocket

from bench.context import Bench, Rest, identities
from bench.report import Row
from testbed.webhooks import Received, WebhookReceiver

USER = "bench-push"
SILENT = "7600000000"  # publish-cost identity: no session, so its jobs are dropped at once
SECRET = "bench-push-secret-" + "x" * 20
DEVICE = {"platform": "fcm", "deviceToken": "bench-device-token"}
BLOCK = 50


def for_identity(identity: str) -> Callable[[Received], bool]:
    """Match the webhook requests that name one identity."""
    return lambda received: received.body.get("identity") == identity


def _publish_costs(bench: Bench, count: int) -> dict[str, list[float]]:
    costs: dict[str, list[float]] = {"inbound": [], "outbound": []}
    for block in range(count // BLOCK):
        direction = "inbound" if block % 2 else "outbound"
        for n in range(BLOCK):
            data = {"callId": f"cost-{block}-{n}", "direction": direction, "from": "+34602128708"}
            started = time.perf_counter()
            bench.publisher.publish(SILENT, "callRinging", data)
            costs[direction].append((time.perf_counter() - started) * 1e6)
    return costs


def run(bench: Bench) -> dict[str, Any]:
    """Measure the publish hook and ROUNDS wake-ups on one VORA with a push gateway and a callback."""
    rounds = int(bench.seconds(20, 5))
    publishes = int(bench.seconds(4000, 400))
    targets = identities("7601", rounds)
    bench.provision(USER, targets)
    push_ms: list[float] = []
    ready_ms: list[float] = []
    reported_wake_ms: list[int] = []
    with WebhookReceiver(SECRET) as gateway, WebhookReceiver(SECRET) as callback:
        env = {
            "VORA_PUSH_GATEWAY_URL": gateway.url,
            "VORA_PUSH_SECRET": SECRET,
            "VORA_HOLDUP_CALLBACK_URL": callback.url,
            "VORA_HOLDUP_CALLBACK_SECRET": SECRET,
        }
        with bench.vora_server(**env) as vora:
            costs = _publish_costs(bench, publishes)
            rest = Rest(vora, bench.token(USER))
            try:
                for index, identity in enumerate(targets):
                    setup = {"connectionType": "WebSocket", "identity": identity, "holdUpMode": True, "push": DEVICE}
                    status, body = rest.call("POST", "/identity/setup", setup)
                    if status != 200:
                        raise RuntimeError(f"setup answered {status}: {body}")
                    data = {"callId": f"wake-{index}", "direction": "inbound", "from": "+34602128708"}
                    started = time.perf_counter()
                    bench.publisher.publish(identity, "callRinging", data)
                    gateway.next_accepted(for_identity(identity), timeout=10)
                    push_ms.append((time.perf_counter() - started) * 1000)
                    ws = websocket.create_connection(f"{vora.ws_url}?token={body['webSocketToken']}", timeout=10)
                    opened = time.perf_counter()
                    ready = callback.next_accepted(for_identity(identity), timeout=10)
                    ready_ms.append((time.perf_counter() - opened) * 1000)
                    reported_wake_ms.append(int(ready.body["wakeUpMs"]))
                    ws.close()
            finally:
                rest.close()
    return {
        "publishes": publishes,
        "rounds": rounds,
        "publish_us": {kind: round(statistics.median(values), 1) for kind, values in costs.items()},
        "publish_p99_us": {kind: round(sorted(v)[int(len(v) * 0.99) - 1], 1) for kind, v in costs.items()},
        "ring_to_push_ms": {"median": round(statistics.median(push_ms), 2), "max": round(max(push_ms), 2)},
        "socket_to_ready_ms": {"median": round(statistics.median(ready_ms), 2), "max": round(max(ready_ms), 2)},
        "reported_wake_up_ms_median": statistics.median(reported_wake_ms),
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    """Table lines: the hook's cost against plain publishing, and the wake-up path's delays (reported)."""
    publish = figures["publish_us"]
    return [
        Row(
            "6 publish inbound callRinging (+push job)",
            publish["inbound"],
            "µs",
            publish["outbound"],
            "(reported)",
            None,
        ),
        Row("6 ring → push at gateway, median", figures["ring_to_push_ms"]["median"], "ms", None, "(reported)", None),
        Row(
            "6 socket open → holdUpReady, median",
            figures["socket_to_ready_ms"]["median"],
            "ms",
            None,
            "(reported)",
            None,
        ),
    ]
