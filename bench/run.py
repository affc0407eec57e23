"""Run the benchmark: start Redis and the servers, run each scenario, write latest.json, print the table."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench.context import Bench
from bench.httpload import ensure_wrk
from bench.procs import ROOT, Launcher, cpu_split, raise_nofile_limit
from bench.report import Row, machine_info, note_lines, source_state, table_lines, write_results
from bench.scenarios import (
    delivery_cpu,
    failover,
    fanout,
    peers,
    push,
    rest,
    resume,
    roundtrips,
    serverapi,
    sockets,
    sockets20k,
    sockets40k,
    storm,
)
from testbed.procs import stop_all
from testbed.redis_procs import RedisServer


@dataclass(frozen=True)
class OverTransport:
    """A socket scenario run over another transport of the event channel (its module's run takes `transport`)."""

    module: ModuleType
    transport: str

    def run(self, bench: Bench) -> dict[str, Any]:
        """Run the scenario over the transport."""
        figures: dict[str, Any] = self.module.run(bench, transport=self.transport)
        return figures

    def rows(self, figures: dict[str, Any]) -> list[Row]:
        """Render its rows (the module tells the transport from the figures)."""
        rows: list[Row] = self.module.rows(figures)
        return rows


SCENARIOS: dict[str, ModuleType | OverTransport] = {
    "rest": rest,
    "roundtrips": roundtrips,
    "sockets": sockets,
    "fanout": fanout,
    "resume": resume,
    "push": push,
    "delivery_cpu": delivery_cpu,
    "sockets20k": sockets20k,
    "sockets40k": sockets40k,
    "storm": storm,
    "failover": failover,
    "serverapi": serverapi,
    # Scenarios 3, 4 and 7 over Server-Sent Events, each beside VORA's WebSocket figure of the same run.
    "sockets_sse": OverTransport(sockets, "sse"),
    "fanout_sse": OverTransport(fanout, "sse"),
    "delivery_cpu_sse": OverTransport(delivery_cpu, "sse"),
    "peers": peers,
}
# Seconds a scenario needs at least; with less left before the deadline it is skipped.
NEEDS = {
    "rest": 100,
    "roundtrips": 30,
    "sockets": 90,
    "fanout": 70,
    "resume": 30,
    "push": 30,
    "delivery_cpu": 60,
    "sockets20k": 120,
    "sockets40k": 300,  # 250 s on the busy machine (2026-12-06)
    "storm": 150,
    "failover": 120,
    "serverapi": 90,
    "sockets_sse": 150,
    "fanout_sse": 100,
    "delivery_cpu_sse": 90,
    "peers": 420,  # 343-441 s on the shared machine
}
# What `--only GROUP` stands for. A plain `make bench` runs the default group; the pressure
# scenarios hold 10,000-40,000 sockets or a Sentinel set and would not fit in its ten minutes; the sse
# group runs scenarios 3, 4 and 7 over event streams and again over WebSocket (about six minutes).
GROUPS: dict[str, tuple[str, ...]] = {
    "default": ("rest", "roundtrips", "sockets", "fanout", "resume", "push", "delivery_cpu", "serverapi"),
    "pressure": ("sockets20k", "sockets40k", "storm", "failover"),
    "sse": ("sockets_sse", "fanout_sse", "delivery_cpu_sse"),
    # VORA beside Socket.IO 4 + Redis and a Node ws relay under scenarios 3, 4 and 7's loads (about 5 minutes).
    "peers": ("peers",),
}
BUDGET_SECONDS = 540.0
FOREIGN_CPU_NOTE = 0.15  # cores used by processes outside the benchmark, above which a scenario is flagged
DOCS = ROOT / "docs" / "BENCHMARKS.md"
TABLE_MARKERS = {
    "default": ("<!-- bench:table:start -->", "<!-- bench:table:end -->"),
    "pressure": ("<!-- bench:pressure:start -->", "<!-- bench:pressure:end -->"),
    "sse": ("<!-- bench:sse:start -->", "<!-- bench:sse:end -->"),
    "peers": ("<!-- bench:peers:start -->", "<!-- bench:peers:end -->"),
}


class Interrupted(BaseException):
    """The benchmark was told to stop (Ctrl-C, SIGTERM) or ran out of time."""


def _raise(reason: str) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(reason)

    return handler


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs and fewer sockets (a smoke test, not figures)")
    parser.add_argument(
        "--only",
        default="default",
        help="comma-separated scenarios or groups: "
        + ", ".join(SCENARIOS)
        + "; "
        + "; ".join(f"{group} = {','.join(names)}" for group, names in GROUPS.items()),
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="sample the server workers with py-spy into DIR")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the figures (default: bench/results/latest.json for a full run, else partial.json)",
    )
    parser.add_argument("--update-docs", action="store_true", help="put the table into docs/BENCHMARKS.md")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python HTTP load generator even if wrk is there")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the VORA servers (repeat), e.g. to diagnose",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server and client logs)")
    parser.add_argument(
        "--budget",
        type=float,
        help=f"seconds before scenarios are skipped (default {BUDGET_SECONDS:.0f}, or the scenarios' NEEDS if more)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS) - set(GROUPS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.scenarios = chosen_scenarios(args.only)
    if args.budget is None:
        # The default group fits in 540 s; the pressure group, with scenario 12's 40,000 sockets, does not.
        args.budget = max(BUDGET_SECONDS, float(sum(NEEDS[name] for name in args.scenarios)))
    if args.output is None:
        full = not args.quick and set(args.scenarios) == set(GROUPS["default"])
        args.output = ROOT / "bench" / "results" / ("latest.json" if full else "partial.json")
    return args


def chosen_scenarios(only: str) -> list[str]:
    """Expand scenario and group names into scenario names, in the order SCENARIOS lists them."""
    chosen: set[str] = set()
    for name in only.split(","):
        chosen.update(GROUPS.get(name, (name,)))
    return [name for name in SCENARIOS if name in chosen]


def update_docs(rows_by_scenario: dict[str, list[Row]], machine: dict[str, Any], when: str) -> None:
    """Replace, in docs/BENCHMARKS.md, the table of each group whose scenarios all ran."""
    text = DOCS.read_text()
    machine_line = (
        f"Measured {when} on {machine['nproc']} x {machine['cpu_model']}, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, Redis {machine['redis']}, {machine['load_generator']}."
    )
    for group, names in GROUPS.items():
        start, end = TABLE_MARKERS[group]
        if start not in text or end not in text or not set(names) <= set(rows_by_scenario):
            continue
        rows = [row for name in names for row in rows_by_scenario[name]]
        head, _, rest_ = text.partition(start)
        _, _, tail = rest_.partition(end)
        notes = note_lines(rows)
        body = "\n".join([machine_line, "", *table_lines(rows, markdown=True), *(["", *notes] if notes else [])])
        text = f"{head}{start}\n{body}\n{end}{tail}"
    DOCS.write_text(text)


def run_scenarios(bench: Bench, names: list[str]) -> tuple[dict[str, Any], dict[str, list[Row]], bool]:
    """Run the chosen scenarios in order; return their figures, their table rows and whether all ran."""
    figures: dict[str, Any] = {}
    rows: dict[str, list[Row]] = {}
    ok = True
    for name in names:
        module = SCENARIOS[name]
        if bench.remaining() < NEEDS[name] * (0.5 if bench.quick else 1):
            bench.notes.append(f"{name}: skipped, not enough time left")
            ok = False
            continue
        print(f"[bench] {name} …", flush=True)
        started = time.monotonic()
        busy_before, ours_before = cpu_split()
        try:
            figures[name] = module.run(bench)
            rows[name] = module.rows(figures[name])
        except Exception as exc:  # noqa: BLE001 - one failed scenario must not hide the others
            ok = False
            figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
            (bench.workdir / f"{name}-error.txt").write_text(traceback.format_exc())
            print(f"[bench] {name} failed: {exc}", file=sys.stderr, flush=True)
        elapsed = time.monotonic() - started
        busy_after, ours_after = cpu_split()
        foreign = max(0.0, (busy_after - busy_before) - (ours_after - ours_before)) / elapsed
        figures.setdefault(name, {})["elapsed_seconds"] = round(elapsed, 1)
        figures[name]["other_processes_cpu_cores"] = round(foreign, 2)
        if foreign > FOREIGN_CPU_NOTE:
            bench.notes.append(f"{name}: other processes used {foreign:.2f} cores meanwhile; its figures are noisier")
        print(f"[bench] {name} done in {figures[name]['elapsed_seconds']:.0f}s", flush=True)
    return figures, rows, ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and return the exit status (0 when every scenario ran, whatever the targets)."""
    args = parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()
    nofile = raise_nofile_limit()
    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, _raise("SIGINT (Ctrl-C)"))
    signal.signal(signal.SIGTERM, _raise("SIGTERM"))
    signal.signal(signal.SIGHUP, _raise("SIGHUP"))
    signal.signal(signal.SIGALRM, _raise("the benchmark ran past its hard time limit"))
    signal.alarm(int(args.budget + 50))  # a hard stop well inside `make bench`'s ten minutes
    workdir = Path(tempfile.mkdtemp(prefix="vora-bench-"))
    procs = Launcher(workdir)
    ok = False
    try:
        wrk = None if args.no_wrk else ensure_wrk(procs)
        # No persistence; room for the 10,000-20,000 sockets' sessions of the pressure scenarios' clients.
        redis_server = RedisServer(extra_args=["--maxclients", "10000"], workdir=workdir / "redis").start()
        bench = Bench(procs, redis_server, workdir, wrk, args.quick, started + args.budget, args.profile)
        bench.extra_env = dict(item.partition("=")[::2] for item in args.server_env)
        if wrk is None:
            bench.notes.append("HTTP load came from the Python fallback (bench/httpload.py), not wrk")
        if nofile < 12_000:
            bench.notes.append(f"open-file limit is only {nofile}: 10,000 sockets may not fit")
        figures, rows_by_scenario, ok = run_scenarios(bench, args.scenarios)
        rows = [row for name in args.scenarios for row in rows_by_scenario.get(name, [])]
        machine = machine_info(str(bench.redis_info("server").get("redis_version")), wrk)
        extra = {
            "mode": "quick" if args.quick else "full",
            "source": source_state(ROOT),
            "elapsed_seconds": round(time.monotonic() - started, 1),
            "open_file_limit": nofile,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "notes": bench.notes,
        }
        write_results(args.output, machine, figures, rows, extra)
        print()
        print("\n".join(table_lines(rows)))
        for line in note_lines(rows):
            print(line)
        for note in bench.notes:
            print(f"note: {note}")
        print(
            f"\n[bench] figures in {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}"
        )
        print(f"[bench] {len(rows)} figures, {sum(1 for r in rows if r.met is False)} targets not met, "
              f"{time.monotonic() - started:.0f}s")  # fmt: skip
        if args.update_docs:
            update_docs(rows_by_scenario, machine, time.strftime("%Y-%m-%d"))
    except Interrupted as exc:
        print(f"\n[bench] stopped: {exc}; stopping every process it started", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.keep or not ok:
            print(f"[bench] logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1
