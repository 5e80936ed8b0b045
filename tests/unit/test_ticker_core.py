"""The ticker's pure decisions: catch-up plans after downtime, as tables of fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mainspring.sdk.triggers import CatchUp, TimedSpec, on_schedule
from mainspring_services.ticker.core import due_ticks, next_fire, same_timing, start_cursor
from tests.unit.schedule_options import ScheduleOptions

GRACE = timedelta(seconds=1)
WINDOW = timedelta(hours=1)


def at(clock: str) -> datetime:
    """A time on 2025-06-01 UTC: 'HH:MM:SS[.f]'."""
    return datetime.fromisoformat(f"2025-06-01T{clock}").replace(tzinfo=UTC)


def clocks(*values: str) -> list[datetime]:
    return [at(v) for v in values]


MINUTELY: ScheduleOptions = {"every": "1m"}

# (spec kwargs, cursor, now, expected fire, expected missed, expected cursor, what the row shows)
PLANS: list[tuple[ScheduleOptions, str, str, list[str], int, str, str]] = [
    (MINUTELY, "10:00:00", "10:00:30", [], 0, "10:00:00", "nothing due yet"),
    (MINUTELY, "10:00:00", "10:01:00", ["10:01:00"], 0, "10:01:00", "on time, exactly"),
    (MINUTELY, "10:00:00", "10:01:00.4", ["10:01:00"], 0, "10:01:00", "on time, a bit late"),
    (
        {**MINUTELY, "catchup": "skip"},
        "10:00:00",
        "10:01:00.4",
        ["10:01:00"],
        0,
        "10:01:00",
        "skip fires on-time ticks",
    ),
    (
        {**MINUTELY, "catchup": "all"},
        "10:00:00",
        "10:01:00.4",
        ["10:01:00"],
        0,
        "10:01:00",
        "all fires on-time ticks",
    ),
    # Down from 10:00:10 to 10:05:30: five ticks passed.
    (MINUTELY, "10:00:00", "10:05:30", ["10:05:00"], 4, "10:05:00", "latest: most recent once"),
    (
        {**MINUTELY, "catchup": "skip"},
        "10:00:00",
        "10:05:30",
        [],
        5,
        "10:05:00",
        "skip: none, cursor moves on",
    ),
    (
        {**MINUTELY, "catchup": "all"},
        "10:00:00",
        "10:05:30",
        ["10:01:00", "10:02:00", "10:03:00", "10:04:00", "10:05:00"],
        0,
        "10:05:00",
        "all: every one",
    ),
    (
        {**MINUTELY, "catchup": "all", "catchup_window": "2m"},
        "10:00:00",
        "10:05:30",
        ["10:04:00", "10:05:00"],
        3,
        "10:05:00",
        "all: bounded by the window",
    ),
    # Back just as a tick is due: the on-time tick fires whatever the policy.
    (
        MINUTELY,
        "10:00:00",
        "10:05:00.5",
        ["10:04:00", "10:05:00"],
        3,
        "10:05:00",
        "latest: missed one + on-time",
    ),
    (
        {**MINUTELY, "catchup": "skip"},
        "10:00:00",
        "10:05:00.5",
        ["10:05:00"],
        4,
        "10:05:00",
        "skip: only the on-time one",
    ),
    # Cron, daily at 09:00, down for three days.
    ({"cron": "0 9 * * *"}, "09:00:00", "09:00:00", [], 0, "09:00:00", "cron: already fired"),
]


@pytest.mark.parametrize(("spec", "cursor", "now", "fire", "missed", "new_cursor", "why"), PLANS)
def test_catch_up_plans(
    spec: ScheduleOptions,
    cursor: str,
    now: str,
    fire: list[str],
    missed: int,
    new_cursor: str,
    why: str,
) -> None:
    plan = due_ticks(on_schedule(**spec), at(cursor), at(now), grace=GRACE, default_window=WINDOW)
    assert plan.fire == clocks(*fire), why
    assert plan.missed == missed, why
    assert plan.cursor == at(new_cursor), why
    assert not plan.more


@pytest.mark.parametrize(
    ("catchup", "fire"),
    [
        ("latest", ["2025-06-04T09:00"]),
        ("skip", []),
        ("all", []),  # the default window (1h) holds none of the missed days
    ],
)
def test_daily_cron_after_days_of_downtime(catchup: CatchUp, fire: list[str]) -> None:
    spec = on_schedule(cron="0 9 * * *", catchup=catchup)
    now = datetime(2025, 6, 4, 15, 0, tzinfo=UTC)
    plan = due_ticks(
        spec, datetime(2025, 6, 1, 9, 0, tzinfo=UTC), now, grace=GRACE, default_window=WINDOW
    )
    assert plan.fire == [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in fire]
    assert plan.cursor == datetime(2025, 6, 4, 9, 0, tzinfo=UTC)
    # Whatever was dropped, the schedule continues with the next future tick.
    assert next_fire(spec, plan.cursor) == datetime(2025, 6, 5, 9, 0, tzinfo=UTC)


def test_skip_continues_with_future_ticks() -> None:
    spec = on_schedule(every="1m", catchup="skip")
    plan = due_ticks(spec, at("10:00:00"), at("10:05:30"), grace=GRACE, default_window=WINDOW)
    assert plan.fire == []
    assert plan.cursor is not None
    following = due_ticks(spec, plan.cursor, at("10:06:00.1"), grace=GRACE, default_window=WINDOW)
    assert following.fire == [at("10:06:00")]
    assert following.missed == 0


def test_all_is_bounded_per_call_and_resumes() -> None:
    spec = on_schedule(every="1m", catchup="all")
    first = due_ticks(
        spec, at("10:00:00"), at("10:05:30"), grace=GRACE, default_window=WINDOW, limit=2
    )
    assert first.fire == clocks("10:01:00", "10:02:00")
    assert first.more
    assert first.cursor is not None
    rest = due_ticks(spec, first.cursor, at("10:05:30"), grace=GRACE, default_window=WINDOW)
    assert rest.fire == clocks("10:03:00", "10:04:00", "10:05:00")
    assert not rest.more


def test_latest_after_a_week_of_a_per_second_cron() -> None:
    spec = on_schedule(cron="* * * * * *")
    now = at("12:00:00.5")
    plan = due_ticks(spec, now - timedelta(days=7), now, grace=GRACE, default_window=WINDOW)
    # The newest missed tick once, then the on-time one.
    assert plan.fire == clocks("11:59:59", "12:00:00")
    assert plan.cursor == at("12:00:00")


@pytest.mark.parametrize(
    ("last_fired", "defined_at", "expected"),
    [
        (None, "10:00:00", "10:00:00"),
        ("10:05:00", "10:00:00", "10:05:00"),
        # Re-enabled (or rescheduled) after the last tick: nothing before that is caught up.
        ("10:05:00", "11:00:00", "11:00:00"),
    ],
)
def test_start_cursor(last_fired: str | None, defined_at: str, expected: str) -> None:
    last = at(last_fired) if last_fired else None
    assert start_cursor(last, at(defined_at)) == at(expected)


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ({"every": "1m"}, {"every": "1m", "overlap": "allow"}, True),
        ({"every": "1m"}, {"every": "1m", "catchup": "all"}, True),
        ({"every": "1m"}, {"every": "2m"}, False),
        ({"cron": "0 9 * * *"}, {"cron": "0 9 * * *", "tz": "Europe/Berlin"}, False),
        ({"cron": "0 9 * * *"}, {"every": "1d"}, False),
    ],
)
def test_same_timing(old: ScheduleOptions, new: ScheduleOptions, same: bool) -> None:
    first: TimedSpec = on_schedule(**old)
    second: TimedSpec = on_schedule(**new)
    assert same_timing(first, second) is same


@pytest.mark.parametrize(
    ("armed", "now", "fire", "new_cursor"),
    [
        ("10:01:00", "10:01:00.2", ["10:01:00"], "10:01:00"),  # on time: the armed tick alone
        ("10:01:00", "10:00:59", [], "10:00:00"),  # not yet due
        ("10:01:00", "10:05:30", ["10:05:00"], "10:05:00"),  # late: the policy decides
    ],
)
def test_armed_tick_fast_path_agrees_with_the_search(
    armed: str, now: str, fire: list[str], new_cursor: str
) -> None:
    spec = on_schedule(every="1m")
    plan = due_ticks(
        spec, at("10:00:00"), at(now), grace=GRACE, default_window=WINDOW, armed=at(armed)
    )
    searched = due_ticks(spec, at("10:00:00"), at(now), grace=GRACE, default_window=WINDOW)
    assert plan.fire == clocks(*fire) == searched.fire
    assert plan.cursor == at(new_cursor) == searched.cursor


@pytest.mark.parametrize(
    ("cron", "fire"),
    [
        # Europe/Berlin, 2023-10-29: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
        ("0 * * * *", ["00:00", "01:00", "02:00"]),  # hourly: 02:00 CEST, 02:00 CET, 03:00
        ("0 2 * * *", ["00:00"]),  # a fixed time: the first 02:00 only
    ],
)
def test_catch_up_across_the_repeated_hour(cron: str, fire: list[str]) -> None:
    spec = on_schedule(cron=cron, tz="Europe/Berlin", catchup="all", catchup_window="6h")
    cursor = datetime(2023, 10, 28, 23, 30, tzinfo=UTC)
    now = datetime(2023, 10, 29, 2, 30, tzinfo=UTC)
    plan = due_ticks(spec, cursor, now, grace=GRACE, default_window=WINDOW)
    expected = [datetime.fromisoformat(f"2023-10-29T{clock}+00:00") for clock in fire]
    # Distinct nominal instants, so the two 02:00 ticks carry distinct Nats-Msg-Ids.
    assert plan.fire == expected
    assert len(set(plan.fire)) == len(plan.fire)


def test_a_new_dst_repeat_rearms_the_schedule() -> None:
    first = on_schedule(cron="30 2 * * *", tz="Europe/Berlin")
    last = on_schedule(cron="30 2 * * *", tz="Europe/Berlin", dst_repeat="last")
    assert not same_timing(first, last)
    after = datetime(2023, 10, 28, 12, 0, tzinfo=UTC)
    # The ticker's next tick follows the trigger's choice: 02:30 CEST, or 02:30 CET.
    assert next_fire(first, after) == datetime(2023, 10, 29, 0, 30, tzinfo=UTC)
    assert next_fire(last, after) == datetime(2023, 10, 29, 1, 30, tzinfo=UTC)
