"""Scenario 3, sockets per instance: idle authenticated sockets held against one instance with 2 gevent workers.

The load generator (one asyncio process per 15,000 sockets: a process may not hold more open
files here) opens sockets in steps, OPEN_CONCURRENCY handshakes at
a time, spread over SESSIONS sessions (one per identity, many sockets each). After each step
settles, the server's memory is the summed RSS of the gunicorn master and workers; the figure is
(RSS - idle RSS) / sockets. The baseline app holds the same sockets with flask-sock alone.

Browsers offer permessage-deflate, and the server accepts it; its zlib state is allocated with
the first message a socket sends. A second, smaller run (fresh servers, DEFLATE_SOCKETS sockets
offering it) measures memory per socket before and after one event reached each socket.

Over Server-Sent Events (`--only sockets_sse`, the sse group) the same steps hold idle event
streams: on VORA and on the baseline's bare Flask event stream, then over WebSocket on a fresh
VORA in the same run, so that the SSE/WS ratio compares like with like.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.context import WORKERS, Bench, identities
from bench.procs import Server
from bench.profiling import profiled
from bench.report import Row
from bench.scenarios.fanout import BaselinePublisher, Publisher, event_data, vora_publisher
from bench.wsclient import SOCKETS_PER_PROCESS, WsLoad, WsLoadPool

USER = "bench-sockets"
SESSIONS = 100
STEPS = (1000, 2500, 5000, 10_000)
QUICK_STEPS = (500, 1000)
OPEN_CONCURRENCY = 200
SETTLE_SECONDS = 2.0
TARGET_KB = 30.0  # the first target; the bare baseline alone needs ~41 KB
TARGET_RATIO = 1.05  # memory per socket against the bare flask-sock baseline (issue 11)
DEFLATE_SOCKETS = 1000
DEFLATE_WINDOW_BITS = 15


def _idle_rss(server: Server) -> int:
    samples = []
    for _ in range(3):
        samples.append(server.rss())
        time.sleep(0.2)
    return int(sum(samples) / len(samples))


def _steps(
    bench: Bench, server: Server, urls: list[str], steps: tuple[int, ...], label: str, load_processes: int | None
) -> dict[str, Any]:
    per_process = -(-steps[-1] // load_processes) if load_processes else SOCKETS_PER_PROCESS
    client = WsLoadPool(bench.procs, f"wsclient-sockets-{label}", steps[-1], per_process)
    try:
        # Warm up: one round of sockets, so that lazily imported code and pools are in the idle figure.
        client.call({"cmd": "open", "urls": urls[:20], "concurrency": 20}, timeout=60)
        client.call({"cmd": "close"}, timeout=60)
        time.sleep(SETTLE_SECONDS)
        idle = _idle_rss(server)
        results = []
        opened_up_to = 0
        for step in steps:
            if bench.remaining() < 60:
                bench.notes.append(f"sockets/{label}: stopped before {step} sockets to stay within the time limit")
                break
            command = {"cmd": "open", "urls": urls[opened_up_to:step], "concurrency": OPEN_CONCURRENCY}
            try:
                # 180 s, or 30 ms a socket for large steps: a busy machine accepts 20,000 slowly.
                # With --profile, the workers are sampled for the step's first seconds (at 500 accepts a second).
                with profiled(bench.procs, bench.profile_dir, f"{label}-{step}", server, (step - opened_up_to) / 500):
                    reply = client.call(command, timeout=max(180.0, 0.03 * (step - opened_up_to)))
            except RuntimeError as exc:  # the steps before it stand; the client is stopped below
                bench.notes.append(f"sockets/{label}: the step to {step:,} sockets did not finish: {exc}")
                break
            opened_up_to = step
            time.sleep(SETTLE_SECONDS)
            status = client.call({"cmd": "status"}, timeout=30)
            held = status["held"]
            rss = server.rss()
            results.append(
                {
                    "target": step,
                    "held": held,
                    "accept_seconds": reply["seconds"],
                    "accepted_per_second": round(reply["opened"] / reply["seconds"], 1) if reply["seconds"] else None,
                    "failed": reply["failed"],
                    "retried": reply.get("retried", {}),
                    "closed_by_server": status["closed"],
                    "rss_mib": round(rss / 2**20, 1),
                    "kb_per_socket": round((rss - idle) / held / 1024, 2) if held else None,
                    "per_worker": server.connections_per_worker(),
                    "rss_per_process_mib": [round(p.memory_info().rss / 2**20, 1) for p in server.processes()],
                    "client_cpu_seconds": status["cpu_seconds"],
                }
            )
        if len(results) == len(steps):
            client.call({"cmd": "close"}, timeout=180)
        return {"idle_rss_mib": round(idle / 2**20, 1), "source_addresses": client.sources, "steps": results}
    finally:
        client.stop()


def hold_steps(
    bench: Bench,
    user: str,
    ids: list[str],
    steps: tuple[int, ...],
    label: str,
    transport: str = "ws",
    with_baseline: bool = True,
    workers: int = WORKERS,
    load_processes: int | None = None,
) -> dict[str, Any]:
    """Hold idle sockets (or event streams) in steps on a fresh VORA, then on a fresh baseline; report memory.

    The load generator has one process per SOCKETS_PER_PROCESS sockets of the last step, or
    load_processes (each from a source address of its own when there are several).
    """
    figures: dict[str, Any] = {
        "sessions": len(ids),
        "open_concurrency": OPEN_CONCURRENCY,
        "transport": transport,
        "workers": workers,
    }
    with contextlib.ExitStack() as servers:
        if with_baseline:
            vora, baseline = servers.enter_context(bench.servers(workers=workers))
        else:
            vora, baseline = servers.enter_context(bench.vora_server(workers)), None
        tokens = bench.open_sessions(vora, user, ids, per_identity=1)
        vora_urls = [f"{vora.stream_url(transport)}?token={tokens[n % len(ids)]}" for n in range(steps[-1])]
        figures["vora"] = _steps(bench, vora, vora_urls, steps, f"{label}-vora", load_processes)
        if baseline is not None:
            base_urls = [f"{baseline.stream_url(transport)}?identity={ids[n % len(ids)]}" for n in range(steps[-1])]
            figures["baseline"] = _steps(bench, baseline, base_urls, steps, f"{label}-baseline", load_processes)
    return figures


def _deflate(
    bench: Bench, server: Server, urls: list[str], ids: list[str], publish: Publisher, label: str
) -> dict[str, Any]:
    """Hold sockets that negotiated permessage-deflate; measure memory before and after one event each."""
    client = WsLoad(bench.procs, f"wsclient-deflate-{label}")
    try:
        client.call({"cmd": "open", "urls": urls[:20], "concurrency": 20, "compress": DEFLATE_WINDOW_BITS}, timeout=60)
        client.call({"cmd": "close"}, timeout=60)
        time.sleep(SETTLE_SECONDS)
        idle = _idle_rss(server)
        command = {"cmd": "open", "urls": urls, "concurrency": OPEN_CONCURRENCY, "compress": DEFLATE_WINDOW_BITS}
        opened = client.call(command, timeout=120)
        time.sleep(SETTLE_SECONDS)
        before = server.rss()
        first = {identity: publish(identity, "presence", event_data("presence", 0)) for identity in ids}
        primed = client.call({"cmd": "wait_primed", "first": first, "timeout": 20}, timeout=60)
        time.sleep(SETTLE_SECONDS)
        after = server.rss()
        held = primed["held"]
        client.call({"cmd": "close"}, timeout=120)
        return {
            "sockets": held,
            "deflate_window_bits": opened["deflate_window_bits"],
            "unprimed": primed["unprimed"],
            "kb_per_socket_idle": round((before - idle) / held / 1024, 2) if held else None,
            "kb_per_socket_after_one_event": round((after - idle) / held / 1024, 2) if held else None,
        }
    finally:
        client.stop()


def run(bench: Bench, transport: str = "ws") -> dict[str, Any]:
    """Hold up to 10,000 idle sockets on VORA, then on the baseline app, measuring memory and accept time."""
    steps = QUICK_STEPS if bench.quick else STEPS
    if transport == "sse":
        return run_event_streams(bench, steps)
    ids = identities("7300", SESSIONS)
    figures = hold_steps(bench, USER, ids, steps, "sockets")
    if bench.remaining() < 40:
        bench.notes.append("sockets: the permessage-deflate run was skipped to stay within the time limit")
        return figures
    count = min(DEFLATE_SOCKETS, steps[-1])
    with bench.servers() as (vora, baseline):
        tokens = bench.open_sessions(vora, USER + "-deflate", ids, per_identity=1)
        vora_urls = [f"{vora.ws_url}?token={tokens[n % SESSIONS]}" for n in range(count)]
        base_urls = [f"{baseline.ws_url}?identity={ids[n % SESSIONS]}" for n in range(count)]
        figures["deflate"] = {
            "vora": _deflate(bench, vora, vora_urls, ids, vora_publisher(bench.publisher), "vora"),
            "baseline": _deflate(bench, baseline, base_urls, ids, BaselinePublisher(bench.redis), "baseline"),
        }
    return figures


def run_event_streams(bench: Bench, steps: tuple[int, ...]) -> dict[str, Any]:
    """Hold idle event streams on VORA and on the baseline, then WebSockets on a fresh VORA of the same run."""
    ids = identities("7310", SESSIONS)
    figures = hold_steps(bench, USER + "-sse", ids, steps, "sockets-sse", transport="sse")
    if bench.remaining() < 60:
        bench.notes.append("sockets_sse: the WebSocket run beside it was skipped to stay within the time limit")
        return figures
    figures["vora_ws"] = hold_steps(bench, USER + "-sse-ws", ids, steps, "sockets-sse-ws", with_baseline=False)["vora"]
    return figures


def sse_rows(figures: dict[str, Any]) -> list[Row]:
    """Memory per idle event stream and accept time at each step against the baseline's, then against WebSocket."""
    out = []
    vora_steps = figures.get("vora", {}).get("steps", [])
    base_steps = {s["target"]: s for s in figures.get("baseline", {}).get("steps", [])}
    ws_steps = {s["target"]: s for s in figures.get("vora_ws", {}).get("steps", [])}
    for step in vora_steps:
        base = base_steps.get(step["target"], {})
        complete = step["held"] >= step["target"] and base.get("held", 0) >= step["target"]
        note = "" if complete else f"only {step['held']} / {base.get('held', 0)} held"
        out.append(
            Row(
                f"3 SSE memory per stream @ {step['target']:,} streams",
                step["kb_per_socket"],
                "KB",
                base.get("kb_per_socket"),
                "(reported: baseline = bare Flask event stream)",
                None,
                note=note,
            )
        )
        out.append(
            Row(
                f"3 SSE time to accept step to {step['target']:,}",
                step["accept_seconds"],
                "s",
                base.get("accept_seconds"),
                "(reported)",
                None,
            )
        )
    for step in vora_steps[-1:]:
        ws = ws_steps.get(step["target"], {})
        complete = step["held"] >= step["target"] and ws.get("held", 0) >= step["target"]
        out.append(
            Row(
                f"3 SSE/WS memory per stream @ {step['target']:,} (baseline column: VORA WebSocket, same run)",
                step["kb_per_socket"],
                "KB",
                ws.get("kb_per_socket"),
                "(reported)",
                None,
                note="" if complete else f"only {step['held']} / {ws.get('held', 0)} held",
            )
        )
    return out


def step_rows(figures: dict[str, Any], number: int, target_at: int) -> list[Row]:
    """Memory per socket and accept time at each step; the target applies at target_at sockets."""
    out = []
    vora_steps = figures.get("vora", {}).get("steps", [])
    base_steps = {s["target"]: s for s in figures.get("baseline", {}).get("steps", [])}
    for step in vora_steps:
        base = base_steps.get(step["target"], {})
        targeted = step["target"] == target_at
        complete = step["held"] >= step["target"] and base.get("held", 0) >= step["target"]
        kb, base_kb = step["kb_per_socket"], base.get("kb_per_socket")
        out.append(
            Row(
                f"{number} memory per socket @ {step['target']:,} sockets",
                kb,
                "KB",
                base_kb,
                f"<= {TARGET_RATIO:g} x baseline (was {TARGET_KB:g} KB)" if targeted else "(step)",
                (complete and kb is not None and bool(base_kb) and kb <= TARGET_RATIO * base_kb) if targeted else None,
                note="" if complete else f"only {step['held']} / {base.get('held', 0)} held",
            )
        )
        out.append(
            Row(
                f"{number} time to accept step to {step['target']:,}",
                step["accept_seconds"],
                "s",
                base.get("accept_seconds"),
                "(reported)",
                None,
            )
        )
    return out


def rows(figures: dict[str, Any]) -> list[Row]:
    """Memory per socket and accept time at each step, VORA next to the baseline, and the deflate run."""
    if figures.get("transport") == "sse":
        return sse_rows(figures)
    out = step_rows(figures, 3, 10_000)
    deflate = figures.get("deflate")
    if deflate:
        vora, base = deflate["vora"], deflate["baseline"]
        out.append(
            Row(
                f"3 memory per socket, {vora['sockets']:,} with permessage-deflate, after 1 event",
                vora["kb_per_socket_after_one_event"],
                "KB",
                base["kb_per_socket_after_one_event"],
                "(reported: browsers offer it)",
                None,
            )
        )
    return out
