"""Ticker: a heap of next fire times, fed by the registry, publishing `schedule.fired`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mainspring.base.kv import key_token
from mainspring.contract import subjects
from mainspring.contract.messages import ScheduleFired
from mainspring.runtime.bus import publish, read_bucket
from mainspring.sdk.triggers import TimedSpec
from mainspring.storage.named_triggers import NamedTrigger, TriggerStore, resume_cursor
from mainspring.storage.registry import RoutineDefinition, RoutineStore
from mainspring_services.ticker import core
from mainspring_services.ticker.settings import TickerSettings

log = logging.getLogger("mainspring.ticker")

CURSOR_PREFIX = "last."
# Named triggers' cursors, apart from routines' (a trigger may share a routine's name).
TRIGGER_CURSOR_PREFIX = "trigger."
# Named triggers are held beside routines under this prefix, which no routine name starts
# with (a control character), so one heap and one cursor map serve both.
NAMED = "\x1ftrigger:"
LagObserver = Callable[[ScheduleFired, float], None]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Armed:
    """One enabled timed routine as the ticker holds it."""

    definition: RoutineDefinition | None
    spec: TimedSpec
    generation: int
    # A named trigger (its target is `target`); None: a routine's own trigger.
    trigger: str | None = None
    target: str = ""


def shown(name: str) -> str:
    """A held name as logs show it (a named trigger without its internal prefix)."""
    return f"trigger {name.removeprefix(NAMED)}" if name.startswith(NAMED) else name


def cursor_key(name: str) -> str:
    """Where a held name's cursor is saved in the TICKER bucket."""
    if name.startswith(NAMED):
        return TRIGGER_CURSOR_PREFIX + key_token(name.removeprefix(NAMED))
    return f"{CURSOR_PREFIX}{name}"


class Ticker:
    """Keeps every enabled schedule's next tick and fires it on time, once.

    The heap holds (when to look next, generation, routine); an entry whose generation
    is not the routine's current one is stale and skipped, so a registry change never
    needs a heap search. What was fired is the per-routine cursor, kept in memory and
    written to the TICKER bucket in batches.
    """

    def __init__(
        self,
        settings: TickerSettings,
        js: JetStreamContext | None = None,
        kv: KeyValue | None = None,
        lag_observer: LagObserver | None = None,
    ) -> None:
        self.settings = settings
        self.js = js
        self.kv = kv
        self.lag_observer = lag_observer
        self.armed: dict[str, Armed] = {}
        self.names_by_key: dict[str, str] = {}
        self.cursors: dict[str, datetime] = {}
        self.dirty: set[str] = set()
        # (when, generation, routine, whether `when` is the routine's next nominal tick)
        self.heap: list[tuple[datetime, int, str, bool]] = []
        self.generation = 0
        self.wakeup = asyncio.Event()
        self.in_flight = asyncio.Semaphore(settings.max_publishes_in_flight)
        self.changes_since_freeze = 0
        self.last_change = time.monotonic()
        self.trigger_cursors: dict[str, datetime] = {}

    async def load_cursors(self) -> None:
        """Read every persisted cursor once at start (no per-tick KV reads afterwards)."""
        assert self.js is not None
        stored = await read_bucket(self.js, subjects.TICKER_BUCKET, CURSOR_PREFIX)
        for key, value in stored.items():
            self.cursors[key.removeprefix(CURSOR_PREFIX)] = datetime.fromisoformat(value.decode())
        self.trigger_cursors = {
            key: datetime.fromisoformat(value.decode())
            for key, value in (
                await read_bucket(self.js, subjects.TICKER_BUCKET, TRIGGER_CURSOR_PREFIX)
            ).items()
        }

    def on_named_trigger(self, key: str, trigger: NamedTrigger | None, now: datetime) -> None:
        """A named trigger was created, (de)activated or deleted: (re)arm or drop it."""
        held = self.names_by_key.get(key) if trigger is None else NAMED + trigger.name
        if held is None:
            return
        self.names_by_key[key] = held
        spec = trigger.schedule() if trigger is not None else None
        if trigger is None or trigger.status != "active" or spec is None:
            self.armed.pop(held, None)
            return
        current = self.armed.get(held)
        if current is not None and core.same_timing(current.spec, spec):
            return
        self.generation += 1
        self.armed[held] = Armed(None, spec, self.generation, trigger.name, trigger.target)
        saved = self.trigger_cursors.get(cursor_key(held))
        last_fired = self.cursors.get(held, saved)
        cursor = resume_cursor(trigger, last_fired)
        self.cursors[held] = cursor
        self.arm(held, core.next_fire(spec, cursor), self.generation)

    def on_definition(self, key: str, definition: RoutineDefinition | None, now: datetime) -> None:
        """A routine was created, changed, disabled or deleted: (re)arm or drop it."""
        self.changes_since_freeze += 1
        self.last_change = time.monotonic()
        # A deletion names only the KV key, which may differ from the routine's name.
        name = definition.name if definition else self.names_by_key.get(key, key)
        if definition is not None:
            self.names_by_key[key] = definition.name
        trigger = definition.trigger if definition else None
        if definition is None or not definition.enabled or not isinstance(trigger, TimedSpec):
            self.armed.pop(name, None)
            return
        current = self.armed.get(name)
        if current is not None and core.same_timing(current.spec, trigger):
            # Same instants: keep the armed tick and cursor, so an update neither resets
            # nor doubles ticks; only the definition (version, policies) is refreshed.
            current.definition, current.spec = definition, trigger
            return
        self.generation += 1
        self.armed[name] = Armed(definition, trigger, self.generation)
        cursor = core.start_cursor(self.cursors.get(name), definition.updated_at)
        if current is not None:
            cursor = max(cursor, now)  # a changed schedule starts now, not in the past
        self.cursors[name] = cursor
        self.arm(name, core.next_fire(trigger, cursor), self.generation)

    def arm(self, name: str, when: datetime, generation: int, nominal: bool = True) -> None:
        """Look at a routine again at `when` (its next tick, or a retry when not nominal)."""
        if not self.heap or when < self.heap[0][0]:
            self.wakeup.set()
        heapq.heappush(self.heap, (when, generation, name, nominal))

    def next_due(self) -> datetime | None:
        """When the earliest armed routine needs a look."""
        while self.heap:
            when, generation, name, _ = self.heap[0]
            current = self.armed.get(name)
            if current is not None and current.generation == generation:
                return when
            heapq.heappop(self.heap)  # stale: superseded, disabled or deleted
        return None

    def plan_due(self, now: datetime) -> list[tuple[str, Armed, core.TickPlan]]:
        """Pop every routine whose look is due and decide its ticks by catch-up policy."""
        grace = timedelta(seconds=self.settings.misfire_grace_s)
        window = timedelta(seconds=self.settings.default_catchup_window_s)
        plans = []
        while self.heap and self.heap[0][0] <= now:
            when, generation, name, nominal = heapq.heappop(self.heap)
            armed = self.armed.get(name)
            if armed is None or armed.generation != generation:
                continue
            plan = core.due_ticks(
                armed.spec,
                self.cursors[name],
                now,
                grace=grace,
                default_window=window,
                armed=when if nominal else None,
            )
            if plan.missed:
                log.warning(
                    "%s: %d missed tick(s) dropped by catchup=%s",
                    shown(name),
                    plan.missed,
                    armed.spec.catchup,
                )
            plans.append((name, armed, plan))
        return plans

    async def fire_due(self, now: datetime) -> int:
        """Fire every due tick; returns how many were published."""
        plans = self.plan_due(now)
        if not plans:
            return 0
        outcomes = await asyncio.gather(
            *(self.fire_plan(name, armed, plan) for name, armed, plan in plans)
        )
        retry_at = now + timedelta(seconds=1)
        for (name, armed, plan), published in zip(plans, outcomes, strict=True):
            if armed is not self.armed.get(name):
                continue  # changed while publishing; on_definition re-armed it
            if published and plan.cursor is not None:
                if plan.cursor != self.cursors[name]:
                    self.cursors[name] = plan.cursor
                    self.dirty.add(name)
                if plan.more:
                    self.arm(name, now, armed.generation, nominal=False)
                else:
                    self.arm(name, core.next_fire(armed.spec, plan.cursor), armed.generation)
            else:
                # The bus refused: keep the cursor so the same ticks go out on retry.
                self.arm(name, retry_at, armed.generation, nominal=False)
        return sum(len(plan.fire) for _, _, plan in plans)

    async def fire_plan(self, name: str, armed: Armed, plan: core.TickPlan) -> bool:
        """Publish one routine's due ticks, oldest first; False if the bus refused."""
        try:
            async with self.in_flight:
                await self._publish_ticks(name, armed, plan)
        except Exception as exc:  # noqa: BLE001 - retried
            log.error("publishing ticks of %s failed (%s); retrying", shown(name), exc)
            return False
        return True

    async def _publish_ticks(self, name: str, armed: Armed, plan: core.TickPlan) -> None:
        for due in plan.fire:
            await self.publish(
                ScheduleFired(
                    routine=armed.target if armed.trigger else name,
                    scheduled_at=due,
                    fired_at=_now(),
                    routine_version=armed.definition.version if armed.definition else "",
                    trigger=armed.trigger,
                )
            )

    async def publish(self, fired: ScheduleFired) -> None:
        """Publish one tick with its deterministic Nats-Msg-Id (routine + nominal time).

        Two tickers, or a restart that re-fires a tick whose cursor was not yet saved,
        publish the same id, and JetStream keeps only the first inside its duplicate window.
        """
        assert self.js is not None
        await publish(self.js, fired, subjects.SCHEDULE_FIRED)
        if self.lag_observer is not None:
            self.lag_observer(fired, time.time())

    async def persist(self) -> None:
        """Write the cursors that moved since the last call (one put per routine)."""
        if not self.dirty or self.kv is None:
            return
        names, self.dirty = self.dirty, set()
        kv = self.kv
        results = await asyncio.gather(
            *(
                kv.put(cursor_key(name), self.cursors[name].isoformat().encode())
                for name in names
                if name in self.cursors
            ),
            return_exceptions=True,
        )
        if any(isinstance(r, BaseException) for r in results):
            self.dirty |= names  # try again next round
            log.warning("saving tick cursors failed; retrying")

    def freeze_loaded(self, quiet_s: float = 2.0, min_changes: int = 1000) -> bool:
        """Move the loaded schedules out of the garbage collector's sight, once loading is quiet.

        With 100k schedules the full collections CPython runs now and then walk millions of
        long-lived objects and stall the loop for hundreds of milliseconds, which is tick
        lag. After a bulk of registry changes has settled, one collection then gc.freeze()
        leaves only new objects for later collections.
        """
        if self.changes_since_freeze < min_changes:
            return False
        if time.monotonic() - self.last_change < quiet_s:
            return False
        gc.collect()
        gc.freeze()
        self.changes_since_freeze = 0
        log.info("%d schedules armed; loaded state frozen for the collector", len(self.armed))
        return True

    async def persist_loop(self) -> None:
        """Save cursors every persist_interval_s.

        Batching is safe: a crash loses at most one interval of cursor progress, and the
        ticks re-fired after restart carry the same Nats-Msg-Id, which the stream's
        duplicate window (minutes) drops.
        """
        try:
            while True:
                await asyncio.sleep(self.settings.persist_interval_s)
                await self.persist()
                self.freeze_loaded()
        finally:
            with contextlib.suppress(Exception):
                await self.persist()

    async def loop(self) -> None:
        """Sleep until the next tick or a registry change, then fire what is due."""
        while True:
            self.wakeup.clear()
            due = self.next_due()
            delay = (due - _now()).total_seconds() if due is not None else 3600.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=delay)
                continue
            try:
                await self.fire_due(_now())
            except Exception:
                log.exception("firing ticks failed; retrying in 1s")
                await asyncio.sleep(1)

    async def follow_registry(self, store: RoutineStore) -> None:
        """Apply registry changes as they happen."""
        async for key, definition, _ in store.watch():
            try:
                self.on_definition(key, definition, _now())
            except Exception:
                log.exception("cannot schedule routine %s; left unarmed", key)

    async def follow_triggers(self, store: TriggerStore) -> None:
        """Apply named trigger changes as they happen."""
        async for key, trigger in store.watch():
            try:
                self.on_named_trigger(key, trigger, _now())
            except Exception:
                log.exception("cannot schedule trigger %s; left unarmed", key)
