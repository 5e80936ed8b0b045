"""How the ticker arms routines as the registry changes, driven with fixed times.

These drive the Ticker's in-memory side only (arming and planning take `now`); publishing
and persistence are proven end to end in tests/e2e/test_schedules.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mainspring.sdk.triggers import CatchUp, ScheduleTrigger
from mainspring.storage.named_triggers import NamedTrigger, OnResume, new_trigger
from mainspring.storage.registry import RoutineDefinition
from mainspring_services.ticker.core import next_fire
from mainspring_services.ticker.settings import TickerSettings
from mainspring_services.ticker.timers import NAMED, Ticker

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def routine(
    every: str = "10s",
    version: str = "v1",
    enabled: bool = True,
    updated: float = 0,
    name: str = "r",
    catchup: CatchUp = "latest",
) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version=version,
        entrypoint="r.py:R",
        class_name="R",
        trigger_param="tick",
        trigger=ScheduleTrigger(every=every, catchup=catchup),
        enabled=enabled,
        created_at=T0,
        updated_at=at(updated),
    )


def fire(ticker: Ticker, now: datetime) -> list[datetime]:
    """Plan what is due and advance cursors as a successful publish would."""
    fired = []
    for name, armed, plan in ticker.plan_due(now):
        fired.extend(plan.fire)
        assert plan.cursor is not None
        ticker.cursors[name] = plan.cursor
        ticker.arm(name, next_fire(armed.spec, plan.cursor), armed.generation)
    return fired


def new_ticker() -> Ticker:
    return Ticker(TickerSettings(nats_url="nats://unused"))


def test_update_without_timing_change_neither_resets_nor_doubles() -> None:
    ticker = new_ticker()
    ticker.on_definition("r", routine(), at(1))
    assert ticker.next_due() == at(10)
    assert fire(ticker, at(10.1)) == [at(10)]
    # A code update at 12s: same schedule, so the armed 20s tick stays the only one.
    ticker.on_definition("r", routine(version="v2", updated=12), at(12))
    assert fire(ticker, at(15)) == []
    assert fire(ticker, at(20.1)) == [at(20)]
    assert fire(ticker, at(20.5)) == []
    armed = ticker.armed["r"].definition
    assert armed is not None
    assert armed.version == "v2"


def test_changed_timing_rearms_from_now() -> None:
    ticker = new_ticker()
    ticker.on_definition("r", routine(), at(1))
    assert fire(ticker, at(10.1)) == [at(10)]
    ticker.on_definition("r", routine(every="1m", updated=12), at(12))
    assert fire(ticker, at(20.1)) == []  # the old 20s tick is stale
    assert ticker.next_due() == at(60)


def test_disable_and_delete_drop_the_routine_and_enable_does_not_backfill() -> None:
    ticker = new_ticker()
    ticker.on_definition("r", routine(catchup="all"), at(1))
    assert fire(ticker, at(10.1)) == [at(10)]
    ticker.on_definition("r", routine(enabled=False, updated=11, catchup="all"), at(11))
    assert ticker.next_due() is None
    assert fire(ticker, at(40)) == []
    ticker.on_definition("r", routine(updated=45, catchup="all"), at(45))
    assert fire(ticker, at(50.1)) == [at(50)]  # not 20, 30, 40: those were disabled
    ticker.on_definition("r", None, at(51))
    assert ticker.next_due() is None
    assert fire(ticker, at(70)) == []


def test_restart_with_saved_cursor_catches_up_by_policy() -> None:
    ticker = new_ticker()
    ticker.cursors["r"] = at(10)  # what load_cursors read from the TICKER bucket
    ticker.on_definition("r", routine(), at(45))
    assert ticker.next_due() == at(20)
    assert fire(ticker, at(45)) == [at(40)]  # latest: the newest missed tick once
    assert ticker.next_due() == at(50)


def test_deletion_by_key_finds_a_name_the_key_spells_differently() -> None:
    ticker = new_ticker()
    ticker.on_definition("team_r", routine(name="team/r"), at(1))
    assert "team/r" in ticker.armed
    ticker.on_definition("team_r", None, at(2))
    assert ticker.armed == {}


def named(status: str, activated: float, on_resume: OnResume = "coalesce") -> NamedTrigger:
    trigger = new_trigger("beat", "r", T0, every="10s", on_resume=on_resume)
    return trigger.model_copy(update={"status": status, "activated_at": at(activated)})


def test_a_named_trigger_ticks_while_active_and_coalesces_what_it_missed_while_off() -> None:
    ticker = new_ticker()
    ticker.on_named_trigger("def.beat", named("disabled", 0), at(0))
    assert fire(ticker, at(25)) == []  # created inactive: nothing armed
    ticker.on_named_trigger("def.beat", named("active", 25), at(25))
    assert fire(ticker, at(30.5)) == [at(30)]  # nothing from before the first activation
    armed = ticker.armed[NAMED + "beat"]
    assert (armed.trigger, armed.target, armed.definition) == ("beat", "r", None)

    ticker.on_named_trigger("def.beat", named("disabled", 25), at(31))
    assert fire(ticker, at(75)) == []
    # Ticks 40..70 were missed while off: one firing, the latest of them, then on time.
    ticker.on_named_trigger("def.beat", named("active", 75), at(75))
    assert fire(ticker, at(75.2)) == [at(70)]
    assert fire(ticker, at(80.2)) == [at(80)]

    ticker.on_named_trigger("def.beat", named("disabled", 75), at(81))
    ticker.on_named_trigger("def.beat", named("active", 125, "drop"), at(125))
    assert fire(ticker, at(125.2)) == []  # drop: 90..120 never fire
    assert fire(ticker, at(130.2)) == [at(130)]

    ticker.on_named_trigger("def.beat", None, at(131))  # deleted
    assert fire(ticker, at(200)) == []
