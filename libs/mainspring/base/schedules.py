"""Pure schedule arithmetic: parsing `every`, next fire times with DST rules, catch-up."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

_EVERY_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The fields croniter's macros stand for, so they are classified like the crons they are.
_MACRO_FIELDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

DstRepeat = Literal["first", "last", "both"]
DST_REPEAT_CHOICES: tuple[DstRepeat, ...] = ("first", "last", "both")


class ScheduleError(ValueError):
    """A cron, `every` or tz value that cannot be used; the message names the fix."""


class ScheduleWarning(UserWarning):
    """A schedule that works but likely not as its author meant (the message names the fix)."""


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


def parse_offset(text: str, every: str) -> timedelta:
    """Parse an `every` schedule's phase (`9h`, `0s`, `1d2h`), which must be shorter than it."""
    cleaned = text.strip().lower()
    parts = _EVERY_PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ScheduleError(
            f"offset={text!r} is not a duration: write integer parts with s/m/h/d/w, e.g. '9h', '0s'"
        )
    phase = timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    if phase >= parse_every(every):
        raise ScheduleError(
            f"offset={text!r} is not shorter than every={every!r}: give a phase within one "
            "interval, e.g. every='1d', offset='9h'"
        )
    return phase


def check_offset(offset: str | None, cron: str | None, every: str | None) -> None:
    """An offset is a phase of an `every` grid; a cron names its own times."""
    if offset is None:
        return
    if every is None:
        raise ScheduleError(
            f"offset={offset!r} applies to every= schedules only: a cron names its own "
            "times; remove offset or write the time in the cron"
        )
    parse_offset(offset, every)


def every_tz_warning(every: str | None, tz: str, offset: str | None) -> str | None:
    """Why a non-UTC tz on an `every` schedule without offset does nothing (None: no doubt)."""
    if every is None or offset is not None or tz == "UTC":
        return None
    return (
        f"every={every!r} ignores tz={tz!r} without offset=: it ticks on a grid from the Unix "
        f"epoch in absolute time; add offset= (e.g. offset='0s') to tick on {tz}'s clock"
    )


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


def is_fixed_time(expr: str) -> bool:
    """Does the cron name explicit wall-clock times (plain values in its second, minute and hour)?

    Vixie cron's rule: only such crons get the DST adjustments; a wildcard, range or step
    in one of these fields means "every so often", which follows real time.
    """
    text = expr.strip().lower()
    fields = _MACRO_FIELDS.get(text, text).split()
    time_fields = fields[:3] if len(fields) == 6 else fields[:2]
    return all(part.isdigit() for field in time_fields for part in field.split(","))


def check_dst_repeat(dst_repeat: str, cron: str | None, every: str | None) -> DstRepeat:
    """Validate which pass of a repeated fixed wall time fires; only fixed-time crons choose."""
    if dst_repeat not in DST_REPEAT_CHOICES:
        raise ScheduleError(
            f"dst_repeat={dst_repeat!r} is not a choice: use 'first' (default), 'last' or 'both'"
        )
    if dst_repeat != "first" and every is not None:
        raise ScheduleError(
            f"dst_repeat={dst_repeat!r} applies to cron times only: every={every!r} is fixed "
            "in absolute time and never repeats; remove dst_repeat"
        )
    if dst_repeat != "first" and cron is not None and not is_fixed_time(cron):
        raise ScheduleError(
            f"dst_repeat={dst_repeat!r} applies to fixed-time crons only: cron={cron!r} has a "
            "wildcard, range or step in its time fields and already fires on both passes of a "
            "repeated hour; remove dst_repeat"
        )
    return dst_repeat


def next_cron_fire(
    expr: str, tz: ZoneInfo, after: datetime, dst_repeat: DstRepeat = "first"
) -> datetime:
    """The first fire time strictly after `after` (aware), in UTC, by Vixie cron's DST rule.

    A fixed-time cron (see is_fixed_time) fires a wall time the clock skips once, at the
    jump (several skipped wall times collapse into that one instant), and a repeated wall
    time on the pass(es) `dst_repeat` names. Any other cron fires at every instant whose
    wall reading matches: both passes of a repeated hour, nothing for a skipped one.
    """
    fixed = is_fixed_time(expr)
    repeat: DstRepeat = dst_repeat if fixed else "both"
    local = after.astimezone(tz)
    wall_after = local.replace(tzinfo=None, microsecond=0)
    fire = _first_fire_after(expr, tz, wall_after, after, repeat, fixed)
    if repeat != "first" and local.fold == 0 and len(_passes(wall_after, tz)) == 2:
        # `after` lies in the first pass of a repeated hour: the second passes of wall times
        # up to its own reading come later in real time than it, yet earlier on the wall.
        second = _second_pass_fire(expr, tz, wall_after, after)
        if second is not None and second < fire:
            fire = second
    return fire


def _cron_walls(expr: str, start: datetime) -> croniter:
    # croniter reads 6 fields with seconds last by default; Mainspring documents the
    # common seconds-first form (Quartz, Spring), so say so explicitly.
    return croniter(expr, start, ret_type=datetime, second_at_beginning=True)


def _first_fire_after(
    expr: str, tz: ZoneInfo, wall_after: datetime, after: datetime, repeat: DstRepeat, fixed: bool
) -> datetime:
    """Walk wall times after `wall_after`; the first with a fire instant after `after` wins.

    Instants of later wall times never precede the chosen one: the first passes, the
    second passes and the jump instants each rise with the wall time.
    """
    walls = _cron_walls(expr, wall_after)
    for _ in range(1_000_000):
        wall: datetime = walls.get_next(datetime)
        passes = _passes(wall, tz)
        if passes:
            fires = {"first": passes[:1], "last": passes[-1:], "both": passes}[repeat]
        elif fixed:
            fires = [_jump_instant(wall, tz)]
        else:
            # Skipped, and not a fixed time: nothing fires. Resume at the jump's far side
            # rather than step through every skipped second of a per-second cron.
            jump = _jump_instant(wall, tz).astimezone(tz)
            landing = jump.replace(tzinfo=None) - timedelta(seconds=1)
            walls = _cron_walls(expr, landing)
            continue
        later = [fire for fire in fires if fire > after]
        if later:
            return min(later)
    raise ScheduleError(f"cron={expr!r} never fires")  # pragma: no cover


def _second_pass_fire(
    expr: str, tz: ZoneInfo, wall_after: datetime, after: datetime
) -> datetime | None:
    """The earliest second pass of a wall time from the repeat's start up to `wall_after`."""
    first, second = _passes(wall_after, tz)
    fall_back = _offset_change(first, second, tz)
    repeat_start = fall_back.astimezone(tz).replace(tzinfo=None)
    wall: datetime = _cron_walls(expr, repeat_start - timedelta(seconds=1)).get_next(datetime)
    if wall > wall_after:
        return None
    fire = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return fire if fire > after else None


def _passes(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """The instants (UTC) a naive wall time reads in tz: one, two (repeated) or none (skipped)."""
    found: list[datetime] = []
    for fold in (0, 1):
        # UTC, because aware datetimes sharing a tzinfo compare by wall reading, fold ignored.
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == wall and instant not in found:
            found.append(instant)
    return found


def _jump_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (UTC) the clock jumps over a skipped wall time."""
    before = wall.replace(tzinfo=tz, fold=0).utcoffset()
    after = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert before is not None and after is not None
    low = (wall - max(before, after)).replace(tzinfo=UTC)
    high = (wall - min(before, after)).replace(tzinfo=UTC)
    return _offset_change(low, high, tz)


def _offset_change(low: datetime, high: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (low, high] where tz's UTC offset changes, found by bisection (UTC)."""
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    # Transitions fall on whole seconds and low < transition <= high < low + 1 s.
    return high.astimezone(UTC).replace(microsecond=0)


def next_every_fire(interval: timedelta, anchor: datetime, after: datetime) -> datetime:
    """The first fire strictly after `after` on the grid anchor + k*interval (absolute time)."""
    if after < anchor:
        return anchor.astimezone(UTC)
    elapsed = after - anchor
    steps = elapsed // interval + 1
    return (anchor + steps * interval).astimezone(UTC)


def next_phased_fire(
    interval: timedelta, phase: timedelta, tz: ZoneInfo, after: datetime
) -> datetime:
    """The first fire strictly after `after` on the wall-clock grid of `tz`: local midnight
    of 1970-01-01 + phase + k*interval (in UTC).

    The grid follows the zone's clock, so `every='1d', offset='9h'` stays at 09:00 across DST.
    A wall time the clock skips fires once at the jump (several skipped ones collapse into
    that instant) and a repeated one fires once, on its first pass: as a fixed-time cron does.
    """
    anchor = datetime(1970, 1, 1) + phase
    wall_after = after.astimezone(tz).replace(tzinfo=None)
    # Fire instants rise with the wall time, and no wall time at or before the reading of
    # `after` fires after it, so the walk starts at the grid point at or before that reading.
    step = (wall_after - anchor) // interval
    for _ in range(1_000_000):
        wall = anchor + step * interval
        passes = _passes(wall, tz)
        fire = passes[0] if passes else _jump_instant(wall, tz)
        if fire > after:
            return fire
        step += 1
    raise ScheduleError(f"every={interval} never fires")  # pragma: no cover


def next_timed_fire(
    cron: str | None,
    every: str | None,
    tz: str,
    after: datetime,
    dst_repeat: DstRepeat = "first",
    offset: str | None = None,
) -> datetime:
    """The first tick strictly after `after` of a cron or an interval schedule, in UTC.

    Interval schedules without an offset sit on a grid anchored at the Unix epoch, so they
    stay fixed in absolute time across restarts and DST changes; with an offset they sit on
    the wall clock of `tz` (see next_phased_fire).
    """
    if every is not None and offset is not None:
        return next_phased_fire(
            parse_every(every), parse_offset(offset, every), parse_tz(tz), after
        )
    if every is not None:
        return next_every_fire(parse_every(every), EPOCH, after)
    if cron is None:
        raise ScheduleError("give exactly one of cron= and every=, e.g. every='1m'")
    return next_cron_fire(cron, parse_tz(tz), after, dst_repeat)


def dst_note(
    cron: str | None, tz: str, fire: datetime, dst_repeat: DstRepeat = "first"
) -> str | None:
    """Why DST moved or doubled a cron fire time, or None for an ordinary wall time."""
    if cron is None:
        return None
    zone = parse_tz(tz)
    local = fire.astimezone(zone)
    wall = local.replace(tzinfo=None)
    day = f"{wall:%Y-%m-%d}"
    fixed = is_fixed_time(cron)
    if len(_passes(wall, zone)) == 2:
        which = "first" if local.fold == 0 else "second"
        if fixed and dst_repeat != "both":
            return (
                f"DST repeats {wall:%H:%M} on {day}: fires on the {which} pass only "
                f"(dst_repeat={dst_repeat!r})"
            )
        return f"doubled by DST: {wall:%H:%M} happens twice on {day}, this is the {which} pass"
    before = (fire - timedelta(seconds=1)).astimezone(zone).utcoffset()
    after = local.utcoffset()
    if not fixed or before is None or after is None or before >= after:
        return None
    # The clock jumped forward at this instant: which fixed time did the jump swallow?
    jumped_from = (fire.astimezone(UTC) + before).replace(tzinfo=None)
    skipped: datetime = _cron_walls(cron, jumped_from - timedelta(seconds=1)).get_next(datetime)
    if skipped >= wall:
        return None
    return (
        f"moved by DST: {skipped:%H:%M} does not exist on {day} "
        f"(clocks jump {jumped_from:%H:%M} -> {wall:%H:%M}), fires at the jump"
    )


def upcoming_fires(
    cron: str | None,
    every: str | None,
    tz: str,
    after: datetime,
    count: int,
    dst_repeat: DstRepeat = "first",
    offset: str | None = None,
) -> list[tuple[datetime, str | None]]:
    """The next `count` fire times (UTC), each with its DST note (see dst_note)."""
    fires: list[tuple[datetime, str | None]] = []
    for _ in range(count):
        after = next_timed_fire(cron, every, tz, after, dst_repeat, offset)
        fires.append((after, dst_note(cron, tz, after, dst_repeat)))
    return fires
