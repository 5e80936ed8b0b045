"""The dispatcher's decisions carried out: load definitions and state, decide (core), publish."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from faststream.nats import NatsBroker

from mainspring.base import tracing
from mainspring.client import ServiceUnavailable
from mainspring.contract import subjects
from mainspring.contract.messages import (
    DatasetAppended,
    PollCompleted,
    RequestRun,
    RunCompleted,
    RunQueued,
    ScheduleFired,
    SubmitRun,
    TriggerRecorded,
)
from mainspring.contract.queries import RunQuery
from mainspring.runtime import metrics
from mainspring.runtime.service import publish_event
from mainspring.sdk.triggers import CompletionTrigger, DatasetAppendTrigger
from mainspring.storage.capacity import CapacityCatalog
from mainspring.storage.registry import RoutineCatalog, RoutineDefinition
from mainspring_services.dispatcher import (
    admission,
    breaker,
    core,
    crash_loop,
    datasets,
    fence,
    manual,
    named_firing,
    timed,
)
from mainspring_services.dispatcher.ports import DispatcherParts
from mainspring_services.dispatcher.settings import DispatcherSettings

log = logging.getLogger("mainspring.dispatcher")


class Dispatcher:
    """Publishes what the core decided."""

    def __init__(
        self,
        broker: NatsBroker,
        parts: DispatcherParts,
        catalog: RoutineCatalog,
        settings: DispatcherSettings,
        capacity: CapacityCatalog | None = None,
    ) -> None:
        self.broker = broker
        self.store = parts.registry
        self.numbers = parts.numbers
        self.crashes = parts.crashes
        self.overlap = parts.overlap
        self.admission = parts.admission
        self.held = parts.held
        # Routines this process admitted runs of: their completions free slots even once
        # their definition no longer sets max_concurrent.
        self.admitted_routines: set[str] = set()
        self.cursors = parts.cursors
        self.ledger = parts.ledger
        self.history = parts.history
        self.triggers = parts.triggers
        self.requested = parts.requested
        self.catalog = catalog
        self.settings = settings
        self.fire_windows = breaker.FireWindows()
        # The live runners (a KV watch): a run none of them can hold is refused at once.
        self.capacity = capacity or CapacityCatalog(settings.runner_capacity_ttl_s)

    async def find(self, submitted: SubmitRun) -> RoutineDefinition | None:
        """The submitted routine's definition: the in-memory copy when it is current enough
        for the submitter, else the registry (a name the copy does not know yet included)."""
        known = self.catalog.current(submitted.routine, submitted.registry_revision)
        return known if known is not None else await self.store.find(submitted.routine)

    async def publish(
        self,
        decision: core.Decision,
        request_subject: str | None = None,
        delivery: fence.Delivery | None = None,
    ) -> None:
        """Requests first (deduplicated by run id), then history and refusals.

        `delivery` is the trigger message's: a redelivery beyond the stream's duplicate
        window first leaves out the requests an earlier handling already stored (see fence).
        Runs go to the runners' queue of their priority (`request_subject` None); in-memory
        runs to run.in_memory: recorded like any request, executed by the caller that asked
        for them, never by a runner. A run whose memory limit is larger than every live
        runner's memory is refused instead of requested (see refuse_settled).
        """
        requests = await self.not_yet_requested(decision.requests, request_subject, delivery)
        oversized: list[RunCompleted] = []
        # Only a run asking for memory is checked against the runners (a no-op run's hot path
        # reads nothing more).
        if request_subject is None and any(r.options.memory_limit for r in requests):
            requests, oversized = core.split_oversized(requests, self.capacity.live(), _now())
        for request in requests:
            numbered = request.model_copy(
                update={
                    "run_number": await self.numbers.next(request.routine),
                    "trace_id": tracing.current_trace_id(),
                }
            )
            if request_subject is None and admission.admits(numbered):
                await self.admit(numbered, delivery)
            else:
                await self.request(numbered, request_subject)
        for recorded in decision.history:
            await publish_event(self.broker, recorded, subjects.TRIGGER_RECORDED)
            metrics.trigger_recorded(recorded)
        for refused in decision.refused:
            log.warning("refused run %s of %s: %s", refused.run_id, refused.routine, refused.error)
            metrics.refused(refused.error)
            await publish_event(self.broker, refused, refused.subject())
        for refused in oversized:
            await self.refuse_settled(refused)
        if decision.requests:
            await self.count_fires(decision.requests)

    async def refuse_settled(self, refused: RunCompleted) -> None:
        """Refuse a run no live runner can hold, settling the refusal first: a redelivered
        trigger whose first handling requested the run (the runners were bigger then) must
        not leave a request a runner starts beside a refusal; the first outcome settled wins,
        and a runner finds it before starting."""
        settled = await self.ledger.settle(refused)
        log.warning("refused run %s of %s: %s", settled.run_id, settled.routine, settled.error)
        metrics.refused(settled.error)
        await publish_event(self.broker, settled, settled.subject())

    async def request(self, request: RequestRun, request_subject: str | None = None) -> None:
        """Publish a run's request (deduplicated by run id), by default on the runners' queue
        of its priority."""
        await publish_event(self.broker, request, fence.request_subject(request, request_subject))
        log.info(
            "requested run %s of %s (%s)", request.run_id, request.routine, request.trigger_kind
        )
        _die_after_request()

    async def admit(self, request: RequestRun, delivery: fence.Delivery | None) -> None:
        """A run of a routine with max_concurrent: request it when a slot is free and no
        older run waits, else hold it on run.held.<routine> with its reason (`delivery`:
        the trigger message's, whose redelivery never admits directly)."""
        routine = request.routine
        self.admitted_routines.add(routine)
        first = fence.is_first(delivery)
        while True:
            state, revision = await self.admission.read(routine)
            step, changed = admission.on_request(state, request, first)
            if step == "republish":
                await self.request(request)
                return
            if step == "hold":
                break
            # The slot is taken before the request goes out: a crash in between redelivers
            # the event, which finds the run active and republishes (deduplicated).
            if await self.admission.write(routine, changed, revision):
                await self.request(request)
                return
        if not first and await self.ledger.settled(request.run_id) is not None:
            return  # admitted on an earlier delivery and already over
        # Stored before the state notes it: whoever frees a slot after the note finds it.
        sequence = await self.held.hold(request)
        while True:
            state, revision = await self.admission.read(routine)
            oldest = None
            if len(state.active) < (request.options.max_concurrent or 1):
                found = await self.held.next_after(routine, state.cursor)
                oldest = found[1] if found is not None else None
            held_step, changed = admission.after_hold(state, request, sequence, oldest)
            if held_step == "released":
                return
            if held_step == "republish":
                await self.request(request)
                return
            if changed != state and not await self.admission.write(routine, changed, revision):
                continue
            if held_step == "admit":
                await self.request(request)
                return
            reason = admission.queue_reason(changed.limit, len(changed.active))
            log.info("holding run %s of %s: %s", request.run_id, routine, reason)
            await self.ledger.mark_held(request.run_id, routine, sequence)
            queued = RunQueued(run_id=request.run_id, routine=routine, reason=reason, at=_now())
            await publish_event(self.broker, queued, subjects.RUN_QUEUED)
            return

    async def release_admission(
        self, completed: RunCompleted, delivery: fence.Delivery | None = None
    ) -> None:
        """A run ended: free its slot and request the oldest held runs into it (`delivery`:
        the completion message's, whose redelivery republishes what it released)."""
        routine = completed.routine
        definition = self.catalog.get(routine)
        limited = definition is not None and bool(definition.options.max_concurrent)
        if not limited and routine not in self.admitted_routines:
            return  # the hot path: a routine without max_concurrent has no slots to free
        while True:
            state, revision = await self.admission.read(routine)
            wanted = admission.slots_to_release(state, completed.run_id)
            if wanted is None:
                if revision and not fence.is_first(delivery):
                    await self.republish_released(state)
                return
            released: list[tuple[RequestRun, int]] = []
            cursor = state.cursor
            while len(released) < wanted:
                found = await self.held.next_after(routine, cursor)
                if found is None:
                    cursor = max(cursor, state.tail)
                    break
                request, cursor = found
                if request.run_id in state.active or request.run_id in state.dropped:
                    continue
                if await self.ledger.settled(request.run_id) is not None:
                    continue  # a request held twice, run already: passed over
                released.append(found)
            changed = admission.after_release(
                state, completed.run_id, [(r.run_id, seq) for r, seq in released], cursor
            )
            # Slots are taken before the requests go out; a crash in between redelivers the
            # completion, which finds its run gone from active and republishes them.
            if not await self.admission.write(routine, changed, revision):
                continue
            for request, _ in released:
                await self.request(request.model_copy(update={"requested_at": _now()}))
            return

    async def cancel_held(self, run_id: str) -> None:
        """A run cancelled while it waits for a slot ends cancelled now, not on its turn."""
        held = await self.ledger.held(run_id)
        if held is None:
            return
        routine, sequence = held
        while True:
            state, revision = await self.admission.read(routine)
            step, changed = admission.drop_held(state, run_id, sequence)
            if step == "runner":
                return  # released meanwhile: the runner that takes it ends it cancelled
            if step == "passed":
                if await self.ledger.settled(run_id) is not None:
                    return
                break  # dropped by an earlier delivery of this cancel, never settled
            # Passed over before the outcome is settled: a release after this write skips it,
            # one before made the write lose and the run is the runner's to end.
            if changed == state or await self.admission.write(routine, changed, revision):
                break
        request = await self.held.at(sequence)
        if request is None:
            return
        cancelled = RunCompleted(
            run_id=run_id,
            routine=routine,
            run_number=request.run_number,
            status="cancelled",
            error="cancelled before it started",
            hop=request.hop,
            parent_run_id=request.parent_run_id,
            finished_at=_now(),
            **request.carried_forward(),
        )
        settled = await self.ledger.settle(cancelled)
        await publish_event(self.broker, settled, settled.subject())

    async def republish_released(self, state: admission.AdmissionState) -> None:
        """A redelivered completion: the requests its first delivery released may not have
        gone out; publish them again (the stream drops the copies)."""
        for sequence in state.active.values():
            if sequence:
                request = await self.held.at(sequence)
                if request is not None:
                    await self.request(request.model_copy(update={"requested_at": _now()}))

    async def not_yet_requested(
        self, requests: list[RequestRun], subject: str | None, delivery: fence.Delivery | None
    ) -> list[RequestRun]:
        """The requests to publish: all of them, unless a redelivery finds some stored already
        (read on each subject they go to: one per priority, or `subject`)."""
        if not requests or not fence.must_look(delivery, _now(), self.settings.duplicate_window_s):
            return requests
        assert delivery is not None
        stored: set[str] = set()
        for on_subject, wanted in fence.by_subject(requests, subject).items():
            stored |= await self.requested.run_ids_after(on_subject, delivery.sequence, wanted)
        for request in requests:
            if request.run_id in stored:
                log.info(
                    "run %s of %s was requested before this redelivery: not again",
                    request.run_id,
                    request.routine,
                )
        return fence.unpublished(requests, stored)

    async def check_crash_loop(
        self,
        routine: str,
        outcome: crash_loop.StartOutcome,
        failure_key: str,
        error: str | None,
        run_id: str | None = None,
    ) -> None:
        """Count a start failure or reset on a start; disable the trigger at the threshold."""
        if outcome == "ignored":
            return
        for _ in range(20):
            state, revision = await self.crashes.load(routine)
            if outcome == "started" and not state.failures:
                return  # the common case: a healthy routine, nothing to reset
            definition = await self.store.find(routine)
            verdict = crash_loop.decide_crash_loop(
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
                await self.pause(routine, verdict.disable_reason, verdict.history, "crash_loop")
            return
        raise RuntimeError(f"crash-loop count of {routine} kept changing concurrently")

    async def pause(
        self,
        routine: str,
        reason: str,
        history: list[TriggerRecorded],
        by: Literal["crash_loop", "circuit_breaker"],
    ) -> None:
        """Switch off a routine's trigger and its named triggers, saying why."""
        # History first: a crash before set_enabled redoes both (the record is deduplicated).
        await self.publish(core.Decision(history=history))
        await self.store.set_enabled(routine, False, reason, _now(), by=by)
        log.warning("disabled the trigger of %s: %s", routine, reason)
        await named_firing.deactivate_targeting(self, routine, reason, by)
        # In the audit trail beside what people did: who switched it off was the dispatcher.
        audit = core.pause_audit(routine, reason, by, history, _now())
        await publish_event(self.broker, audit, subjects.AUDIT_RECORDED)
        metrics.DISABLED.labels(by).inc()

    async def count_fires(self, requests: list[RequestRun]) -> None:
        """The circuit breaker: pause a routine that triggered runs too often just now."""
        now = _now()
        for request in requests:
            definition = self.catalog.get(request.routine)
            if definition is None or not breaker.counts(request):
                continue
            fired = self.fire_windows.record(definition, now)
            if fired is not None and definition.enabled:
                reason, recorded = breaker.trip(definition, fired, now)
                await self.pause(definition.name, reason, [recorded], "circuit_breaker")

    async def on_tick(
        self,
        definition: RoutineDefinition | None,
        fired: ScheduleFired,
        now: datetime,
        delivery: fence.Delivery | None = None,
    ) -> None:
        """A schedule tick: poll routines ask a runner to poll, the others start a run."""
        if fired.trigger is not None:
            await named_firing.on_tick(self, fired, delivery)
            return
        poll = timed.poll_request(definition, fired)
        if poll is not None:
            await publish_event(self.broker, poll, subjects.POLL_REQUESTED)
            return
        await self.start_timed(
            definition, timed.decide_schedule(definition, fired, now), now, delivery
        )

    async def start_timed(
        self,
        definition: RoutineDefinition | None,
        decision: core.Decision,
        now: datetime,
        delivery: fence.Delivery | None = None,
    ) -> None:
        """Publish a timed trigger's decision through the routine's overlap policy."""
        policy = timed.overlap_policy(definition)
        if definition is None or policy == "allow" or not decision.requests:
            await self.publish(decision, delivery=delivery)
            return
        while True:
            state, revision = await self.overlap.read(definition.name)
            gated, changed, cancels = timed.gate_run(policy, state, decision, now)
            if changed == state or await self.overlap.write(definition.name, changed, revision):
                break
        # The slot is taken before the request goes out: a crash from here on redelivers
        # the tick, which finds its run active and republishes (deduplicated by run id, or
        # left out by the fence beyond the window) instead of starting a second one.
        for cancel in cancels:
            log.info(
                "cancelling run %s of %s (overlap=cancel_previous)", cancel.run_id, definition.name
            )
            await publish_event(self.broker, cancel, subjects.RUN_CANCEL)
        await self.publish(gated, delivery=delivery)

    async def release_timed(
        self, completed: RunCompleted, now: datetime, delivery: fence.Delivery | None = None
    ) -> None:
        """A run ended: free its overlap slot and start the buffered tick, if any."""
        if not timed.may_hold_a_slot(completed):
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
            # same (deduplicated or fenced) request, so the buffered tick is never lost.
            await self.publish(decision, delivery=delivery)
            if await self.overlap.write(completed.routine, changed, revision):
                return

    async def manual_context(
        self, definition: RoutineDefinition | None, submitted: SubmitRun
    ) -> manual.ManualContext:
        """What a manual run's event needs: the dataset cursor (read, never moved) or the
        upstream run (asked of the recorder, which owns run history)."""
        if definition is None or submitted.event is not None:
            return manual.ManualContext()
        trigger = definition.trigger
        if isinstance(trigger, DatasetAppendTrigger):
            cursor, _ = await self.cursors.load(definition.name)
            return manual.ManualContext(cursor=cursor or datasets.registered_cursor(definition))
        if isinstance(trigger, CompletionTrigger):
            history = self.history
            try:
                if submitted.upstream_run_id is not None:
                    found = await history.get_run(submitted.upstream_run_id)
                    return manual.ManualContext(upstream=found)
                status = None if trigger.status == "any" else trigger.status
                runs = await history.list_runs(RunQuery(routine=trigger.routine, status=status))
                return manual.ManualContext(upstream=manual.latest_upstream(runs, trigger))
            except ServiceUnavailable:
                return manual.ManualContext(
                    upstream_problem="the recorder does not answer, so the upstream run is "
                    "unknown: start the recorder and run it again"
                )
        return manual.ManualContext()

    async def on_polled(
        self, polled: PollCompleted, now: datetime, delivery: fence.Delivery | None = None
    ) -> None:
        """A poll function's result: a run (through the overlap policy) or a history row."""
        if polled.trigger is not None:
            await named_firing.on_polled(self, polled, delivery)
            return
        definition = await self.store.find(polled.routine)
        decision = timed.decide_poll_result(definition, polled, now)
        await self.start_timed(definition, decision, now, delivery)


class DatasetDispatch:
    """Turns `dataset.appended` into runs through per-routine cursors in the dispatch bucket."""

    def __init__(self, broker: NatsBroker, dispatcher: Dispatcher) -> None:
        self.broker = broker
        self.dispatcher = dispatcher

    async def on_appended(
        self, appended: DatasetAppended, delivery: fence.Delivery | None = None
    ) -> None:
        """Apply one append to every routine watching its dataset."""
        # The catalog's index only once it has caught up with the registry: a routine
        # registered a moment before the append must not miss it while the watch catches up.
        catalog = self.dispatcher.catalog
        definitions = await catalog.current_watching(appended.dataset, self.dispatcher.store)
        for definition in definitions:
            await self.apply(definition, appended, delivery)

    async def apply(
        self,
        definition: RoutineDefinition,
        appended: DatasetAppended,
        delivery: fence.Delivery | None = None,
    ) -> None:
        """Publish what the core decided, then move the cursor with compare-and-set.

        Exactly once across a SIGKILL at any point, because the cursor write is the commit:
        - killed before publishing: nothing happened; the message is redelivered (never
          acked) and decided again from the same cursor.
        - killed after publishing, before the cursor write: the redelivery decides again from
          the same cursor, so the same range, the same run id and the same Nats-Msg-Ids.
          Within the stream's duplicate window the stream drops the second copies; past it
          (a dispatcher down longer than MAINSPRING_DUPLICATE_WINDOW_S) the redelivery finds
          the requests stored after its append and leaves them out (see fence), however
          long the outage was.
        - killed after the cursor write, before the ack: the redelivery finds
          to_version <= seen_version and publishes nothing.
        The consumer has max_ack_pending=1, so appends are applied in stream order and a
        redelivered message is applied before any later one.
        """
        cursors = self.dispatcher.cursors
        for _ in range(10):
            cursor, revision = await cursors.load(definition.name)
            decision = datasets.decide_dataset_append(
                definition, cursor, appended, _now(), self.dispatcher.settings.max_hops
            )
            if decision.cursor is None:
                return
            await self.dispatcher.publish(
                core.Decision(requests=decision.requests, history=decision.history),
                delivery=delivery,
            )
            if await cursors.save(definition.name, decision.cursor, revision):
                return
            log.warning("cursor of %s moved concurrently; deciding again", definition.name)
        raise RuntimeError(f"cursor of {definition.name} keeps moving; retrying the message")


def _now() -> datetime:
    return datetime.now(UTC)


# For tests of a dispatcher dying between a request and its commit: when the file this names
# exists, the first request published removes it and ends the process on the spot.
DIE_AFTER_REQUEST = "MAINSPRING_DIE_AFTER_REQUEST"


def _die_after_request() -> None:
    marker = os.environ.get(DIE_AFTER_REQUEST)
    if marker and Path(marker).exists():
        Path(marker).unlink()
        log.warning("dying after a request, before its commit (%s)", DIE_AFTER_REQUEST)
        logging.shutdown()
        os._exit(70)
