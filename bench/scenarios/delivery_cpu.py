"""Scenario 7, CPU per delivery: server CPU seconds per 100,000 deliveries at a paced 1,000 events/s.

The sockets are those of scenario 4 (50 identities x 20 subscribe-all sockets, fan-out 20), held
for a longer paced phase (PACED_SECONDS). CPU is user+system time of the gunicorn master and
workers (psutil) across the phase, so it covers the whole event path inside the server: the
pub/sub read, the hub, the filter, the envelope and the socket writes. Redis' own CPU over the
same phase is reported beside it (VORA appends to a stream through Lua; the baseline only
PUBLISHes). The p99 of the same phase is held against 1.5 times the baseline's. Both servers' sockets are
held at once and the phase alternates between them in rounds (fanout.interleaved).

Over Server-Sent Events (`--only delivery_cpu_sse`, the sse group) the same phase runs over
event streams, on VORA and on the baseline's bare Flask event stream, then over WebSocket on the
same VORA in the same run, for the SSE/WS ratio.
"""

from __future__ import annotations

from typing import Any

from bench import worker_loop
from bench.context import Bench, identities
from bench.report import Row
from bench.scenarios.fanout import FAN_OUT, RATE, ROUNDS, Leg, against_ws_rows, holding, interleaved, legs_of

USER = "bench-delivery-cpu"
PACED_SECONDS = 20
PER = 100_000  # deliveries the CPU figure is normalised to
TARGET_CPU_RATIO = 1.5
TARGET_P99_RATIO = 1.5  # issue 26 item 3 (was 3)
TARGET_REDIS_CPU_RATIO = 1.5  # issue 26 item 4


def _figures(leg: Leg, paced: dict[str, Any]) -> dict[str, Any]:
    """Return one leg's CPU per delivery, Redis' CPU and commands per event, beside its pooled paced phase."""
    deliveries, events = paced["deliveries"], paced["publish"]["events"]
    redis_cpu = paced["redis_cpu_seconds"]
    per_event = {
        command: {"calls": round(calls / events, 3), "usec": round(usec / events, 2)}
        for command, (calls, usec) in sorted(paced["redis_usage"].items(), key=lambda item: -item[1][1])
    }
    return {
        **leg.held,
        "paced": paced,
        "server_cpu_seconds": paced["server_cpu_seconds"],
        "redis_cpu_seconds": redis_cpu,
        "redis_commands_per_event": per_event,
        "server_cpu_seconds_per_100k": round(paced["server_cpu_seconds"] * PER / deliveries, 3) if deliveries else None,
        "redis_cpu_seconds_per_100k": round(redis_cpu * PER / deliveries, 3) if deliveries else None,
    }


def run(bench: Bench, transport: str = "ws") -> dict[str, Any]:
    """Hold scenario 4's sockets on VORA and the baseline at once through one long paced phase in rounds."""
    ids = identities("7610" if transport == "ws" else "7620", 50)
    figures: dict[str, Any] = {
        "transport": transport,
        "rate": RATE,
        "fan_out": FAN_OUT,
        "paced_seconds": bench.seconds(PACED_SECONDS, 4),
        "rounds": ROUNDS,
    }
    over = "" if transport == "ws" else f"-{transport}"
    with bench.servers() as (vora, baseline):
        legs = legs_of(bench, vora, baseline, USER + over, ids, transport)
        with holding(bench, legs, "delivery-cpu"):
            count = int(RATE * bench.seconds(PACED_SECONDS, 4))
            paced = interleaved(bench, legs, count, RATE, "delivery_cpu")
        for leg, key in zip(legs, ("vora", "baseline", "vora_ws"), strict=False):
            figures[key] = _figures(leg, paced[leg.label])
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """CPU per 100,000 deliveries and the paced p99, VORA next to the baseline."""
    vora, base = figures.get("vora"), figures.get("baseline")
    if not vora or not base or not vora["server_cpu_seconds_per_100k"] or not base["server_cpu_seconds_per_100k"]:
        return []
    cpu_ratio = vora["server_cpu_seconds_per_100k"] / base["server_cpu_seconds_per_100k"]
    p99_v, p99_b = vora["paced"]["latency_ms"]["p99_ms"], base["paced"]["latency_ms"]["p99_ms"]
    complete = vora["paced"]["lost"] + vora["paced"]["duplicates"] == 0
    where = f"@ {figures['rate']:,} ev/s, fan-out {figures['fan_out']}, {figures['paced_seconds']:g} s"
    if figures.get("transport", "ws") != "ws":
        return sse_rows(figures, where, complete)
    return [
        Row(
            f"7 server CPU per 100,000 deliveries {where}",
            vora["server_cpu_seconds_per_100k"],
            "s",
            base["server_cpu_seconds_per_100k"],
            f"<= {TARGET_CPU_RATIO:g} x baseline",
            cpu_ratio <= TARGET_CPU_RATIO and complete,
            note="" if complete else "events lost or duplicated",
        ),
        Row(
            "7 Redis CPU per 100,000 deliveries",
            vora["redis_cpu_seconds_per_100k"],
            "s",
            base["redis_cpu_seconds_per_100k"],
            f"<= {TARGET_REDIS_CPU_RATIO:g} x baseline (stream + Lua vs PUBLISH)",
            bool(base["redis_cpu_seconds_per_100k"])
            and vora["redis_cpu_seconds_per_100k"] <= TARGET_REDIS_CPU_RATIO * base["redis_cpu_seconds_per_100k"]
            and complete,
        ),
        Row(
            f"7 event latency p99 {where}",
            p99_v,
            "ms",
            p99_b,
            f"<= {TARGET_P99_RATIO:g} x baseline",
            p99_b > 0 and p99_v <= TARGET_P99_RATIO * p99_b,
        ),
        *worker_loop.rows("7", vora["paced"].get("worker_loop")),
    ]


def sse_rows(figures: dict[str, Any], where: str, complete: bool) -> list[Row]:
    """Scenario 7 over event streams: VORA next to the baseline's bare event stream, then next to WebSocket."""
    vora, base, ws = figures["vora"], figures["baseline"], figures.get("vora_ws")
    out = [
        Row(
            f"7 SSE server CPU per 100,000 deliveries {where}",
            vora["server_cpu_seconds_per_100k"],
            "s",
            base["server_cpu_seconds_per_100k"],
            "(reported: baseline = bare Flask event stream)",
            None,
            note="" if complete else "events lost or duplicated",
        ),
        Row(
            "7 SSE event latency p99",
            vora["paced"]["latency_ms"]["p99_ms"],
            "ms",
            base["paced"]["latency_ms"]["p99_ms"],
            "(reported)",
            None,
        ),
    ]
    if ws and ws["server_cpu_seconds_per_100k"]:
        out.append(
            Row(
                "7 SSE/WS server CPU per 100,000 deliveries (baseline column: VORA WebSocket, same run)",
                vora["server_cpu_seconds_per_100k"],
                "s",
                ws["server_cpu_seconds_per_100k"],
                "(reported)",
                None,
            )
        )
    return out + against_ws_rows(7, figures)
