"""Metric labels stay bounded: refusals, recycles and triggers fall into fixed categories."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mainspring.contract.messages import RequestRun, TriggerKind
from mainspring.runtime import metrics
from tests.messages import a_request

NOW = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "hop 9 exceeds max_hops 8: run x of a (a -> b); raise max_hops on the routine",
            "loop_blocked",
        ),
        ("crash loop: 5 triggered runs in a row failed to start (last: x)", "crash_loop"),
        ("trigger disabled: crash loop: 5 runs", "disabled"),
        ("threshold not met: 3 of 10 rows since version 4", "threshold"),
        ("overlap=skip: run r of a is still running", "overlap"),
        ("input 'rows': 'x' is not a valid int", "inputs"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_refusal_reasons_are_categories(error: str | None, reason: str) -> None:
    assert metrics.refusal_reason(error) == reason
    assert reason in metrics.REFUSAL_REASONS


@pytest.mark.parametrize(
    ("status", "reason", "category"),
    [
        ("fired", None, None),
        ("loop_blocked", "hop 9 exceeds max_hops 8", "loop_blocked"),
        ("failed", "bad event", "start_failed"),
        ("skipped", "threshold not met: 3 rows", "threshold"),
        ("skipped", "trigger disabled: by user", "disabled"),
    ],
)
def test_recorded_firings_that_start_no_run_count_as_refusals(
    status: str, reason: str | None, category: str | None
) -> None:
    assert metrics.trigger_outcome_reason(status, reason) == category


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("fault: the worker process ended", "fault"),
        ("the worker process ended", "fault"),
        ("2 child process(es) still alive (12, 13)", "children"),
        ("memory grew 300MiB over its baseline (bound 256MiB)", "memory"),
        ("served 100 runs (max_runs_per_worker 100)", "max_runs"),
        ("the runner is stopping", "stopping"),
        ("left thread 'poller' running; changed the working directory", "leftovers"),
    ],
)
def test_recycle_reasons_are_categories(sentence: str, reason: str) -> None:
    assert metrics.recycle_reason(sentence) == reason
    assert reason in metrics.RECYCLE_REASONS


def request(kind: TriggerKind, event: dict[str, str]) -> RequestRun:
    return a_request(
        routine="a", trigger_kind=kind, event=event, source="trigger", requested_at=NOW
    )


def test_a_tick_waits_from_its_nominal_time_other_runs_from_their_request() -> None:
    tick = request("schedule", {"scheduled_at": "2026-03-01T12:00:00+00:00"})
    completion = request("completion", {})

    assert metrics.trigger_time(tick) == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert metrics.trigger_time(completion) == NOW


def test_an_unknown_trigger_kind_is_other() -> None:
    assert metrics.trigger_label("carrier-pigeon") == "other"


def test_gauges_are_read_at_scrape_time() -> None:
    busy = [1.0]
    registry = CollectorRegistry()
    registry.register(
        metrics.GaugeCollector(
            lambda: [
                ("mainspring_runner_slots", "slots", {"state": "busy"}, busy[0]),
                ("mainspring_runner_slots", "slots", {"state": "free"}, 2 - busy[0]),
            ]
        )
    )
    busy[0] = 2.0

    text = generate_latest(registry).decode()

    assert 'mainspring_runner_slots{state="busy"} 2.0' in text
    assert 'mainspring_runner_slots{state="free"} 0.0' in text


@pytest.mark.parametrize(
    ("oldest", "waiting", "age"),
    [
        (datetime(2026, 3, 1, 11, 59, 50, 500_000, tzinfo=UTC), 3, 10.0),
        (datetime(2026, 3, 1, 11, 59, 50, tzinfo=UTC), 0, 0.0),
        (None, 2, 0.0),
        (datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC), 1, 0.0),
    ],
)
def test_the_oldest_queued_request_age(oldest: datetime | None, waiting: int, age: float) -> None:
    assert metrics.queue_age(NOW, oldest, waiting) == age
