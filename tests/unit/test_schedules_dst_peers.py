"""DST tables published by peer schedulers, transcribed, checked against Mainspring's rule.

Mainspring follows Vixie cron: a fixed-time cron (explicit second, minute and hour values)
fires a skipped wall time once at the jump and a repeated one on the pass `dst_repeat`
names (default the first); any other cron runs on real time. Where a peer's expectation
differs by design, the row runs under the matching `dst_repeat` or the difference is noted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mainspring.base.schedules import DstRepeat, is_fixed_time, next_cron_fire
from tests.unit.fire_sequences import assert_fires_in_order


def wall(tz: str, text: str) -> datetime:
    """A wall time in tz as the peers write it: 'YYYY-MM-DD HH:MM[:SS]', with ' fold=1' for
    the second pass of a repeated time (Dagster's create_datetime(..., fold=1))."""
    stamp, _, fold = text.partition(" fold=")
    return datetime.fromisoformat(stamp).replace(tzinfo=ZoneInfo(tz), fold=int(fold or 0))


def on_first_pass(fire: datetime) -> datetime:
    """The first pass of a fire's wall time (itself unless the wall time repeats)."""
    return fire.replace(fold=0)


# Source: dagster-io/dagster @ 04a89418f85160d6907f8838ae321ed6e9f9571b,
# python_modules/dagster/dagster_tests/scheduler_tests/test_cron_string_iterator.py,
# DST_PARAMS (test_dst_transition_advances) and the DST rows of DAY_OF_WEEK_FILTER_PARAMS
# (test_day_of_week_filter_schedules). Dagster fires a repeated fixed time on its last
# pass (fold=1), so these rows run under dst_repeat="last"; its wildcard crons run on real
# time as ours do. Europe/Berlin 2023: 03-26 02:00 -> 03:00, 10-29 03:00 -> 02:00.
DAGSTER_DST_PARAMS: list[tuple[str, str, list[str]]] = [
    # Daily / fall back
    ("Europe/Berlin", "45 1 * * *", ["2023-10-27 01:45", "2023-10-28 01:45", "2023-10-29 01:45",
                                     "2023-10-30 01:45", "2023-10-31 01:45", "2023-11-01 01:45"]),
    ("Australia/Lord_Howe", "0 2 * * *", ["2023-09-29 02:00", "2023-09-30 02:00",
                                          "2023-10-01 02:30", "2023-10-02 02:00",
                                          "2023-10-03 02:00"]),
    ("Europe/Berlin", "0 2 * * *", ["2023-10-27 02:00", "2023-10-28 02:00",
                                    "2023-10-29 02:00 fold=1", "2023-10-30 02:00",
                                    "2023-10-31 02:00", "2023-11-01 02:00"]),
    ("Europe/Berlin", "30 2 * * *", ["2023-10-27 02:30", "2023-10-28 02:30",
                                     "2023-10-29 02:30 fold=1", "2023-10-30 02:30",
                                     "2023-10-31 02:30", "2023-11-01 02:30"]),
    ("Europe/Berlin", "0 3 * * *", ["2023-10-27 03:00", "2023-10-28 03:00", "2023-10-29 03:00",
                                    "2023-10-30 03:00", "2023-10-31 03:00", "2023-11-01 03:00"]),
    # Hourly / fall back
    ("Europe/Berlin", "45 * * * *", ["2023-10-29 00:45", "2023-10-29 01:45", "2023-10-29 02:45",
                                     "2023-10-29 02:45 fold=1", "2023-10-29 03:45"]),
    ("Europe/Berlin", "0 * * * *", ["2023-10-29 00:00", "2023-10-29 01:00", "2023-10-29 02:00",
                                    "2023-10-29 02:00 fold=1", "2023-10-29 03:00"]),
    # Weekly / fall back
    ("Europe/Berlin", "45 1 * * 0", ["2023-10-15 01:45", "2023-10-22 01:45", "2023-10-29 01:45",
                                     "2023-11-05 01:45", "2023-11-12 01:45", "2023-11-19 01:45"]),
    ("Europe/Berlin", "0 2 * * 0", ["2023-10-15 02:00", "2023-10-22 02:00",
                                    "2023-10-29 02:00 fold=1", "2023-11-05 02:00",
                                    "2023-11-12 02:00", "2023-11-19 02:00"]),
    ("Europe/Berlin", "30 2 * * 0", ["2023-10-15 02:30", "2023-10-22 02:30",
                                     "2023-10-29 02:30 fold=1", "2023-11-05 02:30",
                                     "2023-11-12 02:30", "2023-11-19 02:30"]),
    ("Europe/Berlin", "0 3 * * 0", ["2023-10-15 03:00", "2023-10-22 03:00", "2023-10-29 03:00",
                                    "2023-11-05 03:00", "2023-11-12 03:00", "2023-11-19 03:00"]),
    # Monthly / fall back (US/Central 2023-11-05 02:00 -> 01:00)
    ("US/Central", "45 0 5 * *", ["2023-09-05 00:45", "2023-10-05 00:45", "2023-11-05 00:45",
                                  "2023-12-05 00:45", "2024-01-05 00:45"]),
    ("US/Central", "0 1 5 * *", ["2023-09-05 01:00", "2023-10-05 01:00",
                                 "2023-11-05 01:00 fold=1", "2023-12-05 01:00",
                                 "2024-01-05 01:00"]),
    ("US/Central", "30 1 5 * *", ["2023-09-05 01:30", "2023-10-05 01:30",
                                  "2023-11-05 01:30 fold=1", "2023-12-05 01:30",
                                  "2024-01-05 01:30"]),
    ("US/Central", "0 2 5 * *", ["2023-09-05 02:00", "2023-10-05 02:00",
                                 "2023-11-05 02:00 fold=1", "2023-12-05 02:00",
                                 "2024-01-05 02:00"]),
    # Daily / spring forward
    ("Europe/Berlin", "0 1 * * *", ["2023-03-24 01:00", "2023-03-25 01:00", "2023-03-26 01:00",
                                    "2023-03-27 01:00", "2023-03-28 01:00", "2023-03-29 01:00"]),
    ("Europe/Berlin", "0 2 * * *", ["2023-03-24 02:00", "2023-03-25 02:00", "2023-03-26 03:00",
                                    "2023-03-27 02:00", "2023-03-28 02:00", "2023-03-29 02:00"]),
    ("Europe/Berlin", "30 2 * * *", ["2023-03-24 02:30", "2023-03-25 02:30", "2023-03-26 03:00",
                                     "2023-03-27 02:30", "2023-03-28 02:30", "2023-03-29 02:30"]),
    ("Europe/Berlin", "0 3 * * *", ["2023-03-24 03:00", "2023-03-25 03:00", "2023-03-26 03:00",
                                    "2023-03-27 03:00", "2023-03-28 03:00", "2023-03-29 03:00"]),
    # Weekly / spring forward
    ("Europe/Berlin", "0 1 * * 0", ["2023-03-12 01:00", "2023-03-19 01:00", "2023-03-26 01:00",
                                    "2023-04-02 01:00", "2023-04-09 01:00", "2023-04-16 01:00"]),
    ("Europe/Berlin", "0 2 * * 0", ["2023-03-12 02:00", "2023-03-19 02:00", "2023-03-26 03:00",
                                    "2023-04-02 02:00", "2023-04-09 02:00", "2023-04-16 02:00"]),
    ("Europe/Berlin", "30 2 * * 0", ["2023-03-12 02:30", "2023-03-19 02:30", "2023-03-26 03:00",
                                     "2023-04-02 02:30", "2023-04-09 02:30", "2023-04-16 02:30"]),
    ("Europe/Berlin", "0 3 * * 0", ["2023-03-12 03:00", "2023-03-19 03:00", "2023-03-26 03:00",
                                    "2023-04-02 03:00", "2023-04-09 03:00", "2023-04-16 03:00"]),
    # Monthly / spring forward
    ("Europe/Berlin", "0 1 26 * *", ["2023-01-26 01:00", "2023-02-26 01:00", "2023-03-26 01:00",
                                     "2023-04-26 01:00", "2023-05-26 01:00"]),
    ("Europe/Berlin", "0 2 26 * *", ["2023-01-26 02:00", "2023-02-26 02:00", "2023-03-26 03:00",
                                     "2023-04-26 02:00", "2023-05-26 02:00"]),
    ("Europe/Berlin", "30 2 26 * *", ["2023-01-26 02:30", "2023-02-26 02:30", "2023-03-26 03:00",
                                      "2023-04-26 02:30", "2023-05-26 02:30"]),
    ("Europe/Berlin", "0 3 26 * *", ["2023-01-26 03:00", "2023-02-26 03:00", "2023-03-26 03:00",
                                     "2023-04-26 03:00", "2023-05-26 03:00"]),
    # Hourly / spring forward
    ("Europe/Berlin", "45 * * * *", ["2023-03-26 00:45", "2023-03-26 01:45", "2023-03-26 03:45",
                                     "2023-03-26 04:45"]),
    ("Europe/Berlin", "0 * * * *", ["2023-03-26 00:00", "2023-03-26 01:00", "2023-03-26 03:00",
                                    "2023-03-26 04:00"]),
    ("Europe/Berlin", "*/15 * * * *", ["2023-03-26 01:00", "2023-03-26 01:15", "2023-03-26 01:30",
                                       "2023-03-26 01:45", "2023-03-26 03:00", "2023-03-26 03:15",
                                       "2023-03-26 03:30", "2023-03-26 03:45"]),
    ("Europe/Berlin", "*/15 * * * *", ["2023-10-29 01:00", "2023-10-29 01:15", "2023-10-29 01:30",
                                       "2023-10-29 01:45", "2023-10-29 02:00", "2023-10-29 02:15",
                                       "2023-10-29 02:30", "2023-10-29 02:45",
                                       "2023-10-29 02:00 fold=1", "2023-10-29 02:15 fold=1",
                                       "2023-10-29 02:30 fold=1", "2023-10-29 02:45 fold=1",
                                       "2023-10-29 03:00", "2023-10-29 03:15", "2023-10-29 03:30",
                                       "2023-10-29 03:45"]),
    # DAY_OF_WEEK_FILTER_PARAMS, the rows that cross a DST change.
    ("US/Pacific", "0 2 * * 6-7", ["2024-03-02 02:00", "2024-03-03 02:00", "2024-03-09 02:00",
                                   "2024-03-10 03:00", "2024-03-16 02:00", "2024-03-17 02:00"]),
    ("US/Pacific", "30 2 * * 6-7", ["2024-03-02 02:30", "2024-03-03 02:30", "2024-03-09 02:30",
                                    "2024-03-10 03:00", "2024-03-16 02:30", "2024-03-17 02:30"]),
    ("US/Pacific", "0 1 * * 6-7", ["2024-10-26 01:00", "2024-10-27 01:00", "2024-11-02 01:00",
                                   "2024-11-03 01:00 fold=1", "2024-11-09 01:00",
                                   "2024-11-10 01:00"]),
    ("Europe/Berlin", "0 2 * * 1-5", ["2024-03-25 02:00", "2024-03-26 02:00", "2024-03-27 02:00",
                                      "2024-03-28 02:00", "2024-03-29 02:00", "2024-04-01 02:00"]),
    ("Europe/Berlin", "30 2 * * 1-5", ["2024-03-25 02:30", "2024-03-26 02:30",
                                       "2024-03-27 02:30", "2024-03-28 02:30",
                                       "2024-03-29 02:30", "2024-04-01 02:30"]),
    ("Europe/Berlin", "30 2 * * 1-5", ["2024-10-21 02:30", "2024-10-22 02:30",
                                       "2024-10-23 02:30", "2024-10-24 02:30",
                                       "2024-10-25 02:30", "2024-10-28 02:30"]),
    ("Australia/Sydney", "0 2 * * 6-7", ["2024-03-30 02:00", "2024-03-31 02:00",
                                         "2024-04-06 02:00", "2024-04-07 02:00 fold=1",
                                         "2024-04-13 02:00", "2024-04-14 02:00"]),
]  # fmt: skip


def repeat_like_dagster(expr: str) -> DstRepeat:
    return "last" if is_fixed_time(expr) else "first"


@pytest.mark.parametrize(("tz", "expr", "fires"), DAGSTER_DST_PARAMS)
def test_dagster_dst_transition_advances(tz: str, expr: str, fires: list[str]) -> None:
    expected = [wall(tz, f) for f in fires]
    assert_fires_in_order(expr, tz, expected, repeat_like_dagster(expr))


@pytest.mark.parametrize(("tz", "expr", "fires"), DAGSTER_DST_PARAMS)
def test_dagster_rows_under_our_default_fire_the_first_pass(
    tz: str, expr: str, fires: list[str]
) -> None:
    # Difference by design: by default a repeated fixed time fires on its first pass, where
    # Dagster takes the last; everything else in the rows is the same.
    expected = [wall(tz, f) for f in fires]
    if is_fixed_time(expr):
        expected = [on_first_pass(f) for f in expected]
    assert_fires_in_order(expr, tz, expected)


# Source: dagster-io/dagster (as above), test_cron_iterator_always_advances: from any
# instant before the next tick of "0 2 * * *" after the spring-forward day, the answer
# lies strictly after the start.
def test_dagster_cron_iterator_always_advances() -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = wall("Europe/Berlin", "2023-03-26 02:00").astimezone(UTC) + timedelta(seconds=1)
    next_tick = datetime.fromtimestamp(1679875200, UTC)  # 2023-03-27 02:00+02:00
    while start < next_tick:
        fire = next_cron_fire("0 2 * * *", tz, start)
        assert fire > start
        start += timedelta(seconds=75 * 60)  # Dagster steps 75 s; 75 min keeps this fast


# Source: dagster-io/dagster (as above), test_hourly_cron_non_hour_offset_timezone_alignment:
# an hourly cron in a zone offset by a fraction of an hour fires on the local hour.
@pytest.mark.parametrize(
    "tz",
    ["Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "America/St_Johns", "Pacific/Chatham"],
)
def test_dagster_hourly_cron_non_hour_offset_timezone_alignment(tz: str) -> None:
    expected = [wall(tz, f"2026-02-16 {hour:02}:00") for hour in range(6)]
    assert_fires_in_order("0 * * * *", tz, expected)


# Source: pallets-eco/croniter @ 3dd4d14e971294c03d3fb9be3f5ca03ae1c25310,
# src/croniter/tests/test_croniter.py and test_croniter_range.py (test names per row).
# croniter's expectations match ours here: its wildcard crons run on real time, its fixed
# times fire the first pass of a repeated time and the jump for a skipped one.
CRONITER_SEQUENCES: list[tuple[str, str, str, list[str]]] = [
    # test_timezone_winter_time: Athens 2013-10-27 04:00 EEST -> 03:00 EET.
    ("test_timezone_winter_time", "Europe/Athens", "*/30 * * * *",
     ["2013-10-27T02:00+03:00", "2013-10-27T02:30+03:00", "2013-10-27T03:00+03:00",
      "2013-10-27T03:30+03:00", "2013-10-27T03:00+02:00", "2013-10-27T03:30+02:00",
      "2013-10-27T04:00+02:00", "2013-10-27T04:30+02:00"]),
    # test_timezone_summer_time: Athens 2013-03-31 03:00 EET -> 04:00 EEST.
    ("test_timezone_summer_time", "Europe/Athens", "*/30 * * * *",
     ["2013-03-31T01:00+02:00", "2013-03-31T01:30+02:00", "2013-03-31T02:00+02:00",
      "2013-03-31T02:30+02:00", "2013-03-31T04:00+03:00", "2013-03-31T04:30+03:00"]),
    # test_std_dst: Warsaw 2017-03-26 02:00 -> 03:00 and 2017-10-29 03:00 -> 02:00.
    ("test_std_dst", "Europe/Warsaw", "0 0 * * *",
     ["2017-03-26T00:00+01:00", "2017-03-27T00:00+02:00"]),
    ("test_std_dst", "Europe/Warsaw", "0 * * * *",
     ["2017-03-26T01:00+01:00", "2017-03-26T03:00+02:00"]),
    ("test_std_dst", "Europe/Warsaw", "0 0 * * *",
     ["2017-10-29T00:00+02:00", "2017-10-30T00:00+01:00"]),
    ("test_std_dst", "Europe/Warsaw", "0 * * * *",
     ["2017-10-29T01:59+02:00", "2017-10-29T02:00+02:00", "2017-10-29T02:00+01:00",
      "2017-10-29T03:00+01:00", "2017-10-29T04:00+01:00"]),
    # test_std_dst3: Adelaide's offset changes between two monthly fires.
    ("test_std_dst3", "Australia/Adelaide", "0 0 24 * *",
     ["2020-04-15T00:00+09:30", "2020-04-24T00:00+09:30"]),
    # test_dst_daily: London 2025-03-30 01:00 GMT -> 02:00 BST.
    ("test_dst_daily", "Europe/London", "7 0 * * *",
     ["2025-03-30T00:00+00:00", "2025-03-30T00:07+00:00", "2025-03-31T00:07+01:00",
      "2025-04-01T00:07+01:00"]),
    # test_dst_hourly (croniter issue 149): no extra 02:00 at the jump.
    ("test_dst_hourly", "Europe/London", "7 * * * *",
     ["2025-03-30T00:00+00:00", "2025-03-30T00:07+00:00", "2025-03-30T02:07+01:00",
      "2025-03-30T03:07+01:00"]),
    # test_dst_issue90_st31ny: Paris 2020-03-29 02:01 does not exist; fires at the jump.
    ("test_dst_issue90_st31ny", "Europe/Paris", "1 2 * * *",
     ["2020-03-29T01:59:55+01:00", "2020-03-29T03:00+02:00", "2020-03-30T02:01+02:00",
      "2020-03-31T02:01+02:00"]),
    # test_dst_iter: Hebron 2022-03-27 00:00 does not exist (00:00 -> 01:00).
    ("test_dst_iter", "Asia/Hebron", "0 0 * * *",
     ["2022-03-25T00:00+02:00", "2022-03-26T00:00+02:00", "2022-03-27T01:00+03:00",
      "2022-03-28T00:00+03:00"]),
    # test_croniter_range.py test_extra_hour_day_prio: New York 2020-03-08 02:00 -> 03:00.
    ("test_extra_hour_day_prio", "America/New_York", "0 3 * * *",
     ["2020-03-07T03:00-05:00", "2020-03-08T03:00-04:00", "2020-03-09T03:00-04:00",
      "2020-03-10T03:00-04:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "tz", "expr", "fires"), CRONITER_SEQUENCES)
def test_croniter_dst_sequences(source: str, tz: str, expr: str, fires: list[str]) -> None:
    # The first entry is croniter's start time, the rest are its get_next() answers.
    start, *expected = [datetime.fromisoformat(f) for f in fires]
    assert next_cron_fire(expr, ZoneInfo(tz), start) == expected[0], source
    assert_fires_in_order(expr, tz, expected)


# Source: pallets-eco/croniter (as above), test_croniter.py test_std_dst2: São Paulo
# 2018-02-18 00:00 -02 falls back to 2018-02-17 23:00 -03; midnight comes once.
@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2018-02-17 21:00", "2018-02-18T00:00-03:00"),
        ("2018-02-17 22:00", "2018-02-18T00:00-03:00"),
        ("2018-02-17 23:00", "2018-02-18T00:00-03:00"),
        ("2018-02-18 00:00", "2018-02-19T00:00-03:00"),
        ("2018-02-17 21:05", "2018-02-18T00:00-03:00"),
        ("2018-02-17 22:05", "2018-02-18T00:00-03:00"),
        ("2018-02-17 23:05", "2018-02-18T00:00-03:00"),
        ("2018-02-18 00:05", "2018-02-19T00:00-03:00"),
    ],
)
def test_croniter_std_dst2(start: str, expected: str) -> None:
    tz = "America/Sao_Paulo"
    got = next_cron_fire("0 0 * * *", ZoneInfo(tz), wall(tz, start))
    assert got == datetime.fromisoformat(expected)


# Source: kiorky/croniter @ 517f8baa899c05af340b5d0442caa3fc6c321e8d,
# src/croniter/tests/test_croniter_dst.py, CroniterDstTest.test_range_dst_backwards
# (forward_rets): daily crons from 2020-10-30 to 2020-11-03 across New York's fall back
# (2020-11-01 02:00 EDT -> 01:00 EST); 01:00 and 01:30 fire on their first pass.
CRONITER_RANGE_DST_BACKWARDS = {
    "0 0 * * *": ["2020-10-30T00:00:00-04:00", "2020-10-31T00:00:00-04:00",
                  "2020-11-01T00:00:00-04:00", "2020-11-02T00:00:00-05:00",
                  "2020-11-03T00:00:00-05:00"],
    "30 0 * * *": ["2020-10-30T00:30:00-04:00", "2020-10-31T00:30:00-04:00",
                   "2020-11-01T00:30:00-04:00", "2020-11-02T00:30:00-05:00"],
    "0 1 * * *": ["2020-10-30T01:00:00-04:00", "2020-10-31T01:00:00-04:00",
                  "2020-11-01T01:00:00-04:00", "2020-11-02T01:00:00-05:00"],
    "30 1 * * *": ["2020-10-30T01:30:00-04:00", "2020-10-31T01:30:00-04:00",
                   "2020-11-01T01:30:00-04:00", "2020-11-02T01:30:00-05:00"],
    "0 2 * * *": ["2020-10-30T02:00:00-04:00", "2020-10-31T02:00:00-04:00",
                  "2020-11-01T02:00:00-05:00", "2020-11-02T02:00:00-05:00"],
    "30 2 * * *": ["2020-10-30T02:30:00-04:00", "2020-10-31T02:30:00-04:00",
                   "2020-11-01T02:30:00-05:00", "2020-11-02T02:30:00-05:00"],
    "0 3 * * *": ["2020-10-30T03:00:00-04:00", "2020-10-31T03:00:00-04:00",
                  "2020-11-01T03:00:00-05:00", "2020-11-02T03:00:00-05:00"],
    "30 3 * * *": ["2020-10-30T03:30:00-04:00", "2020-10-31T03:30:00-04:00",
                   "2020-11-01T03:30:00-05:00", "2020-11-02T03:30:00-05:00"],
}  # fmt: skip


@pytest.mark.parametrize(("expr", "fires"), CRONITER_RANGE_DST_BACKWARDS.items())
def test_croniter_range_dst_backwards(expr: str, fires: list[str]) -> None:
    expected = [datetime.fromisoformat(f) for f in fires]
    range_start = datetime.fromisoformat("2020-10-30T00:00:00-04:00")
    first = next_cron_fire(expr, ZoneInfo("US/Eastern"), range_start - timedelta(seconds=1))
    assert first == expected[0]  # croniter_range includes its start
    assert_fires_in_order(expr, "US/Eastern", expected)


# Source: kiorky/croniter (as above), CroniterDstTest.test_range_dst_forward (forward_rets),
# New York 2020-03-08 02:00 EST -> 03:00 EDT. Difference by design: croniter moves a
# skipped 02:30 by the length of the gap, to 03:30; Mainspring (with Vixie cron and
# Dagster) fires it once at the jump, 03:00. croniter's row is kept in the comment.
CRONITER_RANGE_DST_FORWARD = {
    "0 1 * * *": ["2020-03-07T01:00:00-05:00", "2020-03-08T01:00:00-05:00",
                  "2020-03-09T01:00:00-04:00", "2020-03-10T01:00:00-04:00"],
    "30 1 * * *": ["2020-03-07T01:30:00-05:00", "2020-03-08T01:30:00-05:00",
                   "2020-03-09T01:30:00-04:00", "2020-03-10T01:30:00-04:00"],
    "0 2 * * *": ["2020-03-07T02:00:00-05:00", "2020-03-08T03:00:00-04:00",
                  "2020-03-09T02:00:00-04:00", "2020-03-10T02:00:00-04:00"],
    # croniter: 2020-03-08T03:30:00-04:00
    "30 2 * * *": ["2020-03-07T02:30:00-05:00", "2020-03-08T03:00:00-04:00",
                   "2020-03-09T02:30:00-04:00", "2020-03-10T02:30:00-04:00"],
    "0 3 * * *": ["2020-03-07T03:00:00-05:00", "2020-03-08T03:00:00-04:00",
                  "2020-03-09T03:00:00-04:00", "2020-03-10T03:00:00-04:00"],
    "30 3 * * *": ["2020-03-07T03:30:00-05:00", "2020-03-08T03:30:00-04:00",
                   "2020-03-09T03:30:00-04:00", "2020-03-10T03:30:00-04:00"],
    "0 4 * * *": ["2020-03-07T04:00:00-05:00", "2020-03-08T04:00:00-04:00",
                  "2020-03-09T04:00:00-04:00", "2020-03-10T04:00:00-04:00"],
    "30 4 * * *": ["2020-03-07T04:30:00-05:00", "2020-03-08T04:30:00-04:00",
                   "2020-03-09T04:30:00-04:00", "2020-03-10T04:30:00-04:00"],
}  # fmt: skip


@pytest.mark.parametrize(("expr", "fires"), CRONITER_RANGE_DST_FORWARD.items())
def test_croniter_range_dst_forward(expr: str, fires: list[str]) -> None:
    assert_fires_in_order(expr, "US/Eastern", [datetime.fromisoformat(f) for f in fires])
