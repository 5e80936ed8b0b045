"""Dispatcher handlers: load definitions and state, decide (core), publish the decisions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from faststream.nats import NatsBroker, NatsMessage
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from mainspring import subjects
from mainspring.messages import RunCompleted, ScheduleFired, SubmitRun
from mainspring.registry import RoutineCatalog, RoutineStore
from mainspring.service import durable, parse_or_park, publish_event
from services.dispatcher import core
from services.dispatcher.settings import DispatcherSettings

log = logging.getLogger("mainspring.dispatcher")


class RunNumbers:
    """Per-routine run numbers, incremented with compare-and-set in the dispatch bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def next(self, routine: str) -> int:
        """The next run number of a routine."""
        key = f"number.{routine}"
        while True:
            try:
                entry = await self._kv.get(key)
                current, revision = int(entry.value or b"0"), entry.revision
            except (KeyNotFoundError, NotFoundError):
                current, revision = 0, 0
            try:
                if revision:
                    await self._kv.update(key, str(current + 1).encode(), revision)
                else:
                    await self._kv.create(key, str(current + 1).encode())
                return current + 1
            except (KeyWrongLastSequenceError, Exception) as exc:
                if not isinstance(
                    exc, KeyWrongLastSequenceError
                ) and "wrong last sequence" not in str(exc):
                    raise
                await asyncio.sleep(0)


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

    async def publish(self, decision: core.Decision) -> None:
        """Requests first (deduplicated by run id), then history and refusals."""
        for request in decision.requests:
            numbered = request.model_copy(
                update={"run_number": await self.numbers.next(request.routine)}
            )
            await publish_event(self.broker, numbered, subjects.RUN_REQUESTED)
            log.info(
                "requested run %s of %s (%s)",
                numbered.run_id,
                numbered.routine,
                numbered.trigger_kind,
            )
        for recorded in decision.history:
            await publish_event(self.broker, recorded, subjects.TRIGGER_RECORDED)
        for refused in decision.refused:
            log.warning("refused run %s of %s: %s", refused.run_id, refused.routine, refused.error)
            await publish_event(self.broker, refused, subjects.RUN_COMPLETED)


def _now() -> datetime:
    return datetime.now(UTC)


def register(broker: NatsBroker, dispatcher: Dispatcher) -> None:
    """Subscribe the dispatcher to manual requests, ticks and completions."""

    @broker.subscriber(**durable("dispatcher-submitted", subjects.RUN_SUBMITTED))
    async def on_run_submitted(message: NatsMessage) -> None:
        submitted = await parse_or_park(broker, message, SubmitRun)
        if submitted:
            definition = await dispatcher.store.find(submitted.routine)
            await dispatcher.publish(core.decide_manual(definition, submitted, _now()))

    @broker.subscriber(**durable("dispatcher-schedule", subjects.SCHEDULE_FIRED))
    async def on_schedule_fired(message: NatsMessage) -> None:
        fired = await parse_or_park(broker, message, ScheduleFired)
        if fired:
            definition = await dispatcher.store.find(fired.routine)
            await dispatcher.publish(core.decide_schedule(definition, fired, _now()))

    @broker.subscriber(**durable("dispatcher-completed", subjects.RUN_COMPLETED))
    async def on_run_completed(message: NatsMessage) -> None:
        completed = await parse_or_park(broker, message, RunCompleted)
        if completed:
            decision = core.decide_completion(
                dispatcher.catalog.all(), completed, _now(), dispatcher.settings.max_hops
            )
            await dispatcher.publish(decision)
