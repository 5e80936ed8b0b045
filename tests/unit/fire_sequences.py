"""A shared check for schedule tables: each fire follows the one before, from anywhere between."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from mainspring.base.schedules import DstRepeat, next_cron_fire


def assert_fires_in_order(
    expr: str, tz: str, fires: list[datetime], dst_repeat: DstRepeat = "first", points: int = 8
) -> None:
    """Each fire is the next after the one before, also asked from `points` instants between.

    A ticker asks for the next tick from wherever its cursor stands (a restart, a catch-up),
    so a table that only checks fire-to-fire would miss answers that depend on the start.
    """
    zone = ZoneInfo(tz)
    # In UTC: aware datetimes sharing a tzinfo subtract and compare by wall reading, and one
    # with fold=1 in a repeated hour never equals a datetime in another zone (PEP 495).
    in_utc = [fire.astimezone(UTC) for fire in fires]
    for earlier, later in itertools.pairwise(in_utc):
        gap = later - earlier
        for step in range(points):
            after = earlier + gap * step / points
            got = next_cron_fire(expr, zone, after, dst_repeat)
            assert got == later, (
                f"{expr!r} in {tz}, after {after.astimezone(zone)}: "
                f"got {got.astimezone(zone)}, want {later.astimezone(zone)}"
            )
