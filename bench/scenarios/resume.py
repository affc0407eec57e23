"""Scenario 5, resume cost: a client that missed 1,000 events reconnects with lastEventId and catches up.

Each round publishes MISSED events while no socket is open, then times, in the load-generator
process, from the connect call to the MISSED-th event received (sequence numbers checked). The
baseline app replays the same 1,000 stream entries with one XRANGE and no VORA logic.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.context import Bench
from bench.report import Row
from bench.scenarios.fanout import TYPES, event_data
from bench.wsclient import WsLoad

USER = "bench-resume"
IDENTITY = "7500000000"
MISSED = 1000
TARGET_MS = 100.0


def run(bench: Bench) -> dict[str, Any]:
    """Time ROUNDS resumes of MISSED events on VORA and on the baseline app (one warm-up round first)."""
    rounds = int(bench.seconds(7, 2))
    results: dict[str, list[dict[str, Any]]] = {"vora": [], "baseline": []}
    with bench.servers() as (vora, baseline):
        token = bench.open_sessions(vora, USER, [IDENTITY], per_identity=1)[0]
        last = bench.publisher.publish(IDENTITY, "presence", event_data("presence", 0))
        client = WsLoad(bench.procs, "wsclient-resume")
        try:
            for round_number in range(rounds + 1):
                published = last
                for n in range(MISSED):
                    event_type = TYPES[n % len(TYPES)]
                    published = bench.publisher.publish(IDENTITY, event_type, event_data(event_type, n))
                urls = {
                    "vora": f"{vora.ws_url}?token={token}&lastEventId={last.event_id}",
                    "baseline": f"{baseline.ws_url}?identity={IDENTITY}&lastEventId={last.event_id}",
                }
                order = ["vora", "baseline"] if round_number % 2 else ["baseline", "vora"]
                for label in order:
                    reply = client.call(
                        {"cmd": "resume", "url": urls[label], "count": MISSED, "timeout": 10}, timeout=30
                    )
                    reply["expected_first"] = last.sequence_number + 1
                    if round_number:  # round 0 warms both servers up
                        results[label].append(reply)
                last = published
        finally:
            client.stop()
    figures: dict[str, Any] = {"missed": MISSED, "rounds": rounds}
    for label, replies in results.items():
        times = [r["ms"] for r in replies]
        complete = all(
            r["received"] == MISSED and r["gaps"] == 0 and r["first"] == r["expected_first"] for r in replies
        )
        figures[label] = {
            "median_ms": round(statistics.median(times), 2) if times else None,
            "max_ms": round(max(times), 2) if times else None,
            "complete": complete,
            "rounds": replies,
        }
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """Median catch-up time (and the worst round), VORA next to the baseline."""
    vora, base = figures.get("vora"), figures.get("baseline")
    if not vora or not base or vora["median_ms"] is None:
        return []
    return [
        Row(
            f"5 resume after {figures['missed']:,} missed events (median of {figures['rounds']})",
            vora["median_ms"],
            "ms",
            base["median_ms"],
            f"<= {TARGET_MS:g} ms",
            vora["median_ms"] <= TARGET_MS and vora["complete"],
            note="" if vora["complete"] else "incomplete or out of order",
        ),
        Row("5 resume, worst round", vora["max_ms"], "ms", base["max_ms"], "(reported)", None),
    ]
