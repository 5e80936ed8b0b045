"""The routine registry: definitions in JetStream KV, code bundles in the object store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta
from nats.js.errors import KeyNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mainspring.base.kv import TooManyConflicts, compare_and_set_from, key_token
from mainspring.base.units import parse_memory
from mainspring.contract import subjects
from mainspring.contract.messages import DefinitionKind, Isolation, Priority
from mainspring.sdk.routine import RUN_METHOD, InputSpec, Routine
from mainspring.sdk.triggers import AnyTrigger, CompletionTrigger, DatasetAppendTrigger


class RegistryError(LookupError):
    """A routine is not registered; the message says how to register it."""


class InputSchema(BaseModel):
    """One input of a routine as stored: type name, default, optional."""

    model_config = ConfigDict(frozen=True)
    type: str
    default: Any = None
    optional: bool = False

    def spec(self) -> InputSpec:
        """As an InputSpec for validation."""
        return InputSpec(type=self.type, default=self.default, optional=self.optional)


class RoutineOptions(BaseModel):
    """Per-routine execution options (from class attributes)."""

    model_config = ConfigDict(frozen=True)
    timeout_s: float | None = None
    memory_limit: int | None = None
    retries: int = 0
    retry_backoff_s: float = 1.0
    max_hops: int | None = None
    max_concurrent: int | None = None
    allow_in_memory: bool = False
    isolation: Isolation = "worker"
    # Which runs the runners take first (a run may ask for another).
    priority: Priority = "normal"
    # The circuit breaker: more triggered runs than this within the window pause the routine.
    max_fires: int | None = Field(default=300, ge=1)
    max_fires_window_s: float = Field(default=60.0, gt=0)


def routine_options(cls: type[Routine]) -> RoutineOptions:
    """A routine class's execution options, checked as registration checks them."""
    return RoutineOptions(
        timeout_s=cls.timeout_s,
        memory_limit=parse_memory(cls.memory) if cls.memory else None,
        retries=cls.retries,
        retry_backoff_s=cls.retry_backoff_s,
        max_hops=cls.max_hops,
        max_concurrent=cls.max_concurrent,
        allow_in_memory=cls.allow_in_memory,
        isolation=cls.isolation,
        priority=cls.priority,
        max_fires=cls.max_fires,
        max_fires_window_s=fires_window_seconds(cls),
    )


class MethodSchema(BaseModel):
    """A declared method besides run() as stored: its inputs and in-memory permission."""

    model_config = ConfigDict(frozen=True)
    inputs: dict[str, InputSchema] = Field(default_factory=dict)
    in_memory: bool = False
    constructor: bool = False

    def input_specs(self) -> dict[str, InputSpec]:
        """Input specs for validation."""
        return {name: schema.spec() for name, schema in self.inputs.items()}


def fires_window_seconds(cls: type[Routine]) -> float:
    """The circuit breaker's window in seconds, from `max_fires_window` ("30s", "1m", "1h")."""
    from mainspring.base.schedules import ScheduleError, parse_every

    try:
        return parse_every(cls.max_fires_window).total_seconds()
    except ScheduleError as exc:
        raise RegistryError(
            f"routine {cls.__name__}: max_fires_window {cls.max_fires_window!r} is not an "
            f'interval: give one like "30s", "1m" or "1h" ({exc})'
        ) from None


DisabledBy = Literal["user", "crash_loop", "circuit_breaker"]


class DatasetStart(BaseModel):
    """Where a dataset routine's cursor starts: the dataset as `routine create` found it.

    The dispatcher owns cursors; registration only observes the dataset, so rows that existed
    before the routine never fire it. The dispatcher seeds the cursor from this at the first
    append it sees for a routine with no cursor (an existing cursor is kept across updates).
    """

    model_config = ConfigDict(frozen=True)
    dataset: str
    version: int = Field(ge=-1)
    records: int | None = None
    # The table's metaData.id, so a table deleted and created again before the first append
    # restarts the cursor instead of hiding below the old table's version.
    table_id: str | None = None


class RoutineDefinition(BaseModel):
    """A registered routine instance: code version, trigger, inputs, state of its trigger."""

    model_config = ConfigDict(frozen=True)
    name: str
    version: str
    entrypoint: str
    class_name: str
    trigger_param: str
    trigger: AnyTrigger = Field(discriminator="kind")
    inputs: dict[str, InputSchema] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    options: RoutineOptions = Field(default_factory=RoutineOptions)
    enabled: bool = True
    disabled_reason: str | None = None
    # Who turned the trigger off: a person, or crash-loop protection (re-armed by new code).
    disabled_by: DisabledBy | None = None
    dataset_start: DatasetStart | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    # An entry is a routine instance: `routine` names its blueprint ("" for entries written
    # before instances existed: the blueprint of the same name), and the instance either
    # follows the blueprint's latest version or stays on `version`.
    routine: str = ""
    follow_latest: bool = True
    # The configuration its last constructor (`configure`) run was given.
    config: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, MethodSchema] = Field(default_factory=dict)

    @property
    def blueprint(self) -> str:
        """The routine (blueprint) this instance configures."""
        return self.routine or self.name

    def constructor(self) -> str | None:
        """The name of the instance's constructor method, if its routine has one."""
        return next((name for name, m in self.methods.items() if m.constructor), None)

    # "dag": `entrypoint` is `module.py:namespace` and `name` the DAG's nsref (mainspring.compose).
    kind: DefinitionKind = "routine"

    def input_specs(self) -> dict[str, InputSpec]:
        """Input specs with the instance's --set defaults applied."""
        return {
            name: InputSpec(
                type=s.type, default=self.defaults.get(name, s.default), optional=s.optional
            )
            for name, s in self.inputs.items()
        }


def method_input_specs(definition: RoutineDefinition, method: str) -> dict[str, InputSpec]:
    """The inputs of one of the instance's methods (run(): with its --set defaults)."""
    if method == RUN_METHOD:
        return definition.input_specs()
    return definition.methods[method].input_specs()


def unknown_method(definition: RoutineDefinition, method: str) -> str | None:
    """Why `method` cannot run on this instance (None: it can)."""
    if method == RUN_METHOD or method in definition.methods:
        return None
    known = ", ".join([RUN_METHOD, *sorted(definition.methods)])
    return (
        f"routine {definition.blueprint} has no method {method!r}: instance {definition.name} "
        f"can run {known} (declare others with @method)"
    )


def in_memory_refusal(definition: RoutineDefinition, method: str) -> str | None:
    """Why `method` of this instance may not run in memory (None: it may).

    run() follows the class's `allow_in_memory`; every other method decides for itself.
    """
    if method == RUN_METHOD:
        if definition.options.allow_in_memory:
            return None
        return (
            f"routine {definition.name} does not allow in-memory runs: set "
            "`allow_in_memory = True` on its class and re-register it, or run it without "
            "--in-memory"
        )
    declared = definition.methods.get(method)
    if declared is None or declared.in_memory:
        return None  # an unknown method is refused by the manual decision, naming the known
    return (
        f"method {method} of routine {definition.blueprint} does not allow in-memory runs: "
        f"declare it with `@method(in_memory=True)` and re-register, or run it without "
        "--in-memory"
    )


def carry_trigger_state(
    existing: RoutineDefinition | None, new: RoutineDefinition, enable: bool | None
) -> tuple[RoutineDefinition, str]:
    """A re-registered routine keeps its trigger on or off, and a sentence saying which.

    `enable` (True or False) decides outright. Otherwise a trigger a person disabled stays
    disabled, and one disabled by crash-loop protection is re-armed only by different code.
    """
    if enable is not None or existing is None:
        on = True if enable is None else enable
        state = {"enabled": on, "disabled_reason": None, "disabled_by": None if on else "user"}
        note = (
            ""
            if existing is None and enable is None
            else f"trigger {'enabled' if on else 'disabled'}"
        )
    elif existing.enabled:
        state, note = {"enabled": True}, ""
    elif existing.disabled_by == "crash_loop" and existing.version != new.version:
        state = {"enabled": True, "disabled_reason": None, "disabled_by": None}
        note = "new code: trigger re-armed after crash-loop protection disabled it"
    else:
        state = {
            "enabled": False,
            "disabled_reason": existing.disabled_reason,
            "disabled_by": existing.disabled_by,
        }
        why = f" ({existing.disabled_reason})" if existing.disabled_reason else ""
        note = f"trigger stays disabled{why}: pass --enable to turn it on"
    return new.model_copy(update={**state, "created_at": (existing or new).created_at}), note


def _key(name: str) -> str:
    return key_token(name)


# Kept in a bundle's object description: when a sweep first found nothing using it.
UNREFERENCED_MARK = "unreferenced since "
# How long a bundle stays unreferenced before a sweep deletes it.
BUNDLE_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class StoredBundle:
    """A code bundle in the object store and when a sweep first found it unreferenced."""

    digest: str
    unreferenced_since: datetime | None = None


@dataclass(frozen=True)
class BundleSweep:
    """What one sweep of the bundle store does."""

    mark: list[str]
    unmark: list[str]
    delete: list[str]


def unreferenced_since(description: str | None) -> datetime | None:
    """The time in an unreferenced mark (None: no mark)."""
    if not description or not description.startswith(UNREFERENCED_MARK):
        return None
    try:
        return datetime.fromisoformat(description.removeprefix(UNREFERENCED_MARK))
    except ValueError:
        return None


def sweep_bundles(
    stored: Iterable[StoredBundle], referenced: set[str], now: datetime, grace: timedelta
) -> BundleSweep:
    """Which bundles to mark unreferenced, to unmark, and to delete.

    A bundle is deleted only after two sweeps at least `grace` apart found no current
    definition and no unfinished run using it. The first sweep cannot see a run requested
    from a definition replaced a moment ago (a dispatcher deciding on the old version, a
    recorder not caught up); by the second that run is recorded, and keeps its code.
    """
    mark: list[str] = []
    unmark: list[str] = []
    delete: list[str] = []
    for bundle in stored:
        if bundle.digest in referenced:
            if bundle.unreferenced_since is not None:
                unmark.append(bundle.digest)
        elif bundle.unreferenced_since is None:
            mark.append(bundle.digest)
        elif now - bundle.unreferenced_since >= grace:
            delete.append(bundle.digest)
    return BundleSweep(mark=mark, unmark=unmark, delete=delete)


class RoutineStore:
    """Reads and writes routine definitions and bundles on JetStream."""

    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js
        # The registry revision of this store's last write (see SubmitRun.registry_revision).
        self.written_revision = 0

    @classmethod
    async def open(cls, js: JetStreamContext) -> RoutineStore:
        """Bind to the declared routines bucket."""
        return cls(await js.key_value(subjects.ROUTINES_BUCKET), js)

    async def put(self, definition: RoutineDefinition) -> None:
        """Create or replace a definition."""
        revision = await self._kv.put(_key(definition.name), definition.model_dump_json().encode())
        self._wrote(revision)

    def _wrote(self, revision: int) -> None:
        self.written_revision = max(self.written_revision, int(revision))

    async def get(self, name: str) -> RoutineDefinition:
        """One definition, or RegistryError naming the fix."""
        try:
            entry = await self._kv.get(_key(name))
        except (KeyNotFoundError, NotFoundError):
            entry = None
        if entry is None or not entry.value:
            raise RegistryError(
                f"routine {name!r} is not registered: create it with `mainspring routine create DIR --name {name}`"
            )
        return RoutineDefinition.model_validate_json(entry.value)

    async def find(self, name: str) -> RoutineDefinition | None:
        """One definition, or None."""
        return await self._read(_key(name))

    async def _read(self, key: str) -> RoutineDefinition | None:
        """The definition stored under a bucket key (names are escaped into keys)."""
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        return RoutineDefinition.model_validate_json(entry.value) if entry.value else None

    async def keys(self) -> list[str]:
        """Every key of the routines bucket, from its stream's per-subject state.

        nats-py's KeyValue.keys() can close its watch before the first key arrives when the
        machine is busy and report no keys at all; the stream state has no such race.
        """
        prefix = f"$KV.{subjects.ROUTINES_BUCKET}."
        info = await self._js.stream_info(
            f"KV_{subjects.ROUTINES_BUCKET}", subjects_filter=prefix + ">"
        )
        return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))

    async def list(self) -> list[RoutineDefinition]:
        """All definitions, sorted by name."""
        # keys() are already escaped names: read them as they are.
        found = [await self._read(k) for k in await self.keys()]
        return sorted((d for d in found if d is not None), key=lambda d: d.name)

    async def delete(self, name: str) -> None:
        """Remove a definition (its bundle stays: runs in flight may still need it)."""
        await self.get(name)
        await self._kv.delete(_key(name))
        # nats-py does not return a delete's revision: the bucket's last one is at least it.
        self._wrote(await self.last_revision())

    async def last_revision(self) -> int:
        """The revision of the registry's latest write (any routine), in one round trip."""
        info = await self._js.stream_info(f"KV_{subjects.ROUTINES_BUCKET}")
        return int(info.state.last_seq)

    async def set_enabled(
        self,
        name: str,
        enabled: bool,
        reason: str | None,
        now: datetime,
        by: DisabledBy = "user",
    ) -> RoutineDefinition:
        """Activate or deactivate a trigger, keeping the definition."""
        await self.get(name)  # a missing routine is a RegistryError naming the fix

        def toggled(current: bytes | None) -> bytes:
            definition = RoutineDefinition.model_validate_json(current or b"{}")
            updated = definition.model_copy(
                update={
                    "enabled": enabled,
                    "disabled_reason": None if enabled else reason,
                    "disabled_by": None if enabled else by,
                    "updated_at": now,
                }
            )
            return updated.model_dump_json().encode()

        try:
            written, revision = await compare_and_set_from(
                self._kv, _key(name), toggled, None, attempts=10
            )
            self._wrote(revision)
        except TooManyConflicts:
            raise RegistryError(
                f"routine {name!r} changed too often concurrently; try again"
            ) from None
        return RoutineDefinition.model_validate_json(written)

    async def put_bundle(self, digest: str, data: bytes) -> None:
        """Store code by digest (once); code registered again loses its unreferenced mark."""
        store = await self._js.object_store(subjects.BUNDLES_BUCKET)
        try:
            info = await store.get_info(digest)
        except (ObjectNotFoundError, NotFoundError):
            await store.put(digest, data)
            return
        if unreferenced_since(info.description) is not None:
            await self.mark_bundle(digest, None)

    async def stored_bundles(self) -> tuple[StoredBundle, ...]:
        """Every stored code bundle with its unreferenced mark."""
        store = await self._js.object_store(subjects.BUNDLES_BUCKET)
        try:
            infos = await store.list(ignore_deletes=True)
        except NotFoundError:  # nats-py's answer for an empty store
            return ()
        return tuple(
            StoredBundle(info.name, unreferenced_since(info.description))
            for info in infos
            if info.name and not info.deleted
        )

    async def mark_bundle(self, digest: str, since: datetime | None) -> None:
        """Record when a bundle was first found unreferenced (None: clear the mark)."""
        store = await self._js.object_store(subjects.BUNDLES_BUCKET)
        description = None if since is None else UNREFERENCED_MARK + since.isoformat()
        await store.update_meta(digest, ObjectMeta(name=digest, description=description))

    async def delete_bundle(self, digest: str) -> None:
        """Delete a bundle's code (a deleted one is gone already: fine)."""
        store = await self._js.object_store(subjects.BUNDLES_BUCKET)
        with contextlib.suppress(ObjectNotFoundError, NotFoundError):
            await store.delete(digest)

    async def get_bundle(self, digest: str) -> bytes:
        """Fetch code by digest."""
        store = await self._js.object_store(subjects.BUNDLES_BUCKET)
        result = await store.get(digest)
        return result.data or b""

    async def watch(self) -> AsyncIterator[tuple[str, RoutineDefinition | None, int]]:
        """Every current definition, then each change (None when deleted), with its revision."""
        watcher = await self._kv.watchall()
        async for entry in watcher:
            if entry is None:
                continue
            revision = int(entry.revision or 0)
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                yield entry.key, None, revision
            else:
                yield entry.key, RoutineDefinition.model_validate_json(entry.value), revision


class RegistryFeed(Protocol):
    """What a catalog copy reads of the registry: every definition, then each change."""

    async def list(self) -> list[RoutineDefinition]: ...

    def watch(self) -> AsyncIterator[tuple[str, RoutineDefinition | None, int]]: ...

    async def last_revision(self) -> int: ...


def watched_dataset(definition: RoutineDefinition) -> str | None:
    """The dataset whose appends trigger this routine (None: no dataset trigger)."""
    trigger = definition.trigger
    return trigger.dataset if isinstance(trigger, DatasetAppendTrigger) else None


def upstream_routine(definition: RoutineDefinition) -> str | None:
    """The routine (or outside workflow) whose completions trigger this one (None: none)."""
    trigger = definition.trigger
    return trigger.routine if isinstance(trigger, CompletionTrigger) else None


class TriggerIndex:
    """Definitions by name, and the names watching each dataset and each upstream routine.

    A lookup costs the routines it finds, not the registry's size: an append or a completion
    touches only its own watchers however many routines are registered. Every change goes
    through `put` and `remove`, which first take the name out of the index entry of its old
    trigger, so a routine that changes its trigger (or is deleted) is found only where it is
    now.
    """

    def __init__(self) -> None:
        self._definitions: dict[str, RoutineDefinition] = {}
        self._by_dataset: dict[str, set[str]] = {}
        self._by_upstream: dict[str, set[str]] = {}

    def put(self, definition: RoutineDefinition) -> None:
        """Add or replace a definition."""
        self.remove(definition.name)
        self._definitions[definition.name] = definition
        dataset = watched_dataset(definition)
        if dataset is not None:
            self._by_dataset.setdefault(dataset, set()).add(definition.name)
        upstream = upstream_routine(definition)
        if upstream is not None:
            self._by_upstream.setdefault(upstream, set()).add(definition.name)

    def remove(self, name: str) -> None:
        """Forget a definition (an unknown name is fine)."""
        old = self._definitions.pop(name, None)
        if old is None:
            return
        _discard(self._by_dataset, watched_dataset(old), name)
        _discard(self._by_upstream, upstream_routine(old), name)

    def get(self, name: str) -> RoutineDefinition | None:
        """One definition by name."""
        return self._definitions.get(name)

    def all(self) -> list[RoutineDefinition]:
        """Every definition."""
        return list(self._definitions.values())

    def names(self) -> set[str]:
        """Every known name."""
        return set(self._definitions)

    def watching(self, dataset: str) -> list[RoutineDefinition]:
        """The routines whose trigger watches this dataset, by name."""
        return self._named(self._by_dataset.get(dataset, ()))

    def downstream_of(self, routine: str) -> list[RoutineDefinition]:
        """The routines whose completion trigger names this routine, by name."""
        return self._named(self._by_upstream.get(routine, ()))

    def _named(self, names: Iterable[str]) -> list[RoutineDefinition]:
        return [self._definitions[name] for name in sorted(names)]


def _discard(index: dict[str, set[str]], key: str | None, name: str) -> None:
    if key is None:
        return
    names = index.get(key)
    if names is None:
        return
    names.discard(name)
    if not names:
        # An emptied entry goes, so datasets and upstreams nobody watches any more cost nothing.
        del index[key]


class RoutineCatalog:
    """An in-memory copy of the registry kept current by a KV watch (for fan-out lookups),
    indexed by watched dataset and upstream routine (see TriggerIndex)."""

    def __init__(self) -> None:
        self._index = TriggerIndex()
        self._task: Any = None
        self.changed: Any = None
        # The registry revision this copy has caught up to.
        self.revision = 0

    async def start(self, store: RegistryFeed) -> None:
        """Load every definition, then follow changes in the background."""
        import asyncio

        self.changed = asyncio.Event()
        loaded = asyncio.Event()
        initial = {d.name for d in await store.list()}

        # Watch entries are keyed by the escaped name; the catalog by the name itself.
        names_by_key: dict[str, str] = {}

        async def follow() -> None:
            async for key, definition, revision in store.watch():
                self.revision = max(self.revision, revision)
                if definition is None:
                    self._index.remove(names_by_key.pop(key, key))
                else:
                    names_by_key[key] = definition.name
                    self._index.put(definition)
                self.changed.set()
                if initial <= self._index.names():
                    loaded.set()

        self._task = asyncio.create_task(follow())
        if not initial:
            loaded.set()
        await asyncio.wait_for(loaded.wait(), timeout=30)

    async def stop(self) -> None:
        """Stop following the registry (the copy keeps what it has)."""
        import asyncio
        import contextlib

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def all(self) -> list[RoutineDefinition]:
        """Every known definition."""
        return self._index.all()

    def get(self, name: str) -> RoutineDefinition | None:
        """One definition by name."""
        return self._index.get(name)

    def downstream_of(self, routine: str) -> list[RoutineDefinition]:
        """The known routines a completion of `routine` may trigger (see TriggerIndex)."""
        return self._index.downstream_of(routine)

    async def current_watching(self, dataset: str, store: RegistryFeed) -> list[RoutineDefinition]:
        """The routines watching `dataset` as the registry holds them now, by name: from the
        index when this copy has seen the registry's latest write (one round trip to ask),
        else from the registry read in full (a routine registered a moment before the append
        must not be missed while the watch catches up)."""
        if self.revision >= await store.last_revision():
            return self._index.watching(dataset)
        fresh = TriggerIndex()
        for definition in await store.list():
            fresh.put(definition)
        return fresh.watching(dataset)

    def current(self, name: str, written_revision: int) -> RoutineDefinition | None:
        """The definition, if this copy has seen the registry up to `written_revision` (a
        submitter's own last write) and knows the name; else None: read the registry."""
        return self.get(name) if self.revision >= written_revision else None
