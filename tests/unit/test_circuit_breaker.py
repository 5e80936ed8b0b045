"""The circuit breaker's count: triggered runs per routine within its window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from mainspring import Routine, on_schedule
from mainspring.contract.messages import RequestRun
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import (
    RegistryError,
    RoutineDefinition,
    RoutineOptions,
    routine_options,
)
from mainspring_services.dispatcher import breaker

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def definition(max_fires: int | None = 3, window_s: float = 60.0) -> RoutineDefinition:
    return RoutineDefinition(
        name="busy",
        version="v1",
        entrypoint="busy.py:Busy",
        class_name="Busy",
        trigger_param="tick",
        trigger=ScheduleTrigger(every="1s"),
        options=RoutineOptions(max_fires=max_fires, max_fires_window_s=window_s),
        created_at=T0,
        updated_at=T0,
    )


def test_it_trips_on_the_first_run_past_the_limit_within_the_window() -> None:
    windows = breaker.FireWindows()
    fires = [windows.record(definition(), T0 + timedelta(seconds=s)) for s in range(4)]

    assert fires == [None, None, None, 4]


def test_runs_that_left_the_window_no_longer_count() -> None:
    windows = breaker.FireWindows()
    # One run every 30 s against 3 per minute: never more than 2 in any minute.
    fires = [windows.record(definition(), T0 + timedelta(seconds=30 * n)) for n in range(10)]

    assert fires == [None] * 10


def test_after_tripping_the_count_starts_afresh() -> None:
    windows = breaker.FireWindows()
    for s in range(4):
        windows.record(definition(), T0 + timedelta(seconds=s))

    assert windows.record(definition(), T0 + timedelta(seconds=5)) is None


def test_no_limit_means_no_breaker() -> None:
    windows = breaker.FireWindows()

    assert {windows.record(definition(None), T0) for _ in range(1000)} == {None}


@pytest.mark.parametrize(
    ("source", "counted"), [("trigger", True), ("manual", False), ("api", False)]
)
def test_only_triggered_runs_count(source: str, counted: bool) -> None:
    request = RequestRun(
        run_id="r",
        routine="busy",
        routine_version="v1",
        entrypoint="busy.py:Busy",
        run_number=1,
        source=source,
        trigger_kind="schedule" if counted else "manual",
        event={},
        requested_at=T0,
    )
    assert breaker.counts(request) is counted


def test_the_reason_names_the_rate_and_the_fix() -> None:
    reason, recorded = breaker.trip(definition(), 4, T0)

    assert "4 triggered runs within 60s, over max_fires=3" in reason
    assert "mainspring routine enable busy" in reason
    assert (recorded.status, recorded.reason) == ("disabled", reason)


def test_a_class_sets_its_own_limit_and_window() -> None:
    class Busy(Routine):
        max_fires: ClassVar[int | None] = 10
        max_fires_window: ClassVar[str] = "30s"

        def run(self, tick: object = on_schedule(every="1s")) -> None: ...

    options = routine_options(Busy)
    assert (options.max_fires, options.max_fires_window_s) == (10, 30.0)


def test_a_window_that_is_not_an_interval_is_refused_with_the_fix() -> None:
    class Busy(Routine):
        max_fires_window: ClassVar[str] = "a minute"

        def run(self, tick: object = on_schedule(every="1s")) -> None: ...

    with pytest.raises(RegistryError, match=r"max_fires_window 'a minute' is not an interval"):
        routine_options(Busy)
