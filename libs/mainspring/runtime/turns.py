"""Handlers of one key take turns, in the order they arrived; other keys run alongside.

A durable that fetches a batch hands each message to its own task (FastStream's pull
subscriber starts them in the batch's order and waits for all), so two events of one routine
would otherwise race: a failure and the success after it could be counted the other way
round, or a later submit take the earlier run number. Each handler takes its turn before it
first waits on anything, so the order of turns is the order the tasks started, which is the
stream's order within the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

# The turns the running handler holds: a message it publishes that comes back to the same
# consumer within its own call (FastStream's test broker delivers inline) must not wait for
# the turn it is part of.
_held: ContextVar[frozenset[tuple[int, str]]] = ContextVar("held_turns", default=frozenset())


class KeyedTurns:
    """One queue of turns per key; a turn starts when the one before it of its key ended."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    def waiting_keys(self) -> int:
        """Keys with a turn taken and not yet ended (for tests: none are left behind)."""
        return len(self._last)

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Wait for the earlier turns of `key`, then hold this one while the body runs."""
        mark = (id(self), key)
        held = _held.get()
        if mark in held:
            yield
            return
        before = self._last.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[key] = mine
        try:
            if before is not None and not before.done():
                await asyncio.shield(before)
            token = _held.set(held | {mark})
            try:
                yield
            finally:
                _held.reset(token)
        finally:
            if before is None or before.done():
                _end(mine)
            else:
                # Cancelled while waiting: the next turn still waits for the one before us.
                before.add_done_callback(lambda _: _end(mine))
            if self._last.get(key) is mine:
                del self._last[key]


def _end(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)
