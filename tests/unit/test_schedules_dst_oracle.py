"""The DST rules against brute-force oracles that walk real time minute by minute.

For wildcard crons every minute whose wall reading matches fires (the real-time rule); for
fixed-time crons each matching wall minute fires on its chosen pass(es), or at the first
instant after it when the clock skips it. The oracles share no code with the schedule
arithmetic, not even croniter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mainspring.base.schedules import DstRepeat, next_cron_fire

Matches = Callable[[datetime], bool]

CRONS: dict[str, Matches] = {
    "*/15 * * * *": lambda w: w.minute % 15 == 0,
    "0 * * * *": lambda w: w.minute == 0,
    "7 * * * *": lambda w: w.minute == 7,
    "30 1-3 * * *": lambda w: w.minute == 30 and 1 <= w.hour <= 3,
    "*/20 0-4 * * *": lambda w: w.minute % 20 == 0 and w.hour <= 4,
}

WINDOWS = [
    ("Europe/Berlin", "2023-10-28T20:00"),  # 03:00 -> 02:00
    ("Europe/Berlin", "2023-03-25T20:00"),  # 02:00 -> 03:00
    ("America/St_Johns", "2023-11-04T20:00"),  # a -2:30 / -3:30 zone
    ("Australia/Lord_Howe", "2025-04-05T10:00"),  # half-hour fall back
    ("Australia/Lord_Howe", "2025-10-04T10:00"),  # half-hour spring forward
    ("Antarctica/Troll", "2023-03-25T20:00"),  # a two-hour jump, +00 -> +02
    ("Antarctica/Troll", "2023-10-28T20:00"),  # a two-hour repeat
    ("Asia/Hebron", "2022-03-26T12:00"),  # midnight skipped
    ("Pacific/Apia", "2011-12-29T00:00"),  # 2011-12-30 skipped entirely
]


def oracle(matches: Matches, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    fires, instant = [], start
    while instant <= end:
        if matches(instant.astimezone(tz)):
            fires.append(instant)
        instant += timedelta(minutes=1)
    return fires


@pytest.mark.parametrize("expr", CRONS)
@pytest.mark.parametrize(("tz", "start"), WINDOWS)
def test_wildcard_crons_fire_at_every_matching_instant(expr: str, tz: str, start: str) -> None:
    zone = ZoneInfo(tz)
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    end = begin + timedelta(hours=30)
    expected = oracle(CRONS[expr], zone, begin, end)
    got, cursor = [], begin - timedelta(seconds=1)
    while (cursor := next_cron_fire(expr, zone, cursor)) <= end:
        got.append(cursor)
    assert [g.astimezone(zone).isoformat() for g in got] == [
        e.astimezone(zone).isoformat() for e in expected
    ]


FIXED_CRONS: dict[str, Matches] = {
    "30 2 * * *": lambda w: (w.hour, w.minute) == (2, 30),
    "0,30 2 * * *": lambda w: w.hour == 2 and w.minute in (0, 30),
    "0 0 * * *": lambda w: (w.hour, w.minute) == (0, 0),
    "45 1 * * *": lambda w: (w.hour, w.minute) == (1, 45),
    "15 3 * * *": lambda w: (w.hour, w.minute) == (3, 15),
}


def fixed_oracle(
    matches: Matches, tz: ZoneInfo, start: datetime, end: datetime, dst_repeat: DstRepeat
) -> list[datetime]:
    """Each matching wall minute: its pass(es) when it happens, else the first instant after it."""
    readings: dict[datetime, list[datetime]] = {}
    instant = start
    while instant <= end:
        readings.setdefault(instant.astimezone(tz).replace(tzinfo=None), []).append(instant)
        instant += timedelta(minutes=1)
    walls = sorted(readings)
    fires: set[datetime] = set()
    wall = walls[0]
    while wall <= walls[-1]:
        if matches(wall):
            passes = readings.get(wall)
            if passes is None:  # skipped: the clock lands on a later reading at the jump
                later = min(w for w in walls if w > wall)
                fires.add(readings[later][0])
            else:
                chosen = {"first": passes[:1], "last": passes[-1:], "both": passes}[dst_repeat]
                fires.update(chosen)
        wall += timedelta(minutes=1)
    return sorted(fires)


@pytest.mark.parametrize("dst_repeat", ["first", "last", "both"])
@pytest.mark.parametrize("expr", FIXED_CRONS)
@pytest.mark.parametrize(("tz", "start"), WINDOWS)
def test_fixed_time_crons_against_the_wall_clock_oracle(
    expr: str, tz: str, start: str, dst_repeat: DstRepeat
) -> None:
    zone = ZoneInfo(tz)
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    end = begin + timedelta(hours=36)
    expected = fixed_oracle(FIXED_CRONS[expr], zone, begin, end, dst_repeat)
    got, cursor = [], begin - timedelta(seconds=1)
    while (cursor := next_cron_fire(expr, zone, cursor, dst_repeat)) <= end:
        got.append(cursor)
    # The oracle sees only the window, so it may misjudge wall times at its edges.
    low, high = begin + timedelta(hours=3), end - timedelta(hours=3)
    inner = [f for f in expected if low <= f <= high]
    assert inner, "the window holds no fire: the row proves nothing"
    assert [f for f in got if low <= f <= high] == inner
