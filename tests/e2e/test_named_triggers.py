"""Named triggers end to end: kept as data, fired through the ticker and dispatcher."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.contract.queries import RunQuery
from tests.harness import Deployment, eventually, write_routine

pytestmark = pytest.mark.e2e
GRACE = timedelta(seconds=1)

# Its own trigger fires once a year: every run in these tests comes from a named trigger.
GREET = """
from mainspring import Routine, on_schedule

class Greet(Routine):
    def run(self, tick=on_schedule(cron="0 0 1 1 *"), city: str = "nowhere"):
        return {"city": city}
"""

CHECKS = """
import time

def new_orders():
    # Fires on even seconds, skips on odd ones: both outcomes show up in the history.
    return {"city": "Bergen"} if int(time.time()) % 2 == 0 else None
"""


def register_greet(system: Deployment, tmp_path: Path) -> None:
    folder = write_routine(tmp_path / "greet", GREET)
    (folder / "checks.py").write_text(CHECKS)
    system.cli("routine", "create", str(folder), "--name", "greet")


def show(system: Deployment, name: str, *extra: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(system.cli("trigger", "show", name, *extra).stdout)
    return shown


async def finished_run(client: Client, run_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        run = await client.get_run(run_id)
        return run if run and run["status"] in ("completed", "failed") else None

    return await eventually(done, timeout=60, what=f"run {run_id} to finish")


async def fired(client: Client, trigger: str) -> list[dict[str, Any]]:
    """The trigger's fired events, oldest tick first."""
    events = await client.trigger_events(trigger, limit=10_000)
    return sorted(
        (e for e in events if e["status"] == "fired"),
        key=lambda e: e["scheduled_at"] or e["fired_at"],
    )


async def test_push_trigger_fires_with_default_and_given_payloads_and_keeps_its_last_run(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register_greet(system, tmp_path)
    created = system.cli(
        "trigger", "create", "orders", "--target", "greet", "--push",
        "--payload", '{"city": "Oslo"}',
    )  # fmt: skip
    assert "inactive" in created.stdout
    assert show(system, "orders")["status"] == "disabled"
    refused = system.cli("trigger", "fire", "orders", check=False)
    assert refused.returncode == 2
    assert "trigger activate orders" in refused.stderr

    system.cli("trigger", "activate", "orders")
    default_run = system.cli("trigger", "fire", "orders").stdout.strip()
    given_run = await client.fire_trigger("orders", {"city": "Lima"})

    default = await finished_run(client, default_run)
    given = await finished_run(client, given_run)
    assert default["status"] == "completed", default
    assert default["outputs"] == {"city": "Oslo"}
    assert default["inputs"] == {"city": "Oslo"}
    assert default["source"] == "trigger"
    assert default["attributes"] == {"trigger": "orders"}
    assert given["outputs"] == {"city": "Lima"}

    events = await client.trigger_events("orders")
    by_run = {e["run_id"]: e for e in events}
    assert by_run[default_run]["payload"] == {"city": "Oslo"}
    assert by_run[given_run]["payload"] == {"city": "Lima"}
    assert {e["status"] for e in events} == {"fired"}
    assert events == sorted(events, key=lambda e: e["fired_at"], reverse=True)

    async def last_run_recorded() -> dict[str, Any] | None:
        info = show(system, "orders")
        return info if info["last_run_id"] in (default_run, given_run) else None

    before = await eventually(last_run_recorded, what="the trigger's last run")
    system.cli("trigger", "deactivate", "orders", "--reason", "maintenance")
    off = show(system, "orders")
    assert off["status"] == "disabled"
    assert off["disabled_reason"] == "maintenance"
    system.cli("trigger", "activate", "orders")
    on = show(system, "orders")
    assert on["status"] == "active"
    assert (on["last_run_id"], on["last_run_at"]) == (before["last_run_id"], before["last_run_at"])

    # A payload that does not fit the target's inputs fails the firing, saying why.
    bad_run = await client.fire_trigger("orders", {"size": 3})
    bad = await finished_run(client, bad_run)
    assert bad["status"] == "failed"
    assert "unknown input 'size'" in bad["error"]
    table = system.cli("trigger", "events", "orders").stdout
    assert "unknown input 'size'" in table
    assert "Lima" in table


async def test_every_trigger_fires_through_the_ticker_and_poll_function_decides(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register_greet(system, tmp_path)
    system.cli(
        "trigger", "create", "often", "--target", "greet", "--every", "1s",
        "--payload", '{"city": "Rome"}',
    )  # fmt: skip
    system.cli(
        "trigger", "create", "polled", "--target", "greet", "--every", "1s",
        "--poll", "checks:new_orders",
    )  # fmt: skip
    listed = system.cli("trigger", "list").stdout
    assert "often" in listed
    assert "greet" in listed
    assert "schedule (own)" in listed
    system.cli("trigger", "activate", "often")
    system.cli("trigger", "activate", "polled")

    async def ticks(trigger: str, count: int) -> list[dict[str, Any]] | None:
        found = await fired(client, trigger)
        return found if len(found) >= count else None

    often = await eventually(lambda: ticks("often", 3), timeout=60, what="three ticks")
    run = await finished_run(client, often[0]["run_id"])
    assert run["outputs"] == {"city": "Rome"}
    assert len({e["scheduled_at"] for e in often}) == len(often), "a tick fired twice"

    async def polled_both_ways() -> list[dict[str, Any]] | None:
        events = await client.trigger_events("polled", limit=1000)
        reasons = {e["reason"] for e in events if e["status"] == "skipped"}
        fires = [e for e in events if e["status"] == "fired"]
        return fires if fires and "poll function returned None" in reasons else None

    polled = await eventually(polled_both_ways, timeout=90, what="a fired and a skipped poll")
    assert polled[0]["payload"] == {"city": "Bergen"}
    assert (await finished_run(client, polled[0]["run_id"]))["outputs"] == {"city": "Bergen"}

    # Several triggers fire one routine; none of them fires the routine's own trigger.
    runs = await client.list_runs(RunQuery(routine="greet", limit=500))
    assert {r["attributes"].get("trigger") for r in runs} <= {"often", "polled"}

    system.cli("trigger", "delete", "often")
    gone = system.cli("trigger", "show", "often", check=False)
    assert gone.returncode == 2
    assert "does not exist" in gone.stderr


async def test_missed_ticks_fire_at_most_once_after_downtime_and_on_activation(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register_greet(system, tmp_path)
    system.cli("trigger", "create", "beat", "--target", "greet", "--every", "1s")
    system.cli("trigger", "activate", "beat")
    await eventually(lambda: _count_at_least(client, "beat", 2), timeout=60, what="ticks")

    # The ticker down for a while: its missed ticks fire once, as the latest of them.
    system.services["ticker"].kill(signal.SIGKILL)
    killed_at = datetime.now(UTC)
    await asyncio.sleep(4)  # the outage: four ticks come due with no ticker alive
    restarted_at = datetime.now(UTC)
    system.start("ticker")
    await eventually(
        lambda: _fired_after(client, "beat", restarted_at + timedelta(seconds=2)),
        timeout=60,
        what="ticks after the restart",
    )
    ticks = [datetime.fromisoformat(e["scheduled_at"]) for e in await fired(client, "beat")]
    assert len(set(ticks)) == len(ticks), "a tick fired twice"
    # A tick within the ticker's misfire grace (1 s) of its start is on time, not missed.
    missed = [t for t in ticks if killed_at + timedelta(seconds=1) < t < restarted_at - GRACE]
    assert len(missed) <= 1, missed
    assert ticks[-1] > restarted_at, "no tick after the restart"

    # Deactivated for a while: on_resume=coalesce fires one of the missed ticks on activation.
    system.cli("trigger", "deactivate", "beat")
    off_at = datetime.now(UTC)
    await asyncio.sleep(3)  # ticks come due while it is off
    activating_at = datetime.now(UTC)
    system.cli("trigger", "activate", "beat")
    on_at = datetime.now(UTC)
    await eventually(lambda: _fired_after(client, "beat", on_at + timedelta(seconds=1)), timeout=60)
    coalesced = await _fired_on_activation(client, "beat", off_at, activating_at)
    assert len(coalesced) == 1, coalesced

    # The same with drop: nothing from the deactivated time fires.
    system.cli("trigger", "deactivate", "beat")
    off_at = datetime.now(UTC)
    await asyncio.sleep(3)
    activating_at = datetime.now(UTC)
    system.cli("trigger", "activate", "beat", "--on-resume", "drop")
    on_at = datetime.now(UTC)
    await eventually(lambda: _fired_after(client, "beat", on_at + timedelta(seconds=1)), timeout=60)
    assert await _fired_on_activation(client, "beat", off_at, activating_at) == []


async def _count_at_least(client: Client, trigger: str, count: int) -> bool:
    return len(await fired(client, trigger)) >= count


async def _fired_after(client: Client, trigger: str, moment: datetime) -> bool:
    return any(
        datetime.fromisoformat(e["scheduled_at"]) > moment for e in await fired(client, trigger)
    )


async def _fired_on_activation(
    client: Client, trigger: str, off_at: datetime, activating_at: datetime
) -> list[datetime]:
    """Ticks that came due while the trigger was off and fired once it was on again.

    Off means from `off_at` to the activation the trigger record holds; a tick due after that
    is an ordinary one. A tick due just before the deactivation reached the ticker (its watch
    may lag on a busy machine) fired before the activation was asked for: not one of these.
    """
    activated_at = (await (await client.trigger_store()).get(trigger)).activated_at
    assert activated_at is not None
    return [
        datetime.fromisoformat(e["scheduled_at"])
        for e in await fired(client, trigger)
        if off_at < datetime.fromisoformat(e["scheduled_at"]) < activated_at
        and datetime.fromisoformat(e["fired_at"]) >= activating_at
    ]


async def test_next_fire_times_show_utc_and_zone_and_mark_dst_moves(
    deployment: Deployment, tmp_path: Path
) -> None:
    system = deployment  # the registry and the triggers bucket are all `show --next` reads
    register_greet(system, tmp_path)
    system.cli(
        "trigger", "create", "early", "--target", "greet", "--cron", "30 2 * * *",
        "--tz", "America/New_York",
    )  # fmt: skip
    # 02:30 does not exist in New York on the day clocks spring forward (March): within a
    # year of daily fires one of them is moved to the jump, and marked.
    fires = show(system, "early", "--next", "366")["next_fires"]
    assert len(fires) == 366
    first = fires[0]
    assert first["utc"].endswith("+00:00")
    assert "T02:30:00-0" in first["local"]
    moved = [f for f in fires if f["dst"] and "moved by DST" in f["dst"]]
    assert len(moved) == 1, moved
    assert "T03:00:00-04:00" in moved[0]["local"]
    assert datetime.fromisoformat(moved[0]["utc"]).astimezone(UTC).hour == 7

    bad = system.cli(
        "trigger", "create", "broken", "--target", "greet", "--cron", "61 * * * *", check=False
    )
    assert bad.returncode == 2
    assert "broken" in bad.stderr
    unknown = system.cli(
        "trigger", "create", "lost", "--target", "nobody", "--every", "1m", check=False
    )
    assert unknown.returncode == 2
    assert "target 'nobody' is not registered" in unknown.stderr
    every = system.cli(
        "trigger", "create", "odd", "--target", "greet", "--every", "soon", check=False
    )
    assert every.returncode == 2
    assert "--every 'soon' is not an interval" in every.stderr


async def test_replay_evaluates_a_definition_against_the_recorded_events_and_starts_nothing(
    system: Deployment, client: Client, tmp_path: Path
) -> None:
    register_greet(system, tmp_path)
    system.cli("trigger", "create", "beat", "--target", "greet", "--every", "1s")
    system.cli("trigger", "create", "orders", "--target", "greet", "--push")
    started = datetime.now(UTC)
    system.cli("trigger", "activate", "beat")
    system.cli("trigger", "activate", "orders")
    pushed = await client.fire_trigger("orders", {"city": "Quito"})
    await eventually(lambda: _count_at_least(client, "beat", 4), timeout=60, what="ticks")
    system.cli("trigger", "deactivate", "beat")
    await finished_run(client, pushed)
    await eventually(lambda: _count_at_least(client, "orders", 1), timeout=30)
    fired_beats = await fired(client, "beat")
    runs_before = len(await client.list_runs(RunQuery(routine="greet", limit=1000)))
    since = started.isoformat()

    report = json.loads(system.cli("trigger", "replay", "beat", "--since", since, "--json").stdout)
    assert report["horizon_start"] >= since
    assert report["stream_oldest"] is None  # a new stream has dropped nothing
    would = [v for v in report["verdicts"] if v["would_run"]]
    matched = {v["at"] for v in would if (v["recorded"] or "").startswith("fired: run ")}
    assert {e["scheduled_at"] for e in fired_beats} <= matched
    # Ticks after the deactivation would have run under the definition, but did not then.
    assert any(v["recorded"] == "not fired then" for v in would)

    # A changed definition: every 2 s would have started about half as many runs.
    changed = tmp_path / "slower.json"
    changed.write_text(json.dumps({"every": "2s", "payload": {"city": "Kyiv"}}))
    slower = json.loads(
        system.cli(
            "trigger", "replay", "beat", "--since", since, "--definition", str(changed), "--json"
        ).stdout
    )
    slower_runs = [v for v in slower["verdicts"] if v["would_run"]]
    assert 0 < len(slower_runs) < len(would)
    assert {v["payload"]["city"] for v in slower_runs} == {"Kyiv"}
    assert all(datetime.fromisoformat(v["at"]).second % 2 == 0 for v in slower_runs)

    text = system.cli("trigger", "replay", "orders", "--since", since).stdout
    assert "nothing was started" in text
    assert "horizon: from" in text
    assert "the stream holds every message it stored" in text
    assert "would have started 1 run(s) of greet" in text
    assert f'payload {{"city": "Quito"}}  [then: fired: run {pushed}]' in text

    assert len(await client.list_runs(RunQuery(routine="greet", limit=1000))) == runs_before
    bad = system.cli("trigger", "replay", "beat", "--since", "yesterday", check=False)
    assert bad.returncode == 2
    assert "--since 'yesterday'" in bad.stderr


async def test_routine_disable_and_enable_act_on_its_triggers_through_their_records(
    deployment: Deployment, tmp_path: Path
) -> None:
    system = deployment
    system.start("recorder")  # the own trigger's last run is asked of the run history
    register_greet(system, tmp_path)
    for name in ("a", "b", "kept-off"):
        system.cli("trigger", "create", name, "--target", "greet", "--push")
    system.cli("trigger", "activate", "a")
    system.cli("trigger", "activate", "b")

    assert "with 2 trigger(s)" in system.cli("routine", "disable", "greet").stdout
    assert {show(system, n)["disabled_by"] for n in ("a", "b")} == {"routine"}
    assert show(system, "greet")["status"] == "disabled"  # its own trigger, by its name

    assert "with 2 trigger(s)" in system.cli("routine", "enable", "greet").stdout
    assert [show(system, n)["status"] for n in ("a", "b", "kept-off")] == [
        "active",
        "active",
        "disabled",
    ]
    # The routine's own trigger is activated and deactivated by its name, too.
    system.cli("trigger", "deactivate", "greet")
    assert show(system, "greet")["status"] == "disabled"
    system.cli("trigger", "activate", "greet")
    assert show(system, "greet")["status"] == "active"
    taken = system.cli("trigger", "create", "greet", "--target", "greet", "--push", check=False)
    assert taken.returncode == 2
    assert "routine greet's own trigger" in taken.stderr


BROKEN = """
import os

from mainspring import Routine, on_schedule

if "MAINSPRING_CONTROL_FD" in os.environ:
    # Importable where it is registered, missing where it runs: every run fails to start.
    import a_dependency_missing_on_the_runner  # noqa: F401


class Broken(Routine):
    def run(self, tick=on_schedule(cron="0 0 1 1 *")) -> dict:
        return {}
"""


async def test_crash_loop_protection_switches_off_the_routines_triggers_through_their_records(
    deployment: Deployment, client: Client, tmp_path: Path
) -> None:
    deployment.extra_env["MAINSPRING_CRASH_LOOP_THRESHOLD"] = "3"
    deployment.start_all()
    system = deployment
    system.cli("routine", "create", str(write_routine(tmp_path / "b", BROKEN)), "--name", "broken")
    system.cli("trigger", "create", "kick", "--target", "broken", "--push")
    system.cli("trigger", "activate", "kick")

    for _ in range(3):
        run = await client.fire_trigger("kick")
        assert (await finished_run(client, run))["status"] == "failed"

    async def switched_off() -> dict[str, Any] | None:
        info = show(system, "kick")
        return info if info["status"] == "disabled" else None

    kick = await eventually(switched_off, timeout=60, what="the trigger to be switched off")
    assert kick["disabled_by"] == "crash_loop"
    assert kick["disabled_reason"].startswith("crash loop: 3 triggered runs in a row")
    assert not (await (await client.store()).get("broken")).enabled
    refused = system.cli("trigger", "fire", "kick", check=False)
    assert "trigger activate kick" in refused.stderr

    system.cli("routine", "enable", "broken")
    assert show(system, "kick")["status"] == "active"
