"""`every` with a phase: a grid on the wall clock of tz, DST-following, as tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring import on_poll, on_schedule
from mainspring.base.schedules import ScheduleError, every_tz_warning, upcoming_fires
from mainspring_services.ticker import core as ticker


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def check_poll() -> None:
    return None


@pytest.mark.parametrize(
    ("every", "offset", "tz", "after", "fires"),
    [
        # 09:00 in Tokyo (UTC+9, no DST) is midnight UTC.
        ("1d", "9h", "Asia/Tokyo", "2026-03-01T00:00", ["2026-03-02T00:00", "2026-03-03T00:00"]),
        # Berlin springs forward on 29 March 2026: 09:00 stays 09:00, one hour earlier in UTC.
        (
            "1d",
            "9h",
            "Europe/Berlin",
            "2026-03-27T12:00",
            ["2026-03-28T08:00", "2026-03-29T07:00", "2026-03-30T07:00"],
        ),
        # New York springs forward on 8 March 2026.
        (
            "1d",
            "9h",
            "America/New_York",
            "2026-03-07T00:00",
            ["2026-03-07T14:00", "2026-03-08T13:00", "2026-03-09T13:00"],
        ),
        # 02:30 does not exist on 29 March in Berlin: it fires once, at the jump (03:00 CEST).
        (
            "1d",
            "2h30m",
            "Europe/Berlin",
            "2026-03-28T12:00",
            ["2026-03-29T01:00", "2026-03-30T00:30"],
        ),
        # 02:30 happens twice on 25 October in Berlin: it fires on the first pass only.
        (
            "1d",
            "2h30m",
            "Europe/Berlin",
            "2026-10-24T12:00",
            ["2026-10-25T00:30", "2026-10-26T01:30"],
        ),
        # Hourly at :30 across the repeated hour: 02:30 once, so one real hour has no tick.
        (
            "1h",
            "30m",
            "Europe/Berlin",
            "2026-10-24T22:00",
            [
                "2026-10-24T22:30",
                "2026-10-24T23:30",
                "2026-10-25T00:30",
                "2026-10-25T02:30",
                "2026-10-25T03:30",
            ],
        ),
        # Hourly at :15 across the skipped hour: 02:15 fires at the jump.
        (
            "1h",
            "15m",
            "Europe/Berlin",
            "2026-03-28T23:00",
            ["2026-03-28T23:15", "2026-03-29T00:15", "2026-03-29T01:00", "2026-03-29T01:15"],
        ),
        ("10m", "3m", "UTC", "2026-03-01T12:00", ["2026-03-01T12:03", "2026-03-01T12:13"]),
        ("10m", "0s", "UTC", "2026-03-01T12:00", ["2026-03-01T12:10", "2026-03-01T12:20"]),
        # The grid starts on the epoch's Thursday: three days on is Sunday, 09:00.
        ("1w", "3d9h", "UTC", "2026-03-02T00:00", ["2026-03-08T09:00", "2026-03-15T09:00"]),
    ],
)
def test_every_with_an_offset_ticks_on_the_wall_clock_of_tz(
    every: str, offset: str, tz: str, after: str, fires: list[str]
) -> None:
    got = upcoming_fires(None, every, tz, utc(after), len(fires), offset=offset)

    assert [fire for fire, _ in got] == [utc(f) for f in fires]


def test_the_ticker_follows_the_offset_and_without_one_keeps_the_epoch_grid() -> None:
    phased = on_schedule(every="1d", offset="9h", tz="Asia/Tokyo")
    plain = on_schedule(every="1d", tz="UTC")

    assert ticker.next_fire(phased, utc("2026-03-01T12:00")) == utc("2026-03-02T00:00")
    assert ticker.next_fire(plain, utc("2026-03-01T12:00")) == utc("2026-03-02T00:00")
    assert ticker.next_fire(phased, utc("2026-03-01T23:59")) == utc("2026-03-02T00:00")
    assert not ticker.same_timing(phased, on_schedule(every="1d", offset="8h", tz="Asia/Tokyo"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"cron": "0 9 * * *", "offset": "1h"},
            "offset='1h' applies to every= schedules only: a cron names its own times",
        ),
        (
            {"every": "1d", "offset": "1d"},
            "offset='1d' is not shorter than every='1d': give a phase within one interval",
        ),
        ({"every": "1d", "offset": "nine"}, "offset='nine' is not a duration"),
    ],
)
def test_a_bad_offset_is_refused_in_one_line(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        on_schedule(**kwargs)  # type: ignore[arg-type]

    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_on_poll_takes_an_offset_too() -> None:
    spec = on_poll(check_poll, every="1d", offset="6h", tz="Europe/Berlin")

    assert ticker.next_fire(spec, utc("2026-07-01T00:00")) == utc("2026-07-01T04:00")


@pytest.mark.parametrize(
    ("every", "tz", "offset", "warned"),
    [
        ("1d", "Asia/Tokyo", None, True),
        ("1d", "UTC", None, False),
        ("1d", "Asia/Tokyo", "9h", False),
        (None, "Asia/Tokyo", None, False),
    ],
)
def test_a_non_utc_tz_on_every_without_offset_is_warned_about(
    every: str | None, tz: str, offset: str | None, warned: bool
) -> None:
    warning = every_tz_warning(every, tz, offset)

    if warned:
        assert warning == (
            "every='1d' ignores tz='Asia/Tokyo' without offset=: it ticks on a grid from the "
            "Unix epoch in absolute time; add offset= (e.g. offset='0s') to tick on "
            "Asia/Tokyo's clock"
        )
    else:
        assert warning is None
