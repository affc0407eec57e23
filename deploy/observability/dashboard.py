"""Generate VORA's Grafana dashboard and its PrometheusRule manifest.

The dashboard (grafana/vora-dashboard.json) is built with the Grafana Foundation SDK; the prometheus-operator's
PrometheusRule (kubernetes/prometheusrule.yaml) carries the groups of prometheus/vora-rules.yaml.

Run `python deploy/observability/dashboard.py` after changing a panel or a rule; the tests check that both files
are what this one generates, and evaluate every query against a real Prometheus scraping a real VORA.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos, VariableRefresh

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "grafana" / "vora-dashboard.json"
RULES = HERE / "prometheus" / "vora-rules.yaml"
PROMETHEUS_RULE = HERE / "kubernetes" / "prometheusrule.yaml"
UID = "vora-gateway"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECTOR = 'job="vora", instance=~"$instance"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and the legend of its series."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    """A time-series (or, with single, a stat) panel: its title, what it tells, its unit and queries."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    single: bool = False


def q(expr: str, legend: str) -> Query:
    """Return a query whose {sel} and {rate} stand for the instance selector and the rate window."""
    return Query(expr.replace("{sel}", SELECTOR).replace("{rate}", RATE), legend)


ROWS: tuple[tuple[str, tuple[Chart, ...]], ...] = (
    (
        "Delivery",
        (
            Chart(
                "Publish-to-delivery latency",
                "From an event's publication (its eventId) to its write to a socket, live deliveries. "
                "Alert VoraDeliveryLatencyHigh: p99 above 0.5 s for 5 minutes.",
                "s",
                (
                    q(
                        "histogram_quantile(0.99, sum by (le, transport) "
                        "(rate(vora_event_delivery_seconds_bucket{{sel}}[{rate}])))",
                        "p99 {{transport}}",
                    ),
                    q(
                        "histogram_quantile(0.5, sum by (le, transport) "
                        "(rate(vora_event_delivery_seconds_bucket{{sel}}[{rate}])))",
                        "p50 {{transport}}",
                    ),
                ),
            ),
            Chart(
                "Open connections",
                "Event connections open now, by instance and transport.",
                "short",
                (q("sum by (instance, transport) (vora_open_connections{{sel}})", "{{instance}} {{transport}}"),),
            ),
            Chart(
                "Events",
                "Events published through this instance, taken from the bus, and written to sockets.",
                "ops",
                (
                    q("sum(rate(vora_events_published_total{{sel}}[{rate}]))", "published"),
                    q("sum(rate(vora_events_received_total{{sel}}[{rate}]))", "received from the bus"),
                    q("sum(rate(vora_events_delivered_total{{sel}}[{rate}]))", "delivered"),
                ),
            ),
            Chart(
                "Catch-up size",
                "Stored events a connection wrote while catching up: large ones mean long absences.",
                "short",
                (
                    q(
                        "histogram_quantile(0.99, sum by (le) (rate(vora_catch_up_events_bucket{{sel}}[{rate}])))",
                        "p99",
                    ),
                    q(
                        "sum(rate(vora_catch_up_events_sum{{sel}}[{rate}])) "
                        "/ sum(rate(vora_catch_up_events_count{{sel}}[{rate}]))",
                        "mean",
                    ),
                ),
            ),
        ),
    ),
    (
        "Connections",
        (
            Chart(
                "Closes by code",
                "Connections ended, by the close code VORA sent (aborted: cut; ended: closed by the peer or "
                "the transport).",
                "ops",
                (q("sum by (code) (rate(vora_connection_closes_total{{sel}}[{rate}]))", "{{code}}"),),
            ),
            Chart(
                "channelTerminated by reason",
                "Sessions ended while their socket was open: logout, replaced, tokenExpired, revoked, maintenance.",
                "ops",
                (q("sum by (reason) (rate(vora_channel_terminated_total{{sel}}[{rate}]))", "{{reason}}"),),
            ),
            Chart(
                "Handshake refusals by reason",
                "Sockets refused before the upgrade. Alert VoraHandshakesRefused on overloaded and bus_unavailable.",
                "ops",
                (q("sum by (reason) (rate(vora_handshake_refusals_total{{sel}}[{rate}]))", "{{reason}}"),),
            ),
            Chart(
                "Slow consumers and resume gaps",
                "Sockets closed 4008, events dropped with them, and resumes past retention. "
                "Alerts VoraSlowConsumerDrops, VoraResumeGaps.",
                "ops",
                (
                    q("sum(rate(vora_ws_slow_consumers_total{{sel}}[{rate}]))", "slow consumers closed"),
                    q("sum(rate(vora_events_dropped_total{{sel}}[{rate}]))", "events dropped"),
                    q("sum(rate(vora_ws_resumes_total{{sel}}[{rate}]))", "resumes"),
                    q("sum(rate(vora_ws_resume_gaps_total{{sel}}[{rate}]))", "resume gaps"),
                ),
            ),
        ),
    ),
    (
        "HTTP",
        (
            Chart(
                "Requests by operation and status",
                "REST requests per second by spec operationId and status (sockets are counted apart).",
                "reqps",
                (
                    q(
                        "sum by (operation, status) (rate(vora_http_requests_total{{sel}}[{rate}]))",
                        "{{operation}} {{status}}",
                    ),
                ),
            ),
            Chart(
                "Request latency p99",
                "Time to serve a REST request, by operation.",
                "s",
                (
                    q(
                        "histogram_quantile(0.99, sum by (le, operation) "
                        "(rate(vora_http_request_duration_seconds_bucket{{sel}}[{rate}])))",
                        "{{operation}}",
                    ),
                ),
            ),
            Chart(
                "Readiness answers",
                "The readiness probe's answers by status. Alert VoraReadinessFailing: only 503 for 5 minutes.",
                "reqps",
                (
                    q(
                        "sum by (instance, status) "
                        '(rate(vora_http_requests_total{{sel}, operation="readiness"}[{rate}]))',
                        "{{instance}} {{status}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Redis and push",
        (
            Chart(
                "Redis up",
                "1 when Redis answered the instance's metrics scrape. Alert VoraRedisUnavailable.",
                "short",
                (q("min by (instance) (vora_redis_up{{sel}})", "{{instance}}"),),
                single=True,
            ),
            Chart(
                "Redis errors by place",
                "Failed Redis commands: REST requests, the event bus, socket leases, the push worker. "
                "Alert VoraRedisErrors.",
                "ops",
                (
                    q("sum by (where) (rate(vora_redis_errors_total{{sel}}[{rate}]))", "{{where}}"),
                    q("sum(rate(vora_redis_reconnects_total{{sel}}[{rate}]))", "bus resubscriptions"),
                ),
            ),
            Chart(
                "Push queue",
                "Jobs in the shared push queue and its oldest job's age. Alert VoraPushQueueStale: older than 30 s.",
                "short",
                (
                    q("max(vora_push_queue_jobs{{sel}})", "jobs"),
                    q("max(vora_push_queue_oldest_age_seconds{{sel}})", "oldest job's age (s)"),
                ),
            ),
            Chart(
                "Pushes",
                "Pushes accepted by the gateway, given up, retried and rate-limited. Alert VoraPushFailures.",
                "ops",
                (
                    q("sum(rate(vora_push_sent_total{{sel}}[{rate}]))", "sent"),
                    q("sum(rate(vora_push_failed_total{{sel}}[{rate}]))", "failed"),
                    q("sum(rate(vora_push_retries_total{{sel}}[{rate}]))", "retried"),
                    q("sum(rate(vora_push_rate_limited_total{{sel}}[{rate}]))", "rate-limited"),
                ),
            ),
            Chart(
                "Held-up calls",
                "Held-up calls ended, by signal and reason, and the push-to-socket wake-up time.",
                "ops",
                (
                    q(
                        "sum by (outcome, reason) (rate(vora_holdup_signals_total{{sel}}[{rate}]))",
                        "{{outcome}} {{reason}}",
                    ),
                    q(
                        "histogram_quantile(0.9, sum by (le) (rate(vora_push_wakeup_seconds_bucket{{sel}}[{rate}])))",
                        "wake-up p90 (s)",
                    ),
                ),
            ),
        ),
    ),
    (
        "Processes",
        (
            Chart(
                "Instances up",
                "Instances answering their metrics scrape. Alert VoraInstanceDown.",
                "short",
                (q("sum(up{{sel}})", "up"),),
                single=True,
            ),
            Chart(
                "Worker CPU",
                "CPU seconds per second of each worker process (1 = one core).",
                "percentunit",
                (q("rate(vora_worker_cpu_seconds{{sel}}[{rate}])", "{{instance}} pid {{pid}}"),),
            ),
            Chart(
                "Worker memory",
                "Resident memory of each worker process.",
                "bytes",
                (q("vora_worker_resident_memory_bytes{{sel}}", "{{instance}} pid {{pid}}"),),
            ),
            Chart(
                "Limits used",
                "The fullest worker's share of its open-files limit: each socket is a file, and idle sockets "
                "take no worker_connections slot, so this is the limit they meet. Alert VoraFileDescriptorsNearLimit "
                "at 80%.",
                "percentunit",
                (
                    q(
                        "max by (instance) "
                        "(vora_worker_open_fds{{sel}} / on (instance, pid) vora_worker_max_fds{{sel}})",
                        "{{instance}} files",
                    ),
                ),
            ),
            Chart(
                "Event loop lag",
                "How late the workers' event loops ran a timer due every 50 ms (p99 and the worst bucket): "
                "a turn that did not yield held every connection of its worker that long. "
                "Alert VoraWorkerLoopStalled: a stall of 1 s or more.",
                "s",
                (
                    q(
                        "histogram_quantile(0.99, sum by (le, instance) "
                        "(rate(vora_worker_loop_lag_seconds_bucket{{sel}}[{rate}])))",
                        "{{instance}} p99",
                    ),
                    q(
                        "histogram_quantile(1, sum by (le, instance) "
                        "(rate(vora_worker_loop_lag_seconds_bucket{{sel}}[{rate}])))",
                        "{{instance}} worst",
                    ),
                ),
            ),
            Chart(
                "Garbage collection",
                "Share of the workers' time spent in Python garbage collections, by generation "
                "(each pauses every connection of its worker).",
                "percentunit",
                (
                    q(
                        "sum by (instance, generation) (rate(vora_worker_gc_pause_seconds_sum{{sel}}[{rate}]))",
                        "{{instance}} generation {{generation}}",
                    ),
                ),
            ),
        ),
    ),
)

PANEL_WIDTH = 12
PANEL_HEIGHT = 8


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(DATASOURCE)


def _panel(chart: Chart, panel_id: int, x: int, y: int) -> timeseries.Panel | stat.Panel:
    panel = stat.Panel() if chart.single else timeseries.Panel()
    panel.id(panel_id).title(chart.title).description(chart.description).unit(chart.unit).datasource(DATASOURCE)
    panel.grid_pos(GridPos(h=PANEL_HEIGHT, w=PANEL_WIDTH, x=x, y=y))
    for index, query in enumerate(chart.queries):
        panel.with_target(_target(query, chr(ord("A") + index)))
    return panel


def build() -> dict[str, object]:
    """Return the dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("VORA gateway")
        .uid(UID)
        .description("VORA's delivery, connections, HTTP, Redis, push and processes; see docs/metrics.md.")
        .tags(["vora"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query('label_values(up{job="vora"}, instance)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    )
    y = 0
    panel_id = 0
    for title, charts in ROWS:
        panel_id += 1
        board.with_row(dashboard.Row(title).id(panel_id).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for index, chart in enumerate(charts):
            panel_id += 1
            board.with_panel(_panel(chart, panel_id, (index % 2) * PANEL_WIDTH, y + (index // 2) * PANEL_HEIGHT))
        y += ((len(charts) + 1) // 2) * PANEL_HEIGHT
    model: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return model


def render() -> str:
    """Return the dashboard JSON exactly as the repository keeps it."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def render_prometheus_rule() -> str:
    """Return the PrometheusRule manifest carrying the rule file's groups, as the repository keeps it."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "vora", "labels": {"app.kubernetes.io/name": "vora"}},
        "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]},
    }
    header = "# Generated by ../dashboard.py from ../prometheus/vora-rules.yaml: edit that, then run dashboard.py.\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, width=120)


if __name__ == "__main__":
    for path, text in ((OUTPUT, render()), (PROMETHEUS_RULE, render_prometheus_rule())):
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
