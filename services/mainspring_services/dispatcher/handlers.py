"""Dispatcher handlers: load definitions and state, decide (core), publish the decisions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from faststream.nats import NatsBroker, NatsMessage
from nats.js.kv import KeyValue

from mainspring.base import kv, tracing
from mainspring.client import Client, ServiceUnavailable
from mainspring.contract import subjects
from mainspring.contract.messages import (
    CancelRun,
    DatasetAppended,
    PollCompleted,
    RunCompleted,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.contract.queries import RunQuery
from mainspring.runtime import metrics
from mainspring.runtime.service import consumer, durable, publish_event
from mainspring.sdk.triggers import CompletionTrigger, DatasetAppendTrigger
from mainspring.storage.cursors import load_cursor, save_cursor
from mainspring.storage.ledger import (
    is_in_memory,
    ledger_bucket,
    mark_cancelled,
    mark_in_memory,
    settle_outcome,
)
from mainspring.storage.numbers import RunNumbers
from mainspring.storage.registry import RoutineCatalog, RoutineDefinition, RoutineStore
from mainspring_services.dispatcher import core, timed
from mainspring_services.dispatcher.settings import DispatcherSettings

log = logging.getLogger("mainspring.dispatcher")


class CrashLoopCounts:
    """Per-routine consecutive start failures in the dispatch bucket, written with compare-and-set."""

    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket

    async def load(self, routine: str) -> tuple[core.CrashLoopState, int]:
        """The stored state and its revision (0 when never written)."""
        value, revision = await kv.read(self._kv, f"crashloop.{kv.key_token(routine)}")
        return core.CrashLoopState.from_json(value), revision

    async def save(self, routine: str, state: core.CrashLoopState, revision: int) -> bool:
        """Store the state unless another replica changed it first (then False: decide again)."""
        key = f"crashloop.{kv.key_token(routine)}"
        return await kv.write_if_unchanged(self._kv, key, state.to_json(), revision) is not None


class Dispatcher:
    """Publishes what the core decided."""

    def __init__(
        self,
        broker: NatsBroker,
        store: RoutineStore,
        catalog: RoutineCatalog,
        numbers: RunNumbers,
        settings: DispatcherSettings,
    ) -> None:
        self.broker = broker
        self.store = store
        self.catalog = catalog
        self.numbers = numbers
        self.settings = settings
        self.crashes: CrashLoopCounts | None = None
        self.overlap: OverlapGate | None = None

    async def find(self, submitted: SubmitRun) -> RoutineDefinition | None:
        """The submitted routine's definition: the in-memory copy when it is current enough
        for the submitter, else the registry (a name the copy does not know yet included)."""
        known = self.catalog.current(submitted.routine, submitted.registry_revision)
        return known if known is not None else await self.store.find(submitted.routine)

    async def publish(
        self, decision: core.Decision, request_subject: str = subjects.RUN_REQUESTED
    ) -> None:
        """Requests first (deduplicated by run id), then history and refusals.

        In-memory runs go to run.in_memory: recorded like any request, executed by the
        caller that asked for them, never by a runner.
        """
        for request in decision.requests:
            numbered = request.model_copy(
                update={
                    "run_number": await self.numbers.next(request.routine),
                    "trace_id": tracing.current_trace_id(),
                }
            )
            await publish_event(self.broker, numbered, request_subject)
            log.info(
                "requested run %s of %s (%s)",
                numbered.run_id,
                numbered.routine,
                numbered.trigger_kind,
            )
        for recorded in decision.history:
            await publish_event(self.broker, recorded, subjects.TRIGGER_RECORDED)
            metrics.trigger_recorded(recorded)
        for refused in decision.refused:
            log.warning("refused run %s of %s: %s", refused.run_id, refused.routine, refused.error)
            metrics.refused(refused.error)
            await publish_event(self.broker, refused, refused.subject())

    async def check_crash_loop(
        self,
        routine: str,
        outcome: core.StartOutcome,
        failure_key: str,
        error: str | None,
        run_id: str | None = None,
    ) -> None:
        """Count a start failure or reset on a start; disable the trigger at the threshold."""
        if outcome == "ignored" or self.crashes is None:
            return
        for _ in range(20):
            state, revision = await self.crashes.load(routine)
            if outcome == "started" and not state.failures:
                return  # the common case: a healthy routine, nothing to reset
            definition = await self.store.find(routine)
            verdict = core.decide_crash_loop(
                definition,
                state,
                outcome,
                failure_key,
                error,
                self.settings.crash_loop_threshold,
                _now(),
                run_id,
            )
            if verdict.state != state and not await self.crashes.save(
                routine, verdict.state, revision
            ):
                continue
            if verdict.disable_reason is not None:
                # History first: a crash before set_enabled redoes both (the record is deduplicated).
                await self.publish(core.Decision(history=verdict.history))
                await self.store.set_enabled(
                    routine, False, verdict.disable_reason, _now(), by="crash_loop"
                )
                log.warning("disabled the trigger of %s: %s", routine, verdict.disable_reason)
                metrics.DISABLED.labels("crash_loop").inc()
            return
        raise RuntimeError(f"crash-loop count of {routine} kept changing concurrently")

    async def on_tick(
        self, definition: RoutineDefinition | None, fired: ScheduleFired, now: datetime
    ) -> None:
        """A schedule tick: poll routines ask a runner to poll, the others start a run."""
        poll = timed.poll_request(definition, fired)
        if poll is not None:
            await publish_event(self.broker, poll, subjects.POLL_REQUESTED)
            return
        await self.start_timed(definition, core.decide_schedule(definition, fired, now), now)

    async def start_timed(
        self, definition: RoutineDefinition | None, decision: core.Decision, now: datetime
    ) -> None:
        """Publish a timed trigger's decision through the routine's overlap policy."""
        policy = timed.overlap_policy(definition)
        if definition is None or policy == "allow" or not decision.requests or not self.overlap:
            await self.publish(decision)
            return
        while True:
            state, revision = await self.overlap.read(definition.name)
            gated, changed, cancels = timed.gate_run(policy, state, decision, now)
            if changed == state or await self.overlap.write(definition.name, changed, revision):
                break
        # The slot is taken before the request goes out: a crash from here on redelivers
        # the tick, which finds its run active and republishes (deduplicated by run id)
        # instead of starting a second one.
        for cancel in cancels:
            log.info(
                "cancelling run %s of %s (overlap=cancel_previous)", cancel.run_id, definition.name
            )
            await publish_event(self.broker, cancel, subjects.RUN_CANCEL)
        await self.publish(gated)

    async def release_timed(self, completed: RunCompleted, now: datetime) -> None:
        """A run ended: free its overlap slot and start the buffered tick, if any."""
        if self.overlap is None:
            return
        while True:
            state, revision = await self.overlap.read(completed.routine)
            enabled = True
            if state.pending is not None and completed.run_id in state.active:
                definition = await self.store.find(completed.routine)
                enabled = definition is not None and definition.enabled
            decision, changed = timed.release_run(state, completed.run_id, now, enabled)
            if changed == state:
                return
            # The buffered run is published before the slot is saved: a crash in between
            # redelivers the completion, which finds the same state and republishes the
            # same (deduplicated) request, so the buffered tick is never lost.
            await self.publish(decision)
            if await self.overlap.write(completed.routine, changed, revision):
                return

    async def manual_context(
        self, definition: RoutineDefinition | None, submitted: SubmitRun
    ) -> core.ManualContext:
        """What a manual run's event needs: the dataset cursor (read, never moved) or the
        upstream run (asked of the recorder, which owns run history)."""
        if definition is None or submitted.event is not None:
            return core.ManualContext()
        trigger = definition.trigger
        if isinstance(trigger, DatasetAppendTrigger):
            bucket = await self.broker.connection.jetstream().key_value(subjects.DISPATCH_BUCKET)
            cursor, _ = await load_cursor(bucket, definition.name)
            return core.ManualContext(cursor=cursor)
        if isinstance(trigger, CompletionTrigger):
            # Asked the way the SDK asks: through the client's request/reply calls.
            history = Client(self.broker.connection, self.settings)
            try:
                if submitted.upstream_run_id is not None:
                    found = await history.get_run(submitted.upstream_run_id)
                    return core.ManualContext(upstream=found)
                status = None if trigger.status == "any" else trigger.status
                runs = await history.list_runs(RunQuery(routine=trigger.routine, status=status))
                return core.ManualContext(upstream=core.latest_upstream(runs, trigger))
            except ServiceUnavailable:
                return core.ManualContext(
                    upstream_problem="the recorder does not answer, so the upstream run is "
                    "unknown: start the recorder and run it again"
                )
        return core.ManualContext()

    async def on_polled(self, polled: PollCompleted, now: datetime) -> None:
        """A poll function's result: a run (through the overlap policy) or a history row."""
        definition = await self.store.find(polled.routine)
        await self.start_timed(definition, timed.decide_poll_result(definition, polled, now), now)


class OverlapGate:
    """Active trigger runs and the buffered tick of each routine, in the dispatch bucket.

    The dispatcher records a run as active at the moment it decides to start it, in the
    same compare-and-set that checks the policy, and frees it on run.completed (which it
    consumes anyway). Asking the recorder (api.runs.list) would race with the recorder's
    consumer lag: a run requested a moment ago may not be recorded yet, so two quick ticks
    could both start. Following run.requested would race with our own publish the same
    way. The KV bucket survives dispatcher restarts; the revision check keeps concurrent
    handlers (ticks, completions, replicas) from overwriting each other.
    """

    def __init__(self, bucket: KeyValue) -> None:
        self._kv = bucket

    async def read(self, routine: str) -> tuple[timed.OverlapState, int]:
        """The state and its revision (0 when none is stored)."""
        value, revision = await kv.read(self._kv, f"overlap.{kv.key_token(routine)}")
        if value is None:
            return timed.OverlapState(), revision
        return timed.OverlapState.model_validate_json(value), revision

    async def write(self, routine: str, state: timed.OverlapState, revision: int) -> bool:
        """Save if nobody changed it since `revision`; False means read again."""
        value = state.model_dump_json().encode()
        key = f"overlap.{kv.key_token(routine)}"
        return await kv.write_if_unchanged(self._kv, key, value, revision) is not None


def _now() -> datetime:
    return datetime.now(UTC)


def register(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to manual requests, ticks and completions."""

    @consumer(broker, SubmitRun, **durable("dispatcher-submitted", subjects.RUN_SUBMITTED))
    async def on_run_submitted(submitted: SubmitRun, _message: NatsMessage) -> None:
        definition = await dispatcher.find(submitted)
        context = await dispatcher.manual_context(definition, submitted)
        if submitted.execution == "in_memory":
            decision = core.decide_in_memory(definition, submitted, _now(), context)
            js = broker.connection.jetstream()
            for request in decision.requests:
                # Before the request: the caller may report as soon as it sees it.
                await mark_in_memory(js, request.run_id)
            await dispatcher.publish(decision, request_subject=subjects.RUN_IN_MEMORY)
        else:
            await dispatcher.publish(core.decide_manual(definition, submitted, _now(), context))

    @consumer(broker, ScheduleFired, **durable("dispatcher-schedule", subjects.SCHEDULE_FIRED))
    async def on_schedule_fired(fired: ScheduleFired, _message: NatsMessage) -> None:
        definition = await dispatcher.store.find(fired.routine)
        await dispatcher.on_tick(definition, fired, _now())

    async def handle_completed(completed: RunCompleted) -> None:
        # Downstream runs first: they wait on nothing but the catalog, while the completed
        # routine's own bookkeeping (crash-loop count, overlap slot: separate keys) follows,
        # both at once. A crash in between redelivers the completion, which requests the
        # same (deduplicated) runs again and then does the bookkeeping.
        decision = core.decide_completion(
            dispatcher.catalog.all(), completed, _now(), dispatcher.settings.max_hops
        )
        await dispatcher.publish(decision)
        await asyncio.gather(
            dispatcher.check_crash_loop(
                completed.routine,
                core.start_outcome(completed),
                completed.run_id,
                completed.error,
                completed.run_id,
            ),
            dispatcher.release_timed(completed, _now()),
        )

    @consumer(broker, RunCompleted, **durable("dispatcher-completed", subjects.RUN_COMPLETED_ANY))
    async def on_run_completed(completed: RunCompleted, _message: NatsMessage) -> None:
        await handle_completed(completed)

    # on_complete(name) matches an external workflow of that name as it matches a routine.
    @consumer(
        broker,
        RunCompleted,
        **durable("dispatcher-external-completed", subjects.EXTERNAL_COMPLETED_ANY),
    )
    async def on_external_completed(completed: RunCompleted, _message: NatsMessage) -> None:
        await handle_completed(completed)

    @consumer(
        broker, RunCompleted, **durable("dispatcher-in-memory", subjects.RUN_IN_MEMORY_REPORTED)
    )
    async def on_in_memory_reported(reported: RunCompleted, _message: NatsMessage) -> None:
        js = broker.connection.jetstream()
        if not await is_in_memory(js, reported.run_id):
            # Only the caller of an in-memory run reports its outcome; anything else would
            # let a client end a run a runner holds.
            log.warning("ignored a report for run %s: not an in-memory run", reported.run_id)
            return
        settled = await settle_outcome(await ledger_bucket(js), reported)
        await publish_event(broker, settled, settled.subject())

    @consumer(broker, CancelRun, **durable("dispatcher-cancel", subjects.RUN_CANCEL))
    async def on_run_cancel(cancel: CancelRun, _message: NatsMessage) -> None:
        # The mark decides whether the run may still start: the runner that picks it up
        # (now or after a hold) ends it cancelled instead; a running one its holder stops.
        by = cancel.requested_by or "request"
        await mark_cancelled(broker.connection.jetstream(), cancel.run_id, by)
        log.info("run %s cancelled by %s", cancel.run_id, by)

    # New messages only: firings that failed before this consumer first existed must not
    # disable a trigger when a deployment is upgraded.
    @consumer(
        broker,
        TriggerRecorded,
        **durable("dispatcher-trigger-failures", subjects.TRIGGER_RECORDED, deliver_new_only=True),
    )
    async def on_trigger_recorded(recorded: TriggerRecorded, _message: NatsMessage) -> None:
        outcome, failure_key = core.trigger_outcome(recorded)
        await dispatcher.check_crash_loop(
            recorded.routine, outcome, failure_key, recorded.reason, recorded.run_id
        )


class DatasetDispatch:
    """Turns `dataset.appended` into runs through per-routine cursors in the dispatch bucket."""

    def __init__(self, broker: NatsBroker, dispatcher: Dispatcher) -> None:
        self.broker = broker
        self.dispatcher = dispatcher
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The dispatch bucket (bound on first use, after the bus is declared)."""
        if self._kv is None:
            self._kv = await self.broker.connection.jetstream().key_value(subjects.DISPATCH_BUCKET)
        return self._kv

    async def on_appended(self, appended: DatasetAppended) -> None:
        """Apply one append to every routine watching its dataset."""
        # The catalog copy only once it has caught up with the registry: a routine registered
        # a moment before the append must not miss it while the catalog's watch catches up.
        everything = await self.dispatcher.catalog.current_all(self.dispatcher.store)
        definitions = core.dataset_routines(everything, appended.dataset)
        for definition in definitions:
            await self.apply(definition, appended)

    async def apply(self, definition: RoutineDefinition, appended: DatasetAppended) -> None:
        """Publish what the core decided, then move the cursor with compare-and-set.

        Exactly once across a SIGKILL at any point, because the cursor write is the commit:
        - killed before publishing: nothing happened; the message is redelivered (never
          acked) and decided again from the same cursor.
        - killed after publishing, before the cursor write: the redelivery decides again from
          the same cursor, so the same range, the same run id and the same Nats-Msg-Ids; the
          stream's duplicate window drops the second copies. (The window, 10 minutes by
          default, must outlast a dispatcher outage: MAINSPRING_DUPLICATE_WINDOW_S.)
        - killed after the cursor write, before the ack: the redelivery finds
          to_version <= seen_version and publishes nothing.
        The consumer has max_ack_pending=1, so appends are applied in stream order and a
        redelivered message is applied before any later one.
        """
        kv = await self.kv()
        for _ in range(10):
            cursor, revision = await load_cursor(kv, definition.name)
            decision = core.decide_dataset_append(
                definition, cursor, appended, _now(), self.dispatcher.settings.max_hops
            )
            if decision.cursor is None:
                return
            await self.dispatcher.publish(
                core.Decision(requests=decision.requests, history=decision.history)
            )
            if await save_cursor(kv, definition.name, decision.cursor, revision):
                return
            log.warning("cursor of %s moved concurrently; deciding again", definition.name)
        raise RuntimeError(f"cursor of {definition.name} keeps moving; retrying the message")


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
    async def on_dataset_appended(appended: DatasetAppended, _message: NatsMessage) -> None:
        # A failure is retried in order (one message in flight) with the shared redelivery
        # policy, and dead-lettered past its limit so later appends flow again.
        await datasets.on_appended(appended)

    return datasets


def register_timed(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to poll results."""

    @consumer(broker, PollCompleted, **durable("dispatcher-poll", subjects.POLL_COMPLETED))
    async def on_poll_completed(polled: PollCompleted, _message: NatsMessage) -> None:
        await dispatcher.on_polled(polled, _now())
