"""The catalog's index of routines by watched dataset and by upstream routine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from mainspring.sdk.triggers import (
    AnyTrigger,
    CompletionTrigger,
    DatasetAppendTrigger,
    ManualTrigger,
    ScheduleTrigger,
)
from mainspring.storage.registry import RoutineCatalog, RoutineDefinition, TriggerIndex

NOW = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def routine(name: str, trigger: AnyTrigger) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version="v1",
        entrypoint="routine.py:R",
        class_name="R",
        trigger_param="event",
        trigger=trigger,
        created_at=NOW,
        updated_at=NOW,
    )


def on_dataset(name: str, dataset: str) -> RoutineDefinition:
    return routine(name, DatasetAppendTrigger(dataset=dataset))


def on_completion(name: str, upstream: str) -> RoutineDefinition:
    return routine(name, CompletionTrigger(routine=upstream, status="completed"))


def names(definitions: list[RoutineDefinition]) -> list[str]:
    return [d.name for d in definitions]


def test_finds_only_the_watchers_of_a_dataset_sorted_by_name() -> None:
    index = TriggerIndex()
    for definition in [
        on_dataset("b", "photos"),
        on_dataset("a", "photos"),
        on_dataset("other", "notes"),
        routine("timed", ScheduleTrigger(every="1m")),
        on_completion("after-photos", "photos"),
    ]:
        index.put(definition)

    assert names(index.watching("photos")) == ["a", "b"]
    assert names(index.watching("notes")) == ["other"]
    assert index.watching("nobody-watches") == []


def test_finds_only_the_routines_downstream_of_a_routine() -> None:
    index = TriggerIndex()
    for definition in [
        on_completion("z", "upstream"),
        on_completion("y", "upstream"),
        on_completion("elsewhere", "someone-else"),
        on_dataset("upstream-dataset", "upstream"),
        routine("upstream", ManualTrigger()),
    ]:
        index.put(definition)

    assert names(index.downstream_of("upstream")) == ["y", "z"]
    assert names(index.downstream_of("someone-else")) == ["elsewhere"]
    assert index.downstream_of("z") == []


def test_a_routine_that_changes_its_trigger_is_found_only_where_it_is_now() -> None:
    index = TriggerIndex()
    index.put(on_dataset("r", "photos"))
    index.put(on_dataset("r", "notes"))
    assert index.watching("photos") == []
    assert names(index.watching("notes")) == ["r"]

    index.put(on_completion("r", "upstream"))
    assert index.watching("notes") == []
    assert names(index.downstream_of("upstream")) == ["r"]

    index.put(routine("r", ScheduleTrigger(every="1m")))
    assert index.downstream_of("upstream") == []
    assert names(index.all()) == ["r"]


def test_a_replaced_definition_is_the_one_found() -> None:
    index = TriggerIndex()
    index.put(on_dataset("r", "photos"))
    disabled = on_dataset("r", "photos").model_copy(update={"enabled": False})
    index.put(disabled)
    assert index.watching("photos") == [disabled]


def test_a_deleted_routine_is_found_nowhere() -> None:
    index = TriggerIndex()
    index.put(on_dataset("d", "photos"))
    index.put(on_completion("c", "upstream"))
    index.put(on_dataset("kept", "photos"))

    index.remove("d")
    index.remove("c")
    index.remove("never-registered")

    assert names(index.watching("photos")) == ["kept"]
    assert index.downstream_of("upstream") == []
    assert index.get("d") is None
    assert names(index.all()) == ["kept"]


class FakeRegistry:
    """A registry whose watch the test drives, one change at a time."""

    def __init__(self, definitions: list[RoutineDefinition]) -> None:
        self.definitions = {d.name: d for d in definitions}
        self.revision = len(definitions)
        self.changes: asyncio.Queue[tuple[str, RoutineDefinition | None, int]] = asyncio.Queue()
        self.listed = 0
        for number, definition in enumerate(definitions, start=1):
            self.changes.put_nowait((definition.name, definition, number))

    async def list(self) -> list[RoutineDefinition]:
        self.listed += 1
        return sorted(self.definitions.values(), key=lambda d: d.name)

    async def watch(self) -> AsyncIterator[tuple[str, RoutineDefinition | None, int]]:
        while True:
            yield await self.changes.get()

    async def last_revision(self) -> int:
        return self.revision

    def write(
        self, name: str, definition: RoutineDefinition | None
    ) -> tuple[str, RoutineDefinition | None, int]:
        """Change the registry; the watch hears of it only when the test delivers it."""
        self.revision += 1
        if definition is None:
            self.definitions.pop(name, None)
        else:
            self.definitions[name] = definition
        return (name, definition, self.revision)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_catalog_answers_from_its_index_once_caught_up_else_reads_the_registry() -> None:
    registry = FakeRegistry([on_dataset("a", "photos"), on_dataset("other", "notes")])
    catalog = RoutineCatalog()
    await catalog.start(registry)
    try:
        await settle()
        listed = registry.listed
        assert names(await catalog.current_watching("photos", registry)) == ["a"]
        assert registry.listed == listed  # caught up: the index answered

        # Registered a moment before the append; the watch has not delivered it yet.
        pending = registry.write("b", on_dataset("b", "photos"))
        assert names(await catalog.current_watching("photos", registry)) == ["a", "b"]
        assert registry.listed == listed + 1  # behind: the registry answered

        registry.changes.put_nowait(pending)
        await settle()
        assert names(await catalog.current_watching("photos", registry)) == ["a", "b"]
        assert registry.listed == listed + 1

        registry.changes.put_nowait(registry.write("a", None))
        registry.changes.put_nowait(registry.write("b", on_completion("b", "upstream")))
        await settle()
        assert await catalog.current_watching("photos", registry) == []
        assert names(catalog.downstream_of("upstream")) == ["b"]
    finally:
        await catalog.stop()
