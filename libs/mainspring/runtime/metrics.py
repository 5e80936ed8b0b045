"""Mainspring's Prometheus metrics: what each service counts, with bounded labels.

Labels are chosen so a series count stays bounded by what an operator registers, never by
traffic: `routine` (one per registered routine), `status` (the five run statuses), `trigger`
(the trigger kinds), `reason` (the fixed categories below), `subject` (a subject template:
variable tokens wildcarded). No label carries a run id, a run number or an error text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mainspring.base.tracing import destination_template
from mainspring.contract.messages import RequestRun, ScheduleFired, TriggerRecorded

# Schedule-to-start is promised in milliseconds; runs last seconds to hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

RUNS = Counter(
    "mainspring_runs",
    "Runs a runner finished, by routine and final status.",
    ["routine", "status"],
)
TRIGGER_TO_START = Histogram(
    "mainspring_trigger_to_start_seconds",
    "From the trigger's time (a tick's nominal time, else the request) to the run's start.",
    ["trigger"],
    buckets=LATENCY_BUCKETS,
)
RUN_DURATION = Histogram(
    "mainspring_run_duration_seconds",
    "From a run's start to its end, by routine.",
    ["routine"],
    buckets=DURATION_BUCKETS,
)
WORKER_RECYCLES = Counter(
    "mainspring_worker_recycles",
    "Worker processes the runner ended instead of reusing, by reason category.",
    ["reason"],
)
REFUSALS = Counter(
    "mainspring_dispatch_refusals",
    "Runs the dispatcher refused, by reason category.",
    ["reason"],
)
DISABLED = Counter(
    "mainspring_routines_disabled",
    "Triggers the dispatcher disabled, by reason (crash_loop, circuit_breaker).",
    ["reason"],
)
DEAD_LETTERS = Counter(
    "mainspring_dead_letters",
    "Messages parked on the dead-letter subject, by the subject they came on (a template).",
    ["subject"],
)
RUN_QUEUE_PENDING = Gauge(
    "mainspring_run_queue_pending",
    "Run requests no runner has taken yet (the run queue consumer's pending count).",
)
RUN_QUEUE_OLDEST_AGE = Gauge(
    "mainspring_run_queue_oldest_age_seconds",
    "Age of the oldest run request not yet acknowledged by a runner (0 when none waits).",
)
TICKER_LAG = Histogram(
    "mainspring_ticker_lag_seconds",
    "How late the ticker published a tick after its nominal time.",
    buckets=LATENCY_BUCKETS,
)

TRIGGER_KINDS = ("schedule", "dataset", "completion", "manual", "poll", "external")
REFUSAL_REASONS = (
    "loop_blocked",
    "crash_loop",
    "overlap",
    "threshold",
    "disabled",
    "start_failed",
    "inputs",
    "other",
)
RECYCLE_REASONS = ("fault", "children", "memory", "max_runs", "stopping", "leftovers")


def trigger_label(kind: str) -> str:
    """A trigger kind as a label value; an unknown kind is `other`, never a new series."""
    return kind if kind in TRIGGER_KINDS else "other"


def trigger_time(request: RequestRun) -> datetime:
    """When the run was due: a tick's nominal time, else when it was asked for."""
    if request.trigger_kind == "schedule":
        scheduled = request.event.get("scheduled_at")
        if isinstance(scheduled, str):
            try:
                return datetime.fromisoformat(scheduled)
            except ValueError:
                pass
    return request.submitted_at or request.requested_at


def refusal_reason(error: str | None) -> str:
    """The category of a dispatcher refusal, from its one-line reason."""
    text = (error or "").lower()
    for words, reason in (
        (("no runner has that much memory",), "memory"),
        (("trigger disabled",), "disabled"),
        (("exceeds max_hops",), "loop_blocked"),
        (("crash loop", "crash-loop"), "crash_loop"),
        (("overlap", "still running", "already running"), "overlap"),
        (("threshold not met",), "threshold"),
        (("input",), "inputs"),
    ):
        if any(w in text for w in words):
            return reason
    return "other"


def recycle_reason(reason: str) -> str:
    """The category of a worker recycle, from the pool's sentence."""
    text = reason.lower()
    if text.startswith("fault") or "ended" in text:
        return "fault"
    if "child process" in text:
        return "children"
    if "memory grew" in text:
        return "memory"
    if text.startswith("served"):
        return "max_runs"
    if "stopping" in text:
        return "stopping"
    return "leftovers"


def run_started(request: RequestRun, started_at: datetime) -> None:
    """Count the wait from trigger to start of a run's first start."""
    waited = (started_at - trigger_time(request)).total_seconds()
    TRIGGER_TO_START.labels(trigger_label(request.trigger_kind)).observe(max(0.0, waited))


def run_finished(
    routine: str, status: str, started_at: datetime | None, finished_at: datetime
) -> None:
    """Count a finished run and how long it ran."""
    RUNS.labels(routine, status).inc()
    if started_at is not None:
        RUN_DURATION.labels(routine).observe(max(0.0, (finished_at - started_at).total_seconds()))


def refused(error: str | None) -> None:
    """Count one run the dispatcher refused to start (a RunCompleted it published)."""
    REFUSALS.labels(refusal_reason(error)).inc()


def trigger_outcome_reason(status: str, reason: str | None) -> str | None:
    """The refusal category of a recorded firing; None for one that started a run."""
    if status == "fired":
        return None
    if status == "loop_blocked":
        return "loop_blocked"
    if status == "failed":
        return "start_failed"
    return refusal_reason(reason)


def trigger_recorded(record: TriggerRecorded) -> None:
    """Count a firing that did not start a run (threshold not met, loop blocked, overlap...)."""
    found = trigger_outcome_reason(record.status, record.reason)
    if found is not None:
        REFUSALS.labels(found).inc()


def parked(subject: str) -> None:
    """Count one dead-lettered message."""
    DEAD_LETTERS.labels(destination_template(subject)).inc()


def tick_published(fired: ScheduleFired, now_s: float) -> None:
    """The ticker's lag observer: how late this tick went out."""
    TICKER_LAG.observe(max(0.0, now_s - fired.scheduled_at.timestamp()))


def queue_age(now: datetime, oldest: datetime | None, waiting: int) -> float:
    """Seconds the oldest unacknowledged request has waited; 0 when nothing waits."""
    if oldest is None or waiting == 0:
        return 0.0
    return max(0.0, (now - oldest).total_seconds())


class GaugeCollector(Collector):
    """Gauges read at scrape time from a live object (a runner's slots, its worker pool)."""

    def __init__(self, read: Callable[[], list[tuple[str, str, dict[str, str], float]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """One gauge family per name, each sample with its labels."""
        families: dict[str, GaugeMetricFamily] = {}
        for name, documentation, labels, value in self._read():
            family = families.get(name)
            if family is None:
                family = GaugeMetricFamily(name, documentation, labels=sorted(labels))
                families[name] = family
            family.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


def register_gauges(read: Callable[[], list[tuple[str, str, dict[str, str], float]]]) -> Any:
    """Register gauges read from a live object at each scrape; returns the collector."""
    collector = GaugeCollector(read)
    REGISTRY.register(collector)
    return collector
