"""Ticker: a heap of next fire times, fed by the registry, publishing `schedule.fired`."""

from __future__ import annotations

import asyncio
import heapq
import logging
from datetime import UTC, datetime, timedelta

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from mainspring import subjects
from mainspring.messages import ScheduleFired
from mainspring.registry import RoutineDefinition, RoutineStore
from mainspring.service import publish_event
from mainspring.triggers import TimedSpec
from services.ticker import core
from services.ticker.settings import TickerSettings

log = logging.getLogger("mainspring.ticker")


def _now() -> datetime:
    return datetime.now(UTC)


class Ticker:
    """Keeps every enabled schedule's next tick and fires it on time, once."""

    def __init__(self, broker: NatsBroker, settings: TickerSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.kv: KeyValue | None = None
        self.schedules: dict[str, tuple[RoutineDefinition, int]] = {}
        self.heap: list[tuple[datetime, int, str]] = []
        self.generation = 0
        self.wakeup = asyncio.Event()

    async def last_fired(self, routine: str) -> datetime | None:
        """The last tick fired for a routine (survives restarts)."""
        assert self.kv is not None
        try:
            entry = await self.kv.get(f"last.{routine}")
        except (KeyNotFoundError, NotFoundError):
            return None
        return datetime.fromisoformat(entry.value.decode()) if entry.value else None

    async def on_definition(self, key: str, definition: RoutineDefinition | None) -> None:
        """A routine was created, changed or deleted: reschedule it."""
        self.generation += 1
        if (
            definition is None
            or not definition.enabled
            or not isinstance(definition.trigger, TimedSpec)
        ):
            self.schedules.pop(definition.name if definition else key, None)
            return
        self.schedules[definition.name] = (definition, self.generation)
        now = _now()
        last = await self.last_fired(definition.name)
        next_tick = core.next_fire(definition.trigger, last or now)
        heapq.heappush(self.heap, (next_tick, self.generation, definition.name))
        self.wakeup.set()

    async def fire_due(self, now: datetime) -> None:
        """Fire every tick whose time has come, with the routine's catch-up policy."""
        while self.heap and self.heap[0][0] <= now:
            tick, generation, name = heapq.heappop(self.heap)
            current = self.schedules.get(name)
            if current is None or current[1] != generation:
                continue  # superseded by a newer definition
            definition = current[0]
            spec = definition.trigger
            assert isinstance(spec, TimedSpec)
            last = await self.last_fired(name)
            window = timedelta(seconds=self.settings.default_catchup_window_s)
            ticks = core.due_ticks(spec, last, now, window) if last else [tick]
            for due in ticks:
                await publish_event(
                    self.broker,
                    ScheduleFired(
                        routine=name,
                        scheduled_at=due,
                        fired_at=_now(),
                        routine_version=definition.version,
                    ),
                    subjects.SCHEDULE_FIRED,
                )
            assert self.kv is not None
            fired_up_to = max([tick, *ticks])
            await self.kv.put(f"last.{name}", fired_up_to.isoformat().encode())
            heapq.heappush(
                self.heap, (core.next_fire(spec, max(fired_up_to, now)), generation, name)
            )

    async def loop(self) -> None:
        """Sleep until the next tick or a registry change, then fire what is due."""
        while True:
            self.wakeup.clear()
            delay = (self.heap[0][0] - _now()).total_seconds() if self.heap else 3600.0
            if delay > 0:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=delay)
                    continue
                except TimeoutError:
                    pass
            try:
                await self.fire_due(_now())
            except Exception:
                log.exception("firing ticks failed; retrying in 1s")
                await asyncio.sleep(1)

    async def follow_registry(self, store: RoutineStore) -> None:
        """Apply registry changes as they happen."""
        async for key, definition in store.watch():
            await self.on_definition(key, definition)
