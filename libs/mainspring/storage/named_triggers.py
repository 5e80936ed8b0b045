"""Named triggers kept as data (lythonic's TriggerConfig): definitions, activation, last run.

A named trigger fires a registered target (a routine, or any other registry entry such as
a DAG) on a cron or an interval (`poll`, optionally asking a poll function first) or only
when called (`push`). It is created inactive; the record in the `triggers` bucket is the
one owner of its activation. Its firings go through the ticker and the dispatcher like a
routine's own trigger, so a slow run never delays another trigger.

The pure parts (validation, where the ticker resumes, next fire times) are functions here;
`TriggerStore` is the bucket.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mainspring.base.kv import (
    TooManyConflicts,
    compare_and_set,
    key_token,
    read,
    write_if_unchanged,
)
from mainspring.base.schedules import ScheduleError, next_timed_fire, parse_tz, upcoming_fires
from mainspring.contract import subjects
from mainspring.sdk.triggers import ScheduleTrigger, TimedSpec

TriggerType = Literal["poll", "push"]
TriggerStatus = Literal["active", "disabled"]
# What activation does with the ticks a deactivated trigger missed: fire none, or one.
OnResume = Literal["drop", "coalesce"]
ON_RESUME_CHOICES: tuple[OnResume, ...] = ("drop", "coalesce")
# Who deactivated it: a person, `routine disable` of its target, or crash-loop protection.
DeactivatedBy = Literal["user", "routine", "crash_loop", "circuit_breaker"]

DEFINITION_PREFIX = "def."
LAST_RUN_PREFIX = "last."
_POLL_FN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class TriggerError(LookupError):
    """A named trigger that is missing, exists already, or is defined wrongly (one line, with the fix)."""


class NamedTrigger(BaseModel):
    """One named trigger as stored: what fires which target, and whether it is active."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    target: str = Field(min_length=1)
    type: TriggerType
    cron: str | None = None
    every: str | None = None
    tz: str = "UTC"
    # module:function in the target's code bundle: a dict fires with it, None skips.
    poll_fn: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    on_resume: OnResume = "coalesce"
    status: TriggerStatus = "disabled"
    disabled_reason: str | None = None
    disabled_by: DeactivatedBy | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    # When it was last activated: a `drop` trigger never fires a tick from before it.
    activated_at: AwareDatetime | None = None

    def schedule(self) -> ScheduleTrigger | None:
        """The timing the ticker arms (None for a push trigger).

        catchup="latest": after downtime the missed ticks fire at most once, as in lythonic.
        overlap="allow": a slow run never holds back the next firing.
        """
        if self.type != "poll":
            return None
        return ScheduleTrigger(
            cron=self.cron, every=self.every, tz=self.tz, catchup="latest", overlap="allow"
        )

    def check(self) -> NamedTrigger:
        """Raise TriggerError (one line, naming the fix) unless the definition can fire."""
        if self.type == "push":
            if self.cron or self.every or self.poll_fn:
                raise TriggerError(
                    f"trigger {self.name}: a push trigger fires only when called; leave out "
                    "--cron, --every and --poll, or drop --push"
                )
        else:
            spec = self.schedule()
            assert spec is not None
            try:
                spec.check_timing()
            except ScheduleError as exc:
                raise TriggerError(f"trigger {self.name}: {_as_flags(str(exc))}") from None
        try:
            parse_tz(self.tz)
        except ScheduleError as exc:
            raise TriggerError(f"trigger {self.name}: {exc}") from None
        if self.poll_fn is not None and not _POLL_FN.match(self.poll_fn):
            raise TriggerError(
                f"trigger {self.name}: --poll {self.poll_fn!r} is not module:function, "
                "e.g. --poll checks:new_orders"
            )
        return self


def _as_flags(message: str) -> str:
    # The schedule checks speak the SDK's keyword arguments; the trigger is made with flags.
    return re.sub(
        r"\b(cron|every|tz)=(['\"\w]?)",
        lambda m: f"--{m[1]}" + (f" {m[2]}" if m[2] else ""),
        message,
    )


def new_trigger(
    name: str,
    target: str,
    now: datetime,
    *,
    cron: str | None = None,
    every: str | None = None,
    push: bool = False,
    tz: str = "UTC",
    poll_fn: str | None = None,
    payload: dict[str, Any] | None = None,
    on_resume: OnResume = "coalesce",
) -> NamedTrigger:
    """A checked, inactive trigger definition."""
    if not push and cron is None and every is None:
        raise TriggerError(
            f"trigger {name}: say when it fires: --cron EXPR, --every INTERVAL, or --push "
            "(fires only when called)"
        )
    if payload is not None and not isinstance(payload, dict):
        raise TriggerError(
            f'trigger {name}: --payload must be a JSON object, e.g. --payload \'{{"city": "Oslo"}}\''
        )
    if on_resume not in ON_RESUME_CHOICES:
        raise TriggerError(f"trigger {name}: --on-resume {on_resume!r}: use drop or coalesce")
    return NamedTrigger(
        name=name,
        target=target,
        type="push" if push else "poll",
        cron=cron,
        every=every,
        tz=tz,
        poll_fn=poll_fn,
        payload=payload or {},
        on_resume=on_resume,
        created_at=now,
        updated_at=now,
    ).check()


# What a declaration in code decides; the rest of a stored trigger (activation, who
# switched it off, when it was created, its on-resume choice) belongs to the record.
DECLARED_FIELDS = ("target", "type", "cron", "every", "tz", "poll_fn", "payload")


def redefined(current: NamedTrigger, declared: NamedTrigger, now: datetime) -> NamedTrigger:
    """`current` with the timing, target and payload its code now declares; its activation
    and last run are kept (re-registering a namespace switches nothing on or off)."""
    changes = {
        name: getattr(declared, name)
        for name in DECLARED_FIELDS
        if getattr(declared, name) != getattr(current, name)
    }
    if not changes:
        return current
    return current.model_copy(update={**changes, "updated_at": now})


def activated(trigger: NamedTrigger, now: datetime, on_resume: OnResume | None) -> NamedTrigger:
    """The trigger switched on (its last run is kept: it lives under its own key)."""
    return trigger.model_copy(
        update={
            "status": "active",
            "disabled_reason": None,
            "disabled_by": None,
            "activated_at": now,
            "updated_at": now,
            "on_resume": on_resume or trigger.on_resume,
        }
    )


def deactivated(
    trigger: NamedTrigger, now: datetime, reason: str | None, by: DeactivatedBy
) -> NamedTrigger:
    """The trigger switched off, saying by whom and why."""
    return trigger.model_copy(
        update={
            "status": "disabled",
            "disabled_reason": reason,
            "disabled_by": by,
            "updated_at": now,
        }
    )


def resume_cursor(trigger: NamedTrigger, last_fired: datetime | None) -> datetime:
    """Where the ticker's tick history of an active trigger starts (it fires what follows).

    A tick fired before this trigger was created belongs to an older trigger of the same
    name. A first activation never fires a tick from before it. On re-activation, "drop"
    fires nothing from before it; "coalesce" fires the ticks missed while deactivated as one
    firing, the latest of them: the cursor sits just before that tick, so the ticker's
    misfire grace cannot add a second one. Ticks missed while the ticker was down (the
    trigger active) fire at most once by the schedule's catchup="latest".
    """
    since = trigger.activated_at or trigger.updated_at
    if last_fired is None or last_fired < trigger.created_at:
        return since
    if last_fired >= since:
        return last_fired
    if trigger.on_resume == "drop":
        return since
    spec = trigger.schedule()
    missed = latest_tick(spec, last_fired, since) if spec is not None else None
    return last_fired if missed is None else missed - timedelta(microseconds=1)


def latest_tick(spec: TimedSpec, after: datetime, until: datetime) -> datetime | None:
    """The most recent tick in (after, until], found without walking the whole range."""
    lookback = timedelta(minutes=1)
    while True:
        start = max(after, until - lookback)
        latest = None
        cursor = start
        while (tick := next_fire(spec, cursor)) <= until:
            latest, cursor = tick, tick
        if latest is not None or start == after:
            return latest
        lookback *= 2


def next_fire(spec: TimedSpec, after: datetime) -> datetime:
    """The first tick strictly after `after` (the ticker's own arithmetic)."""
    return next_timed_fire(spec.cron, spec.every, spec.tz, after, spec.dst_repeat, spec.offset)


@dataclass(frozen=True)
class UpcomingFire:
    """One future fire time: in UTC, on the trigger's wall clock, and why DST moved it."""

    utc: datetime
    local: datetime
    dst_note: str | None


def upcoming(spec: TimedSpec | None, after: datetime, count: int) -> list[UpcomingFire]:
    """The next `count` fire times of a timed trigger (none for a push trigger).

    The ticker's own arithmetic, so the list names the ticks that will fire.
    """
    if count < 0:
        raise TriggerError(
            f"--next {count} is negative: give how many fire times to list, e.g. --next 5"
        )
    if spec is None:
        return []
    zone = parse_tz(spec.tz)
    fires = upcoming_fires(
        spec.cron, spec.every, spec.tz, after, count, spec.dst_repeat, spec.offset
    )
    return [UpcomingFire(fire.astimezone(UTC), fire.astimezone(zone), note) for fire, note in fires]


class LastRun(BaseModel):
    """The latest run a trigger started (written by the dispatcher)."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    run_at: AwareDatetime


def newer_last_run(current: bytes | None, candidate: LastRun) -> bytes:
    """Keep whichever run is newer, so two dispatchers racing cannot move it back."""
    if current:
        stored = LastRun.model_validate_json(current)
        if stored.run_at >= candidate.run_at:
            return current
    return candidate.model_dump_json().encode()


def not_found(name: str) -> TriggerError:
    """The one-line error for a trigger name nobody defined."""
    return TriggerError(
        f"trigger {name!r} does not exist: see `mainspring trigger list`, or create it with "
        f"`mainspring trigger create {name} --target ROUTINE --cron EXPR`"
    )


class TriggerStore:
    """Named trigger definitions and their last runs in the `triggers` bucket."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext) -> TriggerStore:
        """Bind to the declared bucket."""
        return cls(await js.key_value(subjects.TRIGGERS_BUCKET), js)

    async def create(self, trigger: NamedTrigger) -> None:
        """Store a new definition; an existing name is an error naming the fix."""
        key = DEFINITION_PREFIX + key_token(trigger.name)
        written = await write_if_unchanged(self._kv, key, trigger.model_dump_json().encode(), 0)
        if written is None:
            raise TriggerError(
                f"trigger {trigger.name!r} exists already: delete it first with "
                f"`mainspring trigger delete {trigger.name}`, or choose another name"
            )

    async def declare(self, declared: NamedTrigger, now: datetime) -> NamedTrigger:
        """Create a trigger declared in code, inactive; one that exists takes the declared
        definition and keeps its activation and last run."""
        current = await self.find(declared.name)
        if current is None:
            key = DEFINITION_PREFIX + key_token(declared.name)
            if await write_if_unchanged(self._kv, key, declared.model_dump_json().encode(), 0):
                return declared
        elif redefined(current, declared, now) is current:
            return current  # unchanged: no new revision for the ticker to re-arm on
        return await self.change(declared.name, lambda t: redefined(t, declared, now))

    async def find(self, name: str) -> NamedTrigger | None:
        """One definition, or None."""
        value, _ = await read(self._kv, DEFINITION_PREFIX + key_token(name))
        return NamedTrigger.model_validate_json(value) if value else None

    async def get(self, name: str) -> NamedTrigger:
        """One definition, or TriggerError naming the fix."""
        found = await self.find(name)
        if found is None:
            raise not_found(name)
        return found

    async def list(self) -> list[NamedTrigger]:
        """Every definition, sorted by name."""
        # The bucket stream's per-subject state, not KeyValue.keys(): on a busy machine the
        # latter's watch can close before the first key arrives and report none.
        prefix = f"$KV.{subjects.TRIGGERS_BUCKET}."
        info = await self._js.stream_info(
            f"KV_{subjects.TRIGGERS_BUCKET}", subjects_filter=f"{prefix}{DEFINITION_PREFIX}>"
        )
        found: list[NamedTrigger] = []
        for subject in info.state.subjects or {}:
            value, _ = await read(self._kv, subject[len(prefix) :])
            if value:
                found.append(NamedTrigger.model_validate_json(value))
        return sorted(found, key=lambda t: t.name)

    async def change(
        self, name: str, change: Callable[[NamedTrigger], NamedTrigger]
    ) -> NamedTrigger:
        """Apply `change` with compare-and-set (a concurrent writer makes it read again)."""
        await self.get(name)

        def apply(current: bytes | None) -> bytes:
            if not current:
                raise not_found(name)
            return change(NamedTrigger.model_validate_json(current)).model_dump_json().encode()

        try:
            written = await compare_and_set(
                self._kv, DEFINITION_PREFIX + key_token(name), apply, attempts=10
            )
        except TooManyConflicts:
            raise TriggerError(
                f"trigger {name!r} changed too often concurrently; try again"
            ) from None
        return NamedTrigger.model_validate_json(written)

    async def delete(self, name: str) -> None:
        """Remove a definition and its last run."""
        await self.get(name)
        await self._kv.delete(DEFINITION_PREFIX + key_token(name))
        await self._kv.delete(LAST_RUN_PREFIX + key_token(name))

    async def record_run(self, name: str, run_id: str, at: datetime) -> None:
        """Remember the run a firing started (kept across deactivate and activate)."""
        candidate = LastRun(run_id=run_id, run_at=at)
        await compare_and_set(
            self._kv,
            LAST_RUN_PREFIX + key_token(name),
            lambda current: newer_last_run(current, candidate),
        )

    async def last_run(self, name: str) -> LastRun | None:
        """The latest run the trigger started, if any."""
        value, _ = await read(self._kv, LAST_RUN_PREFIX + key_token(name))
        return LastRun.model_validate_json(value) if value else None

    async def targeting(self, target: str) -> builtins.list[NamedTrigger]:
        """The triggers that fire `target`."""
        return [t for t in await self.list() if t.target == target]

    async def watch(self) -> AsyncIterator[tuple[str, NamedTrigger | None]]:
        """Every current definition, then each change, as (bucket key, definition or None)."""
        watcher = await self._kv.watch(DEFINITION_PREFIX + ">")
        async for entry in watcher:
            if entry is None:
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                yield entry.key, None
            else:
                yield entry.key, NamedTrigger.model_validate_json(entry.value)
