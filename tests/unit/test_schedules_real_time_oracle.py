"""Wildcard crons against a brute-force oracle: every minute whose wall reading matches fires.

The oracle walks real time minute by minute and reads the wall clock, which is exactly the
real-time rule; it shares no code with the schedule arithmetic (not even croniter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mainspring.schedules import next_cron_fire

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
