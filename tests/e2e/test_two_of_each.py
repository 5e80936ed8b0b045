"""Two dispatchers and two tickers, one of each SIGKILLed mid-flight: no run doubled, none lost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.contract.queries import RunQuery
from tests.e2e.test_schedules import assert_contiguous, fired_ticks, stream_ticks, tick_times
from tests.harness import Deployment, eventually, write_routine

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TICK = """
from mainspring import Routine, on_schedule

class Tick(Routine):
    def run(self, tick=on_schedule(every="1s", catchup="all", catchup_window="1m", overlap="allow")):
        return {"scheduled_at": tick.scheduled_at.isoformat()}
"""

AFTER = """
from mainspring import Routine, on_workflow_success

class After(Routine):
    def run(self, upstream=on_workflow_success("tick")):
        return {"upstream": upstream.run_id}
"""


async def test_two_dispatchers_and_two_tickers_survive_losing_one_of_each(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    for name in ("recorder", "dataset_watcher"):
        deployment.start(name)
    deployment.start("runner", "runner-0")
    killed_dispatcher = deployment.start("dispatcher", "dispatcher-0")
    deployment.start("dispatcher", "dispatcher-1")
    killed_ticker = deployment.start("ticker", "ticker-0")
    deployment.start("ticker", "ticker-1")
    # The chained routine first: a tick run completed before it exists would chain nothing.
    deployment.cli(
        "routine", "create", str(write_routine(tmp_path / "a", AFTER)), "--name", "after"
    )
    deployment.cli("routine", "create", str(write_routine(tmp_path / "t", TICK)), "--name", "tick")

    # Both dispatchers take work from the shared consumers: wait until the one to be killed
    # has requested runs itself, so the kill lands on a replica that is doing work.
    await eventually(
        lambda: _logged(killed_dispatcher.log(), "requested run"),
        90,
        what="the first dispatcher requesting runs",
    )
    before = await eventually(lambda: _completed(client, "after", 3), 90, what="chained runs")
    killed_dispatcher.kill(signal.SIGKILL)
    killed_ticker.kill(signal.SIGKILL)
    assert not killed_dispatcher.alive()
    assert not killed_ticker.alive()
    await eventually(
        lambda: _completed(client, "after", len(before) + 6), 120, what="runs after the kills"
    )
    deployment.cli("routine", "disable", "tick")
    runs = await eventually(
        lambda: _one_run_per_fired_tick(client), 90, what="every fired tick's run settled"
    )
    ticks = tick_times(await fired_ticks(client, "tick"))
    afters = await eventually(
        lambda: _settled(client, "after", len(runs)), 120, what="one chained run per tick run"
    )

    assert_contiguous(ticks)
    published = await stream_ticks(client, "tick")
    assert len(published) == len(set(published)), "schedule.fired doubled"
    assert all(r["status"] == "completed" for r in runs)
    # A request decided twice would take a second number: numbers are 1..N without gaps.
    assert sorted(r["run_number"] for r in runs) == list(range(1, len(runs) + 1))
    assert sorted(r["parent_run_id"] for r in afters) == sorted(r["id"] for r in runs)
    assert sorted(r["run_number"] for r in afters) == list(range(1, len(afters) + 1))


async def _logged(log: str, text: str) -> bool | None:
    return True if text in log else None


async def _completed(client: Client, routine: str, count: int) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, status="completed", limit=10_000))
    return runs if len(runs) >= count else None


async def _one_run_per_fired_tick(client: Client) -> list[dict[str, Any]] | None:
    fired = {e["scheduled_at"] for e in await fired_ticks(client, "tick")}
    runs = await _settled(client, "tick", len(fired))
    if runs is None or {r["trigger_event"]["scheduled_at"] for r in runs} != fired:
        return None
    return runs


async def _settled(client: Client, routine: str, count: int) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, limit=10_000))
    done = [r for r in runs if r["status"] in ("completed", "failed", "cancelled")]
    return runs if len(runs) >= count and len(done) == len(runs) else None
