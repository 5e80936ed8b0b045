"""The keyword arguments of `on_schedule`, typed, for tables of schedules."""

from __future__ import annotations

from typing import TypedDict

from mainspring.base.schedules import DstRepeat
from mainspring.sdk.triggers import CatchUp, Overlap


class ScheduleOptions(TypedDict, total=False):
    """Any subset of `on_schedule`'s keyword arguments, each with its own type."""

    cron: str
    every: str
    tz: str
    catchup: CatchUp
    catchup_window: str
    overlap: Overlap
    dst_repeat: DstRepeat
