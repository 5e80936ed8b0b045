"""The dispatcher's subscribers: each parses its message and hands it to the Dispatcher."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from nats.errors import NotJSMessageError

from mainspring.contract import subjects
from mainspring.contract.messages import (
    CancelRun,
    DatasetAppended,
    FireTrigger,
    PollCompleted,
    RunCompleted,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.runtime.service import consumer, delivered, durable, publish_event, stream_sequence
from mainspring_services.dispatcher import completions, crash_loop, fence, manual, named_firing
from mainspring_services.dispatcher.dispatch import DatasetDispatch, Dispatcher

log = logging.getLogger("mainspring.dispatcher")


def _now() -> datetime:
    return datetime.now(UTC)


def delivery_of(message: NatsMessage) -> fence.Delivery | None:
    """Where a trigger message is stored and how often it came (None: not from a stream)."""
    raw = message.raw_message
    sequence = stream_sequence(raw)
    if sequence is None:
        return None
    try:
        stored_at = raw.metadata.timestamp
    except (NotJSMessageError, AttributeError):
        stored_at = None
    return fence.Delivery(sequence, delivered(raw), stored_at)


def by_routine(
    message: SubmitRun | ScheduleFired | RunCompleted | TriggerRecorded | PollCompleted,
) -> str:
    """The key whose messages are handled in order: each routine's facts (run numbers,
    crash-loop count, overlap and admission slots) change in the order its events came."""
    return message.routine


def by_run(message: CancelRun) -> str:
    """Cancels of different runs need no order between them."""
    return message.run_id


def by_trigger(message: FireTrigger) -> str:
    """Pushes of one named trigger in order, as its firing history reads them."""
    return message.trigger


def dispatcher_durable(
    dispatcher: Dispatcher, name: str, subject: str, **options: Any
) -> dict[str, Any]:
    """A durable of the dispatcher, with the ack wait and batch size its settings give."""
    return durable(
        name,
        subject,
        ack_wait_s=dispatcher.settings.dispatch_ack_wait_s,
        batch_size=dispatcher.settings.dispatch_batch_size,
        **options,
    )


def register(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to manual requests, ticks and completions."""

    @consumer(
        broker,
        SubmitRun,
        order_by=by_routine,
        **dispatcher_durable(dispatcher, "dispatcher-submitted", subjects.RUN_SUBMITTED),
    )
    async def on_run_submitted(submitted: SubmitRun, message: NatsMessage) -> None:
        delivery = delivery_of(message)
        definition = await dispatcher.find(submitted)
        context = await dispatcher.manual_context(definition, submitted)
        if submitted.options.execution == "in_memory":
            decision = manual.decide_in_memory(definition, submitted, _now(), context)
            for request in decision.requests:
                # Before the request: the caller may report as soon as it sees it.
                await dispatcher.ledger.mark_in_memory(request.run_id)
            await dispatcher.publish(decision, subjects.RUN_IN_MEMORY, delivery)
        else:
            decision = manual.decide_manual(definition, submitted, _now(), context)
            await dispatcher.publish(decision, delivery=delivery)

    @consumer(
        broker,
        ScheduleFired,
        order_by=by_routine,
        **dispatcher_durable(dispatcher, "dispatcher-schedule", subjects.SCHEDULE_FIRED),
    )
    async def on_schedule_fired(fired: ScheduleFired, message: NatsMessage) -> None:
        definition = await dispatcher.store.find(fired.routine)
        await dispatcher.on_tick(definition, fired, _now(), delivery_of(message))

    async def handle_completed(completed: RunCompleted, message: NatsMessage) -> None:
        delivery = delivery_of(message)
        # Downstream runs first: they wait on nothing but the catalog (its index of who waits
        # on this routine, so the cost does not grow with the registry), while the completed
        # routine's own bookkeeping (crash-loop count, overlap and admission slots: separate
        # keys) follows, all at once. A crash in between redelivers the completion, which requests the
        # same (deduplicated) runs again and then does the bookkeeping.
        decision = completions.decide_completion(
            dispatcher.catalog.downstream_of(completed.routine),
            completed,
            _now(),
            dispatcher.settings.max_hops,
        )
        await dispatcher.publish(decision, delivery=delivery)
        await asyncio.gather(
            dispatcher.check_crash_loop(
                completed.routine,
                crash_loop.start_outcome(completed),
                completed.run_id,
                completed.error,
                completed.run_id,
            ),
            dispatcher.release_timed(completed, _now(), delivery),
            dispatcher.release_admission(completed, delivery),
        )

    @consumer(
        broker,
        RunCompleted,
        order_by=by_routine,
        **dispatcher_durable(dispatcher, "dispatcher-completed", subjects.RUN_COMPLETED_ANY),
    )
    async def on_run_completed(completed: RunCompleted, message: NatsMessage) -> None:
        await handle_completed(completed, message)

    # on_complete(name) matches an external workflow of that name as it matches a routine.
    @consumer(
        broker,
        RunCompleted,
        order_by=by_routine,
        **dispatcher_durable(
            dispatcher, "dispatcher-external-completed", subjects.EXTERNAL_COMPLETED_ANY
        ),
    )
    async def on_external_completed(completed: RunCompleted, message: NatsMessage) -> None:
        await handle_completed(completed, message)

    @consumer(
        broker,
        RunCompleted,
        order_by=by_routine,
        **dispatcher_durable(dispatcher, "dispatcher-in-memory", subjects.RUN_IN_MEMORY_REPORTED),
    )
    async def on_in_memory_reported(reported: RunCompleted, _message: NatsMessage) -> None:
        if not await dispatcher.ledger.is_in_memory(reported.run_id):
            # Only the caller of an in-memory run reports its outcome; anything else would
            # let a client end a run a runner holds.
            log.warning("ignored a report for run %s: not an in-memory run", reported.run_id)
            return
        settled = await dispatcher.ledger.settle(reported)
        await publish_event(broker, settled, settled.subject())

    @consumer(
        broker,
        CancelRun,
        order_by=by_run,
        **dispatcher_durable(dispatcher, "dispatcher-cancel", subjects.RUN_CANCEL),
    )
    async def on_run_cancel(cancel: CancelRun, _message: NatsMessage) -> None:
        # The mark decides whether the run may still start: the runner that picks it up
        # (now or after a hold) ends it cancelled instead; a running one its holder stops.
        by = cancel.requested_by or "request"
        await dispatcher.ledger.mark_cancelled(cancel.run_id, by)
        log.info("run %s cancelled by %s", cancel.run_id, by)
        await dispatcher.cancel_held(cancel.run_id)

    # New messages only: firings that failed before this consumer first existed must not
    # disable a trigger when a deployment is upgraded.
    @consumer(
        broker,
        TriggerRecorded,
        order_by=by_routine,
        **dispatcher_durable(
            dispatcher,
            "dispatcher-trigger-failures",
            subjects.TRIGGER_RECORDED,
            deliver_new_only=True,
        ),
    )
    async def on_trigger_recorded(recorded: TriggerRecorded, _message: NatsMessage) -> None:
        outcome, failure_key = crash_loop.trigger_outcome(recorded)
        await dispatcher.check_crash_loop(
            recorded.routine, outcome, failure_key, recorded.reason, recorded.run_id
        )


def register_datasets(broker: NatsBroker, dispatcher: Dispatcher) -> DatasetDispatch:
    """Subscribe the dispatcher to dataset appends (from the watcher or external systems)."""
    datasets = DatasetDispatch(broker, dispatcher)

    # One message in flight keeps appends in stream order; since a message held by a killed
    # dispatcher blocks the ones after it until ack_wait, ack_wait is short (handling takes ms).
    @consumer(
        broker,
        DatasetAppended,
        **durable(
            "dispatcher-dataset", subjects.DATASET_APPENDED, ack_wait_s=5.0, max_ack_pending=1
        ),
    )
    async def on_dataset_appended(appended: DatasetAppended, message: NatsMessage) -> None:
        # A failure is retried in order (one message in flight) with the shared redelivery
        # policy, and dead-lettered past its limit so later appends flow again.
        await datasets.on_appended(appended, delivery_of(message))

    return datasets


def register_timed(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to poll results."""

    @consumer(
        broker,
        PollCompleted,
        order_by=by_routine,
        **dispatcher_durable(dispatcher, "dispatcher-poll", subjects.POLL_COMPLETED),
    )
    async def on_poll_completed(polled: PollCompleted, message: NatsMessage) -> None:
        await dispatcher.on_polled(polled, _now(), delivery_of(message))


def register_named(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to pushes of named triggers."""

    @consumer(
        broker,
        FireTrigger,
        order_by=by_trigger,
        **dispatcher_durable(dispatcher, "dispatcher-trigger-fire", subjects.TRIGGER_FIRE),
    )
    async def on_trigger_fire(fire: FireTrigger, message: NatsMessage) -> None:
        await named_firing.on_fire(dispatcher, fire, delivery_of(message))
