"""Named triggers' pure parts: definitions, where the ticker resumes, next fire times,
the dispatcher's firing decisions and the replay's verdicts, as tables of fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mainspring.client.trigger_replay import Recorded, Subject, changed_definition, horizon, replay
from mainspring.contract.messages import FireTrigger, PollCompleted, ScheduleFired
from mainspring.sdk.triggers import ManualTrigger, ScheduleTrigger
from mainspring.storage.named_triggers import (
    LastRun,
    NamedTrigger,
    TriggerError,
    activated,
    deactivated,
    new_trigger,
    newer_last_run,
    redefined,
    resume_cursor,
    upcoming,
)
from mainspring.storage.registry import InputSchema, RoutineDefinition
from mainspring_services.dispatcher import named

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def every_second(**changes: Any) -> NamedTrigger:
    trigger = new_trigger("beat", "greet", at(0), every="1s", payload={"city": "Oslo"})
    return trigger.model_copy(update=changes)


def greet(enabled: bool = True) -> RoutineDefinition:
    return RoutineDefinition(
        name="greet",
        version="v1",
        entrypoint="r.py:Greet",
        class_name="Greet",
        trigger_param="tick",
        trigger=ScheduleTrigger(cron="0 0 1 1 *"),
        inputs={"city": InputSchema(type="str", default="nowhere")},
        enabled=enabled,
        created_at=T0,
        updated_at=T0,
    )


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({}, "--cron EXPR, --every INTERVAL, or --push"),
        ({"cron": "61 * * * *"}, "trigger t:"),
        ({"every": "soon"}, "--every 'soon' is not an interval"),
        ({"cron": "* * * * *", "every": "1m"}, "give exactly one of --cron and --every"),
        ({"push": True, "cron": "* * * * *"}, "a push trigger fires only when called"),
        ({"every": "1m", "tz": "Mars/Olympus"}, "Mars/Olympus"),
        ({"every": "1m", "poll_fn": "no colon"}, "is not module:function"),
    ],
)
def test_a_bad_definition_is_one_line_naming_the_fix(flags: dict[str, Any], error: str) -> None:
    with pytest.raises(TriggerError) as raised:
        new_trigger("t", "greet", T0, **flags)
    assert error in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_new_trigger_is_inactive_and_a_timed_one_catches_up_once() -> None:
    trigger = every_second()
    assert trigger.status == "disabled"
    spec = trigger.schedule()
    assert spec is not None
    assert (spec.catchup, spec.overlap) == ("latest", "allow")
    assert new_trigger("p", "greet", T0, push=True).schedule() is None


@pytest.mark.parametrize(
    ("on_resume", "last_fired", "activated_s", "cursor"),
    [
        # First activation: nothing from before it fires.
        ("coalesce", None, 10.5, at(10.5)),
        # Re-activated after ticks 4..10 were missed: coalesce fires one (10), drop none.
        ("coalesce", at(3), 10.5, at(10) - timedelta(microseconds=1)),
        ("drop", at(3), 10.5, at(10.5)),
        # Activated long ago (a ticker restart): the cursor is the last fired tick.
        ("drop", at(30), 10.5, at(30)),
        ("coalesce", at(30), 10.5, at(30)),
        # A tick of an older trigger of the same name (before this one was created).
        ("coalesce", at(-5), 10.5, at(10.5)),
    ],
)
def test_where_the_ticker_resumes(
    on_resume: str, last_fired: datetime | None, activated_s: float, cursor: datetime
) -> None:
    trigger = every_second(on_resume=on_resume, status="active", activated_at=at(activated_s))
    assert resume_cursor(trigger, last_fired) == cursor


def test_reactivating_keeps_the_last_run_and_a_later_run_wins() -> None:
    off = deactivated(every_second(status="active"), at(5), "maintenance", "user")
    assert (off.status, off.disabled_reason, off.disabled_by) == (
        "disabled",
        "maintenance",
        "user",
    )
    on = activated(off, at(9), "drop")
    assert (on.status, on.activated_at, on.on_resume, on.disabled_by) == (
        "active",
        at(9),
        "drop",
        None,
    )
    older, newer = LastRun(run_id="a", run_at=at(1)), LastRun(run_id="b", run_at=at(2))
    kept = newer_last_run(newer.model_dump_json().encode(), older)
    assert LastRun.model_validate_json(kept).run_id == "b"


def test_next_fires_list_utc_and_zone_and_mark_the_dst_jump() -> None:
    trigger = new_trigger("early", "greet", T0, cron="30 2 * * *", tz="America/New_York").schedule()
    fires = upcoming(trigger, datetime(2027, 3, 12, tzinfo=UTC), 3)
    assert [f.local.isoformat() for f in fires] == [
        "2027-03-12T02:30:00-05:00",
        "2027-03-13T02:30:00-05:00",
        "2027-03-14T03:00:00-04:00",
    ]
    assert [f.utc.hour for f in fires] == [7, 7, 7]
    assert fires[0].dst_note is None
    assert fires[2].dst_note is not None
    assert "moved by DST" in fires[2].dst_note
    with pytest.raises(TriggerError, match="--next -1 is negative"):
        upcoming(trigger, T0, -1)


def fired_at(second: int) -> ScheduleFired:
    return ScheduleFired(
        routine="greet", scheduled_at=at(second), fired_at=at(second), trigger="beat"
    )


def test_a_tick_of_an_active_trigger_runs_its_target_with_the_default_payload() -> None:
    trigger = every_second(status="active")
    decision = named.decide_firing(trigger, greet(), named.tick_firing(trigger, fired_at(3)), at(3))
    (request,) = decision.requests
    assert request.inputs == {"city": "Oslo"}
    assert request.source == "trigger"
    assert request.attributes == {"trigger": "beat"}
    assert request.event["scheduled_at"] == at(3).isoformat()
    (row,) = decision.history
    assert (row.status, row.trigger, row.payload, row.run_id) == (
        "fired",
        "beat",
        {"city": "Oslo"},
        request.run_id,
    )


def test_a_push_fires_with_the_given_payload_else_the_default() -> None:
    trigger = every_second(status="active", type="push", every=None)
    given = FireTrigger(request_id="r1", trigger="beat", payload={"city": "Lima"}, requested_at=T0)
    default = FireTrigger(request_id="r2", trigger="beat", requested_at=T0)
    for fire, city in ((given, "Lima"), (default, "Oslo")):
        decision = named.decide_firing(trigger, greet(), named.push_firing(trigger, fire), T0)
        assert decision.requests[0].run_id == fire.request_id
        assert decision.requests[0].inputs == {"city": city}


@pytest.mark.parametrize(
    ("trigger", "definition", "status", "reason"),
    [
        (every_second(), greet(), "skipped", "trigger beat is inactive"),
        (every_second(status="active"), None, "failed", "target 'greet' is not registered"),
        (
            every_second(status="active", payload={"size": 3}),
            greet(),
            "failed",
            "unknown input 'size'",
        ),
    ],
)
def test_a_firing_that_cannot_run_says_why(
    trigger: NamedTrigger, definition: RoutineDefinition | None, status: str, reason: str
) -> None:
    decision = named.decide_firing(
        trigger, definition, named.tick_firing(trigger, fired_at(3)), at(3)
    )
    assert decision.requests == []
    (row,) = decision.history
    assert row.status == status
    assert reason in (row.reason or "")


@pytest.mark.parametrize(
    ("payload", "error", "status", "inputs"),
    [
        ({"city": "Bergen"}, None, "fired", {"city": "Bergen"}),
        (None, None, "skipped", None),
        (None, "boom", "failed", None),
    ],
)
def test_a_poll_result_fires_skips_or_fails(
    payload: dict[str, Any] | None, error: str | None, status: str, inputs: Any
) -> None:
    trigger = every_second(status="active", poll_fn="checks:new_orders")
    polled = PollCompleted(
        routine="greet",
        scheduled_at=at(3),
        payload=payload,
        error=error,
        finished_at=at(3),
        trigger="beat",
    )
    decision = named.decide_poll_result(trigger, greet(), polled, at(3))
    assert decision.history[0].status == status
    assert [r.inputs for r in decision.requests] == ([inputs] if inputs else [])


def market_summary_dag() -> RoutineDefinition:
    return RoutineDefinition(
        name="pipelines:process_order",
        version="v1",
        entrypoint="market_summary.py:ns",
        class_name="Dag",
        trigger_param="payload",
        trigger=ManualTrigger(),
        kind="dag",
        created_at=T0,
        updated_at=T0,
    )


def test_a_poll_result_for_a_dag_is_its_payload_not_run_inputs() -> None:
    # A DAG has no run() inputs: the dict reaches its source nodes by name, as `dag run
    # --payload` sends it; checking it against run() inputs refused every key.
    trigger = every_second(
        status="active", target="pipelines:process_order", poll_fn="market_summary:check_queue"
    )
    polled = PollCompleted(
        routine="pipelines:process_order",
        scheduled_at=at(3),
        payload={"message": "new order"},
        finished_at=at(3),
        trigger="beat",
    )
    decision = named.decide_poll_result(trigger, market_summary_dag(), polled, at(3))
    (request,) = decision.requests
    assert request.inputs == {}
    assert request.event["payload"] == {"message": "new order"}
    assert decision.history[0].status == "fired"


def test_a_six_field_cron_counts_seconds_first() -> None:
    trigger = new_trigger("queue_check", "greet", T0, cron="*/10 * * * * *")
    fires = [fire.utc for fire in upcoming(trigger.schedule(), at(5), 3)]
    assert fires == [at(10), at(20), at(30)]
    hourly = new_trigger("hourly", "greet", T0, cron="0 * * * *")
    assert [f.utc for f in upcoming(hourly.schedule(), at(5), 1)] == [at(3600)]


def test_a_redeclared_trigger_takes_the_code_and_keeps_its_activation() -> None:
    current = activated(new_trigger("q", "greet", T0, cron="0 * * * *"), at(5), None)
    declared = new_trigger("q", "other", at(9), cron="*/10 * * * * *", payload={"a": 1})
    changed = redefined(current, declared, at(9))
    assert (changed.status, changed.activated_at, changed.created_at) == ("active", at(5), T0)
    assert (changed.target, changed.cron, changed.payload) == ("other", "*/10 * * * * *", {"a": 1})
    assert changed.updated_at == at(9)
    same = new_trigger("q", "greet", at(9), cron="0 * * * *")
    assert redefined(current, same, at(9)) is current


def test_replay_lists_the_ticks_a_definition_would_fire_beside_what_fired() -> None:
    trigger = every_second(status="active")
    history = [
        {
            "fired_at": at(1).isoformat(),
            "scheduled_at": at(1).isoformat(),
            "status": "fired",
            "run_id": "x",
            "reason": None,
        }
    ]
    window = horizon(at(0.5), at(0.2), history)
    assert window.start == at(0.5)
    assert window.history_oldest == at(1)
    verdicts = replay(
        Subject("beat", "greet", trigger.schedule(), trigger), Recorded(), history, window, at(3.5)
    )
    assert [(v.at, v.would_run, v.recorded) for v in verdicts] == [
        (at(1), True, "fired: run x"),
        (at(2), True, "not fired then"),
        (at(3), True, "not fired then"),
    ]
    assert verdicts[0].payload == {"city": "Oslo"}


def test_replay_of_a_poll_trigger_uses_the_recorded_poll_results_and_calls_nothing() -> None:
    trigger = every_second(status="active", poll_fn="checks:new_orders")
    polls = [
        PollCompleted(
            routine="greet",
            scheduled_at=at(1),
            payload={"city": "Rome"},
            finished_at=at(1),
            trigger="beat",
        ),
        PollCompleted(routine="greet", scheduled_at=at(2), finished_at=at(2), trigger="beat"),
    ]
    window = horizon(at(0.5), None, [])
    verdicts = replay(
        Subject("beat", "greet", trigger.schedule(), trigger),
        Recorded(polls=polls),
        [],
        window,
        at(3.5),
    )
    assert [(v.would_run, v.why.split(":")[0]) for v in verdicts] == [
        (True, "poll returned a payload"),
        (False, "poll function returned None"),
        (False, "tick"),
    ]
    assert "a dry run calls no code" in verdicts[2].why


def test_a_changed_definition_replaces_the_timing_as_a_whole() -> None:
    current = every_second()
    changed = changed_definition("beat", current, {"cron": "*/5 * * * *"}, T0)
    assert (changed.cron, changed.every, changed.payload) == ("*/5 * * * *", None, {"city": "Oslo"})
    with pytest.raises(TriggerError, match="unknown key 'colour'"):
        changed_definition("beat", current, {"colour": "red"}, T0)
    with pytest.raises(TriggerError, match="must name its target"):
        changed_definition("new", None, {"every": "1m"}, T0)


def test_the_horizon_starts_where_the_stream_stopped_holding_messages() -> None:
    assert horizon(at(0), at(40), []).start == at(40)  # older messages aged out
    assert horizon(at(50), at(40), []).start == at(50)
    assert horizon(at(0), None, []).start == at(0)  # the stream dropped nothing
