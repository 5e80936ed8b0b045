"""Pure schedule decisions: next fire times and which ticks are due after downtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mainspring.base.schedules import EPOCH, next_timed_fire, parse_every
from mainspring.sdk.triggers import TimedSpec

__all__ = ["EPOCH", "TickPlan", "due_ticks", "next_fire", "same_timing", "start_cursor"]

# How far back the search for the most recent missed tick may look at first; it doubles
# until it finds one, so a per-second cron after a week of downtime stays cheap.
_FIRST_LOOKBACK = timedelta(minutes=1)


def next_fire(spec: TimedSpec, after: datetime) -> datetime:
    """The first nominal tick strictly after `after`.

    Interval schedules sit on a grid anchored at the Unix epoch, so they stay fixed in
    absolute time across restarts and DST changes; with an offset, on tz's wall clock.
    """
    return next_timed_fire(spec.cron, spec.every, spec.tz, after, spec.dst_repeat, spec.offset)


def same_timing(old: TimedSpec, new: TimedSpec) -> bool:
    """Do two specs tick at the same instants? (Then an update keeps the armed tick.)"""
    return (old.cron, old.every, old.offset, old.tz, old.dst_repeat) == (
        new.cron,
        new.every,
        new.offset,
        new.tz,
        new.dst_repeat,
    )


def start_cursor(last_fired: datetime | None, defined_at: datetime) -> datetime:
    """Where a schedule's tick history starts: the last tick fired, never before its definition.

    A tick before the definition's last change belongs to an older schedule or to a time
    the trigger was disabled: it is never caught up.
    """
    return defined_at if last_fired is None else max(last_fired, defined_at)


@dataclass(frozen=True)
class TickPlan:
    """What to do with the ticks after `cursor`: fire some, drop the missed rest."""

    fire: list[datetime] = field(default_factory=list)
    missed: int = 0
    cursor: datetime | None = None  # the newest tick handled (fired or dropped)
    more: bool = False  # the catch-up limit was hit: call again for the rest


def _ticks_between(
    spec: TimedSpec, after: datetime, until: datetime, limit: int
) -> tuple[list[datetime], bool]:
    ticks: list[datetime] = []
    cursor = after
    while len(ticks) < limit:
        tick = next_fire(spec, cursor)
        if tick > until:
            return ticks, False
        ticks.append(tick)
        cursor = tick
    return ticks, next_fire(spec, cursor) <= until


def _latest_tick(spec: TimedSpec, after: datetime, until: datetime) -> datetime | None:
    """The most recent tick in (after, until], found without walking the whole range."""
    lookback = _FIRST_LOOKBACK
    while True:
        start = max(after, until - lookback)
        latest = None
        cursor = start
        while (tick := next_fire(spec, cursor)) <= until:
            latest = tick
            cursor = tick
        if latest is not None or start == after:
            return latest
        lookback *= 2


def due_ticks(
    spec: TimedSpec,
    cursor: datetime,
    now: datetime,
    *,
    grace: timedelta,
    default_window: timedelta,
    limit: int = 1000,
    armed: datetime | None = None,
) -> TickPlan:
    """The ticks in (cursor, now] to fire now, by the routine's catch-up policy.

    A tick at most `grace` old is on time and always fires. Older ones were missed (the
    ticker was down or stalled): `latest` fires the most recent missed tick once, `skip`
    fires none of them, `all` fires each missed tick inside the catch-up window (oldest
    first, at most `limit` per call; `more` says to call again). Ticks after `now` are
    untouched either way, so the schedule continues with the future ones.

    `armed` is next_fire(spec, cursor) when the caller already knows it: on time, it is
    the whole plan, without searching (the hot path of a ticker holding many schedules).
    """
    if armed is not None and cursor < armed <= now and now - armed <= grace:
        return TickPlan(fire=[armed], cursor=armed)
    window = parse_every(spec.catchup_window) if spec.catchup_window else default_window
    reach = max(window, grace) if spec.catchup == "all" else grace
    start = max(cursor, now - reach)
    dropped_newest = _latest_tick(spec, cursor, start) if start > cursor else None
    dropped = _ticks_between(spec, cursor, start, limit)[0] if dropped_newest else []
    fire, more = _ticks_between(spec, start, now, limit)
    if spec.catchup == "latest" and dropped_newest is not None:
        fire = [dropped_newest, *fire]
        dropped = dropped[:-1]
    newest = fire[-1] if fire else (dropped_newest or cursor)
    return TickPlan(fire=fire, missed=len(dropped), cursor=newest, more=more)
