"""The socket load generator: an asyncio process (`python -m bench.wsclient`) driven by JSON lines.

It holds WebSockets (`ws://…/vora/ws`) and Server-Sent Events streams (`http://…/vora/sse`,
bench/sseclient.py) alike: the URL says which, and every command works over either.

The benchmark sends one command a line on stdin and reads one JSON reply a line on stdout:
open sockets, wait until each has its first event, check sequence numbers and measure latency,
time a resume, close everything. Each socket checks that sequenceNumber grows by exactly one;
a publisher puts `t<monotonic ns>` in data.note (presence) or data.reason (call, recording),
which gives the publish-to-receive latency (one machine, one monotonic clock).

This client is the reference. bench/peers/wsload.js is a second engine of it in Node, for
WebSockets only and the commands the reconnect storm uses, so that the load generator takes
less of the machine's CPU per reconnect: `WsLoad(..., engine="node")` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import ipaddress
import json
import random
import select
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import psutil

from bench.procs import PYTHON, Launcher
from bench.sseclient import is_event_stream, open_event_stream

CONNECT_TIMEOUT = 30.0
STALL_BUCKET_NS = 100_000_000  # latency is also kept as its worst per 100 ms of receipt time
STALL_MS = 10.0  # a bucket whose worst latency is above this is reported as a stall
RECEIPTS_KEPT = 1000  # receipt times a reconnected socket keeps, for the catch-up time
OPEN_ATTEMPTS = 5  # a socket refused for load (503/429) or whose connect failed is tried again, as real clients do
LOAD_REFUSALS = (429, 503)
PEERS_DIR = Path(__file__).resolve().parent / "peers"
NODE_CLIENT = PEERS_DIR / "wsload.js"  # the Node engine: this client's protocol, WebSockets only
NODE_PACKAGES = PEERS_DIR / "node_modules" / ".package-lock.json"  # npm ci's mark: `ws` is installed
Engine = Literal["python", "node"]  # the load generator's runtime: this module, or bench/peers/wsload.js
ENGINES: tuple[Engine, ...] = ("python", "node")


class CollectorPauses:
    """Time this process' garbage collections: a load generator's own pause shows up as the server's latency."""

    def __init__(self) -> None:
        self._began = 0.0
        self.pauses_ms: list[float] = []
        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._began) * 1000)

    def report(self) -> dict[str, float]:
        """Count the collections since the last report, their total and longest pause, and start anew."""
        pauses, self.pauses_ms = self.pauses_ms, []
        return {"count": len(pauses), "total_ms": round(sum(pauses), 2), "max_ms": round(max(pauses, default=0.0), 2)}


def stamp() -> str:
    """Return the marker a publisher puts in an event: t and the monotonic clock in nanoseconds."""
    return f"t{time.monotonic_ns()}"


def percentile(ordered: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of an ascending list, 0 for an empty one."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(eq=False)
class Held:
    """One open socket and what it has seen."""

    ws: Any
    url: str = ""
    identity: str | None = None
    first: int | None = None
    last: int | None = None
    last_event_id: str | None = None
    received: int = 0
    closed: bool = False
    close_code: int | None = None
    terminated: str | None = None
    reconnect_attempts: int = 0
    window: float | None = None  # the last reconnectWindowSeconds received (channelOpened, heartbeat)
    heartbeats: int = 0  # heartbeats received: after one, the window reflects the instance as it is now
    first_window: float | None = None  # the window its last first attempt after a drop was drawn from
    first_window_announced: bool = False  # ... and whether the server had announced it (else FIRST)
    dropped_at: int | None = None  # the last sequence number it had when it last dropped
    reconnected_ns: int | None = None  # when the socket was last opened again after a drop
    first_try_ns: int | None = None  # when its first reconnect attempt started
    received_ns: dict[int, int] = field(default_factory=dict)  # sequence -> receipt, since the reconnection


@dataclass
class Failover:
    """Where dropped sockets reconnect, and the jittered exponential backoff between attempts."""

    url: str
    base: float
    cap: float
    first: float  # the window of the first attempt after a drop when the server announced none (seconds)
    handshake_failures: Counter[str] = field(default_factory=Counter)
    handshake_ms: list[float] = field(default_factory=list)  # how long each successful reconnect's handshake took

    def first_window(self, announced: float | None) -> float:
        """Return the first attempt's window: the server's last reconnectWindowSeconds, else first (the old 20 s)."""
        return self.first if announced is None else announced

    def wait_before(self, attempt: int, retry_after: float, announced: float | None = None) -> float:
        """Return the seconds to wait before an attempt: full jitter, never sooner than a refusal's Retry-After."""
        window = self.first_window(announced) if attempt == 0 else min(self.cap, self.base * 2**attempt)
        return retry_after + random.uniform(0, window)  # noqa: S311


def retry_after_of(headers: Any) -> float:
    """Read the seconds a refused handshake's Retry-After asks for (0 when absent or not a number)."""
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except ValueError:
        return 0.0


@dataclass
class Stats:
    """What the held sockets received since the last reset."""

    deliveries: int = 0
    duplicates: int = 0
    gaps: int = 0
    lifecycle: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    worst_by_bucket: dict[int, float] = field(default_factory=dict)
    first_receive: float | None = None
    last_receive: float | None = None


class LoadClient:
    """Hold many sockets in one event loop and answer the benchmark's commands.

    With a source address, every connection it opens is bound to it (any 127.x.y.z on loopback):
    one source address has only the ephemeral ports (28,232 here) towards one server port.
    """

    def __init__(self, source: str | None = None) -> None:
        self._aiohttp = aiohttp
        self.source = source
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, local_addr=(source, 0) if source else None),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
        )
        self.held: list[Held] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats = Stats()
        self.failover: Failover | None = None
        self.closing = False
        self.collector = CollectorPauses()

    async def _connect(self, url: str, compress: int = 0) -> Any:
        if is_event_stream(url):
            return await open_event_stream(self.session, url)
        aiohttp = self._aiohttp
        return await self.session.ws_connect(
            url,
            autoping=True,
            compress=compress,  # 15: offer permessage-deflate, as browsers do
            max_msg_size=1 << 20,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )

    async def open(self, urls: list[str], concurrency: int, compress: int = 0) -> dict[str, Any]:
        """Open one socket per URL, concurrency at a time; return how many opened and how long it took."""
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        # Refusals and failed connects retried as the README advises clients (after any Retry-After).
        retried: Counter[str] = Counter()
        started = time.monotonic()

        async def one(url: str) -> None:
            for attempt in range(OPEN_ATTEMPTS):
                retry_after = 0.0
                async with gate:
                    try:
                        ws = await self._connect(url, compress)
                        break
                    except self._aiohttp.ClientResponseError as exc:  # a refused handshake or event stream
                        if exc.status not in LOAD_REFUSALS or attempt == OPEN_ATTEMPTS - 1:
                            failures[f"HTTP {exc.status}"] += 1
                            return
                        retried[f"HTTP {exc.status}"] += 1
                        retry_after = retry_after_of(exc.headers)
                    except (TimeoutError, self._aiohttp.ClientError, OSError) as exc:
                        # A connect the kernel refused or dropped (a full accept queue, no free port yet).
                        if attempt == OPEN_ATTEMPTS - 1:
                            failures[type(exc).__name__] += 1
                            return
                        retried[type(exc).__name__] += 1
                await asyncio.sleep(retry_after + random.uniform(0, 1))  # noqa: S311 - jitter, not security
            held = Held(ws, url)
            self.held.append(held)
            task = asyncio.create_task(self._read(held))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        await asyncio.gather(*(one(url) for url in urls))
        first = self.held[0].ws if self.held else None
        return {
            "opened": len(urls) - sum(failures.values()),
            "deflate_window_bits": first.compress if first is not None else None,  # 0: no permessage-deflate
            "failed": dict(failures),
            "retried": dict(retried),
            "seconds": round(time.monotonic() - started, 3),
            **self.status(),
        }

    async def _read(self, held: Held) -> None:
        while True:
            ws = held.ws
            try:
                async for message in ws:
                    if message.type == self._aiohttp.WSMsgType.TEXT:
                        self._on_text(held, message.data)
            except (TimeoutError, self._aiohttp.ClientError, OSError):
                pass
            finally:
                held.closed = True
                held.close_code = ws.close_code
            if self.failover is None or self.closing:
                return
            if held.reconnected_ns is None:
                held.dropped_at = held.last
            if not await self._reconnect(held, self.failover):
                return

    async def _reconnect(self, held: Held, failover: Failover) -> bool:
        """Open the socket again at the failover URL with its lastEventId, backing off between attempts."""
        token = parse_qs(urlsplit(held.url).query)["token"][0]
        url = f"{failover.url}?token={token}"
        if held.last_event_id is not None:
            url += f"&lastEventId={quote(held.last_event_id)}"
        attempt = 0
        retry_after = 0.0
        # As docs/clients.md rules 7-10 advise: the first attempt within the window the server last announced.
        announced = held.window
        held.first_window = failover.first_window(announced)
        held.first_window_announced = announced is not None
        while not self.closing:
            # Full jitter, after the Retry-After of the last refusal.
            await asyncio.sleep(failover.wait_before(attempt, retry_after, announced))
            held.reconnect_attempts += 1
            retry_after = 0.0
            tried_ns = time.monotonic_ns()
            if held.first_try_ns is None:
                held.first_try_ns = tried_ns
            try:
                held.ws = await self._connect(url)
                failover.handshake_ms.append((time.monotonic_ns() - tried_ns) / 1e6)
            except self._aiohttp.ClientResponseError as exc:  # a refused handshake or event stream
                failover.handshake_failures[f"HTTP {exc.status}"] += 1
                retry_after = retry_after_of(exc.headers)
            except (TimeoutError, self._aiohttp.ClientError, OSError) as exc:
                failover.handshake_failures[type(exc).__name__] += 1
            else:
                held.closed = False
                held.close_code = None
                held.reconnected_ns = time.monotonic_ns()
                return True
            attempt += 1
        return False

    def arm_failover(self, url: str, base: float, cap: float, first: float) -> dict[str, Any]:
        """From now on, reopen every socket that drops at url (its token and lastEventId kept)."""
        self.failover = Failover(url, base, cap, first)
        return {"armed": True}

    def _caught_up_ns(self, held: Held, published: list[tuple[int, int]]) -> int | None:
        """Return when a reconnected socket had everything published before its reconnection, or None."""
        assert held.reconnected_ns is not None
        index = bisect.bisect_left(published, (held.reconnected_ns, 0))
        owed = published[index - 1][1] if index else 0  # the last number published before it was back
        if owed <= (held.dropped_at or 0):
            return held.reconnected_ns  # nothing was published while it was away
        return held.received_ns.get(owed)

    def storm_report(self, since_ns: int, published: dict[str, list[list[int]]]) -> dict[str, Any]:
        """Say how many dropped sockets came back and caught up, and how long after since_ns.

        published holds, per identity, [publish time (monotonic ns), sequence number] of every
        event in publish order; a socket has caught up once it received the last event of its
        identity published before it was back (the replay of what it missed is then behind it).
        """
        log = {identity: [(ns, seq) for ns, seq in entries] for identity, entries in published.items()}
        back: list[float] = []
        caught: list[float] = []
        for held in self.held:
            if held.reconnected_ns is None or held.closed:
                continue
            back.append((held.reconnected_ns - since_ns) / 1e9)
            caught_ns = self._caught_up_ns(held, log.get(held.identity or "", []))
            if caught_ns is not None:
                caught.append((caught_ns - since_ns) / 1e9)
        back.sort()
        caught.sort()
        attempts = [h.reconnect_attempts for h in self.held]
        failures = self.failover.handshake_failures if self.failover else Counter()
        handshakes = sorted(self.failover.handshake_ms) if self.failover else []
        first_tries = sorted((h.first_try_ns - since_ns) / 1e9 for h in self.held if h.first_try_ns is not None)
        windows = sorted(h.first_window for h in self.held if h.first_window is not None)
        return {
            "sockets": len(self.held),
            "back": len(back),
            "caught_up": len(caught),
            "all_back_seconds": round(back[-1], 3) if back else None,
            "back_p50_seconds": round(percentile(back, 50), 3),
            "all_caught_up_seconds": round(caught[-1], 3) if caught else None,
            "caught_up_p50_seconds": round(percentile(caught, 50), 3),
            "handshake_attempts": sum(attempts),
            "handshake_failures": dict(failures),
            "most_attempts": max(attempts, default=0),
            # Where the time goes: when clients first tried (their backoff), and how long B took to answer.
            "first_try_p50_seconds": round(percentile(first_tries, 50), 3),
            "first_try_last_seconds": round(first_tries[-1], 3) if first_tries else None,
            # The window each dropped socket drew its first attempt from: the server's last announced one
            # (channelOpened or a heartbeat), or the scenario's FIRST for a socket that never saw one.
            "first_window_seconds": {
                "announced": sum(1 for h in self.held if h.first_window is not None and h.first_window_announced),
                "fallback": sum(1 for h in self.held if h.first_window is not None and not h.first_window_announced),
                "min": windows[0] if windows else 0.0,  # 0: no socket dropped yet
                "p50": percentile(windows, 50),
                "max": windows[-1] if windows else 0.0,
            },
            "first_window_counts": {f"{w:g}": n for w, n in sorted(Counter(windows).items())},  # seconds -> sockets
            "handshake_ms": {
                "p50": round(percentile(handshakes, 50), 1),
                "p99": round(percentile(handshakes, 99), 1),
                "max": round(handshakes[-1], 1) if handshakes else None,
            },
            **self.status(),
        }

    def _on_text(self, held: Held, text: str) -> None:
        now = time.monotonic_ns()
        envelope = json.loads(text)
        stats = self.stats
        sequence = envelope.get("sequenceNumber")
        if sequence is None:
            stats.lifecycle += 1
            kind = envelope.get("type")
            data = envelope.get("data") or {}
            if kind == "channelTerminated":
                held.terminated = str(data.get("reason"))
            elif kind in ("channelOpened", "heartbeat") and "reconnectWindowSeconds" in data:
                held.window = float(data["reconnectWindowSeconds"])  # the latest wins (docs/clients.md rule 7)
            if kind == "heartbeat":
                held.heartbeats += 1
            return
        held.identity = envelope["identity"]
        held.last_event_id = envelope["eventId"]
        if held.last is None:
            held.first = sequence
        elif sequence <= held.last:
            stats.duplicates += 1
            return
        elif sequence != held.last + 1:
            stats.gaps += sequence - held.last - 1
        held.last = sequence
        held.received += 1
        stats.deliveries += 1
        data = envelope.get("data") or {}
        marker = data.get("note") or data.get("reason") or ""
        if held.reconnected_ns is not None and len(held.received_ns) < RECEIPTS_KEPT:
            held.received_ns[sequence] = now
        if marker.startswith("t"):
            latency = (now - int(marker[1:])) / 1e6
            stats.latencies_ms.append(latency)
            bucket = now // STALL_BUCKET_NS
            if latency > stats.worst_by_bucket.get(bucket, 0.0):
                stats.worst_by_bucket[bucket] = latency
        seconds = now / 1e9
        if stats.first_receive is None:
            stats.first_receive = seconds
        stats.last_receive = seconds

    def status(self) -> dict[str, Any]:
        """Count open and closed sockets and this process' CPU time."""
        closed = [h for h in self.held if h.closed]
        return {
            "held": len(self.held) - len(closed),
            "closed": len(closed),
            "close_codes": dict(Counter(str(h.close_code) for h in closed)),
            "terminated": dict(Counter(h.terminated for h in self.held if h.terminated)),
            "cpu_seconds": round(time.process_time(), 3),
        }

    async def wait_primed(self, first: dict[str, int], timeout: float) -> dict[str, Any]:
        """Wait until every open socket has received its identity's first event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting = [h for h in self.held if not h.closed and h.last is None]
            if not waiting:
                break
            await asyncio.sleep(0.02)
        unprimed = sum(1 for h in self.held if not h.closed and h.last is None)
        # A socket whose first event came after its identity's primer missed the primer: an event lost.
        # One whose first came before it replayed events published since its session was made
        # (a session's first socket starts there), which is what VORA promises, so only counted.
        wrong_start = replayed = 0
        for h in self.held:
            if h.first is None or h.identity is None or h.identity not in first:
                continue
            if h.first > first[h.identity]:
                wrong_start += 1
            elif h.first < first[h.identity]:
                replayed += 1
        return {"unprimed": unprimed, "wrong_start": wrong_start, "replayed_before_primer": replayed, **self.status()}

    async def wait_heartbeat(self, timeout: float) -> dict[str, Any]:
        """Wait until every open socket has had a heartbeat; report how many have, and their windows."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(h.heartbeats == 0 for h in self.held if not h.closed):
            await asyncio.sleep(0.1)
        windows = sorted(h.window for h in self.held if h.window is not None)
        return {
            "with_heartbeat": sum(1 for h in self.held if h.heartbeats),
            "window_p50": percentile(windows, 50),
            "window_max": windows[-1] if windows else 0.0,
            **self.status(),
        }

    def reset(self, keep: bool = False) -> dict[str, Any]:
        """Start a measured phase: counting anew (sequence state is kept), or on from the last phase with keep."""
        if not keep:
            self.stats = Stats()
        # The measured phase starts: keep this process' collector out of it (a full pass over a
        # thousand sockets' objects stalled every receipt for up to 97 ms, read as server latency).
        gc.collect()
        gc.freeze()
        gc.disable()
        self.collector.report()
        return {"reset": True}

    def _end_phase(self) -> dict[str, float]:
        """Let the collector run again and report its pauses during the phase (none while it was off)."""
        gc.enable()
        return self.collector.report()

    async def expect(self, final: dict[str, int], timeout: float) -> dict[str, Any]:
        """Wait until every open socket reached its identity's final sequence number, then report."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A dropped socket is waited for too while it is reconnecting.
            behind = [
                h
                for h in self.held
                if (not h.closed or self.failover is not None)
                and h.identity
                and (h.last or 0) < final.get(h.identity, 0)
            ]
            if not behind:
                break
            await asyncio.sleep(0.02)
        missing = sum(max(0, final.get(h.identity, 0) - (h.last or 0)) for h in self.held if h.identity)
        missing_on_closed = sum(
            max(0, final.get(h.identity, 0) - (h.last or 0)) for h in self.held if h.identity and h.closed
        )
        stats = self.stats
        ordered = sorted(stats.latencies_ms)
        start = min(stats.worst_by_bucket, default=0)
        stalls = [
            [round((bucket - start) * STALL_BUCKET_NS / 1e9, 1), round(worst, 1)]
            for bucket, worst in sorted(stats.worst_by_bucket.items())
            if worst > STALL_MS
        ]
        return {
            "deliveries": stats.deliveries,
            "duplicates": stats.duplicates,
            "gaps": stats.gaps,
            "missing_at_end": missing,
            "missing_on_closed_sockets": missing_on_closed,  # events still in the stream for them
            "lifecycle": stats.lifecycle,
            "latency_samples": len(ordered),
            "p50_ms": round(percentile(ordered, 50), 3),
            "p99_ms": round(percentile(ordered, 99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else 0.0,
            "mean_ms": round(sum(ordered) / len(ordered), 3) if ordered else 0.0,
            "stalls": stalls[:100],  # [seconds into the phase, worst latency ms] per 100 ms bucket over STALL_MS
            "client_gc": self._end_phase(),
            "first_receive": stats.first_receive,
            "last_receive": stats.last_receive,
            **self.status(),
        }

    async def resume(self, url: str, count: int, timeout: float) -> dict[str, Any]:
        """Connect (resuming), and time from the connect call to the count-th stream event."""
        started = time.monotonic()
        ws = await self._connect(url)
        upgraded = time.monotonic()
        got = gaps = duplicates = 0
        first = last = None
        try:
            async with asyncio.timeout(timeout):
                async for message in ws:
                    if message.type != self._aiohttp.WSMsgType.TEXT:
                        continue
                    envelope = json.loads(message.data)
                    sequence = envelope.get("sequenceNumber")
                    if sequence is None:
                        continue
                    if last is None:
                        first = sequence
                    elif sequence <= last:
                        duplicates += 1
                        continue
                    elif sequence != last + 1:
                        gaps += sequence - last - 1
                    last = sequence
                    got += 1
                    if got >= count:
                        break
        except TimeoutError:
            pass
        finished = time.monotonic()
        await ws.close()
        return {
            "ms": round((finished - started) * 1000, 3),
            "upgrade_ms": round((upgraded - started) * 1000, 3),
            "received": got,
            "first": first,
            "last": last,
            "gaps": gaps,
            "duplicates": duplicates,
        }

    async def close(self) -> dict[str, Any]:
        """Close every held socket (a WebSocket close handshake each) and forget them."""
        started = time.monotonic()
        self.closing = True
        gate = asyncio.Semaphore(500)

        async def one(held: Held) -> None:
            async with gate:
                with contextlib.suppress(TimeoutError, self._aiohttp.ClientError, OSError):
                    await asyncio.wait_for(held.ws.close(), timeout=5)

        count = len(self.held)
        await asyncio.gather(*(one(h) for h in self.held if not h.closed))
        for task in list(self.tasks):
            task.cancel()
        self.held = []
        self.stats = Stats()
        self.failover = None
        self.closing = False
        return {"closed": count, "seconds": round(time.monotonic() - started, 3)}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """Run one command and return its reply."""
        name = command["cmd"]
        if name == "open":
            return await self.open(command["urls"], command.get("concurrency", 200), command.get("compress", 0))
        if name == "wait_heartbeat":
            return await self.wait_heartbeat(command.get("timeout", 40))
        if name == "wait_primed":
            return await self.wait_primed(command["first"], command.get("timeout", 30))
        if name == "reset":
            return self.reset(bool(command.get("keep")))
        if name == "expect":
            return await self.expect(command["final"], command.get("timeout", 30))
        if name == "resume":
            return await self.resume(command["url"], command["count"], command.get("timeout", 10))
        if name == "close":
            return await self.close()
        if name == "failover":
            return self.arm_failover(command["url"], command["base"], command["cap"], command["first"])
        if name == "storm_report":
            return self.storm_report(command["since_ns"], command["published"])
        if name == "status":
            return self.status()
        if name == "exit":
            return {"bye": True}
        return {"error": f"unknown command {name!r}"}


async def serve_commands(source: str | None = None) -> None:
    """Answer commands from stdin until `exit` or end of input, connecting from source when given."""
    client = LoadClient(source)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            try:
                reply = await client.handle(command)
            except Exception as exc:  # noqa: BLE001 - the benchmark reports it
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if command["cmd"] == "exit":
                break
    finally:
        await client.close()
        await client.session.close()


def node_engine() -> str | None:
    """Return the node binary that runs the Node engine, or None when node or its `ws` package is missing."""
    node = shutil.which("node")
    return node if node is not None and NODE_PACKAGES.exists() else None


class WsLoad:
    """The benchmark's handle on one load-generator process, its connections bound to source when given.

    engine "python" runs this module (the reference, both transports, every command); "node" runs
    bench/peers/wsload.js (WebSockets only, the storm's commands), which is cheaper to run.
    """

    def __init__(self, procs: Launcher, name: str, source: str | None = None, engine: Engine = "python") -> None:
        self.source = source
        self.engine = engine
        options = ["--source", source] if source else []
        if engine == "node":
            node = node_engine()
            if node is None:
                raise RuntimeError(f"the Node load generator needs node and its packages: make install ({PEERS_DIR})")
            argv = [node, str(NODE_CLIENT), *options]
        else:
            argv = [PYTHON, "-m", "bench.wsclient", *options]
        self.child = procs.start(argv, name, pipes=True)

    def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait at most timeout seconds for its reply."""
        self.send(command)
        return self.reply(command["cmd"], timeout)

    def send(self, command: dict[str, Any]) -> None:
        """Send one command without waiting for its reply."""
        self.child.stdin.write((json.dumps(command) + "\n").encode())
        self.child.stdin.flush()

    def reply(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait at most timeout seconds for the reply to the command sent last."""
        ready, _, _ = select.select([self.child.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"the WebSocket client did not answer {name!r} within {timeout:.0f}s")
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the WebSocket client exited during {name!r}: {self.child.exit_reason()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the WebSocket client failed {name!r}: {reply['error']}")
        return reply

    def cpu_seconds(self) -> float:
        """Return the CPU seconds the client process has used."""
        times = psutil.Process(self.child.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        """Ask the client to close its sockets and exit; kill it if it does not."""
        try:
            self.call({"cmd": "exit"}, timeout=60)
            self.child.wait(30)
        except (RuntimeError, OSError, ValueError):
            pass
        self.child.stop(2.0)


def main(argv: list[str] | None = None) -> None:
    """Run the load generator on stdin and stdout (`--source ADDRESS` binds its connections to it)."""
    parser = argparse.ArgumentParser(prog="python -m bench.wsclient", description=__doc__)
    parser.add_argument("--source", help="the local address every connection is bound to, e.g. 127.0.0.2")
    asyncio.run(serve_commands(parser.parse_args(argv).source))


if __name__ == "__main__":
    main()


SOCKETS_PER_PROCESS = 15_000  # one process may open RLIMIT_NOFILE files, which may not be raised past 20,000


def _merged(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the replies of several load generators: counts add up, times take the longest."""
    merged: dict[str, Any] = {}
    for reply in replies:
        for key, value in reply.items():
            if key == "seconds":
                merged[key] = max(merged.get(key, 0.0), value)
            elif key == "deflate_window_bits":
                merged.setdefault(key, value)  # what the server negotiated, the same for all
            elif isinstance(value, dict):
                counts = merged.setdefault(key, {})
                for name, count in value.items():
                    counts[name] = counts.get(name, 0) + count
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged


def source_address(n: int) -> str:
    """Return the loopback source address of a pool's n-th process (127.0.0.2, 127.0.0.3, and so on)."""
    return str(ipaddress.IPv4Address("127.0.0.2") + n)


class WsLoadPool:
    """Several load-generator processes behind one handle, for more sockets than one process may open.

    When there are several, each binds its connections to a loopback source address of its own
    (source_address(n)): one address has 28,232 ephemeral ports towards one server port, fewer than
    40,000 sockets need. A pool of one process connects from the default address, as before.
    """

    def __init__(
        self,
        procs: Launcher,
        name: str,
        sockets: int,
        per_process: int = SOCKETS_PER_PROCESS,
        engine: Engine = "python",
    ) -> None:
        count = max(1, -(-sockets // per_process))
        if count == 1:
            self.clients = [WsLoad(procs, name, engine=engine)]
        else:
            self.clients = [WsLoad(procs, f"{name}-{n}", source_address(n), engine) for n in range(count)]

    @property
    def sources(self) -> list[str | None]:
        """The source address each process binds its connections to (None: the default)."""
        return [client.source for client in self.clients]

    def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a command to every process (an open's URLs dealt out among them) and merge their replies."""
        count = len(self.clients)
        for n, client in enumerate(self.clients):
            if command["cmd"] == "open":
                share = {"urls": command["urls"][n::count], "concurrency": max(1, command["concurrency"] // count)}
                client.send({**command, **share})
            else:
                client.send(command)
        return _merged([client.reply(command["cmd"], timeout) for client in self.clients])

    def stop(self) -> None:
        """Stop every process."""
        for client in self.clients:
            client.stop()
