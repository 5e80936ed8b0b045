"""`every` with an offset, registered for real: warned about without one, shown with one."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mainspring.client import Client
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e

DAILY = """
from mainspring import Routine, on_schedule

class Daily(Routine):
    def run(self, tick=on_schedule(every="1d"{options})):
        return {{}}
"""


async def test_every_in_a_tz_is_warned_about_without_offset_and_follows_it_with_one(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment = system
    unphased = write_routine(tmp_path / "a", DAILY.format(options=', tz="Asia/Tokyo"'))
    created = deployment.cli("routine", "create", str(unphased), "--name", "daily")

    assert created.stderr.strip() == (
        "warning: routine daily: every='1d' ignores tz='Asia/Tokyo' without offset=: it ticks "
        "on a grid from the Unix epoch in absolute time; add offset= (e.g. offset='0s') to "
        "tick on Asia/Tokyo's clock"
    )

    phased = write_routine(
        tmp_path / "b", DAILY.format(options=', offset="9h", tz="America/New_York"')
    )
    created = deployment.cli("routine", "create", str(phased), "--name", "daily")
    assert created.stderr == ""
    shown = json.loads(deployment.cli("routine", "show", "daily", "--next", "3").stdout)

    walls = [datetime.fromisoformat(f.split()[0]) for f in shown["next_fires"]]
    zone = ZoneInfo("America/New_York")
    assert [(w.astimezone(zone).hour, w.astimezone(zone).minute) for w in walls] == [(9, 0)] * 3

    # The ticker fires on the phase: every 2 s at odd seconds (Berlin's offset is whole hours).
    odd = write_routine(
        tmp_path / "c",
        DAILY.replace('"1d"', '"2s"').format(options=', offset="1s", tz="Europe/Berlin"'),
    )
    deployment.cli("routine", "create", str(odd), "--name", "odd")

    async def two_ticks() -> list[datetime] | None:
        runs = await client.list_runs(RunQuery(routine="odd", source="trigger"))
        ticks = [datetime.fromisoformat(r["trigger_event"]["scheduled_at"]) for r in runs]
        return ticks if len(ticks) >= 2 else None

    ticks = await eventually(two_ticks, what="two ticks of odd")
    assert {tick.second % 2 for tick in ticks} == {1}
