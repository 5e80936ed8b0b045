"""Schedules end to end: one run per tick across two tickers, SIGKILL, disable and enable."""

from __future__ import annotations

import asyncio
import functools
import itertools
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.contract import subjects
from mainspring.contract.messages import ScheduleFired
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, consumer_idle, eventually, write_routine

pytestmark = pytest.mark.e2e

EVERY_SECOND = """
from mainspring import Routine, on_schedule

class Tick(Routine):
    def run(self, tick=on_schedule(every="1s", catchup="all", catchup_window="1m", overlap="allow")):
        return {"scheduled_at": tick.scheduled_at.isoformat()}
"""


async def fired_ticks(client: Client, routine: str) -> list[dict[str, Any]]:
    """The routine's `fired` trigger events, oldest tick first."""
    events = await client.trigger_events(routine, limit=10_000)
    fired = [e for e in events if e["status"] == "fired"]
    return sorted(fired, key=lambda e: e["scheduled_at"])


def tick_times(events: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(e["scheduled_at"]) for e in events]


def assert_contiguous(ticks: list[datetime]) -> None:
    """Unique, one second apart, nothing missing between the first and the last."""
    assert len(set(ticks)) == len(ticks), "a tick fired twice"
    gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a != timedelta(seconds=1)]
    assert not gaps, f"ticks missing between {gaps[:3]}"


async def test_every_second_fires_once_per_tick_across_two_tickers_and_sigkill(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    second = system.start("ticker", "ticker-2")
    folder = write_routine(tmp_path / "tick", EVERY_SECOND)
    system.cli("routine", "create", str(folder), "--name", "tick")

    await eventually(
        lambda: _at_least(client, "tick", 6), timeout=60, what="six ticks with two tickers"
    )
    # No ticker at all for a few seconds: catchup="all" must fill the gap after restart.
    system.services["ticker"].kill(signal.SIGKILL)
    second.kill(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    last_before_kill = max(await stream_ticks(client, "tick"))
    # The kill landed mid-flight: the tickers were firing every second up to their death.
    assert killed_at - last_before_kill < timedelta(seconds=3), (killed_at, last_before_kill)
    await asyncio.sleep(4)  # the outage itself: four ticks come due with no ticker alive
    assert max(await stream_ticks(client, "tick")) == last_before_kill, "fired while killed"
    before_restart = len(await fired_ticks(client, "tick"))
    system.start("ticker")
    await eventually(
        lambda: _at_least(client, "tick", before_restart + 8),
        timeout=60,
        what="ticks after the restart",
    )
    system.cli("routine", "disable", "tick")
    await settled(client)

    events = await fired_ticks(client, "tick")
    ticks = tick_times(events)
    assert_contiguous(ticks)
    runs = await eventually(
        lambda: _runs_for(client, "tick", len(events)), timeout=60, what="one run per tick"
    )
    assert len({r["id"] for r in runs}) == len(events)
    assert sorted(r["trigger_event"]["scheduled_at"] for r in runs) == sorted(
        e["scheduled_at"] for e in events
    )
    assert {e["run_id"] for e in events} == {r["id"] for r in runs}
    # A tick handled twice would take a second run number (the duplicate request is dropped).
    assert sorted(r["run_number"] for r in runs) == list(range(1, len(runs) + 1))
    published = await stream_ticks(client, "tick")
    assert sorted(published) == sorted(set(published)), "schedule.fired doubled"
    # A tick in flight while disabling is recorded as skipped, not fired: the stream holds
    # exactly the ticks the history shows, each once (both read again on every check, so a
    # tick the ticker sent before it saw the disable is counted on both sides).
    await eventually(lambda: _history_matches(client, "tick"), timeout=30, what="history")


async def settled(client: Client) -> None:
    """Every tick published so far is decided by the dispatcher and in the history.

    The dispatcher reads the registry for each tick, so once the ticks published before a
    disable (or delete) are decided, a later one can only be recorded as skipped.
    """
    for consumer in ("dispatcher-schedule", "recorder-triggers"):
        await eventually(
            functools.partial(consumer_idle, client.js, consumer), timeout=30, what=consumer
        )


async def _history_matches(client: Client, routine: str) -> bool:
    published = await stream_ticks(client, routine)
    assert sorted(published) == sorted(set(published)), "schedule.fired doubled"
    events = await client.trigger_events(routine, limit=10_000)
    return sorted(published) == sorted(datetime.fromisoformat(e["scheduled_at"]) for e in events)


async def stream_ticks(client: Client, routine: str) -> list[datetime]:
    """Every schedule.fired message of a routine stored on the stream."""
    found: list[datetime] = []
    stored = await client.js.stream_info(subjects.STREAM, subjects_filter=subjects.SCHEDULE_FIRED)
    if not (stored.state.subjects or {}).get(subjects.SCHEDULE_FIRED):
        return found
    subscription = await client.js.subscribe(subjects.SCHEDULE_FIRED, ordered_consumer=True)
    try:
        while True:
            message = await subscription.next_msg(timeout=10)
            body = ScheduleFired.model_validate_json(message.data)
            if body.routine == routine:
                found.append(body.scheduled_at)
            if message.metadata.num_pending == 0:
                return found  # the last one stored when the consumer was made
    finally:
        await subscription.unsubscribe()


async def test_disabled_routine_stops_and_resumes_without_backfill(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    folder = write_routine(tmp_path / "tick", EVERY_SECOND)
    system.cli("routine", "create", str(folder), "--name", "tick")
    await eventually(lambda: _at_least(client, "tick", 3), timeout=60, what="first ticks")

    system.cli("routine", "disable", "tick")
    disabled_at = datetime.now(UTC)
    await settled(client)
    stopped = len(await fired_ticks(client, "tick"))
    await asyncio.sleep(4)  # a window in which the schedule, were it armed, would fire four times
    assert len(await fired_ticks(client, "tick")) == stopped, "fired while disabled"
    # The ticker itself stopped: nothing published past the moment it saw the disable.
    late = [t for t in await stream_ticks(client, "tick") if t > disabled_at + timedelta(seconds=2)]
    assert not late, f"the ticker kept publishing while disabled: {late}"
    shown = system.cli("routine", "show", "tick").stdout
    assert '"enabled": false' in shown
    assert '"next_fire_at": null' in shown

    system.cli("routine", "enable", "tick")
    await eventually(
        lambda: _at_least(client, "tick", stopped + 3), timeout=60, what="ticks after enable"
    )
    ticks = tick_times(await fired_ticks(client, "tick"))
    assert len(set(ticks)) == len(ticks)
    # The disabled seconds are not caught up: exactly one gap, of at least the pause.
    gaps = [b - a for a, b in itertools.pairwise(ticks) if b - a != timedelta(seconds=1)]
    assert len(gaps) == 1, gaps
    assert gaps[0] >= timedelta(seconds=4)
    shown = system.cli("routine", "show", "tick").stdout
    assert '"next_fire_at": "' in shown
    assert '"last_run_id": "' in shown


async def _at_least(client: Client, routine: str, count: int) -> bool:
    return len(await fired_ticks(client, routine)) >= count


async def _runs_for(client: Client, routine: str, count: int) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, limit=10_000))
    return runs if len(runs) >= count else None


POLLING = """
from pathlib import Path
import time
from mainspring import Routine, on_poll

MODE = Path({mode_file!r})

def check():
    mode = MODE.read_text().strip()
    if mode == "dict":
        return {{"count": 3, "note": "extra keys stay in the payload"}}
    if mode == "raise":
        raise ValueError("feed unreachable")
    if mode == "sleep":
        time.sleep(30)
    return None

class Poller(Routine):
    def run(self, event=on_poll(check, every="2s", timeout_s=2, overlap="allow"), count: int = 0):
        return {{"count": count, "payload": event.payload}}
"""


async def test_poll_fires_on_dict_skips_on_none_fails_on_exception_and_timeout(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    mode = tmp_path / "mode"
    mode.write_text("dict")
    folder = write_routine(tmp_path / "poller", POLLING.format(mode_file=str(mode)))
    system.cli("routine", "create", str(folder), "--name", "poller")

    fired = await eventually(
        lambda: _event_with(client, "poller", "fired"), timeout=60, what="a fired poll"
    )
    run = await client.wait(fired["run_id"], timeout=60)
    assert run["status"] == "completed"
    assert run["trigger_kind"] == "poll"
    assert run["inputs"] == {"count": 3}
    assert run["outputs"]["payload"] == {"count": 3, "note": "extra keys stay in the payload"}
    assert run["trigger_event"]["scheduled_at"] == fired["scheduled_at"]

    mode.write_text("none")
    skipped = await eventually(
        lambda: _event_with(client, "poller", "skipped"), timeout=60, what="a skipped poll"
    )
    assert skipped["reason"] == "poll function returned None"
    assert skipped["run_id"] is None

    mode.write_text("raise")
    failed = await eventually(
        lambda: _event_with(client, "poller", "failed", "ValueError"), timeout=60, what="failed"
    )
    assert failed["reason"] == "ValueError: feed unreachable"

    mode.write_text("sleep")
    timed_out = await eventually(
        lambda: _event_with(client, "poller", "failed", "timed out"), timeout=60, what="timeout"
    )
    assert timed_out["reason"] == "poll function routine:check timed out after 2s"
    events = system.cli("routine", "events", "poller").stdout
    assert "fired" in events
    assert "skipped" in events
    assert "failed" in events


SLOW = """
import time
from mainspring import Routine, on_schedule

class Slow(Routine):
    def run(self, tick=on_schedule(every="1s")):
        time.sleep(4)
        return {}
"""


async def test_overlap_skip_records_skipped_ticks_and_runs_never_overlap(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    folder = write_routine(tmp_path / "slow", SLOW)
    system.cli("routine", "create", str(folder), "--name", "slow")

    skipped = await eventually(
        lambda: _event_with(client, "slow", "skipped", "overlap=skip"), timeout=60, what="skip"
    )
    assert skipped["reason"].startswith("run ")
    assert "still active" in skipped["reason"]
    # The active run is known from the dispatcher's own saved state, not its memory.
    system.services["dispatcher"].kill(signal.SIGKILL)
    system.start("dispatcher")
    await eventually(
        lambda: _runs_for_status(client, "slow", "completed", 3), timeout=90, what="three runs"
    )
    system.cli("routine", "disable", "slow")
    runs = await eventually(
        lambda: _settled_runs(client, "slow"), timeout=60, what="runs to settle"
    )
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs if r["started_at"])
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert finished <= started, f"runs overlapped: {spans}"


async def _event_with(
    client: Client, routine: str, status: str, reason_part: str = ""
) -> dict[str, Any] | None:
    for event in await client.trigger_events(routine, limit=500):
        if event["status"] == status and reason_part in (event["reason"] or ""):
            return event
    return None


async def _runs_for_status(client: Client, routine: str, status: str, count: int) -> bool:
    runs = await client.list_runs(RunQuery(routine=routine, status=status, limit=100))
    return len(runs) >= count


async def _settled_runs(client: Client, routine: str) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, limit=100))
    done = all(r["status"] in ("completed", "failed", "cancelled") for r in runs)
    return runs if runs and done else None


async def test_schedule_update_and_delete_take_effect_without_restart(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    folder = write_routine(tmp_path / "tick", EVERY_SECOND)
    system.cli("routine", "create", str(folder), "--name", "tick")
    await eventually(lambda: _at_least(client, "tick", 3), timeout=60, what="first ticks")

    write_routine(folder, EVERY_SECOND.replace('every="1s"', 'every="3s"'))
    system.cli("routine", "create", str(folder), "--name", "tick")
    # A margin past the update: the ticker applies it a moment after the CLI returns.
    updated_at = datetime.now(UTC) + timedelta(seconds=1)
    await eventually(
        lambda: _ticks_after(client, "tick", updated_at, 3), timeout=60, what="3s ticks"
    )
    later = [t for t in tick_times(await fired_ticks(client, "tick")) if t > updated_at]
    assert all(int(t.timestamp()) % 3 == 0 for t in later), later
    assert all(b - a == timedelta(seconds=3) for a, b in itertools.pairwise(later)), later

    system.cli("routine", "delete", "tick")
    deleted_at = datetime.now(UTC)
    await settled(client)
    fired = len(await fired_ticks(client, "tick"))
    await asyncio.sleep(5)  # a window in which the schedule, were it armed, would fire
    assert len(await fired_ticks(client, "tick")) == fired, "a deleted routine fired"
    late = [t for t in await stream_ticks(client, "tick") if t > deleted_at + timedelta(seconds=3)]
    assert not late, f"the ticker kept publishing a deleted routine: {late}"


async def _ticks_after(client: Client, routine: str, after: datetime, count: int) -> bool:
    return sum(t > after for t in tick_times(await fired_ticks(client, routine))) >= count


async def test_overlap_cancel_previous_cancels_the_active_run(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    source = SLOW.replace('every="1s"', 'every="3s", overlap="cancel_previous"')
    folder = write_routine(tmp_path / "slow", source.replace("time.sleep(4)", "time.sleep(60)"))
    system.cli("routine", "create", str(folder), "--name", "slow")

    cancelled = await eventually(
        lambda: _runs_with(client, "slow", "cancelled"), timeout=90, what="a cancelled run"
    )
    assert cancelled[0]["error"] == "cancelled by request"
    system.cli("routine", "disable", "slow")
    # Each cancelled run was replaced by the next tick's run: never two running at once.
    running = await client.list_runs(RunQuery(routine="slow", status="running", limit=100))
    assert len(running) <= 1


async def test_overlap_buffer_one_runs_one_buffered_tick_after_the_active_run(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    source = SLOW.replace('every="1s"', 'every="1s", overlap="buffer_one"')
    folder = write_routine(tmp_path / "slow", source.replace("time.sleep(4)", "time.sleep(3)"))
    system.cli("routine", "create", str(folder), "--name", "slow")

    await eventually(
        lambda: _event_with(client, "slow", "skipped", "already buffered"), timeout=60, what="drop"
    )
    await eventually(
        lambda: _runs_for_status(client, "slow", "completed", 2), timeout=60, what="two runs"
    )
    system.cli("routine", "disable", "slow")
    runs = await eventually(lambda: _settled_runs(client, "slow"), timeout=60, what="settled")
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs if r["started_at"])
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert finished <= started, f"runs overlapped: {spans}"
    # The second run is the buffered tick: it was fired one second after the first.
    first, second = sorted(runs, key=lambda r: r["trigger_event"]["scheduled_at"])[:2]
    gap = datetime.fromisoformat(second["trigger_event"]["scheduled_at"]) - datetime.fromisoformat(
        first["trigger_event"]["scheduled_at"]
    )
    assert gap == timedelta(seconds=1)


async def _runs_with(client: Client, routine: str, status: str) -> list[dict[str, Any]] | None:
    runs = await client.list_runs(RunQuery(routine=routine, status=status, limit=100))
    return runs or None
