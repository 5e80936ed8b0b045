"""Async routines and async poll functions run to their end on a real system."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mainspring.client import Client
from mainspring.testing import TestSystem
from tests.harness import eventually, write_routine

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(mainspring_system: TestSystem) -> AsyncIterator[Client]:
    """A client of the system the module's tests share (their routines have distinct names)."""
    connected: Client = await mainspring_system.connect()
    yield connected
    await connected.close()


ASYNC_ROUTINE = """
import asyncio
from mainspring import Routine, on_schedule


class Fetch(Routine):
    async def setup(self):
        self.client_loop = asyncio.get_running_loop()

    async def run(self, event=on_schedule(cron="0 0 29 2 *"), pages: int = 3) -> dict:
        fetched = []
        for page in range(pages):
            await asyncio.sleep(0.01)
            fetched.append(page)
            self.progress((page + 1) / pages, f"page {page + 1}")
        assert asyncio.get_running_loop() is self.client_loop
        return {"pages": fetched}
"""

ASYNC_FAILURE = """
import asyncio
from mainspring import Routine, on_schedule


class Broken(Routine):
    async def run(self, event=on_schedule(cron="0 0 29 2 *")) -> dict:
        await asyncio.sleep(0)
        raise RuntimeError("upstream API said 503")
"""

ASYNC_POLL = """
import asyncio
from mainspring import Routine, on_poll


async def check_queue():
    await asyncio.sleep(0)
    return {"message": "new order"}


class Orders(Routine):
    def run(self, polled=on_poll(check_queue, every="1s")) -> dict:
        return {"message": polled.payload["message"]}
"""


async def finished(client: Client, run_id: str) -> dict[str, Any] | None:
    run = await client.get_run(run_id)
    return run if run and run["status"] in ("completed", "failed", "cancelled") else None


async def test_async_run_records_its_real_outputs_and_async_failures_fail(
    client: Client, tmp_path: Path
) -> None:
    await client.create_routine(write_routine(tmp_path / "fetch", ASYNC_ROUTINE), "fetch")
    await client.create_routine(write_routine(tmp_path / "broken", ASYNC_FAILURE), "broken")

    good = await client.submit("fetch", {"pages": 4}, source="manual")
    bad = await client.submit("broken", source="manual")

    run = await eventually(lambda: finished(client, good), timeout=60, what="the async run")
    assert run["status"] == "completed", run.get("error")
    assert run["outputs"] == {"pages": [0, 1, 2, 3]}
    failed = await eventually(lambda: finished(client, bad), timeout=60, what="the failing run")
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: upstream API said 503"
    assert "raise RuntimeError" in failed["traceback"]


async def test_an_async_poll_function_fires_with_its_payload(
    client: Client, tmp_path: Path
) -> None:
    await client.create_routine(write_routine(tmp_path / "orders", ASYNC_POLL), "orders")

    async def a_completed_run() -> list[dict[str, Any]]:
        from mainspring.contract.queries import RunQuery

        runs = await client.list_runs(RunQuery(routine="orders", status="completed"))
        return runs

    [run, *_] = await eventually(a_completed_run, timeout=60, what="a polled run")
    assert run["outputs"] == {"message": "new order"}
