"""Cancel marks known in memory: a first delivery asks no one; a redelivery, a runner that has
not loaded the marks yet, and one whose connection was re-established ask the ledger."""

from __future__ import annotations

import asyncio

from mainspring_services.runner.coordination import CancelMarks


class Ledger:
    def __init__(self, marked: set[str]) -> None:
        self.marked = marked
        self.reads: list[str] = []
        self.listings = 0

    async def cancel_requested(self, run_id: str) -> bool:
        self.reads.append(run_id)
        return run_id in self.marked

    async def cancel_marks(self) -> set[str]:
        self.listings += 1
        return set(self.marked)


class Connection:
    reconnects = 0


async def loaded(ledger: Ledger, connection: Connection) -> CancelMarks:
    marks = CancelMarks(ledger, lambda: connection.reconnects)
    await marks.load()
    return marks


async def test_before_the_marks_are_loaded_every_start_asks_the_ledger() -> None:
    ledger = Ledger({"stored"})
    marks = CancelMarks(ledger, lambda: 0)

    assert await marks.requested("stored", redelivered=False)
    assert not await marks.requested("other", redelivered=False)
    assert ledger.reads == ["stored", "other"]


async def test_once_loaded_a_first_delivery_is_answered_from_memory() -> None:
    ledger = Ledger({"stored"})
    marks = await loaded(ledger, Connection())

    assert await marks.requested("stored", redelivered=False)
    assert not await marks.requested("other", redelivered=False)
    marks.note("heard")
    assert await marks.requested("heard", redelivered=False)
    assert ledger.reads == []


async def test_a_redelivery_asks_the_ledger() -> None:
    ledger = Ledger(set())
    marks = await loaded(ledger, Connection())
    ledger.marked.add("late")  # marked while the run waited, heard by no one here

    assert await marks.requested("late", redelivered=True)
    assert ledger.reads == ["late"]
    assert await marks.requested("late", redelivered=False)  # remembered from the read
    assert ledger.reads == ["late"]


async def test_after_a_reconnect_the_ledger_is_asked_until_the_marks_are_loaded_again() -> None:
    ledger = Ledger(set())
    connection = Connection()
    marks = await loaded(ledger, connection)
    connection.reconnects = 1
    ledger.marked.add("missed")  # its run.cancel came while the connection was down

    assert await marks.requested("missed", redelivered=False)
    assert not await marks.requested("fine", redelivered=False)
    assert ledger.reads == ["missed", "fine"]
    await asyncio.sleep(0.01)  # the reload started by the first of those

    assert ledger.listings == 2
    assert not await marks.requested("fine", redelivered=False)
    assert ledger.reads == ["missed", "fine"]
