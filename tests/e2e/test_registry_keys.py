"""Routine names that need escaping are listed, watched and deleted under their own name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mainspring.base.settings import Settings
from mainspring.runtime.bus import connect, setup_bus
from mainspring.sdk.triggers import ScheduleTrigger
from mainspring.storage.registry import RoutineCatalog, RoutineDefinition, RoutineStore
from tests.harness import Deployment, eventually

pytestmark = pytest.mark.e2e

NOW = datetime(2026, 11, 28, tzinfo=UTC)
NAMES = ["embed_new_rows", "team/etl", "plain-name"]


def definition(name: str) -> RoutineDefinition:
    return RoutineDefinition(
        name=name,
        version="v1",
        entrypoint="routine.py:R",
        class_name="R",
        trigger_param="tick",
        trigger=ScheduleTrigger(every="1h"),
        created_at=NOW,
        updated_at=NOW,
    )


async def test_escaped_names_round_trip_through_list_catalog_and_delete(
    deployment: Deployment,
) -> None:
    nc = await connect(deployment.nats.url)
    try:
        await setup_bus(nc.jetstream(), Settings())
        store = await RoutineStore.open(nc.jetstream())
        for name in NAMES:
            await store.put(definition(name))
        assert [d.name for d in await store.list()] == sorted(NAMES)
        assert all([await store.find(name) for name in NAMES])

        catalog = RoutineCatalog()
        await catalog.start(store)
        assert sorted(d.name for d in catalog.all()) == sorted(NAMES)

        await store.delete("embed_new_rows")

        async def dropped() -> bool:
            return catalog.get("embed_new_rows") is None

        await eventually(dropped, timeout=10, what="the catalog to drop the deleted routine")
        assert sorted(d.name for d in catalog.all()) == ["plain-name", "team/etl"]
        assert [d.name for d in await store.list()] == ["plain-name", "team/etl"]
    finally:
        await nc.close()
