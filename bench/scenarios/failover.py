"""Scenario 10, Redis failover: events acknowledged to the publisher that the promoted master does not have.

A Sentinel set (one master, one replica, three sentinels; testbed/redis_procs.py, the
topology tests' own harness) on loopback. VORA's EventPublisher, connected through
redis+sentinel:// as the telephony side would be, publishes RATE presence events/s round-robin
over IDENTITIES identities, each carrying its publish number n in data.note. BEFORE_SECONDS in,
the master fails over, by SIGKILL (a crash: whatever the replica had not received is gone) or by
SENTINEL FAILOVER (an operator's switch). Publishing goes on until AFTER_SECONDS after the
sentinels agree on the new master and, after SENTINEL FAILOVER, the old master (which keeps
running, and keeps accepting writes) has been demoted to a replica. Then every identity's
stream is read from the new master and compared with what the publisher was told:

- lost: acknowledged (publish returned) but absent from the new master's stream;
- duplicated: one publish number stored twice (a retried publish whose first attempt had landed);
- reused: a lost event's sequence number given again to a later event, which a client that saw
  the lost one drops as a duplicate: for that client the later event is lost too.

The same runs with VORA_PUBLISH_MIN_REPLICAS=1 (WAIT for one replica, REPLICA_TIMEOUT_MS):
publishes the replica did not confirm raise NotReplicated and are counted apart. Publish
throughput (one publisher, flat out) with WAIT and without is measured on the healthy set first.
No baseline server: the figures are counts; the throughput ratio is against WAIT off, same run.
Not in the default run (`--only failover` or `pressure`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from bench.context import DEFAULTS, Bench, identities
from bench.report import Row
from testbed.redis_procs import RedisSentinelSet
from testbed.wait import wait_for
from vora.events.publisher import EventPublisher
from vora.services import build_stores
from vora.store import keys
from vora.store.client import REDIS_TROUBLE
from vora.store.streams import NotReplicated

IDENTITIES = 100
RATE = 1000
BEFORE_SECONDS = 2.0
AFTER_SECONDS = 3.0
FAILOVER_DEADLINE = 30.0
REPLICA_TIMEOUT_MS = 200
THROUGHPUT_EVENTS = 3000


def _publisher(url: str, min_replicas: int) -> EventPublisher:
    settings = DEFAULTS.with_changes(
        redis_url=url, publish_min_replicas=min_replicas, publish_replica_timeout=REPLICA_TIMEOUT_MS
    )
    return build_stores(settings).publisher


def _throughput(publisher: EventPublisher, ids: list[str], count: int) -> float:
    started = time.monotonic()
    for n in range(count):
        publisher.publish(ids[n % len(ids)], "presence", {"status": "busy", "note": f"warm{n}"})
    return count / (time.monotonic() - started)


def _fail_over(topology: RedisSentinelSet, how: str) -> None:
    if how == "kill":
        topology.kill_master()
    else:
        topology.sentinels[0].execute("SENTINEL", "FAILOVER", topology.service, timeout=5.0)


def _publish_through(topology: RedisSentinelSet, how: str, min_replicas: int, ids: list[str]) -> dict[str, Any]:
    """Publish at RATE while the master fails over; return what the publisher was told and when."""
    publisher = _publisher(topology.url, min_replicas)
    acked: list[tuple[str, str, int, int]] = []  # identity, event id, sequence, publish number
    unconfirmed: list[tuple[str, str, int, int]] = []
    failed: Counter[str] = Counter()
    promoted = threading.Event()
    failover_seconds: list[float] = []
    demoted_seconds: list[float] = []

    def await_promotion() -> None:
        started = time.monotonic()
        try:
            topology.wait_for_failover(FAILOVER_DEADLINE)
            failover_seconds.append(time.monotonic() - started)
            if how != "kill":  # the old master still runs: it accepts writes until Sentinel demotes it
                old = topology.replica
                wait_for(lambda: old.info("replication").get("role") == "slave", FAILOVER_DEADLINE, what="demotion")
                demoted_seconds.append(time.monotonic() - started)
        finally:
            promoted.set()

    started = time.monotonic()
    stop_at = started + BEFORE_SECONDS + FAILOVER_DEADLINE
    failed_over_at: float | None = None
    n = 0
    while time.monotonic() < stop_at:
        due = started + n / RATE
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if failed_over_at is None and now - started >= BEFORE_SECONDS:
            _fail_over(topology, how)
            failed_over_at = time.monotonic()
            threading.Thread(target=await_promotion, name="await-promotion", daemon=True).start()
        if promoted.is_set() and stop_at > time.monotonic() + AFTER_SECONDS:
            stop_at = time.monotonic() + AFTER_SECONDS
        identity = ids[n % len(ids)]
        try:
            event = publisher.publish(identity, "presence", {"status": "busy", "note": f"n{n}"})
            acked.append((identity, event.event_id, event.sequence_number, n))
        except NotReplicated as exc:
            unconfirmed.append((identity, exc.event_id, exc.sequence_number, n))
        except REDIS_TROUBLE as exc:
            failed[type(exc).__name__] += 1
        n += 1
    promoted.wait(FAILOVER_DEADLINE)
    return {
        "attempted": n,
        "acked": acked,
        "unconfirmed": unconfirmed,
        "failed": dict(failed),
        "seconds": round(time.monotonic() - started, 2),
        "failover_seconds": round(failover_seconds[0], 2) if failover_seconds else None,
        "old_master_demoted_seconds": round(demoted_seconds[0], 2) if demoted_seconds else None,
    }


def _compare(topology: RedisSentinelSet, ids: list[str], told: dict[str, Any]) -> dict[str, Any]:
    """Read every stream from the new master and hold it against what the publisher was told."""
    client = topology.master.client()
    stored_ids: set[str] = set()
    stored_sequences: set[tuple[str, int]] = set()
    numbers: Counter[str] = Counter()
    for identity in ids:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(keys.event_stream(identity))  # type: ignore[assignment] # redis-py types sync replies as Awaitable | Any
        for entry_id, fields in entries:
            stored_ids.add(entry_id)
            stored_sequences.add((identity, int(fields["seq"])))
            numbers[fields["data"]] += 1
    client.close()
    lost = [event for event in told["acked"] if event[1] not in stored_ids]
    reused = [event for event in lost if (event[0], event[2]) in stored_sequences]
    unconfirmed_lost = [event for event in told["unconfirmed"] if event[1] not in stored_ids]
    return {
        "attempted": told["attempted"],
        "acknowledged": len(told["acked"]),
        "unconfirmed": len(told["unconfirmed"]),
        "unconfirmed_lost": len(unconfirmed_lost),
        "failed": told["failed"],
        "lost": len(lost),
        "lost_examples": [{"identity": e[0], "eventId": e[1], "sequenceNumber": e[2]} for e in lost[:10]],
        "sequence_numbers_reused": len(reused),
        "duplicated": sum(count - 1 for count in numbers.values() if count > 1),
        "seconds": told["seconds"],
        "failover_seconds": told["failover_seconds"],
        "old_master_demoted_seconds": told["old_master_demoted_seconds"],
    }


def _one_run(bench: Bench, label: str, how: str, min_replicas: int, ids: list[str], throughput: bool) -> dict[str, Any]:
    with RedisSentinelSet(workdir=bench.workdir / f"failover-{label}") as topology:
        figures: dict[str, Any] = {"how": how, "min_replicas": min_replicas}
        if throughput:
            count = int(bench.seconds(THROUGHPUT_EVENTS, 500))
            plain, waiting = _publisher(topology.url, 0), _publisher(topology.url, 1)
            apart = identities("7910", IDENTITIES)  # streams of their own: the comparison reads only ids
            _throughput(plain, apart, count // 5)  # warm-up: scripts loaded, connections open
            _throughput(waiting, apart, count // 5)
            rates: dict[str, list[float]] = {"off": [], "wait1": []}
            for _ in range(2):  # alternated, so that drift on the machine hits both alike
                rates["off"].append(_throughput(plain, apart, count))
                rates["wait1"].append(_throughput(waiting, apart, count))
            figures["throughput"] = {k: round(max(v), 1) for k, v in rates.items()}
        figures.update(_compare(topology, ids, _publish_through(topology, how, min_replicas, ids)))
        return figures


def run(bench: Bench) -> dict[str, Any]:
    """Fail the master over while events flow, by SIGKILL and by SENTINEL FAILOVER, each with and without WAIT."""
    ids = identities("7900", IDENTITIES)
    return {
        "rate": RATE,
        "identities": IDENTITIES,
        "replica_timeout_ms": REPLICA_TIMEOUT_MS,
        "kill": _one_run(bench, "kill", "kill", 0, ids, throughput=True),
        "kill_wait": _one_run(bench, "kill-wait", "kill", 1, ids, throughput=False),
        "switch": _one_run(bench, "switch", "sentinel-failover", 0, ids, throughput=False),
        "switch_wait": _one_run(bench, "switch-wait", "sentinel-failover", 1, ids, throughput=False),
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    """Acknowledged-but-lost events per way of failing over, and what WAIT costs in throughput."""
    out: list[Row] = []
    runs = (
        ("kill", "master SIGKILLed, WAIT off", None),
        ("kill_wait", "master SIGKILLed, VORA_PUBLISH_MIN_REPLICAS=1", 0),
        ("switch", "SENTINEL FAILOVER, WAIT off", None),
        ("switch_wait", "SENTINEL FAILOVER, VORA_PUBLISH_MIN_REPLICAS=1", 0),
    )
    for key, what, target in runs:
        run_ = figures.get(key)
        if not run_ or "lost" not in run_:
            continue
        note = (
            f"{run_['acknowledged']:,} acked, {run_['unconfirmed']:,} unconfirmed, "
            f"{sum(run_['failed'].values()):,} failed; {run_['sequence_numbers_reused']} numbers reused, "
            f"{run_['duplicated']} duplicated; failover {run_['failover_seconds']} s"
        )
        out.append(
            Row(
                f"10 acknowledged but lost @ {figures['rate']:,} ev/s, {what}",
                float(run_["lost"]),
                "",
                None,
                "0" if target == 0 else "(measured: replication is asynchronous)",
                run_["lost"] == 0 and run_["duplicated"] == 0 if target == 0 else None,
                note=note,
            )
        )
    throughput = figures.get("kill", {}).get("throughput")
    if throughput:
        out.append(
            Row(
                "10 publish throughput, one publisher, WAIT 1 replica (baseline: WAIT off)",
                throughput["wait1"],
                "ev/s",
                throughput["off"],
                "(reported)",
                None,
            )
        )
    return out
