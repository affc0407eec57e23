"""Scenario 11, the server API: events/s published over HTTP next to the Python publisher, and latency through HTTP.

The same VORA serves both: first the Python publisher (`EventPublisher.publish`, one event per
call, one after another, straight into Redis) runs for a fixed time, then wrk posts single
events (32 connections) and batches of BATCH events (8 connections) to the server API, each
after a warm-up. Events/s of each HTTP way is compared with the Python publisher's.
Then fan-out scenario 4's 1,000 sockets, opened once, get RATE events/s three times: from the
Python publisher; over HTTP one event per request, as the telephony side publishes a ring (LANES
keep-alive connections, each a thread taking every LANES-th slot of the one schedule, so that no
event waits for another's answer); the same to a second VORA on the same Redis that holds no
socket (so the requests do not share the loops of the workers that write the frames); and over
HTTP in batches (one connection, a batch of
LATENCY_BATCH events every LATENCY_BATCH/RATE seconds). Each event is stamped as it is built, just
before it is sent, so the p99 publish-to-socket latency of each HTTP way sits next to the Python
one of the same run. A batch hands the hub LATENCY_BATCH x fan-out deliveries at once: its last
events wait for the first ones' frames, whatever the transport.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time
from dataclasses import replace
from typing import Any

from bench import worker_loop
from bench.context import Bench, identities
from bench.httpload import LoadSpec, run_load
from bench.procs import Server
from bench.profiling import profiled
from bench.report import Row
from bench.scenarios import fanout
from bench.scenarios.fanout import TYPES, event_data
from bench.wsclient import WsLoad
from testbed.ports import free_port

USER = "bench-serverapi"
IDENTITIES = 50
BATCH = 100
BASE_PATH = "/vora/server/v1"
TARGET_BATCH_RATIO = 0.5
TARGET_SINGLE_RATIO = 1.0  # issue 26: one event per request at least as fast as the in-process publisher
TARGET_P99_RATIO = 1.5  # issue 26: publish-to-socket p99 over HTTP, one event per request, vs in-process
LATENCY_BATCH = 50
LANES = 16
INGEST_WORKERS = 1  # the instance that only takes publishes in the http_apart phase


class HttpPublisher:
    """Publish one event per request to the server API over one keep-alive connection."""

    def __init__(self, port: int, key: str) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """Send one POST under the server API's base path and return the decoded answer, raising unless 200."""
        self._connection.request("POST", BASE_PATH + path, body=json.dumps(body).encode(), headers=self._headers)
        response = self._connection.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {raw[:300]!r}")
        return json.loads(raw)

    def __call__(self, identity: str, event_type: str, data: dict[str, Any]) -> int:
        """Publish the event and return its sequence number."""
        sequence: int = self.post(f"/identities/{identity}/events", {"type": event_type, "data": data})[
            "sequenceNumber"
        ]
        return sequence

    def batch(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
        """Publish (identity, type, data) events in one batch and return their sequence numbers."""
        body = {"events": [{"identity": i, "type": t, "data": d} for i, t, d in events]}
        results = self.post("/events/batch", body)["results"]
        if any(result["status"] != "published" for result in results):
            raise RuntimeError(f"a batch item was not published: {results}")
        return [result["sequenceNumber"] for result in results]

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()


class HttpLanes:
    """Publish one event per request over LANES keep-alive connections, one thread each, on one schedule."""

    def __init__(self, port: int, key: str) -> None:
        self.publishers = [HttpPublisher(port, key) for _ in range(LANES)]

    def __call__(self, identity: str, event_type: str, data: dict[str, Any]) -> int:
        """Publish the event on the first connection and return its sequence number."""
        return self.publishers[0](identity, event_type, data)

    def close(self) -> None:
        """Close every connection."""
        for publisher in self.publishers:
            publisher.close()


def publish_in_lanes(publish: fanout.Publisher, ids: list[str], count: int, rate: float | None) -> dict[str, Any]:
    """Publish count events round-robin over ids, one per request, lane n % LANES taking event n's slot of rate/s."""
    if not isinstance(publish, HttpLanes):
        raise TypeError("lanes go through the server API's HttpLanes")
    final: dict[str, int] = {}
    schedule = fanout.Schedule(rate)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def lane(index: int, publisher: HttpPublisher) -> None:
        try:
            for n in range(index, count, LANES):
                schedule.wait_for(n)
                identity, event_type = ids[n % len(ids)], TYPES[n % len(TYPES)]
                data = event_data(event_type, n)
                sequence = schedule.timed(lambda: publisher(identity, event_type, data))  # noqa: B023 - called at once
                with lock:
                    final[identity] = max(sequence, final.get(identity, 0))
        except Exception as exc:  # noqa: BLE001 - raised once the other lanes have ended
            failures.append(exc)

    threads = [threading.Thread(target=lane, args=(i, p), daemon=True) for i, p in enumerate(publish.publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return {**schedule.report(count, final), "connections": LANES}


def publish_batches(publish: fanout.Publisher, ids: list[str], count: int, rate: float | None) -> dict[str, Any]:
    """Publish count events round-robin over ids in batches of LATENCY_BATCH, each batch on its slot of rate/s."""
    if not isinstance(publish, HttpPublisher):
        raise TypeError("batches go through the server API's HttpPublisher")
    final: dict[str, int] = {}
    schedule = fanout.Schedule(rate)
    for first in range(0, count, LATENCY_BATCH):
        schedule.wait_for(first)
        numbers = range(first, min(first + LATENCY_BATCH, count))
        events = [(ids[n % len(ids)], TYPES[n % len(TYPES)]) for n in numbers]
        sequences = publish.batch([(i, t, event_data(t, n)) for n, (i, t) in zip(numbers, events, strict=True)])
        for (identity, _), sequence in zip(events, sequences, strict=True):
            final[identity] = sequence
    return {**schedule.report(count, final), "batch": LATENCY_BATCH}


def _python_rate(bench: Bench, ids: list[str], seconds: float) -> dict[str, Any]:
    """Publish with the Python publisher for a fixed time, one event after another."""
    count = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        event_type = TYPES[count % len(TYPES)]
        bench.publisher.publish(ids[count % len(ids)], event_type, event_data(event_type, count))
        count += 1
    elapsed = time.monotonic() - started
    return {"events": count, "seconds": round(elapsed, 3), "events_per_second": round(count / elapsed, 1)}


def _batch_body(ids: list[str]) -> str:
    events = []
    for n in range(BATCH):
        event_type = TYPES[n % len(TYPES)]
        events.append({"identity": ids[n % len(ids)], "type": event_type, "data": event_data(event_type, n)})
    return json.dumps({"events": events})


def _http_rates(bench: Bench, server: Server, port: int, key: str, ids: list[str]) -> dict[str, Any]:
    """Measure events/s over HTTP, one event per request and BATCH per request, with wrk."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    single = LoadSpec(
        url=f"http://127.0.0.1:{port}{BASE_PATH}/identities/{ids[0]}/events",
        method="POST",
        headers=headers,
        bodies=[json.dumps({"type": "callRinging", "data": {"callId": "c-1", "from": "+34602128708"}})],
        connections=32,
    )
    batch = LoadSpec(
        url=f"http://127.0.0.1:{port}{BASE_PATH}/events/batch",
        method="POST",
        headers=headers,
        bodies=[_batch_body(ids)],
        connections=8,
    )
    figures: dict[str, Any] = {}
    for name, spec, per_request in (("single", single, 1), ("batch", batch, BATCH)):
        run_load(bench.procs, bench.wrk, replace(spec, seconds=2.0), bench.workdir, f"sa-{name}-warm")
        spec = replace(spec, seconds=bench.seconds(8, 3))  # noqa: PLW2901 - the measured run of the warmed spec
        cpu = server.cpu_seconds()
        with profiled(bench.procs, bench.profile_dir, f"serverapi-{name}", server, spec.seconds):
            result = run_load(bench.procs, bench.wrk, spec, bench.workdir, f"sa-{name}")
        figures[name] = {
            **result.as_dict(),
            "events_per_request": per_request,
            "events_per_second": round(result.rps * per_request, 1),
            "server_cpu_cores": round((server.cpu_seconds() - cpu) / result.seconds, 2) if result.seconds else None,
        }
    return figures


def _latencies(
    bench: Bench, server: Server, urls: list[str], ids: list[str], phases: list[tuple[str, fanout.Publisher, Any]]
) -> dict[str, Any]:
    """Open and prime scenario 4's sockets once, publish RATE events/s for the paced time in each way, close them."""
    client = WsLoad(bench.procs, "wsclient-serverapi")
    figures: dict[str, Any] = {}
    try:
        held = fanout.open_primed(client, urls, ids, phases[0][1])
        count = int(fanout.RATE * bench.seconds(10, 3))
        for label, publish, send in phases:
            paced = fanout.phase(bench, client, server, publish, ids, count, fanout.RATE, f"serverapi-{label}", send)
            figures[f"latency_{label}"] = {**held, "paced": paced}
        client.call({"cmd": "close"}, timeout=120)
        return figures
    finally:
        client.stop()


def run(bench: Bench) -> dict[str, Any]:
    """Measure publish throughput (Python, HTTP single, HTTP batch), then latency (Python, HTTP) on one VORA."""
    key = secrets.token_urlsafe(32)
    port = free_port()
    ids = identities("7600", IDENTITIES)
    figures: dict[str, Any] = {"batch_size": BATCH, "rate": fanout.RATE, "fan_out": fanout.FAN_OUT}
    with bench.vora_server(VORA_SERVER_API_KEYS=key, VORA_SERVER_API_PORT=str(port)) as server:
        check = HttpPublisher(port, key)
        try:
            answered = check.post("/events/batch", json.loads(_batch_body(ids)))
        finally:
            check.close()
        if answered["published"] != BATCH:
            raise RuntimeError(f"a batch of {BATCH} published {answered['published']}")
        figures["python"] = _python_rate(bench, ids, bench.seconds(8, 3))
        figures.update(_http_rates(bench, server, port, key, ids))
        tokens = bench.open_sessions(server, USER, ids, per_identity=fanout.SESSIONS)
        urls = [f"{server.ws_url}?token={token}" for token in tokens for _ in range(fanout.SOCKETS)]
        apart_port = free_port()
        # An instance of its own for the publishes, on the same Redis: the requests no longer share the loops
        # of the workers that write the frames, so what is left of the tail is the HTTP hop's own.
        with bench.vora_server(INGEST_WORKERS, VORA_SERVER_API_KEYS=key, VORA_SERVER_API_PORT=str(apart_port)):
            lanes, batches, apart = HttpLanes(port, key), HttpPublisher(port, key), HttpLanes(apart_port, key)
            try:
                phases = [
                    ("python", fanout.vora_publisher(bench.publisher), fanout.publish_events),
                    ("http_single", lanes, publish_in_lanes),
                    ("http_apart", apart, publish_in_lanes),
                    ("http", batches, publish_batches),
                ]
                figures.update(_latencies(bench, server, urls, ids, phases))
            finally:
                lanes.close()
                batches.close()
                apart.close()
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """HTTP events/s next to the Python publisher's; HTTP-path latency next to the Python path's."""
    python = figures.get("python")
    single, batch = figures.get("single"), figures.get("batch")
    lat_http, lat_python = figures.get("latency_http"), figures.get("latency_python")
    lat_single = figures.get("latency_http_single")
    if not python or not single or not batch or not lat_http or not lat_python or not lat_single:
        return []
    baseline = python["events_per_second"]
    paced_http, paced_python, paced_single = lat_http["paced"], lat_python["paced"], lat_single["paced"]
    apart = figures.get("latency_http_apart")
    checked = (paced_http, paced_single, *([apart["paced"]] if apart else []))
    lost = sum(paced["lost"] + paced["duplicates"] for paced in checked)
    lost += lat_http["unprimed"] + lat_http["wrong_start"]
    lag_ms = paced_http["publish"]["worst_lag_ms"]
    single_lag_ms = paced_single["publish"]["worst_lag_ms"]
    python_p99 = paced_python["latency_ms"]["p99_ms"]
    single_p99 = paced_single["latency_ms"]["p99_ms"]
    return [
        Row(
            "11 publish over HTTP, one event per request",
            single["events_per_second"],
            "ev/s",
            baseline,
            f">= {TARGET_SINGLE_RATIO:g} x Python publisher",
            single["errors"] == 0 and single["events_per_second"] >= TARGET_SINGLE_RATIO * baseline,
            note=f"{single['errors']} errors" if single["errors"] else "",
        ),
        Row(
            f"11 publish over HTTP, batches of {figures['batch_size']}",
            batch["events_per_second"],
            "ev/s",
            baseline,
            f">= {TARGET_BATCH_RATIO:g} x Python publisher",
            batch["errors"] == 0 and batch["events_per_second"] >= TARGET_BATCH_RATIO * baseline,
            note=f"{batch['errors']} errors" if batch["errors"] else "",
        ),
        Row(
            f"11 HTTP publish-to-socket p99 @ {figures['rate']:,} ev/s, one event per request "
            f"({LANES} connections, fan-out {figures['fan_out']})",
            single_p99,
            "ms",
            python_p99,
            f"<= {TARGET_P99_RATIO:g} x Python publisher",
            single_p99 <= TARGET_P99_RATIO * python_p99 and single_lag_ms <= 50,
            note=f"the HTTP publisher fell behind its schedule by up to {single_lag_ms:.0f} ms"
            if single_lag_ms > 50
            else "",
        ),
        *_apart_rows(figures),
        Row(
            f"11 HTTP publish-to-socket p99 @ {figures['rate']:,} ev/s, batches of {LATENCY_BATCH} "
            f"(fan-out {figures['fan_out']})",
            paced_http["latency_ms"]["p99_ms"],
            "ms",
            paced_python["latency_ms"]["p99_ms"],
            "(reported; baseline: Python publisher)",
            None,
            note=f"the HTTP publisher fell behind its schedule by up to {lag_ms:.0f} ms" if lag_ms > 50 else "",
        ),
        *_call_rows(paced_single["publish"].get("call_ms"), paced_python["publish"].get("call_ms")),
        *_loop_rows(paced_single.get("worker_loop"), paced_python.get("worker_loop")),
        Row("11 HTTP path events lost or duplicated", float(lost), "", None, "0", lost == 0, ratio=None),
    ]


def _apart_rows(figures: dict[str, Any]) -> list[Row]:
    """Set the one-event-per-request p99 with the publishes on an instance of their own beside the Python path's."""
    apart, python = figures.get("latency_http_apart"), figures.get("latency_python")
    if not apart or not python:
        return []
    lag_ms = apart["paced"]["publish"]["worst_lag_ms"]
    return [
        Row(
            f"11 HTTP publish-to-socket p99 @ {figures['rate']:,} ev/s, one event per request to an instance of "
            f"their own ({INGEST_WORKERS} worker, same Redis)",
            apart["paced"]["latency_ms"]["p99_ms"],
            "ms",
            python["paced"]["latency_ms"]["p99_ms"],
            "(reported; baseline: Python publisher)",
            None,
            note=f"the HTTP publisher fell behind its schedule by up to {lag_ms:.0f} ms" if lag_ms > 50 else "",
        )
    ]


def _loop_rows(single: dict[str, Any] | None, python: dict[str, Any] | None) -> list[Row]:
    """Say where the one-event-per-request tail is made: VORA's workers' loops and writes, next to the Python path's."""
    if not single or not python or not single["probes"] or not python["probes"] or not single["written"]:
        return []
    return [
        Row(
            "11 VORA workers, one event per request: loop probes later than 5 ms (every 50 ms)",
            worker_loop.late_share(single),
            "%",
            worker_loop.late_share(python),
            "(reported; baseline: the Python publisher's phase)",
            None,
            ratio=None,
        ),
        Row(
            "11 VORA workers, one event per request: p99 from publication to the write, at most",
            single["written_p99_at_most_ms"],
            "ms",
            python["written_p99_at_most_ms"],
            "(reported: bucket bounds, eventIds count whole ms; baseline: the Python publisher's phase)",
            None,
        ),
    ]


def _call_rows(single: dict[str, float] | None, python: dict[str, float] | None) -> list[Row]:
    """Set the way in of each path side by side: a publish request's round trip, the Python publisher's call."""
    if not single or not python:
        return []
    return [
        Row(
            f"11 one event per request: the publish call itself, {name} (the request's round trip)",
            single[key],
            "ms",
            python[key],
            "(reported; baseline: the Python publisher's call, its XADD's round trip)",
            None,
        )
        for name, key in (("median", "p50_ms"), ("p99", "p99_ms"))
    ]
