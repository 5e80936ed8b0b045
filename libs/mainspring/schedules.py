"""Pure schedule arithmetic: parsing `every`, next fire times with DST rules, catch-up."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

_EVERY_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """A cron, `every` or tz value that cannot be used; the message names the fix."""


def parse_every(text: str) -> timedelta:
    """Parse `10s`, `1h30m`, `2d`, `1w` into a positive timedelta."""
    cleaned = text.strip().lower()
    parts = _EVERY_PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ScheduleError(
            f"every={text!r} is not an interval: write integer parts with s/m/h/d/w, e.g. '10s', '1h30m'"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ScheduleError(f"every={text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def parse_tz(name: str) -> ZoneInfo:
    """An IANA time zone, or a clear error."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"tz={name!r} is not an IANA time zone: use a name like 'UTC' or 'Europe/Berlin'"
        ) from exc


def check_cron(expr: str) -> str:
    """Validate a 5-field cron, a 6-field cron with seconds first, or a macro like @daily."""
    fields = expr.split()
    if not expr.strip().startswith("@") and len(fields) not in (5, 6):
        raise ScheduleError(
            f"cron={expr!r} has {len(fields)} fields: use 5 (minute hour day month weekday) "
            "or 6 with seconds first (second minute hour day month weekday)"
        )
    if not croniter.is_valid(expr, second_at_beginning=True):
        raise ScheduleError(
            f"cron={expr!r} is not a valid cron expression: write e.g. '*/5 * * * *', "
            "'0 9 * * MON-FRI', '30 */2 * * * *' or '@daily'"
        )
    try:
        croniter(expr, datetime(2000, 1, 1), second_at_beginning=True).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(
            f"cron={expr!r} never fires (no such date): check day and month"
        ) from None
    return expr


def next_cron_fire(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC.

    Iterates naive wall-clock times, so DST keeps two rules croniter alone does not:
    a wall time the clock skips fires once, at the jump (several skipped wall times
    collapse into that one instant); a repeated wall time fires once, at its first
    occurrence.
    """
    # No look-back is needed: a wall time at or before `after`'s wall reading resolves to
    # an instant at or before `after` (first occurrences and jump instants are monotonic).
    wall_after = after.astimezone(tz).replace(tzinfo=None, microsecond=0)
    # croniter reads 6 fields with seconds last by default; Mainspring documents the
    # common seconds-first form (Quartz, Spring), so say so explicitly.
    it = croniter(expr, wall_after, ret_type=datetime, second_at_beginning=True)
    for _ in range(1_000_000):
        wall: datetime = it.get_next(datetime)
        fire = resolve_wall_time(wall, tz)
        if fire > after:
            return fire.astimezone(UTC)
    raise ScheduleError(f"cron={expr!r} never fires")  # pragma: no cover


def resolve_wall_time(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a naive wall time first happens in tz (aware, in tz).

    A repeated wall time (fall back) is its first occurrence; a skipped one (spring
    forward) is the instant of the jump.
    """
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return first
    before = first.utcoffset()
    after = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert before is not None and after is not None
    # The jump lies between the two readings of the wall time; find it by bisection.
    low = (wall - before).replace(tzinfo=UTC)
    high = (wall - after).replace(tzinfo=UTC)
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0).astimezone(tz)


def next_every_fire(interval: timedelta, anchor: datetime, after: datetime) -> datetime:
    """The first fire strictly after `after` on the grid anchor + k*interval (absolute time)."""
    if after < anchor:
        return anchor.astimezone(UTC)
    elapsed = after - anchor
    steps = elapsed // interval + 1
    return (anchor + steps * interval).astimezone(UTC)


def next_timed_fire(cron: str | None, every: str | None, tz: str, after: datetime) -> datetime:
    """The first tick strictly after `after` of a cron or an interval schedule, in UTC.

    Interval schedules sit on a grid anchored at the Unix epoch, so they stay fixed in
    absolute time across restarts and DST changes.
    """
    if every is not None:
        return next_every_fire(parse_every(every), EPOCH, after)
    if cron is None:
        raise ScheduleError("give exactly one of cron= and every=, e.g. every='1m'")
    return next_cron_fire(cron, parse_tz(tz), after)
