"""Scenario 4, event latency and fan-out: 1,000 subscribed sockets, events published at a fixed rate.

IDENTITIES identities each hold SESSIONS sessions of SOCKETS sockets (subscribe-all, every
scope), so each event goes to FAN_OUT sockets. A primer event per identity proves every socket is
live; then RATE events/s for the paced phase (latency), then BURST events as fast as one
publisher goes (capacity). Every socket checks sequenceNumber +1; the publisher stamps each event
with its monotonic clock in data. The baseline relays the same envelopes over a bare Redis channel.

Over Server-Sent Events (`--only fanout_sse`, the sse group) the same phases run over 1,000 event
streams, on VORA and on the baseline's bare Flask event stream, then over WebSocket on the same
VORA in the same run, for the SSE/WS ratio.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from bench import worker_loop
from bench.baseline_app import CHANNEL
from bench.context import Bench, identities
from bench.procs import Server
from bench.profiling import profiled
from bench.report import Row
from bench.wsclient import WsLoad, stamp
from vora.core.clock import utc_timestamp
from vora.events.publisher import EventPublisher

USER = "bench-fanout"
IDENTITIES = 50
SESSIONS = 2
SOCKETS = 10
FAN_OUT = SESSIONS * SOCKETS
RATE = 1000
TYPES = ("callRinging", "presence", "recordingStarted")
TARGET_P99_RATIO = 1.5  # issue 26 item 3: the tail within 1.5 x the bare baseline's, same run
TARGET_DELIVERIES = 20_000
REDIS_STALL_MS = 5  # Redis' own stalls the phases report (its latency monitor's threshold)
ROUNDS = 4  # a paced phase is split into rounds that alternate between the servers compared


class Publisher(Protocol):
    """Publish one event and return its sequence number."""

    def __call__(self, identity: str, event_type: str, data: dict[str, Any]) -> int:
        """Publish the event."""


def vora_publisher(publisher: EventPublisher) -> Publisher:
    """Publish through VORA's own EventPublisher (validation, stream, Lua, pub/sub)."""

    def publish(identity: str, event_type: str, data: dict[str, Any]) -> int:
        return publisher.publish(identity, event_type, data).sequence_number

    return publish


@dataclass
class BaselinePublisher:
    """Publish the same envelope straight to the baseline app's Redis channel."""

    client: redis.Redis
    sequences: dict[str, int] = field(default_factory=dict)

    def __call__(self, identity: str, event_type: str, data: dict[str, Any]) -> int:
        """Give the event the next number, build its envelope and PUBLISH it."""
        sequence = self.sequences.get(identity, 0) + 1
        self.sequences[identity] = sequence
        envelope = {
            "eventId": f"{int(time.time() * 1000)}-{sequence}",
            "sequenceNumber": sequence,
            "identity": identity,
            "type": event_type,
            "timestamp": utc_timestamp(),
            "data": data,
        }
        self.client.publish(CHANNEL, f"{identity} {json.dumps(envelope)}")
        return sequence


def event_data(event_type: str, n: int) -> dict[str, Any]:
    """Return a valid payload of event_type that carries the publish time."""
    if event_type == "presence":
        return {"status": "busy", "note": stamp()}
    if event_type.startswith("recording"):
        return {"callId": f"c-{n}", "recordingId": f"r-{n}", "reason": stamp()}
    return {"callId": f"c-{n}", "reason": stamp()}


class Schedule:
    """Pace publishing onto one fixed schedule of rate events/s (None: as fast as possible), noting the worst lag."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.worst_lag = 0.0
        self.calls: list[float] = []  # seconds each publish call took (appended from any lane's thread)

    def timed(self, publish: Callable[[], int]) -> int:
        """Make one publish call and note how long it took: the event's way into Redis and its answer."""
        started = time.monotonic()
        sequence = publish()
        self.calls.append(time.monotonic() - started)
        return sequence

    def wait_for(self, n: int) -> None:
        """Sleep until event n's slot, or note how late it is."""
        if not self.rate:
            return
        due = self.started + n / self.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            self.worst_lag = max(self.worst_lag, now - due)

    def report(self, count: int, final: dict[str, int]) -> dict[str, Any]:
        """Summarise a finished phase of count events with each identity's last sequence number."""
        elapsed = time.monotonic() - self.started
        return {
            "events": count,
            "started": self.started,
            "seconds": round(elapsed, 3),
            "events_per_second": round(count / elapsed, 1),
            "worst_lag_ms": round(self.worst_lag * 1000, 2),
            "call_ms": call_percentiles(self.calls),
            "final": final,
        }


def call_percentiles(calls: list[float]) -> dict[str, float] | None:
    """Summarise publish calls' durations in ms: median and p99 (None: no call was made)."""
    if not calls:
        return None
    ordered = sorted(calls)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 3)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99)}


def publish_events(publish: Publisher, ids: list[str], count: int, rate: float | None) -> dict[str, Any]:
    """Publish count events round-robin over ids, at rate per second (None: as fast as possible)."""
    final: dict[str, int] = {}
    schedule = Schedule(rate)
    gc.disable()  # the publisher's own collections would delay events after their time was stamped
    try:
        for n in range(count):
            schedule.wait_for(n)
            identity = ids[n % len(ids)]
            event_type = TYPES[n % len(TYPES)]
            data = event_data(event_type, n)
            final[identity] = schedule.timed(lambda: publish(identity, event_type, data))  # noqa: B023 - called at once
    finally:
        gc.enable()
    return schedule.report(count, final)


# Publish a phase: (publisher, identities, count, rate or None) -> what publish_events returns.
Sender = Callable[[Publisher, list[str], int, float | None], dict[str, Any]]


def phase(
    bench: Bench,
    client: WsLoad,
    server: Server,
    publish: Publisher,
    ids: list[str],
    count: int,
    rate: float | None,
    name: str,
    send: Sender = publish_events,
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """Publish count events at rate (None: flat out) to primed sockets; report deliveries, latency and CPU.

    With keep, the load generator goes on counting from its last phase (latency and deliveries pooled).
    """
    client.call({"cmd": "reset", "keep": True} if keep else {"cmd": "reset"}, timeout=30)
    cpu = server.cpu_seconds()
    client_cpu = client.cpu_seconds()
    redis_cpu, usage_before = bench.redis_cpu_seconds(), command_usage(bench)
    loop_before = worker_loop.snapshot(server)
    reset_redis_stalls(bench)
    with profiled(bench.procs, bench.profile_dir, name, server, count / (rate or 3000)):
        published = send(publish, ids, count, rate)
        report = client.call({"cmd": "expect", "final": published.pop("final"), "timeout": 30}, timeout=60)
    redis_cpu = bench.redis_cpu_seconds() - redis_cpu
    redis_usage = usage_between(usage_before, command_usage(bench))
    loop = worker_loop.between(loop_before, worker_loop.snapshot(server))
    redis_stalls = redis_stalls_since_reset(bench)
    span = (report["last_receive"] or published["started"]) - published["started"]
    expected = count * FAN_OUT
    return {
        "publish": published,
        "deliveries": report["deliveries"],
        "expected_deliveries": expected,
        "lost": report["gaps"] + report["missing_at_end"],
        "duplicates": report["duplicates"],
        "deliveries_per_second": round(report["deliveries"] / span, 1) if span > 0 else None,
        "latency_ms": {k: report[k] for k in ("p50_ms", "p99_ms", "max_ms", "mean_ms")},
        "latency_samples": report["latency_samples"],
        "stalls": report["stalls"],
        "client_gc": report.get("client_gc"),  # the Node load generator of the peers group has no collector to report
        "server_cpu_seconds": round(server.cpu_seconds() - cpu, 3),
        "server_cpu_cores": round((server.cpu_seconds() - cpu) / span, 2) if span > 0 else None,
        "client_cpu_cores": round((client.cpu_seconds() - client_cpu) / span, 2) if span > 0 else None,
        "sockets_closed": report["closed"],
        "close_codes": report["close_codes"],
        "span_seconds": round(span, 3),
        "redis_cpu_seconds": round(redis_cpu, 3),
        "redis_usage": redis_usage,
        "worker_loop": loop,  # VORA's workers' loop lag and garbage collections over the phase (None: baseline)
        "redis_stalls_ms": redis_stalls,  # Redis' own longest stall per kind, of REDIS_STALL_MS or more
    }


def reset_redis_stalls(bench: Bench) -> None:
    """Make Redis note its own stalls of REDIS_STALL_MS or more (LATENCY monitor), from now on."""
    bench.redis.config_set("latency-monitor-threshold", REDIS_STALL_MS)
    bench.redis.execute_command("LATENCY", "RESET")


def redis_stalls_since_reset(bench: Bench) -> dict[str, int]:
    """Return the longest stall Redis noted per kind (command, expire-cycle, fork, ...) since the reset, in ms."""
    noted = bench.redis.execute_command("LATENCY", "LATEST")
    return {(kind.decode() if isinstance(kind, bytes) else str(kind)): int(longest) for kind, _, _, longest in noted}


def command_usage(bench: Bench) -> dict[str, tuple[int, int]]:
    """Return Redis' calls and microseconds so far, per command (scripts' inner commands included)."""
    stats = bench.redis_info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(f["calls"]), int(f["usec"])) for name, f in stats.items()}


def usage_between(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Return the calls and microseconds each command added between two snapshots."""
    out = {}
    for name, (calls, usec) in after.items():
        calls_0, usec_0 = before.get(name, (0, 0))
        if calls > calls_0:
            out[name] = [calls - calls_0, usec - usec_0]
    return out


@dataclass
class Leg:
    """One side of a comparison: a server, the socket URLs it is measured with, their identities and publisher."""

    label: str
    server: Server
    urls: list[str]
    ids: list[str]
    publish: Publisher
    client: WsLoad | None = None
    held: dict[str, Any] = field(default_factory=dict)

    @property
    def load(self) -> WsLoad:
        """Return the load generator holding this leg's sockets."""
        if self.client is None:
            raise RuntimeError(f"the sockets of {self.label} are not open")
        return self.client


@contextlib.contextmanager
def holding(bench: Bench, legs: list[Leg], name: str) -> Iterator[None]:
    """Open and prime every leg's sockets, each in a load generator of its own, for the block; close them after."""
    try:
        for leg in legs:
            leg.client = WsLoad(bench.procs, f"wsclient-{name}-{leg.label}")
            leg.held = open_primed(leg.client, leg.urls, leg.ids, leg.publish)
            # An uneven split of the sockets over the workers sets the tail: record it.
            leg.held["per_worker"] = sorted(leg.server.connections_per_worker().values(), reverse=True)
        yield
        for leg in legs:
            leg.load.call({"cmd": "close"}, timeout=120)
    finally:
        for leg in legs:
            if leg.client is not None:
                leg.client.stop()
                leg.client = None


def interleaved(bench: Bench, legs: list[Leg], count: int, rate: float, name: str) -> dict[str, dict[str, Any]]:
    """Publish count events at rate to each leg in ROUNDS alternating rounds; pool each leg's figures.

    The machine changes over seconds (other work, the host): one leg's whole phase after the
    other's compared a calm minute with a busy one, and the tails swung from 0.2 x to 5.7 x between
    runs of one tree. Short alternating rounds, the order reversed every round, expose every leg
    to the same changes.
    """
    rounds: dict[str, list[dict[str, Any]]] = {leg.label: [] for leg in legs}
    per_round = max(1, count // ROUNDS)
    for number in range(ROUNDS):
        for leg in legs if number % 2 == 0 else legs[::-1]:
            result = phase(
                bench, leg.load, leg.server, leg.publish, leg.ids, per_round, rate, f"{name}-{leg.label}-{number}",
                keep=number > 0,
            )  # fmt: skip
            rounds[leg.label].append(result)
    return {label: pooled(results) for label, results in rounds.items()}


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge one leg's rounds: counts and CPU summed; latency, losses and stalls from the last (it pooled them)."""
    last = rounds[-1]
    span = sum(r["span_seconds"] for r in rounds)
    cpu = sum(r["server_cpu_seconds"] for r in rounds)
    client_cores = sum((r["client_cpu_cores"] or 0) * r["span_seconds"] for r in rounds)
    usage: dict[str, list[int]] = {}
    for r in rounds:
        for command, (calls, usec) in r["redis_usage"].items():
            total = usage.setdefault(command, [0, 0])
            total[0] += calls
            total[1] += usec
    events = sum(r["publish"]["events"] for r in rounds)
    seconds = sum(r["publish"]["seconds"] for r in rounds)
    return {
        **last,
        "rounds": len(rounds),
        "publish": {
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_second": round(events / seconds, 1) if seconds else None,
            "worst_lag_ms": max(r["publish"]["worst_lag_ms"] for r in rounds),
        },
        "expected_deliveries": sum(r["expected_deliveries"] for r in rounds),
        "deliveries_per_second": round(last["deliveries"] / span, 1) if span > 0 else None,
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_cores": round(cpu / span, 2) if span > 0 else None,
        "client_cpu_cores": round(client_cores / span, 2) if span > 0 else None,
        "span_seconds": round(span, 3),
        "redis_cpu_seconds": round(sum(r["redis_cpu_seconds"] for r in rounds), 3),
        "redis_usage": usage,
        "worker_loop": worker_loop.merged([r.get("worker_loop") for r in rounds]),
        "redis_stalls_ms": {
            kind: max(r["redis_stalls_ms"].get(kind, 0) for r in rounds)
            for kind in sorted({kind for r in rounds for kind in r.get("redis_stalls_ms", {})})
        },
    }


def open_primed(client: WsLoad, urls: list[str], ids: list[str], publish: Publisher) -> dict[str, Any]:
    """Open the sockets and wait until each has its identity's primer event; report how that went."""
    opened = client.call({"cmd": "open", "urls": urls, "concurrency": 100}, timeout=120)
    time.sleep(0.5)  # the hub registers a socket just after its upgrade answer
    first = {identity: publish(identity, "presence", event_data("presence", 0)) for identity in ids}
    primed = client.call({"cmd": "wait_primed", "first": first, "timeout": 20}, timeout=60)
    return {
        "sockets": opened["held"],
        "open_seconds": opened["seconds"],
        "open_failed": opened["failed"],
        "unprimed": primed["unprimed"],
        "wrong_start": primed["wrong_start"],
        "replayed_before_primer": primed.get("replayed_before_primer", 0),
    }


def socket_urls(
    bench: Bench, vora: Server, baseline: Server, user: str, ids: list[str], transport: str = "ws"
) -> tuple[list[str], list[str]]:
    """Open SESSIONS subscribe-all sessions per identity; return FAN_OUT socket URLs per identity on each server."""
    tokens = bench.open_sessions(vora, user, ids, per_identity=SESSIONS)
    vora_urls = [f"{vora.stream_url(transport)}?token={token}" for token in tokens for _ in range(SOCKETS)]
    base_urls = [f"{baseline.stream_url(transport)}?identity={identity}" for identity in ids for _ in range(FAN_OUT)]
    return vora_urls, base_urls


def legs_of(bench: Bench, vora: Server, baseline: Server, user: str, ids: list[str], transport: str) -> list[Leg]:
    """Return the legs compared: VORA and the baseline over the transport, then VORA over WebSocket when it is SSE.

    The WebSocket leg has identities of its own: its sockets stay open beside the others' and
    must not receive their events.
    """
    vora_urls, base_urls = socket_urls(bench, vora, baseline, user, ids, transport)
    publish = vora_publisher(bench.publisher)
    over = "" if transport == "ws" else f"-{transport}"
    legs = [
        Leg("vora" + over, vora, vora_urls, ids, publish),
        Leg("baseline" + over, baseline, base_urls, ids, BaselinePublisher(bench.redis)),
    ]
    if transport != "ws":
        ws_ids = identities(ids[0][:3] + "9", len(ids))
        ws_urls, _ = socket_urls(bench, vora, baseline, f"{user}-ws", ws_ids)
        legs.append(Leg("vora-ws", vora, ws_urls, ws_ids, publish))
    return legs


def run(bench: Bench, transport: str = "ws") -> dict[str, Any]:
    """Hold VORA's and the baseline's sockets (and VORA over WS, for SSE) at once; alternate their paced rounds."""
    ids = identities("7400" if transport == "ws" else "7410", IDENTITIES)
    figures: dict[str, Any] = {
        "transport": transport,
        "identities": IDENTITIES,
        "sessions_per_identity": SESSIONS,
        "sockets_per_session": SOCKETS,
        "fan_out": FAN_OUT,
        "rate": RATE,
        "rounds": ROUNDS,
    }
    with bench.servers() as (vora, baseline):
        legs = legs_of(bench, vora, baseline, USER + ("" if transport == "ws" else f"-{transport}"), ids, transport)
        with holding(bench, legs, "fanout"):
            paced = interleaved(bench, legs, int(RATE * bench.seconds(10, 3)), RATE, "fanout-paced")
            burst_count = int(bench.seconds(5000, 1500))
            for leg, key in zip(legs, ("vora", "baseline", "vora_ws"), strict=False):
                burst = phase(
                    bench, leg.load, leg.server, leg.publish, leg.ids, burst_count, None, f"fanout-{leg.label}-burst"
                )
                figures[key] = {**leg.held, "paced": paced[leg.label], "burst": burst}
    return figures


def against_ws_rows(number: int, figures: dict[str, Any], paced: str = "paced") -> list[Row]:
    """Put the event-stream figures of a run over SSE next to the same run's VORA over WebSocket."""
    sse, ws = figures.get("vora"), figures.get("vora_ws")
    if not sse or not ws:
        return []
    where = "(baseline column: VORA WebSocket, same run)"
    out = [
        Row(
            f"{number} SSE/WS event latency p99 {where}",
            sse[paced]["latency_ms"]["p99_ms"],
            "ms",
            ws[paced]["latency_ms"]["p99_ms"],
            "(reported)",
            None,
        ),
    ]
    if "burst" in sse and "burst" in ws:
        out.append(
            Row(
                f"{number} SSE/WS deliveries/s, burst {where}",
                sse["burst"]["deliveries_per_second"],
                "/s",
                ws["burst"]["deliveries_per_second"],
                "(reported)",
                None,
            )
        )
    return out


def rows(figures: dict[str, Any]) -> list[Row]:
    """Latency, deliveries per second and losses, VORA next to the baseline."""
    vora, base = figures.get("vora"), figures.get("baseline")
    if not vora or not base:
        return []
    paced_v, paced_b = vora["paced"], base["paced"]
    burst_v, burst_b = vora["burst"], base["burst"]
    lost_v = sum(p["lost"] + p["duplicates"] for p in (paced_v, burst_v)) + vora["unprimed"] + vora["wrong_start"]
    lost_b = sum(p["lost"] + p["duplicates"] for p in (paced_b, burst_b)) + base["unprimed"] + base["wrong_start"]
    if figures.get("transport", "ws") != "ws":
        return sse_rows(figures, lost_v, lost_b)
    sockets = f"{vora['sockets']:,} sockets, fan-out {figures['fan_out']}"
    return [
        Row(
            f"4 event latency p99 @ {figures['rate']:,} ev/s ({sockets})",
            paced_v["latency_ms"]["p99_ms"],
            "ms",
            paced_b["latency_ms"]["p99_ms"],
            f"<= {TARGET_P99_RATIO:g} x baseline",
            bool(paced_b["latency_ms"]["p99_ms"])
            and paced_v["latency_ms"]["p99_ms"] <= TARGET_P99_RATIO * paced_b["latency_ms"]["p99_ms"],
        ),
        Row(
            "4 event latency p50",
            paced_v["latency_ms"]["p50_ms"],
            "ms",
            paced_b["latency_ms"]["p50_ms"],
            "(reported)",
            None,
        ),
        Row(
            "4 event latency max",
            paced_v["latency_ms"]["max_ms"],
            "ms",
            paced_b["latency_ms"]["max_ms"],
            "(reported)",
            None,
        ),
        *worker_loop.rows("4", paced_v.get("worker_loop")),
        Row(
            f"4 Redis' own longest stall (of {REDIS_STALL_MS} ms or more) in each server's rounds",
            float(max(paced_v.get("redis_stalls_ms", {}).values(), default=0)),
            "ms",
            float(max(paced_b.get("redis_stalls_ms", {}).values(), default=0)),
            "(reported: Redis' latency monitor)",
            None,
            ratio=None,
        ),
        Row(
            f"4 deliveries/s, paced {figures['rate']:,} ev/s",
            paced_v["deliveries_per_second"],
            "/s",
            paced_b["deliveries_per_second"],
            "(offered: rate x fan-out)",
            None,
        ),
        Row(
            "4 deliveries/s, burst (capacity)",
            burst_v["deliveries_per_second"],
            "/s",
            burst_b["deliveries_per_second"],
            f">= {TARGET_DELIVERIES:,}/s",
            (burst_v["deliveries_per_second"] or 0) >= TARGET_DELIVERIES,
        ),
        Row("4 events lost or duplicated", float(lost_v), "", float(lost_b), "0", lost_v == 0, ratio=None),
    ]


def sse_rows(figures: dict[str, Any], lost_v: int, lost_b: int) -> list[Row]:
    """Scenario 4 over event streams: VORA next to the baseline's bare event stream, then next to WebSocket."""
    paced_v, paced_b = figures["vora"]["paced"], figures["baseline"]["paced"]
    burst_v, burst_b = figures["vora"]["burst"], figures["baseline"]["burst"]
    streams = f"{figures['vora']['sockets']:,} streams, fan-out {figures['fan_out']}"
    ws = figures.get("vora_ws")
    lost_ws = 0
    if ws:
        lost_ws = sum(ws[p]["lost"] + ws[p]["duplicates"] for p in ("paced", "burst"))
        lost_ws += ws["unprimed"] + ws["wrong_start"]
    return [
        Row(
            f"4 SSE event latency p99 @ {figures['rate']:,} ev/s ({streams})",
            paced_v["latency_ms"]["p99_ms"],
            "ms",
            paced_b["latency_ms"]["p99_ms"],
            f"(reported; WebSocket's target: <= {TARGET_P99_RATIO:g} x baseline)",
            None,
        ),
        Row(
            "4 SSE event latency p50",
            paced_v["latency_ms"]["p50_ms"],
            "ms",
            paced_b["latency_ms"]["p50_ms"],
            "(reported)",
            None,
        ),
        Row(
            f"4 SSE deliveries/s, paced {figures['rate']:,} ev/s",
            paced_v["deliveries_per_second"],
            "/s",
            paced_b["deliveries_per_second"],
            "(offered: rate x fan-out; less: the publisher fell behind)",
            None,
        ),
        Row(
            "4 SSE deliveries/s, burst (capacity)",
            burst_v["deliveries_per_second"],
            "/s",
            burst_b["deliveries_per_second"],
            "(reported)",
            None,
        ),
        Row("4 SSE events lost or duplicated", float(lost_v), "", float(lost_b), "0", lost_v == 0, ratio=None),
        *against_ws_rows(4, figures),
        *(
            [Row("4 WS events lost or duplicated (same run)", float(lost_ws), "", None, "0", lost_ws == 0, ratio=None)]
            if ws
            else []
        ),
    ]
