"""Schedule arithmetic: `every` grammar, cron forms, and the DST rules, as tables."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mainspring.base.schedules import (
    DstRepeat,
    ScheduleError,
    check_cron,
    is_fixed_time,
    next_cron_fire,
    next_timed_fire,
    parse_every,
    parse_tz,
    upcoming_fires,
)
from mainspring.sdk.triggers import on_poll, on_schedule
from tests.unit.fire_sequences import assert_fires_in_order
from tests.unit.schedule_options import ScheduleOptions


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("30m", 1800),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        (" 5M ", 300),
        ("90s", 90),
    ],
)
def test_every_grammar(text: str, seconds: int) -> None:
    assert parse_every(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "1.5h", "0s", "0h0m", "h", "10x", "1h 30m", "-5s"])
def test_every_rejects_what_is_not_an_interval(text: str) -> None:
    with pytest.raises(ScheduleError, match="every="):
        parse_every(text)


@pytest.mark.parametrize(
    "expr",
    [
        "*/5 * * * *",
        "0 9 * * MON-FRI",
        "0 0 1 JAN,JUL *",
        "@hourly",
        "@daily",
        "@weekly",
        "30 */2 * * * *",
        "0 0 0 * * *",  # seconds first: midnight, to the second
        "*/10 * * * * *",
    ],
)
def test_cron_forms_accepted(expr: str) -> None:
    assert check_cron(expr) == expr


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("0 0 0 * * * 2030", "has 7 fields"),
        ("61 * * * *", "not a valid cron"),
        ("* * * * FUNDAY", "not a valid cron"),
        ("@fortnightly", "not a valid cron"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_cron_errors_name_the_fix(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        check_cron(expr)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # 6 fields read seconds first: second minute hour day month weekday.
        ("30 */2 * * * *", "2025-01-01T00:00:00", "2025-01-01T00:00:30"),
        ("30 */2 * * * *", "2025-01-01T00:00:30", "2025-01-01T00:02:30"),
        ("*/10 * * * * *", "2025-01-01T00:00:05.5", "2025-01-01T00:00:10"),
        ("0 0 12 * * *", "2025-01-01T00:00:00", "2025-01-01T12:00:00"),
        ("@hourly", "2025-01-01T00:00:00", "2025-01-01T01:00:00"),
        ("@daily", "2025-01-01T00:00:01", "2025-01-02T00:00:00"),
        ("0 9 * * MON-FRI", "2025-01-03T09:00:00", "2025-01-06T09:00:00"),  # Fri -> Mon
        ("0 0 1 JAN *", "2025-01-01T00:00:00", "2026-01-01T00:00:00"),
    ],
)
def test_cron_next_fire_in_utc(expr: str, after: str, expected: str) -> None:
    assert next_cron_fire(expr, ZoneInfo("UTC"), utc(after)) == utc(expected)


# (tz, cron, after in UTC, expected next fire in UTC, what the row shows)
DST_TABLE = [
    # Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST; 2025-10-26 03:00 CEST -> 02:00 CET.
    ("Europe/Berlin", "30 2 * * *", "2025-03-29T12:00", "2025-03-30T01:00", "skipped: at the jump"),
    ("Europe/Berlin", "30 2 * * *", "2025-03-30T01:00", "2025-03-31T00:30", "then next day"),
    ("Europe/Berlin", "*/15 * * * *", "2025-03-30T00:45", "2025-03-30T01:00", "03:00, real"),
    ("Europe/Berlin", "*/15 * * * *", "2025-03-30T01:00", "2025-03-30T01:15", "03:15 CEST"),
    ("Europe/Berlin", "30 2 * * *", "2025-10-25T12:00", "2025-10-26T00:30", "repeated: first"),
    ("Europe/Berlin", "30 2 * * *", "2025-10-26T00:30", "2025-10-27T01:30", "not twice"),
    ("Europe/Berlin", "0 * * * *", "2025-10-26T00:00", "2025-10-26T01:00", "02:00 again, CET"),
    ("Europe/Berlin", "0 0 9 * * *", "2025-03-29T12:00", "2025-03-30T07:00", "6 fields, CEST"),
    # America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.
    ("America/New_York", "30 2 * * *", "2025-03-08T12:00", "2025-03-09T07:00", "skipped"),
    ("America/New_York", "30 2 * * *", "2025-03-09T07:00", "2025-03-10T06:30", "next day"),
    ("America/New_York", "30 1 * * *", "2025-11-01T12:00", "2025-11-02T05:30", "first 01:30"),
    ("America/New_York", "30 1 * * *", "2025-11-02T05:30", "2025-11-03T06:30", "not 06:30Z"),
    ("America/New_York", "0 9 * * MON-FRI", "2025-03-07T15:00", "2025-03-10T13:00", "EDT Mon"),
    ("America/New_York", "@daily", "2025-11-01T05:00", "2025-11-02T04:00", "midnight EDT"),
    # Australia/Lord_Howe shifts by 30 minutes: 2025-04-06 02:00 (+11) -> 01:30 (+10:30);
    # 2025-10-05 02:00 (+10:30) -> 02:30 (+11).
    ("Australia/Lord_Howe", "15 2 * * *", "2025-10-04T00:00", "2025-10-04T15:30", "skipped"),
    ("Australia/Lord_Howe", "15 2 * * *", "2025-10-04T15:30", "2025-10-05T15:15", "next day"),
    ("Australia/Lord_Howe", "45 1 * * *", "2025-04-05T00:00", "2025-04-05T14:45", "first"),
    ("Australia/Lord_Howe", "45 1 * * *", "2025-04-05T14:45", "2025-04-06T15:15", "not twice"),
    ("Australia/Lord_Howe", "*/20 * * * *", "2025-04-05T14:40", "2025-04-05T15:10", "01:40 again"),
]


@pytest.mark.parametrize(("tz", "expr", "after", "expected", "why"), DST_TABLE)
def test_dst_rules(tz: str, expr: str, after: str, expected: str, why: str) -> None:
    assert next_cron_fire(expr, ZoneInfo(tz), utc(after)) == utc(expected), why


def fires_between(expr: str, tz: str, start: str, end: str) -> list[datetime]:
    fires, cursor = [], utc(start) - timedelta(seconds=1)
    while (cursor := next_cron_fire(expr, ZoneInfo(tz), cursor)) < utc(end):
        fires.append(cursor)
    return fires


# Every half hour, written as explicit values: a fixed-time cron by Vixie cron's rule.
FIXED_HALF_HOURS = "0,30 " + ",".join(str(hour) for hour in range(24)) + " * * *"
DST_DAYS = [
    # (tz, local midnight to midnight in UTC, real half hours, distinct fixed-time fires)
    # A 23-hour day: the skipped 02:00 and 02:30 fold into the jump to 03:00, a listed time.
    ("Europe/Berlin", "2025-03-29T23:00", "2025-03-30T22:00", 46, 46),
    # A 25-hour day: the repeated 02:00 and 02:30 fire once each.
    ("Europe/Berlin", "2025-10-25T22:00", "2025-10-26T23:00", 50, 48),
    ("America/New_York", "2025-03-09T05:00", "2025-03-10T04:00", 46, 46),
    ("America/New_York", "2025-11-02T04:00", "2025-11-03T05:00", 50, 48),
    # Lord Howe skips 02:00-02:29 (02:00 folds into 02:30) and repeats 01:30-01:59.
    ("Australia/Lord_Howe", "2025-10-04T13:30", "2025-10-05T13:00", 47, 47),
    ("Australia/Lord_Howe", "2025-04-05T13:00", "2025-04-06T13:30", 49, 48),
]


@pytest.mark.parametrize(("tz", "day_start_utc", "day_end_utc", "_", "fixed_fires"), DST_DAYS)
def test_dst_days_fire_each_fixed_wall_time_once(
    tz: str, day_start_utc: str, day_end_utc: str, _: int, fixed_fires: int
) -> None:
    fires = fires_between(FIXED_HALF_HOURS, tz, day_start_utc, day_end_utc)
    walls = [f.astimezone(ZoneInfo(tz)).strftime("%H:%M") for f in fires]
    assert len(fires) == fixed_fires
    assert len(set(fires)) == len(fires)
    assert fires == sorted(fires)
    assert len(set(walls)) == len(walls), "a repeated wall time fired twice"


@pytest.mark.parametrize(("tz", "day_start_utc", "day_end_utc", "half_hours", "_"), DST_DAYS)
def test_dst_days_follow_real_time_for_wildcard_crons(
    tz: str, day_start_utc: str, day_end_utc: str, half_hours: int, _: int
) -> None:
    fires = fires_between("*/30 * * * *", tz, day_start_utc, day_end_utc)
    assert len(fires) == half_hours
    assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(minutes=30)}


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_in_order(expr: str, tz: str, fires: list[str], dst_repeat: DstRepeat = "first") -> None:
    assert_fires_in_order(expr, tz, [local(f) for f in fires], dst_repeat)


# Issue 15: crons with a wildcard, range or step in the minute or hour field (and @hourly,
# per-second crons) run on real time: both passes of a repeated hour, nothing extra at a jump.
# Europe/Berlin: 2023-03-26 02:00 CET -> 03:00 CEST; 2023-10-29 03:00 CEST -> 02:00 CET.
REAL_TIME_CRONS = [
    (
        "0 * * * *",
        "Europe/Berlin",
        [
            "2023-10-29T01:00+02:00",
            "2023-10-29T02:00+02:00",
            "2023-10-29T02:00+01:00",
            "2023-10-29T03:00+01:00",
        ],
    ),
    (
        "@hourly",
        "Europe/Berlin",
        ["2023-10-29T02:00+02:00", "2023-10-29T02:00+01:00", "2023-10-29T03:00+01:00"],
    ),
    (
        "*/15 * * * *",
        "Europe/Berlin",
        ["2023-10-29T02:45+02:00", "2023-10-29T02:00+01:00", "2023-10-29T02:15+01:00"],
    ),
    (
        "*/15 * * * *",
        "Europe/Berlin",
        [
            "2023-03-26T01:30+01:00",
            "2023-03-26T01:45+01:00",
            "2023-03-26T03:00+02:00",
            "2023-03-26T03:15+02:00",
        ],
    ),
    (
        "45 * * * *",
        "Europe/Berlin",
        ["2023-03-26T00:45+01:00", "2023-03-26T01:45+01:00", "2023-03-26T03:45+02:00"],
    ),
    (
        "30 1-3 * * *",
        "Europe/Berlin",
        [
            "2023-10-29T01:30+02:00",
            "2023-10-29T02:30+02:00",
            "2023-10-29T02:30+01:00",
            "2023-10-29T03:30+01:00",
            "2023-10-30T01:30+01:00",
        ],
    ),
    ("30 1-3 * * *", "Europe/Berlin", ["2023-03-26T01:30+01:00", "2023-03-26T03:30+02:00"]),
    (
        "0 */30 * * * *",
        "Europe/Berlin",
        ["2023-10-29T02:30+02:00", "2023-10-29T02:00+01:00", "2023-10-29T02:30+01:00"],
    ),
    ("*/20 * * * * *", "Europe/Berlin", ["2023-03-26T01:59:40+01:00", "2023-03-26T03:00:00+02:00"]),
    # croniter issue 149: Europe/London 2025-03-30 01:00 GMT -> 02:00 BST.
    ("7 * * * *", "Europe/London", ["2025-03-30T00:07+00:00", "2025-03-30T02:07+01:00"]),
]


@pytest.mark.parametrize(("expr", "tz", "fires"), REAL_TIME_CRONS)
def test_wildcard_crons_run_on_real_time(expr: str, tz: str, fires: list[str]) -> None:
    assert_in_order(expr, tz, fires)


# Fixed-time crons keep the wall-clock rules: a skipped time fires once at the jump, a
# repeated time once (its first pass unless dst_repeat says otherwise).
FIXED_TIME_CRONS = [
    (
        "30 2 * * *",
        "Europe/Berlin",
        ["2023-03-25T02:30+01:00", "2023-03-26T03:00+02:00", "2023-03-27T02:30+02:00"],
    ),
    (
        "0,30 2 * * *",
        "Europe/Berlin",
        ["2023-03-25T02:30+01:00", "2023-03-26T03:00+02:00", "2023-03-27T02:00+02:00"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        ["2023-10-28T02:30+02:00", "2023-10-29T02:30+02:00", "2023-10-30T02:30+01:00"],
    ),
    ("0 30 2 * * *", "Europe/Berlin", ["2023-10-29T02:30+02:00", "2023-10-30T02:30+01:00"]),
]


@pytest.mark.parametrize(("expr", "tz", "fires"), FIXED_TIME_CRONS)
def test_fixed_time_crons_keep_wall_clock_rules(expr: str, tz: str, fires: list[str]) -> None:
    assert_in_order(expr, tz, fires)


@pytest.mark.parametrize(
    ("expr", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 9 * * MON-FRI", True),
        ("0,30 8,12 * * *", True),
        ("@daily", True),
        ("@weekly", True),
        ("0 30 2 * * *", True),
        ("0 * * * *", False),
        ("@hourly", False),
        ("*/15 * * * *", False),
        ("30 1-3 * * *", False),
        ("0-30 2 * * *", False),
        ("0 */2 * * *", False),
        ("*/10 30 2 * * *", False),
        ("0 0 */2 * * *", False),
    ],
)
def test_fixed_time_means_explicit_second_minute_and_hour(expr: str, fixed: bool) -> None:
    assert is_fixed_time(expr) is fixed


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize(
    ("every", "start"),
    [("1h", "2025-03-29T20:00"), ("30m", "2025-10-25T20:00"), ("45m", "2025-04-05T10:00")],
)
def test_intervals_stay_fixed_in_absolute_time(tz: str, every: str, start: str) -> None:
    step = parse_every(every)
    fires, cursor = [], utc(start)
    for _ in range(100):
        cursor = next_timed_fire(None, every, tz, cursor)
        fires.append(cursor)
    assert {b - a for a, b in itertools.pairwise(fires)} == {step}
    assert all(f.timestamp() % step.total_seconds() == 0 for f in fires)


def test_bad_tz_names_the_fix() -> None:
    with pytest.raises(ScheduleError, match="IANA time zone"):
        parse_tz("Mars/Olympus")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"cron": "* * * * *", "every": "1m"}],
)
def test_exactly_one_of_cron_and_every(kwargs: ScheduleOptions) -> None:
    with pytest.raises(ScheduleError, match="exactly one of cron= and every="):
        on_schedule(**kwargs)


def test_on_schedule_checks_every_field() -> None:
    assert on_schedule(cron="0 9 * * MON-FRI", tz="Australia/Lord_Howe").tz == (
        "Australia/Lord_Howe"
    )
    with pytest.raises(ScheduleError, match="IANA"):
        on_schedule(every="1m", tz="Nowhere/Town")
    with pytest.raises(ScheduleError, match="'soon' is not an interval"):
        on_schedule(every="1m", catchup="all", catchup_window="soon")


def poll_source() -> dict[str, int] | None:
    return None


def test_on_poll_names_its_function() -> None:
    spec = on_poll(poll_source, every="10s", catchup="skip")
    assert spec.fn == f"{__name__}:poll_source"
    assert spec.catchup == "skip"
    with pytest.raises(ScheduleError, match="module-level"):
        on_poll(lambda: None, every="10s")


# dst_repeat picks the pass(es) of a repeated fixed time: Europe/Berlin 2023-10-29 repeats
# 02:00-02:59 (first pass CEST +02:00, second CET +01:00).
DST_REPEAT_CASES = [
    ("first", ["2023-10-28T02:30+02:00", "2023-10-29T02:30+02:00", "2023-10-30T02:30+01:00"]),
    ("last", ["2023-10-28T02:30+02:00", "2023-10-29T02:30+01:00", "2023-10-30T02:30+01:00"]),
    (
        "both",
        [
            "2023-10-28T02:30+02:00",
            "2023-10-29T02:30+02:00",
            "2023-10-29T02:30+01:00",
            "2023-10-30T02:30+01:00",
        ],
    ),
]


@pytest.mark.parametrize(("dst_repeat", "fires"), DST_REPEAT_CASES)
def test_dst_repeat_picks_the_pass_of_a_repeated_fixed_time(
    dst_repeat: DstRepeat, fires: list[str]
) -> None:
    assert_in_order("30 2 * * *", "Europe/Berlin", fires, dst_repeat)


@pytest.mark.parametrize("dst_repeat", ["first", "last", "both"])
def test_dst_repeat_leaves_a_skipped_time_at_the_jump(dst_repeat: DstRepeat) -> None:
    fires = ["2023-03-25T02:30+01:00", "2023-03-26T03:00+02:00", "2023-03-27T02:30+02:00"]
    assert_in_order("30 2 * * *", "Europe/Berlin", fires, dst_repeat)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "30 2 * * *", "dst_repeat": "twice"}, "dst_repeat='twice' is not a choice"),
        ({"every": "1h", "dst_repeat": "last"}, "applies to cron times only"),
        ({"cron": "0 * * * *", "dst_repeat": "both"}, "applies to fixed-time crons only"),
        ({"cron": "@hourly", "dst_repeat": "last"}, "applies to fixed-time crons only"),
    ],
)
def test_dst_repeat_is_checked_at_definition(kwargs: dict[str, Any], message: str) -> None:
    # Any: untyped callers (a config file, the CLI) can pass what the Literal forbids.
    with pytest.raises(ScheduleError, match=message) as raised:
        on_schedule(**kwargs)
    assert "\n" not in str(raised.value)
    with pytest.raises(ScheduleError, match=message):
        on_poll(poll_source, **kwargs)


def test_dst_repeat_travels_with_the_trigger_definition() -> None:
    spec = on_schedule(cron="30 2 * * *", tz="Europe/Berlin", dst_repeat="last")
    assert type(spec).model_validate_json(spec.model_dump_json()).dst_repeat == "last"
    assert on_schedule(every="1h").dst_repeat == "first"  # intervals are unaffected


@pytest.mark.parametrize(
    ("cron", "dst_repeat", "after", "fires"),
    [
        (
            "30 2 * * *",
            "first",
            "2023-03-25T12:00",
            [
                (
                    "2023-03-26T03:00+02:00",
                    "moved by DST: 02:30 does not exist on 2023-03-26 "
                    "(clocks jump 02:00 -> 03:00), fires at the jump",
                ),
                ("2023-03-27T02:30+02:00", None),
            ],
        ),
        (
            "30 2 * * *",
            "last",
            "2023-10-28T12:00",
            [
                (
                    "2023-10-29T02:30+01:00",
                    "DST repeats 02:30 on 2023-10-29: fires on the second pass only "
                    "(dst_repeat='last')",
                ),
                ("2023-10-30T02:30+01:00", None),
            ],
        ),
        (
            "0 * * * *",
            "first",
            "2023-10-28T23:30",
            [
                (
                    "2023-10-29T02:00+02:00",
                    "doubled by DST: 02:00 happens twice on 2023-10-29, this is the first pass",
                ),
                (
                    "2023-10-29T02:00+01:00",
                    "doubled by DST: 02:00 happens twice on 2023-10-29, this is the second pass",
                ),
                ("2023-10-29T03:00+01:00", None),
            ],
        ),
        # A wildcard cron loses the skipped hour outright: nothing moved, nothing to mark.
        (
            "45 * * * *",
            "first",
            "2023-03-26T00:00",
            [("2023-03-26T01:45+01:00", None), ("2023-03-26T03:45+02:00", None)],
        ),
    ],
)
def test_upcoming_fires_mark_what_dst_moved_or_doubled(
    cron: str, dst_repeat: DstRepeat, after: str, fires: list[tuple[str, str | None]]
) -> None:
    got = upcoming_fires(cron, None, "Europe/Berlin", utc(after), len(fires), dst_repeat)
    assert got == [(local(at), note) for at, note in fires]
