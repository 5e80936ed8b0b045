"""The SDK client's calls for named triggers (mixed into `mainspring.client.Client`).

Definitions and activation are written to the `triggers` bucket; firings are asked of the
dispatcher (`trigger.fire`); history is asked of the recorder. A routine's own trigger
(the one in its run() signature) is listed as the trigger named after the routine, and
activating or deactivating it enables or disables the routine.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js import JetStreamContext

from mainspring.base.settings import Settings
from mainspring.client.audit import AuditCalls
from mainspring.client.trigger_replay import (
    ReplayReport,
    Subject,
    changed_definition,
    horizon,
    read_recorded,
    replay,
    stream_oldest,
)
from mainspring.contract import subjects
from mainspring.contract.messages import FireTrigger
from mainspring.runtime.bus import publish
from mainspring.sdk.triggers import TimedSpec
from mainspring.storage.named_triggers import (
    NamedTrigger,
    OnResume,
    TriggerError,
    TriggerStore,
    UpcomingFire,
    activated,
    deactivated,
    new_trigger,
    not_found,
    upcoming,
)
from mainspring.storage.registry import RoutineDefinition, RoutineStore

if TYPE_CHECKING:
    from mainspring.contract.queries import RunQuery


def _now() -> datetime:
    return datetime.now(UTC)


def own_trigger_view(definition: RoutineDefinition) -> dict[str, Any]:
    """A routine's own trigger, shown as the trigger named after the routine."""
    spec = definition.trigger
    view: dict[str, Any] = {
        "name": definition.name,
        "target": definition.name,
        "type": spec.kind,
        "own": True,
        "status": "active" if definition.enabled else "disabled",
        "disabled_reason": definition.disabled_reason,
    }
    if isinstance(spec, TimedSpec):
        view.update(cron=spec.cron, every=spec.every, tz=spec.tz)
    return view


def named_view(trigger: NamedTrigger) -> dict[str, Any]:
    """A named trigger as listed and shown."""
    return {**trigger.model_dump(mode="json"), "own": False}


class TriggerCalls(AuditCalls):
    """create/activate/deactivate/fire/list/show/events/delete of named triggers."""

    js: JetStreamContext
    settings: Settings
    _triggers: TriggerStore | None = None

    if TYPE_CHECKING:
        # Provided by Client, which this class is mixed into.
        async def store(self) -> RoutineStore: ...
        async def list_runs(self, query: RunQuery | None = None) -> list[dict[str, Any]]: ...
        async def trigger_events(self, name: str, limit: int = 50) -> list[dict[str, Any]]: ...

    async def trigger_store(self) -> TriggerStore:
        """The named triggers bucket."""
        if self._triggers is None:
            self._triggers = await TriggerStore.open(self.js)
        return self._triggers

    async def create_trigger(
        self,
        name: str,
        target: str,
        *,
        cron: str | None = None,
        every: str | None = None,
        push: bool = False,
        tz: str = "UTC",
        poll: str | None = None,
        payload: dict[str, Any] | None = None,
        on_resume: OnResume = "coalesce",
    ) -> NamedTrigger:
        """Define a trigger of `target` (any registry name); it is created inactive."""
        routines = await self.store()
        if await routines.find(target) is None:
            raise TriggerError(
                f"target {target!r} is not registered: register it first, e.g. "
                f"`mainspring routine create DIR --name {target}` (see `mainspring routine list`)"
            )
        if await routines.find(name) is not None:
            raise TriggerError(
                f"the name {name!r} is routine {name}'s own trigger: choose another trigger name"
            )
        trigger = new_trigger(
            name,
            target,
            _now(),
            cron=cron,
            every=every,
            push=push,
            tz=tz,
            poll_fn=poll,
            payload=payload,
            on_resume=on_resume,
        )
        await (await self.trigger_store()).create(trigger)
        return trigger

    async def _own(self, name: str) -> RoutineDefinition:
        """The routine whose own trigger is named `name`, or the not-found error."""
        definition = await (await self.store()).find(name)
        if definition is None:
            raise not_found(name)
        return definition

    async def activate_trigger(self, name: str, on_resume: OnResume | None = None) -> None:
        """Switch a trigger on; its last run is kept. Missed ticks: see `on_resume`."""
        triggers = await self.trigger_store()
        named = await triggers.find(name)
        if named is None:
            await self._own(name)
            await (await self.store()).set_enabled(name, True, None, _now())
        else:
            await triggers.change(name, lambda t: activated(t, _now(), on_resume))
        await self.record_action(
            "trigger.activate",
            "trigger",
            name,
            routine=named.target if named else name,
            details={"on_resume": on_resume} if on_resume else None,
        )

    async def deactivate_trigger(self, name: str, reason: str | None = None) -> None:
        """Switch a trigger off, keeping its definition and last run."""
        triggers = await self.trigger_store()
        named = await triggers.find(name)
        if named is None:
            await self._own(name)
            await (await self.store()).set_enabled(name, False, reason, _now())
        else:
            await triggers.change(name, lambda t: deactivated(t, _now(), reason, "user"))
        await self.record_action(
            "trigger.deactivate",
            "trigger",
            name,
            routine=named.target if named else name,
            reason=reason,
        )

    async def fire_trigger(self, name: str, payload: dict[str, Any] | None = None) -> str:
        """Fire an active trigger now with `payload` (None: its default); returns the run id."""
        if payload is not None and not isinstance(payload, dict):
            raise TriggerError('payload must be a JSON object, e.g. {"city": "Oslo"}')
        trigger = await (await self.trigger_store()).find(name)
        if trigger is None:
            if await (await self.store()).find(name) is not None:
                raise TriggerError(
                    f"{name!r} is routine {name}'s own trigger: start a run with "
                    f"`mainspring run {name}`"
                )
            raise not_found(name)
        if trigger.status != "active":
            raise TriggerError(
                f"trigger {name!r} is inactive: activate it with `mainspring trigger activate {name}`"
            )
        fire = FireTrigger(
            request_id=str(uuid.uuid4()),
            trigger=name,
            payload=payload,
            requested_by=self.actor(),
            requested_at=_now(),
        )
        await publish(self.js, fire, subjects.TRIGGER_FIRE)
        return fire.request_id

    async def list_triggers(self) -> list[dict[str, Any]]:
        """Named triggers and routines' own triggers, by name."""
        named = [named_view(t) for t in await (await self.trigger_store()).list()]
        own = [own_trigger_view(d) for d in await (await self.store()).list()]
        return sorted([*named, *own], key=lambda view: (view["name"], view["own"]))

    async def trigger_info(self, name: str) -> dict[str, Any]:
        """One trigger with its last run (`last_run_at`, `last_run_id`)."""
        triggers = await self.trigger_store()
        trigger = await triggers.find(name)
        if trigger is None:
            from mainspring.contract.queries import RunQuery

            view = own_trigger_view(await self._own(name))
            latest = await self.list_runs(RunQuery(routine=name, limit=1))
            view["last_run_id"] = latest[0]["id"] if latest else None
            view["last_run_at"] = latest[0]["created_at"] if latest else None
            return view
        last = await triggers.last_run(name)
        return {
            **named_view(trigger),
            "last_run_id": last.run_id if last else None,
            "last_run_at": last.run_at.isoformat() if last else None,
        }

    async def next_trigger_fires(self, name: str, count: int) -> list[UpcomingFire]:
        """The next `count` fire times of a timed trigger, with DST notes."""
        trigger = await (await self.trigger_store()).find(name)
        if trigger is not None:
            return upcoming(trigger.schedule(), _now(), count)
        spec = (await self._own(name)).trigger
        return upcoming(spec if isinstance(spec, TimedSpec) else None, _now(), count)

    async def delete_trigger(self, name: str) -> None:
        """Remove a named trigger (a routine's own trigger goes with its routine)."""
        triggers = await self.trigger_store()
        named = await triggers.find(name)
        if named is None and await (await self.store()).find(name):
            raise TriggerError(
                f"{name!r} is routine {name}'s own trigger: deactivate it, or delete the "
                f"routine with `mainspring routine delete {name}`"
            )
        await triggers.delete(name)
        await self.record_action(
            "trigger.delete", "trigger", name, routine=named.target if named else None
        )

    async def set_routine_enabled(self, routine: str, enabled: bool, reason: str | None) -> int:
        """`routine enable/disable`: the routine's own trigger, then its named triggers
        (see follow_routine_state); returns how many named triggers changed."""
        await (await self.store()).set_enabled(routine, enabled, reason, _now())
        changed = await self.follow_routine_state(routine, enabled, reason)
        await self.record_action(
            "routine.enable" if enabled else "routine.disable",
            "routine",
            routine,
            routine=routine,
            reason=reason,
            details={"named_triggers_changed": changed} if changed else None,
        )
        return changed

    async def delete_routine(self, routine: str) -> None:
        """`routine delete`: remove its definition (its bundle stays for runs in flight)."""
        await (await self.store()).delete(routine)
        await self.record_action("routine.delete", "routine", routine, routine=routine)

    async def follow_routine_state(self, routine: str, enabled: bool, reason: str | None) -> int:
        """`routine enable/disable` acts on the routine's named triggers too; returns how many.

        Disabling switches off the active ones (marked as switched off by the routine);
        enabling switches back on only those the routine or crash-loop protection switched
        off, never one a person deactivated.
        """
        triggers = await self.trigger_store()
        changed = 0
        for trigger in await triggers.targeting(routine):
            if not enabled and trigger.status == "active":
                await triggers.change(
                    trigger.name, lambda t: deactivated(t, _now(), reason, "routine")
                )
                changed += 1
            elif enabled and trigger.disabled_by in ("routine", "crash_loop", "circuit_breaker"):
                await triggers.change(trigger.name, lambda t: activated(t, _now(), None))
                changed += 1
        return changed

    async def replay_trigger(
        self, name: str, since: datetime, definition: dict[str, Any] | None = None
    ) -> ReplayReport:
        """Which runs a trigger (or `definition`'s changes to it) would have started since
        `since`, and why, from what the stream and the run history hold; starts none."""
        current = await (await self.trigger_store()).find(name)
        if definition is not None:
            trigger = changed_definition(name, current, definition, _now())
            subject = Subject(name, trigger.target, trigger.schedule(), trigger)
        elif current is not None:
            subject = Subject(name, current.target, current.schedule(), current)
        else:
            own = await self._own(name)
            subject = Subject(name, name, own.trigger)
        history = await self.trigger_events(name, limit=100_000)
        window = horizon(since, await stream_oldest(self.js), history)
        recorded = await read_recorded(self.js, window.start)
        return ReplayReport(subject, window, replay(subject, recorded, history, window, _now()))
