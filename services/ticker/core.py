"""Pure schedule decisions: next fire times and which ticks are due after downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mainspring.schedules import next_cron_fire, next_every_fire, parse_every, parse_tz
from mainspring.triggers import TimedSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def next_fire(spec: TimedSpec, after: datetime) -> datetime:
    """The first nominal tick strictly after `after`.

    Interval schedules sit on a grid anchored at the Unix epoch, so they stay fixed in
    absolute time across restarts and DST changes.
    """
    if spec.every is not None:
        return next_every_fire(parse_every(spec.every), EPOCH, after)
    assert spec.cron is not None
    return next_cron_fire(spec.cron, parse_tz(spec.tz), after)


def due_ticks(
    spec: TimedSpec,
    last_fired: datetime | None,
    now: datetime,
    default_window: timedelta,
    limit: int = 1000,
) -> list[datetime]:
    """Ticks to fire now, given the last tick fired, by the routine's catch-up policy.

    A tick is due when its nominal time has passed. After downtime more than one may be
    due: `latest` fires only the most recent, `skip` fires none of the missed ones, `all`
    fires each one inside the catch-up window.
    """
    if last_fired is None:
        return []
    window = parse_every(spec.catchup_window) if spec.catchup_window else default_window
    ticks: list[datetime] = []
    cursor = last_fired
    while len(ticks) < limit:
        tick = next_fire(spec, cursor)
        if tick > now:
            break
        ticks.append(tick)
        cursor = tick
    if len(ticks) <= 1:
        return ticks
    # More than one tick passed: the ticker was down (or stalled) for a while.
    if spec.catchup == "skip":
        return ticks[-1:] if now - ticks[-1] < timedelta(seconds=1) else []
    if spec.catchup == "latest":
        return ticks[-1:]
    return [t for t in ticks if now - t <= window]
