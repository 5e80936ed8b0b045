"""The dispatcher's timed-trigger decisions: overlap policies and poll results, as tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.contract.messages import PollCompleted, ScheduleFired
from mainspring.sdk.triggers import Overlap, PollTrigger, ScheduleTrigger
from mainspring.storage.registry import InputSchema, RoutineDefinition
from mainspring_services.dispatcher import core, timed

NOW = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)


def tick(second: int) -> datetime:
    return datetime(2025, 6, 1, 12, 0, second, tzinfo=UTC)


def routine(trigger: ScheduleTrigger | PollTrigger, enabled: bool = True) -> RoutineDefinition:
    return RoutineDefinition(
        name="r",
        version="v1",
        entrypoint="r.py:R",
        class_name="R",
        trigger_param="event",
        trigger=trigger,
        inputs={"count": InputSchema(type="int", default=0)},
        enabled=enabled,
        created_at=NOW,
        updated_at=NOW,
    )


def scheduled(overlap: Overlap, second: int) -> core.Decision:
    definition = routine(ScheduleTrigger(every="1s", overlap=overlap))
    fired = ScheduleFired(routine="r", scheduled_at=tick(second), fired_at=tick(second))
    return timed.decide_schedule(definition, fired, NOW)


def run_of(second: int) -> str:
    return core.run_id_for("r", f"schedule:{tick(second).isoformat()}")


@pytest.mark.parametrize(
    ("policy", "published", "history", "active", "buffered", "cancelled"),
    [
        ("allow", [1], ["fired"], [0], None, []),
        ("skip", [], ["skipped"], [0], None, []),
        ("buffer_one", [], [], [0], 1, []),
        ("cancel_previous", [1], ["fired"], [1], None, [0]),
    ],
)
def test_second_tick_while_first_runs(
    policy: Overlap,
    published: list[int],
    history: list[str],
    active: list[int],
    buffered: int | None,
    cancelled: list[int],
) -> None:
    first, state, _ = timed.gate_run(policy, timed.OverlapState(), scheduled(policy, 0), NOW)
    assert [r.run_id for r in first.requests] == [run_of(0)]
    if policy == "allow":
        state = timed.OverlapState(active=(run_of(0),))  # allow tracks nothing; compare alike

    decision, state, cancels = timed.gate_run(policy, state, scheduled(policy, 1), NOW)

    assert [r.run_id for r in decision.requests] == [run_of(s) for s in published]
    assert [h.status for h in decision.history] == history
    assert state.active == tuple(run_of(s) for s in active)
    assert (state.pending.request.run_id if state.pending else None) == (
        run_of(buffered) if buffered is not None else None
    )
    assert [c.run_id for c in cancels] == [run_of(s) for s in cancelled]
    if policy == "skip":
        assert decision.history[0].reason == f"run {run_of(0)} is still active (overlap=skip)"


def test_buffer_one_keeps_one_and_starts_it_when_the_active_run_completes() -> None:
    state = timed.OverlapState()
    for second in (0, 1, 2):
        decision, state, _ = timed.gate_run(
            "buffer_one", state, scheduled("buffer_one", second), NOW
        )
    assert [h.status for h in decision.history] == ["skipped"]
    assert "already buffered" in (decision.history[0].reason or "")
    assert state.pending is not None
    assert state.pending.request.run_id == run_of(1)

    started, state = timed.release_run(state, run_of(0), NOW)

    assert [r.run_id for r in started.requests] == [run_of(1)]
    assert [h.status for h in started.history] == ["fired"]
    assert state == timed.OverlapState(active=(run_of(1),))
    done, state = timed.release_run(state, run_of(1), NOW)
    assert done == core.Decision()
    assert state == timed.OverlapState()


def test_redelivered_tick_republishes_instead_of_skipping_itself() -> None:
    decision = scheduled("skip", 0)
    _, state, _ = timed.gate_run("skip", timed.OverlapState(), decision, NOW)
    again, same, _ = timed.gate_run("skip", state, decision, NOW)
    assert again == decision
    assert same == state


def test_completion_of_an_unknown_or_cancelled_run_changes_nothing() -> None:
    state = timed.OverlapState(active=(run_of(1),))
    decision, same = timed.release_run(state, run_of(0), NOW)
    assert decision == core.Decision()
    assert same == state


POLL = PollTrigger(fn="r:check", every="10s")


@pytest.mark.parametrize(
    ("result", "status", "reason", "inputs"),
    [
        ({"payload": {"count": 3, "extra": "x"}}, "fired", None, {"count": 3}),
        ({"payload": {}}, "fired", None, {"count": 0}),
        ({"payload": None}, "skipped", "poll function returned None", None),
        ({"error": "ValueError: no feed\nTraceback ..."}, "failed", "ValueError: no feed", None),
        ({"payload": {"count": "many"}}, "failed", "poll payload does not fit run()", None),
    ],
)
def test_poll_results(
    result: dict[str, object], status: str, reason: str | None, inputs: dict[str, int] | None
) -> None:
    polled = PollCompleted.model_validate(
        {"routine": "r", "scheduled_at": tick(0), "finished_at": NOW, **result}
    )
    decision = timed.decide_poll_result(routine(POLL), polled, NOW)
    [history] = decision.history
    assert history.status == status
    assert history.kind == "poll"
    assert history.scheduled_at == tick(0)
    if reason is None:
        assert history.reason is None
    else:
        assert history.reason is not None
        assert history.reason.startswith(reason)
    if inputs is None:
        assert decision.requests == []
    else:
        [request] = decision.requests
        assert request.inputs == inputs
        assert request.trigger_kind == "poll"
        assert request.event == {"scheduled_at": tick(0).isoformat(), "payload": result["payload"]}
        assert history.run_id == request.run_id


def test_poll_tick_asks_a_runner_only_for_enabled_poll_routines() -> None:
    fired = ScheduleFired(routine="r", scheduled_at=tick(0), fired_at=tick(0))
    asked = timed.poll_request(routine(POLL), fired)
    assert asked is not None
    assert asked.fn == "r:check"
    assert asked.timeout_s == 60.0
    assert asked.message_id() == f"poll:r:{tick(0).isoformat()}"
    assert timed.poll_request(routine(POLL, enabled=False), fired) is None
    assert timed.poll_request(routine(ScheduleTrigger(every="1s")), fired) is None


def test_buffered_tick_of_a_disabled_routine_is_recorded_skipped_not_started() -> None:
    state = timed.OverlapState()
    for second in (0, 1):
        _, state, _ = timed.gate_run("buffer_one", state, scheduled("buffer_one", second), NOW)

    decision, state = timed.release_run(state, run_of(0), NOW, still_enabled=False)

    assert decision.requests == []
    assert state == timed.OverlapState()
    [history] = decision.history
    assert history.status == "skipped"
    assert history.scheduled_at == tick(1)
    assert history.reason is not None
    assert "trigger disabled" in history.reason
