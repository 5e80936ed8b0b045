"""Every dispatcher subscriber driven on FastStream's TestNatsBroker with fake parts.

Each test publishes one message on the subject a subscriber consumes and checks what it
published and wrote. Acks, redelivery and dedup are the bus's and are proven end to end;
here the contract is: this subject, this model, these effects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker

from mainspring.contract import subjects
from mainspring.contract.messages import (
    CancelRun,
    DatasetAppended,
    PollCompleted,
    RequestRun,
    RunCompleted,
    RunOptions,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.runtime.service import STREAM
from mainspring.sdk.triggers import (
    CompletionTrigger,
    DatasetAppendTrigger,
    PollTrigger,
    ScheduleTrigger,
)
from mainspring.storage.capacity import RunnerCapacity
from mainspring.storage.registry import InputSchema, RoutineCatalog, RoutineDefinition
from mainspring_services.dispatcher.dispatch import Dispatcher
from mainspring_services.dispatcher.handlers import (
    register,
    register_datasets,
    register_named,
    register_timed,
)
from mainspring_services.dispatcher.ports import DispatcherParts
from mainspring_services.dispatcher.settings import DispatcherSettings
from tests.contract import fakes

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def routine(name: str, trigger: Any, **changes: Any) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version="d1",
        entrypoint=f"{name}.py:R",
        class_name="R",
        trigger_param="event",
        trigger=trigger,
        inputs={"steps": InputSchema(type="int", default=3)},
        created_at=NOW,
        updated_at=NOW,
        **changes,
    )


HELLO = routine("hello", ScheduleTrigger(every="1m"))
AFTER_HELLO = routine("after-hello", CompletionTrigger(routine="hello", status="completed"))
AFTER_ETL = routine("after-etl", CompletionTrigger(routine="etl", status="any"))
EMBED = routine("embed", DatasetAppendTrigger(dataset="photos", batch_rows=10))
WATCH = routine("watch", PollTrigger(every="1m", fn="watch.py:check"))
IN_MEMORY = routine("quick", ScheduleTrigger(every="1h"))
IN_MEMORY = IN_MEMORY.model_copy(
    update={"options": IN_MEMORY.options.model_copy(update={"allow_in_memory": True})}
)


@dataclass
class Wired:
    """A dispatcher on a test broker, with what it published per subject."""

    broker: NatsBroker
    parts: DispatcherParts
    published: dict[str, list[dict[str, Any]]]
    dispatcher: Dispatcher

    async def send(self, subject: str, body: bytes) -> None:
        await self.broker.publish(body, subject)

    def requests(self, subject: str = subjects.RUN_REQUESTED) -> list[RequestRun]:
        return [RequestRun.model_validate(b) for b in self.published.get(subject, [])]


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    parts = fakes.dispatcher_parts(HELLO, AFTER_HELLO, AFTER_ETL, EMBED, WATCH, IN_MEMORY)
    broker = NatsBroker()
    catalog = RoutineCatalog()
    dispatcher = Dispatcher(broker, parts, catalog, DispatcherSettings(crash_loop_threshold=2))
    register(broker, dispatcher)
    register_datasets(broker, dispatcher)
    register_timed(broker, dispatcher)
    register_named(broker, dispatcher)
    published: dict[str, list[dict[str, Any]]] = {}
    captured = [
        subjects.RUN_REQUESTED,
        subjects.RUN_IN_MEMORY,
        subjects.TRIGGER_RECORDED,
        subjects.POLL_REQUESTED,
        subjects.RUN_COMPLETED_ANY,
        f"{subjects.DEAD_LETTER_PREFIX}.>",
    ]
    for subject in captured:

        @broker.subscriber(subject, stream=STREAM)
        async def capture(body: dict[str, Any], message: NatsMessage) -> None:
            published.setdefault(message.raw_message.subject, []).append(body)

    await catalog.start(parts.registry)
    try:
        async with TestNatsBroker(broker) as test_broker:
            yield Wired(test_broker, parts, published, dispatcher)
    finally:
        await catalog.stop()


async def test_a_schedule_tick_requests_a_numbered_run(wired: Wired) -> None:
    fired = ScheduleFired(routine="hello", scheduled_at=NOW, fired_at=NOW)
    await wired.send(subjects.SCHEDULE_FIRED, fired.model_dump_json().encode())

    (request,) = wired.requests()
    assert (request.routine, request.run_number, request.trigger_kind) == ("hello", 1, "schedule")


async def test_a_poll_routines_tick_asks_a_runner_to_poll(wired: Wired) -> None:
    fired = ScheduleFired(routine="watch", scheduled_at=NOW, fired_at=NOW)
    await wired.send(subjects.SCHEDULE_FIRED, fired.model_dump_json().encode())

    assert [b["routine"] for b in wired.published[subjects.POLL_REQUESTED]] == ["watch"]
    assert not wired.requests()


async def test_a_poll_result_with_a_payload_starts_a_run(wired: Wired) -> None:
    polled = PollCompleted(routine="watch", scheduled_at=NOW, payload={}, finished_at=NOW)
    await wired.send(subjects.POLL_COMPLETED, polled.model_dump_json().encode())

    assert [r.routine for r in wired.requests()] == ["watch"]


async def test_a_completion_requests_its_downstream_run(wired: Wired) -> None:
    done = RunCompleted(run_id="h-1", routine="hello", status="completed", finished_at=NOW)
    await wired.send(done.subject(), done.model_dump_json().encode())

    (request,) = wired.requests()
    assert (request.routine, request.hop, request.parent_run_id) == ("after-hello", 1, "h-1")


async def test_an_external_workflows_completion_fires_on_complete_of_its_name(
    wired: Wired,
) -> None:
    done = RunCompleted(run_id="etl-7", routine="etl", status="failed", finished_at=NOW)
    await wired.send(
        subjects.external_completed_subject("etl", "failed"), done.model_dump_json().encode()
    )

    assert [(r.routine, r.parent_run_id) for r in wired.requests()] == [("after-etl", "etl-7")]


async def test_failed_triggered_starts_count_towards_the_crash_loop(wired: Wired) -> None:
    registry = wired.parts.registry
    assert isinstance(registry, fakes.Registry)
    for n in (1, 2):
        failed = RunCompleted(
            run_id=f"h-{n}",
            routine="hello",
            status="failed",
            phase="start",
            source="trigger",
            error="ImportError: no module named x",
            finished_at=NOW,
        )
        await wired.send(failed.subject(), failed.model_dump_json().encode())

    assert [(name, on, by) for name, on, _, by in registry.switched] == [
        ("hello", False, "crash_loop")
    ]


async def test_a_failed_firing_counts_like_a_failed_start(wired: Wired) -> None:
    registry = wired.parts.registry
    assert isinstance(registry, fakes.Registry)
    for n in (1, 2):
        recorded = TriggerRecorded(
            routine="watch",
            kind="poll",
            status="failed",
            event_key=f"poll:{n}",
            fired_at=NOW,
            reason="poll function raised",
        )
        await wired.send(subjects.TRIGGER_RECORDED, recorded.model_dump_json().encode())

    assert [(name, by) for name, _, _, by in registry.switched] == [("watch", "crash_loop")]


async def test_an_append_fires_a_dataset_routine_and_moves_its_cursor(wired: Wired) -> None:
    appended = DatasetAppended(
        dataset="photos", from_version=0, to_version=1, added_records=12, table_records=12
    )
    await wired.send(subjects.DATASET_APPENDED, appended.model_dump_json().encode())

    (request,) = wired.requests()
    assert (request.routine, request.event["to_version"]) == ("embed", 1)
    cursor, _ = await wired.parts.cursors.load("embed")
    assert cursor is not None
    assert (cursor.fired_version, cursor.seen_version) == (1, 1)


async def test_a_cancel_marks_the_run(wired: Wired) -> None:
    cancel = CancelRun(run_id="r-9", requested_by="ana")
    await wired.send(subjects.RUN_CANCEL, cancel.model_dump_json().encode())

    ledger = wired.parts.ledger
    assert isinstance(ledger, fakes.Ledger)
    assert ledger.cancelled == {"r-9": "ana"}


async def test_an_in_memory_submit_is_marked_and_handed_to_its_caller(wired: Wired) -> None:
    submit = SubmitRun(request_id="m-1", routine="quick", options=RunOptions(execution="in_memory"))
    await wired.send(subjects.RUN_SUBMITTED, submit.model_dump_json().encode())

    assert [r.run_id for r in wired.requests(subjects.RUN_IN_MEMORY)] == ["m-1"]
    assert not wired.requests()
    assert await wired.parts.ledger.is_in_memory("m-1")


async def test_an_in_memory_report_is_settled_and_published_only_for_in_memory_runs(
    wired: Wired,
) -> None:
    await wired.parts.ledger.mark_in_memory("m-2")
    for run_id in ("m-2", "queued-run"):
        reported = RunCompleted(run_id=run_id, routine="quick", status="completed")
        await wired.send(subjects.RUN_IN_MEMORY_REPORTED, reported.model_dump_json().encode())

    outcomes = wired.published[subjects.run_completed_subject("quick", "completed")]
    assert [o["run_id"] for o in outcomes] == ["m-2"]


@pytest.mark.parametrize(
    "subject",
    [
        subjects.RUN_SUBMITTED,
        subjects.SCHEDULE_FIRED,
        subjects.DATASET_APPENDED,
        subjects.run_completed_subject("hello", "completed"),
        subjects.external_completed_subject("etl", "failed"),
        subjects.RUN_IN_MEMORY_REPORTED,
        subjects.RUN_CANCEL,
        subjects.TRIGGER_RECORDED,
        subjects.POLL_COMPLETED,
        subjects.TRIGGER_FIRE,
    ],
)
async def test_every_subscriber_parks_a_malformed_message(wired: Wired, subject: str) -> None:
    await wired.send(subject, b'{"routine": 5, "run_id": []}')

    (parked,) = wired.published[subjects.dead_letter_subject(subject)]
    assert parked == {"routine": 5, "run_id": []}
    assert not wired.requests()


async def test_a_routine_fired_past_max_fires_is_paused_and_fires_no_more() -> None:
    busy = routine("busy", ScheduleTrigger(every="1s", overlap="allow"))
    busy = busy.model_copy(update={"options": busy.options.model_copy(update={"max_fires": 2})})
    parts = fakes.dispatcher_parts(busy)
    broker = NatsBroker()
    catalog = RoutineCatalog()
    register(broker, Dispatcher(broker, parts, catalog, DispatcherSettings()))
    requested: list[dict[str, Any]] = []
    recorded: list[dict[str, Any]] = []

    @broker.subscriber(subjects.RUN_REQUESTED, stream=STREAM)
    async def capture_requests(body: dict[str, Any]) -> None:
        requested.append(body)

    @broker.subscriber(subjects.TRIGGER_RECORDED, stream=STREAM)
    async def capture_history(body: dict[str, Any]) -> None:
        recorded.append(body)

    await catalog.start(parts.registry)
    try:
        async with TestNatsBroker(broker) as test_broker:
            for second in range(5):
                tick = NOW.replace(second=second)
                fired = ScheduleFired(routine="busy", scheduled_at=tick, fired_at=tick)
                await test_broker.publish(fired.model_dump_json().encode(), subjects.SCHEDULE_FIRED)
    finally:
        await catalog.stop()

    assert len(requested) == 3, "the third run trips the breaker; later ticks find it paused"
    registry = parts.registry
    assert isinstance(registry, fakes.Registry)
    ((name, on, reason, by),) = registry.switched
    assert (name, on, by) == ("busy", False, "circuit_breaker")
    assert reason is not None
    assert "3 triggered runs within 60s, over max_fires=2" in reason
    assert [r["status"] for r in recorded].count("disabled") == 1


SERIAL = routine("serial", ScheduleTrigger(every="1h"))
SERIAL = SERIAL.model_copy(
    update={"options": SERIAL.options.model_copy(update={"max_concurrent": 1})}
)


async def test_runs_past_max_concurrent_are_held_and_released_one_per_completion() -> None:
    parts = fakes.dispatcher_parts(SERIAL)
    broker = NatsBroker()
    catalog = RoutineCatalog()
    dispatcher = Dispatcher(broker, parts, catalog, DispatcherSettings())
    register(broker, dispatcher)
    published: dict[str, list[dict[str, Any]]] = {}
    for subject in (subjects.RUN_REQUESTED, subjects.RUN_QUEUED, subjects.RUN_COMPLETED_ANY):

        @broker.subscriber(subject, stream=STREAM)
        async def capture(body: dict[str, Any], message: NatsMessage) -> None:
            subject = message.raw_message.subject
            if subjects.is_run_completed(subject):
                subject = subjects.RUN_COMPLETED_ANY
            published.setdefault(subject, []).append(body)

    await catalog.start(parts.registry)
    try:
        async with TestNatsBroker(broker) as test_broker:
            for n in range(3):
                submitted = SubmitRun(routine="serial", request_id=f"s-{n}", submitted_at=NOW)
                await test_broker.publish(
                    submitted.model_dump_json().encode(), subjects.RUN_SUBMITTED
                )
            requested = [b["run_id"] for b in published[subjects.RUN_REQUESTED]]
            reasons = [(b["run_id"], b["reason"]) for b in published[subjects.RUN_QUEUED]]
            assert requested == ["s-0"]
            assert reasons == [
                (f"s-{n}", "waiting for a free slot: max_concurrent=1, 1 running") for n in (1, 2)
            ]

            for n in range(2):
                done = RunCompleted(
                    run_id=f"s-{n}", routine="serial", status="completed", finished_at=NOW
                )
                await test_broker.publish(done.model_dump_json().encode(), done.subject())
                # Again, as a redelivery would: the run holds no slot any more, nothing moves.
                await test_broker.publish(done.model_dump_json().encode(), done.subject())

            requested = [b["run_id"] for b in published[subjects.RUN_REQUESTED]]
            assert requested == ["s-0", "s-1", "s-2"]
            state, _ = await parts.admission.read("serial")
            assert list(state.active) == ["s-2"]
            assert state.cursor == state.tail

            # A held run cancelled ends at once and is passed over when its turn comes.
            submitted = SubmitRun(routine="serial", request_id="s-3", submitted_at=NOW)
            await test_broker.publish(submitted.model_dump_json().encode(), subjects.RUN_SUBMITTED)
            cancel = CancelRun(run_id="s-3", requested_by="ann")
            await test_broker.publish(cancel.model_dump_json().encode(), subjects.RUN_CANCEL)
            ended = [(b["run_id"], b["status"]) for b in published[subjects.RUN_COMPLETED_ANY]]
            assert ended[-1] == ("s-3", "cancelled")
            done = RunCompleted(run_id="s-2", routine="serial", status="completed", finished_at=NOW)
            await test_broker.publish(done.model_dump_json().encode(), done.subject())
            requested = [b["run_id"] for b in published[subjects.RUN_REQUESTED]]
            assert requested == ["s-0", "s-1", "s-2"]
            state, _ = await parts.admission.read("serial")
            assert (state.active, state.dropped) == ({}, {})
    finally:
        await catalog.stop()


def runner_entry(instance: str, memory_total: int) -> RunnerCapacity:
    return RunnerCapacity(
        instance=instance,
        host=f"host-{instance}",
        version="1.0",
        started_at=NOW,
        refreshed_at=NOW,
        slots=2,
        busy=0,
        memory_total=memory_total,
        memory_available=memory_total // 2,
        isolation=["worker", "process"],
    )


async def test_a_run_larger_than_every_live_runner_is_refused_settled_and_never_requested(
    wired: Wired,
) -> None:
    wired.dispatcher.capacity.note("runner.a", runner_entry("a", 1024 * 2**20))
    wired.dispatcher.capacity.note("runner.b", runner_entry("b", 2048 * 2**20))
    too_big = SubmitRun(
        request_id="big-1", routine="hello", options=RunOptions(memory_limit=3 * 2**30)
    )
    fits = SubmitRun(
        request_id="fits-1", routine="hello", options=RunOptions(memory_limit=2 * 2**30)
    )
    for submitted in (too_big, fits):
        await wired.send(subjects.RUN_SUBMITTED, submitted.model_dump_json().encode())

    reason = (
        "no runner has that much memory: hello asks for 3072 MiB, the largest runner has "
        "2048 MiB; lower the routine's memory or start a runner with more"
    )
    assert [r.run_id for r in wired.requests()] == ["fits-1"]
    (refused,) = wired.published[subjects.run_completed_subject("hello", "failed")]
    assert (refused["run_id"], refused["error"]) == ("big-1", reason)
    settled = await wired.parts.ledger.settled("big-1")
    assert settled is not None
    assert settled.error == reason


async def test_with_no_runner_live_a_large_run_is_requested_to_wait_for_one(
    wired: Wired,
) -> None:
    submitted = SubmitRun(
        request_id="big-2", routine="hello", options=RunOptions(memory_limit=2**40)
    )
    await wired.send(subjects.RUN_SUBMITTED, submitted.model_dump_json().encode())

    assert [r.run_id for r in wired.requests()] == ["big-2"]
    assert not wired.published.get(subjects.run_completed_subject("hello", "failed"))
