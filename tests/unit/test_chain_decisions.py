"""Completion triggers, loop limits and crash-loop counting: the dispatcher's pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mainspring.contract.messages import CHAIN_LIMIT, RunCompleted, TriggerRecorded
from mainspring.sdk.triggers import CompletionTrigger, ScheduleTrigger
from mainspring.storage.registry import InputSchema, RoutineDefinition, RoutineOptions
from mainspring_services.dispatcher import completions, core, crash_loop

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def definition(
    name: str = "downstream",
    *,
    upstream: str = "upstream",
    status: Any = "any",
    max_hops: int | None = None,
    enabled: bool = True,
    updated_at: datetime = CREATED,
    inputs: dict[str, InputSchema] | None = None,
    defaults: dict[str, Any] | None = None,
) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version="v1",
        entrypoint="routine.py:Downstream",
        class_name="Downstream",
        trigger_param="done",
        trigger=CompletionTrigger(routine=upstream, status=status),
        inputs=inputs or {},
        defaults=defaults or {},
        options=RoutineOptions(max_hops=max_hops),
        enabled=enabled,
        disabled_reason=None if enabled else "by user",
        created_at=CREATED,
        updated_at=updated_at,
    )


def completed(
    routine: str = "upstream",
    status: Any = "completed",
    *,
    run_id: str = "run-1",
    hop: int = 0,
    chain: list[str] | None = None,
    phase: Any = "run",
    source: Any = "trigger",
) -> RunCompleted:
    return RunCompleted(
        run_id=run_id,
        routine=routine,
        run_number=4,
        status=status,
        outputs={"rows": 10},
        hop=hop,
        chain=chain or [],
        phase=phase,
        source=source,
        finished_at=NOW,
    )


@pytest.mark.parametrize(
    ("trigger_status", "run_status", "fires"),
    [
        ("any", "completed", True),
        ("any", "failed", True),
        ("any", "cancelled", True),
        ("completed", "completed", True),
        ("completed", "failed", False),
        ("failed", "failed", True),
        ("failed", "completed", False),
        ("cancelled", "cancelled", True),
        ("cancelled", "failed", False),
    ],
)
def test_completion_fires_on_matching_status(
    trigger_status: str, run_status: str, fires: bool
) -> None:
    decision = completions.decide_completion(
        [definition(status=trigger_status)], completed(status=run_status), NOW, max_hops=8
    )

    assert len(decision.requests) == int(fires)
    assert [h.status for h in decision.history] == (["fired"] if fires else [])


def test_completion_event_carries_upstream_result_lineage_and_chain() -> None:
    upstream = completed(run_id="r-b", hop=1, chain=["a:r-a"])

    [request] = completions.decide_completion([definition()], upstream, NOW, max_hops=8).requests

    assert request.trigger_kind == "completion"
    assert request.source == "trigger"
    assert request.event["routine"] == "upstream"
    assert request.event["run_id"] == "r-b"
    assert request.event["outputs"] == {"rows": 10}
    assert request.event["status"] == "completed"
    assert request.event["run_number"] == 4
    assert request.hop == 2
    assert request.parent_run_id == "r-b"
    assert request.chain == ["a:r-a", "upstream:r-b"]
    assert request.run_id == core.run_id_for("downstream", "completion:r-b")


def test_other_routines_and_other_trigger_kinds_do_not_fire() -> None:
    scheduled = definition().model_copy(update={"trigger": ScheduleTrigger(every="1m")})
    unrelated = definition("other", upstream="someone-else")

    decision = completions.decide_completion([scheduled, unrelated], completed(), NOW, max_hops=8)

    assert decision.requests == []
    assert decision.history == []


def test_disabled_trigger_is_skipped_with_reason() -> None:
    decision = completions.decide_completion(
        [definition(enabled=False)], completed(), NOW, max_hops=8
    )

    assert decision.requests == []
    assert [(h.status, h.reason) for h in decision.history] == [
        ("skipped", "trigger disabled: by user")
    ]


@pytest.mark.parametrize(
    ("upstream_hop", "own_max_hops", "global_max_hops", "blocked"),
    [
        (0, None, 8, False),
        (7, None, 8, False),  # the new run is hop 8: allowed
        (8, None, 8, True),  # hop 9 > 8
        (2, 3, 8, False),  # hop 3 == own limit
        (3, 3, 8, True),  # own limit wins over the global one
        (3, 10, 2, False),  # ... in both directions
        (0, 0, 8, True),  # max_hops = 0: never triggered by a completion
        (5, None, 5, True),  # MAINSPRING_MAX_HOPS
    ],
)
def test_hop_limit(
    upstream_hop: int, own_max_hops: int | None, global_max_hops: int, blocked: bool
) -> None:
    decision = completions.decide_completion(
        [definition(max_hops=own_max_hops)],
        completed(hop=upstream_hop),
        NOW,
        max_hops=global_max_hops,
    )

    assert len(decision.requests) == int(not blocked)
    assert [h.status for h in decision.history] == ["loop_blocked" if blocked else "fired"]


def test_loop_blocked_records_the_chain_that_caused_it_and_publishes_no_run() -> None:
    loop = definition("a", upstream="a", max_hops=3)
    chain = ["a:00000000-1", "a:00000000-2", "a:00000000-3"]

    decision = completions.decide_completion(
        [loop], completed("a", run_id="11111111-4", hop=3, chain=chain), NOW, max_hops=8
    )

    assert decision.requests == []
    assert decision.refused == []
    [blocked] = decision.history
    assert blocked.status == "loop_blocked"
    assert blocked.run_id is None
    assert blocked.chain == [*chain, "a:11111111-4"]
    assert blocked.reason is not None
    assert "hop 4 exceeds max_hops 3" in blocked.reason
    assert "a:00000000 -> a:00000000 -> a:00000000 -> a:11111111" in blocked.reason


def test_chain_is_bounded_keeping_the_newest_ancestors() -> None:
    chain = [f"r:{i}" for i in range(CHAIN_LIMIT)]

    extended = core.extend_chain(chain, "r", "last")

    assert len(extended) == CHAIN_LIMIT
    assert extended[-1] == "r:last"
    assert extended[0] == "r:1"


def test_redelivered_completion_decides_the_same_run_ids() -> None:
    routines = [definition("b"), definition("c")]

    first = completions.decide_completion(routines, completed(), NOW, max_hops=8)
    again = completions.decide_completion(
        routines, completed(), NOW + timedelta(seconds=5), max_hops=8
    )

    assert [r.message_id() for r in first.requests] == [r.message_id() for r in again.requests]
    assert len({r.run_id for r in first.requests}) == 2


# --- crash loop -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase", "source", "outcome"),
    [
        ("failed", "start", "trigger", "start_failed"),
        ("failed", "start", "manual", "ignored"),  # a person sees the error themselves
        ("failed", "start", "api", "ignored"),
        ("failed", "start", None, "ignored"),  # external workflows and refused manual runs
        ("cancelled", "start", "trigger", "ignored"),
        ("failed", "run", "trigger", "started"),  # run() raised: the code does start
        ("completed", "run", "manual", "started"),
        ("cancelled", "run", "trigger", "started"),
    ],
)
def test_start_outcome(status: str, phase: str, source: str | None, outcome: str) -> None:
    assert crash_loop.start_outcome(completed(status=status, phase=phase, source=source)) == outcome


@pytest.mark.parametrize(
    ("status", "run_id", "outcome", "key"),
    [
        ("failed", None, "start_failed", "trigger:r:k:failed"),  # a poll function raised
        # a refused run: keyed by its run id, like its failed RunCompleted, so counted once
        ("failed", "r-1", "start_failed", "r-1"),
        ("fired", None, "ignored", "trigger:r:k:fired"),
        ("loop_blocked", None, "ignored", "trigger:r:k:loop_blocked"),
        ("skipped", None, "ignored", "trigger:r:k:skipped"),
    ],
)
def test_trigger_outcome(status: str, run_id: str | None, outcome: str, key: str) -> None:
    recorded = TriggerRecorded(
        routine="r", kind="poll", status=status, event_key="k", fired_at=NOW, run_id=run_id
    )
    assert crash_loop.trigger_outcome(recorded) == (outcome, key)


def replay(
    events: list[tuple[crash_loop.StartOutcome, str]],
    threshold: int = 3,
    routine: RoutineDefinition | None = None,
) -> list[crash_loop.CrashVerdict]:
    """Feed (outcome, key) pairs through decide_crash_loop, carrying the state along."""
    routine = routine or definition()
    state = crash_loop.CrashLoopState()
    verdicts = []
    for outcome, key in events:
        verdict = crash_loop.decide_crash_loop(
            routine,
            state,
            outcome,
            key,
            "ImportError: no module named x",
            threshold,
            NOW,
        )
        verdicts.append(verdict)
        state = verdict.state
        if verdict.disable_reason:
            routine = routine.model_copy(update={"enabled": False})
    return verdicts


@pytest.mark.parametrize(
    ("events", "disabled_at", "final_count"),
    [
        ([("start_failed", "1"), ("start_failed", "2"), ("start_failed", "3")], 2, 3),
        ([("start_failed", "1"), ("start_failed", "2")], None, 2),
        # a start in between resets: not "in a row"
        (
            [("start_failed", "1"), ("start_failed", "2"), ("started", "s"), ("start_failed", "3")],
            None,
            1,
        ),
        # a redelivered failure counts once
        ([("start_failed", "1"), ("start_failed", "1"), ("start_failed", "2")], None, 2),
        # manual failures neither count nor reset
        (
            [("start_failed", "1"), ("ignored", "m"), ("start_failed", "2"), ("start_failed", "3")],
            3,
            3,
        ),
        # already disabled: no second disable
        ([("start_failed", str(i)) for i in range(5)], 2, 3),
    ],
)
def test_consecutive_start_failures_disable_at_threshold(
    events: list[tuple[crash_loop.StartOutcome, str]], disabled_at: int | None, final_count: int
) -> None:
    verdicts = replay(events)

    disabling = [i for i, v in enumerate(verdicts) if v.disable_reason]
    assert disabling == ([] if disabled_at is None else [disabled_at])
    assert len(verdicts[-1].state.failures) == final_count


def test_disable_records_a_disabled_trigger_event_with_the_reason() -> None:
    verdict = crash_loop.decide_crash_loop(
        definition(),
        crash_loop.CrashLoopState(CREATED.isoformat(), ("a", "b")),
        "start_failed",
        "c",
        "cannot import routine.py: ModuleNotFoundError",
        3,
        NOW,
        run_id="c",
    )

    assert verdict.disable_reason is not None
    assert "3 triggered runs in a row failed to start" in verdict.disable_reason
    assert "ModuleNotFoundError" in verdict.disable_reason
    assert "mainspring routine create" in verdict.disable_reason
    [recorded] = verdict.history
    assert recorded.status == "disabled"
    assert recorded.kind == "completion"
    assert recorded.run_id == "c"
    assert recorded.reason == verdict.disable_reason


def test_updating_or_enabling_the_routine_rearms_the_count() -> None:
    stale = crash_loop.CrashLoopState(CREATED.isoformat(), ("a", "b"))
    rearmed = definition(updated_at=CREATED + timedelta(hours=1))

    verdict = crash_loop.decide_crash_loop(rearmed, stale, "start_failed", "c", "boom", 3, NOW)

    assert verdict.disable_reason is None
    assert verdict.state.failures == ("c",)
    assert verdict.state.epoch == rearmed.updated_at.isoformat()


def test_a_start_without_prior_failures_changes_nothing_to_store() -> None:
    state = crash_loop.CrashLoopState()

    assert (
        crash_loop.decide_crash_loop(definition(), state, "started", "r", None, 3, NOW).state
        is state
    )


def test_unknown_routine_is_not_counted() -> None:
    state = crash_loop.CrashLoopState()

    verdict = crash_loop.decide_crash_loop(None, state, "start_failed", "r", "boom", 1, NOW)

    assert verdict.state is state
    assert verdict.disable_reason is None


@pytest.mark.parametrize(
    "stored",
    [b"", b"not json", b'{"epoch": "e", "failures": ["a"]}', b"[1, 2]"],
)
def test_crash_loop_state_round_trips_and_tolerates_garbage(stored: bytes) -> None:
    state = crash_loop.CrashLoopState.from_json(stored)

    assert crash_loop.CrashLoopState.from_json(state.to_json()) == state
